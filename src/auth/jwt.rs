//! JWT access-token verification: the one place that decides whether a token is genuine and
//! acceptable.
//!
//! This module owns the algorithm allowlist ([`Alg`]), the verification keys read from
//! configuration ([`KeySet`]: an HMAC secret, a PEM public key or certificate, JWKS documents),
//! the claim policy ([`Policy`]), [`Verifier::verify`] with its verified-token cache, and the
//! step-by-step trace behind `portcullis explain` ([`Verifier::explain`]).
//!
//! josekit 0.10 is used for signature primitives only. Its JWT layer accepts tokens without
//! `exp`, ignores a missing `aud`, has no leeway and panics on huge time claims, so this module
//! parses the compact form, the header and the claims itself (RFC 8725) and hands josekit nothing
//! but the signing input, the signature bytes and a verifier chosen from configuration.
//!
//! **Invariant:** the configured key decides the algorithm family; a token's header only selects,
//! by exact `alg` and `kid`, among keys that configuration already paired with that algorithm.
//! Header `jku`, `x5u`, `x5c` and `jwk` are never used and nothing is ever fetched.
//!
//! **Invariant:** [`Rejection::Expired`] is returned only when the signature and every other
//! check passed, so an expired token may safely be taken as proof of a session to refresh.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use josekit::jwk::Jwk;
use josekit::jws::alg::hmac::HmacJwsSigner;
use josekit::jws::{JwsSigner as _, JwsVerifier};
use josekit::JoseError;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use serde_json::{Map, Value};

#[cfg(test)]
mod tests;

/// Tokens longer than this are refused before any decoding. Real access tokens are far
/// smaller, and the bound caps every later allocation.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The shortest HMAC secret accepted (256 bits). HS384 and HS512 need 48 and 64 bytes
/// (RFC 7518 §3.2).
pub const MIN_SECRET_LEN: usize = 32;

/// Upper bound on the memory held by the verified-token cache, whatever `cache_entries` says.
pub const CACHE_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Time claims must be below 2^53: the largest range every JSON implementation represents
/// exactly, and far below the values that make josekit panic.
const TIME_LIMIT: u64 = 1 << 53;

/// What a cache entry costs besides its token and claims text: the map slot, the `Arc`, and
/// the parsed JSON, which takes roughly twice the space of its text.
const CACHE_ENTRY_OVERHEAD: usize = 192;

/// `typ` / `token_type` values that mark a token which must never be used as an access token.
const NON_ACCESS_TYPES: [&str; 4] = ["refresh", "refresh_token", "id", "id_token"];

/// A JWS algorithm that may appear in `jwt.algorithms`. "none" is deliberately absent.
// The variants are the JOSE names themselves, so the acronym lint does not apply.
#[allow(clippy::upper_case_acronyms)]
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

const RSA_ALGS: &[Alg] = &[
    Alg::RS256,
    Alg::RS384,
    Alg::RS512,
    Alg::PS256,
    Alg::PS384,
    Alg::PS512,
];

impl Alg {
    /// Every supported algorithm, in the order they are listed to users.
    pub const ALL: [Alg; 13] = [
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::ES512,
        Alg::EdDSA,
    ];

    /// The JOSE `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::ES512 => "ES512",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// Whether this is a shared-secret (HS*) algorithm.
    pub fn is_hmac(self) -> bool {
        matches!(self, Alg::HS256 | Alg::HS384 | Alg::HS512)
    }

    /// Exact, case-sensitive lookup of a JOSE name; `None` for anything else, which includes
    /// every spelling of "none". Used on the hot path because it never allocates.
    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// The shortest secret RFC 7518 §3.2 allows: at least the size of the hash output.
    fn min_secret_len(self) -> usize {
        match self {
            Alg::HS384 => 48,
            Alg::HS512 => 64,
            _ => MIN_SECRET_LEN,
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const ALG_NAMES: &str =
    "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA";

/// Why a string is not an [`Alg`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlgError {
    #[error("the \"none\" algorithm is never accepted")]
    None,
    #[error("unsupported JWT algorithm {0:?}; expected one of {ALG_NAMES}")]
    Unknown(String),
}

impl FromStr for Alg {
    type Err = AlgError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("none") {
            return Err(AlgError::None);
        }
        Alg::from_name(s).ok_or_else(|| AlgError::Unknown(s.to_owned()))
    }
}

impl<'de> serde::Deserialize<'de> for Alg {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// Why configured key material cannot be used. The message names the material and the reason,
/// never key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("HMAC secret: {0}")]
    Secret(String),
    #[error("public key: {0}")]
    PublicKey(String),
    #[error("JWKS: {0}")]
    Jwks(String),
}

/// Key material read from configuration at start-up (files already read into memory by the
/// caller).
#[derive(Clone, Default)]
pub struct KeyMaterial {
    pub secret: Option<Vec<u8>>,
    pub public_key_pem: Option<Vec<u8>>,
    pub jwks_json: Option<Vec<u8>>,
}

impl fmt::Debug for KeyMaterial {
    // The secret must never reach a log line, so only the presence of each material is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("public_key_pem", &self.public_key_pem.is_some())
            .field("jwks_json", &self.jwks_json.is_some())
            .finish()
    }
}

/// How one configured key checks a signature.
enum KeyCheck {
    /// josekit's HMAC verifier compares MACs with `!=`, which can reveal through timing how
    /// much of a forged MAC is right. The MAC is recomputed with the signer instead and
    /// compared in constant time.
    Hmac(HmacJwsSigner),
    Public(Box<dyn JwsVerifier>),
}

impl KeyCheck {
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            KeyCheck::Hmac(signer) => signer.sign(message).is_ok_and(|mac| {
                // `memcmp::eq` requires equal lengths; the length of a MAC is public.
                mac.len() == signature.len() && openssl::memcmp::eq(&mac, signature)
            }),
            KeyCheck::Public(verifier) => verifier.verify(message, signature).is_ok(),
        }
    }
}

