//! Token verification per algorithm, with the verified-token cache (a hit: only the time
//! claims are judged again) and without it (`jwt.cache = 0`: the full check, signature
//! included, on every request).
//!
//! `cargo bench --bench jwt`. Keys are generated here with josekit; the tokens carry the
//! claims the peer benchmark's tokens carry (iss, aud, sub, iat, nbf, exp, jti, email, scope).

use criterion::{criterion_group, criterion_main, Criterion};
use josekit::jwk::alg::{ec::EcKeyPair, ed::EdKeyPair, rsa::RsaKeyPair};
use josekit::jws::{JwsHeader, JwsSigner};
use josekit::jwt::JwtPayload;
use portcullis::auth::jwt::{Alg, KeyMaterial, KeySet, Policy, Verifier};
use serde_json::{json, Value};
use std::hint::black_box;

const ISSUER: &str = "https://auth.bench.local/";
const AUDIENCE: &str = "bench-api";
const SECRET: &[u8] = b"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn now() -> u64 {
    portcullis::auth::now()
}

/// A signer for `alg` and the key material a verifier needs.
fn keys(alg: Alg) -> (Box<dyn JwsSigner>, KeyMaterial) {
    const WHY: &str = "a fresh key loads into its own algorithm";
    let public = |pem: Vec<u8>| KeyMaterial {
        public_key_pem: Some(pem),
        ..KeyMaterial::default()
    };
    match alg {
        Alg::HS256 => (
            Box::new(josekit::jws::HS256.signer_from_bytes(SECRET).expect(WHY)),
            KeyMaterial {
                secret: Some(SECRET.to_vec()),
                ..KeyMaterial::default()
            },
        ),
        Alg::RS256 => {
            let pair = RsaKeyPair::generate(2048).expect("RSA key");
            (
                Box::new(
                    josekit::jws::RS256
                        .signer_from_der(pair.to_der_private_key())
                        .expect(WHY),
                ),
                public(pair.to_pem_public_key()),
            )
        }
        Alg::ES256 => {
            let pair =
                EcKeyPair::generate(josekit::jwk::alg::ec::EcCurve::P256).expect("P-256 key");
            (
                Box::new(
                    josekit::jws::ES256
                        .signer_from_der(pair.to_der_private_key())
                        .expect(WHY),
                ),
                public(pair.to_pem_public_key()),
            )
        }
        Alg::EdDSA => {
            let pair =
                EdKeyPair::generate(josekit::jwk::alg::ed::EdCurve::Ed25519).expect("Ed25519 key");
            (
                Box::new(
                    josekit::jws::EdDSA
                        .signer_from_der(pair.to_der_private_key())
                        .expect(WHY),
                ),
                public(pair.to_pem_public_key()),
            )
        }
        other => panic!("not benchmarked: {other}"),
    }
}

fn token(signer: &dyn JwsSigner) -> String {
    let now = now();
    let claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "user-0001", "iat": now, "nbf": now - 5,
        "exp": now + 3600, "jti": "6f1c0f0e2b7c4f0e9a3d5c1b2a4e6d8f",
        "email": "alice@example.test", "scope": "openid profile api:read",
    });
    let Value::Object(map) = claims else {
        unreachable!("an object literal")
    };
    let payload = JwtPayload::from_map(map).expect("claims");
    let mut header = JwsHeader::new();
    header.set_token_type("JWT");
    josekit::jwt::encode_with_signer(&payload, &header, signer).expect("signing")
}

fn verifier(alg: Alg, material: &KeyMaterial, cache_entries: usize) -> Verifier {
    let keys = KeySet::build(&[alg], material).expect("keys");
    Verifier::new(
        keys,
        Policy {
            algorithms: vec![alg],
            issuer: Some(ISSUER.to_owned()),
            audience: vec![AUDIENCE.to_owned()],
            leeway_secs: 30,
            required_claims: Vec::new(),
            cache_entries,
        },
    )
}

fn verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    for alg in [Alg::HS256, Alg::RS256, Alg::ES256, Alg::EdDSA] {
        let (signer, material) = keys(alg);
        let token = token(signer.as_ref());
        let now = now();
        let cold = verifier(alg, &material, 0);
        cold.verify(&token, now).expect("the token verifies");
        group.bench_function(format!("{alg}/cold"), |b| {
            b.iter(|| black_box(cold.verify(black_box(&token), now).is_ok()))
        });
        let warm = verifier(alg, &material, 10_000);
        warm.verify(&token, now).expect("the token verifies");
        group.bench_function(format!("{alg}/cached"), |b| {
            b.iter(|| black_box(warm.verify(black_box(&token), now).is_ok()))
        });
    }
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
