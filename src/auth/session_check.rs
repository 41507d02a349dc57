//! The backend's word on a session (`backend.session_check`): a token that verifies is also
//! confirmed with the backend, at most once per `session.check_every` per token.
//!
//! Answers are cached per token (and shared through `[cluster]`), so the request path asks
//! the backend only when a token is new or its answer has aged; concurrent requests with one
//! token share one call. An ended session becomes a revocation, shared like a logout. A
//! backend that cannot be asked keeps the last answer; a token it never confirmed is admitted
//! (`session.check_fail = "open"`, the default) or refused (`"closed"`), and the backend is
//! asked again only after a short pause, never once per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::Uri;
use serde_json::Value;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::backend::BackendClient;
use super::login::percent_decode;
use crate::cluster::{Cluster, Revocation};
use crate::config::{CheckFail, CheckFormat};
use crate::error::Error;

/// How long a backend that could not be asked is left alone before the next attempt.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Answers kept at most; expired tokens go first when it is reached.
const MAX_ANSWERS: usize = 200_000;
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

/// One backend call's answer.
#[derive(Debug, Clone)]
enum Asked {
    Valid,
    Ended,
    Unavailable { timeout: bool, reason: String },
}

#[derive(Debug, Clone, Copy)]
struct Answer {
    /// Confirmed valid (`false`: never confirmed, the backend could not be asked).
    valid: bool,
    /// Until when the answer stands without asking again.
    fresh_until: Instant,
    /// The token's `exp`, after which the entry is worthless.
    exp: u64,
}

#[derive(Default)]
struct State {
    answers: HashMap<Box<str>, Answer>,
    asking: HashMap<Box<str>, watch::Receiver<Option<Asked>>>,
}

pub struct SessionCheck {
    backend: Arc<BackendClient>,
    uri: Uri,
    /// `Authorization: Basic` from credentials written in the URL (introspection clients).
    client_auth: Option<HeaderValue>,
    format: CheckFormat,
    every: Duration,
    fail: CheckFail,
    cluster: Arc<Cluster>,
    state: Arc<Mutex<State>>,
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
            format: backend.config.session_check_format,
            backend,
            uri,
            client_auth,
            every: session.check_every,
            fail: session.check_fail,
            cluster,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// Whether `token` (verified, not revoked) may be admitted. `jti` and `exp` are its
    /// claims, used when the backend says the session ended.
    pub async fn confirm(&self, token: &str, jti: Option<&str>, exp: u64) -> Verdict {
        let mut receiver = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(answer) = state.answers.get(token) {
                if Instant::now() < answer.fresh_until {
                    return self.standing(answer.valid);
                }
            }
            match state.asking.get(token) {
                Some(receiver) => receiver.clone(),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    state.asking.insert(token.into(), receiver.clone());
                    let ask = Ask {
                        backend: Arc::clone(&self.backend),
                        uri: self.uri.clone(),
                        client_auth: self.client_auth.clone(),
                        format: self.format,
                        token: token.to_owned(),
                    };
                    let (cluster, shared_state, every) = (
                        Arc::clone(&self.cluster),
                        Arc::clone(&self.state),
                        self.every,
                    );
                    let jti = jti.map(str::to_owned);
                    // Its own task, like a refresh: a caller that goes away does not waste it.
                    tokio::spawn(async move {
                        let asked = ask.shared_or_asked(&cluster).await;
                        record(
                            &shared_state,
                            &cluster,
                            &ask.token,
                            jti.as_deref(),
                            exp,
                            every,
                            &asked,
                        );
                        sender.send_replace(Some(asked));
                    });
                    receiver
                }
            }
        };
        let asked = match receiver.wait_for(Option::is_some).await {
            Ok(asked) => asked.clone(),
            Err(_) => None,
        };
        match asked {
            Some(Asked::Valid) => Verdict::Admit,
            Some(Asked::Ended) => Verdict::Ended,
            Some(Asked::Unavailable { timeout, reason }) => {
                let last = self
                    .state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .answers
                    .get(token)
                    .is_some_and(|answer| answer.valid);
                if last {
                    Verdict::Admit
                } else {
                    self.unconfirmed(timeout, reason)
                }
            }
            None => self.unconfirmed(false, "the session check ended without an answer".into()),
        }
    }

    /// The verdict of a standing answer.
    fn standing(&self, valid: bool) -> Verdict {
        if valid {
            Verdict::Admit
        } else {
            self.unconfirmed(false, "the backend could not confirm the session".into())
        }
    }

    fn unconfirmed(&self, timeout: bool, reason: String) -> Verdict {
        match self.fail {
            CheckFail::Open => Verdict::Admit,
            CheckFail::Closed if timeout => Verdict::Unconfirmed(Error::BackendTimeout),
            CheckFail::Closed => Verdict::Unconfirmed(Error::BackendUnavailable(reason)),
        }
    }

    /// A token the backend itself just issued (a login or a refresh) needs no asking.
    pub fn vouch(&self, token: &str, exp: u64) {
        let answer = Answer {
            valid: true,
            fresh_until: Instant::now() + self.every,
            exp,
        };
        insert(&self.state, token, answer);
        self.cluster
            .share_answer(PURPOSE, token, b"valid", self.every);
    }
}

