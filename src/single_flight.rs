//! One call per key however many callers want it at once: the first caller's call runs in a
//! task of its own (so a caller that goes away does not cancel it), later callers wait for
//! its result, and a finished result may stay joinable for a while (a refresh's reuse
//! window). Token renewal (`auth/refresh.rs`) and the backend session check
//! (`auth/session_check.rs`) both go through it.
//!
//! The table is bounded: past `max` flights a new key is refused ([`Full`]) rather than
//! started, and finished flights that may no longer be joined are dropped (when they finish,
//! or by a prune at most once a second).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Above this many flights, a join first drops the finished ones that may not be joined.
const PRUNE_ABOVE: usize = 1024;

/// Whether a finished result, this old, may still be joined.
pub type Keep<V> = fn(&V, Duration) -> bool;

type Slot<V> = watch::Receiver<Option<(V, Instant)>>;

struct Table<K, V> {
    flights: HashMap<K, Slot<V>>,
    pruned: Instant,
}

pub struct SingleFlight<K, V> {
    table: Arc<Mutex<Table<K, V>>>,
    max: usize,
    keep: Keep<V>,
}

/// The table holds `max` flights already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// A place in a flight: its result, once there is one.
pub struct Ticket<V>(Slot<V>);

impl<V: Clone> Ticket<V> {
    /// The flight's result; `None` only if its task ended without one (a panic).
    pub async fn wait(mut self) -> Option<V> {
        let result = self.0.wait_for(Option::is_some).await.ok()?;
        result.as_ref().map(|(value, _)| value.clone())
    }
}

fn joinable<V>(slot: &Slot<V>, keep: Keep<V>) -> bool {
    match &*slot.borrow() {
        // In the air, unless its task is gone.
        None => slot.has_changed().is_ok(),
        Some((value, finished)) => keep(value, finished.elapsed()),
    }
}

impl<K, V> SingleFlight<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(max: usize, keep: Keep<V>) -> SingleFlight<K, V> {
        SingleFlight {
            table: Arc::new(Mutex::new(Table {
                flights: HashMap::new(),
                pruned: Instant::now(),
            })),
            max,
            keep,
        }
    }

    /// Joins the flight for `key`, or starts `start()` as a new one in its own task.
    pub fn join<F, Fut>(&self, key: K, start: F) -> Result<Ticket<V>, Full>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let keep = self.keep;
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if table.flights.len() > PRUNE_ABOVE && table.pruned.elapsed() >= Duration::from_secs(1) {
            table.flights.retain(|_, slot| joinable(slot, keep));
            table.pruned = Instant::now();
        }
        match table.flights.get(&key) {
            Some(slot) if joinable(slot, keep) => return Ok(Ticket(slot.clone())),
            Some(_) => {}
            None if table.flights.len() >= self.max => return Err(Full),
            None => {}
        }
        let (sender, slot) = watch::channel(None);
        table.flights.insert(key.clone(), slot.clone());
        drop(table);
        let call = start();
        let weak = Arc::downgrade(&self.table);
        tokio::spawn(async move {
            let value = call.await;
            let kept = keep(&value, Duration::ZERO);
            sender.send_replace(Some((value, Instant::now())));
            if !kept {
                if let Some(table) = weak.upgrade() {
                    let mut table = table.lock().unwrap_or_else(|p| p.into_inner());
                    // Only this flight: a later one may hold the key by now.
                    if table
                        .flights
                        .get(&key)
                        .is_some_and(|slot| slot.same_channel(&sender.subscribe()))
                    {
                        table.flights.remove(&key);
                    }
                }
            }
        });
        Ok(Ticket(slot))
    }

    /// Flights remembered (in the air, or finished and joinable).
    pub fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .flights
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn never(_: &u32, _: Duration) -> bool {
        false
    }

    fn for_a_second(_: &u32, age: Duration) -> bool {
        age < Duration::from_secs(1)
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_call() {
        let flights = SingleFlight::<&str, u32>::new(10, never);
        let calls = Arc::new(AtomicUsize::new(0));
        let (go, gate) = tokio::sync::oneshot::channel::<()>();
        let start = |calls: Arc<AtomicUsize>| {
            move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                7
            }
        };
        let first = flights
            .join("k", {
                let calls = Arc::clone(&calls);
                move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let _ = gate.await;
                    7
                }
            })
            .expect("room");
        let second = flights.join("k", start(Arc::clone(&calls))).expect("room");
        go.send(()).expect("the flight waits");
        assert_eq!(first.wait().await, Some(7));
        assert_eq!(second.wait().await, Some(7));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Not kept: the next caller starts another, and the finished one left the table.
        tokio::task::yield_now().await;
        assert!(flights.is_empty());
        let third = flights.join("k", start(Arc::clone(&calls))).expect("room");
        assert_eq!(third.wait().await, Some(7));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_result_is_reused_until_it_ages() {
        let flights = SingleFlight::<&str, u32>::new(10, for_a_second);
        let calls = Arc::new(AtomicUsize::new(0));
        let start = || {
            let calls = Arc::clone(&calls);
            move || async move { calls.fetch_add(1, Ordering::SeqCst) as u32 }
        };
        assert_eq!(
            flights.join("k", start()).expect("room").wait().await,
            Some(0)
        );
        assert_eq!(
            flights.join("k", start()).expect("room").wait().await,
            Some(0)
        );
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert_eq!(
            flights.join("k", start()).expect("room").wait().await,
            Some(1)
        );
    }

    #[tokio::test]
    async fn a_full_table_refuses_new_keys_but_joins_old_ones() {
        let flights = SingleFlight::<u32, u32>::new(2, never);
        let (_hold, gate) = tokio::sync::watch::channel(());
        for key in 0..2 {
            let mut gate = gate.clone();
            flights
                .join(key, move || async move {
                    let _ = gate.changed().await;
                    key
                })
                .expect("room");
        }
        assert!(flights.join(2, || async { 2 }).is_err());
        assert!(flights.join(1, || async { 9 }).is_ok(), "joining is free");
    }

    #[tokio::test]
    async fn a_flight_whose_task_died_is_not_joined() {
        let flights = SingleFlight::<u32, u32>::new(2, never);
        let ticket = flights
            .join(1, || async { panic!("the call panics") })
            .expect("room");
        assert_eq!(ticket.wait().await, None);
        let again = flights.join(1, || async { 5 }).expect("room");
        assert_eq!(again.wait().await, Some(5));
    }
}
