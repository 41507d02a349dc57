//! The backend's word on a session (`backend.session_check`): a token that verifies is also
//! confirmed with the backend, at most once per `session.check_every` per token.
//!
//! Answers are cached per token (by a hash of it, never the token) and shared through
//! `[cluster]`, sealed together with the time they stop standing, so no instance can make an
//! answer last longer by passing it on. Concurrent requests with one token share one call.
//! An ended session becomes a revocation (shared like a logout) and is remembered here.
//!
//! A request waits on the backend only for a token whose answer is missing or stale and
//! not being re-checked already, and then at most [`WAIT`]: a confirmed token is re-checked
//! in the background from half of `check_every` on, and served on its last answer while
//! that check is out, so an active session never waits on the backend. A backend that
//! cannot be asked keeps the last answer; a token it never confirmed is admitted
//! (`session.check_fail = "open"`, the default) or refused (`"closed"`). After a failure the
//! whole endpoint is left alone for a while (5 s, doubling up to a minute), then probed by
//! one call at a time, so a hung endpoint never costs a call, or a wait, per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http::header::HeaderValue;
use http::Uri;
use serde_json::Value;
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::backend::BackendClient;
use super::login::percent_decode;
use crate::cluster::seal::Id;
use crate::cluster::{Cluster, Revocation};
use crate::config::{CheckFail, CheckFormat};
use crate::error::Error;
use crate::single_flight::SingleFlight;

/// The longest a request waits for the backend's answer (less when `backend.timeout` is).
pub const WAIT: Duration = Duration::from_secs(1);
/// How long the endpoint is left alone after a failure; doubled per failure in a row.
const BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Answers kept at most; those of expired tokens go first when it is reached.
const MAX_ANSWERS: usize = 200_000;
/// Checks in the air at most.
const MAX_ASKING: usize = 10_000;
/// The purpose label of shared answers (hash and seal domain).
const PURPOSE: &str = "check";

/// What the check decided for a request.
#[derive(Debug)]
pub enum Verdict {
    Admit,
    /// The backend ended this session: refuse it like a revoked token.
    Ended,
    /// Never confirmed, the backend cannot be asked, and `check_fail = "closed"`.
    Unconfirmed(Error),
}

/// One check's result.
#[derive(Debug, Clone)]
enum Asked {
    Valid,
    Ended,
    Unavailable { timeout: bool, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Valid,
    Ended,
}

#[derive(Debug, Clone, Copy)]
struct Answer {
    standing: Standing,
    /// When the answer was given (or, for a shared one, when it would have been).
    asked_at: Instant,
    /// Until when it stands without asking again.
    fresh_until: Instant,
    /// Unix second after which the token is worthless (its `exp` plus leeway).
    until: u64,
}

/// Failures of the endpoint as a whole.
#[derive(Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

impl Breaker {
    /// Whether a call may be made now: always while closed; one probe at a time once the
    /// pause after a failure is over.
    fn permit(&mut self, now: Instant) -> bool {
        match self.open_until {
            None => true,
            Some(until) if now < until || self.probing => false,
            Some(_) => {
                self.probing = true;
                true
            }
        }
    }

    fn record(&mut self, asked: &Asked, now: Instant) {
        self.probing = false;
        if let Asked::Unavailable { .. } = asked {
            self.failures = self.failures.saturating_add(1);
            let backoff = BACKOFF
                .saturating_mul(1 << self.failures.saturating_sub(1).min(8))
                .min(MAX_BACKOFF);
            self.open_until = Some(now + backoff);
        } else {
            self.failures = 0;
            self.open_until = None;
        }
    }
}

/// What a check needs, shared with the tasks that make it.
struct Shared {
    backend: Arc<BackendClient>,
    uri: Uri,
    /// `Authorization: Basic` from credentials written in the URL (introspection clients).
    client_auth: Option<HeaderValue>,
    format: CheckFormat,
    every: Duration,
    cluster: Arc<Cluster>,
    answers: RwLock<HashMap<u128, Answer>>,
    breaker: Mutex<Breaker>,
}

pub struct SessionCheck {
    shared: Arc<Shared>,
    fail: CheckFail,
    wait: Duration,
    asking: SingleFlight<u128, Asked>,
}

fn never_kept(_: &Asked, _: Duration) -> bool {
    false
}

impl SessionCheck {
    pub fn new(
        backend: Arc<BackendClient>,
        uri: &Uri,
        session: &crate::config::Session,
        cluster: Arc<Cluster>,
    ) -> SessionCheck {
        let (uri, client_auth) = split_credentials(uri);
        SessionCheck {
            wait: WAIT.min(backend.config.timeout),
            shared: Arc::new(Shared {
                format: backend.config.session_check_format,
                backend,
                uri,
                client_auth,
                every: session.check_every,
                cluster,
                answers: RwLock::new(HashMap::new()),
                breaker: Mutex::new(Breaker::default()),
            }),
            fail: session.check_fail,
            asking: SingleFlight::new(MAX_ASKING, never_kept),
        }
    }