/// Stores what a call found: a valid answer for `check_every`; an ended session as a
/// revocation (shared); a failure as a pause before the next attempt, keeping the last answer.
fn record(
    state: &Mutex<State>,
    cluster: &Cluster,
    token: &str,
    jti: Option<&str>,
    exp: u64,
    every: Duration,
    asked: &Asked,
) {
    let now = Instant::now();
    match asked {
        Asked::Valid => {
            insert(
                state,
                token,
                Answer {
                    valid: true,
                    fresh_until: now + every,
                    exp,
                },
            );
            cluster.share_answer(PURPOSE, token, b"valid", every);
        }
        Asked::Ended => {
            info!("the backend ended a session: its token is revoked");
            cluster.revoke(Revocation::token(jti, token, exp));
            let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
            state.answers.remove(token);
        }
        Asked::Unavailable { .. } => {
            let valid = state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .answers
                .get(token)
                .is_some_and(|a| a.valid);
            insert(
                state,
                token,
                Answer {
                    valid,
                    fresh_until: now + RETRY_AFTER_FAILURE.min(every),
                    exp,
                },
            );
        }
    }
    state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .asking
        .remove(token);
}

fn insert(state: &Mutex<State>, token: &str, answer: Answer) {
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    if state.answers.len() >= MAX_ANSWERS && !state.answers.contains_key(token) {
        let now = crate::auth::now();
        state.answers.retain(|_, answer| answer.exp >= now);
        if state.answers.len() >= MAX_ANSWERS {
            // Forgetting answers costs backend calls, never a wrong admission.
            let mut left = MAX_ANSWERS - MAX_ANSWERS / 8;
            state.answers.retain(|_, _| {
                left = left.saturating_sub(1);
                left > 0
            });
        }
    }
    state.answers.insert(token.into(), answer);
}

/// One question to the backend about one token.
struct Ask {
    backend: Arc<BackendClient>,
    uri: Uri,
    client_auth: Option<HeaderValue>,
    format: CheckFormat,
    token: String,
}

impl Ask {
    /// Another instance's recent answer, else the backend's.
    async fn shared_or_asked(&self, cluster: &Cluster) -> Asked {
        match cluster.shared_answer(PURPOSE, &self.token).await.as_deref() {
            Some(b"valid") => return Asked::Valid,
            Some(b"ended") => return Asked::Ended,
            _ => {}
        }
        let asked = self.ask().await;
        if matches!(asked, Asked::Ended) {
            cluster.share_answer(PURPOSE, &self.token, b"ended", Duration::from_secs(60));
        }
        asked
    }

    async fn ask(&self) -> Asked {
        let answer = match self.format {
            CheckFormat::Bearer => self.backend.get(&self.uri, Some(&self.token)).await,
            CheckFormat::Introspection => {
                self.backend
                    .post_form(
                        &self.uri,
                        &[("token", &self.token), ("token_type_hint", "access_token")],
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
}
