//! An in-memory [`Store`] for unit tests: several [`Cluster`](super::Cluster)s on one
//! `MemoryStore` stand for several instances on one Redis, and [`Fault`]s make any operation
//! fail, fail after taking effect (a reply lost to a timeout), or go slow, so that `once` can
//! be tested against every way a store misbehaves. Time is tokio's, so tests may pause it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::seal::Id;
use super::{is_outcome, Claim, Count, Pending, Revocation, Store, Unreachable};

/// How an operation misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Fails without taking effect.
    Fail,
    /// Takes effect, then fails (its reply was lost).
    Lost,
}

#[derive(Default)]
struct State {
    locks: HashMap<Id, (u64, Instant)>,
    values: HashMap<Id, (Vec<u8>, Instant)>,
    answers: HashMap<Id, (Vec<u8>, Instant)>,
    counts: HashMap<String, u32>,
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    down: AtomicBool,
    faults: Mutex<HashMap<&'static str, Fault>>,
    delay: Mutex<Duration>,
    waiters: Mutex<HashMap<Id, watch::Sender<u64>>>,
    /// Operations attempted, by name.
    attempts: Mutex<HashMap<&'static str, usize>>,
    shared: AtomicUsize,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Makes `op` (`claim`, `renew`, `outcome`, `publish`, …) misbehave, or behave again.
    pub fn fault(&self, op: &'static str, fault: Option<Fault>) {
        let mut faults = self.faults.lock().expect("faults");
        match fault {
            Some(fault) => faults.insert(op, fault),
            None => faults.remove(op),
        };
    }

    /// Every operation takes this long before it acts.
    pub fn slow(&self, delay: Duration) {
        *self.delay.lock().expect("delay") = delay;
    }

    /// Whether the store reports itself down.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn attempts(&self, op: &'static str) -> usize {
        self.attempts
            .lock()
            .expect("attempts")
            .get(op)
            .copied()
            .unwrap_or(0)
    }

    /// A claim held by someone else (a holder that will die), for `lease`.
    pub fn plant_claim(&self, key: &Id, lease_id: u64, lease: Duration) {
        let mut state = self.state.lock().expect("state");
        state.locks.insert(*key, (lease_id, Instant::now() + lease));
    }

    /// A value published for `key` (by someone else), for `ttl`.
    pub fn plant_value(&self, key: &Id, value: Vec<u8>, ttl: Duration) {
        let mut state = self.state.lock().expect("state");
        state.values.insert(*key, (value, Instant::now() + ttl));
    }

    fn op<'a, T: Send + 'a>(
        &'a self,
        name: &'static str,
        apply: impl FnOnce(&mut State, Instant) -> T + Send + 'a,
    ) -> Pending<'a, T> {
        async move {
            *self
                .attempts
                .lock()
                .expect("attempts")
                .entry(name)
                .or_default() += 1;
            let delay = *self.delay.lock().expect("delay");
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let fault = self.faults.lock().expect("faults").get(name).copied();
            if fault == Some(Fault::Fail) {
                return Err(Unreachable(format!("{name}: injected failure")));
            }
            let now = Instant::now();
            let result = {
                let mut state = self.state.lock().expect("state");
                apply(&mut state, now)
            };
            match fault {
                Some(_) => Err(Unreachable(format!("{name}: reply lost"))),
                None => Ok(result),
            }
        }
        .boxed()
    }

    fn wake(&self, key: &Id) {
        if let Some(sender) = self.waiters.lock().expect("waiters").get(key) {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

fn live<V>(entry: Option<&(V, Instant)>, now: Instant) -> Option<&V> {
    entry.filter(|(_, until)| *until > now).map(|(v, _)| v)
}

impl Store for MemoryStore {
    fn is_up(&self) -> bool {
        !self.down.load(Ordering::SeqCst)
    }

    fn watch(&self, key: &Id) -> watch::Receiver<u64> {
        self.waiters
            .lock()
            .expect("waiters")
            .entry(*key)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    fn hit<'a>(&'a self, scope: &'static str, who: &'a str) -> Pending<'a, Count> {
        self.op("hit", move |state, _| {
            let count = state.counts.entry(format!("{scope}:{who}")).or_default();
            *count += 1;
            Count {
                events: *count,
                resets_in: super::WINDOW,
            }
        })
    }

    fn claim<'a>(&'a self, key: &'a Id, lease_id: u64, lease: Duration) -> Pending<'a, Claim> {
        self.op("claim", move |state, now| {
            if let Some(value) = live(state.values.get(key), now) {
                if is_outcome(value) {
                    return Claim::Found(value.clone());
                }
            }
            match live(state.locks.get(key), now) {
                Some(&holder) if holder != lease_id => Claim::Held(holder),
                _ => {
                    state.locks.insert(*key, (lease_id, now + lease));
                    Claim::Won
                }
            }
        })
    }

    fn renew<'a>(&'a self, key: &'a Id, lease_id: u64, lease: Duration) -> Pending<'a, bool> {
        self.op("renew", move |state, now| {
            match live(state.locks.get(key), now) {
                Some(&holder) if holder == lease_id => {
                    state.locks.insert(*key, (lease_id, now + lease));
                    true
                }
                _ => false,
            }
        })
    }

    fn outcome<'a>(&'a self, key: &'a Id) -> Pending<'a, Option<Vec<u8>>> {
        self.op("outcome", move |state, now| {
            live(state.values.get(key), now).cloned()
        })
    }

    fn publish_outcome<'a>(
        &'a self,
        key: &'a Id,
        lease_id: u64,
        value: &'a [u8],
        ttl: Duration,
    ) -> Pending<'a, ()> {
        async move {
            self.op("publish", move |state, now| {
                state.values.insert(*key, (value.to_vec(), now + ttl));
                if live(state.locks.get(key), now) == Some(&lease_id) {
                    state.locks.remove(key);
                }
            })
            .await?;
            self.wake(key);
            Ok(())
        }
        .boxed()
    }

    fn answer<'a>(&'a self, key: &'a Id) -> Pending<'a, Option<Vec<u8>>> {
        self.op("answer", move |state, now| {
            live(state.answers.get(key), now).cloned()
        })
    }

    fn record_answer<'a>(
        &'a self,
        key: &'a Id,
        sealed: &'a [u8],
        ttl: Duration,
    ) -> Pending<'a, ()> {
        self.op("record_answer", move |state, now| {
            state.answers.insert(*key, (sealed.to_vec(), now + ttl));
        })
    }

    fn share_revocation(&self, _revocation: Revocation, shared: Option<oneshot::Sender<()>>) {
        self.shared.fetch_add(1, Ordering::SeqCst);
        if let Some(shared) = shared {
            let _ = shared.send(());
        }
    }

    fn load_revocations(&self) -> Pending<'_, Vec<Revocation>> {
        self.op("load", |_, _| Vec::new())
    }

    fn maintain(&self) -> BoxFuture<'_, ()> {
        futures_util::future::pending().boxed()
    }
}
