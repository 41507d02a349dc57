//! Route guards over real sockets: every row of SECURITY.md's JWT table for HS256, RS256,
//! ES256 and EdDSA, the redirect / 401 / 403 decisions, what the upstream receives on an
//! admitted request, `/auth/me`, and keys from `jwks_file` and `jwks_url` (rotation, refresh,
//! outage, readiness).
//!
//! A denial is always checked the same way ([`Guard::assert_denied`]): `401` JSON with
//! `WWW-Authenticate: Bearer` for an API request, `302` to `/login?next=<path and query>` for a
//! page navigation, and the upstream never contacted.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::future::join_all;
use josekit::jwk::alg::rsa::RsaKeyPair;
use josekit::jws::JwsSigner;
use serde_json::{json, Value};

use crate::support::keys::{b64, now, raw_token, sign_hmac, TestKey};
use crate::support::proxy::{self, proxy, proxy_with_admin, Proxy};
use crate::support::{backend, raw, upstream, Req, Resp, Upstream};

/// The algorithms every table runs for.
const ALGS: [&str; 4] = ["HS256", "RS256", "ES256", "EdDSA"];

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "web";

/// Route table shared by most tests: API rules answer 401/403, pages redirect.
const ROUTES: &str = r#"
[login]
success_redirect = "/dashboard"

[[routes]]
path = "/api/admin/:path*"
auth = "required"
on_unauthenticated = "status"
claims = { role = "admin" }
upstream = "app"

[[routes]]
path = "/api/team/:path*"
auth = "required"
on_unauthenticated = "status"
claims = { role = ["admin", "editor"] }
upstream = "app"

[[routes]]
path = "/api/groups/:path*"
auth = "required"
on_unauthenticated = "status"
claims = { groups = "ops" }
upstream = "app"

[[routes]]
path = "/api/:path*"
auth = "required"
on_unauthenticated = "status"
headers = { "X-User-Id" = "sub", "X-User-Email" = "email", "X-Tenant" = "tenant" }
upstream = "app"

[[routes]]
path = "/dashboard/:path*"
auth = "required"
upstream = "app"

[[routes]]
path = "/page/:path*"
auth = "required"
on_unauthenticated = "redirect"
upstream = "app"

[[routes]]
path = "/login"
auth = "guest"
upstream = "app"

[[routes]]
path = "/:path*"
upstream = "app"
"#;

/// The API request of [`Guard::assert_denied`] and the login redirect its page twin gets.
const API: &str = "/api/items?id=7";
const PAGE: &str = "/dashboard/reports?tab=2&q=a%20b";
const PAGE_LOGIN: &str = "/login?next=%2Fdashboard%2Freports%3Ftab%3D2%26q%3Da%2520b";

/// A proxy guarding a recording upstream with one key.
struct Guard {
    key: TestKey,
    up: Upstream,
    proxy: Proxy,
}

impl Guard {
    async fn start(alg: &str) -> Guard {
        let key = TestKey::new(alg);
        let up = upstream().run().await;
        let jwt = format!(
            "{}issuer = {ISSUER:?}\naudience = {AUDIENCE:?}\nleeway = \"30s\"\n",
            key.jwt_toml()
        );
        let proxy = proxy(&proxy::config(&up.url(), &jwt, ROUTES)).await;
        Guard { key, up, proxy }
    }

    fn alg(&self) -> &str {
        self.key.alg()
    }

    fn token(&self) -> String {
        self.key.sign(good_claims())
    }

    fn token_with(&self, name: &str, value: Value) -> String {
        self.key.sign(with(good_claims(), name, value))
    }

    async fn get(&self, path: &str, cookie: &str) -> Resp {
        Req::get(&self.proxy.url(path)).cookie(cookie).send().await
    }

    /// `GET path` as a browser navigation.
    async fn navigate(&self, path: &str, cookie: &str) -> Resp {
        Req::get(&self.proxy.url(path))
            .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
            .cookie(cookie)
            .send()
            .await
    }

    /// The token in the access cookie is refused as an API call and as a page navigation,
    /// and nothing reaches the upstream.
    async fn assert_denied(&self, token: &str, what: &str) {
        let what = format!("{} {what}", self.alg());
        let before = self.up.requests();
        let cookie = format!("access_token={token}");
        let api = self.get(API, &cookie).await;
        assert_eq!(api.status, 401, "{what}: API answer {}", api.text());
        assert_eq!(api.header("www-authenticate"), Some("Bearer"), "{what}");
        assert_eq!(api.json()["error"], "unauthenticated", "{what}");
        let page = self.navigate(PAGE, &cookie).await;
        assert_eq!(page.status, 302, "{what}: page answer {}", page.text());
        assert_eq!(page.location(), Some(PAGE_LOGIN), "{what}");
        assert_eq!(self.up.requests(), before, "{what}: reached the upstream");
    }

    /// The token is admitted: `200` from the upstream, which got it as the bearer token.
    async fn assert_admitted(&self, cookie_value: &str, bearer: &str, what: &str) {
        let what = format!("{} {what}", self.alg());
        let resp = self.get(API, &format!("access_token={cookie_value}")).await;
        assert_eq!(resp.status, 200, "{what}: {}", resp.text());
        let seen = self.up.last().expect("forwarded");
        assert_eq!(
            seen.header_all("authorization"),
            [format!("Bearer {bearer}")],
            "{what}"
        );
    }
}

