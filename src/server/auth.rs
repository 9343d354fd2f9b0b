//! Authentication of WebSocket upgrades, flag-compatible with the reference exec-server
//! (reference-surface.md §7.1): `--ws-auth capability-token` (a bearer token, known here only by
//! its SHA-256 digest) or `--ws-auth signed-bearer-token` (an HS256 JWT signed with a shared
//! secret, with `exp` required and `nbf`, `iss`, `aud` checked).
//!
//! The check runs on the upgrade request's `Authorization` header, before the handshake
//! completes (`http.rs`); a failure is a 401 whose body is [`AuthFailure::body`]. The credential
//! is read once at start and again on [`Authenticator::reload`] (SIGHUP): a reload that fails
//! keeps the old one. Secrets never appear in `Debug` output, errors or logs.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// `--ws-auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    CapabilityToken,
    SignedBearerToken,
}

/// The authentication flags as given, before they are checked against each other.
#[derive(Debug, Clone, Default)]
pub struct AuthFlags {
    pub mode: Option<AuthMode>,
    pub token_file: Option<PathBuf>,
    pub token_sha256: Option<String>,
    pub shared_secret_file: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub max_clock_skew_seconds: Option<u64>,
}

/// `--ws-max-clock-skew-seconds` when not given.
pub const DEFAULT_MAX_CLOCK_SKEW_SECONDS: u64 = 30;

/// Largest token or secret file read (a path to something endless must not hang the start).
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Why an upgrade was refused: each has the reference's 401 body and a short label for logs and
/// metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    MissingToken,
    InvalidHeader,
    InvalidToken,
    InvalidJwt,
    Expired,
    NotYetValid,
    IssuerMismatch,
    AudienceMismatch,
}

impl AuthFailure {
    /// The body of the 401 (the reference's texts).
    pub fn body(self) -> &'static str {
        match self {
            AuthFailure::MissingToken => "missing websocket bearer token",
            AuthFailure::InvalidHeader => "invalid authorization header",
            AuthFailure::InvalidToken => "invalid websocket bearer token",
            AuthFailure::InvalidJwt => "invalid websocket jwt",
            AuthFailure::Expired => "expired websocket jwt",
            AuthFailure::NotYetValid => "websocket jwt is not valid yet",
            AuthFailure::IssuerMismatch => "websocket jwt issuer mismatch",
            AuthFailure::AudienceMismatch => "websocket jwt audience mismatch",
        }
    }

    /// A label for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::MissingToken => "missing_token",
            AuthFailure::InvalidHeader => "invalid_header",
            AuthFailure::InvalidToken => "invalid_token",
            AuthFailure::InvalidJwt => "invalid_jwt",
            AuthFailure::Expired => "expired_jwt",
            AuthFailure::NotYetValid => "jwt_not_valid_yet",
            AuthFailure::IssuerMismatch => "jwt_issuer_mismatch",
            AuthFailure::AudienceMismatch => "jwt_audience_mismatch",
        }
    }
}

/// Where the credential comes from, so a reload can read it again.
#[derive(Debug)]
enum Source {
    /// `--ws-token-file`: re-read on reload.
    TokenFile(PathBuf),
    /// `--ws-token-sha256`: nothing to re-read.
    TokenDigest,
    /// `--ws-shared-secret-file`: re-read on reload.
    SecretFile(PathBuf),
}

/// What a presented token is checked against.
enum Credential {
    /// The capability token's SHA-256 digest (the token itself is not kept).
    Digest([u8; 32]),
    /// The HS256 key.
    Hs256(DecodingKey),
}

/// Checks upgrade requests against the configured credential. Shared by every connection; the
/// credential is swapped whole on reload.
pub struct Authenticator {
    source: Source,
    current: RwLock<Arc<Credential>>,
    issuer: Option<String>,
    audience: Option<String>,
    skew_seconds: u64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credential.
        f.debug_struct("Authenticator")
            .field("source", &self.source)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("skew_seconds", &self.skew_seconds)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Checks the flags together and reads the credential. `Ok(None)`: no authentication was
    /// asked for. The errors are the reference's start-up texts.
    pub fn from_flags(flags: AuthFlags) -> Result<Option<Authenticator>, String> {
        let token_flags = flags.token_file.is_some() || flags.token_sha256.is_some();
        let signed_flags = flags.shared_secret_file.is_some()
            || flags.issuer.is_some()
            || flags.audience.is_some()
            || flags.max_clock_skew_seconds.is_some();
        let Some(mode) = flags.mode else {
            if token_flags || signed_flags {
                return Err(
                    "websocket auth flags require `--ws-auth capability-token` or \
                            `--ws-auth signed-bearer-token`"
                        .into(),
                );
            }
            return Ok(None);
        };
        let nonblank = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
        let (source, credential) = match mode {
            AuthMode::CapabilityToken => {
                if signed_flags {
                    return Err("`--ws-shared-secret-file`, `--ws-issuer`, `--ws-audience`, and \
                                `--ws-max-clock-skew-seconds` require `--ws-auth signed-bearer-token`"
                        .into());
                }
                match (flags.token_file, flags.token_sha256) {
                    (Some(_), Some(_)) => {
                        return Err(
                            "`--ws-token-file` and `--ws-token-sha256` are mutually exclusive"
                                .into(),
                        );
                    }
                    (None, None) => {
                        return Err("`--ws-token-file` or `--ws-token-sha256` is required when \
                                    `--ws-auth capability-token` is set"
                            .into());
                    }
                    (Some(path), None) => {
                        let path = absolute(&path);
                        let credential = read_token(&path)?;
                        (Source::TokenFile(path), credential)
                    }
                    (None, Some(hex)) => (Source::TokenDigest, parse_sha256(&hex)?),
                }
            }
            AuthMode::SignedBearerToken => {
                if token_flags {
                    return Err(
                        "`--ws-token-file` and `--ws-token-sha256` require `--ws-auth \
                                capability-token`, not `signed-bearer-token`"
                            .into(),
                    );
                }
                let Some(path) = flags.shared_secret_file else {
                    return Err("`--ws-shared-secret-file` is required when `--ws-auth \
                                signed-bearer-token` is set"
                        .into());
                };
                let path = absolute(&path);
                let credential = read_shared_secret(&path)?;
                (Source::SecretFile(path), credential)
            }
        };
        Ok(Some(Authenticator {
            source,
            current: RwLock::new(Arc::new(credential)),
            issuer: nonblank(flags.issuer),
            audience: nonblank(flags.audience),
            skew_seconds: flags
                .max_clock_skew_seconds
                .unwrap_or(DEFAULT_MAX_CLOCK_SKEW_SECONDS),
        }))
    }

