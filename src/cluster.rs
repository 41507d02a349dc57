//! State shared by every instance: revocations, login and refresh counters, one backend
//! refresh per refresh token, and the backend's answers about sessions.
//!
//! [`Cluster`] is what the rest of the proxy talks to. It always keeps a local copy of what
//! the request path reads (the [`Revocations`] set) and local counters ([`LocalStore`]), so
//! checking a token never waits on the network. With `[cluster] redis` it also talks to a
//! [`Store`] shared by every instance: the [`RedisStore`] (and, in unit tests, an in-memory
//! store that injects faults). Every store call has a deadline; while the store is down the
//! instance carries on with local state, so a Redis outage costs sharing, never service.
//!
//! **Invariant:** Redis never holds a usable token. Key names are hashes of the secrets they
//! concern, a published refresh outcome or session answer is sealed under a key derived from
//! the token it answers (`cluster/seal.rs`), and a revocation is an id and a time.
//!
//! **Invariant:** while the store is up (even slow), two instances never both call the
//! backend with one refresh token: an instance calls only after winning the claim, or after
//! the store was found down before it saw anyone hold the claim; an instance that saw the
//! claim held waits for the outcome and, if none comes in time, gives up without calling.
//!
//! # Layout
//! - `cluster/seal.rs`: ids (hashes) and AEAD sealing.
//! - `cluster/revocations.rs`: the in-memory revocation set the request path checks.
//! - `cluster/local.rs`: this process's counters.
//! - `cluster/redis.rs`: the Redis store: commands, pub/sub, health, catch-up.
//! - `cluster/memory.rs` (tests): an in-memory store that injects faults.

mod local;
#[cfg(test)]
mod memory;
mod redis;
pub mod revocations;
pub mod seal;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::warn;

pub use local::LocalStore;
pub use redis::RedisStore;
pub use revocations::{Inserted, Revocation, Revocations, Revoked, TokenFacts};
use seal::{Id, Sealer};

/// The length of a counting window (login attempts, refresh budget).
pub const WINDOW: Duration = Duration::from_secs(60);

/// How long a refresh claim is held before it must be renewed; renewed every third of it
/// while the backend call is in flight, so it outlives the call it protects however long
/// that takes, and lapses soon after an instance that held it dies.
pub const LEASE: Duration = Duration::from_secs(6);

/// How often a waiter looks for an outcome when no announcement woke it.
const POLL: Duration = Duration::from_millis(500);
/// The pause before trying a claim again after the store failed to answer.
const RETRY: Duration = Duration::from_millis(50);

/// A store could not be asked (down, slow, refused); the caller carries on locally.
#[derive(Debug, Clone)]
pub struct Unreachable(pub String);

/// Events counted in the current window.
#[derive(Debug, Clone, Copy)]
pub struct Count {
    /// This one included.
    pub events: u32,
    pub resets_in: Duration,
}

/// The result of claiming the right to make a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Ours (under the lease id the claim was made with; claiming again with it wins again,
    /// so a claim whose answer was lost can be retried).
    Won,
    /// Another instance holds it, under this lease id.
    Held(u64),
    /// The call was made already: its published outcome.
    Found(Vec<u8>),
}

/// What the instance that made a call leaves for the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Share {
    /// This, sealed, for the reuse window.
    Outcome(Vec<u8>),
    /// Nothing: it could not get an answer (the backend down, the client over budget). Its
    /// waiters give up; the next request tries again.
    GaveUp,
}

/// A future a store call returns.
pub type Pending<'a, T> = BoxFuture<'a, Result<T, Unreachable>>;

