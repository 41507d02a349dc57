//! The Redis store: shared counters, revocations, refresh claims and outcomes, and session
//! answers, through redis-rs (a `ConnectionManager` for commands and one pub/sub connection
//! per instance).
//!
//! Keys (all under `cluster.key_prefix`; `<id>` is a hash, never a token):
//! - `count:<scope>:<client address>:<minute>`: `INCR`, expiring after two windows;
//! - `revoked` and `revoked:unproven`: sorted sets of revocation records scored by when they
//!   lapse, each capped (a full set refuses new records); every new record is published on
//!   the channel `<prefix>revoked`, and lapsed ones are pruned by Redis's own clock;
//! - `refresh:<id>:lock`: the claim on a refresh call (taken, renewed and released by
//!   compare-and-set scripts on a lease id); `refresh:<id>`: its sealed outcome (or give-up),
//!   announced on the channel `<prefix>refreshed` by the same script that releases the claim;
//! - `check:<id>`: a sealed session-check answer.
//!
//! Health: the store is *down* once its calls have failed for `max(1 s, 4 × cluster.timeout)`
//! without a success in between, so one slow reply (a fork for `BGSAVE`) does not count. While
//! down, request-path calls are not attempted (the caller uses local state at once) and the
//! keeper reconnects: a new command connection and a new subscription, then up again (one
//! notice). The subscription is pinged every second, so one that went silent without a reset
//! is replaced too. Revocations leave through an outbox that only the keeper
//! (`redis/keeper.rs`) empties, so one made at any moment (before, during or after a
//! reconnect) reaches Redis once it answers.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{oneshot, watch, Notify};
use tokio::time::Instant;
use tracing::{info, warn};

use super::seal::Id;
use super::{Claim, Count, Pending, Revocation, Revocations, Store, Unreachable, WINDOW};

/// Revocations waiting for Redis; beyond this many, the oldest are dropped (each instance
/// still holds its own).
const MAX_PENDING: usize = 100_000;
/// Records read per page while loading the revocation sets.
const PAGE: usize = 2_000;

/// Takes the claim unless an outcome (tag `d`) is there; a claim already held under the same
/// lease id is won again (a retry of a claim whose reply was lost).
const CLAIM: &str = r#"
local value = redis.call("GET", KEYS[1])
if value and string.byte(value, 1) == 100 then return {2, value} end
local holder = redis.call("GET", KEYS[2])
if not holder then
  redis.call("SET", KEYS[2], ARGV[1], "PX", ARGV[2])
  return {1}
end
if holder == ARGV[1] then
  redis.call("PEXPIRE", KEYS[2], ARGV[2])
  return {1}
