//! Mutations of a valid token. Oracle: no panic; a token that differs from the genuine one in
//! any byte never verifies (the base64url decoding is canonical, so no two spellings agree).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis::auth::jwt::{self, Alg, Verifier};

#[path = "common.rs"]
mod common;
use common::{hmac_verifier, NOW, SECRET};

fn fixture() -> &'static (Verifier, String) {
    static FIXTURE: OnceLock<(Verifier, String)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let claims = serde_json::json!({ "sub": "alice", "exp": NOW + 600, "iat": NOW });
        let serde_json::Value::Object(claims) = claims else {
            unreachable!()
        };
        let token = jwt::sign_hs256(SECRET, &claims).expect("sign");
        (hmac_verifier(vec![Alg::HS256]), token)
    })
}

fuzz_target!(|data: &[u8]| {
    let (verifier, genuine) = fixture();
    assert!(verifier.verify(genuine, NOW).is_ok());
    // Each pair of input bytes is (position, xor mask) applied to the genuine token.
    let mut bytes = genuine.as_bytes().to_vec();
    for pair in data.chunks_exact(2) {
        let at = usize::from(pair[0]) * bytes.len() / 256;
        bytes[at] ^= pair[1];
    }
    let Ok(mutated) = String::from_utf8(bytes) else {
        return;
    };
    if mutated != *genuine {
        assert!(
            verifier.verify(&mutated, NOW).is_err(),
            "a mutated token verified: {mutated}"
        );
    }
});
