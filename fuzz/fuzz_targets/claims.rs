//! Signed tokens whose payload is arbitrary bytes, judged twice: by the verifier (which reads
//! only the claims it checks, `src/auth/jwt/parse.rs`) and by a reference written here on
//! `serde_json::Map`, the map every other part of the proxy sees. Oracle: the two agree on
//! every verdict, and an accepted token's claims are exactly the map's.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use portcullis::auth::jwt::{Alg, KeyMaterial, KeySet, Policy, Verifier};
use serde_json::{Map, Value};

#[path = "common.rs"]
#[allow(dead_code)] // the clock and secret only: this target builds its own verifier
mod common;
use common::{NOW, SECRET};

const LEEWAY: u64 = 30;
const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "api";

/// A verifier holding tokens to an issuer, an audience and a required claim, without a cache
/// (every input is judged afresh).
fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let material = KeyMaterial {
            secret: Some(SECRET.to_vec()),
            ..KeyMaterial::default()
        };
        let keys = KeySet::build(&[Alg::HS256], &material).expect("keys");
        let policy = Policy {
            algorithms: vec![Alg::HS256],
            issuer: Some(ISSUER.to_owned()),
            audience: vec![AUDIENCE.to_owned()],
            leeway_secs: LEEWAY,
            required_claims: vec![("role".to_owned(), vec!["admin".to_owned()])],
            cache_entries: 0,
        };
        Verifier::new(keys, policy)
    })
}

/// The verdict of the rules in `docs/security.md`, on the map of every claim.
fn reference(payload: &[u8]) -> Result<Map<String, Value>, &'static str> {
    let map: Map<String, Value> = serde_json::from_slice(payload).map_err(|_| "not an object")?;
    let time = |name: &str| match map.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .filter(|t| *t < 1 << 53)
            .map(Some)
            .ok_or("bad time claim"),
    };
    let exp = time("exp")?.ok_or("no exp")?;
    let (nbf, iat) = (time("nbf")?, time("iat")?);
    if nbf.is_some_and(|t| t > NOW + LEEWAY) || iat.is_some_and(|t| t > NOW + LEEWAY) {
        return Err("in the future");
    }
    if map.get("iss").and_then(Value::as_str) != Some(ISSUER) {
        return Err("issuer");
    }
    let audience = match map.get("aud") {
        Some(Value::String(aud)) => aud == AUDIENCE,
        Some(Value::Array(items)) => {
            items.iter().all(Value::is_string) && items.iter().any(|a| a == AUDIENCE)
        }
        _ => false,
    };
    if !audience {
        return Err("audience");
    }
    let marks = |name: &str| {
        map.get(name).and_then(Value::as_str).is_some_and(|kind| {
            let lower = kind.to_ascii_lowercase();
            let bare = lower.strip_prefix("application/").unwrap_or(&lower);
            let bare = bare.strip_suffix("+jwt").unwrap_or(bare);
            ["refresh", "refresh_token", "id", "id_token"].contains(&bare)
        })
    };
    if marks("typ") || marks("token_type") {
        return Err("not an access token");
    }
    let role = match map.get("role") {
        Some(Value::Array(items)) => items.iter().any(|r| r == "admin"),
        Some(role) => role == "admin",
        None => false,
    };
    if !role {
        return Err("role");
    }
    if NOW > exp + LEEWAY {
        return Err("expired");
    }
    Ok(map)
}

fn sign(payload: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let signing_input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET);
    let tag = ring::hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let token = sign(data);
    let verdict = verifier().verify(&token, NOW);
    match (reference(data), verdict) {
        (Ok(map), Ok(claims)) => {
            assert_eq!(claims.as_json(), &map, "the claims differ from the map");
            assert_eq!(Some(claims.exp()), map.get("exp").and_then(Value::as_u64));
        }
        (Err(_), Err(_)) => {}
        (expected, got) => panic!(
            "verdicts differ on {:?}: reference {:?}, verifier {:?}",
            String::from_utf8_lossy(data),
            expected.map(|_| "accept"),
            got.map(|_| "accept")
        ),
    }
});
