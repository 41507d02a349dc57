//! TEMPORARY STUB — replaced by the real josekit-backed module.
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alg {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    ES512,
    EdDSA,
}
impl std::str::FromStr for Alg {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "HS256" => Ok(Alg::HS256),
            "RS256" => Ok(Alg::RS256),
            "ES256" => Ok(Alg::ES256),
            "EdDSA" => Ok(Alg::EdDSA),
            _ => Err(()),
        }
    }
}
impl Alg {
    pub fn name(self) -> &'static str {
        "HS256"
    }
    pub fn is_hmac(self) -> bool {
        matches!(self, Alg::HS256 | Alg::HS384 | Alg::HS512)
    }
}
#[derive(Clone, Debug, Default)]
pub struct KeyMaterial {
    pub secret: Option<Vec<u8>>,
    pub public_key_pem: Option<Vec<u8>>,
    pub jwks_json: Option<Vec<u8>>,
}
#[derive(Debug)]
pub struct KeySet;
#[derive(Debug, thiserror::Error)]
#[error("key error")]
pub struct KeyError;
impl KeySet {
    pub fn build(_a: &[Alg], _m: &KeyMaterial) -> Result<KeySet, KeyError> {
        Ok(KeySet)
    }
    pub fn from_jwks(_a: &[Alg], _j: &[u8]) -> Result<KeySet, KeyError> {
        Ok(KeySet)
    }
    pub fn merge(self, _o: KeySet) -> KeySet {
        self
    }
    pub fn len(&self) -> usize {
        1
    }
    pub fn is_empty(&self) -> bool {
        false
    }
}
pub struct Policy {
    pub algorithms: Vec<Alg>,
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub leeway_secs: u64,
    pub required_claims: Vec<(String, Vec<String>)>,
    pub cache_entries: usize,
}
#[derive(Debug)]
pub struct Claims {
    map: serde_json::Map<String, serde_json::Value>,
}
impl Claims {
    pub fn exp(&self) -> u64 {
        0
    }
    pub fn get(&self, n: &str) -> Option<&serde_json::Value> {
        self.map.get(n)
    }
    pub fn as_json(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.map
    }
    pub fn sub(&self) -> Option<&str> {
        None
    }
    pub fn satisfies(&self, _n: &str, _a: &[String]) -> bool {
        false
    }
}
pub struct Verifier;
impl Verifier {
    pub fn keys(&self) -> &KeySet {
        &KeySet
    }
    pub fn new(_k: KeySet, _p: Policy) -> Verifier {
        Verifier
    }
    pub fn replace_keys(&self, _k: KeySet) {}
    pub fn verify(&self, _t: &str, _now: u64) -> Result<Arc<Claims>, Rejection> {
        Err(Rejection::BadSignature)
    }
}
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("malformed")]
    Malformed(&'static str),
    #[error("bad signature")]
    BadSignature,
    #[error("expired")]
    Expired,
}
impl Rejection {
    pub fn is_expired_only(&self) -> bool {
        matches!(self, Rejection::Expired)
    }
}
