//! Signing keys generated at test time, and tokens made with them — well-formed or not.
//!
//! A [`TestKey`] holds one key for one JWS algorithm and writes its verification material
//! to a temporary directory (removed when the last clone of the key is dropped):
//!
//! * HS256/384/512: `secret` — 64 random hex characters (256 bits). The file holds exactly
//!   those bytes with no newline, so a loader reading raw bytes and one reading a trimmed
//!   string agree; they are also usable as `PORTCULLIS_JWT__SECRET`.
//! * RS256, PS256, ES256, ES384, EdDSA: `public.pem` — the SubjectPublicKeyInfo PEM
//!   (`-----BEGIN PUBLIC KEY-----`). PS256 keys are ordinary RSA keys (rsaEncryption OID),
//!   as real issuers produce them.
//! * every algorithm: `jwks.json` — `{"keys":[<public JWK with kid, alg, use>]}`.
//!
//! Tokens are assembled here rather than by josekit's JWT encoder so that tests can sign
//! claims josekit would refuse to encode (`exp` as a string, duplicate keys, …). Header and
//! payload are compact JSON, base64url without padding, as RFC 7515 requires.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use josekit::{
    jwk::{
        alg::{ec::EcKeyPair, ed::EdKeyPair, rsa::RsaKeyPair},
        Jwk, KeyPair,
    },
    jws::{JwsSigner, JwsVerifier},
};
use serde_json::{json, Map, Value};
use tempfile::TempDir;

/// The algorithms a [`TestKey`] can be made for.
pub const ALGORITHMS: [&str; 8] = [
    "HS256", "HS384", "HS512", "RS256", "PS256", "ES256", "ES384", "EdDSA",
];

/// A key generated for one test, with its files on disk. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TestKey {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    alg: String,
    kid: String,
    /// Whether tokens carry the kid by default: keys named with [`TestKey::with_kid`] do; a
    /// plain [`TestKey::new`] key stands for a backend's single static key, whose tokens don't.
    stamp_kid: bool,
    material: Material,
    signer: Box<dyn JwsSigner>,
    verifier: Box<dyn JwsVerifier>,
    public_jwk: Value,
    dir: TempDir,
    key_file: PathBuf,
    jwks_file: PathBuf,
}

#[derive(Debug)]
enum Material {
    Secret(Vec<u8>),
    KeyPair {
        private_pem: Vec<u8>,
        public_pem: Vec<u8>,
    },
}

impl TestKey {
    /// A fresh key for `alg` (one of [`ALGORITHMS`]) with a random `kid` in its JWK, whose
    /// tokens carry no kid unless asked (`sign_with_header(json!({"kid": key.kid()}), ..)`).
    pub fn new(alg: &str) -> TestKey {
        let kid = format!("test-{}-{}", alg.to_ascii_lowercase(), hex(&random(6)));
        TestKey::generate(alg, &kid, false)
    }

    /// A fresh key for `alg` whose JWK and default token header carry `kid`.
    pub fn with_kid(alg: &str, kid: &str) -> TestKey {
        TestKey::generate(alg, kid, true)
    }

    fn generate(alg: &str, kid: &str, stamp_kid: bool) -> TestKey {
        let (material, mut private_jwk, mut public_jwk) = generate(alg);
        for jwk in [&mut private_jwk, &mut public_jwk] {
            jwk.set_key_id(kid);
            jwk.set_algorithm(alg);
            jwk.set_key_use("sig");
        }
        let (signer, verifier) = signer_and_verifier(alg, &material, &private_jwk, &public_jwk);
        let public_jwk = Value::Object(public_jwk.as_ref().clone());

        let dir = tempfile::Builder::new()
            .prefix("portcullis-key-")
            .tempdir()
            .expect("creating a temporary directory for test keys");
        let key_file = match &material {
            Material::Secret(secret) => write(dir.path(), "secret", secret),
            Material::KeyPair { public_pem, .. } => write(dir.path(), "public.pem", public_pem),
        };
        let jwks = json!({ "keys": [public_jwk] }).to_string();
        let jwks_file = write(dir.path(), "jwks.json", jwks.as_bytes());

        TestKey {
            inner: Arc::new(Inner {
                alg: alg.to_owned(),
                kid: kid.to_owned(),
                stamp_kid,
                material,
                signer,
                verifier,
                public_jwk,
                dir,
                key_file,
                jwks_file,
            }),
        }
    }

