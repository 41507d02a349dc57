//! `Verifier::verify` and `explain` on arbitrary input. Oracle: no panic, and nothing verifies
//! (the fuzzer does not know the secret).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis::auth::jwt::{Alg, KeyMaterial, KeySet, Policy, Verifier};

const NOW: u64 = 1_800_000_000;

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let algorithms = vec![Alg::HS256, Alg::HS512];
        let material = KeyMaterial {
            secret: Some(
                b"a fuzzing secret that is long enough for HS512 ....................".to_vec(),
            ),
            ..KeyMaterial::default()
        };
        let keys = KeySet::build(&algorithms, &material).expect("keys");
        let policy = Policy {
            algorithms,
            leeway_secs: 30,
            cache_entries: 64,
            ..Policy::default()
        };
        Verifier::new(keys, policy)
    })
}

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    assert!(verifier().verify(&token, NOW).is_err());
    let (_, result) = verifier().explain(&token, NOW);
    assert!(result.is_err());
});
