//! Keys fetched from `jwt.jwks_url`: the first fetch at start-up, the periodic refresh, and the
//! rate-limited refetch when a token names a `kid` no configured key has.
//!
//! The fetched set is always merged with the static keys (`secret`, `public_key_file`,
//! `jwks_file`), which are rebuilt from configuration for every swap, so a JWKS outage or an
//! empty document can never take them away. A fetch that fails in any way (unreachable,
//! non-2xx, too large, unparsable, no usable key) keeps the last good set.
//!
//! **Invariant:** a token never chooses where keys come from: the only URL ever fetched is the
//! configured `jwt.jwks_url`, and an unknown `kid` causes at most one fetch per
//! [`ON_DEMAND_INTERVAL`], however many tokens carry one.
//!
//! **Invariant:** a fetch has a deadline ([`FETCH_TIMEOUT`]) and reads at most
//! [`MAX_DOCUMENT`] bytes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::body;
use crate::config::Jwt;
use crate::upstream::HttpClient;

use super::jwt::{Alg, KeyError, KeyMaterial, KeySet, Verifier};

/// The largest JWKS document read. Real ones hold a handful of keys (a few KiB); the cap
/// bounds what a misbehaving server can make the proxy buffer.
pub const MAX_DOCUMENT: usize = 1 << 20;

/// How long one fetch may take, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Tokens with an unknown `kid` trigger at most one fetch per this interval, so forged
/// tokens cannot turn the proxy into a load generator against the JWKS server.
pub const ON_DEMAND_INTERVAL: Duration = Duration::from_secs(60);

/// After a failed fetch the background task retries sooner than the refresh interval,
/// doubling the wait from the first value up to the second (and never beyond the interval).
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Why a fetch did not produce keys. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("answered {0}")]
    Status(StatusCode),
    #[error("reading the answer: {0}")]
    Read(String),
    #[error("no answer within {FETCH_TIMEOUT:?}")]
    Timeout,
    #[error("{0}")]
    Keys(#[from] KeyError),
}

/// A JWKS endpoint and what is needed to turn its documents into the verifier's keys.
pub struct Jwks {
    url: Uri,
    client: HttpClient,
    algorithms: Vec<Alg>,
    /// The static key material, merged into every installed set.
    material: KeyMaterial,
    refresh_every: Duration,
    /// Held for a whole fetch-and-install, so fetches never overlap and installs happen in
    /// fetch order.
    state: Mutex<State>,
    /// Bumped each time a fetched set is installed; lets a request that waited for another
    /// request's fetch see that the keys changed under it.
    generation: AtomicU64,
    /// Whether a fetched set has ever been installed.
    loaded: AtomicBool,
}

#[derive(Default)]
struct State {
    /// The document behind the installed keys: an identical answer changes nothing (and so
    /// does not clear the verified-token cache).
    document: Option<Bytes>,
    /// When an unknown `kid` last caused a fetch.
    last_on_demand: Option<Instant>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.url)
            .field("refresh_every", &self.refresh_every)
            .field("loaded", &self.loaded())
            .finish_non_exhaustive()
    }
}

impl Jwks {
    /// The JWKS source configured in `jwt`, if `jwt.jwks_url` is set.
    pub fn new(jwt: &Jwt, client: HttpClient) -> Option<Jwks> {
        let url = jwt.jwks_url.clone()?;
        Some(Jwks {
            url,
            client,
            algorithms: jwt.algorithms.clone(),
            material: jwt.keys.clone(),
            refresh_every: jwt.jwks_refresh,
            state: Mutex::new(State::default()),
            generation: AtomicU64::new(0),
            loaded: AtomicBool::new(false),
        })
    }

