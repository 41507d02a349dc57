//! State shared by every instance: revocations, login and refresh counters, one backend
//! refresh per refresh token, and the backend's answers about sessions.
//!
//! [`Cluster`] is what the rest of the proxy talks to. It always keeps a local copy of what
//! the request path reads (the [`Revocations`] set), so checking a token never waits on the
//! network. Behind it sits a [`Store`]: the [`LocalStore`] of this process, and with
//! `[cluster] redis` the [`RedisStore`] shared by every instance. Every Redis call has a
//! deadline (`cluster.timeout`); a call that fails, and every call while Redis is known to be
//! down, falls back to the local store, so a Redis outage costs sharing, never service.
//!
//! **Invariant:** Redis never holds a usable token. Key names are hashes of the secrets they
//! concern, a published refresh outcome or session answer is sealed under a key derived from
//! the token it answers (`cluster/seal.rs`), and a revocation is an id and a time.
//!
//! # Layout
//! - `cluster/seal.rs`: ids (hashes) and AEAD sealing.
//! - `cluster/revocations.rs`: the in-memory revocation set the request path checks.
//! - `cluster/local.rs`: the store of a single instance.
//! - `cluster/redis.rs`: the Redis store: commands, pub/sub, health, catch-up.

mod local;
mod redis;
pub mod revocations;
pub mod seal;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use local::LocalStore;
pub use redis::RedisStore;
pub use revocations::{Revocation, Revocations, Revoked, TokenFacts};
use seal::{Id, Sealer};

/// The length of a counting window (login attempts, refresh budget).
pub const WINDOW: Duration = Duration::from_secs(60);

/// How long a refresh lock is held before it must be renewed; renewed every third of it
/// while the backend call is in flight, so it outlives the call it protects however long
/// that takes, and lapses soon after an instance that held it dies.
pub const LEASE: Duration = Duration::from_secs(6);

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Ours, under this lease id (to renew and release it).
    Won(u64),
    /// Another instance holds it.
    Held,
}

/// What every store offers: the local one trivially (there is no one else), the Redis one
/// shared by all instances.
pub trait Store: Send + Sync {
    /// Counts one event of `scope` for `who` (a client address) in the current window.
    fn hit(
        &self,
        scope: &'static str,
        who: &str,
    ) -> impl Future<Output = Result<Count, Unreachable>> + Send;
    /// Records a revocation and tells every instance.
    fn publish_revocation(
        &self,
        revocation: &Revocation,
    ) -> impl Future<Output = Result<(), Unreachable>> + Send;
    /// Every revocation still in force.
    fn revocations(&self) -> impl Future<Output = Result<Vec<Revocation>, Unreachable>> + Send;
    /// Claims the call for `key` for `lease`.
    fn claim(
        &self,
        key: &Id,
        lease: Duration,
    ) -> impl Future<Output = Result<Claim, Unreachable>> + Send;
    /// Extends a claim still held under `lease_id`; `false` if it was lost.
    fn renew(
        &self,
        key: &Id,
        lease_id: u64,
        lease: Duration,
    ) -> impl Future<Output = Result<bool, Unreachable>> + Send;
    fn release(
        &self,
        key: &Id,
        lease_id: u64,
    ) -> impl Future<Output = Result<(), Unreachable>> + Send;
    /// The sealed outcome published for `key`, if any.
    fn outcome(
        &self,
        key: &Id,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, Unreachable>> + Send;
    /// Publishes a sealed outcome for `ttl` and wakes the instances waiting for it.
    fn publish_outcome(
        &self,
        key: &Id,
        sealed: Vec<u8>,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), Unreachable>> + Send;
    /// A sealed answer recorded for `key` (the backend's word on a session).
    fn answer(&self, key: &Id)
        -> impl Future<Output = Result<Option<Vec<u8>>, Unreachable>> + Send;
    fn record_answer(
        &self,
        key: &Id,
        sealed: Vec<u8>,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), Unreachable>> + Send;
}

/// How a call coordinated across instances ended.
#[derive(Debug)]
pub enum Flight<T> {
    /// This instance made the call.
    Ran(T),
    /// Another instance made it; this is what it published.
    Reused(Vec<u8>),
    /// Another instance holds the call and neither finished nor gave it up in time.
    Stuck,
}

/// The shared state of this process: the revocation set, the local store, and Redis when
/// configured. Lives as long as the process, across configuration reloads.
pub struct Cluster {
    revocations: Arc<Revocations>,
    local: LocalStore,
    redis: Option<Arc<RedisStore>>,
}

impl Cluster {
    /// Shared state for one instance alone.
    pub fn local() -> Cluster {
        Cluster {
            revocations: Arc::new(Revocations::new()),
            local: LocalStore::new(),
            redis: None,
        }
    }

