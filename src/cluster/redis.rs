//! The Redis store: shared counters, revocations, refresh claims and outcomes, and session
//! answers, through redis-rs (a `ConnectionManager` for commands, which reconnects by itself,
//! and one pub/sub connection per instance).
//!
//! Keys (all under `cluster.key_prefix`; `<id>` is a hash, never a token):
//! - `count:<scope>:<client address>:<minute>`: `INCR`, expiring after two windows;
//! - `revoked`: a sorted set of revocation records scored by when they lapse; every new one
//!   is also published on the channel `<prefix>revoked`;
//! - `refresh:<id>:lock`: the claim on a refresh call (`SET NX PX`, renewed and released by
//!   compare-and-set scripts); `refresh:<id>`: its sealed outcome, announced on the channel
//!   `<prefix>refreshed`;
//! - `check:<id>`: a sealed session-check answer.
//!
//! Health: the store is *up* while its calls succeed. A failed or late call marks it down
//! (one warning); while down no call is attempted (the caller uses local state at once) and
//! the keeper probes Redis every second. When it answers again, the revocations made here in
//! the meantime are pushed, the full set is loaded, and the store is up again (one notice).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use redis::aio::ConnectionManager;
use tokio::sync::watch;
use tracing::{info, warn};

use super::seal::Id;
use super::{unix_now, Claim, Count, Revocation, Revocations, Store, Unreachable, WINDOW};

/// Revocations made while Redis was away, kept to push when it is back (beyond this many,
/// the oldest are dropped: each instance still holds its own).
const MAX_PENDING: usize = 100_000;

/// Compare-and-set on the lease id, so only the holder extends or drops a claim.
const RENEW: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) else return 0 end"#;
const RELEASE: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end"#;

