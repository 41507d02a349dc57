//! Hand-made tokens: every attack of the token table of docs/security.md (and its variants) for one
//! key, the controls built the same way with nothing wrong, and the signing helpers they need.

use josekit::jwk::alg::rsa::RsaKeyPair;
use josekit::jws::JwsSigner;
use serde_json::{json, Value};

use super::{good_claims, with, Guard, AUDIENCE, ISSUER};
use crate::support::keys::{b64, now, raw_token, sign_hmac, TestKey};

/// `claims` as JSON text with `name` replaced by the JSON `literal`, written as is (so that
/// it can be a number no JSON library would produce).
pub(super) fn with_literal(claims: &Value, name: &str, literal: &str) -> String {
    let text = with(claims.clone(), name, Value::Null).to_string();
    format!("{},\"{name}\":{literal}}}", &text[..text.len() - 1])
}

/// An HS256 token keyed with any bytes, even fewer than josekit accepts (the empty key that
/// `kid: "/dev/null"` attacks hope for).
pub(super) fn hs256_any_key(secret: &[u8], header: Value, claims: &Value) -> String {
    use openssl::hash::{hash, MessageDigest};
    const BLOCK: usize = 64;
    let header = header_text("HS256", header);
    let message = format!("{}.{}", b64(&header), b64(claims.to_string()));
    let mut key = [0u8; BLOCK];
    key[..secret.len()].copy_from_slice(secret);
    let pad = |byte: u8| key.iter().map(|k| k ^ byte).collect::<Vec<u8>>();
    let digest = |data: &[u8]| {
        hash(MessageDigest::sha256(), data)
            .expect("sha256")
            .to_vec()
    };
    let inner = digest(&[pad(0x36), message.as_bytes().to_vec()].concat());
    let mac = digest(&[pad(0x5c), inner].concat());
    format!("{message}.{}", b64(mac))
}

/// A signer for `key`'s own algorithm or, for an RSA key, another RSA algorithm: for tokens
/// whose structure [`TestKey`] would not produce (padded segments, other algorithms).
pub(super) fn signer(key: &TestKey, alg: &str) -> Box<dyn JwsSigner> {
    use josekit::jws::{EdDSA, ES256, HS256, PS256, PS384, PS512, RS256, RS384, RS512};
    const WHY: &str = "a generated key loads into a signer";
    if let Some(secret) = key.secret() {
        return Box::new(HS256.signer_from_bytes(secret).expect(WHY));
    }
    let pem = key.private_pem().expect("an asymmetric key");
    let rsa_jwk = || {
        RsaKeyPair::from_pem(pem)
            .expect("an RSA private key")
            .to_jwk_private_key()
    };
    match alg {
        "RS256" => Box::new(RS256.signer_from_jwk(&rsa_jwk()).expect(WHY)),
        "RS384" => Box::new(RS384.signer_from_jwk(&rsa_jwk()).expect(WHY)),
        "RS512" => Box::new(RS512.signer_from_jwk(&rsa_jwk()).expect(WHY)),
        "PS256" => Box::new(PS256.signer_from_jwk(&rsa_jwk()).expect(WHY)),
        "PS384" => Box::new(PS384.signer_from_jwk(&rsa_jwk()).expect(WHY)),
        "PS512" => Box::new(PS512.signer_from_jwk(&rsa_jwk()).expect(WHY)),
        "ES256" => Box::new(ES256.signer_from_pem(pem).expect(WHY)),
        "EdDSA" => Box::new(EdDSA.signer_from_pem(pem).expect(WHY)),
        other => panic!("no signer for {other}"),
    }
}

/// `header_segment.payload_segment.signature` with the signature made by `key` over exactly
/// those segments, whatever their encoding.
pub(super) fn sign_segments(key: &TestKey, alg: &str, header: &str, payload: &str) -> String {
    let message = format!("{header}.{payload}");
    let signature = signer(key, alg)
        .sign(message.as_bytes())
        .expect("signing succeeds");
    format!("{message}.{}", b64(signature))
}

/// The default header of `key`'s tokens, as compact JSON text.
pub(super) fn header_text(alg: &str, extra: Value) -> String {
    let mut header = json!({"alg": alg, "typ": "JWT"});
    for (name, value) in extra.as_object().expect("object").clone() {
        header[name] = value;
    }
    header.to_string()
}

