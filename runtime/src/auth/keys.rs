//! The verifying keys of token auth: an HMAC secret, a PEM public key or a
//! JWKS file, each key with the algorithms it may verify. The algorithms
//! follow from the key (its type, curve and, in a JWKS, its `alg`), never
//! from a token's header: an RSA key never verifies an HS256 token, so a
//! token "signed" with the public key's bytes as an HMAC secret is refused.

use std::path::Path;
use std::str::FromStr as _;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::config::{TokenAuth, TokenKey};

/// Every RSA signature algorithm: an RSA key does not say which padding and
/// hash its owner signs with.
const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
/// An EC key from PEM: its curve picks one of these (the other fails to
/// verify).
const EC: &[Algorithm] = &[Algorithm::ES256, Algorithm::ES384];

/// A key as read from a file: its `kid`, the key, its algorithms.
type Found = (Option<String>, DecodingKey, Vec<Algorithm>);

/// One verifying key: its `kid` (from a JWKS) and the validation of the
/// tokens it verifies (its algorithms and the claim rules).
pub(crate) struct Key {
    kid: Option<String>,
    pub(crate) key: DecodingKey,
    pub(crate) validation: Validation,
}

/// The keys in force; replaced whole by a reload.
pub(crate) struct Keys {
    keys: Vec<Key>,
    /// Keys of a JWKS file that were left out, and why (logged on load).
    pub(crate) skipped: Vec<String>,
}

impl Keys {
    /// Reads the keys `auth` names (its files, for a PEM or a JWKS).
    pub(crate) fn load(auth: &TokenAuth) -> Result<Self, String> {
        let mut skipped = Vec::new();
        let found: Vec<Found> = match &auth.key {
            TokenKey::Secret(secret) => {
                vec![(
                    None,
                    DecodingKey::from_secret(secret),
                    vec![Algorithm::HS256],
                )]
            }
            TokenKey::PublicKeyPem(path) => vec![pem(&read(path)?)
                .map(|(key, algs)| (None, key, algs))
                .map_err(|e| format!("{}: {e}", path.display()))?],
            TokenKey::Jwks(path) => {
                jwks(&read(path)?, &mut skipped).map_err(|e| format!("{}: {e}", path.display()))?
            }
        };
        let keys = found
            .into_iter()
            .map(|(kid, key, algorithms)| Key {
                kid,
                key,
                validation: validation(auth, algorithms),
            })
            .collect();
        Ok(Self { keys, skipped })
    }

    /// How many keys are in force.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The key for a token whose header names `kid`: the key with that
    /// `kid`; a single key also verifies tokens without one (and, when it
    /// has no `kid` itself, a secret or a PEM key, any token).
    pub(crate) fn pick(&self, kid: Option<&str>) -> Result<&Key, &'static str> {
        if let [only] = self.keys.as_slice() {
            if only.kid.is_none() || kid.is_none() || only.kid.as_deref() == kid {
                return Ok(only);
            }
            return Err("no key has the token's kid");
        }
        let Some(kid) = kid else {
            return Err("the token has no kid and there are several keys");
        };
        self.keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid))
            .ok_or("no key has the token's kid")
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The claim rules of `auth` for a key of `algorithms`: `exp` and `sub`
/// required, `exp` without leeway (`nbf` and `iat` are checked by the
/// caller, with [`TokenAuth::LEEWAY`]), `aud` and `iss` when configured.
fn validation(auth: &TokenAuth, algorithms: Vec<Algorithm>) -> Validation {
    let mut v = Validation::new(algorithms[0]);
    v.algorithms = algorithms;
    v.leeway = 0;
    v.validate_exp = true;
    v.validate_nbf = false;
    let mut required = vec!["exp", "sub"];
    if auth.audiences.is_empty() {
        // No audience configured: `aud` is not looked at (jsonwebtoken
        // would otherwise refuse every token that has one).
        v.validate_aud = false;
    } else {
        v.set_audience(&auth.audiences);
        required.push("aud");
    }
    if let Some(issuer) = &auth.issuer {
        v.set_issuer(&[issuer]);
        required.push("iss");
    }
    v.set_required_spec_claims(&required);
    v
}

/// A PEM public key: RSA, EC or Ed25519, tried in that order.
fn pem(bytes: &[u8]) -> Result<(DecodingKey, Vec<Algorithm>), String> {
    if let Ok(key) = DecodingKey::from_rsa_pem(bytes) {
        return Ok((key, RSA.to_vec()));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(bytes) {
        return Ok((key, EC.to_vec()));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(bytes) {
        return Ok((key, vec![Algorithm::EdDSA]));
    }
    Err("not a PEM RSA, EC (P-256, P-384) or Ed25519 public key".to_owned())
}

/// The usable keys of a JWKS document; the others are named in `skipped`.
/// A set with no usable key is an error.
fn jwks(bytes: &[u8], skipped: &mut Vec<String>) -> Result<Vec<Found>, String> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    for (i, value) in set.keys.into_iter().enumerate() {
        let kid = value.get("kid").and_then(|k| k.as_str()).map(str::to_owned);
        let name = kid.clone().unwrap_or_else(|| format!("#{i}"));
        match jwk(value) {
            Ok((key, algs)) => keys.push((kid, key, algs)),
            Err(why) => skipped.push(format!("key {name}: {why}")),
        }
    }
    if keys.is_empty() {
        return Err(format!("no usable signing key ({})", skipped.join("; ")));
    }
    Ok(keys)
}

fn jwk(value: serde_json::Value) -> Result<(DecodingKey, Vec<Algorithm>), String> {
    let jwk: Jwk =
        serde_json::from_value(value).map_err(|e| format!("not a supported JWK: {e}"))?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key (use: enc)".to_owned());
    }
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA.to_vec(),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return Err("an unsupported curve".to_owned()),
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        AlgorithmParameters::OctetKeyPair(_) => return Err("an unsupported curve".to_owned()),
        AlgorithmParameters::OctetKey(_) => {
            return Err("a symmetric key (use --jwt-secret for HS256)".to_owned())
        }
    };
    let algorithms = match jwk.common.key_algorithm {
        None => by_type,
        Some(alg) => {
            let alg = Algorithm::from_str(&alg.to_string())
                .map_err(|_| format!("alg {alg} is not a signature algorithm"))?;
            if !by_type.contains(&alg) {
                return Err(format!("alg {alg:?} does not fit the key's type"));
            }
            vec![alg]
        }
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("a bad key: {e}"))?;
    Ok((key, algorithms))
}