    /// Whether keys from the URL have been installed at least once.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// A counter that changes whenever fetched keys are installed. Read it before a
    /// verification whose `UnknownKey` is then passed to [`Jwks::refetch_for_unknown_key`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keeps `verifier`'s keys fresh: fetches now, then every `jwt.jwks_refresh`, retrying
    /// sooner after a failure. Never returns; the caller drops it at shutdown.
    pub async fn maintain(&self, verifier: &Verifier) {
        let mut retry = RETRY_FIRST;
        loop {
            let wait = {
                let mut state = self.state.lock().await;
                match self.fetch_and_install(&mut state, verifier).await {
                    Ok(_) => {
                        retry = RETRY_FIRST;
                        self.refresh_every
                    }
                    Err(err) => {
                        let wait = retry.min(self.refresh_every);
                        retry = (retry * 2).min(RETRY_MAX);
                        if self.loaded() {
                            warn!(error = %err, retry_in = ?wait, "JWKS refresh failed; keeping the last good keys");
                        } else {
                            warn!(error = %err, retry_in = ?wait, "JWKS fetch failed; no keys from jwt.jwks_url yet, tokens they sign are refused");
                        }
                        wait
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Called after a token was refused for `UnknownKey`, with the [`generation`](Self::generation)
    /// read before that verification. Returns true when the keys changed since then (by this
    /// call's fetch, or by one that finished while it waited), so the token is worth verifying
    /// once more. Fetches at most once per [`ON_DEMAND_INTERVAL`].
    pub async fn refetch_for_unknown_key(&self, verifier: &Verifier, seen: u64) -> bool {
        let mut state = self.state.lock().await;
        if self.generation() != seen {
            return true;
        }
        let now = Instant::now();
        if state
            .last_on_demand
            .is_some_and(|last| now.duration_since(last) < ON_DEMAND_INTERVAL)
        {
            debug!("unknown kid: JWKS refetch skipped, one was made less than a minute ago");
            return false;
        }
        state.last_on_demand = Some(now);
        match self.fetch_and_install(&mut state, verifier).await {
            Ok(changed) => changed,
            Err(err) => {
                warn!(error = %err, "JWKS refetch for an unknown kid failed; keeping the last good keys");
                false
            }
        }
    }

    /// One fetch; on success installs static + fetched keys unless the document is unchanged.
    /// Returns whether the keys changed.
    async fn fetch_and_install(
        &self,
        state: &mut State,
        verifier: &Verifier,
    ) -> Result<bool, FetchError> {
        let document = self.fetch().await?;
        if state.document.as_ref() == Some(&document) {
            self.loaded.store(true, Ordering::Release);
            return Ok(false);
        }
        let fetched = KeySet::from_jwks(&self.algorithms, &document)?;
        // The static material was validated at start-up; rebuilding it cannot fail unless the
        // configuration was, and then the fetched keys alone are better than none.
        let keys = match KeySet::build(&self.algorithms, &self.material) {
            Ok(static_keys) => static_keys.merge(fetched),
            Err(err) => {
                warn!(error = %err, "static JWT keys could not be rebuilt; using the JWKS keys alone");
                fetched
            }
        };
        info!(keys = keys.len(), kids = ?keys.kids(), "JWKS keys installed");
        verifier.replace_keys(keys);
        state.document = Some(document);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.loaded.store(true, Ordering::Release);
        Ok(true)
    }

    async fn fetch(&self) -> Result<Bytes, FetchError> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(self.url.clone())
            .header(header::ACCEPT, "application/jwk-set+json, application/json")
            .header(
                header::USER_AGENT,
                concat!("portcullis/", env!("CARGO_PKG_VERSION")),
            )
            .body(body::empty())
            .map_err(|err| FetchError::Unreachable(format!("building the request: {err}")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|err| FetchError::Unreachable(crate::upstream::error_chain(&err)))?;
            let (parts, body) = response.into_parts();
            if !parts.status.is_success() {
                return Err(FetchError::Status(parts.status));
            }
            Limited::new(body, MAX_DOCUMENT)
                .collect()
                .await
                .map(|collected| collected.to_bytes())
                .map_err(|err| FetchError::Read(err.to_string()))
        };
        tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| FetchError::Timeout)?
    }
}