    /// Shared state as `[cluster]` says. Connecting happens in [`Cluster::maintain`]; until
    /// it succeeds the instance works with local state.
    pub fn new(config: Option<&crate::config::Cluster>) -> Result<Cluster, String> {
        let revocations = Arc::new(Revocations::new());
        let redis = match config {
            Some(config) => Some(Arc::new(RedisStore::new(config, Arc::clone(&revocations))?)),
            None => None,
        };
        Ok(Cluster {
            revocations,
            local: LocalStore::new(),
            redis,
        })
    }

    /// Whether `[cluster] redis` is configured.
    pub fn is_shared(&self) -> bool {
        self.redis.is_some()
    }

    /// Whether Redis is reachable now (always `false` without `[cluster]`).
    pub fn connected(&self) -> bool {
        self.redis.as_ref().is_some_and(|redis| redis.is_up())
    }

    /// Keeps the connection to Redis: subscribes to revocations and refresh outcomes, loads
    /// the revocations at start-up and after every reconnect, pushes the ones made while
    /// Redis was away, and probes it while it is down. Returns at once without `[cluster]`.
    pub async fn maintain(&self) {
        if let Some(redis) = &self.redis {
            redis.maintain().await;
        }
    }

    /// The set the request path checks.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// Revokes at once here, and on every instance as soon as Redis takes it (now, or when
    /// it is back).
    pub fn revoke(&self, revocation: Revocation) {
        self.revocations.insert(&revocation, unix_now());
        if let Some(redis) = &self.redis {
            let redis = Arc::clone(redis);
            tokio::spawn(async move { redis.share_revocation(revocation).await });
        }
    }

    /// Counts one event of `scope` for `who` across every instance (locally when Redis cannot
    /// be asked). The local count is kept either way, so a Redis outage starts from it.
    pub async fn hit(&self, scope: &'static str, who: &str) -> Count {
        let local = self.local.hit_now(scope, who);
        match &self.redis {
            Some(redis) if redis.is_up() => redis.hit(scope, who).await.unwrap_or(local),
            _ => local,
        }
    }

