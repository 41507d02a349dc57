//! Transparent token renewal with single-flight: concurrent requests of one session share one
//! backend refresh call, and its result is reused for a few seconds so a page's burst of
//! parallel API calls never triggers a second refresh (which a rotating backend would treat
//! as refresh-token reuse and answer by revoking the session).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;
use tracing::{info, warn};

use super::backend::{BackendClient, Tokens};
use crate::error::Error;

/// How long a finished refresh is reused for the same refresh token.
const REUSE_FOR: Duration = Duration::from_secs(10);
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

struct Flight {
    outcome: OnceCell<Outcome>,
    started: Instant,
}

pub struct Refresher {
    backend: Arc<BackendClient>,
    uri: http::Uri,
    access_cookie: String,
    flights: Mutex<HashMap<Box<str>, Arc<Flight>>>,
}

impl Refresher {
    pub fn new(backend: Arc<BackendClient>, uri: http::Uri, access_cookie: String) -> Refresher {
        Refresher {
            backend,
            uri,
            access_cookie,
            flights: Mutex::new(HashMap::new()),
        }
    }

    /// Renews the session of `refresh_token`, sharing the backend call with every concurrent
    /// caller holding the same token.
    pub async fn refresh(&self, refresh_token: &str) -> Outcome {
        let flight = {
            let mut flights = self
                .flights
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if flights.len() > PRUNE_ABOVE {
                flights.retain(|_, f| f.started.elapsed() < REUSE_FOR || f.outcome.get().is_none());
            }
            let fresh =
                |f: &Arc<Flight>| f.started.elapsed() < REUSE_FOR || f.outcome.get().is_none();
            match flights.get(refresh_token) {
                Some(flight) if fresh(flight) => flight.clone(),
                _ => {
                    let flight = Arc::new(Flight {
                        outcome: OnceCell::new(),
                        started: Instant::now(),
                    });
                    flights.insert(refresh_token.into(), flight.clone());
                    flight
                }
            }
        };
        flight
            .outcome
            .get_or_init(|| self.call(refresh_token))
            .await
            .clone()
    }

    async fn call(&self, refresh_token: &str) -> Outcome {
        let field = self.backend.config.refresh_field.as_str();
        let answer = match self
            .backend
            .post(&self.uri, &[(field, refresh_token)], None)
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