/// One verification key paired with the one algorithm it is used with.
struct KeyEntry {
    kid: Option<String>,
    alg: Alg,
    check: KeyCheck,
}

/// An immutable set of verification keys: (optional kid, alg, verifier) entries. A key that
/// serves several algorithms (an RSA key with RS256 and PS256) has one entry per algorithm.
#[derive(Default)]
pub struct KeySet {
    entries: Vec<KeyEntry>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| (e.kid.as_deref(), e.alg)))
            .finish()
    }
}

impl KeySet {
    /// Builds one verifier per (key, allowed algorithm) pair whose family matches the key.
    ///
    /// An HMAC secret pairs with the allowed HS* algorithms; a PEM public key (SPKI, PKCS#1 RSA
    /// or an X.509 certificate) with the allowed algorithms of its key type; a JWKS document
    /// with every key that fits an allowed algorithm. Material that is absent contributes
    /// nothing, so an empty [`KeyMaterial`] gives an empty set (keys may come from a JWKS URL
    /// later); material that is present but unusable is an error.
    pub fn build(algs: &[Alg], material: &KeyMaterial) -> Result<KeySet, KeyError> {
        let mut set = KeySet::default();
        if let Some(secret) = &material.secret {
            set.entries.extend(secret_entries(algs, secret)?);
        }
        if let Some(pem) = &material.public_key_pem {
            set.entries.extend(pem_entries(algs, pem)?);
        }
        if let Some(jwks) = &material.jwks_json {
            set = set.merge(KeySet::from_jwks(algs, jwks)?);
        }
        Ok(set)
    }

    /// Reads a JWKS document (`{"keys": [...]}`). Each key whose `kty`/`crv` (and `alg`, when
    /// stated) fits an allowed algorithm contributes an entry under its `kid`; keys for other
    /// uses (encryption, unsupported curves) are skipped. Symmetric `oct` keys are skipped too:
    /// a JWKS is public material, and a shared secret belongs in `jwt.secret`. Errors when the
    /// document is unparsable or yields no usable key.
    pub fn from_jwks(algs: &[Alg], jwks_json: &[u8]) -> Result<KeySet, KeyError> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<Map<String, Value>>,
        }

        let document: Document = serde_json::from_slice(jwks_json)
            .map_err(|e| KeyError::Jwks(format!("not a JWKS document ({e})")))?;
        let mut set = KeySet::default();
        let mut skipped = Vec::new();
        for (index, map) in document.keys.into_iter().enumerate() {
            match jwk_entries(algs, map) {
                Ok(entries) => set.entries.extend(entries),
                Err(reason) => {
                    tracing::debug!(key = index, %reason, "JWKS key skipped");
                    skipped.push(format!("key #{index}: {reason}"));
                }
            }
        }
        if set.is_empty() {
            // A handful of reasons is enough to see the pattern; a large JWKS must not turn
            // into a screen-filling error.
            const SHOWN: usize = 5;
            let reasons = if skipped.is_empty() {
                "the document has no keys".to_owned()
            } else if skipped.len() > SHOWN {
                let more = skipped.len() - SHOWN;
                format!("{}; and {more} more", skipped[..SHOWN].join("; "))
            } else {
                skipped.join("; ")
            };
            return Err(KeyError::Jwks(format!(
                "no usable key for {}: {reasons}",
                alg_list(algs)
            )));
        }
        Ok(set)
    }

    /// Combines two sets, e.g. static keys with fetched JWKS keys.
    pub fn merge(mut self, other: KeySet) -> KeySet {
        self.entries.extend(other.entries);
        self
    }

    /// The number of (key, algorithm) entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The distinct key ids, in configuration order, for diagnostics.
    pub fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = Vec::new();
        for kid in self.entries.iter().filter_map(|e| e.kid.as_ref()) {
            if !kids.contains(kid) {
                kids.push(kid.clone());
            }
        }
        kids
    }

    /// The distinct algorithms some key can verify, for diagnostics.
    pub fn algorithms(&self) -> Vec<Alg> {
        let mut algs: Vec<Alg> = Vec::new();
        for entry in &self.entries {
            if !algs.contains(&entry.alg) {
                algs.push(entry.alg);
            }
        }
        algs
    }
}

fn secret_entries(algs: &[Alg], secret: &[u8]) -> Result<Vec<KeyEntry>, KeyError> {
    let error = |message: String| Err(KeyError::Secret(message));
    if secret.trim_ascii_start().starts_with(b"-----BEGIN") {
        return error(
            "the secret is a PEM document, not an HMAC secret; configure it as the public key"
                .to_owned(),
        );
    }
    if secret.len() < MIN_SECRET_LEN {
        return error(format!(
            "the secret is {} bytes; at least {MIN_SECRET_LEN} are required",
            secret.len()
        ));
    }
    let hmac_algs: Vec<Alg> = distinct(algs).filter(|alg| alg.is_hmac()).collect();
    if hmac_algs.is_empty() {
        return error(format!(
            "a secret is configured but the allowed algorithms ({}) include no HS256/HS384/HS512",
            alg_list(algs)
        ));
    }
    let mut entries = Vec::with_capacity(hmac_algs.len());
    for alg in hmac_algs {
        if secret.len() < alg.min_secret_len() {
            return error(format!(
                "{alg} needs a secret of at least {} bytes; this one has {}",
                alg.min_secret_len(),
                secret.len()
            ));
        }
        let signer = match alg {
            Alg::HS384 => josekit::jws::HS384.signer_from_bytes(secret),
            Alg::HS512 => josekit::jws::HS512.signer_from_bytes(secret),
            _ => josekit::jws::HS256.signer_from_bytes(secret),
        }
        .map_err(|e| KeyError::Secret(format!("{alg}: {e}")))?;
        entries.push(KeyEntry {
            kid: None,
            alg,
            check: KeyCheck::Hmac(signer),
        });
    }
    Ok(entries)
}