    /// Runs `call` for `secret` once across every instance: the first instance to claim it
    /// makes the call and publishes what `call` gives to share (sealed, for `reuse_for`);
    /// the others wait for that (woken by pub/sub, never by asking the backend) and get it
    /// as [`Flight::Reused`]. `call_within` bounds the call, so a waiter gives up
    /// ([`Flight::Stuck`]) only when the holder must have died without releasing its claim.
    ///
    /// Without Redis, or when it fails before the call is claimed, the call is made here:
    /// a Redis outage costs at most one call per instance.
    pub async fn once<T, Fut>(
        &self,
        secret: &str,
        reuse_for: Duration,
        call_within: Duration,
        call: impl FnOnce() -> Fut,
    ) -> Flight<T>
    where
        Fut: Future<Output = (T, Option<Vec<u8>>)>,
    {
        let Some(redis) = self.redis.as_ref().filter(|r| r.is_up()) else {
            return Flight::Ran(call().await.0);
        };
        let key = Id::of("refresh", secret.as_bytes());
        let sealer = Sealer::new("refresh", secret.as_bytes());
        let deadline = tokio::time::Instant::now() + call_within + LEASE * 2;
        let mut wake = redis.watch(&key);
        let lease_id = loop {
            match redis.outcome(&key).await {
                Ok(Some(sealed)) => {
                    if let Some(plain) = sealer.open(&sealed, &key) {
                        return Flight::Reused(plain);
                    }
                    // Not sealed under this secret: somebody wrote garbage there. Ignore it.
                }
                Ok(None) => {}
                Err(_) => return Flight::Ran(call().await.0),
            }
            match redis.claim(&key, LEASE).await {
                Ok(Claim::Won(lease_id)) => break lease_id,
                Ok(Claim::Held) => {}
                Err(_) => return Flight::Ran(call().await.0),
            }
            // Another instance is calling: wait for its outcome, or for its claim to lapse.
            if tokio::time::Instant::now() >= deadline {
                return Flight::Stuck;
            }
            if let Ok(Err(_)) =
                tokio::time::timeout(Duration::from_millis(500), wake.changed()).await
            {
                // The notifier went away (a reconnect): look again at a slower pace.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        };
        // Published between our last look and the claim: use it, give the claim back.
        if let Ok(Some(sealed)) = redis.outcome(&key).await {
            if let Some(plain) = sealer.open(&sealed, &key) {
                let _ = redis.release(&key, lease_id).await;
                return Flight::Reused(plain);
            }
        }
        let (result, share) = {
            let call = call();
            tokio::pin!(call);
            let mut renew = tokio::time::interval(LEASE / 3);
            renew.tick().await;
            loop {
                tokio::select! {
                    done = &mut call => break done,
                    _ = renew.tick() => {
                        // A lost lease only risks a second call elsewhere; this one goes on.
                        let _ = redis.renew(&key, lease_id, LEASE).await;
                    }
                }
            }
        };
        if let Some(plain) = share {
            if let Some(sealed) = sealer.seal(&plain, &key) {
                let _ = redis.publish_outcome(&key, sealed, reuse_for).await;
            }
        }
        let _ = redis.release(&key, lease_id).await;
        Flight::Ran(result)
    }

    /// The answer another instance recorded for `secret` under `purpose`, opened.
    pub async fn shared_answer(&self, purpose: &str, secret: &str) -> Option<Vec<u8>> {
        let redis = self.redis.as_ref().filter(|r| r.is_up())?;
        let key = Id::of(purpose, secret.as_bytes());
        let sealed = redis.answer(&key).await.ok()??;
        Sealer::new(purpose, secret.as_bytes()).open(&sealed, &key)
    }

    /// Records an answer about `secret` for every instance, for `ttl`, in the background.
    pub fn share_answer(&self, purpose: &str, secret: &str, plain: &[u8], ttl: Duration) {
        let Some(redis) = self.redis.as_ref().filter(|r| r.is_up()) else {
            return;
        };
        let key = Id::of(purpose, secret.as_bytes());
        let Some(sealed) = Sealer::new(purpose, secret.as_bytes()).seal(plain, &key) else {
            return;
        };
        let redis = Arc::clone(redis);
        tokio::spawn(async move {
            let _ = redis.record_answer(&key, sealed, ttl).await;
        });
    }

    /// Every revocation Redis holds (for `portcullis explain`): `None` without `[cluster]`
    /// or when Redis cannot be asked.
    pub async fn load_revocations(&self) -> Option<usize> {
        let redis = self.redis.as_ref()?;
        let records = redis.fetch_revocations().await.ok()?;
        let now = unix_now();
        for record in &records {
            self.revocations.insert(record, now);
        }
        Some(records.len())
    }
}

/// Unix seconds now.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
mod tests {
    use super::*;

    #[test]
    fn clients_are_counted_per_address_and_per_ipv6_64() {
        let key = |text: &str| client_key(text.parse().expect("ip"));
        assert_eq!(key("192.0.2.1"), "192.0.2.1");
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("2001:db8::1"), key("2001:db8::ffff:2"));
        assert_ne!(key("2001:db8::1"), key("2001:db8:0:1::1"));
        assert_eq!(key("::ffff:192.0.2.1"), "192.0.2.1");
        assert_ne!(key("::ffff:192.0.2.1"), key("::ffff:192.0.2.2"));
    }

    #[tokio::test]
    async fn without_redis_a_call_is_made_here_and_counts_are_local() {
        let cluster = Cluster::local();
        assert!(!cluster.is_shared() && !cluster.connected());
        let flight = cluster
            .once(
                "token",
                Duration::from_secs(1),
                Duration::from_secs(1),
                || async { (7, Some(b"shared".to_vec())) },
            )
            .await;
        assert!(matches!(flight, Flight::Ran(7)));
        assert_eq!(cluster.hit("login", "192.0.2.1").await.events, 1);
        assert_eq!(cluster.hit("login", "192.0.2.1").await.events, 2);
        cluster.revoke(Revocation::secret("refresh-token", unix_now() + 60));
        assert!(cluster
            .revocations()
            .secret_revoked("refresh-token", unix_now()));
    }
}