    pub fn alg(&self) -> &str {
        &self.inner.alg
    }

    pub fn kid(&self) -> &str {
        &self.inner.kid
    }

    /// Whether this is an HMAC (shared secret) key.
    pub fn is_hmac(&self) -> bool {
        matches!(self.inner.material, Material::Secret(_))
    }

    /// The HMAC secret (ASCII hex), for HS* keys.
    pub fn secret(&self) -> Option<&[u8]> {
        match &self.inner.material {
            Material::Secret(secret) => Some(secret),
            Material::KeyPair { .. } => None,
        }
    }

    /// The SPKI PEM public key, for asymmetric keys. Its bytes are what the classic
    /// algorithm-confusion attack uses as an HMAC secret (see [`sign_hmac`]).
    pub fn public_pem(&self) -> Option<&[u8]> {
        match &self.inner.material {
            Material::Secret(_) => None,
            Material::KeyPair { public_pem, .. } => Some(public_pem),
        }
    }

    /// The PKCS#8 PEM private key, for asymmetric keys.
    pub fn private_pem(&self) -> Option<&[u8]> {
        match &self.inner.material {
            Material::Secret(_) => None,
            Material::KeyPair { private_pem, .. } => Some(private_pem),
        }
    }

    /// What a verifier is configured with: the secret for HS*, the public PEM otherwise.
    /// These are exactly the bytes of [`TestKey::key_file`].
    pub fn verification_bytes(&self) -> &[u8] {
        match &self.inner.material {
            Material::Secret(secret) => secret,
            Material::KeyPair { public_pem, .. } => public_pem,
        }
    }

    /// The directory holding this key's files.
    pub fn dir(&self) -> &Path {
        self.inner.dir.path()
    }

    /// `secret` for HS* keys, `public.pem` otherwise.
    pub fn key_file(&self) -> &Path {
        &self.inner.key_file
    }

    /// `jwks.json` holding this key's public JWK.
    pub fn jwks_file(&self) -> &Path {
        &self.inner.jwks_file
    }

    /// The public JWK (for HS* keys: the `oct` key including `k`), with `kid`, `alg`, `use`.
    pub fn jwk(&self) -> Value {
        self.inner.public_jwk.clone()
    }