    /// Reads the token or secret file again and, if it is good, checks every later upgrade
    /// against it. `Ok(None)`: nothing to re-read (`--ws-token-sha256`); `Ok(Some(path))`: the
    /// file re-read. On an error the credential in use is kept.
    pub fn reload(&self) -> Result<Option<&Path>, String> {
        let (credential, path) = match &self.source {
            Source::TokenDigest => return Ok(None),
            Source::TokenFile(path) => (read_token(path)?, path),
            Source::SecretFile(path) => (read_shared_secret(path)?, path),
        };
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(credential);
        Ok(Some(path))
    }

    /// Checks the `Authorization` header of an upgrade request (its raw value, if any).
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), AuthFailure> {
        let token = bearer_token(authorization.ok_or(AuthFailure::MissingToken)?)?;
        let credential = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match &*credential {
            Credential::Digest(expected) => {
                let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
                if bool::from(presented.ct_eq(expected)) {
                    Ok(())
                } else {
                    Err(AuthFailure::InvalidToken)
                }
            }
            Credential::Hs256(key) => self.check_jwt(token, key, now_seconds()),
        }
    }

    /// Verifies an HS256 JWT's signature, then its claims at time `now` (seconds since the
    /// epoch).
    fn check_jwt(&self, token: &str, key: &DecodingKey, now: f64) -> Result<(), AuthFailure> {
        // The crate checks the header's `alg` (HS256 only: `none`, RS256 and the rest fail)
        // and the signature; the claims are checked here, for the reference's distinct answers.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Value>(token, key, &validation)
            .map_err(|_| AuthFailure::InvalidJwt)?
            .claims;
        let skew = self.skew_seconds as f64;
        let exp = claims
            .get("exp")
            .and_then(Value::as_f64)
            .ok_or(AuthFailure::InvalidJwt)?;
        if now > exp + skew {
            return Err(AuthFailure::Expired);
        }
        match claims.get("nbf") {
            None => {}
            Some(nbf) => {
                let nbf = nbf.as_f64().ok_or(AuthFailure::InvalidJwt)?;
                if now < nbf - skew {
                    return Err(AuthFailure::NotYetValid);
                }
            }
        }
        if let Some(issuer) = &self.issuer
            && claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
        {
            return Err(AuthFailure::IssuerMismatch);
        }
        if let Some(audience) = &self.audience {
            let matches = match claims.get("aud") {
                Some(Value::String(aud)) => aud == audience,
                Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
                _ => false,
            };
            if !matches {
                return Err(AuthFailure::AudienceMismatch);
            }
        }
        Ok(())
    }
}

/// The token of an `Authorization: Bearer TOKEN` value (the scheme in any case).
fn bearer_token(value: &[u8]) -> Result<&str, AuthFailure> {
    let value = std::str::from_utf8(value)
        .map_err(|_| AuthFailure::InvalidHeader)?
        .trim();
    let (scheme, token) = value.split_once(' ').ok_or(AuthFailure::InvalidHeader)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthFailure::InvalidHeader);
    }
    Ok(token)
}

fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A relative path resolved against the working directory, as the reference does (its errors
/// name the absolute path).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Reads a token or secret file, trimmed; empty is an error.
fn read_secret(path: &Path) -> Result<String, String> {
    let failed = |err: std::io::Error| {
        format!(
            "failed to read websocket auth secret {}: {err}",
            path.display()
        )
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(failed)?
        .take(MAX_SECRET_FILE + 1)
        .read_to_string(&mut text)
        .map_err(failed)?;
    if text.len() as u64 > MAX_SECRET_FILE {
        return Err(format!(
            "websocket auth secret {} is larger than {} KiB",
            path.display(),
            MAX_SECRET_FILE / 1024
        ));
    }
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!(
            "websocket auth secret {} must not be empty",
            path.display()
        ));
    }
    Ok(trimmed.to_string())
}

fn read_token(path: &Path) -> Result<Credential, String> {
    let token = read_secret(path)?;
    Ok(Credential::Digest(Sha256::digest(token.as_bytes()).into()))
}

fn read_shared_secret(path: &Path) -> Result<Credential, String> {
    let secret = read_secret(path)?;
    if secret.len() < 32 {
        return Err(format!(
            "signed websocket bearer secret {} must be at least 32 bytes",
            path.display()
        ));
    }
    Ok(Credential::Hs256(DecodingKey::from_secret(
        secret.as_bytes(),
    )))
}

fn parse_sha256(hex: &str) -> Result<Credential, String> {
    let bad = || "--ws-token-sha256 must be a 64-character hex SHA-256 digest".to_string();
    let hex = hex.trim().as_bytes();
    // Hex digits only (`from_str_radix` would take a `+`).
    if hex.len() != 64 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return Err(bad());
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.chunks(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(Credential::Digest(digest))
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
