//! The keeper of the Redis store: one task per instance that holds the subscription (pinged
//! every second), reconnects when Redis stops answering or the subscription goes silent,
//! empties the revocation outbox in order, and loads the shared revocation sets page by page
//! after every (re)connection.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use redis::aio::ConnectionManager;
use tracing::warn;

use super::super::revocations::{MAX_ENTRIES, MAX_UNPROVEN};
use super::super::seal::Id;
use super::super::{Revocation, Store as _, Unreachable};
use super::{KindText as _, RedisStore, PAGE};

impl RedisStore {
    /// The set a revocation is kept in, and that set's cap.
    fn set_of(&self, revocation: &Revocation) -> (String, usize) {
        if revocation.is_unproven() {
            (self.key("revoked:unproven"), MAX_UNPROVEN)
        } else {
            (self.key("revoked"), MAX_ENTRIES)
        }
    }

    pub(super) async fn write_revocation(
        &self,
        revocation: &Revocation,
    ) -> Result<(), Unreachable> {
        let record = revocation.encode();
        let (set, cap) = self.set_of(revocation);
        let mut conn = self.conn();
        let added: i64 = self
            .call(
                "revoke",
                self.background,
                self.scripts
                    .revoke
                    .key(set)
                    .arg(revocation.until())
                    .arg(&record)
                    .arg(cap)
                    .arg(self.key("revoked"))
                    .invoke_async(&mut conn),
            )
            .await?;
        if added == 0 {
            crate::telemetry::revocations_refused("shared_full");
            warn!(
                "cluster: Redis's revocation set is full: a revocation stays on this instance only"
            );
        }
        Ok(())
    }

    /// Writes what the outbox holds, in order, while Redis takes it.
    async fn flush(&self) {
        while self.is_up() {
            let next = self
                .outbox
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            let Some((revocation, shared)) = next else {
                return;
            };
            if self.write_revocation(&revocation).await.is_err() {
                self.outbox
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_front((revocation, shared));
                return;
            }
            if let Some(shared) = shared {
                let _ = shared.send(());
            }
        }
    }

    fn has_outgoing(&self) -> bool {
        !self
            .outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Every revocation in force, read page by page (each page with its own deadline), even
    /// while the store is marked down (start-up, `portcullis explain`).
    pub(super) async fn fetch_revocations(&self) -> Result<Vec<Revocation>, Unreachable> {
        let now = crate::clock::unix_now();
        let mut records = Vec::new();
        for set in [self.key("revoked"), self.key("revoked:unproven")] {
            let mut cursor = 0u64;
            loop {
                let mut conn = self.conn();
                let (next, page): (u64, Vec<(String, f64)>) = self
                    .call(
                        "load_revocations",
                        self.background,
                        redis::cmd("ZSCAN")
                            .arg(&set)
                            .arg(cursor)
                            .arg("COUNT")
                            .arg(PAGE)
                            .query_async(&mut conn),
                    )
                    .await?;
                records.extend(
                    page.iter()
                        .filter(|(_, score)| *score >= now as f64)
                        .filter_map(|(record, _)| Revocation::decode(record)),
                );
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(records)
    }

    /// Loads every revocation in force into the local set.
    pub(super) async fn load(&self) -> Result<(), Unreachable> {
        let records = self.fetch_revocations().await.inspect_err(|err| {
            warn!(redis = %self.shown, reason = %err.0, "cluster: cannot load the shared revocations yet; trying again");
        })?;
        let now = crate::clock::unix_now();
        for record in &records {
            self.revocations.insert(record, now);
        }
        Ok(())
    }

    /// After a (re)connection: Redis answers, so the store is up; waiters look again (they
    /// may have missed an announcement) and the outbox is emptied.
    async fn catch_up(&self) -> Result<(), Unreachable> {
        let mut conn = self.conn();
        let _: String = self
            .call(
                "ping",
                self.background,
                redis::cmd("PING").query_async(&mut conn),
            )
            .await?;
        self.mark_up();
        self.wake_all();
        self.flush().await;
        Ok(())
    }

    async fn subscribe(&self, channels: &[String]) -> redis::RedisResult<redis::aio::PubSub> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        for channel in channels {
            pubsub.subscribe(channel).await?;
        }
        Ok(pubsub)
    }

    /// The keeper: holds the subscription, catches up after every (re)connection, empties
    /// the outbox, and reconnects when Redis stops answering. Runs until dropped.
    pub(super) async fn keep(&self) {
        let revoked_channel = self.key("revoked");
        let channels = [revoked_channel.clone(), self.key("refreshed")];
        let mut backoff = Duration::from_millis(200);
        let mut warned_start = false;
        // Whether the command connection may be the one that went silent.
        let mut suspect = false;
        loop {
            if std::mem::take(&mut suspect) {
                // Whatever ended the last subscription may have silenced the command
                // connection too, and a silent one may never fail on its own: start anew.
                match ConnectionManager::new_lazy_with_config(
                    self.client.clone(),
                    self.manager_config.clone(),
                ) {
                    Ok(manager) => self.manager.store(Arc::new(manager)),
                    Err(err) => self.failed(&format!("connect: {}", err.kind_text())),
                }
            }
            let started = std::time::Instant::now();
            let subscribed = tokio::time::timeout(self.background, self.subscribe(&channels)).await;
            let ok = matches!(subscribed, Ok(Ok(_)));
            crate::telemetry::cluster_call("subscribe", started.elapsed(), ok);
            let pubsub = match subscribed {
                Ok(Ok(pubsub)) => Some(pubsub),
                Ok(Err(err)) => {
                    self.failed(&format!("subscribe: {}", err.kind_text()));
                    None
                }
                Err(_) => {
                    self.failed("subscribe: no answer");
                    None
                }
            };
            let Some(pubsub) = pubsub else {
                if !warned_start && !self.is_up() {
                    warned_start = true;
                    warn!(redis = %self.shown, "cluster: cannot reach Redis; serving with local state until it answers");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            };
            if self.catch_up().await.is_err() {
                suspect = true;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
            backoff = Duration::from_millis(200);
            let mut loaded = self.load().await.is_ok();
            let (mut sink, mut messages) = pubsub.split();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                    () = self.outbox_ready.notified() => self.flush().await,
                    _ = tick.tick() => {
                        if !self.is_up() {
                            break;
                        }
                        // A subscription cut without a reset never ends the stream: ask it.
                        let pong = tokio::time::timeout(self.background, sink.ping::<redis::Value>()).await;
                        if !matches!(pong, Ok(Ok(_))) {
                            warn!(redis = %self.shown, "cluster: the subscription stopped answering; subscribing again");
                            break;
                        }
                        if self.has_outgoing() {
                            self.flush().await;
                        }
                        if !loaded {
                            loaded = self.load().await.is_ok();
                        }
                    }
                }
            }
            suspect = true;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn on_message(&self, channel: &str, payload: &[u8], revoked_channel: &str) {
        let Ok(text) = std::str::from_utf8(payload) else {
            return;
        };
        if channel == revoked_channel {
            if let Some(revocation) = Revocation::decode(text) {
                self.revocations
                    .insert(&revocation, crate::clock::unix_now());
            }
        } else if let Some(key) = Id::from_hex(text) {
            self.wake(&key);
        }
    }
}
