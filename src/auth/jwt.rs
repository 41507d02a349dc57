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
//! by exact `alg` and `kid`, among keys that configuration already paired with that algorithm
//! (a static key configured without `jwt.kid` is tried whatever `kid` a token names).
//! Header `jku`, `x5u`, `x5c` and `jwk` are never used and nothing is ever fetched.
//!
//! **Invariant:** [`Rejection::Expired`] is returned only when the signature and every other
//! check passed, so an expired token may safely be taken as proof of a session to refresh.

use std::fmt;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use http::HeaderValue;
use serde_json::{Map, Value};

mod cache;
mod keys;
mod parse;
#[cfg(test)]
mod tests;

use cache::Cache;
pub use keys::*;
use parse::{Audience, Json};

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

/// What a cache entry costs besides its token (the key, and again in the claims' `Bearer`
/// value) and claims text (kept, and parsed into a map taking roughly twice its space when a
/// rule asks for one): the map slot and the `Arc`.
const CACHE_ENTRY_OVERHEAD: usize = 192;

/// `typ` / `token_type` values that mark a token which must never be used as an access token.
const NON_ACCESS_TYPES: [&str; 4] = ["refresh", "refresh_token", "id", "id_token"];

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
///
/// Verifying reads only the claims it checks (`exp`, `nbf`, `iat`, `iss`, `aud`, the token
/// kind); the map of every claim — for rules' `claims`, identity headers, `/auth/me`,
/// `jwt.claims`, revocations — is parsed from the payload's text the first time something
/// asks for it, once per cached token.
#[derive(Clone)]
pub struct Claims {
    exp: u64,
    nbf: Option<u64>,
    iat: Option<u64>,
    /// The payload's JSON text, as signed (a JSON object: verifying parsed it).
    json: Box<[u8]>,
    map: OnceLock<Map<String, Value>>,
    /// `Bearer <token>`, made once when the token was verified: a cache hit then forwards the
    /// token without copying or checking its bytes again.
    bearer: HeaderValue,
}

impl fmt::Debug for Claims {
    // The bearer value is the token itself: it must never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field("exp", &self.exp)
            .field("nbf", &self.nbf)
            .field("iat", &self.iat)
            .field("claims", &self.json.len())
            .finish_non_exhaustive()
    }
}

impl PartialEq for Claims {
    fn eq(&self, other: &Claims) -> bool {
        (self.exp, self.nbf, self.iat, &self.json, &self.bearer)
            == (other.exp, other.nbf, other.iat, &other.json, &other.bearer)
    }
}

impl Claims {
    /// Claims of a verified token: its time claims, its payload's text and the token.
    fn new(
        times: (u64, Option<u64>, Option<u64>),
        json: Vec<u8>,
        token: &str,
    ) -> Result<Claims, Rejection> {
        // Built by hand: `format!` would run the formatting machinery.
        let mut bearer = String::with_capacity(7 + token.len());
        bearer.push_str("Bearer ");
        bearer.push_str(token);
        // A token that decoded is base64url and dots: always header-safe.
        let bearer = HeaderValue::try_from(bearer)
            .map_err(|_| Rejection::Malformed("token is not header-safe"))?;
        let (exp, nbf, iat) = times;
        Ok(Claims {
            exp,
            nbf,
            iat,
            json: json.into_boxed_slice(),
            map: OnceLock::new(),
            bearer,
        })
    }

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

    /// The token as an `Authorization` value (`Bearer <token>`).
    pub fn bearer(&self) -> &HeaderValue {
        &self.bearer
    }

    /// The token these are the claims of.
    pub fn token(&self) -> &str {
        // `Bearer ` and a token that decoded as base64url: visible ASCII, never refused.
        std::str::from_utf8(&self.bearer.as_bytes()["Bearer ".len()..]).unwrap_or_default()
    }

    /// Every claim, parsed on first use.
    pub fn as_json(&self) -> &Map<String, Value> {
        // Cannot fail: verifying parsed the same text with the same parser (every member
        // through `deserialize_any`, see `parse.rs`). Were it to, no claim would be there, and
        // every rule needing one would refuse.
        self.map
            .get_or_init(|| serde_json::from_slice(&self.json).unwrap_or_default())
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.as_json().get(name)
    }

    pub fn sub(&self) -> Option<&str> {
        self.get("sub").and_then(Value::as_str)
    }

    /// Length of the payload's text, the basis of the cache's memory accounting.
    fn size(&self) -> usize {
        self.json.len()
    }