    /// Whether `token` (verified, not revoked) may be admitted. `jti` is its claim, and
    /// `until` its `exp` plus leeway: how long it is revoked if the backend ended it.
    pub async fn confirm(&self, token: &str, jti: Option<&str>, until: u64) -> Verdict {
        let id = Id::of(PURPOSE, token.as_bytes()).short();
        let now = Instant::now();
        let every = self.shared.every;
        let known = self.shared.answer(id);
        let last_valid = known.is_some_and(|a| a.standing == Standing::Valid);
        match known {
            Some(answer) if answer.standing == Standing::Ended => return Verdict::Ended,
            Some(answer) if now < answer.fresh_until => {
                // Re-checked ahead of time, so an active token never waits on the backend.
                if now >= answer.asked_at + every / 2 {
                    self.ask(id, token, jti, until);
                }
                return Verdict::Admit;
            }
            _ => {}
        }
        let (ticket, started) = self.ask(id, token, jti, until);
        let Some(ticket) = ticket else {
            // The endpoint is failing (or too many checks are out): do not wait on it.
            return self.unanswered(last_valid, false, "the session check is backing off");
        };
        if last_valid && !started {
            // Confirmed before, and being re-checked now: its last answer stands meanwhile.
            return Verdict::Admit;
        }
        match tokio::time::timeout(self.wait, ticket.wait()).await {
            Ok(Some(Asked::Valid)) => Verdict::Admit,
            Ok(Some(Asked::Ended)) => Verdict::Ended,
            Ok(Some(Asked::Unavailable { timeout, reason })) => {
                self.unanswered(last_valid, timeout, &reason)
            }
            Ok(None) => self.unanswered(last_valid, false, "the session check ended early"),
            Err(_) => self.unanswered(last_valid, true, "the session check is slow"),
        }
    }

    /// Starts (or joins) the check of `token`, unless the endpoint is backing off; `true`
    /// when this call started it.
    fn ask(
        &self,
        id: u128,
        token: &str,
        jti: Option<&str>,
        until: u64,
    ) -> (Option<crate::single_flight::Ticket<Asked>>, bool) {
        let shared = Arc::clone(&self.shared);
        let token = token.to_owned();
        let jti = jti.map(str::to_owned);
        let mut started = false;
        let flag = &mut started;
        let ticket = self
            .asking
            .join(id, move || {
                *flag = true;
                // Asked only when a new check would start: joining one costs no permit.
                let permitted = shared
                    .breaker
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .permit(Instant::now());
                async move {
                    if !permitted {
                        return Asked::Unavailable {
                            timeout: false,
                            reason: "the session check is backing off".into(),
                        };
                    }
                    shared.check(id, &token, jti.as_deref(), until).await
                }
            })
            .ok();
        (ticket, started)
    }

    /// The verdict when the backend gave no answer: the last one, else `session.check_fail`.
    fn unanswered(&self, last_valid: bool, timeout: bool, reason: &str) -> Verdict {
        if last_valid {
            return Verdict::Admit;
        }
        match self.fail {
            CheckFail::Open => Verdict::Admit,
            CheckFail::Closed if timeout => Verdict::Unconfirmed(Error::BackendTimeout),
            CheckFail::Closed => Verdict::Unconfirmed(Error::BackendUnavailable(reason.into())),
        }
    }