/// A store shared by every instance. Keys are [`Id`]s; values are sealed by the caller.
pub trait Store: Send + Sync {
    /// Whether calls are worth making now. A slow call does not make a store down; calls
    /// failing for a while do.
    fn is_up(&self) -> bool;
    /// A receiver that changes whenever an outcome for `key` is announced.
    fn watch(&self, key: &Id) -> watch::Receiver<u64>;
    /// Counts one event of `scope` for `who` (a client address) in the current window.
    fn hit<'a>(&'a self, scope: &'static str, who: &'a str) -> Pending<'a, Count>;
    /// Claims the call for `key` for `lease` under `lease_id`, unless its outcome is there.
    fn claim<'a>(&'a self, key: &'a Id, lease_id: u64, lease: Duration) -> Pending<'a, Claim>;
    /// Extends a claim still held under `lease_id`; `false` if it was lost.
    fn renew<'a>(&'a self, key: &'a Id, lease_id: u64, lease: Duration) -> Pending<'a, bool>;
    /// The value published for `key`, if any.
    fn outcome<'a>(&'a self, key: &'a Id) -> Pending<'a, Option<Vec<u8>>>;
    /// Publishes `value` for `ttl`, wakes the instances waiting for it, and releases the
    /// claim if `lease_id` still holds it: one atomic step.
    fn publish_outcome<'a>(
        &'a self,
        key: &'a Id,
        lease_id: u64,
        value: &'a [u8],
        ttl: Duration,
    ) -> Pending<'a, ()>;
    /// A sealed answer recorded for `key` (the backend's word on a session).
    fn answer<'a>(&'a self, key: &'a Id) -> Pending<'a, Option<Vec<u8>>>;
    fn record_answer<'a>(&'a self, key: &'a Id, sealed: &'a [u8], ttl: Duration)
        -> Pending<'a, ()>;
    /// Queues a revocation for every instance (now, or when the store is back); `shared`
    /// hears when it got there.
    fn share_revocation(&self, revocation: Revocation, shared: Option<oneshot::Sender<()>>);
    /// Every revocation the store holds in force.
    fn load_revocations(&self) -> Pending<'_, Vec<Revocation>>;
    /// Keeps the connection: subscriptions, health, catch-up. Runs until dropped.
    fn maintain(&self) -> BoxFuture<'_, ()>;
}

/// How a call coordinated across instances ended.
#[derive(Debug)]
pub enum Flight<T> {
    /// This instance made the call.
    Ran(T),
    /// Another instance made it; this is what it published.
    Reused(Vec<u8>),
    /// Another instance made it and got no answer it could share.
    GaveUp,
    /// Another instance holds the call and neither finished nor gave it up in time.
    Stuck,
}

/// The shared state of this process: the revocation set, the local counters, and the shared
/// store when configured. Lives as long as the process, across configuration reloads.
pub struct Cluster {
    revocations: Arc<Revocations>,
    local: LocalStore,
    store: Option<Arc<dyn Store>>,
    /// How long an operator's revocation waits to hear that every instance was told.
    share_wait: Duration,
}

impl Cluster {
    /// Shared state for one instance alone.
    pub fn local() -> Cluster {
        Cluster {
            revocations: Arc::new(Revocations::new()),
            local: LocalStore::new(),
            store: None,
            share_wait: Duration::ZERO,
        }
    }

    /// Shared state as `[cluster]` says. Connecting happens in [`Cluster::maintain`]; until
    /// it succeeds the instance works with local state.
    pub fn new(config: Option<&crate::config::Cluster>) -> Result<Cluster, String> {
        let Some(config) = config else {
            return Ok(Cluster::local());
        };
        let revocations = Arc::new(Revocations::new());
        let store = RedisStore::new(config, Arc::clone(&revocations))?;
        Ok(Cluster {
            revocations,
            local: LocalStore::new(),
            store: Some(Arc::new(store)),
            share_wait: (config.timeout * 4).max(Duration::from_secs(1)),
        })
    }

    /// Shared state on `store` (unit tests: several `Cluster`s on one in-memory store stand
    /// for several instances on one Redis).
    #[cfg(test)]
    pub(crate) fn with_store(store: Arc<dyn Store>) -> Cluster {
        Cluster {
            revocations: Arc::new(Revocations::new()),
            local: LocalStore::new(),
            store: Some(store),
            share_wait: Duration::from_secs(1),
        }
    }