    /// Whether claim `name` satisfies one of `allowed`: a string claim must equal one, an array
    /// claim must contain one, and numbers and booleans are compared by their JSON text
    /// (`42`, `true`). An absent claim, `null`, an object, or an empty `allowed` never does.
    pub fn satisfies(&self, name: &str, allowed: &[String]) -> bool {
        match self.get(name) {
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
        let (parts, header_marks) = self.authenticate(token, trace)?;
        let checked = trace.step("payload json", parse::payload(&parts.payload), |_| {
            // Only for `explain`: count the claims.
            let count = serde_json::from_slice::<Map<String, Value>>(&parts.payload)
                .map_or(0, |claims| claims.len());
            format!("JSON object with {count} claim(s)")
        })?;
        let verdicts = self.judge_claims(&checked, header_marks, now, trace);
        let (times, first_error) = verdicts?;
        let claims = Claims::new(times, parts.payload, token)?;
        self.judge_required(claims, first_error, now, trace)
    }

    /// Structure, header, key choice and signature: everything that establishes the token is
    /// genuine, before any claim is believed.
    fn authenticate<'t>(
        &self,
        token: &'t str,
        trace: &mut Trace,
    ) -> Result<(parse::Compact<'t>, bool), Rejection> {
        let policy = &self.policy;

        let size = if token.len() > MAX_TOKEN_LEN {
            Err(Rejection::TooLarge)
        } else {
            Ok(token.len())
        };
        trace.step("size", size, |n| {
            format!("{n} bytes (limit {MAX_TOKEN_LEN})")
        })?;

        let parts = trace.step("segments", parse::split_compact(token), |_| {
            "three canonical base64url segments".to_owned()
        })?;

        let header = trace.step("header json", parse::header(parts.header()), |_| {
            // Only for `explain`: count the parameters and name the ignored ones.
            let map =
                serde_json::from_slice::<Map<String, Value>>(parts.header()).unwrap_or_default();
            let ignored: Vec<&str> = ["jku", "x5u", "x5c", "jwk"]
                .into_iter()
                .filter(|p| map.contains_key(*p))
                .collect();
            if ignored.is_empty() {
                format!("JSON object with {} parameter(s)", map.len())
            } else {
                format!(
                    "JSON object with {} parameter(s); ignored for key choice: {}",
                    map.len(),
                    ignored.join(", ")
                )
            }
        })?;

        let alg = match &header.alg {
            Some(Json::Str(name)) => Alg::from_name(name)
                .filter(|alg| policy.algorithms.contains(alg))
                .ok_or(Rejection::AlgorithmNotAllowed),
            Some(_) => Err(Rejection::Malformed("alg is not a string")),
            None => Err(Rejection::Malformed("header has no alg")),
        };
        match &alg {
            Ok(alg) => trace.record("alg allowed", true, || format!("{alg} is allowed")),
            Err(rejection) => trace.record("alg allowed", false, || match &header.alg {
                Some(Json::Str(name)) => {
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
        let crit = if header.crit {
            Err(Rejection::Critical)
        } else {
            Ok(())
        };
        trace.step("crit", crit, |_| "no crit parameter".to_owned())?;

        let keys = self.keys.load();
        let kid = header.kid.as_deref();
        // Walked twice rather than collected: no allocation per token.
        let candidates = || keys.entries.iter().filter(|e| e.fits(alg, kid));
        let count = candidates().count();
        if count == 0 {
            trace.record("key", false, || match kid {
                Some(kid) => format!("no configured {alg} key has kid {}", shown(kid)),
                None => format!("no configured {alg} key"),
            });
            return Err(Rejection::UnknownKey);
        }
        trace.record("key", true, || match kid {
            Some(kid) => format!("kid {} selects {count} {alg} key(s)", shown(kid)),
            None => format!("no kid; trying {count} {alg} key(s)"),
        });

        let signing_input = parts.signing_input.as_bytes();
        let signed = candidates().any(|entry| entry.check.verify(signing_input, parts.signature()));
        if !signed {
            trace.record("signature", false, || {
                format!("no match with {count} key(s)")
            });
            // A kid no key carries, tried only against keys that take any kid: the signer may
            // be a JWKS key the proxy has not fetched yet, so say "unknown key" (which allows
            // one rate-limited refetch) rather than "bad signature".
            let named_unknown =
                kid.is_some_and(|kid| !keys.entries.iter().any(|e| e.kid.as_deref() == Some(kid)));
            return Err(if named_unknown {
                Rejection::UnknownKey
            } else {
                Rejection::BadSignature
            });
        }
        trace.record("signature", true, || format!("valid {alg} signature"));
        // Whether the header's `typ` marks a refresh or ID token, judged with the claims.
        let marks = header.typ.as_deref().is_some_and(is_non_access_type);
        Ok((parts, marks))
    }

    /// The claim checks of a genuine token, on the claims [`parse::payload`] read. Every check
    /// runs (so `explain` shows them all); the first failure in trace order wins, and expiry
    /// is kept apart in [`Verified`]. Returns the time claims and the first failure, which
    /// [`Verifier::judge_required`] completes.
    #[allow(clippy::type_complexity)]
    fn judge_claims(
        &self,
        payload: &parse::Payload<'_>,
        header_marks: bool,
        now: u64,
        trace: &mut Trace,
    ) -> Result<((u64, Option<u64>, Option<u64>), Option<Rejection>), Rejection> {
        let policy = &self.policy;
        let leeway = policy.leeway_secs;

        // Time claims: parsed as bounded integers first, judged afterwards.
        let exp = time_claim(payload.exp.as_ref(), "exp is not an integer in [0, 2^53)")
            .and_then(|exp| exp.ok_or(Rejection::BadTimeClaim("exp is missing")));
        let nbf = time_claim(payload.nbf.as_ref(), "nbf is not an integer in [0, 2^53)");
        let iat = time_claim(payload.iat.as_ref(), "iat is not an integer in [0, 2^53)");
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
        let times = (exp?, nbf?, iat?);

        if let Some(issuer) = &policy.issuer {
            let got = payload.iss.as_ref();
            let ok = got.and_then(Json::as_str) == Some(issuer.as_str());
            trace.record("iss", ok, || match got {
                _ if ok => format!("iss is {}", shown(issuer)),
                Some(Json::Str(iss)) => format!("iss {} is not {}", shown(iss), shown(issuer)),
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
            let ok = audience_ok(payload.aud.as_ref(), &policy.audience);
            trace.record("aud", ok, || match (ok, &payload.aud) {
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

        let kind = non_access_kind(
            header_marks,
            payload.typ.as_ref(),
            payload.token_type.as_ref(),
        );
        trace.record("typ", kind.is_none(), || {
            kind.unwrap_or("nothing marks a refresh or ID token")
                .to_owned()
        });
        if kind.is_some() {
            first_error.get_or_insert(Rejection::NotAnAccessToken);
        }
        Ok((times, first_error))
    }

    /// `jwt.claims` (which needs the map of every claim, so only then is it parsed), and the
    /// verdict.
    fn judge_required(
        &self,
        claims: Claims,
        mut first_error: Option<Rejection>,
        now: u64,
        trace: &mut Trace,
    ) -> Result<Verified, Rejection> {
        for (name, allowed) in &self.policy.required_claims {
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
                expired: claims.expired_at(now, self.policy.leeway_secs),
                claims,
            }),
        }
    }
}

/// A time claim: absent, or an integer in [0, 2^53); anything else is `invalid`.
fn time_claim(claim: Option<&Json<'_>>, invalid: &'static str) -> Result<Option<u64>, Rejection> {
    match claim {
        None => Ok(None),
        // `Json::Int` is a non-negative integer literal, as `Value::as_u64` reads one: floats
        // (1.5, 1e3), negatives and values beyond u64 are all `Json::Other`.
        Some(Json::Int(t)) if *t < TIME_LIMIT => Ok(Some(*t)),
        Some(_) => Err(Rejection::BadTimeClaim(invalid)),
    }
}

fn audience_ok(aud: Option<&Audience<'_>>, wanted: &[String]) -> bool {
    match aud {
        Some(Audience::One(aud)) => wanted.iter().any(|w| w == aud),
        // An array with a non-string member is `Invalid` as a whole.
        Some(Audience::Many(items)) => items.iter().any(|aud| wanted.iter().any(|w| w == aud)),
        Some(Audience::Invalid) | None => false,
    }
}

/// Why this token is not an access token, if something marks it as another kind: the
/// header's `typ` (`header_marks`), or a `typ` or `token_type` claim.
fn non_access_kind(
    header_marks: bool,
    typ: Option<&Json<'_>>,
    token_type: Option<&Json<'_>>,
) -> Option<&'static str> {
    if header_marks {
        return Some("header typ marks a refresh or ID token");
    }
    let marks =
        |claim: Option<&Json<'_>>| claim.and_then(Json::as_str).is_some_and(is_non_access_type);
    if marks(typ) {
        return Some("typ claim marks a refresh or ID token");
    }
    if marks(token_type) {
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