/// `segment` with `=` padding added (it must not be a multiple of 4 long).
pub(super) fn padded(segment: &str) -> String {
    let missing = (4 - segment.len() % 4) % 4;
    assert!(missing > 0, "segment needs no padding");
    format!("{segment}{}", "=".repeat(missing))
}

/// `segment` with an unused low bit of its last character set: a lenient decoder reads the
/// same bytes, a strict one refuses it.
pub(super) fn non_canonical(segment: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    assert!(
        segment.len() % 4 != 0,
        "a full final quantum has no unused bits"
    );
    let last = *segment.as_bytes().last().expect("non-empty");
    let index = ALPHABET.iter().position(|&c| c == last).expect("base64url");
    let mut out = segment[..segment.len() - 1].to_owned();
    out.push(char::from(ALPHABET[index ^ 1]));
    out
}

/// The three segments of a compact token.
pub(super) fn segments(token: &str) -> [&str; 3] {
    let parts: Vec<&str> = token.split('.').collect();
    parts.try_into().expect("three segments")
}

/// Every forged, malformed, mistyped or otherwise unacceptable token for `g`'s key: one entry
/// per case of the token table of docs/security.md and its variants.
pub(super) fn attacks(g: &Guard, jwks_url: &str, up_url: &str) -> Vec<(String, String)> {
    let key = &g.key;
    let alg = key.alg();
    let claims = good_claims();
    let claims_text = claims.to_string();
    let good = g.token();
    let [good_h, good_p, good_s] = segments(&good);
    let mut cases: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, token: String| cases.push((name.to_owned(), token));

    // alg none, every spelling, with the signature emptied, kept, or dropped.
    for none in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": none, "typ": "JWT"}).to_string();
        add(
            &format!("alg {none}, empty signature"),
            raw_token(&header, &claims_text, b""),
        );
        add(
            &format!("alg {none}, original signature"),
            format!("{}.{good_p}.{good_s}", b64(&header)),
        );
        add(
            &format!("alg {none}, two segments"),
            format!("{}.{good_p}", b64(&header)),
        );
    }
    add(
        "good header, signature emptied",
        format!("{good_h}.{good_p}."),
    );
    add(
        "alg missing",
        key.sign_with_header(json!({"alg": null}), claims.clone()),
    );
    add(
        "alg not a string",
        key.sign_with_header(json!({"alg": 256}), claims.clone()),
    );

    // Algorithm confusion: the public key's PEM bytes as an HMAC secret.
    if let Some(pem) = key.public_pem() {
        for hmac in ["HS256", "HS384", "HS512"] {
            add(
                &format!("{hmac} signed with the PEM public key"),
                sign_hmac(hmac, pem, json!({}), claims.clone()),
            );
        }
        let trimmed = String::from_utf8_lossy(pem).trim().to_owned();
        add(
            "HS256 signed with the trimmed PEM",
            sign_hmac("HS256", trimmed.as_bytes(), json!({}), claims.clone()),
        );
    }

    // Algorithms outside the allowlist, signed with the right key where the key allows it.
    match alg {
        "HS256" => {
            let secret = key.secret().expect("HMAC key");
            for other in ["HS384", "HS512"] {
                add(
                    &format!("{other} with the right secret"),
                    sign_hmac(other, secret, json!({}), claims.clone()),
                );
            }
        }
        "RS256" => {
            for other in ["RS384", "RS512", "PS256", "PS384", "PS512"] {
                let header = b64(header_text(other, json!({})));
                add(
                    &format!("{other} with the right key"),
                    sign_segments(key, other, &header, &b64(&claims_text)),
                );
            }
        }
        _ => {}
    }
    for renamed in [
        alg.to_ascii_lowercase(),
        format!("{alg} "),
        "ES384".to_owned(),
    ] {
        if renamed != alg {
            add(
                &format!("alg renamed {renamed:?}"),
                key.sign_with_header(json!({"alg": renamed}), claims.clone()),
            );
        }
    }

    // Zero and out-of-range signatures ("psychic signatures", CVE-2022-21449).
    let header = header_text(alg, json!({}));
    let natural_len = match alg {
        "HS256" => 32,
        "RS256" => 256,
        _ => 64,
    };
    add(
        "signature of zero bytes",
        raw_token(&header, &claims_text, &vec![0; natural_len]),
    );
    add("one zero byte", raw_token(&header, &claims_text, &[0]));
    if alg == "ES256" {
        let order: [u8; 32] = [
            0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2,
            0xfc, 0x63, 0x25, 0x51,
        ];
        add(
            "ES256 r = s = n",
            raw_token(&header, &claims_text, &[order, order].concat()),
        );
        add(
            "ES256 DER r = s = 0",
            raw_token(&header, &claims_text, &[0x30, 6, 2, 1, 0, 2, 1, 0]),
        );
        let mut one = vec![0u8; 64];
        one[31] = 1;
        one[63] = 1;
        add("ES256 r = s = 1", raw_token(&header, &claims_text, &one));
    }

    // Another key of the same algorithm, alone and with every key-carrying header.
    let attacker = TestKey::with_kid(alg, "attacker");
    add("signed by another key", attacker.sign(claims.clone()));
    let cert = rcgen::generate_simple_self_signed(vec!["attacker.example".to_owned()])
        .expect("self-signed certificate");
    let x5c = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, cert.cert.der());
    for (name, header) in [
        ("jku to the attacker's JWKS", json!({"jku": jwks_url})),
        (
            "jku to the upstream",
            json!({"jku": format!("{up_url}/jwks.json")}),
        ),
        ("x5u to the attacker's JWKS", json!({"x5u": jwks_url})),
        ("embedded jwk", json!({"jwk": attacker.jwk()})),
        ("x5c", json!({"x5c": [x5c]})),
        (
            "jku, x5u and jwk together",
            json!({"jku": jwks_url, "x5u": jwks_url, "jwk": attacker.jwk()}),
        ),
    ] {
        add(name, attacker.sign_with_header(header, claims.clone()));
    }

    // kid text is never used as a path, a query or a command: injection text opens no other
    // key, so only a signature by the configured key counts (those are in `controls`: the
    // static key here takes any kid).
    for kid in HOSTILE_KIDS {
        add(
            &format!("kid {kid:?}, HS256 with an empty secret"),
            hs256_any_key(b"", json!({"kid": kid}), &claims),
        );
    }
    add(
        "kid SQL, HS256 with the injected secret",
        hs256_any_key(
            b"secret",
            json!({"kid": "x' UNION SELECT 'secret' --"}),
            &claims,
        ),
    );
    add(
        "kid not a string",
        key.sign_with_header(json!({"kid": 7}), claims.clone()),
    );

    // crit, whatever it holds.
    for crit in [
        json!([]),
        json!(["exp"]),
        json!(["b64"]),
        json!("exp"),
        json!([7]),
        json!({}),
    ] {
        let mut header = json!({"crit": crit});
        if crit == json!(["b64"]) {
            header["b64"] = json!(false);
        }
        add(
            &format!("crit {crit}"),
            key.sign_with_header(header, claims.clone()),
        );
    }

    // Time claims.
    let now = now();
    add("no exp", key.sign(with(claims.clone(), "exp", Value::Null)));
    add("exp past leeway", g.token_with("exp", json!(now - 31 - 5)));
    add("exp long past", g.token_with("exp", json!(now - 86_400)));
    add("exp 0", g.token_with("exp", json!(0)));
    add("nbf in the future", g.token_with("nbf", json!(now + 120)));
    add("iat in the future", g.token_with("iat", json!(now + 120)));
    let bad_times = [
        ("a string", json!((now + 300).to_string())),
        ("an empty string", json!("")),
        ("true", json!(true)),
        ("false", json!(false)),
        ("null", json!(null)),
        ("negative", json!(-1)),
        ("very negative", json!(i64::MIN)),
        ("a float", json!(now as f64 + 300.5)),
        ("1e19 as a float", json!(1e19)),
        ("10^19", json!(10_000_000_000_000_000_000_u64)),
        ("u64::MAX", json!(u64::MAX)),
        ("2^53", json!(1_u64 << 53)),
        ("an array", json!([now + 300])),
        ("an object", json!({"t": now + 300})),
    ];
    for claim in ["exp", "nbf", "iat"] {
        for (what, value) in &bad_times {
            add(
                &format!("{claim} {what}"),
                key.sign_raw(
                    &header_text(alg, json!({})),
                    &with_literal(&claims, claim, &value.to_string()),
                ),
            );
        }
        for literal in ["18446744073709551616", "1e400", "1E19", "9007199254740993"] {
            add(
                &format!("{claim} literal {literal}"),
                key.sign_raw(
                    &header_text(alg, json!({})),
                    &with_literal(&claims, claim, literal),
                ),
            );
        }
    }

    // Issuer and audience.
    add(
        "wrong iss",
        g.token_with("iss", json!("https://evil.example")),
    );
    add("iss missing", g.token_with("iss", Value::Null));
    add("iss in an array", g.token_with("iss", json!([ISSUER])));
    add(
        "iss with a trailing slash",
        g.token_with("iss", json!(format!("{ISSUER}/"))),
    );
    add("aud missing", g.token_with("aud", Value::Null));
    add("aud not ours", g.token_with("aud", json!("api")));
    add(
        "aud array without ours",
        g.token_with("aud", json!(["api", "mobile"])),
    );
    add("aud empty array", g.token_with("aud", json!([])));
    add("aud a number", g.token_with("aud", json!(1)));
    add(
        "aud array with a non-string",
        g.token_with("aud", json!([AUDIENCE, 1])),
    );
    add("aud different case", g.token_with("aud", json!("WEB")));

    // Structure and encoding.
    add("one segment", good_h.to_owned());
    add("two segments", format!("{good_h}.{good_p}"));
    add("four segments", format!("{good}.{good_s}"));
    add("five segments", format!("{good}.{good_s}.{good_s}"));
    add("leading dot", format!(".{good}"));
    add("trailing dot", format!("{good}."));
    let jwe_header = b64(r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#);
    add(
        "JWE, five segments",
        format!(
            "{jwe_header}.{}.{}.{}.{}",
            b64([1; 256]),
            b64([2; 12]),
            good_p,
            b64([3; 16])
        ),
    );
    add(
        "JWE dir, empty key segment",
        format!(
            "{}..{}.{good_p}.{}",
            b64(r#"{"alg":"dir","enc":"A128GCM"}"#),
            b64([2; 12]),
            b64([3; 16])
        ),
    );
    add(
        "JWE header, three segments",
        format!("{jwe_header}.{good_p}.{good_s}"),
    );
    add(
        "nested JWT (cty JWT) around a good token",
        key.sign_raw(&header_text(alg, json!({"cty": "JWT"})), &good),
    );
    add(
        "cty JWT with good claims",
        key.sign_with_header(json!({"cty": "JWT"}), claims.clone()),
    );
    add("header not JSON", key.sign_raw("not json", &claims_text));
    add("header a JSON array", key.sign_raw("[]", &claims_text));
    add(
        "header a JSON string",
        key.sign_raw("\"JWT\"", &claims_text),
    );
    add(
        "header with trailing text",
        key.sign_raw(&format!("{}x", header_text(alg, json!({}))), &claims_text),
    );
    add(
        "payload not JSON",
        key.sign_raw(&header_text(alg, json!({})), "exp=9999999999"),
    );
    add(
        "payload a JSON array",
        key.sign_raw(&header_text(alg, json!({})), "[]"),
    );
    add("signature not base64", format!("{good_h}.{good_p}.!!!!"));
    add(
        "signature padded",
        format!("{good_h}.{good_p}.{}", padded(good_s)),
    );
    add(
        "signature non-canonical",
        format!("{good_h}.{good_p}.{}", non_canonical(good_s)),
    );
    if good_s.contains(['-', '_']) {
        add(
            "signature in the standard alphabet",
            format!(
                "{good_h}.{good_p}.{}",
                good_s.replace('-', "+").replace('_', "/")
            ),
        );
    }
    // Header and payload re-encoded, then signed over exactly those bytes by the right key,
    // so only the encoding is wrong.
    let header_b64 = {
        // Grow the header until its encoding has a partial final quantum.
        let mut pad = String::new();
        loop {
            let text = header_text(alg, json!({"x": pad}));
            if b64(&text).len() % 4 != 0 {
                break b64(&text);
            }
            pad.push('a');
        }
    };
    let payload_b64 = {
        let mut pad = String::new();
        loop {
            let text = with(claims.clone(), "x", json!(pad)).to_string();
            if b64(&text).len() % 4 != 0 {
                break b64(&text);
            }
            pad.push('a');
        }
    };
    let signed = |h: &str, p: &str| sign_segments(key, alg, h, p);
    add(
        "header padded, signed",
        signed(&padded(&header_b64), &payload_b64),
    );
    add(
        "payload padded, signed",
        signed(&header_b64, &padded(&payload_b64)),
    );
    add(
        "header non-canonical, signed",
        signed(&non_canonical(&header_b64), &payload_b64),
    );
    add(
        "payload non-canonical, signed",
        signed(&header_b64, &non_canonical(&payload_b64)),
    );
    add(
        "payload standard base64 with padding, signed",
        signed(
            &header_b64,
            &base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                with(claims.clone(), "x", json!("??>>??>>")).to_string(),
            ),
        ),
    );
    add("cookie holding 'Bearer <token>'", format!("Bearer {good}"));
    add("empty-looking token", "null".to_owned());
    add("dots only", "..".to_owned());
    add(
        "signed token over 8 KiB",
        g.token_with("filler", json!("f".repeat(9 * 1024))),
    );

    // Token kinds: a refresh or ID token is not an access token.
    for (name, value) in [
        ("typ", "refresh"),
        ("typ", "Refresh"),
        ("typ", "refresh_token"),
        ("typ", "id"),
        ("typ", "ID_TOKEN"),
        ("token_type", "refresh"),
        ("token_type", "refresh_token"),
        ("token_type", "id_token"),
    ] {
        add(
            &format!("claim {name} = {value:?}"),
            g.token_with(name, json!(value)),
        );
    }
    for typ in ["refresh+jwt", "application/refresh+jwt", "id+jwt"] {
        add(
            &format!("header typ {typ:?}"),
            key.sign_with_header(json!({"typ": typ}), claims.clone()),
        );
    }
    cases
}

