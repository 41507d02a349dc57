//! The store of a single instance: counters in this process's memory. It is the whole truth
//! without `[cluster]`, and the fallback while Redis cannot be reached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::seal::Id;
use super::{Claim, Count, Revocation, Store, Unreachable, WINDOW};

/// The most counters kept; beyond it, windows that ended are dropped.
const MAX_COUNTERS: usize = 100_000;

/// `(scope, who)`: what is counted, for whom.
type CounterKey = (&'static str, String);

#[derive(Default)]
pub struct LocalStore {
    /// Counter → (window start, events in it).
    windows: Mutex<HashMap<CounterKey, (Instant, u32)>>,
}

impl LocalStore {
    pub fn new() -> LocalStore {
        LocalStore::default()
    }

    /// Counts one event now; never fails.
    pub fn hit_now(&self, scope: &'static str, who: &str) -> Count {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() > MAX_COUNTERS {
            windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let (start, count) = windows.entry((scope, who.to_owned())).or_insert((now, 0));
        if now.duration_since(*start) >= WINDOW {
            *start = now;
            *count = 0;
        }
        *count = count.saturating_add(1);
        Count {
            events: *count,
            resets_in: WINDOW.saturating_sub(now.duration_since(*start)),
        }
    }
}

/// One process has no one to share with: every claim is won, nothing is published or found.
impl Store for LocalStore {
    async fn hit(&self, scope: &'static str, who: &str) -> Result<Count, Unreachable> {
        Ok(self.hit_now(scope, who))
    }

    async fn publish_revocation(&self, _revocation: &Revocation) -> Result<(), Unreachable> {
        Ok(())
    }

    async fn revocations(&self) -> Result<Vec<Revocation>, Unreachable> {
        Ok(Vec::new())
    }

    async fn claim(&self, _key: &Id, _lease: Duration) -> Result<Claim, Unreachable> {
        Ok(Claim::Won(0))
    }

    async fn renew(
        &self,
        _key: &Id,
        _lease_id: u64,
        _lease: Duration,
    ) -> Result<bool, Unreachable> {
        Ok(true)
    }

    async fn release(&self, _key: &Id, _lease_id: u64) -> Result<(), Unreachable> {
        Ok(())
    }

    async fn outcome(&self, _key: &Id) -> Result<Option<Vec<u8>>, Unreachable> {
        Ok(None)
    }

    async fn publish_outcome(
        &self,
        _key: &Id,
        _sealed: Vec<u8>,
        _ttl: Duration,
    ) -> Result<(), Unreachable> {
        Ok(())
    }

    async fn answer(&self, _key: &Id) -> Result<Option<Vec<u8>>, Unreachable> {
        Ok(None)
    }

    async fn record_answer(
        &self,
        _key: &Id,
        _sealed: Vec<u8>,
        _ttl: Duration,
    ) -> Result<(), Unreachable> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_scope_and_subject() {
        let store = LocalStore::new();
        assert_eq!(store.hit_now("login", "192.0.2.1").events, 1);
        assert_eq!(store.hit_now("login", "192.0.2.1").events, 2);
        assert_eq!(store.hit_now("refresh", "192.0.2.1").events, 1);
        assert_eq!(store.hit_now("login", "192.0.2.2").events, 1);
    }
}