fn pem_entries(algs: &[Alg], pem: &[u8]) -> Result<Vec<KeyEntry>, KeyError> {
    let key = public_key_from_pem(pem)?;
    let (kind, family) = pem_key_family(&key)?;
    let usable: Vec<Alg> = distinct(algs).filter(|alg| family.contains(alg)).collect();
    if usable.is_empty() {
        return Err(KeyError::PublicKey(format!(
            "the key is {kind}, which is used with {}, but the allowed algorithms are {}",
            alg_list(family),
            alg_list(algs)
        )));
    }
    let spki = key
        .public_key_to_der()
        .map_err(|e| KeyError::PublicKey(format!("cannot re-encode the {kind} key: {e}")))?;
    usable
        .into_iter()
        .map(|alg| {
            let verifier = verifier_from_der(alg, &spki)
                .map_err(|e| KeyError::PublicKey(format!("{kind} key for {alg}: {e}")))?;
            Ok(KeyEntry {
                kid: None,
                alg,
                check: KeyCheck::Public(verifier),
            })
        })
        .collect()
}

/// Parses the first PEM block: a public key (SPKI or PKCS#1 RSA) or a certificate.
fn public_key_from_pem(pem: &[u8]) -> Result<PKey<Public>, KeyError> {
    let error = |message: String| KeyError::PublicKey(message);
    let text = std::str::from_utf8(pem)
        .map_err(|_| error("not a PEM document (not UTF-8 text)".to_owned()))?;
    let label = pem_label(text)
        .ok_or_else(|| error("no PEM block (-----BEGIN ...-----) found".to_owned()))?;
    let parsed = match label {
        "PUBLIC KEY" => PKey::public_key_from_pem(pem),
        "RSA PUBLIC KEY" => {
            openssl::rsa::Rsa::public_key_from_pem_pkcs1(pem).and_then(PKey::from_rsa)
        }
        "CERTIFICATE" => openssl::x509::X509::from_pem(pem).and_then(|cert| cert.public_key()),
        label if label.ends_with("PRIVATE KEY") => {
            return Err(error(format!(
                "the PEM holds a private key ({label}); configure the public key or certificate"
            )));
        }
        label => {
            return Err(error(format!(
                "unsupported PEM block {label:?}; \
                 expected PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE"
            )));
        }
    };
    parsed.map_err(|e| error(format!("unparsable {label} PEM ({e})")))
}

fn pem_label(text: &str) -> Option<&str> {
    const BEGIN: &str = "-----BEGIN ";
    let start = text.find(BEGIN)? + BEGIN.len();
    let rest = text.get(start..)?;
    rest.get(..rest.find("-----")?)
}

/// What kind of key this is and which algorithms it may be used with.
fn pem_key_family(key: &PKey<Public>) -> Result<(&'static str, &'static [Alg]), KeyError> {
    let id = key.id();
    if id == Id::RSA {
        Ok(("RSA", RSA_ALGS))
    } else if id == Id::RSA_PSS {
        Ok(("RSA-PSS", &[Alg::PS256, Alg::PS384, Alg::PS512]))
    } else if id == Id::EC {
        let curve = key.ec_key().ok().and_then(|ec| ec.group().curve_name());
        match curve {
            Some(Nid::X9_62_PRIME256V1) => Ok(("EC P-256", &[Alg::ES256])),
            Some(Nid::SECP384R1) => Ok(("EC P-384", &[Alg::ES384])),
            Some(Nid::SECP521R1) => Ok(("EC P-521", &[Alg::ES512])),
            _ => Err(KeyError::PublicKey(
                "EC key on an unsupported curve; P-256, P-384 and P-521 are supported".to_owned(),
            )),
        }
    } else if id == Id::ED25519 {
        Ok(("Ed25519", &[Alg::EdDSA]))
    } else if id == Id::ED448 {
        Ok(("Ed448", &[Alg::EdDSA]))
    } else {
        Err(KeyError::PublicKey(
            "unsupported key type; expected RSA, EC (P-256, P-384, P-521) or Ed25519".to_owned(),
        ))
    }
}

/// The entries one JWK contributes, or why it contributes none.
fn jwk_entries(algs: &[Alg], map: Map<String, Value>) -> Result<Vec<KeyEntry>, String> {
    let jwk = Jwk::from_map(map).map_err(|e| e.to_string())?;
    let family: &[Alg] = match (jwk.key_type(), jwk.curve()) {
        ("RSA", _) => RSA_ALGS,
        ("EC", Some("P-256")) => &[Alg::ES256],
        ("EC", Some("P-384")) => &[Alg::ES384],
        ("EC", Some("P-521")) => &[Alg::ES512],
        ("OKP", Some("Ed25519" | "Ed448")) => &[Alg::EdDSA],
        ("oct", _) => return Err("symmetric (oct) keys are not taken from a JWKS".to_owned()),
        (kty, curve) => {
            return Err(format!(
                "unsupported key type {} (curve {})",
                shown(kty),
                shown(curve.unwrap_or("none"))
            ))
        }
    };
    let kid = jwk.key_id().map(str::to_owned);
    let usable: Vec<Alg> = distinct(algs)
        .filter(|alg| family.contains(alg))
        .filter(|alg| jwk.algorithm().is_none_or(|stated| stated == alg.name()))
        .collect();
    if usable.is_empty() {
        return Err(format!(
            "a {} key{} fits none of the allowed algorithms",
            jwk.key_type(),
            jwk.algorithm()
                .map(|a| format!(" for {}", shown(a)))
                .unwrap_or_default()
        ));
    }
    usable
        .into_iter()
        .map(|alg| {
            let verifier = verifier_from_jwk(alg, &jwk).map_err(|e| format!("{alg}: {e}"))?;
            Ok(KeyEntry {
                kid: kid.clone(),
                alg,
                check: KeyCheck::Public(verifier),
            })
        })
        .collect()
}