/// Runs `test` for every algorithm in [`ALGS`] at once.
async fn for_each_alg<F, Fut>(test: F)
where
    F: Fn(&'static str) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    join_all(ALGS.map(test)).await;
}

/// Claims every check accepts.
fn good_claims() -> Value {
    let now = now();
    json!({
        "sub": "alice",
        "email": "alice@example.com",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
    })
}

/// `claims` with `name` set to `value`, or removed when `value` is `null`.
fn with(mut claims: Value, name: &str, value: Value) -> Value {
    let map = claims.as_object_mut().expect("claims are an object");
    if value.is_null() {
        map.remove(name);
    } else {
        map.insert(name.to_owned(), value);
    }
    claims
}

/// `claims` as JSON text with `name` replaced by the JSON `literal`, written as is (so that
/// it can be a number no JSON library would produce).
fn with_literal(claims: &Value, name: &str, literal: &str) -> String {
    let text = with(claims.clone(), name, Value::Null).to_string();
    format!("{},\"{name}\":{literal}}}", &text[..text.len() - 1])
}

/// An HS256 token keyed with any bytes, even fewer than josekit accepts (the empty key that
/// `kid: "/dev/null"` attacks hope for).
fn hs256_any_key(secret: &[u8], header: Value, claims: &Value) -> String {
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
fn signer(key: &TestKey, alg: &str) -> Box<dyn JwsSigner> {
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
fn sign_segments(key: &TestKey, alg: &str, header: &str, payload: &str) -> String {
    let message = format!("{header}.{payload}");
    let signature = signer(key, alg)
        .sign(message.as_bytes())
        .expect("signing succeeds");
    format!("{message}.{}", b64(signature))
}

/// The default header of `key`'s tokens, as compact JSON text.
fn header_text(alg: &str, extra: Value) -> String {
    let mut header = json!({"alg": alg, "typ": "JWT"});
    for (name, value) in extra.as_object().expect("object").clone() {
        header[name] = value;
    }
    header.to_string()
}

/// `segment` with `=` padding added (it must not be a multiple of 4 long).
fn padded(segment: &str) -> String {
    let missing = (4 - segment.len() % 4) % 4;
    assert!(missing > 0, "segment needs no padding");
    format!("{segment}{}", "=".repeat(missing))
}

/// `segment` with an unused low bit of its last character set: a lenient decoder reads the
/// same bytes, a strict one refuses it.
fn non_canonical(segment: &str) -> String {
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
fn segments(token: &str) -> [&str; 3] {
    let parts: Vec<&str> = token.split('.').collect();
    parts.try_into().expect("three segments")
}

/// Every forged, malformed, mistyped or otherwise unacceptable token for `g`'s key: one entry
/// per case of SECURITY.md's JWT table and its variants.
fn attacks(g: &Guard, jwks_url: &str, up_url: &str) -> Vec<(String, String)> {
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

    // kid is an exact-match lookup: injection text finds nothing, with any signature.
    for kid in [
        "../../../../../../dev/null",
        "/dev/null",
        "..%2f..%2fetc%2fpasswd",
        "' OR '1'='1",
        "x' UNION SELECT 'secret' --",
        "$(curl http://127.0.0.1:9/)",
        "`id`; rm -rf /",
        "",
    ] {
        add(
            &format!("kid {kid:?} with the right key"),
            key.sign_with_header(json!({"kid": kid}), claims.clone()),
        );
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
fn controls(g: &Guard, jwks_url: &str) -> Vec<(String, String)> {
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
    if let Some(secret) = key.secret() {
        cases.push((
            "hand-made HMAC".to_owned(),
            hs256_any_key(secret, json!({}), &good_claims()),
        ));
    }
    cases
}

#[tokio::test]
async fn every_jwt_attack_is_denied_for_every_algorithm() {
    for_each_alg(|alg| async move {
        let g = Guard::start(alg).await;
        let attacker = TestKey::new(alg);
        let jwks_host = backend(&attacker).run().await;
        let cases = attacks(&g, &jwks_host.jwks_url(), &g.up.url());
        assert!(cases.len() > 100, "{alg}: only {} cases", cases.len());
        for (what, token) in &cases {
            g.assert_denied(token, what).await;
        }
        assert_eq!(
            g.up.requests(),
            0,
            "{alg}: a forged token reached the upstream"
        );
        assert_eq!(
            jwks_host.jwks_fetches(),
            0,
            "{alg}: a token header made the proxy fetch keys"
        );
    })
    .await;
}

#[tokio::test]
async fn attack_controls_are_admitted() {
    for_each_alg(|alg| async move {
        let g = Guard::start(alg).await;
        let jwks_host = backend(&TestKey::new(alg)).run().await;
        for (what, token) in controls(&g, &jwks_host.jwks_url()) {
            g.assert_admitted(&token, &token, &what).await;
        }
        // A quoted cookie value is the same cookie.
        let token = g.token();
        g.assert_admitted(&format!("\"{token}\""), &token, "quoted cookie")
            .await;
        assert_eq!(jwks_host.jwks_fetches(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_refresh_token_from_the_backend_is_not_an_access_token() {
    for_each_alg(|alg| async move {
        let g = Guard::start(alg).await;
        let issuer = backend(&g.key)
            .issuer(ISSUER)
            .audience(AUDIENCE)
            .run()
            .await;
        let refresh = issuer.mint_refresh("alice@example.com");
        g.assert_denied(&refresh, "backend refresh token").await;
        let access = issuer.mint_access("alice@example.com", 300);
        g.assert_admitted(&access, &access, "backend access token")
            .await;
    })
    .await;
}

#[tokio::test]
async fn required_claims_tell_an_id_token_from_an_access_token() {
    let key = TestKey::new("RS256");
    let up = upstream().run().await;
    let jwt = format!("{}claims = {{ token_type = \"access\" }}\n", key.jwt_toml());
    let p = proxy(&proxy::config(&up.url(), &jwt, ROUTES)).await;
    let exp = now() + 300;
    let id_token = key.sign(json!({"sub": "alice", "exp": exp, "nonce": "n"}));
    let access = key.sign(json!({"sub": "alice", "exp": exp, "token_type": "access"}));
    let id = Req::get(&p.url(API))
        .cookie(&format!("access_token={id_token}"))
        .send()
        .await;
    assert_eq!(id.status, 401);
    assert_eq!(up.requests(), 0);
    let ok = Req::get(&p.url(API))
        .cookie(&format!("access_token={access}"))
        .send()
        .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn oversized_tokens_get_431_before_decoding() {
    let g = Guard::start("HS256").await;
    for size in [64 << 10, 1 << 20] {
        let token = format!("{}.{}", g.token(), "A".repeat(size));
        for header in [
            format!("Cookie: access_token={token}\r\n"),
            format!("Cookie: theme=dark\r\nCookie: access_token={token}\r\n"),
            format!("Authorization: Bearer {token}\r\n"),
        ] {
            let request = format!(
                "GET {API} HTTP/1.1\r\nHost: site.example\r\n{header}Connection: close\r\n\r\n"
            );
            let answer =
                raw::send(g.proxy.addr(), request.as_bytes(), Duration::from_secs(5)).await;
            assert_eq!(
                raw::status_codes(&answer).first().copied(),
                Some(431),
                "{size}-byte header"
            );
        }
    }
    // Over HTTP/2 the header list limit holds too.
    let big = format!("access_token={}", "A".repeat(64 << 10));
    // A refused stream is also fine: nothing was decoded or forwarded.
    if let Ok(resp) = Req::get(&g.proxy.url(API))
        .cookie(&big)
        .try_send_h2c()
        .await
    {
        assert_eq!(resp.status, 431, "h2 64 KiB cookie");
    }
    // Between the token limit (8 KiB) and the header limit: a plain 401, never a 500.
    let mid = format!("{}.{}", g.token(), "A".repeat(16 << 10));
    g.assert_denied(&mid, "16 KiB token").await;
    assert_eq!(g.up.requests(), 0);
}

#[tokio::test]
async fn the_token_is_read_from_the_access_cookie_only() {
    for_each_alg(|alg| async move {
        let g = Guard::start(alg).await;
        let token = g.token();
        let denied: Vec<(&str, Req)> = vec![
            (
                "Authorization header instead of the cookie",
                Req::get(&g.proxy.url(API)).header("authorization", &format!("Bearer {token}")),
            ),
            (
                "cookie name in other case",
                Req::get(&g.proxy.url(API)).cookie(&format!("Access_Token={token}")),
            ),
            (
                "cookie name upper case",
                Req::get(&g.proxy.url(API)).cookie(&format!("ACCESS_TOKEN={token}")),
            ),
            (
                "another cookie name",
                Req::get(&g.proxy.url(API)).cookie(&format!("token={token}")),
            ),
            (
                "the refresh cookie",
                Req::get(&g.proxy.url(API)).cookie(&format!("refresh_token={token}")),
            ),
            (
                "empty access cookie",
                Req::get(&g.proxy.url(API)).cookie("access_token="),
            ),
            (
                "first of two access cookies is garbage",
                Req::get(&g.proxy.url(API))
                    .cookie(&format!("access_token=x.y.z; access_token={token}")),
            ),
            (
                "token in the query",
                Req::get(&g.proxy.url(&format!("/api/items?access_token={token}"))),
            ),
        ];
        for (what, req) in denied {
            let resp = req.send().await;
            assert_eq!(resp.status, 401, "{alg} {what}");
        }
        assert_eq!(g.up.requests(), 0, "{alg}");

        // Admitted: the first access cookie wins, in one Cookie header or split across two,
        // and every copy is removed from what the upstream sees.
        let first_wins = Req::get(&g.proxy.url(API))
            .cookie(&format!(
                "access_token={token}; access_token=x.y.z; theme=dark"
            ))
            .send()
            .await;
        assert_eq!(first_wins.status, 200, "{alg}");
        let seen = g.up.last().expect("forwarded");
        assert_eq!(
            seen.header_all("authorization"),
            [format!("Bearer {token}")]
        );
        assert_eq!(seen.header_all("cookie"), ["theme=dark"], "{alg}");
        let split = Req::get(&g.proxy.url(API))
            .header("cookie", "theme=dark")
            .header("cookie", &format!("access_token={token}"))
            .send()
            .await;
        assert_eq!(split.status, 200, "{alg}");
        let seen = g.up.last().expect("forwarded");
        assert_eq!(seen.header_all("cookie").join("; "), "theme=dark", "{alg}");
    })
    .await;
}

#[tokio::test]
async fn unauthenticated_requests_are_redirected_or_refused_per_rule() {
    let g = Guard::start("HS256").await;
    let nav = "text/html,application/xhtml+xml,*/*;q=0.8";
    // (path, headers, expected status)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16);
    let cases: Vec<Case<'_>> = vec![
        // redirect: always a redirect, even for an API-looking request.
        ("/page/x", vec![], 302),
        ("/page/x", vec![("accept", "application/json")], 302),
        ("/page/x", vec![("x-requested-with", "XMLHttpRequest")], 302),
        // status: always 401, even for a navigation.
        ("/api/x", vec![("accept", nav)], 401),
        (
            "/api/x",
            vec![("sec-fetch-mode", "navigate"), ("accept", nav)],
            401,
        ),
        ("/api/admin/x", vec![("accept", nav)], 401),
        // auto: navigations redirect, everything else is an API call.
        ("/dashboard", vec![], 401),
        ("/dashboard", vec![("accept", "*/*")], 401),
        ("/dashboard", vec![("accept", "application/json")], 401),
        ("/dashboard", vec![("accept", nav)], 302),
        ("/dashboard", vec![("accept", "TEXT/HTML")], 302),
        (
            "/dashboard",
            vec![("accept", nav), ("x-requested-with", "XMLHttpRequest")],
            401,
        ),
        ("/dashboard", vec![("sec-fetch-mode", "navigate")], 302),
        (
            "/dashboard",
            vec![("sec-fetch-mode", "navigate"), ("accept", "*/*")],
            302,
        ),
        (
            "/dashboard",
            vec![("sec-fetch-mode", "cors"), ("accept", nav)],
            401,
        ),
        (
            "/dashboard",
            vec![("sec-fetch-mode", "no-cors"), ("accept", nav)],
            401,
        ),
    ];
    for (path, headers, want) in cases {
        for h2 in [false, true] {
            let mut req = Req::get(&g.proxy.url(path));
            for (name, value) in &headers {
                req = req.header(name, value);
            }
            let resp = if h2 {
                req.send_h2c().await
            } else {
                req.send().await
            };
            assert_eq!(resp.status, want, "{path} {headers:?} h2={h2}");
            if want == 401 {
                assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
                assert_eq!(resp.json()["error"], "unauthenticated");
            } else {
                let next = format!("/login?next={}", path.replace('/', "%2F"));
                assert_eq!(resp.location(), Some(next.as_str()), "{path}");
            }
        }
    }
    assert_eq!(g.up.requests(), 0);
}

#[tokio::test]
async fn the_login_redirect_carries_the_normalized_path_and_query() {
    let g = Guard::start("HS256").await;
    for (sent, next) in [
        ("/dashboard", "/dashboard"),
        (
            "/dashboard/reports?tab=2&q=a%20b",
            "/dashboard/reports?tab=2&q=a%20b",
        ),
        (
            "/page/x?next=//evil.example&a=1",
            "/page/x?next=//evil.example&a=1",
        ),
        (
            "/dashboard/../dashboard/./a//b?x=%2F",
            "/dashboard/a/b?x=%2F",
        ),
        ("/%64ashboard/caf%C3%A9", "/dashboard/caf%C3%A9"),
    ] {
        let resp = g.navigate(sent, "").await;
        assert_eq!(resp.status, 302, "{sent}");
        let location = resp.location().expect("a Location");
        let query = location
            .strip_prefix("/login?")
            .unwrap_or_else(|| panic!("{sent}: redirected to {location}"));
        let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(params, [("next".to_owned(), next.to_owned())], "{sent}");
        assert!(
            !query[5..].contains(['/', '?', '&', ' ']),
            "{sent}: next is not encoded: {location}"
        );
    }
    assert_eq!(g.up.requests(), 0);
}

#[tokio::test]
async fn claims_rules_answer_403_as_json() {
    for_each_alg(|alg| async move {
        let g = Guard::start(alg).await;
        // (path, claim, value, admitted)
        let cases = [
            ("/api/admin/x", "role", json!("admin"), true),
            ("/api/admin/x", "role", json!("user"), false),
            ("/api/admin/x", "role", json!("Admin"), false),
            ("/api/admin/x", "role", json!(["user", "admin"]), true),
            ("/api/admin/x", "role", json!(["user"]), false),
            ("/api/admin/x", "role", json!([]), false),
            ("/api/admin/x", "role", json!(null), false),
            ("/api/admin/x", "role", json!({"admin": true}), false),
            ("/api/admin/x", "role", json!(1), false),
            ("/api/admin/x", "roles", json!("admin"), false),
            ("/api/team/x", "role", json!("editor"), true),
            ("/api/team/x", "role", json!("admin"), true),
            ("/api/team/x", "role", json!("viewer"), false),
            ("/api/team/x", "role", json!(["viewer", "editor"]), true),
            ("/api/groups/x", "groups", json!(["dev", "ops"]), true),
            ("/api/groups/x", "groups", json!("ops"), true),
            ("/api/groups/x", "groups", json!(["dev"]), false),
            ("/api/groups/x", "groups", json!(["dev", ["ops"]]), false),
        ];
        for (path, claim, value, admitted) in cases {
            let before = g.up.requests();
            let token = g.token_with(claim, value.clone());
            for h2 in [false, true] {
                let req = Req::get(&g.proxy.url(path)).cookie(&format!("access_token={token}"));
                let resp = if h2 {
                    req.send_h2c().await
                } else {
                    req.send().await
                };
                let what = format!("{alg} {path} {claim}={value} h2={h2}");
                if admitted {
                    assert_eq!(resp.status, 200, "{what}");
                } else {
                    assert_eq!(resp.status, 403, "{what}");
                    assert_eq!(resp.json()["error"], "forbidden", "{what}");
                    assert_eq!(
                        resp.header("content-type"),
                        Some("application/json"),
                        "{what}"
                    );
                }
            }
            let forwarded = g.up.requests() - before;
            assert_eq!(forwarded, if admitted { 2 } else { 0 }, "{path} {value}");
        }
        // Unauthenticated on a claims rule is still 401, not 403.
        let resp = g.get("/api/admin/x", "").await;
        assert_eq!(resp.status, 401);
    })
    .await;
}

#[tokio::test]
async fn a_signed_in_user_is_sent_away_from_guest_pages() {
    for_each_alg(|alg| async move {
        let g = Guard::start(alg).await;
        let signed_in = g
            .navigate("/login", &format!("access_token={}", g.token()))
            .await;
        assert_eq!(signed_in.status, 302, "{alg}");
        assert_eq!(signed_in.location(), Some("/dashboard"));
        assert_eq!(g.up.requests(), 0);
        let expired = g.token_with("exp", json!(now() - 3600));
        let forged = TestKey::new(alg).sign(good_claims());
        for cookie in [
            String::new(),
            format!("access_token={expired}"),
            format!("access_token={forged}"),
        ] {
            let resp = g.navigate("/login?next=%2Fdashboard", &cookie).await;
            assert_eq!(resp.status, 200, "{alg} guest page with {cookie:?}");
        }
        assert_eq!(g.up.requests(), 3);
    })
    .await;
}

#[tokio::test]
async fn the_upstream_sees_one_bearer_and_none_of_the_proxys_cookies() {
    for_each_alg(|alg| async move {
        let g = Guard::start(alg).await;
        let token = g.token_with("tenant", json!("acme"));
        for h2 in [false, true] {
            let req = Req::get(&g.proxy.url("/api/items?id=7"))
                .cookie(&format!(
                    "theme=dark; access_token={token}; refresh_token=r.r.r; lang=en"
                ))
                .header("authorization", "Bearer forged.by.client")
                .header("authorization", "Basic YWxpY2U6c2VjcmV0")
                .header("x-user-id", "root")
                .header("x_user_id", "root")
                .header("X-User-Email", "root@evil.example")
                .header("x_user_email", "root@evil.example")
                .header("x-user-role", "admin")
                .header("x_user_role", "admin")
                .header("x-auth-request-user", "root")
                .header("x_auth_request_email", "root@evil.example")
                .header("x-forwarded-user", "root")
                .header("x_forwarded_user", "root")
                .header("x-forwarded-email", "root@evil.example")
                .header("x-tenant", "evil")
                .header("x_tenant", "evil")
                .header("connection", "Authorization, X-User-Id, X-Tenant");
            let resp = if h2 {
                // HTTP/2 forbids connection-specific headers; send the rest.
                Req::get(&g.proxy.url("/api/items?id=7"))
                    .cookie(&format!(
                        "theme=dark; access_token={token}; refresh_token=r.r.r; lang=en"
                    ))
                    .header("authorization", "Bearer forged.by.client")
                    .header("x-user-id", "root")
                    .header("x_user_id", "root")
                    .header("x-tenant", "evil")
                    .header("x_tenant", "evil")
                    .header("x-forwarded-user", "root")
                    .send_h2c()
                    .await
            } else {
                req.send().await
            };
            assert_eq!(resp.status, 200, "{alg} h2={h2}: {}", resp.text());
            let seen = g.up.last().expect("forwarded");
            let what = format!("{alg} h2={h2}");
            assert_eq!(
                seen.header_all("authorization"),
                [format!("Bearer {token}")],
                "{what}"
            );
            assert_eq!(seen.header_all("x-user-id"), ["alice"], "{what}");
            assert_eq!(
                seen.header_all("x-user-email"),
                ["alice@example.com"],
                "{what}"
            );
            assert_eq!(seen.header_all("x-tenant"), ["acme"], "{what}");
            assert_eq!(
                seen.header_all("cookie").join("; "),
                "theme=dark; lang=en",
                "{what}"
            );
            for (name, _) in &seen.headers {
                let canonical = name.replace('_', "-");
                assert!(
                    !(canonical.starts_with("x-auth-")
                        || canonical == "x-user-role"
                        || canonical == "x-forwarded-user"
                        || canonical == "x-forwarded-email"
                        || name.contains('_')),
                    "{what}: spoofed {name} reached the upstream"
                );
            }
        }
        // A claim that is absent leaves its header out rather than forwarding the client's.
        let resp = Req::get(&g.proxy.url(API))
            .cookie(&format!("access_token={}", g.token()))
            .header("x-tenant", "evil")
            .send()
            .await;
        assert_eq!(resp.status, 200);
        assert!(g.up.last().expect("forwarded").header("x-tenant").is_none());
        // Configured identity headers are stripped on public rules too.
        let public = Req::get(&g.proxy.url("/public/x"))
            .header("x-tenant", "evil")
            .header("x_user_id", "root")
            .header("x-user-id", "root")
            .send()
            .await;
        assert_eq!(public.status, 200);
        let seen = g.up.last().expect("forwarded");
        assert!(seen.header("x-tenant").is_none(), "{alg}");
        assert!(seen.header("x-user-id").is_none(), "{alg}");
        assert!(seen.header("x_user_id").is_none(), "{alg}");
    })
    .await;
}

#[tokio::test]
async fn http2_gets_the_same_decisions() {
    for_each_alg(|alg| async move {
        let g = Guard::start(alg).await;
        let forged = raw_token(
            &json!({"alg": "none"}).to_string(),
            &good_claims().to_string(),
            b"",
        );
        let confused = g
            .key
            .public_pem()
            .map(|pem| sign_hmac("HS256", pem, json!({}), good_claims()));
        let mut refused = vec![forged, TestKey::new(alg).sign(good_claims())];
        refused.extend(confused);
        for token in &refused {
            let cookie = format!("access_token={token}");
            let api = Req::get(&g.proxy.url(API)).cookie(&cookie).send_h2c().await;
            assert_eq!(api.status, 401, "{alg} h2 API");
            let page = Req::get(&g.proxy.url(PAGE))
                .header("sec-fetch-mode", "navigate")
                .cookie(&cookie)
                .send_h2c()
                .await;
            assert_eq!(page.status, 302, "{alg} h2 page");
            assert_eq!(page.location(), Some(PAGE_LOGIN));
        }
        assert_eq!(g.up.requests(), 0, "{alg}");
        let token = g.token();
        let ok = Req::get(&g.proxy.url(API))
            .cookie(&format!("access_token={token}"))
            .send_h2c()
            .await;
        assert_eq!(ok.status, 200);
        let seen = g.up.last().expect("forwarded");
        assert_eq!(
            seen.header_all("authorization"),
            [format!("Bearer {token}")]
        );
        let me = Req::get(&g.proxy.url("/auth/me"))
            .cookie(&format!("access_token={token}"))
            .send_h2c()
            .await;
        assert_eq!(me.status, 200);
        assert_eq!(me.json()["sub"], "alice");
    })
    .await;
}

#[tokio::test]
async fn auth_me_returns_the_verified_claims() {
    for_each_alg(|alg| async move {
        let g = Guard::start(alg).await;
        let claims = with(good_claims(), "role", json!(["a", "b"]));
        let token = g.key.sign(claims.clone());
        let me = g.get("/auth/me", &format!("access_token={token}")).await;
        assert_eq!(me.status, 200, "{alg}");
        assert_eq!(me.header("content-type"), Some("application/json"));
        assert_eq!(me.json(), claims, "{alg}");
        let expired = g.token_with("exp", json!(now() - 3600));
        let none = raw_token(
            &json!({"alg": "none"}).to_string(),
            &claims.to_string(),
            b"",
        );
        for cookie in [
            String::new(),
            format!("access_token={expired}"),
            format!("access_token={none}"),
            format!("access_token={}", TestKey::new(alg).sign(good_claims())),
        ] {
            let resp = Req::get(&g.proxy.url("/auth/me"))
                .header("accept", "text/html")
                .cookie(&cookie)
                .send()
                .await;
            assert_eq!(resp.status, 401, "{alg} /auth/me with {cookie:?}");
            assert_eq!(resp.json()["error"], "unauthenticated");
        }
        assert_eq!(g.up.requests(), 0);
    })
    .await;
}

// ---- Keys from files and URLs -------------------------------------------------------------

/// The asymmetric algorithms (a JWKS never carries HMAC secrets).
const JWKS_ALGS: [&str; 3] = ["RS256", "ES256", "EdDSA"];

fn jwks_url_toml(alg: &str, url: &str, refresh: &str) -> String {
    format!("[jwt]\nalgorithms = [{alg:?}]\njwks_url = {url:?}\njwks_refresh = {refresh:?}\n")
}

/// GETs `path` on the admin listener and returns the status.
async fn admin_status(admin: SocketAddr, path: &str) -> u16 {
    Req::get(&format!("http://{admin}{path}"))
        .send()
        .await
        .status
}

/// Waits (polling) until `/readyz` answers 200; panics after 10 s.
async fn wait_ready(admin: SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while admin_status(admin, "/readyz").await != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the proxy never became ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn api_status(p: &Proxy, token: &str) -> u16 {
    Req::get(&p.url(API))
        .cookie(&format!("access_token={token}"))
        .send()
        .await
        .status
}

fn claims_plain() -> Value {
    json!({"sub": "alice", "exp": now() + 300})
}

#[tokio::test]
async fn jwks_file_keys_are_selected_by_kid() {
    join_all(JWKS_ALGS.map(|alg| async move {
        let key = TestKey::with_kid(alg, "file-key");
        let up = upstream().run().await;
        let p = proxy(&proxy::config(&up.url(), &key.jwt_jwks_toml(), ROUTES)).await;
        assert_eq!(
            api_status(&p, &key.sign(claims_plain())).await,
            200,
            "{alg}"
        );
        let no_kid = key.sign_with_header(json!({"kid": null}), claims_plain());
        assert_eq!(api_status(&p, &no_kid).await, 200, "{alg} without kid");
        for kid in ["other", "FILE-KEY", "file-key ", "../file-key"] {
            let token = key.sign_with_header(json!({"kid": kid}), claims_plain());
            assert_eq!(api_status(&p, &token).await, 401, "{alg} kid {kid}");
        }
        let foreign = TestKey::with_kid(alg, "file-key").sign(claims_plain());
        assert_eq!(
            api_status(&p, &foreign).await,
            401,
            "{alg} same kid, other key"
        );
        assert_eq!(up.requests(), 2);
    }))
    .await;
}

#[tokio::test]
async fn jwks_url_rotation_is_picked_up_through_an_unknown_kid() {
    join_all(JWKS_ALGS.map(|alg| async move {
        let k1 = TestKey::with_kid(alg, "k1");
        let k2 = TestKey::with_kid(alg, "k2");
        let k3 = TestKey::with_kid(alg, "k3");
        let keys = backend(&k1).run().await;
        let up = upstream().run().await;
        // The periodic refresh is far away: only start-up and unknown kids fetch here.
        let (p, admin) = proxy_with_admin(&proxy::config(
            &up.url(),
            &jwks_url_toml(alg, &keys.jwks_url(), "1h"),
            ROUTES,
        ))
        .await;
        wait_ready(admin).await;
        assert_eq!(keys.jwks_fetches(), 1, "{alg}: one fetch at start-up");
        assert_eq!(
            api_status(&p, &k1.sign(claims_plain())).await,
            200,
            "{alg} k1"
        );

        keys.rotate_key(&k2);
        assert_eq!(
            api_status(&p, &k2.sign(claims_plain())).await,
            200,
            "{alg} k2 after rotation"
        );
        assert_eq!(keys.jwks_fetches(), 2, "{alg}: one refetch for the new kid");
        assert_eq!(
            api_status(&p, &k1.sign(claims_plain())).await,
            200,
            "{alg} k1 still listed"
        );
        assert_eq!(api_status(&p, &k2.sign(claims_plain())).await, 200);
        assert_eq!(keys.jwks_fetches(), 2, "{alg}: known kids never fetch");

        // Within the minute, unknown kids (a further rotation, or forgeries) fetch nothing more.
        keys.rotate_key(&k3);
        for _ in 0..5 {
            assert_eq!(
                api_status(&p, &k3.sign(claims_plain())).await,
                401,
                "{alg} k3"
            );
            let forged = TestKey::with_kid(alg, "random").sign(claims_plain());
            assert_eq!(api_status(&p, &forged).await, 401);
        }
        assert_eq!(
            keys.jwks_fetches(),
            2,
            "{alg}: at most one refetch per minute"
        );
        assert_eq!(up.requests(), 4);
    }))
    .await;
}

#[tokio::test]
async fn jwks_url_refresh_drops_removed_keys_and_survives_bad_answers() {
    join_all(JWKS_ALGS.map(|alg| async move {
        let k1 = TestKey::with_kid(alg, "k1");
        let k2 = TestKey::with_kid(alg, "k2");
        let keys = backend(&k1).run().await;
        keys.set_jwks(json!({"keys": [k1.jwk(), k2.jwk()]}));
        let up = upstream().run().await;
        let (p, admin) = proxy_with_admin(&proxy::config(
            &up.url(),
            &jwks_url_toml(alg, &keys.jwks_url(), "50ms"),
            ROUTES,
        ))
        .await;
        wait_ready(admin).await;
        assert_eq!(api_status(&p, &k1.sign(claims_plain())).await, 200, "{alg}");
        assert_eq!(api_status(&p, &k2.sign(claims_plain())).await, 200, "{alg}");

        // Bad answers keep the last good set: not a JWKS, no usable key, a wrong key type.
        for bad in [
            json!("not a jwks"),
            json!({"keys": []}),
            json!({"keys": [{"kty": "oct", "kid": "k1", "k": "c2VjcmV0"}]}),
        ] {
            keys.set_jwks(bad.clone());
            // Fetch n+1 is the first to see the new document; once n+2 arrives, n+1 has been
            // handled (fetches never overlap).
            let n = keys.jwks_fetches();
            keys.wait_for_jwks_fetches(n + 2).await;
            assert_eq!(
                api_status(&p, &k1.sign(claims_plain())).await,
                200,
                "{alg} after {bad}"
            );
            assert_eq!(admin_status(admin, "/readyz").await, 200);
        }

        // A key removed from the JWKS is refused after the next refresh.
        keys.set_jwks(json!({"keys": [k2.jwk()]}));
        let n = keys.jwks_fetches();
        keys.wait_for_jwks_fetches(n + 2).await;
        assert_eq!(
            api_status(&p, &k1.sign(claims_plain())).await,
            401,
            "{alg} removed k1"
        );
        assert_eq!(
            api_status(&p, &k2.sign(claims_plain())).await,
            200,
            "{alg} k2"
        );

        // The refresh stops with the proxy.
        p.stop().await.expect("clean shutdown");
        let n = keys.jwks_fetches();
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(
            keys.jwks_fetches() <= n + 1,
            "{alg}: JWKS fetched after shutdown"
        );
    }))
    .await;
}

#[tokio::test]
async fn a_jwks_outage_keeps_the_last_good_keys() {
    join_all(JWKS_ALGS.map(|alg| async move {
        let k1 = TestKey::with_kid(alg, "k1");
        let keys = backend(&k1).run().await;
        let up = upstream().run().await;
        let (p, admin) = proxy_with_admin(&proxy::config(
            &up.url(),
            &jwks_url_toml(alg, &keys.jwks_url(), "1h"),
            ROUTES,
        ))
        .await;
        wait_ready(admin).await;
        assert_eq!(api_status(&p, &k1.sign(claims_plain())).await, 200, "{alg}");
        let gone = keys.addr();
        drop(keys);
        // Wait until the JWKS server's port refuses connections.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(gone).await.is_ok() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the JWKS server never stopped"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // An unknown kid makes the proxy refetch now; the JWKS server is gone.
        let unknown = TestKey::with_kid(alg, "k2").sign(claims_plain());
        assert_eq!(api_status(&p, &unknown).await, 401, "{alg}");
        assert_eq!(
            api_status(&p, &k1.sign(claims_plain())).await,
            200,
            "{alg} k1 kept"
        );
        assert_eq!(
            admin_status(admin, "/readyz").await,
            200,
            "{alg} still ready"
        );
    }))
    .await;
}

#[tokio::test]
async fn without_jwks_keys_the_proxy_serves_but_is_not_ready() {
    let alg = "ES256";
    let key = TestKey::with_kid(alg, "k1");
    let keys = backend(&key).run().await;
    keys.set_jwks(json!({"keys": []}));
    let up = upstream().run().await;
    let (p, admin) = proxy_with_admin(&proxy::config(
        &up.url(),
        &jwks_url_toml(alg, &keys.jwks_url(), "50ms"),
        ROUTES,
    ))
    .await;
    keys.wait_for_jwks_fetches(1).await;
    assert_eq!(admin_status(admin, "/healthz").await, 200);
    assert_eq!(admin_status(admin, "/readyz").await, 503);
    let resp = Req::get(&p.url(API))
        .cookie(&format!("access_token={}", key.sign(claims_plain())))
        .send()
        .await;
    assert_eq!(resp.status, 401, "tokens are refused, not a 500");
    assert_eq!(Req::get(&p.url("/public")).send().await.status, 200);
    // The keys appear: the retry loads them and the proxy becomes ready.
    keys.set_jwks(key.jwks());
    wait_ready(admin).await;
    assert_eq!(api_status(&p, &key.sign(claims_plain())).await, 200);

    // A JWKS server that is down from the start does not stop the proxy either.
    let down = backend(&key).fault(crate::support::Fault::Down).run().await;
    let (p, admin) = proxy_with_admin(&proxy::config(
        &up.url(),
        &jwks_url_toml(alg, &down.jwks_url(), "5m"),
        ROUTES,
    ))
    .await;
    assert_eq!(admin_status(admin, "/readyz").await, 503);
    assert_eq!(api_status(&p, &key.sign(claims_plain())).await, 401);
    assert_eq!(Req::get(&p.url("/public")).send().await.status, 200);
}

#[tokio::test]
async fn static_keys_stay_alongside_jwks_url_keys() {
    let file_key = TestKey::new("ES256");
    let url_key = TestKey::with_kid("ES256", "remote");
    let keys = backend(&url_key).run().await;
    let up = upstream().run().await;
    let jwt = format!(
        "{}jwks_url = {:?}\njwks_refresh = \"50ms\"\n",
        file_key.jwt_toml(),
        keys.jwks_url()
    );
    let (p, admin) = proxy_with_admin(&proxy::config(&up.url(), &jwt, ROUTES)).await;
    wait_ready(admin).await;
    assert_eq!(api_status(&p, &file_key.sign(claims_plain())).await, 200);
    assert_eq!(api_status(&p, &url_key.sign(claims_plain())).await, 200);
    // The URL's keys go away; the configured PEM key stays.
    keys.set_jwks(json!({"keys": [TestKey::with_kid("ES256", "other").jwk()]}));
    let n = keys.jwks_fetches();
    keys.wait_for_jwks_fetches(n + 2).await;
    assert_eq!(api_status(&p, &url_key.sign(claims_plain())).await, 401);
    assert_eq!(api_status(&p, &file_key.sign(claims_plain())).await, 200);
}

#[tokio::test]
async fn a_guest_page_never_breaks_a_session_that_needs_renewal() {
    let key = TestKey::new("HS256");
    // The backend rotates refresh tokens: using one revokes it.
    let issuer = backend(&key).run().await;
    let up = upstream().run().await;
    let p = proxy(&proxy::config(
        &up.url(),
        &key.jwt_toml(),
        &format!("{}\n{ROUTES}", issuer.backend_toml()),
    ))
    .await;
    let user = crate::support::backend::DEFAULT_USER;
    let mut jar = crate::support::CookieJar::new();
    jar.set("access_token", &issuer.mint_access(user, -3600));
    jar.set("refresh_token", &issuer.mint_refresh(user));

    // The login page, visited with an expired access token and a good refresh token.
    let login = Req::get(&p.url("/login"))
        .header("accept", "text/html")
        .jar(&jar)
        .send()
        .await;
    jar.apply(&login);
    let refreshes = issuer.refreshes();
    // Whatever the login page did, the browser's cookies still make a working session.
    let dashboard = Req::get(&p.url("/dashboard"))
        .header("accept", "text/html")
        .jar(&jar)
        .send()
        .await;
    assert_eq!(
        dashboard.status,
        200,
        "the session broke after a guest page (login answered {} {:?}, {refreshes} refresh call(s))",
        login.status,
        login.location()
    );
}

#[tokio::test]
async fn a_non_ascii_cookie_neither_hides_nor_leaks_the_session() {
    let g = Guard::start("HS256").await;
    let token = g.token();
    // Browsers send a site's UTF-8 cookie values as raw bytes.
    let line = format!("Cookie: lang=caf\u{e9}; access_token={token}; refresh_token=r.r.r\r\n");
    for path in [API, "/public/x"] {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: site.example\r\n{line}Connection: close\r\n\r\n");
        let answer = raw::send(g.proxy.addr(), request.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(raw::status_codes(&answer), [200], "{path}");
        let seen = g.up.last().expect("forwarded");
        assert_eq!(seen.header_all("cookie"), ["lang=caf\u{e9}"], "{path}");
    }
    let seen = g.up.all();
    assert_eq!(
        seen[0].header_all("authorization"),
        [format!("Bearer {token}")]
    );
}