    /// `{"keys": [self.jwk()]}`.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk()] })
    }

    /// The `[jwt]` section for this key, read from its key file:
    /// `algorithms = ["<alg>"]` and `secret_file` (HS*) or `public_key_file`. Append more
    /// `[jwt]` keys (issuer, audience, …) directly after it.
    pub fn jwt_toml(&self) -> String {
        let key = if self.is_hmac() {
            "secret_file"
        } else {
            "public_key_file"
        };
        format!(
            "[jwt]\nalgorithms = [{}]\n{key} = {}\n",
            toml_string(self.alg()),
            toml_path(self.key_file())
        )
    }

    /// Like [`TestKey::jwt_toml`] but naming `jwks_file` instead of the key file.
    pub fn jwt_jwks_toml(&self) -> String {
        format!(
            "[jwt]\nalgorithms = [{}]\njwks_file = {}\n",
            toml_string(self.alg()),
            toml_path(self.jwks_file())
        )
    }

    /// A token for `claims` with the default header `{"alg", "typ": "JWT"}` (plus `"kid"` for
    /// keys made with [`TestKey::with_kid`]).
    pub fn sign(&self, claims: Value) -> String {
        self.sign_with_header(json!({}), claims)
    }

    /// A token whose header is the default one merged with `header`: fields given there
    /// replace the defaults (even `alg`, to lie about the algorithm), and a field set to
    /// `null` is removed (`{"kid": null}` drops the kid). Any claims JSON is accepted.
    pub fn sign_with_header(&self, header: Value, claims: Value) -> String {
        let kid = self.inner.stamp_kid.then(|| self.kid());
        let header = merge_header(self.alg(), kid, header);
        self.sign_raw(&header.to_string(), &claims.to_string())
    }

    /// Signs the exact header and payload text given (duplicate keys, odd spacing, …).
    pub fn sign_raw(&self, header_json: &str, payload_json: &str) -> String {
        sign_parts(&*self.inner.signer, header_json, payload_json)
    }

    /// A reference check for tests: the token is three base64url segments, its header
    /// names this key's algorithm, the signature verifies, and `exp` (an integer) is in the
    /// future. Returns the claims. This is not Portcullis's verifier and checks nothing else.
    pub fn verify(&self, token: &str) -> Result<Value, String> {
        let parts: Vec<&str> = token.split('.').collect();
        let [header, payload, signature] = parts[..] else {
            return Err(format!("{} segments, expected 3", parts.len()));
        };
        let header = decode_json(header)?;
        if header.get("alg").and_then(Value::as_str) != Some(self.alg()) {
            return Err(format!("header alg is not {}: {header}", self.alg()));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|e| format!("signature is not base64url: {e}"))?;
        let message = &token[..header_len(token)];
        self.inner
            .verifier
            .verify(message.as_bytes(), &signature)
            .map_err(|e| format!("bad signature: {e}"))?;
        let claims = decode_json(payload)?;
        match claims.get("exp").and_then(Value::as_i64) {
            Some(exp) if exp > now() => Ok(claims),
            Some(exp) => Err(format!("expired at {exp}")),
            None => Err("no integer exp".to_owned()),
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(elapsed.as_secs()).expect("seconds since 1970 fit in i64")
}

/// `{"sub", "iat": now, "exp": now + ttl_secs}`; a negative `ttl_secs` makes it expired.
/// The value is plain JSON: add or change claims with `claims["role"] = json!("admin")`.
pub fn claims(sub: &str, ttl_secs: i64) -> Value {
    claims_with(sub, ttl_secs, None, None)
}

/// [`claims`] plus `iss` and `aud` when given.
pub fn claims_with(sub: &str, ttl_secs: i64, iss: Option<&str>, aud: Option<&str>) -> Value {
    let now = now();
    let mut claims = json!({ "sub": sub, "iat": now, "exp": now + ttl_secs });
    if let Some(iss) = iss {
        claims["iss"] = json!(iss);
    }
    if let Some(aud) = aud {
        claims["aud"] = json!(aud);
    }
    claims
}

/// base64url without padding, the JWS segment encoding.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Assembles `b64(header).b64(payload).b64(signature)` from exact text and bytes, for
/// malformed tokens: `raw_token(r#"{"alg":"none"}"#, payload, b"")`, or an ES256 token
/// whose signature is 64 zero bytes.
pub fn raw_token(header_json: &str, payload_json: &str, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header_json),
        b64(payload_json),
        b64(signature)
    )
}

/// A token signed with HMAC `alg` ("HS256", "HS384", "HS512") using `secret` as the key,
/// whatever those bytes are. `sign_hmac("HS256", rsa_key.verification_bytes(), ...)` is
/// the algorithm-confusion attack. `header` is merged as in [`TestKey::sign_with_header`]
/// (the default header has no `kid`).
pub fn sign_hmac(alg: &str, secret: &[u8], header: Value, claims: Value) -> String {
    let signer: Box<dyn JwsSigner> = Box::new(
        hmac_algorithm(alg)
            .signer_from_bytes(secret)
            .expect("any bytes are an HMAC key"),
    );
    let header = merge_header(alg, None, header);
    sign_parts(&*signer, &header.to_string(), &claims.to_string())
}

fn sign_parts(signer: &dyn JwsSigner, header_json: &str, payload_json: &str) -> String {
    let message = format!("{}.{}", b64(header_json), b64(payload_json));
    let signature = signer
        .sign(message.as_bytes())
        .expect("signing with a generated key succeeds");
    format!("{message}.{}", b64(signature))
}

fn merge_header(alg: &str, kid: Option<&str>, overrides: Value) -> Value {
    let mut header = Map::new();
    header.insert("alg".into(), json!(alg));
    header.insert("typ".into(), json!("JWT"));
    if let Some(kid) = kid {
        header.insert("kid".into(), json!(kid));
    }
    let Value::Object(overrides) = overrides else {
        panic!("a token header must be a JSON object, got {overrides}");
    };
    for (name, value) in overrides {
        if value.is_null() {
            header.remove(&name);
        } else {
            header.insert(name, value);
        }
    }
    Value::Object(header)
}

/// The length of `header.payload`, the signed part of a compact JWS.
fn header_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