/// Builds a public-key verifier for `alg` with the josekit constructor `$method`.
macro_rules! public_verifier {
    ($alg:expr, $method:ident, $input:expr) => {
        match $alg {
            Alg::RS256 => boxed(josekit::jws::RS256.$method($input)),
            Alg::RS384 => boxed(josekit::jws::RS384.$method($input)),
            Alg::RS512 => boxed(josekit::jws::RS512.$method($input)),
            Alg::PS256 => boxed(josekit::jws::PS256.$method($input)),
            Alg::PS384 => boxed(josekit::jws::PS384.$method($input)),
            Alg::PS512 => boxed(josekit::jws::PS512.$method($input)),
            Alg::ES256 => boxed(josekit::jws::ES256.$method($input)),
            Alg::ES384 => boxed(josekit::jws::ES384.$method($input)),
            Alg::ES512 => boxed(josekit::jws::ES512.$method($input)),
            Alg::EdDSA => boxed(josekit::jws::EdDSA.$method($input)),
            Alg::HS256 | Alg::HS384 | Alg::HS512 => {
                Err("HMAC algorithms have no public key".to_owned())
            }
        }
    };
}

fn verifier_from_der(alg: Alg, spki: &[u8]) -> Result<Box<dyn JwsVerifier>, String> {
    public_verifier!(alg, verifier_from_der, spki)
}

fn verifier_from_jwk(alg: Alg, jwk: &Jwk) -> Result<Box<dyn JwsVerifier>, String> {
    public_verifier!(alg, verifier_from_jwk, jwk)
}

fn boxed<V: JwsVerifier + 'static>(
    verifier: Result<V, JoseError>,
) -> Result<Box<dyn JwsVerifier>, String> {
    match verifier {
        Ok(verifier) => Ok(Box::new(verifier)),
        Err(e) => Err(e.to_string()),
    }
}

fn distinct(algs: &[Alg]) -> impl Iterator<Item = Alg> + '_ {
    algs.iter()
        .enumerate()
        .filter(|(i, alg)| !algs[..*i].contains(alg))
        .map(|(_, alg)| *alg)
}

fn alg_list(algs: &[Alg]) -> String {
    if algs.is_empty() {
        return "none".to_owned();
    }
    distinct(algs).map(Alg::name).collect::<Vec<_>>().join(", ")
}

/// What an access token must satisfy besides its signature.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub algorithms: Vec<Alg>,
    pub issuer: Option<String>,
    /// Empty = not checked; otherwise the token's `aud` (string or array) must contain one.
    pub audience: Vec<String>,
    pub leeway_secs: u64,
    /// Claims required of every access token: claim name -> allowed values (a token claim that
    /// is a string must equal one; a token claim that is an array must contain one), e.g.
    /// `token_type -> ["access"]`.
    pub required_claims: Vec<(String, Vec<String>)>,
    /// 0 = verified-token cache off.
    pub cache_entries: usize,
}

/// The verified claims of a token.
#[derive(Clone, Debug, PartialEq)]
pub struct Claims {
    map: Map<String, Value>,
    exp: u64,
    nbf: Option<u64>,
    iat: Option<u64>,
    /// Length of the payload JSON text, the basis of the cache's memory accounting.
    size: usize,
}

impl Claims {
    /// Expiry, unix seconds (always present: tokens without `exp` are rejected).
    pub fn exp(&self) -> u64 {
        self.exp
    }

    pub fn nbf(&self) -> Option<u64> {
        self.nbf
    }

    pub fn iat(&self) -> Option<u64> {
        self.iat
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name)
    }

    pub fn as_json(&self) -> &Map<String, Value> {
        &self.map
    }

    pub fn sub(&self) -> Option<&str> {
        self.map.get("sub").and_then(Value::as_str)
    }

    /// Whether claim `name` satisfies one of `allowed`: a string claim must equal one, an array
    /// claim must contain one, and numbers and booleans are compared by their JSON text
    /// (`42`, `true`). An absent claim, `null`, an object, or an empty `allowed` never does.
    pub fn satisfies(&self, name: &str, allowed: &[String]) -> bool {
        match self.map.get(name) {
            Some(Value::Array(items)) => items.iter().any(|item| scalar_in(item, allowed)),
            Some(value) => scalar_in(value, allowed),
            None => false,
        }
    }

    /// Judges the time claims against `now`. Expiry comes last so that `Expired` always means
    /// "and nothing else is wrong".
    fn judge_times(&self, now: u64, leeway: u64, ignore_exp: bool) -> Result<(), Rejection> {
        let horizon = now.saturating_add(leeway);
        if self.nbf.is_some_and(|nbf| nbf > horizon) {
            Err(Rejection::NotYetValid)
        } else if self.iat.is_some_and(|iat| iat > horizon) {
            Err(Rejection::IssuedInFuture)
        } else if !ignore_exp && self.expired_at(now, leeway) {
            Err(Rejection::Expired)
        } else {
            Ok(())
        }
    }

    fn expired_at(&self, now: u64, leeway: u64) -> bool {
        now > self.exp.saturating_add(leeway)
    }
}

fn scalar_in(value: &Value, allowed: &[String]) -> bool {
    match value {
        Value::String(s) => allowed.iter().any(|a| a == s),
        Value::Number(_) | Value::Bool(_) => {
            let text = value.to_string();
            allowed.contains(&text)
        }
        Value::Null | Value::Array(_) | Value::Object(_) => false,
    }
}

/// Why a token was refused. The `Display` text is a short reason for logs and never contains
/// token text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("token too large")]
    TooLarge,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("critical header parameters are not accepted")]
    Critical,
    #[error("no configured key matches the token")]
    UnknownKey,
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("bad time claim: {0}")]
    BadTimeClaim(&'static str),
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
    #[error("not an access token")]
    NotAnAccessToken,
    #[error("required claim {0:?} missing or not satisfied")]
    MissingClaim(String),
}

impl Rejection {
    /// True for `Expired`, which is only returned when the signature and all other checks
    /// passed: the token is genuine and may be refreshed.
    pub fn is_expired_only(&self) -> bool {
        matches!(self, Rejection::Expired)
    }
}

