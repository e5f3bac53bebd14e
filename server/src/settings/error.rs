//! Why settings cannot be used: [`ConfigError`], each message naming the
//! setting by its flag.

use std::borrow::Cow;
use std::path::PathBuf;

use weir_core::ids::IdError;
use weir_runtime::openai::UpstreamUrlError;

/// Why the settings cannot be used. Each message names the setting as flag;
/// the same value may have come from its `WEIR_*` variable or the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--compat-ws-path` is not an absolute path.
    #[error("--compat-ws-path {value:?}: must start with /")]
    BadCompatWsPath {
        /// The value given.
        value: String,
    },
    /// The `--config` file cannot be read.
    #[error("cannot read config file {}: {source}", path.display())]
    FileRead {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML for these settings (bad syntax,
    /// an unknown key, a wrongly typed value).
    #[error("config file {}: {message}", path.display())]
    FileSyntax {
        /// The file.
        path: PathBuf,
        /// What the parser said, with line and column.
        message: String,
    },
    /// `--listen` is not an IP:PORT address.
    #[error(
        "--listen {value:?}: expected IP:PORT, e.g. 127.0.0.1:8080, 0.0.0.0:8080 or [::1]:8080"
    )]
    BadListen {
        /// The value given.
        value: String,
    },
    /// `--node-id` breaks the node id syntax.
    #[error("--node-id {value:?}: {source} (1-64 characters of A-Z a-z 0-9 _ - . :)")]
    BadNodeId {
        /// The value given.
        value: String,
        /// Which rule it breaks.
        source: IdError,
    },
    /// `--auth token` without a key.
    #[error("--auth token needs a key: set --jwt-secret (HS256; or WEIR_JWT_SECRET, or jwt_secret in the config file), --jwt-public-key PATH or --jwt-jwks PATH")]
    MissingJwtSecret,
    /// More than one of `--jwt-secret`, `--jwt-public-key`, `--jwt-jwks`.
    #[error("--jwt-secret, --jwt-public-key and --jwt-jwks exclude each other: give one")]
    SeveralJwtKeys,
    /// A token setting other than the secret, but auth is off.
    #[error("{setting} is set but auth is none: add --auth token to require tokens, or drop it")]
    TokenSettingWithoutTokenAuth {
        /// The flag.
        setting: &'static str,
    },
    /// `--jwt-issuer` or `--jwt-audience` with an empty value.
    #[error("{setting} is empty: give a value or leave it unset")]
    EmptyTokenSetting {
        /// The flag.
        setting: &'static str,
    },
    /// A secret was given but auth is off: the operator probably meant
    /// `--auth token`; refusing is safer than serving without auth.
    #[error("a JWT secret is set but auth is none: add --auth token to require tokens, or drop the secret")]
    JwtSecretWithoutTokenAuth,
    /// `--generator openai` without `--upstream`.
    #[error("--generator openai needs --upstream URL, e.g. --upstream http://127.0.0.1:8000")]
    MissingUpstream,
    /// `--generator openai` without `--model`.
    #[error("--generator openai needs --model NAME (any name for a server with one model, e.g. llama.cpp's)")]
    MissingModel,
    /// `--upstream` is set but the generator is the demo: the operator
    /// probably meant `--generator openai`.
    #[error(
        "--upstream is set but the generator is demo: add --generator openai, or drop --upstream"
    )]
    UpstreamWithoutOpenai,
    /// `--upstream` cannot be used.
    #[error("--upstream {value:?}: {source}")]
    BadUpstream {
        /// The value given.
        value: String,
        /// Why not.
        source: UpstreamUrlError,
    },
    /// A value is out of range.
    #[error("--{flag} {value}: {rule}")]
    OutOfRange {
        /// The flag, without `--`.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is required.
        rule: Cow<'static, str>,
    },
    /// The log filter does not parse.
    #[error("--log {value:?}: {message}")]
    BadLogFilter {
        /// The value given.
        value: String,
        /// What the parser said.
        message: String,
    },
}
