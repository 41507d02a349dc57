//! Verification keys: the algorithms Portcullis accepts, and the key set built from an HMAC
//! secret, a PEM public key or a JWKS. The configured key decides the algorithm family: a
//! secret pairs only with HS*, an RSA key only with RS*/PS*, and so on.

use std::fmt;
use std::str::FromStr;

use josekit::jwk::Jwk;
use josekit::jws::JwsVerifier;
use josekit::JoseError;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use serde_json::{Map, Value};

use super::{shown, MIN_SECRET_LEN};

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
    /// The `kid` a backend stamps on tokens signed with `secret` or `public_key_pem`
    /// (`jwt.kid`). With it, a token naming another kid is not tried against those keys;
    /// without it, they verify tokens whatever kid they name.
    pub kid: Option<String>,
}

impl fmt::Debug for KeyMaterial {
    // The secret must never reach a log line, so only the presence of each material is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("public_key_pem", &self.public_key_pem.is_some())
            .field("jwks_json", &self.jwks_json.is_some())
            .field("kid", &self.kid)
            .finish()
    }
}

/// How one configured key checks a signature.
pub(super) enum KeyCheck {
    /// HS*: ring's HMAC key, whose inner and outer pad states are computed once when the key
    /// is loaded (josekit would redo that for every token), checked with ring's
    /// constant-time `verify` (josekit's HMAC verifier compares MACs with `!=`, which can
    /// reveal through timing how much of a forged MAC is right).
    Hmac(ring::hmac::Key),
    /// ES256, ES384 and Ed25519: ring's verifiers, on the raw public key (an uncompressed EC
    /// point, or the 32 bytes of an Ed25519 key) taken from a key josekit has already accepted
    /// for the algorithm. They take JWS signatures as they are (`r || s`, RFC 7518 §3.4),
    /// where josekit converts each to DER for OpenSSL first, and they cost a fifth (P-256) to
    /// over half (Ed25519) less per token.
    Ring(ring::signature::UnparsedPublicKey<Box<[u8]>>),
    /// RS256, RS384 and RS512 (RSASSA-PKCS1-v1_5): see [`RsaCheck`].
    Rsa(RsaCheck),
    /// Every other public-key algorithm (RSA-PSS, P-521, Ed448): josekit over OpenSSL.
    Public(Box<dyn JwsVerifier>),
}

/// An RSASSA-PKCS1-v1_5 check (RFC 8017 §8.2.2) on a key josekit has already accepted for the
/// algorithm: the signature must be exactly as long as the modulus; OpenSSL's RSA public
/// operation undoes it and checks the padding (`00 01 FF.. 00`, at least eight `FF`); what is
/// left must be, byte for byte, the one encoding the algorithm allows: the DER `DigestInfo`
/// of its hash (RFC 8017 §9.2, note 1) and the message's digest. The whole encoding is
/// compared rather than parsed, so no other hash, parameter or trailing bytes can pass.
/// josekit's verifier goes through OpenSSL's `EVP_DigestVerify`, which looks its
/// algorithms up afresh for every token: this check costs about a fifth less per token
/// (`bench_verify`, RS256 at 2048 bits).
pub(super) struct RsaCheck {
    key: openssl::rsa::Rsa<Public>,
    digest: &'static ring::digest::Algorithm,
    /// The `DigestInfo` of `digest`, which the digest itself follows.
    prefix: &'static [u8],
}

/// The largest modulus [`RsaCheck`] takes (8,192 bits); larger keys stay with josekit.
const MAX_RSA_BYTES: usize = 1024;

impl RsaCheck {
    /// The check for `alg` with the RSA public key `pkcs1` (DER `RSAPublicKey`), if `alg` is
    /// RS256, RS384 or RS512 and the key can be read and is at most [`MAX_RSA_BYTES`] long.
    fn new(alg: Alg, pkcs1: &[u8]) -> Option<RsaCheck> {
        use ring::digest;
        let (digest, prefix): (_, &'static [u8]) = match alg {
            Alg::RS256 => (
                &digest::SHA256,
                &[
                    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                    0x02, 0x01, 0x05, 0x00, 0x04, 0x20,
                ],
            ),
            Alg::RS384 => (
                &digest::SHA384,
                &[
                    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                    0x02, 0x02, 0x05, 0x00, 0x04, 0x30,
                ],
            ),
            Alg::RS512 => (
                &digest::SHA512,
                &[
                    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                    0x02, 0x03, 0x05, 0x00, 0x04, 0x40,
                ],
            ),
            _ => return None,
        };
        let key = openssl::rsa::Rsa::public_key_from_der_pkcs1(pkcs1).ok()?;
        let size = usize::try_from(key.size()).ok()?;
        (size <= MAX_RSA_BYTES && size >= prefix.len() + digest.output_len() + 11).then_some(
            RsaCheck {
                key,
                digest,
                prefix,
            },
        )
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let size = self.key.size() as usize;
        if signature.len() != size {
            return false;
        }
        let mut block = [0u8; MAX_RSA_BYTES];
        let Ok(len) =
            self.key
                .public_decrypt(signature, &mut block[..size], openssl::rsa::Padding::PKCS1)
        else {
            return false;
        };
        let (prefix, digest) = block[..len].split_at(len.min(self.prefix.len()));
        prefix == self.prefix && digest == ring::digest::digest(self.digest, message).as_ref()
    }
}

