//! The `weir` binary: see the crate docs of `weir-server` for commands,
//! settings and their precedence.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    weir_server::run(weir_server::cli::parse())
}
