//! What the JWT fuzz targets share: a fixed clock and an HMAC verifier built from config-like
//! material, exactly as the proxy builds one.

use portcullis::auth::jwt::{Alg, KeyMaterial, KeySet, Policy, Verifier};

pub const NOW: u64 = 1_800_000_000;
pub const SECRET: &[u8] = b"a fuzzing secret that is long enough for HS512 ....................";

/// A verifier for `algorithms` (HMAC ones) keyed with [`SECRET`], with a small cache.
pub fn hmac_verifier(algorithms: Vec<Alg>) -> Verifier {
    let material = KeyMaterial {
        secret: Some(SECRET.to_vec()),
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
}