fn decode_json(segment: &str) -> Result<Value, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|e| format!("segment is not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("segment is not JSON: {e}"))
}

fn hmac_algorithm(alg: &str) -> josekit::jws::alg::hmac::HmacJwsAlgorithm {
    match alg {
        "HS256" => josekit::jws::HS256,
        "HS384" => josekit::jws::HS384,
        "HS512" => josekit::jws::HS512,
        other => panic!("not an HMAC algorithm: {other}"),
    }
}

/// Key material plus the private and public JWKs for `alg`.
fn generate(alg: &str) -> (Material, Jwk, Jwk) {
    let key_pair: Box<dyn KeyPair> = match alg {
        "HS256" | "HS384" | "HS512" => {
            let secret = hex(&random(32)).into_bytes();
            let mut jwk = Jwk::new("oct");
            jwk.set_key_value(&secret);
            return (Material::Secret(secret), jwk.clone(), jwk);
        }
        "RS256" | "PS256" => Box::new(RsaKeyPair::generate(2048).expect("generating RSA key")),
        "ES256" => Box::new(EcKeyPair::generate(josekit::jwk::P_256).expect("generating P-256")),
        "ES384" => Box::new(EcKeyPair::generate(josekit::jwk::P_384).expect("generating P-384")),
        "EdDSA" => {
            Box::new(EdKeyPair::generate(josekit::jwk::Ed25519).expect("generating Ed25519"))
        }
        other => panic!("TestKey supports {ALGORITHMS:?}, not {other:?}"),
    };
    let material = Material::KeyPair {
        private_pem: key_pair.to_pem_private_key(),
        public_pem: key_pair.to_pem_public_key(),
    };
    (
        material,
        key_pair.to_jwk_private_key(),
        key_pair.to_jwk_public_key(),
    )
}

/// Builds signer and verifier from the JWKs: josekit's PS256 PEM loaders only take keys
/// with the RSASSA-PSS OID, its JWK loaders take ordinary RSA keys.
fn signer_and_verifier(
    alg: &str,
    material: &Material,
    private_jwk: &Jwk,
    public_jwk: &Jwk,
) -> (Box<dyn JwsSigner>, Box<dyn JwsVerifier>) {
    use josekit::jws::{EdDSA, ES256, ES384, PS256, RS256};
    const WHY: &str = "a freshly generated key loads into its own algorithm";
    match (alg, material) {
        (_, Material::Secret(secret)) => {
            let algorithm = hmac_algorithm(alg);
            (
                Box::new(algorithm.signer_from_bytes(secret).expect(WHY)),
                Box::new(algorithm.verifier_from_bytes(secret).expect(WHY)),
            )
        }
        ("RS256", _) => (
            Box::new(RS256.signer_from_jwk(private_jwk).expect(WHY)),
            Box::new(RS256.verifier_from_jwk(public_jwk).expect(WHY)),
        ),
        ("PS256", _) => (
            Box::new(PS256.signer_from_jwk(private_jwk).expect(WHY)),
            Box::new(PS256.verifier_from_jwk(public_jwk).expect(WHY)),
        ),
        ("ES256", _) => (
            Box::new(ES256.signer_from_jwk(private_jwk).expect(WHY)),
            Box::new(ES256.verifier_from_jwk(public_jwk).expect(WHY)),
        ),
        ("ES384", _) => (
            Box::new(ES384.signer_from_jwk(private_jwk).expect(WHY)),
            Box::new(ES384.verifier_from_jwk(public_jwk).expect(WHY)),
        ),
        ("EdDSA", _) => (
            Box::new(EdDSA.signer_from_jwk(private_jwk).expect(WHY)),
            Box::new(EdDSA.verifier_from_jwk(public_jwk).expect(WHY)),
        ),
        (other, _) => panic!("TestKey supports {ALGORITHMS:?}, not {other:?}"),
    }
}

fn random(len: usize) -> Vec<u8> {
    josekit::util::random_bytes(len)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, contents).expect("writing a test key file");
    path
}

/// A TOML basic string. JSON's string syntax is valid TOML for text without U+007F, which
/// holds for algorithm names and temporary paths.
fn toml_string(text: &str) -> String {
    Value::from(text).to_string()
}

fn toml_path(path: &Path) -> String {
    toml_string(path.to_str().expect("temporary paths are UTF-8"))
}
