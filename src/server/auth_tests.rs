//! The header's parsing, the claims' checks at a fixed time, and the flags checked together.

use super::*;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const NOW: f64 = 1_000_000.0;

fn signed(flags: AuthFlags) -> Authenticator {
    Authenticator {
        source: Source::TokenDigest,
        current: RwLock::new(Arc::new(Credential::Hs256(DecodingKey::from_secret(
            SECRET.as_bytes(),
        )))),
        issuer: flags.issuer,
        audience: flags.audience,
        skew_seconds: flags.max_clock_skew_seconds.unwrap_or(30),
    }
}

fn jwt(claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn check_at(auth: &Authenticator, claims: Value) -> Result<(), AuthFailure> {
    let Credential::Hs256(key) = &**auth.current.read().unwrap() else {
        unreachable!()
    };
    auth.check_jwt(&jwt(claims), key, NOW)
}

#[test]
fn bearer_scheme_is_case_insensitive_and_needs_a_token() {
    assert_eq!(bearer_token(b"Bearer abc"), Ok("abc"));
    assert_eq!(bearer_token(b"bearer abc"), Ok("abc"));
    assert_eq!(bearer_token(b"BEARER  abc "), Ok("abc"));
    for bad in [
        &b"Basic abc"[..],
        b"Bearer",
        b"Bearer ",
        b"Bearerabc",
        b"",
        b"Bearer \xff",
    ] {
        assert_eq!(
            bearer_token(bad),
            Err(AuthFailure::InvalidHeader),
            "{bad:?}"
        );
    }
}

#[test]
fn claims_are_checked_with_the_skew() {
    let auth = signed(AuthFlags::default());
    assert_eq!(check_at(&auth, json!({"exp": NOW + 1.0})), Ok(()));
    assert_eq!(check_at(&auth, json!({"exp": NOW - 29.0})), Ok(()));
    assert_eq!(
        check_at(&auth, json!({"exp": NOW - 31.0})),
        Err(AuthFailure::Expired)
    );
    assert_eq!(
        check_at(&auth, json!({"exp": NOW + 60.0, "nbf": NOW + 31.0})),
        Err(AuthFailure::NotYetValid)
    );
    assert_eq!(
        check_at(&auth, json!({"exp": NOW + 60.0, "nbf": NOW + 29.0})),
        Ok(())
    );
    assert_eq!(check_at(&auth, json!({})), Err(AuthFailure::InvalidJwt));
    assert_eq!(
        check_at(&auth, json!({"exp": "soon"})),
        Err(AuthFailure::InvalidJwt)
    );
}

#[test]
fn issuer_and_audience_must_match_when_set() {
    let auth = signed(AuthFlags {
        issuer: Some("iss".into()),
        audience: Some("aud".into()),
        ..AuthFlags::default()
    });
    let exp = NOW + 60.0;
    assert_eq!(
        check_at(&auth, json!({"exp": exp, "iss": "iss", "aud": "aud"})),
        Ok(())
    );
    assert_eq!(
        check_at(
            &auth,
            json!({"exp": exp, "iss": "iss", "aud": ["x", "aud"]})
        ),
        Ok(())
    );
    assert_eq!(
        check_at(&auth, json!({"exp": exp, "iss": "other", "aud": "aud"})),
        Err(AuthFailure::IssuerMismatch)
    );
    assert_eq!(
        check_at(&auth, json!({"exp": exp, "aud": "aud"})),
        Err(AuthFailure::IssuerMismatch)
    );
    assert_eq!(
        check_at(&auth, json!({"exp": exp, "iss": "iss", "aud": ["x"]})),
        Err(AuthFailure::AudienceMismatch)
    );
    assert_eq!(
        check_at(&auth, json!({"exp": exp, "iss": "iss"})),
        Err(AuthFailure::AudienceMismatch)
    );
}

#[test]
fn sha256_must_be_64_hex_digits() {
    let ok = "ab".repeat(32);
    assert!(parse_sha256(&ok).is_ok());
    assert!(parse_sha256(&ok.to_uppercase()).is_ok());
    for bad in [
        "ab".repeat(31),
        "ab".repeat(33),
        format!("+f{}", "ab".repeat(31)),
        "zz".repeat(32),
    ] {
        assert_eq!(
            parse_sha256(&bad).err().as_deref(),
            Some("--ws-token-sha256 must be a 64-character hex SHA-256 digest"),
            "{bad}"
        );
    }
}

#[test]
fn a_capability_token_is_compared_by_digest() {
    let token = "s3cret-token";
    let hex: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let auth = Authenticator::from_flags(AuthFlags {
        mode: Some(AuthMode::CapabilityToken),
        token_sha256: Some(hex),
        ..AuthFlags::default()
    })
    .unwrap()
    .unwrap();
    assert_eq!(auth.check(Some(b"Bearer s3cret-token")), Ok(()));
    assert_eq!(
        auth.check(Some(b"Bearer s3cret-tokem")),
        Err(AuthFailure::InvalidToken)
    );
    assert_eq!(auth.check(None), Err(AuthFailure::MissingToken));
    assert_eq!(auth.reload(), Ok(None));
    let debug = format!("{auth:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
}

#[test]
fn flags_that_do_not_go_together_are_refused() {
    let err = |flags: AuthFlags| Authenticator::from_flags(flags).unwrap_err();
    assert_eq!(
        err(AuthFlags {
            issuer: Some("x".into()),
            ..AuthFlags::default()
        }),
        "websocket auth flags require `--ws-auth capability-token` or `--ws-auth signed-bearer-token`"
    );
    assert_eq!(
        err(AuthFlags {
            mode: Some(AuthMode::CapabilityToken),
            max_clock_skew_seconds: Some(1),
            token_sha256: Some("ab".repeat(32)),
            ..AuthFlags::default()
        }),
        "`--ws-shared-secret-file`, `--ws-issuer`, `--ws-audience`, and `--ws-max-clock-skew-seconds` require `--ws-auth signed-bearer-token`"
    );
    assert_eq!(
        err(AuthFlags {
            mode: Some(AuthMode::SignedBearerToken),
            token_sha256: Some("ab".repeat(32)),
            ..AuthFlags::default()
        }),
        "`--ws-token-file` and `--ws-token-sha256` require `--ws-auth capability-token`, not `signed-bearer-token`"
    );
    assert_eq!(
        err(AuthFlags {
            mode: Some(AuthMode::SignedBearerToken),
            ..AuthFlags::default()
        }),
        "`--ws-shared-secret-file` is required when `--ws-auth signed-bearer-token` is set"
    );
    assert!(
        Authenticator::from_flags(AuthFlags::default())
            .unwrap()
            .is_none()
    );
}
