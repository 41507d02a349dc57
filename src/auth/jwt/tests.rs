//! Unit tests for JWT verification: the token table of docs/security.md for every supported key family,
//! key loading, the cache and the explain trace. Keys are generated at test time.

use std::sync::OnceLock;
use std::time::Instant;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use josekit::jwk::alg::ec::EcCurve;
use josekit::jwk::alg::ed::EdCurve;
use josekit::jwk::{Jwk, KeyPair};
use josekit::jws::JwsSigner;
use openssl::pkey::PKey;
use serde_json::json;

use super::*;

/// The fixed clock of every test.
const NOW: u64 = 1_700_000_000;
const LEEWAY: u64 = 30;
const SECRET: &[u8] = b"an HMAC secret of forty bytes, for tests";

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key, and the material that configures a verifier for it.
struct Fixture {
    alg: Alg,
    signer: Box<dyn JwsSigner>,
    /// PKCS#8 DER of the private key, for signing with another algorithm of the same family.
    private_der: Option<Vec<u8>>,
    material: KeyMaterial,
}

/// One fixture per key family, generated once: RSA key generation is slow.
fn fixture(alg: Alg) -> &'static Fixture {
    static HS: OnceLock<Fixture> = OnceLock::new();
    static RS: OnceLock<Fixture> = OnceLock::new();
    static ES: OnceLock<Fixture> = OnceLock::new();
    static ED: OnceLock<Fixture> = OnceLock::new();
    match alg {
        Alg::HS256 => HS.get_or_init(|| Fixture {
            alg,
            signer: Box::new(
                josekit::jws::HS256
                    .signer_from_bytes(SECRET)
                    .expect("HS256 signer"),
            ),
            private_der: None,
            material: KeyMaterial {
                secret: Some(SECRET.to_vec()),
                ..KeyMaterial::default()
            },
        }),
        Alg::RS256 => RS.get_or_init(|| {
            let pair = josekit::jws::RS256
                .generate_key_pair(2048)
                .expect("RSA key");
            public_fixture(alg, &pair, |der| {
                Box::new(josekit::jws::RS256.signer_from_der(der).expect("signer"))
            })
        }),
        Alg::ES256 => ES.get_or_init(|| {
            let pair = josekit::jws::ES256.generate_key_pair().expect("EC key");
            public_fixture(alg, &pair, |der| {
                Box::new(josekit::jws::ES256.signer_from_der(der).expect("signer"))
            })
        }),
        Alg::EdDSA => ED.get_or_init(|| {
            let pair = josekit::jws::EdDSA
                .generate_key_pair(EdCurve::Ed25519)
                .expect("Ed25519 key");
            public_fixture(alg, &pair, |der| {
                Box::new(josekit::jws::EdDSA.signer_from_der(der).expect("signer"))
            })
        }),
        other => panic!("no fixture for {other}"),
    }
}

fn public_fixture(
    alg: Alg,
    pair: &dyn KeyPair,
    signer: impl FnOnce(&[u8]) -> Box<dyn JwsSigner>,
) -> Fixture {
    Fixture {
        alg,
        signer: signer(&pair.to_der_private_key()),
        private_der: Some(pair.to_der_private_key()),
        material: KeyMaterial {
            public_key_pem: Some(pair.to_pem_public_key()),
            ..KeyMaterial::default()
        },
    }
}

const FAMILIES: [Alg; 4] = [Alg::HS256, Alg::RS256, Alg::ES256, Alg::EdDSA];

/// Signs `<header>.<payload>` exactly as given, so tests control every byte.
fn sign_raw(signer: &dyn JwsSigner, header_json: &str, payload_json: &str) -> String {
    let input = format!("{}.{}", b64(header_json), b64(payload_json));
    let signature = signer.sign(input.as_bytes()).expect("sign");
    format!("{input}.{}", b64(signature))
}

fn valid_claims() -> Value {
    json!({"sub": "user-1", "exp": NOW + 600, "iat": NOW - 10})
}

impl Fixture {
    /// The default header with `extra` merged in; a `null` in `extra` removes the parameter.
    fn header(&self, extra: &Value) -> String {
        let mut header = json!({"alg": self.alg.name(), "typ": "JWT"});
        if let (Some(header), Some(extra)) = (header.as_object_mut(), extra.as_object()) {
            for (name, value) in extra {
                if value.is_null() {
                    header.remove(name);
                } else {
                    header.insert(name.clone(), value.clone());
                }
            }
        }
        header.to_string()
    }

    fn token_with(&self, header_extra: &Value, claims: &str) -> String {
        sign_raw(&*self.signer, &self.header(header_extra), claims)
    }

    fn token(&self, claims: &Value) -> String {
        self.token_with(&json!({}), &claims.to_string())
    }

    fn policy(&self) -> Policy {
        Policy {
            algorithms: vec![self.alg],
            leeway_secs: LEEWAY,
            ..Policy::default()
        }
    }

    fn keys(&self) -> KeySet {
        KeySet::build(&[self.alg], &self.material).expect("fixture keys")
    }

    fn verifier(&self) -> Verifier {
        Verifier::new(self.keys(), self.policy())
    }

    fn verifier_with(&self, tweak: impl FnOnce(&mut Policy)) -> Verifier {
        let mut policy = self.policy();
        tweak(&mut policy);
        Verifier::new(self.keys(), policy)
    }
}

fn expect(result: Result<Arc<Claims>, Rejection>) -> Result<(), Rejection> {
    result.map(|_| ())
}

/// A row of the token table: header additions, the payload text, a policy tweak, the verdict.
struct Case {
    name: &'static str,
    header: Value,
    payload: String,
    policy: fn(&mut Policy),
    expect: Result<(), Rejection>,
}

fn case(name: &'static str, payload: Value, expect: Result<(), Rejection>) -> Case {
    Case {
        name,
        header: json!({}),
        payload: payload.to_string(),
        policy: |_| {},
        expect,
    }
}

fn with_claim(name: &str, value: Value) -> Value {
    let mut claims = valid_claims();
    if let Some(map) = claims.as_object_mut() {
        map.insert(name.to_owned(), value);
    }
    claims
}

fn without_claim(name: &str) -> Value {
    let mut claims = valid_claims();
    if let Some(map) = claims.as_object_mut() {
        map.remove(name);
    }
    claims
}

/// Replaces `"<name>": <placeholder>` with raw JSON text that `json!` cannot express exactly.
fn raw_claim(name: &str, raw: &str) -> String {
    with_claim(name, json!("RAW"))
        .to_string()
        .replace(&format!("\"{name}\":\"RAW\""), &format!("\"{name}\":{raw}"))
}

fn header_case(name: &'static str, header: Value, expect: Result<(), Rejection>) -> Case {
    Case {
        header,
        ..case(name, valid_claims(), expect)
    }
}

fn policy_case(
    name: &'static str,
    payload: Value,
    policy: fn(&mut Policy),
    expect: Result<(), Rejection>,
) -> Case {
    Case {
        policy,
        ..case(name, payload, expect)
    }
}