    /// A token the backend itself just issued (a login or a refresh) needs no asking.
    pub fn vouch(&self, token: &str, until: u64) {
        let id = Id::of(PURPOSE, token.as_bytes()).short();
        self.shared.valid(id, token, Instant::now(), until, true);
    }
}

impl Shared {
    fn answer(&self, id: u128) -> Option<Answer> {
        self.answers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied()
    }

    fn insert(&self, id: u128, answer: Answer) {
        let mut answers = self.answers.write().unwrap_or_else(|p| p.into_inner());
        if answers.len() >= MAX_ANSWERS && !answers.contains_key(&id) {
            let now = crate::clock::unix_now();
            answers.retain(|_, answer| answer.until >= now);
            if answers.len() >= MAX_ANSWERS {
                // Forgetting answers costs backend calls, never a wrong admission (an ended
                // session is in the revocation set too).
                let mut left = MAX_ANSWERS - MAX_ANSWERS / 8;
                answers.retain(|_, _| {
                    left = left.saturating_sub(1);
                    left > 0
                });
            }
        }
        answers.insert(id, answer);
    }

    /// Records a valid answer given at `asked_at`; shares it (with the instant it stops
    /// standing) only when it came from the backend itself.
    fn valid(&self, id: u128, token: &str, asked_at: Instant, until: u64, from_backend: bool) {
        let fresh_until = asked_at + self.every;
        self.insert(
            id,
            Answer {
                standing: Standing::Valid,
                asked_at,
                fresh_until,
                until,
            },
        );
        if from_backend {
            let stands_for = fresh_until.saturating_duration_since(Instant::now());
            let valid_until = crate::clock::unix_millis()
                .saturating_add(u64::try_from(stands_for.as_millis()).unwrap_or(u64::MAX));
            self.cluster.share_answer(
                PURPOSE,
                token,
                &encode_valid(valid_until),
                stands_for.max(Duration::from_millis(1)),
            );
        }
    }

    /// One check: another instance's answer while it still stands, else the backend's.
    async fn check(&self, id: u128, token: &str, jti: Option<&str>, until: u64) -> Asked {
        if let Some(valid_until) = self
            .cluster
            .shared_answer(PURPOSE, token)
            .await
            .and_then(|plain| decode_valid(&plain))
        {
            let left = valid_until.saturating_sub(crate::clock::unix_millis());
            if left > 0 {
                // As if asked when that instance asked: it stands no longer than there.
                let left = Duration::from_millis(left).min(self.every);
                let asked_at = (Instant::now() + left)
                    .checked_sub(self.every)
                    .unwrap_or_else(Instant::now);
                self.valid(id, token, asked_at, until, false);
                // No news about the endpoint: a probe it held is free again.
                self.breaker
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .probing = false;
                return Asked::Valid;
            }
        }
        let asked = self.ask_backend(token).await;
        let now = Instant::now();
        self.breaker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(&asked, now);
        match &asked {
            Asked::Valid => self.valid(id, token, now, until, true),
            Asked::Ended => {
                info!("the backend ended a session: its token is revoked");
                self.cluster
                    .revoke(Revocation::token(jti, token, until, true));
                let remembered = until.saturating_sub(crate::clock::unix_now());
                self.insert(
                    id,
                    Answer {
                        standing: Standing::Ended,
                        asked_at: now,
                        fresh_until: now + Duration::from_secs(remembered),
                        until,
                    },
                );
            }
            Asked::Unavailable { .. } => {}
        }
        asked
    }