/// One step of [`Verifier::explain`]'s trace. `detail` never contains token or signature text;
/// header and claim values quoted in it are escaped and truncated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// Signs `claims` with HS256. Used by the embedded demo backend, which issues real tokens;
/// the proxy itself never signs anything.
pub fn sign_hs256(secret: &[u8], claims: &Map<String, Value>) -> Result<String, KeyError> {
    let signer = josekit::jws::HS256
        .signer_from_bytes(secret)
        .map_err(|err| KeyError::Secret(err.to_string()))?;
    let mut header = josekit::jws::JwsHeader::new();
    header.set_token_type("JWT");
    let payload = josekit::jwt::JwtPayload::from_map(claims.clone())
        .map_err(|err| KeyError::Secret(err.to_string()))?;
    josekit::jwt::encode_with_signer(&payload, &header, &signer)
        .map_err(|err| KeyError::Secret(err.to_string()))
}

/// A fresh random HMAC secret as 64 hex characters (the demo's signing key).
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    openssl::rand::rand_bytes(&mut bytes)
        .expect("the OpenSSL random generator is seeded by the OS");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Verifies access tokens against the current keys and a fixed policy.
pub struct Verifier {
    keys: ArcSwap<KeySet>,
    policy: Policy,
    cache: Option<Cache>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &**self.keys.load())
            .field("policy", &self.policy)
            .field("cache", &self.cache.is_some())
            .finish()
    }
}

/// The outcome of a full evaluation that found a genuine token.
struct Verified {
    claims: Claims,
    expired: bool,
}

