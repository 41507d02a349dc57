//! `Verifier::verify` and `explain` on arbitrary input. Oracle: no panic, and nothing verifies
//! (the fuzzer does not know the secret).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis::auth::jwt::{Alg, Verifier};

#[path = "common.rs"]
mod common;
use common::{hmac_verifier, NOW};

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| hmac_verifier(vec![Alg::HS256, Alg::HS512]))
}

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    assert!(verifier().verify(&token, NOW).is_err());
    let (_, result) = verifier().explain(&token, NOW);
    assert!(result.is_err());
});