    async fn ask_backend(&self, token: &str) -> Asked {
        let answer = match self.format {
            CheckFormat::Bearer => self.backend.get(&self.uri, Some(token)).await,
            CheckFormat::Introspection => {
                self.backend
                    .post_form(
                        &self.uri,
                        &[("token", token), ("token_type_hint", "access_token")],
                        self.client_auth.clone(),
                    )
                    .await
            }
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(err) => {
                warn!(error = %err, "session check failed: backend unavailable");
                return Asked::Unavailable {
                    timeout: matches!(err, Error::BackendTimeout),
                    reason: err.to_string(),
                };
            }
        };
        let status = answer.status;
        let unavailable = |what: &str| {
            error!(url = %self.uri, status = status.as_u16(), "session check failed: {what}");
            Asked::Unavailable {
                timeout: false,
                reason: format!("session check answered {status}"),
            }
        };
        match self.format {
            CheckFormat::Bearer if status.is_success() => Asked::Valid,
            CheckFormat::Bearer if matches!(status.as_u16(), 401 | 403) => Asked::Ended,
            CheckFormat::Bearer => unavailable("neither 2xx nor 401/403"),
            CheckFormat::Introspection if status.is_success() => {
                match serde_json::from_slice::<Value>(&answer.body)
                    .ok()
                    .and_then(|v| v.get("active").and_then(Value::as_bool))
                {
                    Some(true) => Asked::Valid,
                    Some(false) => Asked::Ended,
                    None => unavailable("the answer has no boolean \"active\""),
                }
            }
            CheckFormat::Introspection => unavailable("introspection did not answer 2xx"),
        }
    }
}

/// A shared "valid" answer: `v` and the unix millisecond it stops standing.
fn encode_valid(valid_until_ms: u64) -> Vec<u8> {
    let mut plain = vec![b'v'];
    plain.extend_from_slice(&valid_until_ms.to_be_bytes());
    plain
}

fn decode_valid(plain: &[u8]) -> Option<u64> {
    match plain.split_first() {
        Some((b'v', rest)) => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

/// The URL without `user:password@`, and those credentials as `Authorization: Basic`.
fn split_credentials(uri: &Uri) -> (Uri, Option<HeaderValue>) {
    let Some(authority) = uri.authority() else {
        return (uri.clone(), None);
    };
    let Some((userinfo, host)) = authority.as_str().rsplit_once('@') else {
        return (uri.clone(), None);
    };
    let decode =
        |text: &str| String::from_utf8_lossy(&percent_decode(text.as_bytes())).into_owned();
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let credentials = format!("{}:{}", decode(user), decode(password));
    use base64::Engine as _;
    let basic = HeaderValue::try_from(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    ))
    .ok();
    let mut parts = uri.clone().into_parts();
    parts.authority = host.parse().ok();
    let bare = Uri::from_parts(parts).unwrap_or_else(|_| uri.clone());
    (bare, basic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_url_become_basic_auth() {
        let uri: Uri = "http://client:s%40cret@127.0.0.1:4000/introspect"
            .parse()
            .expect("uri");
        let (bare, auth) = split_credentials(&uri);
        assert_eq!(bare.to_string(), "http://127.0.0.1:4000/introspect");
        // base64("client:s@cret")
        assert_eq!(
            auth.expect("basic").to_str().expect("text"),
            "Basic Y2xpZW50OnNAY3JldA=="
        );
        let plain: Uri = "http://127.0.0.1:4000/check".parse().expect("uri");
        let (same, none) = split_credentials(&plain);
        assert_eq!(same, plain);
        assert!(none.is_none());
    }

    #[test]
    fn shared_answers_carry_when_they_stop_standing() {
        assert_eq!(decode_valid(&encode_valid(1234)), Some(1234));
        // The old form (a bare "valid", standing for as long as whoever passes it on says).
        assert_eq!(decode_valid(b"valid"), None);
        assert_eq!(decode_valid(b"v123"), None);
    }

    #[test]
    fn the_endpoint_backs_off_after_failures_and_is_probed_one_call_at_a_time() {
        let mut breaker = Breaker::default();
        let t0 = Instant::now();
        let down = Asked::Unavailable {
            timeout: false,
            reason: String::new(),
        };
        assert!(
            breaker.permit(t0) && breaker.permit(t0),
            "closed: every call"
        );
        breaker.record(&down, t0);
        assert!(!breaker.permit(t0 + Duration::from_secs(4)));
        assert!(breaker.permit(t0 + Duration::from_secs(5)), "one probe");
        assert!(!breaker.permit(t0 + Duration::from_secs(5)), "only one");
        breaker.record(&down, t0 + Duration::from_secs(5));
        assert!(!breaker.permit(t0 + Duration::from_secs(14)), "10 s now");
        assert!(breaker.permit(t0 + Duration::from_secs(15)));
        breaker.record(&Asked::Valid, t0 + Duration::from_secs(15));
        assert!(breaker.permit(t0 + Duration::from_secs(15)), "closed again");
    }
}