impl KeyCheck {
    pub(super) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            KeyCheck::Hmac(key) => ring::hmac::verify(key, message, signature).is_ok(),
            KeyCheck::Ring(key) => key.verify(message, signature).is_ok(),
            KeyCheck::Rsa(check) => check.verify(message, signature),
            KeyCheck::Public(verifier) => verifier.verify(message, signature).is_ok(),
        }
    }

    /// The check of a public key josekit accepted for `alg` (`verifier`): ours for RS* and
    /// ring's for ES256, ES384 and Ed25519 when `raw` (the raw public key, if it could be
    /// read: PKCS#1 DER for RSA) fits, else josekit's.
    fn public(alg: Alg, raw: Option<Vec<u8>>, verifier: Box<dyn JwsVerifier>) -> KeyCheck {
        use ring::signature;
        let (algorithm, len): (&'static dyn signature::VerificationAlgorithm, usize) = match alg {
            Alg::ES256 => (&signature::ECDSA_P256_SHA256_FIXED, 65),
            Alg::ES384 => (&signature::ECDSA_P384_SHA384_FIXED, 97),
            Alg::EdDSA => (&signature::ED25519, 32),
            Alg::RS256 | Alg::RS384 | Alg::RS512 => {
                return match raw.and_then(|pkcs1| RsaCheck::new(alg, &pkcs1)) {
                    Some(check) => KeyCheck::Rsa(check),
                    None => KeyCheck::Public(verifier),
                }
            }
            _ => return KeyCheck::Public(verifier),
        };
        match raw {
            // An EC point must be uncompressed (0x04, x, y); Ed448's 57 bytes never match.
            Some(raw) if raw.len() == len && (len == 32 || raw[0] == 0x04) => KeyCheck::Ring(
                signature::UnparsedPublicKey::new(algorithm, raw.into_boxed_slice()),
            ),
            _ => KeyCheck::Public(verifier),
        }
    }
}

/// The raw public key of an RSA, EC or Ed25519 key: PKCS#1 DER, the uncompressed point, or
/// the key's 32 bytes.
fn raw_public_key(key: &PKey<Public>) -> Option<Vec<u8>> {
    if key.id() == Id::ED25519 {
        return key.raw_public_key().ok();
    }
    if key.id() == Id::RSA {
        return key.rsa().ok()?.public_key_to_der_pkcs1().ok();
    }
    let ec = key.ec_key().ok()?;
    let mut context = openssl::bn::BigNumContext::new().ok()?;
    ec.public_key()
        .to_bytes(
            ec.group(),
            openssl::ec::PointConversionForm::UNCOMPRESSED,
            &mut context,
        )
        .ok()
}

/// The raw public key of an RSA (`n`, `e`: PKCS#1 DER), EC (`x`, `y`: the uncompressed point)
/// or OKP Ed25519 (`x`) JWK, each EC coordinate at its full length as RFC 7518 §6.2.1.2 asks.
fn jwk_raw_public_key(jwk: &Jwk) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let coordinate = |name: &str| match jwk.parameter(name) {
        Some(Value::String(text)) => URL_SAFE_NO_PAD.decode(text).ok(),
        _ => None,
    };
    match (jwk.key_type(), jwk.curve()) {
        ("EC", Some(curve)) => {
            let size = match curve {
                "P-256" => 32,
                "P-384" => 48,
                _ => return None,
            };
            let (x, y) = (coordinate("x")?, coordinate("y")?);
            if x.len() != size || y.len() != size {
                return None;
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Some(point)
        }
        ("OKP", Some("Ed25519")) => coordinate("x").filter(|x| x.len() == 32),
        ("RSA", _) => {
            let number = |name| openssl::bn::BigNum::from_slice(&coordinate(name)?).ok();
            openssl::rsa::Rsa::from_public_components(number("n")?, number("e")?)
                .ok()?
                .public_key_to_der_pkcs1()
                .ok()
        }
        _ => None,
    }
}

/// One verification key paired with the one algorithm it is used with.
pub(super) struct KeyEntry {
    pub(super) kid: Option<String>,
    /// Tried whatever `kid` a token names: a static `secret` or `public_key_file` configured
    /// without `jwt.kid`, as `jwtVerify(token, secret)`, PyJWT and HAProxy do. Keys with a
    /// kid (JWKS keys, or `jwt.kid`) are only tried for tokens that name it, or no kid at all.
    pub(super) any_kid: bool,
    pub(super) alg: Alg,
    pub(super) check: KeyCheck,
}

impl KeyEntry {
    /// Whether this key is tried for a token of `alg` whose header names `kid`.
    pub(super) fn fits(&self, alg: Alg, kid: Option<&str>) -> bool {
        self.alg == alg
            && match kid {
                None => true,
                Some(kid) => self.any_kid || self.kid.as_deref() == Some(kid),
            }
    }
}

/// An immutable set of verification keys: (optional kid, alg, verifier) entries. A key that
/// serves several algorithms (an RSA key with RS256 and PS256) has one entry per algorithm.
#[derive(Default)]
pub struct KeySet {
    pub(super) entries: Vec<KeyEntry>,
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
        for entry in &mut set.entries {
            entry.kid.clone_from(&material.kid);
            entry.any_kid = material.kid.is_none();
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
        let algorithm = match alg {
            Alg::HS384 => ring::hmac::HMAC_SHA384,
            Alg::HS512 => ring::hmac::HMAC_SHA512,
            _ => ring::hmac::HMAC_SHA256,
        };
        entries.push(KeyEntry {
            kid: None,
            any_kid: false,
            alg,
            check: KeyCheck::Hmac(ring::hmac::Key::new(algorithm, secret)),
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
                any_kid: false,
                alg,
                check: KeyCheck::public(alg, raw_public_key(&key), verifier),
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
                any_kid: false,
                alg,
                check: KeyCheck::public(alg, jwk_raw_public_key(&jwk), verifier),
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

pub(super) fn alg_list(algs: &[Alg]) -> String {
    if algs.is_empty() {
        return "none".to_owned();
    }
    distinct(algs).map(Alg::name).collect::<Vec<_>>().join(", ")
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