fn cases() -> Vec<Case> {
    use Rejection::*;
    let bad_exp = Err(BadTimeClaim("exp is not an integer in [0, 2^53)"));
    let bad_nbf = Err(BadTimeClaim("nbf is not an integer in [0, 2^53)"));
    let bad_iat = Err(BadTimeClaim("iat is not an integer in [0, 2^53)"));
    let raw = |name, payload: String, expect| Case {
        payload,
        ..case(name, json!({}), expect)
    };
    let issuer = |p: &mut Policy| p.issuer = Some("https://api.example.com".to_owned());
    let audience = |p: &mut Policy| p.audience = vec!["web".to_owned(), "mobile".to_owned()];
    let access_only = |p: &mut Policy| {
        p.required_claims = vec![("token_type".to_owned(), vec!["access".to_owned()])]
    };
    let admin_role =
        |p: &mut Policy| p.required_claims = vec![("roles".to_owned(), vec!["admin".to_owned()])];
    let level_3 =
        |p: &mut Policy| p.required_claims = vec![("level".to_owned(), vec!["3".to_owned()])];
    vec![
        case("valid", valid_claims(), Ok(())),
        // exp
        case(
            "exp missing",
            without_claim("exp"),
            Err(BadTimeClaim("exp is missing")),
        ),
        case(
            "exp past leeway",
            with_claim("exp", json!(NOW - LEEWAY - 1)),
            Err(Expired),
        ),
        case(
            "exp within leeway",
            with_claim("exp", json!(NOW - LEEWAY)),
            Ok(()),
        ),
        case("exp now", with_claim("exp", json!(NOW)), Ok(())),
        case("exp 0", with_claim("exp", json!(0)), Err(Expired)),
        case(
            "exp 2^53-1",
            with_claim("exp", json!((1u64 << 53) - 1)),
            Ok(()),
        ),
        case(
            "exp 2^53",
            with_claim("exp", json!(1u64 << 53)),
            bad_exp.clone(),
        ),
        case(
            "exp string",
            with_claim("exp", json!("123")),
            bad_exp.clone(),
        ),
        case(
            "exp numeric string",
            with_claim("exp", json!((NOW + 600).to_string())),
            bad_exp.clone(),
        ),
        case("exp bool", with_claim("exp", json!(true)), bad_exp.clone()),
        case("exp null", with_claim("exp", Value::Null), bad_exp.clone()),
        case(
            "exp array",
            with_claim("exp", json!([NOW + 600])),
            bad_exp.clone(),
        ),
        case("exp float", with_claim("exp", json!(1.5)), bad_exp.clone()),
        case(
            "exp negative",
            with_claim("exp", json!(-1)),
            bad_exp.clone(),
        ),
        case(
            "exp 1e19 float",
            with_claim("exp", json!(1e19)),
            bad_exp.clone(),
        ),
        case(
            "exp u64::MAX",
            with_claim("exp", json!(u64::MAX)),
            bad_exp.clone(),
        ),
        raw("exp 1e3", raw_claim("exp", "1e3"), bad_exp.clone()),
        raw(
            "exp 1700000600.0",
            raw_claim("exp", "1700000600.0"),
            bad_exp.clone(),
        ),
        raw(
            "exp 10000000000000000000",
            raw_claim("exp", "10000000000000000000"),
            bad_exp.clone(),
        ),
        raw(
            "exp 1e400",
            raw_claim("exp", "1e400"),
            Err(Malformed("payload is not a JSON object")),
        ),
        raw(
            "exp 2^64+1",
            raw_claim("exp", "18446744073709551617"),
            bad_exp.clone(),
        ),
        // nbf
        case("nbf past", with_claim("nbf", json!(NOW - 100)), Ok(())),
        case(
            "nbf within leeway",
            with_claim("nbf", json!(NOW + LEEWAY)),
            Ok(()),
        ),
        case(
            "nbf future",
            with_claim("nbf", json!(NOW + LEEWAY + 1)),
            Err(NotYetValid),
        ),
        case(
            "nbf string",
            with_claim("nbf", json!("123")),
            bad_nbf.clone(),
        ),
        case("nbf bool", with_claim("nbf", json!(false)), bad_nbf.clone()),
        case("nbf float", with_claim("nbf", json!(1.5)), bad_nbf.clone()),
        case(
            "nbf negative",
            with_claim("nbf", json!(-1)),
            bad_nbf.clone(),
        ),
        case("nbf 1e19", with_claim("nbf", json!(1e19)), bad_nbf.clone()),
        case("nbf 2^53", with_claim("nbf", json!(1u64 << 53)), bad_nbf),
        // iat
        case(
            "iat within leeway",
            with_claim("iat", json!(NOW + LEEWAY - 1)),
            Ok(()),
        ),
        case(
            "iat future",
            with_claim("iat", json!(NOW + LEEWAY + 1)),
            Err(IssuedInFuture),
        ),
        case("iat absent", without_claim("iat"), Ok(())),
        case(
            "iat string",
            with_claim("iat", json!("123")),
            bad_iat.clone(),
        ),
        case("iat bool", with_claim("iat", json!(true)), bad_iat.clone()),
        case("iat float", with_claim("iat", json!(1.5)), bad_iat.clone()),
        case(
            "iat negative",
            with_claim("iat", json!(-1)),
            bad_iat.clone(),
        ),
        case("iat 1e19", with_claim("iat", json!(1e19)), bad_iat.clone()),
        case("iat 2^53", with_claim("iat", json!(1u64 << 53)), bad_iat),
        // Expiry is judged last: an expired token with another fault reports the fault.
        case(
            "expired and not yet valid",
            json!({"exp": NOW - 100, "nbf": NOW + 100}),
            Err(NotYetValid),
        ),
        // payload shape
        raw(
            "payload array",
            "[1,2]".to_owned(),
            Err(Malformed("payload is not a JSON object")),
        ),
        raw(
            "payload not json",
            "exp=1".to_owned(),
            Err(Malformed("payload is not a JSON object")),
        ),
        raw(
            "payload empty object",
            "{}".to_owned(),
            Err(BadTimeClaim("exp is missing")),
        ),
        // header
        header_case("alg none", json!({"alg": "none"}), Err(AlgorithmNotAllowed)),
        header_case("alg None", json!({"alg": "None"}), Err(AlgorithmNotAllowed)),
        header_case("alg NONE", json!({"alg": "NONE"}), Err(AlgorithmNotAllowed)),
        header_case(
            "alg lower case",
            json!({"alg": "hs256"}),
            Err(AlgorithmNotAllowed),
        ),
        header_case(
            "alg not listed",
            json!({"alg": "PS512"}),
            Err(AlgorithmNotAllowed),
        ),
        header_case(
            "alg missing",
            json!({"alg": null}),
            Err(Malformed("header has no alg")),
        ),
        header_case(
            "alg number",
            json!({"alg": 256}),
            Err(Malformed("alg is not a string")),
        ),
        header_case("crit empty", json!({"crit": []}), Err(Critical)),
        header_case(
            "crit exp",
            json!({"crit": ["exp"], "exp": 1}),
            Err(Critical),
        ),
        header_case(
            "crit b64",
            json!({"crit": ["b64"], "b64": false}),
            Err(Critical),
        ),
        header_case("crit null", json!({"crit": "x"}), Err(Critical)),
        header_case(
            "cty JWT",
            json!({"cty": "JWT"}),
            Err(Malformed("nested JWT (cty) is not accepted")),
        ),
        // A static key configured without `jwt.kid` takes a token whatever kid it names (as
        // jose's `jwtVerify(token, secret)` does): the kid text is never used for anything, so
        // hostile text is harmless, and only the signature decides. (Keys with a kid select
        // exactly: `jwks_selects_by_kid`, `a_static_key_with_jwt_kid_selects_exactly`.)
        header_case("kid traversal", json!({"kid": "../../etc/passwd"}), Ok(())),
        header_case("kid sql", json!({"kid": "' OR '1'='1"}), Ok(())),
        header_case("kid shell", json!({"kid": "$(curl evil.example)"}), Ok(())),
        header_case("kid empty", json!({"kid": ""}), Ok(())),
        header_case(
            "kid number",
            json!({"kid": 1}),
            Err(Malformed("kid is not a string")),
        ),
        header_case(
            "jku ignored",
            json!({"jku": "http://127.0.0.1:9/jwks.json"}),
            Ok(()),
        ),
        header_case(
            "x5u ignored",
            json!({"x5u": "http://127.0.0.1:9/cert.pem"}),
            Ok(()),
        ),
        header_case("x5c ignored", json!({"x5c": ["MIIB"]}), Ok(())),
        header_case(
            "jwk ignored",
            json!({"jwk": {"kty": "oct", "k": b64("attacker secret attacker secret!!")}}),
            Ok(()),
        ),
        header_case("typ JWT", json!({"typ": "JWT"}), Ok(())),
        header_case("typ at+jwt", json!({"typ": "at+jwt"}), Ok(())),
        header_case("typ absent", json!({"typ": null}), Ok(())),
        header_case(
            "typ refresh",
            json!({"typ": "refresh"}),
            Err(NotAnAccessToken),
        ),
        header_case(
            "typ Refresh+JWT",
            json!({"typ": "Refresh+JWT"}),
            Err(NotAnAccessToken),
        ),
        header_case(
            "typ id_token",
            json!({"typ": "id_token"}),
            Err(NotAnAccessToken),
        ),
        header_case(
            "typ number",
            json!({"typ": 1}),
            Err(Malformed("typ is not a string")),
        ),
        // token kinds in the payload
        case(
            "typ claim refresh",
            with_claim("typ", json!("refresh")),
            Err(NotAnAccessToken),
        ),
        case(
            "typ claim ID",
            with_claim("typ", json!("ID")),
            Err(NotAnAccessToken),
        ),
        case(
            "typ claim Bearer",
            with_claim("typ", json!("Bearer")),
            Ok(()),
        ),
        case(
            "token_type refresh",
            with_claim("token_type", json!("refresh")),
            Err(NotAnAccessToken),
        ),
        case(
            "token_type access",
            with_claim("token_type", json!("access")),
            Ok(()),
        ),
        // iss
        policy_case(
            "iss matches",
            with_claim("iss", json!("https://api.example.com")),
            issuer,
            Ok(()),
        ),
        policy_case(
            "iss wrong",
            with_claim("iss", json!("https://evil.example")),
            issuer,
            Err(Issuer),
        ),
        policy_case("iss missing", valid_claims(), issuer, Err(Issuer)),
        policy_case(
            "iss array",
            with_claim("iss", json!(["https://api.example.com"])),
            issuer,
            Err(Issuer),
        ),
        case(
            "iss unchecked",
            with_claim("iss", json!("anything")),
            Ok(()),
        ),
        // aud
        policy_case(
            "aud string",
            with_claim("aud", json!("web")),
            audience,
            Ok(()),
        ),
        policy_case(
            "aud array",
            with_claim("aud", json!(["other", "mobile"])),
            audience,
            Ok(()),
        ),
        policy_case(
            "aud wrong",
            with_claim("aud", json!("api")),
            audience,
            Err(Audience),
        ),
        policy_case(
            "aud array wrong",
            with_claim("aud", json!(["api", "admin"])),
            audience,
            Err(Audience),
        ),
        policy_case(
            "aud empty array",
            with_claim("aud", json!([])),
            audience,
            Err(Audience),
        ),
        policy_case("aud missing", valid_claims(), audience, Err(Audience)),
        policy_case(
            "aud non-string member",
            with_claim("aud", json!(["web", 1])),
            audience,
            Err(Audience),
        ),
        policy_case(
            "aud case differs",
            with_claim("aud", json!("WEB")),
            audience,
            Err(Audience),
        ),
        case(
            "aud unchecked",
            with_claim("aud", json!("anything")),
            Ok(()),
        ),
        // required claims
        policy_case(
            "required string",
            with_claim("token_type", json!("access")),
            access_only,
            Ok(()),
        ),
        policy_case(
            "required missing",
            valid_claims(),
            access_only,
            Err(MissingClaim("token_type".to_owned())),
        ),
        policy_case(
            "required wrong",
            with_claim("token_type", json!("session")),
            access_only,
            Err(MissingClaim("token_type".to_owned())),
        ),
        policy_case(
            "required refresh",
            with_claim("token_type", json!("refresh")),
            access_only,
            Err(NotAnAccessToken),
        ),
        policy_case(
            "required array",
            with_claim("roles", json!(["user", "admin"])),
            admin_role,
            Ok(()),
        ),
        policy_case(
            "required array lacks",
            with_claim("roles", json!(["user"])),
            admin_role,
            Err(MissingClaim("roles".to_owned())),
        ),
        policy_case(
            "required string is not array member",
            with_claim("roles", json!("administrator")),
            admin_role,
            Err(MissingClaim("roles".to_owned())),
        ),
        policy_case(
            "required number",
            with_claim("level", json!(3)),
            level_3,
            Ok(()),
        ),
        policy_case(
            "required number text differs",
            with_claim("level", json!(3.0)),
            level_3,
            Err(MissingClaim("level".to_owned())),
        ),
    ]
}