/// Tokens [`attacks`] builds as controls: same constructions, nothing wrong. They prove the
/// denials are about the attack, not the harness.
/// `kid` values that would read a file, inject SQL or run a command if a key were looked up
/// by them anywhere but in the configured key set.
const HOSTILE_KIDS: [&str; 8] = [
    "../../../../../../dev/null",
    "/dev/null",
    "..%2f..%2fetc%2fpasswd",
    "' OR '1'='1",
    "x' UNION SELECT 'secret' --",
    "$(curl http://127.0.0.1:9/)",
    "`id`; rm -rf /",
    "",
];

pub(super) fn controls(g: &Guard, jwks_url: &str) -> Vec<(String, String)> {
    let key = &g.key;
    let now = now();
    let mut cases = vec![
        ("good token".to_owned(), g.token()),
        (
            "aud as an array holding ours".to_owned(),
            g.token_with("aud", json!(["api", AUDIENCE])),
        ),
        (
            "exp just past, within leeway".to_owned(),
            g.token_with("exp", json!(now - 10)),
        ),
        (
            "nbf and iat slightly ahead, within leeway".to_owned(),
            key.sign(with(
                with(good_claims(), "nbf", json!(now + 10)),
                "iat",
                json!(now + 10),
            )),
        ),
        (
            "typ access".to_owned(),
            g.token_with("token_type", json!("access")),
        ),
        (
            "jku, x5u and jwk ignored on a genuine token".to_owned(),
            key.sign_with_header(
                json!({"jku": jwks_url, "x5u": jwks_url, "jwk": TestKey::new(key.alg()).jwk()}),
                good_claims(),
            ),
        ),
    ];
    let signed = sign_segments(
        key,
        key.alg(),
        &b64(header_text(key.alg(), json!({}))),
        &b64(with(good_claims(), "x", json!("aa")).to_string()),
    );
    cases.push(("re-signed by the test signer".to_owned(), signed));
    // A static key configured without jwt.kid verifies a token whatever kid it names, as
    // jose's jwtVerify(token, secret), PyJWT and HAProxy do; the kid text is never used.
    for kid in HOSTILE_KIDS.into_iter().chain(["backend-key-2026"]) {
        cases.push((
            format!("kid {kid:?} signed by the configured key"),
            key.sign_with_header(json!({"kid": kid}), good_claims()),
        ));
    }
    if let Some(secret) = key.secret() {
        cases.push((
            "hand-made HMAC".to_owned(),
            hs256_any_key(secret, json!({}), &good_claims()),
        ));
    }
    cases
}