end
return {0, holder}
"#;
/// Compare-and-set on the lease id, so only the holder extends a claim.
const RENEW: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) else return 0 end"#;
/// Publishes a value, releases the claim if this lease still holds it, and announces it.
const PUBLISH: &str = r#"
redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
if redis.call("GET", KEYS[2]) == ARGV[3] then redis.call("DEL", KEYS[2]) end
redis.call("PUBLISH", ARGV[4], ARGV[5])
return 1
"#;
/// Drops what lapsed (by Redis's clock), refuses a new record into a full set, else adds and
/// announces it.
const REVOKE: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local now = tonumber(redis.call("TIME")[1])
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", "(" .. now)
if not redis.call("ZSCORE", KEYS[1], ARGV[2]) and redis.call("ZCARD", KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call("ZADD", KEYS[1], ARGV[1], ARGV[2])
redis.call("PUBLISH", ARGV[4], ARGV[2])
return 1
"#;

struct Scripts {
    claim: redis::Script,
    renew: redis::Script,
    publish: redis::Script,
    revoke: redis::Script,
}

/// A revocation on its way out, and who wants to hear that it got there.
type Outgoing = (Revocation, Option<oneshot::Sender<()>>);

struct Waiters {
    by_key: HashMap<Id, watch::Sender<u64>>,
    pruned: Instant,
}

pub struct RedisStore {
    client: redis::Client,
    manager_config: ConnectionManagerConfig,
    manager: ArcSwap<ConnectionManager>,
    prefix: String,
    /// Deadline of a request-path call (`cluster.timeout`).
    timeout: Duration,
    /// Deadline of a background call (the keeper's, a page of revocations).
    background: Duration,
    /// How long calls must keep failing for the store to be down.
    down_after: Duration,
    /// The URL without credentials, for log lines.
    shown: String,
    up: AtomicBool,
    /// When the current run of failed calls began (`clock::millis`, plus one); 0 after a
    /// success.
    failing_since: AtomicU64,
    revocations: Arc<Revocations>,
    outbox: Mutex<VecDeque<Outgoing>>,
    outbox_ready: Notify,
    /// Local waiters for a refresh outcome, woken by the `refreshed` channel.
    waiters: Mutex<Waiters>,
    scripts: Scripts,
}

impl RedisStore {
    pub fn new(
        config: &crate::config::Cluster,
        revocations: Arc<Revocations>,
    ) -> Result<RedisStore, String> {
        let shown = config.redis_redacted();
        let client = match &config.ca_pem {
            Some(pem) => redis::Client::build_with_tls(
                config.redis.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => redis::Client::open(config.redis.as_str()),
        }
        .map_err(|err| format!("cluster.redis {shown}: {}", err.kind_text()))?;
        let background = (config.timeout * 4).max(Duration::from_secs(1));
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(background))
            .set_response_timeout(Some(background))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let manager =
            ConnectionManager::new_lazy_with_config(client.clone(), manager_config.clone())
                .map_err(|err| format!("cluster.redis {shown}: {}", err.kind_text()))?;
        crate::telemetry::cluster_connected(false);
        Ok(RedisStore {
            client,
            manager_config,
            manager: ArcSwap::from_pointee(manager),
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            background,
            down_after: background,
            shown,
            up: AtomicBool::new(false),
            failing_since: AtomicU64::new(0),
            revocations,
            outbox: Mutex::new(VecDeque::new()),
            outbox_ready: Notify::new(),
            waiters: Mutex::new(Waiters {
                by_key: HashMap::new(),
                pruned: Instant::now(),
            }),
            scripts: Scripts {
                claim: redis::Script::new(CLAIM),
                renew: redis::Script::new(RENEW),
                publish: redis::Script::new(PUBLISH),
                revoke: redis::Script::new(REVOKE),
            },
        })
    }

    fn mark_down(&self, why: &str) {
        if self.up.swap(false, Ordering::Relaxed) {
            crate::telemetry::cluster_connected(false);
            warn!(redis = %self.shown, reason = why, "cluster: Redis unreachable; carrying on with local state");
        }
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            crate::telemetry::cluster_connected(true);
            info!(redis = %self.shown, "cluster: Redis reachable; state is shared");
        }
    }

    /// A call failed: the store is down once calls have failed for `down_after`.
    fn failed(&self, why: &str) {
        let now = crate::clock::millis(std::time::Instant::now()).saturating_add(1);
        if let Err(since) =
            self.failing_since
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
        {
            let failing = Duration::from_millis(now.saturating_sub(since));
            if failing >= self.down_after {
                self.mark_down(why);
            }
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn conn(&self) -> ConnectionManager {
        ConnectionManager::clone(&self.manager.load())
    }

    /// Runs one command within `within`, recording latency and failures.
    async fn call<T>(
        &self,
        op: &'static str,
        within: Duration,
        command: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Unreachable> {
        let started = std::time::Instant::now();
        let outcome = match tokio::time::timeout(within, command).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(Unreachable(format!("{op}: {}", err.kind_text()))),
            Err(_) => Err(Unreachable(format!("{op}: no answer within {within:?}"))),
        };
        crate::telemetry::cluster_call(op, started.elapsed(), outcome.is_ok());
        match &outcome {
            Ok(_) => self.failing_since.store(0, Ordering::Relaxed),
            Err(err) => self.failed(&err.0),
        }
        outcome
    }

    /// A request-path call: made only while the store is up, within `cluster.timeout`.
    async fn call_if_up<T>(
        &self,
        op: &'static str,
        command: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Unreachable> {
        if !self.is_up() {
            return Err(Unreachable("Redis is down".into()));
        }
        self.call(op, self.timeout, command).await
    }

    fn wake(&self, key: &Id) {
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = waiters.by_key.get(key) {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn wake_all(&self) {
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for sender in waiters.by_key.values() {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// `GET <prefix><name>`.
    async fn get(
        &self,
        op: &'static str,
        name: &str,
        when_down: bool,
    ) -> Result<Option<Vec<u8>>, Unreachable> {
        let mut conn = self.conn();
        let mut get = redis::cmd("GET");
        get.arg(self.key(name));
        let command = get.query_async(&mut conn);
        if when_down {
            self.call(op, self.timeout, command).await
        } else {
            self.call_if_up(op, command).await
        }
    }
}

fn refresh_key(key: &Id) -> String {
    format!("refresh:{}", key.hex())
}

fn lock_key(key: &Id) -> String {
    format!("refresh:{}:lock", key.hex())
}

impl Store for RedisStore {
    fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn watch(&self, key: &Id) -> watch::Receiver<u64> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if waiters.by_key.len() > 1024 && waiters.pruned.elapsed() >= Duration::from_secs(1) {
            waiters
                .by_key
                .retain(|_, sender| sender.receiver_count() > 0);
            waiters.pruned = Instant::now();
        }
        waiters
            .by_key
            .entry(*key)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    fn hit<'a>(&'a self, scope: &'static str, who: &'a str) -> Pending<'a, Count> {
        async move {
            let now = crate::clock::unix_now();
            let window = WINDOW.as_secs();
            let key = self.key(&format!("count:{scope}:{who}:{}", now / window));
            let mut conn = self.conn();
            let (events,): (u32,) = self
                .call_if_up(
                    "count",
                    redis::pipe()
                        .atomic()
                        .cmd("INCR")
                        .arg(&key)
                        .cmd("EXPIRE")
                        .arg(&key)
                        .arg(window * 2)
                        .ignore()
                        .query_async(&mut conn),
                )
                .await?;
            Ok(Count {
                events,
                resets_in: Duration::from_secs(window - now % window),
            })
        }
        .boxed()
    }

    fn claim<'a>(&'a self, key: &'a Id, lease_id: u64, lease: Duration) -> Pending<'a, Claim> {
        async move {
            let mut conn = self.conn();
            let reply: Vec<redis::Value> = self
                .call_if_up(
                    "claim",
                    self.scripts
                        .claim
                        .key(self.key(&refresh_key(key)))
                        .key(self.key(&lock_key(key)))
                        .arg(lease_id.to_string())
                        .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX))
                        .invoke_async(&mut conn),
                )
                .await?;
            let bytes = |value: Option<&redis::Value>| match value {
                Some(redis::Value::BulkString(bytes)) => Some(bytes.clone()),
                _ => None,
            };
            match reply.first() {
                Some(redis::Value::Int(1)) => Ok(Claim::Won),
                Some(redis::Value::Int(2)) => bytes(reply.get(1))
                    .map(Claim::Found)
                    .ok_or_else(|| Unreachable("claim: an outcome without a value".into())),
                Some(redis::Value::Int(0)) => {
                    let holder = bytes(reply.get(1))
                        .and_then(|b| String::from_utf8(b).ok())
                        .and_then(|text| text.parse().ok())
                        // Someone else's claim, whatever its lease id looks like.
                        .unwrap_or(0);
                    Ok(Claim::Held(holder))
                }
                _ => Err(Unreachable("claim: an answer of the wrong shape".into())),
            }
        }
        .boxed()
    }

    fn renew<'a>(&'a self, key: &'a Id, lease_id: u64, lease: Duration) -> Pending<'a, bool> {
        async move {
            let mut conn = self.conn();
            let renewed: i64 = self
                .call(
                    "renew",
                    self.timeout,
                    self.scripts
                        .renew
                        .key(self.key(&lock_key(key)))
                        .arg(lease_id.to_string())
                        .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX))
                        .invoke_async(&mut conn),
                )
                .await?;
            Ok(renewed == 1)
        }
        .boxed()
    }

    fn outcome<'a>(&'a self, key: &'a Id) -> Pending<'a, Option<Vec<u8>>> {
        // Asked by waiters even while the store is marked down: they never call the backend,
        // so the outcome is all they can hope for.
        async move { self.get("outcome", &refresh_key(key), true).await }.boxed()
    }

    fn publish_outcome<'a>(
        &'a self,
        key: &'a Id,
        lease_id: u64,
        value: &'a [u8],
        ttl: Duration,
    ) -> Pending<'a, ()> {
        async move {
            let mut conn = self.conn();
            let _: i64 = self
                .call(
                    "publish_outcome",
                    self.timeout,
                    self.scripts
                        .publish
                        .key(self.key(&refresh_key(key)))
                        .key(self.key(&lock_key(key)))
                        .arg(value)
                        .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
                        .arg(lease_id.to_string())
                        .arg(self.key("refreshed"))
                        .arg(key.hex())
                        .invoke_async(&mut conn),
                )
                .await?;
            Ok(())
        }
        .boxed()
    }

    fn answer<'a>(&'a self, key: &'a Id) -> Pending<'a, Option<Vec<u8>>> {
        async move {
            self.get("answer", &format!("check:{}", key.hex()), false)
                .await
        }
        .boxed()
    }

    fn record_answer<'a>(
        &'a self,
        key: &'a Id,
        sealed: &'a [u8],
        ttl: Duration,
    ) -> Pending<'a, ()> {
        async move {
            let mut conn = self.conn();
            let _: () = self
                .call_if_up(
                    "record_answer",
                    redis::cmd("SET")
                        .arg(self.key(&format!("check:{}", key.hex())))
                        .arg(sealed)
                        .arg("PX")
                        .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
                        .query_async(&mut conn),
                )
                .await?;
            Ok(())
        }
        .boxed()
    }

    fn share_revocation(&self, revocation: Revocation, shared: Option<oneshot::Sender<()>>) {
        {
            let mut outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
            if outbox.len() >= MAX_PENDING {
                outbox.pop_front();
                warn!("cluster: too many revocations wait for Redis; the oldest is kept on this instance only");
            }
            outbox.push_back((revocation, shared));
        }
        self.outbox_ready.notify_one();
    }

    fn load_revocations(&self) -> Pending<'_, Vec<Revocation>> {
        self.fetch_revocations().boxed()
    }

    fn maintain(&self) -> BoxFuture<'_, ()> {
        self.keep().boxed()
    }
}

/// A redis error's kind and detail, without the URL (which may carry a password).
trait KindText {
    fn kind_text(&self) -> String;
}

impl KindText for redis::RedisError {
    fn kind_text(&self) -> String {
        let detail = self.detail().unwrap_or_default();
        format!("{:?} {detail}", self.kind()).trim().to_owned()
    }
}

mod keeper;
#[cfg(test)]
mod tests;