#[test]
fn token_table_for_every_key_family() {
    let mut failures = Vec::new();
    let mut count = 0;
    for alg in FAMILIES {
        let fx = fixture(alg);
        for case in cases() {
            let verifier = fx.verifier_with(case.policy);
            let token = fx.token_with(&case.header, &case.payload);
            let got = expect(verifier.verify(&token, NOW));
            if got != case.expect {
                failures.push(format!(
                    "{alg} {}: expected {:?}, got {got:?}",
                    case.name, case.expect
                ));
            }
            // The cache must never change a verdict: ask twice with the cache on.
            let cached = fx.verifier_with(|p| {
                (case.policy)(p);
                p.cache_entries = 16;
            });
            for round in 0..2 {
                let got = expect(cached.verify(&token, NOW));
                if got != case.expect {
                    failures.push(format!(
                        "{alg} {} (cached, round {round}): expected {:?}, got {got:?}",
                        case.name, case.expect
                    ));
                }
            }
            count += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(count > 300, "only {count} rows ran");
}

/// Structural damage done to a valid token, with the expected verdict.
#[test]
fn malformed_tokens_for_every_key_family() {
    use Rejection::*;
    for alg in FAMILIES {
        let fx = fixture(alg);
        let verifier = fx.verifier();
        let token = fx.token(&valid_claims());
        assert_eq!(
            expect(verifier.verify(&token, NOW)),
            Ok(()),
            "{alg} control"
        );
        let parts: Vec<&str> = token.split('.').collect();
        let (h, p, s) = (parts[0], parts[1], parts[2]);
        let sig_bytes = URL_SAFE_NO_PAD.decode(s).expect("signature");
        let segments = Err(Malformed(
            "not three dot-separated segments (JWE is not accepted)",
        ));
        let not_b64 = Err(Malformed("segment is not base64url"));
        let non_canonical = Err(Malformed("segment is not canonical base64url"));
        let header_json = Err(Malformed("header is not a JSON object"));
        let rows: Vec<(&str, String, Result<(), Rejection>)> = vec![
            ("empty", String::new(), segments.clone()),
            ("one segment", h.to_owned(), segments.clone()),
            ("two segments", format!("{h}.{p}"), segments.clone()),
            ("four segments", format!("{token}.{s}"), segments.clone()),
            (
                "five segments (JWE)",
                format!("{h}.{p}.{s}.{s}.{s}"),
                segments.clone(),
            ),
            (
                "empty signature",
                format!("{h}.{p}."),
                Err(Malformed("empty segment")),
            ),
            (
                "empty header",
                format!(".{p}.{s}"),
                Err(Malformed("empty segment")),
            ),
            (
                "empty payload",
                format!("{h}..{s}"),
                Err(Malformed("empty segment")),
            ),
            ("padded signature", format!("{token}="), not_b64.clone()),
            ("padded header", format!("{h}=.{p}.{s}"), not_b64.clone()),
            (
                "standard alphabet",
                // '+' and '/' belong to standard base64 only; a random signature need not
                // contain '-' or '_', so put one in for certain.
                format!("{h}.{p}.+/{}", &s[2..]),
                not_b64.clone(),
            ),
            ("space", format!("{h}.{p}. {s}"), not_b64.clone()),
            ("unicode", format!("{h}.{p}.{s}é"), not_b64.clone()),
            (
                "non-canonical signature",
                format!("{h}.{p}.{}", flip_trailing_bit(s)),
                non_canonical.clone(),
            ),
            (
                "impossible length",
                format!("{h}.{p}.{}", impossible_length(s)),
                non_canonical.clone(),
            ),
            (
                "header not json",
                format!("{}.{p}.{s}", b64("not json")),
                header_json.clone(),
            ),
            (
                "header array",
                format!("{}.{p}.{s}", b64("[1]")),
                header_json.clone(),
            ),
            (
                "header string",
                format!("{}.{p}.{s}", b64("\"alg\"")),
                header_json.clone(),
            ),
            (
                "header invalid utf-8",
                format!("{}.{p}.{s}", b64(b"{\"alg\":\"\xff\"}")),
                header_json,
            ),
            (
                "signature of other token",
                format!("{h}.{}.{s}", b64("{\"exp\":99999999999}")),
                Err(BadSignature),
            ),
            (
                "truncated signature",
                format!("{h}.{p}.{}", b64(&sig_bytes[..sig_bytes.len() - 1])),
                Err(BadSignature),
            ),
            (
                "extended signature",
                format!("{h}.{p}.{}", b64([&sig_bytes[..], &[0]].concat())),
                Err(BadSignature),
            ),
        ];
        for (name, token, expected) in rows {
            assert_eq!(
                expect(verifier.verify(&token, NOW)),
                expected,
                "{alg} {name}"
            );
        }
    }
}

/// Pads a segment to a length of 1 modulo 4, which no byte string encodes to.
fn impossible_length(segment: &str) -> String {
    let mut out = segment.to_owned();
    while out.len() % 4 != 1 {
        out.push('A');
    }
    out
}

/// Changes the last character to one that decodes to the same bytes under a lenient decoder
/// (only the unused trailing bits differ).
fn flip_trailing_bit(segment: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = *segment.as_bytes().last().expect("non-empty");
    let value = ALPHABET.iter().position(|&c| c == last).expect("base64url");
    let flipped = format!(
        "{}{}",
        &segment[..segment.len() - 1],
        ALPHABET[value ^ 1] as char
    );
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone),
    );
    assert_eq!(
        lenient.decode(&flipped).expect("lenient"),
        lenient.decode(segment).expect("lenient"),
        "the flipped segment must be a non-canonical alias"
    );
    flipped
}

#[test]
fn base64_engine_is_strict() {
    // "AB" carries 12 bits for one byte: the 4 unused bits are non-zero.
    assert!(URL_SAFE_NO_PAD.decode("AA").is_ok());
    assert!(URL_SAFE_NO_PAD.decode("AB").is_err());
    assert!(URL_SAFE_NO_PAD.decode("AA==").is_err());
    assert!(URL_SAFE_NO_PAD.decode("A").is_err());
}

#[test]
fn oversized_tokens_are_refused_before_decoding() {
    for alg in FAMILIES {
        let fx = fixture(alg);
        let verifier = fx.verifier_with(|p| p.cache_entries = 8);
        let big = fx.token(&with_claim("pad", json!("x".repeat(MAX_TOKEN_LEN))));
        assert!(big.len() > MAX_TOKEN_LEN);
        assert_eq!(expect(verifier.verify(&big, NOW)), Err(Rejection::TooLarge));
        assert_eq!(
            expect(verifier.verify_ignoring_exp(&big, NOW)),
            Err(Rejection::TooLarge)
        );
        let (checks, result) = verifier.explain(&big, NOW);
        assert_eq!(expect(result), Err(Rejection::TooLarge));
        assert_eq!(checks.len(), 1);
        // 1 MiB of garbage, and a token just under the limit that is otherwise valid.
        let garbage = "a.".repeat(512 * 1024);
        assert_eq!(
            expect(verifier.verify(&garbage, NOW)),
            Err(Rejection::TooLarge)
        );
        let header_len = b64(fx.header(&json!({}))).len();
        let sig_len = big.rsplit('.').next().map_or(0, str::len);
        let room = MAX_TOKEN_LEN - header_len - sig_len - 2;
        let base = b64(with_claim("pad", json!("")).to_string()).len();
        let pad = "y".repeat((room - base) * 3 / 4);
        let fits = fx.token(&with_claim("pad", json!(pad)));
        assert!(fits.len() <= MAX_TOKEN_LEN, "{} bytes", fits.len());
        assert_eq!(expect(verifier.verify(&fits, NOW)), Ok(()), "{alg}");
    }
}

#[test]
fn alg_none_with_empty_signature_is_refused() {
    for alg in FAMILIES {
        let fx = fixture(alg);
        let verifier = fx.verifier();
        for none in ["none", "None", "NONE", "nOnE"] {
            let header = b64(json!({"alg": none, "typ": "JWT"}).to_string());
            let payload = b64(valid_claims().to_string());
            let unsigned = format!("{header}.{payload}.");
            assert_eq!(
                expect(verifier.verify(&unsigned, NOW)),
                Err(Rejection::Malformed("empty segment"))
            );
            let junk_sig = format!("{header}.{payload}.{}", b64("sig"));
            assert_eq!(
                expect(verifier.verify(&junk_sig, NOW)),
                Err(Rejection::AlgorithmNotAllowed)
            );
        }
    }
}