impl Verifier {
    pub fn new(keys: KeySet, policy: Policy) -> Verifier {
        Verifier {
            keys: ArcSwap::from_pointee(keys),
            cache: Cache::new(policy.cache_entries),
            policy,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Atomically swaps the key set (JWKS refresh) and clears the cache, so that no token
    /// verified with a withdrawn key is served again.
    pub fn replace_keys(&self, keys: KeySet) {
        // Keys first, then the cache: a verification that read the old keys holds the old
        // cache generation, and `Cache::insert` drops its result.
        self.keys.store(Arc::new(keys));
        if let Some(cache) = &self.cache {
            cache.clear();
        }
    }

    pub fn keys(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.keys.load()
    }

    /// Verifies a token. `now` is unix seconds.
    ///
    /// `Err(Rejection::Expired)` is only returned when everything except expiry passed.
    pub fn verify(&self, token: &str, now: u64) -> Result<Arc<Claims>, Rejection> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Rejection::TooLarge);
        }
        let Some(cache) = &self.cache else {
            return self.verify_uncached(token, now);
        };
        let (hit, generation) = cache.get(token);
        if let Some(claims) = hit {
            return match claims.judge_times(now, self.policy.leeway_secs, false) {
                Ok(()) => Ok(claims),
                Err(Rejection::Expired) => {
                    // It can never become valid again; free its slot now.
                    cache.remove(token);
                    Err(Rejection::Expired)
                }
                Err(rejection) => Err(rejection),
            };
        }
        let claims = self.verify_uncached(token, now)?;
        cache.insert(token, &claims, generation, now, self.policy.leeway_secs);
        Ok(claims)
    }

    /// Like [`verify`](Self::verify) but accepts an expired token whose signature and other
    /// checks pass, returning its claims: for deciding about a refresh when the caller wants
    /// the expired token's claims, not just `Rejection::Expired`.
    pub fn verify_ignoring_exp(&self, token: &str, now: u64) -> Result<Arc<Claims>, Rejection> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Rejection::TooLarge);
        }
        if let Some(cache) = &self.cache {
            if let (Some(claims), _) = cache.get(token) {
                claims.judge_times(now, self.policy.leeway_secs, true)?;
                return Ok(claims);
            }
        }
        let verified = self.evaluate(token, now, &mut Trace::off())?;
        Ok(Arc::new(verified.claims))
    }

    /// A step-by-step trace for `portcullis explain`, plus the result `verify` would give.
    /// Bypasses the cache so that every check really runs.
    pub fn explain(&self, token: &str, now: u64) -> (Vec<Check>, Result<Arc<Claims>, Rejection>) {
        let mut trace = Trace::on();
        let result = self
            .evaluate(token, now, &mut trace)
            .and_then(Self::unexpired);
        (trace.into_checks(), result)
    }

    fn verify_uncached(&self, token: &str, now: u64) -> Result<Arc<Claims>, Rejection> {
        self.evaluate(token, now, &mut Trace::off())
            .and_then(Self::unexpired)
    }

    fn unexpired(verified: Verified) -> Result<Arc<Claims>, Rejection> {
        if verified.expired {
            Err(Rejection::Expired)
        } else {
            Ok(Arc::new(verified.claims))
        }
    }

    /// The full check, in RFC 8725 order: structure, header, key, signature, then claims.
    /// Claims are only looked at once the signature is known to be good, and expiry is
    /// reported apart from the other failures (see [`Verified`]).
    fn evaluate(&self, token: &str, now: u64, trace: &mut Trace) -> Result<Verified, Rejection> {
        let (header, parts) = self.authenticate(token, trace)?;
        let payload = trace.step(
            "payload json",
            serde_json::from_slice::<Map<String, Value>>(&parts.payload)
                .map_err(|_| Rejection::Malformed("payload is not a JSON object")),
            |p| format!("JSON object with {} claim(s)", p.len()),
        )?;
        self.judge_claims(&header, payload, parts.payload.len(), now, trace)
    }

    /// Structure, header, key choice and signature: everything that establishes the token is
    /// genuine, before any claim is believed.
    fn authenticate<'t>(
        &self,
        token: &'t str,
        trace: &mut Trace,
    ) -> Result<(Header, Compact<'t>), Rejection> {
        let policy = &self.policy;

        let size = if token.len() > MAX_TOKEN_LEN {
            Err(Rejection::TooLarge)
        } else {
            Ok(token.len())
        };
        trace.step("size", size, |n| {
            format!("{n} bytes (limit {MAX_TOKEN_LEN})")
        })?;

        let parts = trace.step("segments", split_compact(token), |_| {
            "three canonical base64url segments".to_owned()
        })?;

        let header = trace.step("header json", parse_header(&parts.header), |h| {
            let ignored: Vec<&str> = ["jku", "x5u", "x5c", "jwk"]
                .into_iter()
                .filter(|p| h.map.contains_key(*p))
                .collect();
            if ignored.is_empty() {
                format!("JSON object with {} parameter(s)", h.map.len())
            } else {
                format!(
                    "JSON object with {} parameter(s); ignored for key choice: {}",
                    h.map.len(),
                    ignored.join(", ")
                )
            }
        })?;

        let alg_param = header.map.get("alg");
        let alg = match alg_param {
            Some(Value::String(name)) => Alg::from_name(name)
                .filter(|alg| policy.algorithms.contains(alg))
                .ok_or(Rejection::AlgorithmNotAllowed),
            Some(_) => Err(Rejection::Malformed("alg is not a string")),
            None => Err(Rejection::Malformed("header has no alg")),
        };
        match &alg {
            Ok(alg) => trace.record("alg allowed", true, || format!("{alg} is allowed")),
            Err(rejection) => trace.record("alg allowed", false, || match alg_param {
                Some(Value::String(name)) => {
                    format!(
                        "alg {} is not one of {}",
                        shown(name),
                        alg_list(&policy.algorithms)
                    )
                }
                _ => rejection.to_string(),
            }),
        }
        let alg = alg?;

        // RFC 7515 §4.1.11: no extension is understood here, so any `crit`, even `[]`, is
        // refused rather than half-honoured.
        let crit = if header.map.contains_key("crit") {
            Err(Rejection::Critical)
        } else {
            Ok(())
        };
        trace.step("crit", crit, |_| "no crit parameter".to_owned())?;

        let keys = self.keys.load();
        let kid = header.kid.as_deref();
        let candidates: Vec<&KeyEntry> = keys
            .entries
            .iter()
            .filter(|e| e.alg == alg && kid.is_none_or(|kid| e.kid.as_deref() == Some(kid)))
            .collect();
        if candidates.is_empty() {
            trace.record("key", false, || match kid {
                Some(kid) => format!("no configured {alg} key has kid {}", shown(kid)),
                None => format!("no configured {alg} key"),
            });
            return Err(Rejection::UnknownKey);
        }
        trace.record("key", true, || match kid {
            Some(kid) => format!(
                "kid {} selects {} {alg} key(s)",
                shown(kid),
                candidates.len()
            ),
            None => format!("no kid; trying {} {alg} key(s)", candidates.len()),
        });

        let signing_input = parts.signing_input.as_bytes();
        let signed = candidates
            .iter()
            .any(|entry| entry.check.verify(signing_input, &parts.signature));
        if !signed {
            trace.record("signature", false, || {
                format!("no match with {} key(s)", candidates.len())
            });
            return Err(Rejection::BadSignature);
        }
        trace.record("signature", true, || format!("valid {alg} signature"));
        Ok((header, parts))
    }

    /// The claim checks of a genuine token. Every check runs (so `explain` shows them all);
    /// the first failure in trace order wins, and expiry is kept apart in [`Verified`].
    fn judge_claims(
        &self,
        header: &Header,
        payload: Map<String, Value>,
        payload_len: usize,
        now: u64,
        trace: &mut Trace,
    ) -> Result<Verified, Rejection> {
        let policy = &self.policy;
        let leeway = policy.leeway_secs;

        // Time claims: parsed as bounded integers first, judged afterwards.
        let exp = time_claim(&payload, "exp", "exp is not an integer in [0, 2^53)")
            .and_then(|exp| exp.ok_or(Rejection::BadTimeClaim("exp is missing")));
        let nbf = time_claim(&payload, "nbf", "nbf is not an integer in [0, 2^53)");
        let iat = time_claim(&payload, "iat", "iat is not an integer in [0, 2^53)");
        let horizon = now.saturating_add(leeway);
        match &exp {
            Ok(exp) => trace.record("exp", now <= exp.saturating_add(leeway), || {
                if now > exp.saturating_add(leeway) {
                    format!("expired at {exp}, {}s ago (leeway {leeway}s)", now - exp)
                } else {
                    format!("expires at {exp} (now {now}, leeway {leeway}s)")
                }
            }),
            Err(rejection) => trace.record("exp", false, || rejection.to_string()),
        }
        let mut first_error: Option<Rejection> = None;
        for (name, claim, future) in [
            ("nbf", &nbf, Rejection::NotYetValid),
            ("iat", &iat, Rejection::IssuedInFuture),
        ] {
            match claim {
                Ok(None) => trace.record(name, true, || "absent".to_owned()),
                Ok(Some(t)) if *t > horizon => {
                    trace.record(name, false, || {
                        format!("{t} is after now ({now}) + leeway ({leeway}s)")
                    });
                    first_error.get_or_insert(future);
                }
                Ok(Some(t)) => trace.record(name, true, || format!("{t} (now {now})")),
                Err(rejection) => trace.record(name, false, || rejection.to_string()),
            }
        }
        let (exp, nbf, iat) = (exp?, nbf?, iat?);
        let claims = Claims {
            size: payload_len,
            map: payload,
            exp,
            nbf,
            iat,
        };

        if let Some(issuer) = &policy.issuer {
            let got = claims.get("iss");
            let ok = got.and_then(Value::as_str) == Some(issuer.as_str());
            trace.record("iss", ok, || match got {
                _ if ok => format!("iss is {}", shown(issuer)),
                Some(Value::String(iss)) => format!("iss {} is not {}", shown(iss), shown(issuer)),
                Some(_) => "iss is not a string".to_owned(),
                None => "iss is missing".to_owned(),
            });
            if !ok {
                first_error.get_or_insert(Rejection::Issuer);
            }
        } else {
            trace.record("iss", true, || "not configured".to_owned());
        }

        if policy.audience.is_empty() {
            trace.record("aud", true, || "not configured".to_owned());
        } else {
            let ok = audience_ok(claims.get("aud"), &policy.audience);
            trace.record("aud", ok, || match (ok, claims.get("aud")) {
                (true, _) => "aud contains a configured audience".to_owned(),
                (false, None) => "aud is missing".to_owned(),
                (false, Some(_)) => format!(
                    "aud contains none of {}",
                    policy
                        .audience
                        .iter()
                        .map(|a| shown(a))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
            if !ok {
                first_error.get_or_insert(Rejection::Audience);
            }
        }

        let kind = non_access_kind(header.typ.as_deref(), &claims);
        trace.record("typ", kind.is_none(), || {
            kind.unwrap_or("nothing marks a refresh or ID token")
                .to_owned()
        });
        if kind.is_some() {
            first_error.get_or_insert(Rejection::NotAnAccessToken);
        }

        for (name, allowed) in &policy.required_claims {
            let ok = claims.satisfies(name, allowed);
            trace.record("required claim", ok, || {
                let allowed: Vec<String> = allowed.iter().map(|a| shown(a)).collect();
                let verdict = if ok { "satisfies" } else { "does not satisfy" };
                format!("{} {verdict} [{}]", shown(name), allowed.join(", "))
            });
            if !ok {
                first_error.get_or_insert_with(|| Rejection::MissingClaim(name.clone()));
            }
        }

        match first_error {
            Some(rejection) => Err(rejection),
            None => Ok(Verified {
                expired: claims.expired_at(now, leeway),
                claims,
            }),
        }
    }
}

/// The three decoded parts of a compact JWS.
struct Compact<'a> {
    /// `<header_b64>.<payload_b64>`: exactly the bytes the signature covers.
    signing_input: &'a str,
    header: Vec<u8>,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

fn split_compact(token: &str) -> Result<Compact<'_>, Rejection> {
    let mut segments = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(Rejection::Malformed(
            "not three dot-separated segments (JWE is not accepted)",
        ));
    };
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(Rejection::Malformed("empty segment"));
    }
    let signing_input = token
        .get(..header.len() + 1 + payload.len())
        .ok_or(Rejection::Malformed("not three dot-separated segments"))?;
    Ok(Compact {
        signing_input,
        header: decode_segment(header)?,
        payload: decode_segment(payload)?,
        signature: decode_segment(signature)?,
    })
}