pub struct RedisStore {
    client: redis::Client,
    manager: ConnectionManager,
    prefix: String,
    timeout: Duration,
    /// The URL without credentials, for log lines.
    shown: String,
    up: AtomicBool,
    revocations: Arc<Revocations>,
    pending: Mutex<Vec<Revocation>>,
    /// Local waiters for a refresh outcome, woken by the `refreshed` channel.
    waiters: Mutex<HashMap<Id, watch::Sender<u64>>>,
    renew: redis::Script,
    release: redis::Script,
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
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout.max(Duration::from_secs(1))))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .map_err(|err| format!("cluster.redis {shown}: {}", err.kind_text()))?;
        crate::telemetry::cluster_connected(false);
        Ok(RedisStore {
            client,
            manager,
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            shown,
            up: AtomicBool::new(false),
            revocations,
            pending: Mutex::new(Vec::new()),
            waiters: Mutex::new(HashMap::new()),
            renew: redis::Script::new(RENEW),
            release: redis::Script::new(RELEASE),
        })
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
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

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// Runs one command with the deadline, recording latency and failures; any failure
    /// marks the store down.
    async fn call<T>(
        &self,
        op: &'static str,
        command: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Unreachable> {
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, command).await;
        let outcome = match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(Unreachable(format!("{op}: {}", err.kind_text()))),
            Err(_) => Err(Unreachable(format!(
                "{op}: no answer within {:?}",
                self.timeout
            ))),
        };
        crate::telemetry::cluster_call(op, started.elapsed(), outcome.is_ok());
        if let Err(err) = &outcome {
            self.mark_down(&err.0);
        }
        outcome
    }

    /// A call made only while the store is up.
    async fn call_if_up<T>(
        &self,
        op: &'static str,
        command: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Unreachable> {
        if !self.is_up() {
            return Err(Unreachable("Redis is down".into()));
        }
        self.call(op, command).await
    }

    /// A receiver that changes whenever an outcome for `key` is announced.
    pub fn watch(&self, key: &Id) -> watch::Receiver<u64> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        waiters.retain(|_, sender| sender.receiver_count() > 0);
        waiters
            .entry(*key)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    fn wake(&self, key: &Id) {
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = waiters.get(key) {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn wake_all(&self) {
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for sender in waiters.values() {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Publishes a revocation, or keeps it for when Redis is back.
    pub async fn share_revocation(&self, revocation: Revocation) {
        if self.publish_revocation(&revocation).await.is_err() {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() >= MAX_PENDING {
                pending.remove(0);
            }
            pending.push(revocation);
        }
    }

    /// Every revocation in force, read even while the store is marked down (start-up, and
    /// `portcullis explain`).
    pub async fn fetch_revocations(&self) -> Result<Vec<Revocation>, Unreachable> {
        let key = self.key("revoked");
        let now = unix_now();
        let mut conn = self.manager.clone();
        let records: Vec<String> = self
            .call(
                "load_revocations",
                redis::cmd("ZRANGEBYSCORE")
                    .arg(&key)
                    .arg(now)
                    .arg("+inf")
                    .query_async(&mut conn),
            )
            .await?;
        Ok(records
            .iter()
            .filter_map(|record| Revocation::decode(record))
            .collect())
    }

    /// Pushes what was revoked here while Redis was away, drops lapsed records, and loads
    /// every revocation in force. On success the store is up.
    async fn catch_up(&self) -> Result<(), Unreachable> {
        let mut conn = self.manager.clone();
        let _: String = self
            .call("ping", redis::cmd("PING").query_async(&mut conn))
            .await?;
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        for (i, revocation) in pending.iter().enumerate() {
            if let Err(err) = self.write_revocation(revocation).await {
                let mut kept = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                kept.extend_from_slice(&pending[i..]);
                return Err(err);
            }
        }
        let key = self.key("revoked");
        let _: i64 = self
            .call(
                "prune_revocations",
                redis::cmd("ZREMRANGEBYSCORE")
                    .arg(&key)
                    .arg("-inf")
                    .arg(format!("({}", unix_now()))
                    .query_async(&mut conn),
            )
            .await?;
        let records = self.fetch_revocations().await?;
        let now = unix_now();
        for record in &records {
            self.revocations.insert(record, now);
        }
        self.mark_up();
        // Waiters may have missed an announcement while the subscription was down.
        self.wake_all();
        Ok(())
    }

    async fn write_revocation(&self, revocation: &Revocation) -> Result<(), Unreachable> {
        let record = revocation.encode();
        let key = self.key("revoked");
        let mut conn = self.manager.clone();
        let _: () = self
            .call(
                "revoke",
                redis::pipe()
                    .atomic()
                    .cmd("ZADD")
                    .arg(&key)
                    .arg(revocation.until())
                    .arg(&record)
                    .ignore()
                    .cmd("PUBLISH")
                    .arg(&key)
                    .arg(&record)
                    .ignore()
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    /// The keeper: holds the subscription, catches up after every (re)connection, probes
    /// Redis while it is down. Runs until dropped.
    pub async fn maintain(&self) {
        let revoked_channel = self.key("revoked");
        let refreshed_channel = self.key("refreshed");
        let mut backoff = Duration::from_millis(200);
        let mut warned_start = false;
        loop {
            let subscribed = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&revoked_channel).await?;
                pubsub.subscribe(&refreshed_channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let pubsub =
                match tokio::time::timeout(self.timeout.max(Duration::from_secs(1)), subscribed)
                    .await
                {
                    Ok(Ok(pubsub)) => Some(pubsub),
                    Ok(Err(err)) => {
                        self.mark_down(&format!("subscribe: {}", err.kind_text()));
                        None
                    }
                    Err(_) => {
                        self.mark_down("subscribe: no answer");
                        None
                    }
                };
            if let Some(pubsub) = pubsub {
                backoff = Duration::from_millis(200);
                let _ = self.catch_up().await;
                let mut messages = pubsub.into_on_message();
                let mut probe = tokio::time::interval(Duration::from_secs(1));
                probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        message = messages.next() => match message {
                            Some(message) => self.on_message(
                                message.get_channel_name(),
                                message.get_payload_bytes(),
                                &revoked_channel,
                            ),
                            None => break,
                        },
                        _ = probe.tick() => {
                            if !self.is_up() {
                                let _ = self.catch_up().await;
                            }
                        }
                    }
                }
                self.mark_down("subscription closed");
            } else if !warned_start && !self.is_up() {
                warned_start = true;
                warn!(redis = %self.shown, "cluster: cannot reach Redis; serving with local state until it answers");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    fn on_message(&self, channel: &str, payload: &[u8], revoked_channel: &str) {
        let Ok(text) = std::str::from_utf8(payload) else {
            return;
        };
        if channel == revoked_channel {
            if let Some(revocation) = Revocation::decode(text) {
                self.revocations.insert(&revocation, unix_now());
            }
        } else if let Some(key) = Id::from_hex(text) {
            self.wake(&key);
        }
    }
}

impl Store for RedisStore {
    async fn hit(&self, scope: &'static str, who: &str) -> Result<Count, Unreachable> {
        let now = unix_now();
        let window = WINDOW.as_secs();
        let key = self.key(&format!("count:{scope}:{who}:{}", now / window));
        let mut conn = self.manager.clone();
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

    async fn publish_revocation(&self, revocation: &Revocation) -> Result<(), Unreachable> {
        if !self.is_up() {
            return Err(Unreachable("Redis is down".into()));
        }
        self.write_revocation(revocation).await
    }

    async fn revocations(&self) -> Result<Vec<Revocation>, Unreachable> {
        self.fetch_revocations().await
    }

    async fn claim(&self, key: &Id, lease: Duration) -> Result<Claim, Unreachable> {
        let lease_id: u64 = rand_u64();
        let mut conn = self.manager.clone();
        let set: Option<String> = self
            .call_if_up(
                "claim",
                redis::cmd("SET")
                    .arg(self.key(&format!("refresh:{}:lock", key.hex())))
                    .arg(lease_id.to_string())
                    .arg("NX")
                    .arg("PX")
                    .arg(lease.as_millis() as u64)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(if set.is_some() {
            Claim::Won(lease_id)
        } else {
            Claim::Held
        })
    }

    async fn renew(&self, key: &Id, lease_id: u64, lease: Duration) -> Result<bool, Unreachable> {
        let mut conn = self.manager.clone();
        let renewed: i64 = self
            .call_if_up(
                "renew",
                self.renew
                    .key(self.key(&format!("refresh:{}:lock", key.hex())))
                    .arg(lease_id.to_string())
                    .arg(lease.as_millis() as u64)
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(renewed == 1)
    }

    async fn release(&self, key: &Id, lease_id: u64) -> Result<(), Unreachable> {
        let mut conn = self.manager.clone();
        let _: i64 = self
            .call_if_up(
                "release",
                self.release
                    .key(self.key(&format!("refresh:{}:lock", key.hex())))
                    .arg(lease_id.to_string())
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    async fn outcome(&self, key: &Id) -> Result<Option<Vec<u8>>, Unreachable> {
        self.get("outcome", &format!("refresh:{}", key.hex())).await
    }

    async fn publish_outcome(
        &self,
        key: &Id,
        sealed: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), Unreachable> {
        let announce = (self.key("refreshed"), key.hex());
        self.set(
            "publish_outcome",
            &format!("refresh:{}", key.hex()),
            sealed,
            ttl,
            Some(announce),
        )
        .await
    }

    async fn answer(&self, key: &Id) -> Result<Option<Vec<u8>>, Unreachable> {
        self.get("answer", &format!("check:{}", key.hex())).await
    }

    async fn record_answer(
        &self,
        key: &Id,
        sealed: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), Unreachable> {
        self.set(
            "record_answer",
            &format!("check:{}", key.hex()),
            sealed,
            ttl,
            None,
        )
        .await
    }
}

impl RedisStore {
    /// `GET <prefix><name>`.
    async fn get(&self, op: &'static str, name: &str) -> Result<Option<Vec<u8>>, Unreachable> {
        let mut conn = self.manager.clone();
        self.call_if_up(
            op,
            redis::cmd("GET").arg(self.key(name)).query_async(&mut conn),
        )
        .await
    }

    /// `SET <prefix><name> value PX ttl`, and `PUBLISH channel message` in the same
    /// transaction when given.
    async fn set(
        &self,
        op: &'static str,
        name: &str,
        value: Vec<u8>,
        ttl: Duration,
        announce: Option<(String, String)>,
    ) -> Result<(), Unreachable> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.key(name))
            .arg(value)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .ignore();
        if let Some((channel, message)) = announce {
            pipe.cmd("PUBLISH").arg(channel).arg(message).ignore();
        }
        let mut conn = self.manager.clone();
        let _: () = self.call_if_up(op, pipe.query_async(&mut conn)).await?;
        Ok(())
    }
}

/// A random lease id.
fn rand_u64() -> u64 {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 8];
    // A failed draw only makes two lease ids more alike; the claim itself is SET NX.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    u64::from_le_bytes(bytes)
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