#[test]
fn alg_confusion_rsa_public_key_as_hmac_secret() {
    let rs = fixture(Alg::RS256);
    let pem = rs.material.public_key_pem.clone().expect("pem");
    // HS256 signed with the PEM bytes, which a naive verifier would use as the secret.
    let forger = josekit::jws::HS256
        .signer_from_bytes(&pem)
        .expect("HS256 over the PEM");
    let header = json!({"alg": "HS256", "typ": "JWT"}).to_string();
    let forged = sign_raw(&forger, &header, &valid_claims().to_string());

    // RS256 only: HS256 is not allowed.
    let verifier = rs.verifier();
    assert_eq!(
        expect(verifier.verify(&forged, NOW)),
        Err(Rejection::AlgorithmNotAllowed)
    );
    // Even with HS256 allowed, the PEM pairs with RS*/PS* only: no HS key exists.
    let algs = [Alg::RS256, Alg::HS256];
    let keys = KeySet::build(&algs, &rs.material).expect("keys");
    assert_eq!(keys.algorithms(), vec![Alg::RS256]);
    let verifier = Verifier::new(
        keys,
        Policy {
            algorithms: algs.to_vec(),
            ..rs.policy()
        },
    );
    assert_eq!(
        expect(verifier.verify(&forged, NOW)),
        Err(Rejection::UnknownKey)
    );
    assert_eq!(
        expect(verifier.verify(&rs.token(&valid_claims()), NOW)),
        Ok(())
    );
    // And the PEM cannot be configured as the secret.
    let as_secret = KeyMaterial {
        secret: Some(pem),
        ..KeyMaterial::default()
    };
    assert!(matches!(
        KeySet::build(&algs, &as_secret),
        Err(KeyError::Secret(_))
    ));
}

#[test]
fn psychic_ecdsa_signature_is_refused() {
    // CVE-2022-21449: r = s = 0 verified under some ECDSA implementations.
    let es = fixture(Alg::ES256);
    let verifier = es.verifier();
    let input = format!(
        "{}.{}",
        b64(es.header(&json!({}))),
        b64(valid_claims().to_string())
    );
    for signature in [vec![0u8; 64], vec![0u8; 32], vec![0u8; 72], Vec::new()] {
        let token = format!("{input}.{}", b64(&signature));
        let expected = if signature.is_empty() {
            Err(Rejection::Malformed("empty segment"))
        } else {
            Err(Rejection::BadSignature)
        };
        assert_eq!(expect(verifier.verify(&token, NOW)), expected);
    }
}

#[test]
fn algorithm_not_allowed_even_when_signed_with_the_right_key() {
    // The same RSA key makes valid PS256 signatures, but only RS256 is listed.
    let rs = fixture(Alg::RS256);
    let private = rs.private_der.as_deref().expect("RSA private key");
    let ps256 = josekit::jws::PS256
        .signer_from_der(private)
        .expect("PS256 signer");
    let token = sign_raw(
        &ps256,
        &json!({"alg": "PS256"}).to_string(),
        &valid_claims().to_string(),
    );
    assert_eq!(
        expect(rs.verifier().verify(&token, NOW)),
        Err(Rejection::AlgorithmNotAllowed)
    );
    // Listing PS256 too makes the very same token verify, so the refusal was the allowlist.
    let both = [Alg::RS256, Alg::PS256];
    let keys = KeySet::build(&both, &rs.material).expect("keys");
    assert_eq!(keys.len(), 2);
    let verifier = Verifier::new(
        keys,
        Policy {
            algorithms: both.to_vec(),
            ..rs.policy()
        },
    );
    assert_eq!(expect(verifier.verify(&token, NOW)), Ok(()));

    // Likewise HS384 under the configured secret when only HS256 is listed.
    let hs = fixture(Alg::HS256);
    let hs384 = josekit::jws::HS384
        .signer_from_bytes(b"an HMAC secret of forty-eight bytes, for HS384!!")
        .expect("HS384");
    let token = sign_raw(
        &hs384,
        &json!({"alg": "HS384"}).to_string(),
        &valid_claims().to_string(),
    );
    assert_eq!(
        expect(hs.verifier().verify(&token, NOW)),
        Err(Rejection::AlgorithmNotAllowed)
    );
}

#[test]
fn embedded_jwk_and_foreign_keys_do_not_verify() {
    // An attacker signs with their own key and embeds it (CVE-2018-0114).
    for alg in [Alg::ES256, Alg::EdDSA, Alg::RS256] {
        let fx = fixture(alg);
        let verifier = fx.verifier();
        let (signer, jwk): (Box<dyn JwsSigner>, Jwk) = match alg {
            Alg::ES256 => {
                let pair = josekit::jws::ES256.generate_key_pair().expect("key");
                let signer = josekit::jws::ES256
                    .signer_from_der(pair.to_der_private_key())
                    .expect("signer");
                (Box::new(signer), pair.to_jwk_public_key())
            }
            Alg::EdDSA => {
                let pair = josekit::jws::EdDSA
                    .generate_key_pair(EdCurve::Ed25519)
                    .expect("key");
                let signer = josekit::jws::EdDSA
                    .signer_from_der(pair.to_der_private_key())
                    .expect("signer");
                (Box::new(signer), pair.to_jwk_public_key())
            }
            _ => {
                let pair = josekit::jws::RS256.generate_key_pair(2048).expect("key");
                let signer = josekit::jws::RS256
                    .signer_from_der(pair.to_der_private_key())
                    .expect("signer");
                (Box::new(signer), pair.to_jwk_public_key())
            }
        };
        let jwk_json: Value = serde_json::from_str(&jwk.to_string()).expect("jwk json");
        let header = json!({
            "alg": alg.name(),
            "jwk": jwk_json,
            "jku": "http://127.0.0.1:9/jwks.json",
            "x5u": "http://127.0.0.1:9/cert.pem",
        });
        let forged = sign_raw(&*signer, &header.to_string(), &valid_claims().to_string());
        assert_eq!(
            expect(verifier.verify(&forged, NOW)),
            Err(Rejection::BadSignature),
            "{alg}"
        );
    }
}

#[test]
fn josekit_encoded_tokens_verify() {
    for alg in FAMILIES {
        let fx = fixture(alg);
        let mut payload = josekit::jwt::JwtPayload::new();
        payload.set_subject("user-1");
        payload.set_expires_at(&(std::time::UNIX_EPOCH + std::time::Duration::from_secs(NOW + 60)));
        let mut header = josekit::jws::JwsHeader::new();
        header.set_token_type("JWT");
        let token =
            josekit::jwt::encode_with_signer(&payload, &header, &*fx.signer).expect("encode");
        let claims = fx.verifier().verify(&token, NOW).expect("valid");
        assert_eq!(claims.sub(), Some("user-1"));
        assert_eq!(claims.exp(), NOW + 60);
    }
}

