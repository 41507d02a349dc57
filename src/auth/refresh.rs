//! Transparent token renewal with single-flight: concurrent requests of one session share one
//! backend refresh call, and its result is reused for a few seconds so a page's burst of
//! parallel API calls never triggers a second refresh (which a rotating backend would treat
//! as refresh-token reuse and answer by revoking the session).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{info, warn};

use super::backend::{BackendClient, Tokens};
use crate::error::Error;

/// How long a finished refresh is reused for the same refresh token.
const REUSE_FOR: Duration = Duration::from_secs(10);
/// The most refreshes remembered (in the air or reusable) at once; beyond it, new ones wait
/// for pruning and the request gets 502 (API) or a login redirect (page).
const MAX_FLIGHTS: usize = 10_000;
/// Beyond this many remembered flights, finished ones are pruned.
const PRUNE_ABOVE: usize = 1024;

/// Why a refresh did not produce tokens.
#[derive(Debug, Clone)]
pub enum RefreshFailure {
    /// The backend refused the refresh token: the session is over.
    Rejected,
    /// The backend could not be asked (down, slow, garbage); the session may still be good.
    Unavailable { timeout: bool, reason: String },
}

impl RefreshFailure {
    pub fn into_error(self) -> Error {
        match self {
            RefreshFailure::Rejected => {
                Error::Internal("refresh rejection is not an error response".into())
            }
            RefreshFailure::Unavailable { timeout: true, .. } => Error::BackendTimeout,
            RefreshFailure::Unavailable { reason, .. } => Error::BackendUnavailable(reason),
        }
    }
}

type Outcome = Result<Arc<Tokens>, RefreshFailure>;

/// One backend refresh call and, once it has answered, its outcome and when it came.
struct Flight {
    outcome: watch::Receiver<Option<(Outcome, Instant)>>,
}

impl Flight {
    /// Whether a caller holding the same refresh token should wait on this flight rather than
    /// start another: while it is in the air, and for [`REUSE_FOR`] after a success or a
    /// rejection. A transient failure is not reused: the next request asks the backend again.
    fn joinable(&self) -> bool {
        match &*self.outcome.borrow() {
            None => true,
            Some((Err(RefreshFailure::Unavailable { .. }), _)) => false,
            Some((_, finished)) => finished.elapsed() < REUSE_FOR,
        }
    }
}

pub struct Refresher {
    backend: Arc<BackendClient>,
    uri: http::Uri,
    access_cookie: String,
    flights: Mutex<Flights>,
}

/// The flight table and when it was last pruned (pruning scans it, so at most once a second).
struct Flights {
    by_token: HashMap<Box<str>, Flight>,
    pruned: Instant,
}

impl Refresher {
    pub fn new(backend: Arc<BackendClient>, uri: http::Uri, access_cookie: String) -> Refresher {
        Refresher {
            backend,
            uri,
            access_cookie,
            flights: Mutex::new(Flights {
                by_token: HashMap::new(),
                pruned: Instant::now(),
            }),
        }
    }

    /// Renews the session of `refresh_token`, sharing the backend call with every concurrent
    /// caller holding the same token.
    ///
    /// The call runs in its own task, so a caller that goes away (a browser navigating off
    /// the page) does not cancel it: a rotating backend may already have spent the old
    /// refresh token, and the new one must reach the callers that are still waiting, or the
    /// next request within [`REUSE_FOR`].
    pub async fn refresh(&self, refresh_token: &str) -> Outcome {
        let mut outcome = {
            let mut flights = self
                .flights
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if flights.by_token.len() > PRUNE_ABOVE
                && flights.pruned.elapsed() >= Duration::from_secs(1)
            {
                flights.by_token.retain(|_, flight| flight.joinable());
                flights.pruned = Instant::now();
            }
            let full = flights.by_token.len() >= MAX_FLIGHTS
                && !flights.by_token.contains_key(refresh_token);
            if full {
                // Random refresh cookies must not turn into unbounded backend calls and memory.
                return Err(RefreshFailure::Unavailable {
                    timeout: false,
                    reason: "too many token refreshes in flight".into(),
                });
            }
            let flights = &mut flights.by_token;
            match flights.get(refresh_token) {
                Some(flight) if flight.joinable() => flight.outcome.clone(),
                _ => {
                    let (sender, receiver) = watch::channel(None);
                    let call = Call {
                        backend: Arc::clone(&self.backend),
                        uri: self.uri.clone(),
                        access_cookie: self.access_cookie.clone(),
                        refresh_token: refresh_token.to_owned(),
                    };
                    tokio::spawn(async move {
                        let outcome = call.run().await;
                        crate::telemetry::auth(if outcome.is_ok() {
                            "refresh_ok"
                        } else {
                            "refresh_failed"
                        });
                        sender.send_replace(Some((outcome, Instant::now())));
                    });
                    flights.insert(
                        refresh_token.into(),
                        Flight {
                            outcome: receiver.clone(),
                        },
                    );
                    receiver
                }
            }
        };
        let answered = outcome.wait_for(Option::is_some).await;
        match answered.as_deref() {
            Ok(Some((result, _))) => result.clone(),
            // The task ended without an answer, which only a panic in it can do.
            _ => Err(RefreshFailure::Unavailable {
                timeout: false,
                reason: "the refresh task ended without an answer".into(),
            }),
        }
    }
}

/// Everything one backend refresh call needs, owned, so that it can outlive its caller.
struct Call {
    backend: Arc<BackendClient>,
    uri: http::Uri,
    access_cookie: String,
    refresh_token: String,
}

impl Call {
    async fn run(self) -> Outcome {
        let field = self.backend.config.refresh_field.as_str();
        let answer = match self
            .backend
            .post(&self.uri, &[(field, self.refresh_token.as_str())], None)
            .await
        {
            Ok(answer) => answer,
            Err(err) => {
                warn!(error = %err, "token refresh failed: backend unavailable");
                return Err(RefreshFailure::Unavailable {
                    timeout: matches!(err, Error::BackendTimeout),
                    reason: err.to_string(),
                });
            }
        };
        if answer.status.is_client_error() && answer.status != http::StatusCode::TOO_MANY_REQUESTS {
            info!(
                status = answer.status.as_u16(),
                "token refresh rejected by the backend"
            );
            return Err(RefreshFailure::Rejected);
        }
        if !answer.status.is_success() {
            warn!(
                status = answer.status.as_u16(),
                "token refresh failed: backend error"
            );
            return Err(RefreshFailure::Unavailable {
                timeout: false,
                reason: format!("refresh answered {}", answer.status),
            });
        }
        match self.backend.tokens(&answer, &self.access_cookie) {
            Ok(tokens) => Ok(Arc::new(tokens)),
            Err(err) => {
                warn!(error = %err, "token refresh failed: unusable answer");
                Err(RefreshFailure::Unavailable {
                    timeout: false,
                    reason: err.to_string(),
                })
            }
        }
    }
}