    /// Whether `[cluster] redis` is configured.
    pub fn is_shared(&self) -> bool {
        self.store.is_some()
    }

    /// Whether the shared store is reachable now (always `false` without `[cluster]`).
    pub fn connected(&self) -> bool {
        self.store.as_ref().is_some_and(|store| store.is_up())
    }

    /// Keeps the connection to the shared store (see [`Store::maintain`]). Returns at once
    /// without `[cluster]`.
    pub async fn maintain(&self) {
        if let Some(store) = &self.store {
            store.maintain().await;
        }
    }

    /// The set the request path checks.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// Revokes at once here, and on every instance as soon as the store takes it (now, or
    /// when it is back). Only what is new here is passed on.
    pub fn revoke(&self, revocation: Revocation) -> Inserted {
        let inserted = self
            .revocations
            .insert(&revocation, crate::clock::unix_now());
        if inserted == Inserted::New {
            if let Some(store) = &self.store {
                store.share_revocation(revocation, None);
            }
        }
        inserted
    }

    /// Like [`Cluster::revoke`], always passed on, waiting a moment to hear that it was:
    /// `Some(true)` when every instance was told, `Some(false)` when only this one knows yet
    /// (it is passed on when the store is back), `None` without `[cluster]`.
    pub async fn revoke_everywhere(&self, revocation: Revocation) -> Option<bool> {
        self.revocations
            .insert(&revocation, crate::clock::unix_now());
        let store = self.store.as_ref()?;
        let (told, heard) = oneshot::channel();
        store.share_revocation(revocation, Some(told));
        Some(matches!(
            tokio::time::timeout(self.share_wait, heard).await,
            Ok(Ok(()))
        ))
    }

    /// Counts one event of `scope` for `who` across every instance (locally when the store
    /// cannot be asked). The local count is kept either way, so an outage starts from it.
    pub async fn hit(&self, scope: &'static str, who: &str) -> Count {
        let local = self.local.hit(scope, who);
        match &self.store {
            Some(store) if store.is_up() => store.hit(scope, who).await.unwrap_or(local),
            _ => local,
        }
    }

    /// Events of `scope` for `who` this instance alone counted in the current window.
    pub fn counted_here(&self, scope: &'static str, who: &str) -> Count {
        self.local.peek(scope, who)
    }