#[test]
fn expired_means_genuine() {
    for alg in FAMILIES {
        let fx = fixture(alg);
        let verifier = fx.verifier_with(|p| p.cache_entries = 8);
        let expired = fx.token(&with_claim("exp", json!(NOW - 3600)));
        let err = verifier.verify(&expired, NOW).expect_err("expired");
        assert!(err.is_expired_only());
        assert_eq!(err.to_string(), "token expired");
        let claims = verifier
            .verify_ignoring_exp(&expired, NOW)
            .expect("genuine");
        assert_eq!(claims.sub(), Some("user-1"));
        // A forged expired token is a bad signature, not "expired".
        let forged = format!("{}AAAA", &expired[..expired.len() - 4]);
        let err = verifier.verify(&forged, NOW).expect_err("forged");
        assert!(!err.is_expired_only(), "{alg}: {err}");
        assert!(verifier.verify_ignoring_exp(&forged, NOW).is_err());
        // An expired refresh token is "not an access token", not "expired".
        let refresh = fx.token(&json!({"exp": NOW - 3600, "token_type": "refresh"}));
        assert_eq!(
            expect(verifier.verify(&refresh, NOW)),
            Err(Rejection::NotAnAccessToken)
        );
        assert!(verifier.verify_ignoring_exp(&refresh, NOW).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// Cache

impl Verifier {
    fn cached_tokens(&self) -> usize {
        self.cache.as_ref().map_or(0, |cache| {
            cache
                .shards
                .iter()
                .map(|s| s.lock().map_or(0, |s| s.map.len()))
                .sum()
        })
    }
}

#[test]
fn cache_hit_returns_the_same_claims() {
    for alg in FAMILIES {
        let fx = fixture(alg);
        let verifier = fx.verifier_with(|p| p.cache_entries = 8);
        let token = fx.token(&valid_claims());
        let first = verifier.verify(&token, NOW).expect("valid");
        let second = verifier.verify(&token, NOW + 1).expect("cached");
        assert!(
            Arc::ptr_eq(&first, &second),
            "{alg}: second call was not a hit"
        );
        assert_eq!(verifier.cached_tokens(), 1);
    }
}

#[test]
fn cached_entry_never_outlives_exp() {
    let fx = fixture(Alg::ES256);
    let verifier = fx.verifier_with(|p| p.cache_entries = 8);
    let token = fx.token(&json!({"exp": NOW + 10, "nbf": NOW - 5}));
    assert!(verifier.verify(&token, NOW).is_ok());
    assert!(verifier.verify(&token, NOW + 10 + LEEWAY).is_ok());
    assert_eq!(
        expect(verifier.verify(&token, NOW + 10 + LEEWAY + 1)),
        Err(Rejection::Expired)
    );
    assert_eq!(verifier.cached_tokens(), 0, "expired entry is dropped");
    // The cache also re-judges nbf for a clock that is behind.
    assert!(verifier.verify(&token, NOW).is_ok());
    assert_eq!(
        expect(verifier.verify(&token, NOW - 5 - LEEWAY - 1)),
        Err(Rejection::NotYetValid)
    );
}

#[test]
fn failures_are_never_cached() {
    let fx = fixture(Alg::HS256);
    let verifier = fx.verifier_with(|p| {
        p.cache_entries = 8;
        p.audience = vec!["web".to_owned()];
    });
    let tokens = [
        fx.token(&valid_claims()),                                  // no aud
        fx.token(&with_claim("exp", json!(NOW - 3600))),            // expired
        fx.token(&with_claim("nbf", json!(NOW + 3600))),            // not yet valid
        format!("{}x", fx.token(&with_claim("aud", json!("web")))), // bad signature
    ];
    for token in &tokens {
        for _ in 0..2 {
            assert!(verifier.verify(token, NOW).is_err());
        }
    }
    assert_eq!(verifier.cached_tokens(), 0);
    // A token valid later is cached once it is valid, not before.
    assert!(verifier.verify(&tokens[2], NOW + 3600).is_err()); // still lacks aud
    let later = fx.token(&json!({"exp": NOW + 7200, "nbf": NOW + 3600, "aud": "web"}));
    assert!(verifier.verify(&later, NOW).is_err());
    assert_eq!(verifier.cached_tokens(), 0);
    assert!(verifier.verify(&later, NOW + 3600).is_ok());
    assert_eq!(verifier.cached_tokens(), 1);
}

#[test]
fn cache_off_when_zero_entries() {
    let fx = fixture(Alg::HS256);
    let verifier = fx.verifier_with(|p| p.cache_entries = 0);
    assert!(verifier.cache.is_none());
    let token = fx.token(&valid_claims());
    let a = verifier.verify(&token, NOW).expect("valid");
    let b = verifier.verify(&token, NOW).expect("valid");
    assert!(!Arc::ptr_eq(&a, &b));
    assert_eq!(a, b);
}

#[test]
fn cache_is_bounded_in_entries() {
    let fx = fixture(Alg::HS256);
    for entries in [1, 4, 100] {
        let verifier = fx.verifier_with(|p| p.cache_entries = entries);
        for i in 0..(3 * entries + 5) {
            let token = fx.token(&with_claim("n", json!(i)));
            assert!(verifier.verify(&token, NOW).is_ok());
            assert!(verifier.cached_tokens() <= entries, "{entries}");
        }
        assert!(verifier.cached_tokens() >= 1);
    }
    // Expired entries are evicted before live ones.
    let verifier = fx.verifier_with(|p| p.cache_entries = 2);
    let short = fx.token(&json!({"exp": NOW + 1, "n": 1}));
    let long = fx.token(&json!({"exp": NOW + 600, "n": 2}));
    assert!(verifier.verify(&short, NOW).is_ok());
    assert!(verifier.verify(&long, NOW).is_ok());
    let later = NOW + 1 + LEEWAY + 1;
    let newer = fx.token(&json!({"exp": NOW + 900, "n": 3}));
    assert!(verifier.verify(&newer, later).is_ok());
    let first = verifier.verify(&long, later).expect("valid");
    assert!(Arc::ptr_eq(
        &first,
        &verifier.verify(&long, later).expect("hit")
    ));
}

#[test]
fn cache_is_bounded_in_bytes() {
    let fx = fixture(Alg::HS256);
    // Many entries allowed, but each near 8 KiB: the byte bound must bite first.
    let verifier = fx.verifier_with(|p| p.cache_entries = 100_000);
    let shard_budget = CACHE_MAX_BYTES / verifier.cache.as_ref().expect("on").shards.len();
    for i in 0..3000 {
        let token = fx.token(&with_claim(
            "pad",
            json!(format!("{i}{}", "p".repeat(5000))),
        ));
        assert!(verifier.verify(&token, NOW).is_ok());
    }
    let cache = verifier.cache.as_ref().expect("on");
    for shard in cache.shards.iter() {
        let shard = shard.lock().expect("lock");
        assert!(shard.bytes <= shard_budget);
        let recount: usize = shard.map.values().map(|c| c.cost).sum();
        assert_eq!(recount, shard.bytes, "byte accounting is exact");
    }
    let total: usize = cache
        .shards
        .iter()
        .map(|s| s.lock().map_or(0, |s| s.bytes))
        .sum();
    assert!(total <= CACHE_MAX_BYTES);
    assert!(verifier.cached_tokens() < 3000);
}

#[test]
fn cache_drops_results_of_verifications_that_straddle_a_key_change() {
    let fx = fixture(Alg::HS256);
    let verifier = fx.verifier_with(|p| p.cache_entries = 8);
    let token = fx.token(&valid_claims());
    let cache = verifier.cache.as_ref().expect("on");
    let (_, generation) = cache.get(&token);
    let claims = verifier.verify_uncached(&token, NOW).expect("valid");
    cache.clear(); // what replace_keys does after storing the new keys
    cache.insert(&token, &claims, generation, NOW, LEEWAY);
    assert_eq!(verifier.cached_tokens(), 0);
}

#[test]
fn replace_keys_removes_the_old_key_and_clears_the_cache() {
    let old = fixture(Alg::ES256);
    let verifier = old.verifier_with(|p| p.cache_entries = 8);
    let token = old.token(&valid_claims());
    assert!(verifier.verify(&token, NOW).is_ok());
    assert_eq!(verifier.cached_tokens(), 1);

    let pair = josekit::jws::ES256.generate_key_pair().expect("key");
    let material = KeyMaterial {
        public_key_pem: Some(pair.to_pem_public_key()),
        ..KeyMaterial::default()
    };
    verifier.replace_keys(KeySet::build(&[Alg::ES256], &material).expect("keys"));
    assert_eq!(verifier.cached_tokens(), 0);
    assert_eq!(
        expect(verifier.verify(&token, NOW)),
        Err(Rejection::BadSignature)
    );
    let signer = josekit::jws::ES256
        .signer_from_der(pair.to_der_private_key())
        .expect("signer");
    let new_token = sign_raw(
        &signer,
        &old.header(&json!({})),
        &valid_claims().to_string(),
    );
    assert!(verifier.verify(&new_token, NOW).is_ok());
    assert_eq!(verifier.keys().len(), 1);
}

#[test]
fn cache_is_safe_under_concurrency() {
    let fx = fixture(Alg::HS256);
    let verifier = fx.verifier_with(|p| p.cache_entries = 64);
    let tokens: Vec<String> = (0..32)
        .map(|i| fx.token(&with_claim("n", json!(i))))
        .collect();
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (verifier, tokens) = (&verifier, &tokens);
            scope.spawn(move || {
                for round in 0..200 {
                    let token = &tokens[(t * 7 + round) % tokens.len()];
                    assert!(verifier.verify(token, NOW).is_ok());
                    if round % 50 == 0 && t == 0 {
                        verifier.replace_keys(fx.keys());
                    }
                }
            });
        }
    });
    assert!(verifier.cached_tokens() <= 64);
}

// ---------------------------------------------------------------------------------------------
// Keys