/// Strict base64url: only `[A-Za-z0-9_-]`, no padding, and canonical (the unused low bits of
/// the last character must be zero), so that each token has exactly one spelling.
fn decode_segment(segment: &str) -> Result<Vec<u8>, Rejection> {
    // The engine refuses '=' and non-canonical endings too; checking the alphabet explicitly
    // keeps the rule visible here rather than implied by engine configuration.
    if !segment
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Rejection::Malformed("segment is not base64url"));
    }
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| Rejection::Malformed("segment is not canonical base64url"))
}

/// The JOSE header, with the parameters the checks need already type-checked.
struct Header {
    map: Map<String, Value>,
    kid: Option<String>,
    typ: Option<String>,
}

fn parse_header(bytes: &[u8]) -> Result<Header, Rejection> {
    let map: Map<String, Value> = serde_json::from_slice(bytes)
        .map_err(|_| Rejection::Malformed("header is not a JSON object"))?;
    if map.contains_key("cty") {
        return Err(Rejection::Malformed("nested JWT (cty) is not accepted"));
    }
    let string_param = |name: &str, error: &'static str| match map.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Rejection::Malformed(error)),
    };
    let kid = string_param("kid", "kid is not a string")?;
    let typ = string_param("typ", "typ is not a string")?;
    Ok(Header { map, kid, typ })
}

fn time_claim(
    payload: &Map<String, Value>,
    name: &str,
    invalid: &'static str,
) -> Result<Option<u64>, Rejection> {
    match payload.get(name) {
        None => Ok(None),
        // `as_u64` is `Some` only for a non-negative integer literal: floats (1.5, 1e3),
        // negatives and values beyond u64 are all `None`.
        Some(Value::Number(n)) => match n.as_u64() {
            Some(t) if t < TIME_LIMIT => Ok(Some(t)),
            _ => Err(Rejection::BadTimeClaim(invalid)),
        },
        Some(_) => Err(Rejection::BadTimeClaim(invalid)),
    }
}

fn audience_ok(aud: Option<&Value>, wanted: &[String]) -> bool {
    match aud {
        Some(Value::String(aud)) => wanted.contains(aud),
        Some(Value::Array(items)) => {
            // An array with a non-string member is malformed as a whole.
            items.iter().all(Value::is_string)
                && items
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|aud| wanted.iter().any(|w| w == aud))
        }
        _ => false,
    }
}

/// Why this token is not an access token, if something marks it as another kind.
fn non_access_kind(header_typ: Option<&str>, claims: &Claims) -> Option<&'static str> {
    if header_typ.is_some_and(is_non_access_type) {
        return Some("header typ marks a refresh or ID token");
    }
    let claim_marks = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .is_some_and(is_non_access_type)
    };
    if claim_marks("typ") {
        return Some("typ claim marks a refresh or ID token");
    }
    if claim_marks("token_type") {
        return Some("token_type claim marks a refresh or ID token");
    }
    None
}

/// Compares case-insensitively, ignoring the optional `application/` prefix and `+jwt` suffix
/// of media-type spellings (RFC 7515 §4.1.9), so `refresh+jwt` counts as `refresh`.
fn is_non_access_type(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    let bare = lower.strip_prefix("application/").unwrap_or(&lower);
    let bare = bare.strip_suffix("+jwt").unwrap_or(bare);
    NON_ACCESS_TYPES.contains(&bare)
}

