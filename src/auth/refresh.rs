//! Transparent token renewal with single-flight: concurrent requests of one session share one
//! backend refresh call, and its result is reused for a few seconds so a page's burst of
//! parallel API calls never triggers a second refresh (which a rotating backend would treat
//! as refresh-token reuse and answer by revoking the session).
//!
//! Inside one process the flight table (`single_flight.rs`) does this. With `[cluster]`,
//! [`Cluster::once`] does it across instances: one instance claims the call, the others wait
//! for its published (sealed) outcome and never call themselves. A backend call about to
//! start first counts against the client's refresh budget (`session.refreshes_per_minute`);
//! joining a flight, here or on another instance, is free, except that a client whose budget
//! this instance alone has seen spent is refused before Redis is even asked.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tracing::{error, info, warn};

use super::backend::{BackendClient, Tokens};
use crate::cluster::seal::Id;
use crate::cluster::{client_key, Cluster, Flight as Shared, Share};
use crate::error::Error;
use crate::single_flight::SingleFlight;

/// How long a finished refresh is reused for the same refresh token.
pub const REUSE_FOR: Duration = Duration::from_secs(10);
/// The most refreshes remembered (in the air or reusable) at once; beyond it, new ones are
/// refused and the request gets 502 (API) or a login redirect (page).
const MAX_FLIGHTS: usize = 10_000;

/// Why a refresh did not produce tokens.
#[derive(Debug, Clone)]
pub enum RefreshFailure {
    /// The backend refused the refresh token: the session is over.
    Rejected,
    /// The backend could not be asked (down, slow, garbage); the session may still be good.
    Unavailable { timeout: bool, reason: String },
    /// The client started more refreshes this minute than `session.refreshes_per_minute`.
    OverBudget { retry_after: u64 },
}

impl RefreshFailure {
    pub fn into_error(self) -> Error {
        match self {
            RefreshFailure::Rejected => {
                Error::Internal("refresh rejection is not an error response".into())
            }
            RefreshFailure::Unavailable { timeout: true, .. } => Error::BackendTimeout,
            RefreshFailure::Unavailable { reason, .. } => Error::BackendUnavailable(reason),
            RefreshFailure::OverBudget { retry_after } => Error::TooManyRequests { retry_after },
        }
    }
}

type Outcome = Result<Arc<Tokens>, RefreshFailure>;

/// Whether a caller holding the same refresh token should take this finished outcome rather
/// than start another call: for [`REUSE_FOR`] after a success or a rejection. A transient
/// failure is not reused: the next request asks the backend again.
fn reusable(outcome: &Outcome, age: Duration) -> bool {
    match outcome {
        Err(RefreshFailure::Unavailable { .. } | RefreshFailure::OverBudget { .. }) => false,
        _ => age < REUSE_FOR,
    }
}

pub struct Refresher {
    backend: Arc<BackendClient>,
    uri: http::Uri,
    access_cookie: String,
    cluster: Arc<Cluster>,
    /// Flights a client may start per minute; 0 means no budget.
    per_minute: u32,
    /// By a hash of the refresh token.
    flights: SingleFlight<u128, Outcome>,
}

impl Refresher {
    pub fn new(
        backend: Arc<BackendClient>,
        uri: http::Uri,
        access_cookie: String,
        cluster: Arc<Cluster>,
        per_minute: u32,
    ) -> Refresher {
        Refresher {
            backend,
            uri,
            access_cookie,
            cluster,
            per_minute,
            flights: SingleFlight::new(MAX_FLIGHTS, reusable),
        }
    }