#[test]
fn key_set_build_errors() {
    let ec = josekit::jws::ES256.generate_key_pair().expect("key");
    let rsa_small = openssl::rsa::Rsa::generate(1024).expect("rsa");
    let rsa_small_pem = rsa_small.public_key_to_pem().expect("pem");
    let p384 = josekit::jws::ES384.generate_key_pair().expect("key");
    let secret = |bytes: &[u8]| KeyMaterial {
        secret: Some(bytes.to_vec()),
        ..KeyMaterial::default()
    };
    let pem = |bytes: Vec<u8>| KeyMaterial {
        public_key_pem: Some(bytes),
        ..KeyMaterial::default()
    };
    let jwks = |text: &str| KeyMaterial {
        jwks_json: Some(text.as_bytes().to_vec()),
        ..KeyMaterial::default()
    };
    let hs = [Alg::HS256];
    let rs = [Alg::RS256];
    let es = [Alg::ES256];
    let pem_secret = secret(b"-----BEGIN PUBLIC KEY-----\nMIIBIjANBg\n-----END PUBLIC KEY-----\n");
    let indented_pem_secret =
        secret(b"\n  -----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAxxxxxxxxxxxx");
    let rsa_pem = fixture(Alg::RS256).material.public_key_pem.clone();
    let garbage_pem = b"-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n";
    let oct = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}"#;
    let x25519 = r#"{"keys":[{"kty":"OKP","crv":"X25519","x":"AAAA"}]}"#;
    let enc_key = jwks_doc(&[(Some("e1"), ec.to_jwk_public_key(), Some("enc"), None)]);
    let rs512_key = jwks_doc(&[(Some("r"), fixture_rsa_jwk(), None, Some("RS512"))]);
    let p384_key = jwks_doc(&[(None, p384.to_jwk_public_key(), None, None)]);
    let rows: Vec<(&str, &[Alg], KeyMaterial, &str)> = vec![
        (
            "short secret",
            &hs,
            secret(&[b'x'; 31]),
            "the secret is 31 bytes",
        ),
        ("PEM secret", &hs, pem_secret, "PEM document"),
        (
            "indented PEM secret",
            &hs,
            indented_pem_secret,
            "PEM document",
        ),
        (
            "secret without HS alg",
            &rs,
            secret(SECRET),
            "include no HS256",
        ),
        (
            "secret too short for HS512",
            &[Alg::HS256, Alg::HS512],
            secret(SECRET),
            "HS512 needs a secret of at least 64 bytes",
        ),
        (
            "EC PEM with RS256 only",
            &rs,
            pem(ec.to_pem_public_key()),
            "the key is EC P-256, which is used with ES256",
        ),
        (
            "P-384 PEM with ES256 only",
            &es,
            pem(p384.to_pem_public_key()),
            "EC P-384",
        ),
        (
            "RSA PEM with HS256 only",
            &hs,
            pem(rsa_pem.expect("pem")),
            "the key is RSA",
        ),
        (
            "garbage PEM",
            &rs,
            pem(garbage_pem.to_vec()),
            "unparsable PUBLIC KEY PEM",
        ),
        ("no PEM block", &rs, pem(b"hello".to_vec()), "no PEM block"),
        ("binary PEM", &rs, pem(vec![0xff, 0xfe, 0x00]), "not UTF-8"),
        (
            "private key PEM",
            &es,
            pem(ec.to_pem_private_key()),
            "private key",
        ),
        ("RSA 1024", &rs, pem(rsa_small_pem), "2048"),
        ("JWKS not json", &rs, jwks("nope"), "not a JWKS document"),
        (
            "JWKS no keys member",
            &rs,
            jwks("{}"),
            "not a JWKS document",
        ),
        (
            "JWKS empty",
            &rs,
            jwks(r#"{"keys":[]}"#),
            "the document has no keys",
        ),
        ("JWKS oct only", &hs, jwks(oct), "oct"),
        ("JWKS enc key", &es, jwks(&enc_key), "use must be sig"),
        ("JWKS alg mismatch", &rs, jwks(&rs512_key), "fits none"),
        ("JWKS curve mismatch", &es, jwks(&p384_key), "fits none"),
        (
            "JWKS X25519",
            &[Alg::EdDSA],
            jwks(x25519),
            "unsupported key type",
        ),
    ];
    for (name, algs, material, message) in rows {
        match KeySet::build(algs, &material) {
            Ok(keys) => panic!("{name}: built {keys:?}"),
            Err(e) => assert!(e.to_string().contains(message), "{name}: {e}"),
        }
    }
    // Empty material is not an error: keys may come from a JWKS URL later.
    assert!(KeySet::build(&hs, &KeyMaterial::default())
        .expect("empty")
        .is_empty());
}

fn fixture_rsa_jwk() -> Jwk {
    static JWK: OnceLock<Jwk> = OnceLock::new();
    JWK.get_or_init(|| {
        josekit::jws::RS256
            .generate_key_pair(2048)
            .expect("key")
            .to_jwk_public_key()
    })
    .clone()
}

/// A JWKS document from (kid, public JWK, use, alg) rows.
/// (kid, public JWK, `use`, `alg`) of one JWKS member.
type JwkRow<'a> = (Option<&'a str>, Jwk, Option<&'a str>, Option<&'a str>);

