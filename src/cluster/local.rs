//! This process's counters (login attempts, refresh budget): the whole truth without
//! `[cluster]`, and the fallback while the shared store cannot be reached.
//!
//! It is not a [`Store`](super::Store): an instance alone shares nothing, and what a local
//! store would do for the rest (every claim won, nothing published, nothing found) is what
//! [`Cluster`](super::Cluster) does when no store is up.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Count, WINDOW};

/// Above this many counters, windows that ended are dropped (at most once a second).
const PRUNE_ABOVE: usize = 10_000;
/// The most counters kept: past it (after pruning) a new client is not counted, so a flood of
/// addresses costs no memory and locks no one out. (An attacker who holds that many
/// addresses has that many budgets anyway.)
const MAX_COUNTERS: usize = 200_000;

/// `(scope, who)`: what is counted, for whom.
type CounterKey = (&'static str, String);

struct Windows {
    /// Counter → (window start, events in it).
    counters: HashMap<CounterKey, (Instant, u32)>,
    pruned: Instant,
}

pub struct LocalStore {
    windows: Mutex<Windows>,
}

impl Default for LocalStore {
    fn default() -> Self {
        LocalStore {
            windows: Mutex::new(Windows {
                counters: HashMap::new(),
                pruned: Instant::now(),
            }),
        }
    }
}

impl LocalStore {
    pub fn new() -> LocalStore {
        LocalStore::default()
    }

    /// Counts one event now; never fails.
    pub fn hit(&self, scope: &'static str, who: &str) -> Count {
        self.count(scope, who, 1)
    }

    /// The events counted in the current window, without counting one.
    pub fn peek(&self, scope: &'static str, who: &str) -> Count {
        self.count(scope, who, 0)
    }

    fn count(&self, scope: &'static str, who: &str, add: u32) -> Count {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let Windows { counters, pruned } = &mut *windows;
        if counters.len() > PRUNE_ABOVE && now.duration_since(*pruned) >= Duration::from_secs(1) {
            counters.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            *pruned = now;
        }
        let key = (scope, who.to_owned());
        if !counters.contains_key(&key) && (add == 0 || counters.len() >= MAX_COUNTERS) {
            return Count {
                events: add,
                resets_in: WINDOW,
            };
        }
        let (start, count) = counters.entry(key).or_insert((now, 0));
        if now.duration_since(*start) >= WINDOW {
            *start = now;
            *count = 0;
        }
        *count = count.saturating_add(add);
        Count {
            events: *count,
            resets_in: WINDOW.saturating_sub(now.duration_since(*start)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_scope_and_subject() {
        let store = LocalStore::new();
        assert_eq!(store.peek("login", "192.0.2.1").events, 0);
        assert_eq!(store.hit("login", "192.0.2.1").events, 1);
        assert_eq!(store.hit("login", "192.0.2.1").events, 2);
        assert_eq!(store.peek("login", "192.0.2.1").events, 2);
        assert_eq!(store.hit("refresh", "192.0.2.1").events, 1);
        assert_eq!(store.hit("login", "192.0.2.2").events, 1);
    }

    #[test]
    fn a_flood_of_clients_is_bounded() {
        let store = LocalStore::new();
        for i in 0..MAX_COUNTERS + 10 {
            store.hit("login", &i.to_string());
        }
        let windows = store.windows.lock().expect("lock");
        assert_eq!(windows.counters.len(), MAX_COUNTERS);
        drop(windows);
        // Past the cap, a new client is not counted; those counted before still are.
        assert_eq!(store.hit("login", "late").events, 1);
        assert_eq!(store.hit("login", "late").events, 1);
        assert_eq!(store.hit("login", "0").events, 2);
    }
}