/// Quotes token-derived text for explain details and key errors: escaped, and cut to a few
/// dozen characters so a hostile header cannot flood or garble the output.
fn shown(text: &str) -> String {
    const MAX_CHARS: usize = 40;
    let mut out: String = text
        .chars()
        .take(MAX_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(MAX_CHARS).is_some() {
        out.push('…');
    }
    format!("\"{out}\"")
}

/// Collects [`Check`]s for `explain`; when off, details are never even formatted.
struct Trace {
    checks: Option<Vec<Check>>,
}

impl Trace {
    fn off() -> Trace {
        Trace { checks: None }
    }

    fn on() -> Trace {
        Trace {
            checks: Some(Vec::new()),
        }
    }

    fn record(&mut self, name: &'static str, ok: bool, detail: impl FnOnce() -> String) {
        if let Some(checks) = &mut self.checks {
            checks.push(Check {
                name,
                ok,
                detail: detail(),
            });
        }
    }

    /// Records a step whose failure detail is the rejection's own (token-free) text.
    fn step<T>(
        &mut self,
        name: &'static str,
        result: Result<T, Rejection>,
        ok_detail: impl FnOnce(&T) -> String,
    ) -> Result<T, Rejection> {
        match &result {
            Ok(value) => self.record(name, true, || ok_detail(value)),
            Err(rejection) => self.record(name, false, || rejection.to_string()),
        }
        result
    }

    fn into_checks(self) -> Vec<Check> {
        self.checks.unwrap_or_default()
    }
}

/// The verified-token cache: full token text -> verified claims.
///
/// Keyed by the whole token, so a hit proves the very same bytes were verified before; only
/// the time claims are judged again. Sharded so that worker threads rarely meet on one lock;
/// each lock is held for a lookup or an insert only.
struct Cache {
    shards: Box<[Mutex<Shard>]>,
    max_entries: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Box<str>, Cached>,
    bytes: usize,
    /// Bumped by every clear, so a verification that began before a key change cannot insert
    /// its result afterwards.
    generation: u64,
}

struct Cached {
    claims: Arc<Claims>,
    cost: usize,
}

impl Cache {
    fn new(entries: usize) -> Option<Cache> {
        if entries == 0 {
            return None;
        }
        // Small caches keep one shard so the entry bound stays exact; large ones spread over
        // up to 16 locks. The count is a power of two so a mask picks the shard.
        let shard_count = (entries / 1024).clamp(1, 16).next_power_of_two().min(16);
        Some(Cache {
            shards: (0..shard_count)
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
            max_entries: entries.div_ceil(shard_count),
            max_bytes: CACHE_MAX_BYTES / shard_count,
        })
    }

    fn shard(&self, token: &str) -> MutexGuard<'_, Shard> {
        // A token ends with its signature, which is close to uniform for genuine tokens, so
        // mixing its last bytes picks a shard without a pass over the whole token. A forger can
        // aim at one shard, but each attempt costs them a full signature check that fails.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &byte in token.as_bytes().iter().rev().take(8) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        let index = ((hash >> 32) as usize) & (self.shards.len() - 1);
        // A panic while holding the lock cannot leave a shard inconsistent in a harmful way
        // (at worst a stale byte count), so a poisoned lock is simply taken over.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached claims, if any, and the shard generation to pass back to `insert`.
    fn get(&self, token: &str) -> (Option<Arc<Claims>>, u64) {
        let shard = self.shard(token);
        let hit = shard.map.get(token).map(|c| Arc::clone(&c.claims));
        (hit, shard.generation)
    }

    fn remove(&self, token: &str) {
        let mut shard = self.shard(token);
        if let Some(old) = shard.map.remove(token) {
            shard.bytes = shard.bytes.saturating_sub(old.cost);
        }
    }

    fn insert(&self, token: &str, claims: &Arc<Claims>, generation: u64, now: u64, leeway: u64) {
        let cost = token.len() + 2 * claims.size + CACHE_ENTRY_OVERHEAD;
        if cost > self.max_bytes / 8 {
            return;
        }
        let mut shard = self.shard(token);
        if shard.generation != generation {
            return;
        }
        if let Some(old) = shard.map.remove(token) {
            shard.bytes = shard.bytes.saturating_sub(old.cost);
        }
        shard.make_room(cost, self.max_entries, self.max_bytes, now, leeway);
        shard.bytes += cost;
        shard.map.insert(
            token.into(),
            Cached {
                claims: Arc::clone(claims),
                cost,
            },
        );
    }

    fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.map.clear();
            shard.bytes = 0;
            shard.generation = shard.generation.wrapping_add(1);
        }
    }
}

impl Shard {
    fn make_room(
        &mut self,
        need: usize,
        max_entries: usize,
        max_bytes: usize,
        now: u64,
        leeway: u64,
    ) {
        let full = |shard: &Shard| shard.map.len() >= max_entries || shard.bytes + need > max_bytes;
        if !full(self) {
            return;
        }
        // Expired entries go first: they can never be served again.
        let mut freed = 0;
        self.map.retain(|_, cached| {
            let keep = !cached.claims.expired_at(now, leeway);
            if !keep {
                freed += cached.cost;
            }
            keep
        });
        self.bytes = self.bytes.saturating_sub(freed);
        if !full(self) {
            return;
        }
        // Then arbitrary entries (HashMap order is effectively random). An eighth of the shard
        // goes at once, so this O(n) pass is paid once per many inserts, not on every insert.
        let len_target = max_entries - (max_entries / 8).max(1);
        let bytes_target = (max_bytes - max_bytes / 8).saturating_sub(need);
        let (mut len, mut bytes) = (self.map.len(), self.bytes);
        self.map.retain(|_, cached| {
            if len > len_target || bytes > bytes_target {
                len -= 1;
                bytes = bytes.saturating_sub(cached.cost);
                false
            } else {
                true
            }
        });
        self.bytes = bytes;
    }
}