    /// Runs `call` for `secret` once across every instance: the first instance to claim it
    /// makes the call and publishes what `call` gives to share (sealed, for `reuse_for`);
    /// the others wait for that (woken by pub/sub, never by asking the backend) and get it
    /// as [`Flight::Reused`], or [`Flight::GaveUp`] if the caller had nothing to share.
    /// `call_within` bounds the call, so a waiter gives up ([`Flight::Stuck`]) only when
    /// the holder must have died without publishing.
    ///
    /// Without the store, or once it is down before anyone was seen holding the claim, the
    /// call is made here: an outage costs at most one call per instance. A claim that goes
    /// unanswered while the store is up (slow) is retried, never taken as a licence to call.
    pub async fn once<T, Fut>(
        &self,
        secret: &str,
        reuse_for: Duration,
        call_within: Duration,
        call: impl FnOnce() -> Fut,
    ) -> Flight<T>
    where
        Fut: Future<Output = (T, Share)>,
    {
        let Some(store) = self.store.as_ref().filter(|s| s.is_up()) else {
            return Flight::Ran(call().await.0);
        };
        let key = Id::of("refresh", secret.as_bytes());
        let sealer = Sealer::new("refresh", secret.as_bytes());
        let deadline = Instant::now() + call_within + LEASE * 2;
        let mut wake = store.watch(&key);
        let lease_id = random_u64();
        let holder = loop {
            match store.claim(&key, lease_id, LEASE).await {
                Ok(Claim::Won) => {
                    let flight = hold(store, &key, &sealer, lease_id, reuse_for, call).await;
                    return flight;
                }
                Ok(Claim::Found(value)) => match open_outcome(&sealer, &key, &value) {
                    Some(Opened::Outcome(plain)) => return Flight::Reused(plain),
                    // Not sealed under this secret: garbage. Wait like for a holder.
                    _ => break None,
                },
                Ok(Claim::Held(holder)) => break Some(holder),
                // Down before anyone was seen holding the claim: the call is made here. (If
                // the lost claim did land, this instance holds it, and still publishes.)
                Err(_) if !store.is_up() => {
                    return hold(store, &key, &sealer, lease_id, reuse_for, call).await;
                }
                Err(_) => {
                    if Instant::now() >= deadline {
                        return stuck();
                    }
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        // Another instance holds the call: wait for what it publishes. Never call, whatever
        // the store does: it may have spent the token already.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return stuck();
            }
            if let Ok(Err(_)) = tokio::time::timeout(left.min(POLL), wake.changed()).await {
                // The notifier went away (a reconnect): look at the poll's pace.
                tokio::time::sleep(left.min(POLL)).await;
            }
            if let Ok(Some(value)) = store.outcome(&key).await {
                match open_outcome(&sealer, &key, &value) {
                    Some(Opened::Outcome(plain)) => return Flight::Reused(plain),
                    // Only the holder seen gives up for its waiters: an older give-up is
                    // no news about the call in flight.
                    Some(Opened::GaveUp(by)) if Some(by) == holder => return Flight::GaveUp,
                    _ => {}
                }
            }
        }
    }

    /// The answer another instance recorded for `secret` under `purpose`, opened.
    pub async fn shared_answer(&self, purpose: &str, secret: &str) -> Option<Vec<u8>> {
        let store = self.store.as_ref().filter(|s| s.is_up())?;
        let key = Id::of(purpose, secret.as_bytes());
        let sealed = store.answer(&key).await.ok()??;
        Sealer::new(purpose, secret.as_bytes()).open(&sealed, &key)
    }

    /// Records an answer about `secret` for every instance, for `ttl`, in the background.
    pub fn share_answer(&self, purpose: &str, secret: &str, plain: &[u8], ttl: Duration) {
        let Some(store) = self.store.as_ref().filter(|s| s.is_up()) else {
            return;
        };
        let key = Id::of(purpose, secret.as_bytes());
        let Some(sealed) = Sealer::new(purpose, secret.as_bytes()).seal(plain, &key) else {
            return;
        };
        let store = Arc::clone(store);
        tokio::spawn(async move {
            let _ = store.record_answer(&key, &sealed, ttl).await;
        });
    }

    /// Every revocation the shared store holds, loaded here (for `portcullis explain`):
    /// `None` without `[cluster]` or when the store cannot be read.
    pub async fn load_revocations(&self) -> Option<usize> {
        let store = self.store.as_ref()?;
        let records = store.load_revocations().await.ok()?;
        let now = crate::clock::unix_now();
        for record in &records {
            self.revocations.insert(record, now);
        }
        Some(records.len())
    }
}

/// A waiter that gave up on another instance's call.
fn stuck<T>() -> Flight<T> {
    crate::telemetry::cluster_event("stuck");
    warn!("cluster: another instance's refresh neither finished nor gave up in time");
    Flight::Stuck
}

/// Makes the call under a claim won with `lease_id`: renews the lease while the call is in
/// flight, then publishes what it gives to share (retrying for the reuse window: a waiter
/// never calls, so it must hear) and releases the claim.
async fn hold<T, Fut>(
    store: &Arc<dyn Store>,
    key: &Id,
    sealer: &Sealer,
    lease_id: u64,
    reuse_for: Duration,
    call: impl FnOnce() -> Fut,
) -> Flight<T>
where
    Fut: Future<Output = (T, Share)>,
{
    let (result, share) = {
        let call = call();
        tokio::pin!(call);
        let mut renew = tokio::time::interval_at(Instant::now() + LEASE / 3, LEASE / 3);
        let mut lost = false;
        loop {
            tokio::select! {
                done = &mut call => break done,
                _ = renew.tick() => {
                    // A lost lease only risks a second call elsewhere; this one goes on.
                    if let Ok(false) = store.renew(key, lease_id, LEASE).await {
                        if !lost {
                            lost = true;
                            crate::telemetry::cluster_event("lease_lost");
                            warn!("cluster: a refresh outlived its claim (another instance may call the backend too)");
                        }
                    }
                }
            }
        }
    };
    if let Some(value) = seal_outcome(sealer, key, &share, lease_id) {
        let store = Arc::clone(store);
        let key = *key;
        tokio::spawn(async move {
            let until = Instant::now() + reuse_for;
            let mut pause = Duration::from_millis(50);
            loop {
                let ttl = until.saturating_duration_since(Instant::now());
                if ttl.is_zero() {
                    crate::telemetry::cluster_event("unpublished");
                    warn!(
                        "cluster: a refresh outcome could not be published within the reuse window"
                    );
                    return;
                }
                if store
                    .publish_outcome(&key, lease_id, &value, ttl)
                    .await
                    .is_ok()
                {
                    return;
                }
                tokio::time::sleep(pause.min(ttl)).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        });
    }
    Flight::Ran(result)
}

/// A published value: a tag byte the store can read (`d`: an outcome, which ends a claim;
/// `g`: a give-up, which does not), then the seal of the tag and the content, so that the
/// tag cannot be changed either.
const DONE: u8 = b'd';
const GAVE_UP: u8 = b'g';

enum Opened {
    Outcome(Vec<u8>),
    /// By the holder with this lease id.
    GaveUp(u64),
}

fn seal_outcome(sealer: &Sealer, key: &Id, share: &Share, lease_id: u64) -> Option<Vec<u8>> {
    let mut plain = Vec::new();
    match share {
        Share::Outcome(content) => {
            plain.push(DONE);
            plain.extend_from_slice(content);
        }
        Share::GaveUp => {
            plain.push(GAVE_UP);
            plain.extend_from_slice(&lease_id.to_be_bytes());
        }
    }
    let sealed = sealer.seal(&plain, key)?;
    let mut value = Vec::with_capacity(1 + sealed.len());
    value.push(plain[0]);
    value.extend_from_slice(&sealed);
    Some(value)
}

fn open_outcome(sealer: &Sealer, key: &Id, value: &[u8]) -> Option<Opened> {
    let (&tag, sealed) = value.split_first()?;
    let plain = sealer.open(sealed, key)?;
    let (&inner, content) = plain.split_first()?;
    match (tag, inner) {
        (DONE, DONE) => Some(Opened::Outcome(content.to_vec())),
        (GAVE_UP, GAVE_UP) => Some(Opened::GaveUp(u64::from_be_bytes(content.try_into().ok()?))),
        _ => None,
    }
}

/// Whether a published value is an outcome (which ends claims), by its tag alone.
pub fn is_outcome(value: &[u8]) -> bool {
    value.first() == Some(&DONE)
}

/// A random lease id.
fn random_u64() -> u64 {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 8];
    // A failed draw only makes two lease ids more alike; the claim itself is SET NX.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// The key a client is counted under: its address, or for IPv6 its /64 (a client usually
/// holds a whole /64, and counting each address would hand it 2^64 budgets).
pub fn client_key(ip: std::net::IpAddr) -> String {
    // An IPv4-mapped address is the IPv4 client it stands for, never part of a shared
    // `::ffff:0:0/64`.
    match crate::unmapped(ip) {
        std::net::IpAddr::V6(v6) => {
            let network = std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1));
            format!("{network}/64")
        }
        v4 => v4.to_string(),
    }
}

#[cfg(test)]
mod tests;