fn jwks_doc(keys: &[JwkRow<'_>]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(kid, jwk, key_use, alg)| {
            let mut value: Value = serde_json::from_str(&jwk.to_string()).expect("jwk json");
            if let Some(map) = value.as_object_mut() {
                if let Some(kid) = kid {
                    map.insert("kid".to_owned(), json!(kid));
                }
                if let Some(key_use) = key_use {
                    map.insert("use".to_owned(), json!(key_use));
                }
                // josekit states the generating algorithm in its JWKs; `None` removes it.
                match alg {
                    Some(alg) => map.insert("alg".to_owned(), json!(alg)),
                    None => map.remove("alg"),
                };
            }
            value
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

#[test]
fn public_key_formats() {
    let rsa = openssl::rsa::Rsa::generate(2048).expect("rsa");
    let private = PKey::from_rsa(rsa.clone()).expect("pkey");
    let spki = rsa.public_key_to_pem().expect("spki");
    let pkcs1 = rsa.public_key_to_pem_pkcs1().expect("pkcs1");
    let cert = self_signed_cert(&private);
    let ed = josekit::jws::EdDSA
        .generate_key_pair(EdCurve::Ed25519)
        .expect("ed");
    let p521 = josekit::jwk::alg::ec::EcKeyPair::generate(EcCurve::P521).expect("p521");
    // (name, PEM, allowed algorithms, algorithms the key set ends up with)
    type Row = (&'static str, Vec<u8>, Vec<Alg>, Vec<Alg>);
    let rows: Vec<Row> = vec![
        (
            "SPKI",
            spki,
            vec![Alg::RS256, Alg::PS256, Alg::HS256],
            vec![Alg::RS256, Alg::PS256],
        ),
        ("PKCS#1", pkcs1, vec![Alg::RS256], vec![Alg::RS256]),
        (
            "certificate",
            cert,
            vec![Alg::RS256, Alg::RS256, Alg::ES256],
            vec![Alg::RS256],
        ),
        (
            "Ed25519",
            ed.to_pem_public_key(),
            vec![Alg::EdDSA],
            vec![Alg::EdDSA],
        ),
        (
            "P-521",
            p521.to_pem_public_key(),
            vec![Alg::ES512, Alg::ES256],
            vec![Alg::ES512],
        ),
    ];
    for (name, pem, algs, expected) in rows {
        let material = KeyMaterial {
            public_key_pem: Some(pem),
            ..KeyMaterial::default()
        };
        let keys = KeySet::build(&algs, &material).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(keys.algorithms(), expected, "{name}");
    }
    // A token signed by the certificate's key verifies.
    let signer = josekit::jws::RS256
        .signer_from_der(private.private_key_to_der().expect("der"))
        .expect("signer");
    let material = KeyMaterial {
        public_key_pem: Some(self_signed_cert(&private)),
        ..KeyMaterial::default()
    };
    let verifier = Verifier::new(
        KeySet::build(&[Alg::RS256], &material).expect("keys"),
        Policy {
            algorithms: vec![Alg::RS256],
            ..Policy::default()
        },
    );
    let token = sign_raw(&signer, r#"{"alg":"RS256"}"#, &valid_claims().to_string());
    assert!(verifier.verify(&token, NOW).is_ok());
}

fn self_signed_cert(key: &PKey<openssl::pkey::Private>) -> Vec<u8> {
    let mut name = openssl::x509::X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", "portcullis test")
        .expect("cn");
    let name = name.build();
    let mut builder = openssl::x509::X509Builder::new().expect("builder");
    builder.set_version(2).expect("version");
    builder.set_subject_name(&name).expect("subject");
    builder.set_issuer_name(&name).expect("issuer");
    builder.set_pubkey(key).expect("pubkey");
    let not_before = openssl::asn1::Asn1Time::days_from_now(0).expect("time");
    let not_after = openssl::asn1::Asn1Time::days_from_now(1).expect("time");
    builder.set_not_before(&not_before).expect("nb");
    builder.set_not_after(&not_after).expect("na");
    builder
        .sign(key, openssl::hash::MessageDigest::sha256())
        .expect("sign");
    builder.build().to_pem().expect("pem")
}

#[test]
fn jwks_selects_by_kid() {
    let a = josekit::jws::ES256.generate_key_pair().expect("key");
    let b = josekit::jws::ES256.generate_key_pair().expect("key");
    let doc = jwks_doc(&[
        (Some("a"), a.to_jwk_public_key(), Some("sig"), Some("ES256")),
        (Some("b"), b.to_jwk_public_key(), None, None),
        // Skipped: an encryption key and a symmetric key.
        (Some("enc"), a.to_jwk_public_key(), Some("enc"), None),
    ]);
    let doc = doc.replace(
        "]}",
        r#",{"kty":"oct","kid":"s","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}"#,
    );
    let keys = KeySet::from_jwks(&[Alg::ES256, Alg::HS256], doc.as_bytes()).expect("jwks");
    assert_eq!(keys.kids(), vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(keys.len(), 2);
    let verifier = Verifier::new(
        keys,
        Policy {
            algorithms: vec![Alg::ES256],
            ..Policy::default()
        },
    );
    let sign_b = josekit::jws::ES256
        .signer_from_der(b.to_der_private_key())
        .expect("signer");
    let payload = valid_claims().to_string();
    let rows = [
        (json!({"alg": "ES256", "kid": "b"}), Ok(())),
        (
            json!({"alg": "ES256", "kid": "a"}),
            Err(Rejection::BadSignature),
        ),
        (
            json!({"alg": "ES256", "kid": "c"}),
            Err(Rejection::UnknownKey),
        ),
        (
            json!({"alg": "ES256", "kid": "B"}),
            Err(Rejection::UnknownKey),
        ),
        (
            json!({"alg": "ES256", "kid": "enc"}),
            Err(Rejection::UnknownKey),
        ),
        (json!({"alg": "ES256"}), Ok(())),
    ];
    for (header, expected) in rows {
        let token = sign_raw(&sign_b, &header.to_string(), &payload);
        assert_eq!(expect(verifier.verify(&token, NOW)), expected, "{header}");
    }
}

#[test]
fn jwks_rsa_key_without_alg_serves_every_allowed_rsa_alg() {
    let doc = jwks_doc(&[(Some("r1"), fixture_rsa_jwk(), Some("sig"), None)]);
    let keys =
        KeySet::from_jwks(&[Alg::RS256, Alg::PS256, Alg::ES256], doc.as_bytes()).expect("jwks");
    assert_eq!(keys.algorithms(), vec![Alg::RS256, Alg::PS256]);
    assert_eq!(keys.kids(), vec!["r1".to_owned()]);
    // Static keys and JWKS keys merge.
    let merged = fixture(Alg::HS256).keys().merge(keys);
    assert_eq!(merged.len(), 3);
    let material = KeyMaterial {
        secret: Some(SECRET.to_vec()),
        jwks_json: Some(doc.into_bytes()),
        ..KeyMaterial::default()
    };
    let built = KeySet::build(&[Alg::HS256, Alg::RS256], &material).expect("both");
    assert_eq!(built.algorithms(), vec![Alg::HS256, Alg::RS256]);
}

// ---------------------------------------------------------------------------------------------
// Algorithms, claims, explain

#[test]
fn alg_names() {
    for alg in Alg::ALL {
        assert_eq!(alg.name().parse::<Alg>(), Ok(alg));
        assert_eq!(alg.to_string(), alg.name());
        assert_eq!(alg.is_hmac(), alg.name().starts_with("HS"));
    }
    for none in ["none", "None", "NONE", "nOnE"] {
        assert_eq!(none.parse::<Alg>(), Err(AlgError::None));
    }
    for bad in ["hs256", "HS256 ", "", "ES256K", "RSA-OAEP"] {
        assert!(
            matches!(bad.parse::<Alg>(), Err(AlgError::Unknown(_))),
            "{bad}"
        );
    }
    let parsed: Vec<Alg> = serde_json::from_str(r#"["HS256","EdDSA"]"#).expect("json");
    assert_eq!(parsed, vec![Alg::HS256, Alg::EdDSA]);
    assert!(serde_json::from_str::<Alg>(r#""none""#).is_err());
}

#[test]
fn claims_satisfies() {
    let json = json!({
        "role": "admin",
        "roles": ["user", "admin", 7, ["nested"]],
        "level": 3,
        "verified": true,
        "nothing": null,
        "obj": {"admin": true},
    });
    let claims = Claims::new(
        (NOW, None, None),
        serde_json::to_vec(&json).expect("json"),
        "a.b.c",
    )
    .expect("claims");
    let s = |values: &[&str]| values.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>();
    let rows = [
        ("role", s(&["admin"]), true),
        ("role", s(&["user", "admin"]), true),
        ("role", s(&["Admin"]), false),
        ("role", s(&[]), false),
        ("roles", s(&["admin"]), true),
        ("roles", s(&["7"]), true),
        ("roles", s(&["nested"]), false),
        ("roles", s(&["root"]), false),
        ("level", s(&["3"]), true),
        ("level", s(&["3.0"]), false),
        ("verified", s(&["true"]), true),
        ("nothing", s(&["null"]), false),
        ("obj", s(&["admin"]), false),
        ("missing", s(&["x"]), false),
    ];
    for (name, allowed, expected) in rows {
        assert_eq!(
            claims.satisfies(name, &allowed),
            expected,
            "{name} {allowed:?}"
        );
    }
}

#[test]
fn explain_traces_every_check_without_token_text() {
    let fx = fixture(Alg::RS256);
    let verifier = fx.verifier_with(|p| {
        p.issuer = Some("iss-1".to_owned());
        p.audience = vec!["web".to_owned()];
        p.required_claims = vec![("token_type".to_owned(), vec!["access".to_owned()])];
        p.cache_entries = 8;
    });
    let claims = json!({
        "exp": NOW + 60, "iat": NOW, "iss": "iss-1", "aud": ["web"], "token_type": "access",
    });
    let token = fx.token_with(&json!({"jku": "http://127.0.0.1:9/"}), &claims.to_string());
    let (checks, result) = verifier.explain(&token, NOW);
    assert!(result.is_ok());
    let names: Vec<&str> = checks.iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            "size",
            "segments",
            "header json",
            "alg allowed",
            "crit",
            "key",
            "signature",
            "payload json",
            "exp",
            "nbf",
            "iat",
            "iss",
            "aud",
            "typ",
            "required claim",
        ]
    );
    assert!(checks.iter().all(|c| c.ok), "{checks:?}");
    assert!(checks[2].detail.contains("ignored for key choice: jku"));
    assert_no_token_text(&checks, &token);
    // explain bypasses the cache.
    assert_eq!(verifier.cached_tokens(), 0);

    // A failing claim: the trace still shows every claim check, and the result is the first.
    let expired_wrong_iss = fx.token(&json!({"exp": NOW - 3600, "iss": "other", "aud": "web"}));
    let (checks, result) = verifier.explain(&expired_wrong_iss, NOW);
    assert_eq!(expect(result), Err(Rejection::Issuer));
    let failed: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    assert_eq!(failed, ["exp", "iss", "required claim"]);
    assert_no_token_text(&checks, &expired_wrong_iss);

    // A bad signature stops before any claim is read.
    let forged = format!("{}AAAA", &token[..token.len() - 4]);
    let (checks, result) = verifier.explain(&forged, NOW);
    assert_eq!(expect(result), Err(Rejection::BadSignature));
    let last = checks.last().expect("checks");
    assert_eq!((last.name, last.ok), ("signature", false));
    assert_no_token_text(&checks, &forged);

    // Hostile header text is escaped and truncated.
    let hostile = fx.token_with(
        &json!({"kid": format!("\u{1b}[31m{}", "k".repeat(200))}),
        &valid_claims().to_string(),
    );
    let (checks, result) = verifier.explain(&hostile, NOW);
    // A static key takes any kid: the key check passes and the claims decide.
    assert_eq!(expect(result), Err(Rejection::Issuer));
    let key = checks.iter().find(|c| c.name == "key").expect("key check");
    assert!(key.ok, "{}", key.detail);
    assert!(!key.detail.contains('\u{1b}'), "{}", key.detail);
    assert!(key.detail.len() < 120, "{}", key.detail);
}

fn assert_no_token_text(checks: &[Check], token: &str) {
    for segment in token.split('.') {
        let probe = &segment[segment.len().saturating_sub(12)..];
        for check in checks {
            assert!(
                !check.detail.contains(probe),
                "{} leaks token text: {}",
                check.name,
                check.detail
            );
        }
    }
}

#[test]
fn rejection_display_is_short_and_token_free() {
    let rejections = [
        Rejection::TooLarge,
        Rejection::Malformed("empty segment"),
        Rejection::AlgorithmNotAllowed,
        Rejection::Critical,
        Rejection::UnknownKey,
        Rejection::BadSignature,
        Rejection::Expired,
        Rejection::NotYetValid,
        Rejection::IssuedInFuture,
        Rejection::BadTimeClaim("exp is missing"),
        Rejection::Issuer,
        Rejection::Audience,
        Rejection::NotAnAccessToken,
        Rejection::MissingClaim("role".to_owned()),
    ];
    for rejection in rejections {
        let text = rejection.to_string();
        assert!(!text.is_empty() && text.len() < 80, "{text}");
        assert_eq!(rejection.is_expired_only(), rejection == Rejection::Expired);
    }
}

#[test]
fn debug_output_hides_secrets() {
    let material = KeyMaterial {
        secret: Some(SECRET.to_vec()),
        ..KeyMaterial::default()
    };
    let text = format!("{material:?}");
    assert!(!text.contains("forty"), "{text}");
    let verifier = fixture(Alg::HS256).verifier();
    assert!(!format!("{verifier:?}").contains("forty"));
}

#[test]
fn arbitrary_input_never_panics() {
    // A cheap deterministic fuzz over token-shaped strings and mutations of valid tokens.
    let fx = fixture(Alg::HS256);
    let verifier = fx.verifier_with(|p| p.cache_entries = 4);
    let valid = fx.token(&valid_claims());
    let alphabet: Vec<char> = "AZaz09-_.=+/ \u{0}é{}\":[]e1".chars().collect();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..5000 {
        let mut token: Vec<char> = valid.chars().collect();
        for _ in 0..(next() % 4 + 1) {
            let at = (next() as usize) % token.len();
            let c = alphabet[(next() as usize) % alphabet.len()];
            match next() % 3 {
                0 => token[at] = c,
                1 => token.insert(at, c),
                _ => {
                    token.remove(at);
                }
            }
        }
        let token: String = token.into_iter().collect();
        let _ = verifier.verify(&token, NOW);
        let _ = verifier.explain(&token, NOW);
    }
    for payload in [
        "{\"exp\":1e999999}",
        "{\"exp\":-0}",
        "{\"exp\":-1e19}",
        "[[[[[[[[[[",
    ] {
        let token = fx.token_with(&json!({}), payload);
        assert!(verifier.verify(&token, NOW).is_err(), "{payload}");
    }
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let token = format!("{}.{}.{}", b64(&deep), b64("{}"), b64("sig"));
    assert!(verifier.verify(&token, NOW).is_err());
}

// ---------------------------------------------------------------------------------------------
// Benchmark: cargo test --release -- --ignored --nocapture bench_verify

#[test]
#[ignore = "micro-benchmark; run in release with --nocapture"]
fn bench_verify() {
    for alg in FAMILIES {
        let fx = fixture(alg);
        let token = fx.token(&json!({
            "sub": "user-1", "exp": NOW + 600, "iat": NOW, "iss": "https://api.example.com",
            "aud": "web", "roles": ["user"], "token_type": "access",
        }));
        let cold = fx.verifier();
        let n = 10_000u32;
        let start = Instant::now();
        for _ in 0..n {
            assert!(cold.verify(&token, NOW).is_ok());
        }
        let cold_ns = start.elapsed().as_nanos() / u128::from(n);

        let warm = fx.verifier_with(|p| p.cache_entries = 10_000);
        assert!(warm.verify(&token, NOW).is_ok());
        let n = 100_000u32;
        let start = Instant::now();
        for _ in 0..n {
            assert!(warm.verify(&token, NOW).is_ok());
        }
        let hit_ns = start.elapsed().as_nanos() / u128::from(n);
        println!(
            "{alg:>6}: cold {cold_ns:>7} ns/op, cache hit {hit_ns:>4} ns/op ({} byte token)",
            token.len()
        );
    }
}

#[test]
fn a_static_key_with_jwt_kid_selects_exactly() {
    for alg in FAMILIES {
        let fx = fixture(alg);
        let material = KeyMaterial {
            kid: Some("backend-2026".to_owned()),
            ..fx.material.clone()
        };
        let verifier = Verifier::new(KeySet::build(&[alg], &material).expect("keys"), fx.policy());
        let claims = valid_claims().to_string();
        for (header, verdict) in [
            (json!({"kid": "backend-2026"}), Ok(())),
            (json!({}), Ok(())),
            (json!({"kid": "backend-2025"}), Err(Rejection::UnknownKey)),
            (
                json!({"kid": "../../etc/passwd"}),
                Err(Rejection::UnknownKey),
            ),
        ] {
            let token = fx.token_with(&header, &claims);
            assert_eq!(
                expect(verifier.verify(&token, NOW)),
                verdict,
                "{alg} {header}"
            );
        }
        // Without jwt.kid the same key takes any kid; a forged signature is still refused,
        // as an unknown key when the kid is one no key carries (a JWKS refetch may find it).
        let any = fx.verifier();
        let token = fx.token_with(&json!({"kid": "backend-2025"}), &claims);
        assert_eq!(expect(any.verify(&token, NOW)), Ok(()), "{alg}");
        let forged = format!("{}AAAA", &token[..token.len() - 4]);
        assert_eq!(
            expect(any.verify(&forged, NOW)),
            Err(Rejection::UnknownKey),
            "{alg}"
        );
        let forged_no_kid = {
            let t = fx.token_with(&json!({}), &claims);
            format!("{}AAAA", &t[..t.len() - 4])
        };
        assert_eq!(
            expect(any.verify(&forged_no_kid, NOW)),
            Err(Rejection::BadSignature),
            "{alg}"
        );
    }
}

/// ES256, ES384 and Ed25519 keys are checked by ring, from a PEM and from a JWK alike; the
/// others stay with josekit. Either way a genuine signature verifies and a flipped bit, a
/// signature of the other curve's length or one cut short does not.
#[test]
fn ring_checks_p256_p384_and_ed25519_whichever_way_the_key_comes() {
    /// A fresh key pair of a josekit algorithm family, and a signer with its private key.
    macro_rules! generated {
        ($family:ident $(, $arg:expr)?) => {{
            let pair = josekit::jws::$family.generate_key_pair($($arg)?).expect("key");
            let signer: Box<dyn JwsSigner> = Box::new(
                josekit::jws::$family
                    .signer_from_der(pair.to_der_private_key())
                    .expect("signer"),
            );
            (Box::new(pair) as Box<dyn KeyPair>, signer)
        }};
    }
    let rows = [
        (Alg::ES256, generated!(ES256), true),
        (Alg::ES384, generated!(ES384), true),
        (Alg::ES512, generated!(ES512), false),
        (Alg::EdDSA, generated!(EdDSA, EdCurve::Ed25519), true),
        (Alg::EdDSA, generated!(EdDSA, EdCurve::Ed448), false),
        (Alg::RS256, generated!(RS256, 2048), false),
    ];
    let policy = |alg| Policy {
        algorithms: vec![alg],
        leeway_secs: LEEWAY,
        ..Policy::default()
    };
    for (alg, (pair, signer), by_ring) in rows {
        let pem = KeyMaterial {
            public_key_pem: Some(pair.to_pem_public_key()),
            ..KeyMaterial::default()
        };
        let jwks = KeyMaterial {
            jwks_json: Some(
                jwks_doc(&[(Some("k1"), pair.to_jwk_public_key(), Some("sig"), None)]).into_bytes(),
            ),
            ..KeyMaterial::default()
        };
        let header = json!({"alg": alg.name(), "kid": "k1"}).to_string();
        let token = sign_raw(signer.as_ref(), &header, &valid_claims().to_string());
        let (input, signature) = token.rsplit_once('.').expect("three segments");
        let signature = URL_SAFE_NO_PAD.decode(signature).expect("signature");
        let mut flipped = signature.clone();
        flipped[7] ^= 1;
        let forged = [
            flipped,
            signature[..signature.len() - 1].to_vec(),
            [signature.as_slice(), &[0]].concat(),
        ];
        for (how, material) in [("PEM", &pem), ("JWK", &jwks)] {
            let keys = KeySet::build(&[alg], material).expect("keys");
            let check = &keys.entries[0].check;
            assert_eq!(
                matches!(check, KeyCheck::Ring(_)),
                by_ring,
                "{alg} from a {how}: checked by ring"
            );
            let verifier = Verifier::new(keys, policy(alg));
            assert!(verifier.verify(&token, NOW).is_ok(), "{alg} from a {how}");
            for signature in &forged {
                let token = format!("{input}.{}", b64(signature));
                assert!(verifier.verify(&token, NOW).is_err(), "{alg} from a {how}");
            }
        }
    }
}

/// The RS* check takes exactly one encoding of a signature: a block made with the key's
/// private half that is anything else (another hash's `DigestInfo`, the parameters left out,
/// a byte more, the right `DigestInfo` of the wrong digest) is refused, as is a signature one
/// byte longer or shorter than the modulus; josekit's verifier agrees on every one, and on
/// every one-bit change of a good signature. Keys from PEM and from a JWKS both get it.
#[test]
fn rsa_signatures_have_one_encoding() {
    use openssl::rsa::Padding;
    const SHA256_INFO: [u8; 19] = [
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    let fx = fixture(Alg::RS256);
    let private = PKey::private_key_from_der(fx.private_der.as_deref().expect("der"))
        .expect("private key")
        .rsa()
        .expect("RSA");
    let sign_block = |block: &[u8]| {
        let mut out = vec![0u8; private.size() as usize];
        let len = private
            .private_encrypt(block, &mut out, Padding::PKCS1)
            .expect("sign");
        out.truncate(len);
        out
    };
    let message = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEifQ";
    let digest = openssl::sha::sha256(message);
    let encoded = |info: &[u8], digest: &[u8], extra: &[u8]| [info, digest, extra].concat();

    let keys = KeySet::build(&[Alg::RS256], &fx.material).expect("keys");
    let [entry] = keys.entries.as_slice() else {
        panic!("one entry")
    };
    assert!(matches!(entry.check, KeyCheck::Rsa(_)), "a PEM RSA key");
    let josekit = josekit::jws::RS256
        .verifier_from_pem(fx.material.public_key_pem.as_deref().expect("pem"))
        .expect("josekit verifier");
    let judge = |signature: &[u8]| {
        let ours = entry.check.verify(message, signature);
        let theirs = josekit.verify(message, signature).is_ok();
        assert_eq!(ours, theirs, "ours and josekit's disagree");
        ours
    };

    let good = sign_block(&encoded(&SHA256_INFO, &digest, &[]));
    assert!(judge(&good), "the one encoding");

    let mut sha1_info = vec![
        0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14,
    ];
    sha1_info.extend_from_slice(&openssl::sha::sha1(message));
    let mut no_null = vec![
        0x30, 0x2f, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x04, 0x20,
    ];
    no_null.extend_from_slice(&digest);
    let mut sha384_info = vec![
        0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
        0x05, 0x00, 0x04, 0x30,
    ];
    sha384_info.extend_from_slice(&openssl::sha::sha384(message));
    let other_digest = openssl::sha::sha256(b"another message");
    for (what, block) in [
        ("SHA-1's DigestInfo", sha1_info),
        ("no NULL parameters", no_null),
        ("SHA-384's DigestInfo", sha384_info),
        ("a byte after", encoded(&SHA256_INFO, &digest, &[0])),
        ("another digest", encoded(&SHA256_INFO, &other_digest, &[])),
        ("the bare digest", digest.to_vec()),
    ] {
        assert!(!judge(&sign_block(&block)), "{what}");
    }
    assert!(!judge(&[&[0u8][..], &good].concat()), "a byte longer");
    assert!(!judge(&good[1..]), "a byte shorter");
    assert!(!judge(&[]), "empty");
    for bit in (0..good.len() * 8).step_by(7) {
        let mut flipped = good.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert!(!judge(&flipped), "bit {bit} flipped");
    }

    let jwk = fixture_rsa_jwk();
    let jwks = jwks_doc(&[(Some("r"), jwk, None, None)]);
    let keys =
        KeySet::from_jwks(&[Alg::RS256, Alg::RS512, Alg::PS256], jwks.as_bytes()).expect("jwks");
    let kinds: Vec<(Alg, bool)> = keys
        .entries
        .iter()
        .map(|entry| (entry.alg, matches!(entry.check, KeyCheck::Rsa(_))))
        .collect();
    assert_eq!(
        kinds,
        [(Alg::RS256, true), (Alg::RS512, true), (Alg::PS256, false)],
        "RS* from a JWK take the RSA check, PS* stays josekit's"
    );
}