    /// Renews the session of `refresh_token`, sharing the backend call with every concurrent
    /// caller holding the same token (on every instance, with `[cluster]`). `client` is the
    /// address whose budget a new call is counted against.
    ///
    /// The call runs in its own task, so a caller that goes away (a browser navigating off
    /// the page) does not cancel it: a rotating backend may already have spent the old
    /// refresh token, and the new one must reach the callers that are still waiting, or the
    /// next request within [`REUSE_FOR`].
    pub async fn refresh(&self, refresh_token: &str, client: IpAddr) -> Outcome {
        let key = Id::of("flight", refresh_token.as_bytes()).short();
        let joined = self.flights.join(key, || {
            let call = Call {
                backend: Arc::clone(&self.backend),
                uri: self.uri.clone(),
                access_cookie: self.access_cookie.clone(),
                refresh_token: refresh_token.to_owned(),
            };
            let cluster = Arc::clone(&self.cluster);
            let per_minute = self.per_minute;
            async move {
                let outcome = call.coordinated(&cluster, client, per_minute).await;
                crate::telemetry::auth(if outcome.is_ok() {
                    "refresh_ok"
                } else {
                    "refresh_failed"
                });
                outcome
            }
        });
        let Ok(ticket) = joined else {
            // Random refresh cookies must not turn into unbounded backend calls and memory.
            return Err(RefreshFailure::Unavailable {
                timeout: false,
                reason: "too many token refreshes in flight".into(),
            });
        };
        // `None` only when the task ended without an answer, which only a panic can do.
        ticket.wait().await.unwrap_or_else(|| {
            Err(RefreshFailure::Unavailable {
                timeout: false,
                reason: "the refresh task ended without an answer".into(),
            })
        })
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
    /// One call across every instance: made here (if the client's budget allows), or
    /// reused from the instance that made it, which costs no budget. A client whose budget
    /// is spent on this instance alone is refused before Redis is asked.
    async fn coordinated(self, cluster: &Cluster, client: IpAddr, per_minute: u32) -> Outcome {
        let who = client_key(client);
        let over = |count: crate::cluster::Count| {
            warn!(%client, "token refresh refused: the client's refresh budget is spent");
            RefreshFailure::OverBudget {
                retry_after: count.resets_in.as_secs().max(1),
            }
        };
        if per_minute > 0 {
            let here = cluster.counted_here("refresh", &who);
            if here.events >= per_minute {
                return Err(over(here));
            }
        }
        let within = self.backend.config.timeout;
        let token = self.refresh_token.clone();
        let shared = cluster
            .once(&token, REUSE_FOR, within, || async {
                if per_minute > 0 {
                    let count = cluster.hit("refresh", &who).await;
                    if count.events > per_minute {
                        return (Err(over(count)), Share::GaveUp);
                    }
                }
                let outcome = self.run().await;
                let share = shareable(&outcome);
                (outcome, share)
            })
            .await;
        match shared {
            Shared::Ran(outcome) => outcome,
            Shared::Reused(plain) => from_shared(&plain).unwrap_or_else(|| {
                Err(RefreshFailure::Unavailable {
                    timeout: false,
                    reason: "another instance's refresh outcome is unreadable".into(),
                })
            }),
            Shared::GaveUp => Err(RefreshFailure::Unavailable {
                timeout: false,
                reason: "another instance could not refresh the session".into(),
            }),
            Shared::Stuck => Err(RefreshFailure::Unavailable {
                timeout: true,
                reason: "another instance's refresh did not finish in time".into(),
            }),
        }
    }

    async fn run(&self) -> Outcome {
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
        let status = answer.status;
        // Only these say "this refresh token is no good". Anything else (404, 405, 429, 5xx)
        // is the backend unable to answer: a mistyped backend.refresh must not sign users out.
        if matches!(status.as_u16(), 400 | 401 | 403) {
            info!(
                status = status.as_u16(),
                "token refresh rejected by the backend"
            );
            return Err(RefreshFailure::Rejected);
        }
        if !status.is_success() {
            if status.is_client_error() && status != http::StatusCode::TOO_MANY_REQUESTS {
                error!(
                    url = %self.uri,
                    status = status.as_u16(),
                    "token refresh failed: backend.refresh answers with a status that is not a refusal of the token; is the URL right? Sessions are kept"
                );
            } else {
                warn!(
                    url = %self.uri,
                    status = status.as_u16(),
                    "token refresh failed: backend error"
                );
            }
            return Err(RefreshFailure::Unavailable {
                timeout: false,
                reason: format!("refresh answered {status}"),
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

/// What other instances may reuse: the tokens, or the rejection. A transient failure is not
/// shared (its waiters give up; the next request may try again).
fn shareable(outcome: &Outcome) -> Share {
    let value = match outcome {
        Ok(tokens) => json!({
            "access": tokens.access,
            "refresh": tokens.refresh,
            "expires_in": tokens.expires_in,
            "relayed_cookie": tokens.relayed_cookie.as_ref().and_then(|c| c.to_str().ok()),
        }),
        Err(RefreshFailure::Rejected) => json!({ "rejected": true }),
        Err(_) => return Share::GaveUp,
    };
    Share::Outcome(value.to_string().into_bytes())
}

fn from_shared(plain: &[u8]) -> Option<Outcome> {
    let value: Value = serde_json::from_slice(plain).ok()?;
    if value.get("rejected") == Some(&Value::Bool(true)) {
        return Some(Err(RefreshFailure::Rejected));
    }
    let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    let relayed_cookie = match text("relayed_cookie") {
        Some(cookie) => Some(http::HeaderValue::try_from(cookie).ok()?),
        None => None,
    };
    Some(Ok(Arc::new(Tokens {
        access: text("access")?,
        refresh: text("refresh"),
        expires_in: value.get("expires_in").and_then(Value::as_u64),
        relayed_cookie,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_outcomes_round_trip() {
        let tokens = Tokens {
            access: "a.b.c".into(),
            refresh: Some("r".into()),
            expires_in: Some(60),
            relayed_cookie: Some(http::HeaderValue::from_static("access_token=a.b.c; Path=/")),
        };
        let Share::Outcome(plain) = shareable(&Ok(Arc::new(tokens))) else {
            panic!("tokens are shared")
        };
        let Some(Ok(back)) = from_shared(&plain) else {
            panic!("not tokens")
        };
        assert_eq!(back.access, "a.b.c");
        assert_eq!(back.refresh.as_deref(), Some("r"));
        assert_eq!(back.expires_in, Some(60));
        assert!(back.relayed_cookie.is_some());
        let Share::Outcome(rejected) = shareable(&Err(RefreshFailure::Rejected)) else {
            panic!("a rejection is shared")
        };
        assert!(matches!(
            from_shared(&rejected),
            Some(Err(RefreshFailure::Rejected))
        ));
        let down = Err(RefreshFailure::Unavailable {
            timeout: false,
            reason: String::new(),
        });
        assert_eq!(shareable(&down), Share::GaveUp);
        assert!(from_shared(b"{}").is_none());
        assert!(from_shared(b"garbage").is_none());
    }
}
