//! `Cluster::once` against a store that misbehaves: several `Cluster`s on one in-memory store
//! stand for instances on one Redis; time is paused, so leases and deadlines cost nothing.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::memory::{Fault, MemoryStore};
use super::*;

const TOKEN: &str = "refresh-token";
/// The backend's timeout, as `once` is told.
const CALL_WITHIN: Duration = Duration::from_secs(10);
const REUSE_FOR: Duration = Duration::from_secs(10);

fn instances(n: usize) -> (Arc<MemoryStore>, Vec<Arc<Cluster>>) {
    let store = Arc::new(MemoryStore::new());
    let clusters = (0..n)
        .map(|_| Arc::new(Cluster::with_store(store.clone() as Arc<dyn Store>)))
        .collect();
    (store, clusters)
}

/// `once` with a call that counts itself in `calls`, takes `takes`, and shares `share`.
async fn refresh(
    cluster: &Cluster,
    calls: &Arc<AtomicUsize>,
    takes: Duration,
    share: Share,
) -> Flight<usize> {
    let calls = Arc::clone(calls);
    cluster
        .once(TOKEN, REUSE_FOR, CALL_WITHIN, move || async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(takes).await;
            (n, share)
        })
        .await
}

fn tokens() -> Share {
    Share::Outcome(b"new tokens".to_vec())
}

fn spawn_refresh(
    cluster: &Arc<Cluster>,
    calls: &Arc<AtomicUsize>,
    takes: Duration,
    share: Share,
) -> tokio::task::JoinHandle<Flight<usize>> {
    let (cluster, calls) = (Arc::clone(cluster), Arc::clone(calls));
    tokio::spawn(async move { refresh(&cluster, &calls, takes, share).await })
}

fn reused(flight: &Flight<usize>) -> bool {
    matches!(flight, Flight::Reused(plain) if plain == b"new tokens")
}

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
async fn without_a_store_a_call_is_made_here_and_counts_are_local() {
    let cluster = Cluster::local();
    assert!(!cluster.is_shared() && !cluster.connected());
    let calls = Arc::new(AtomicUsize::new(0));
    let flight = refresh(&cluster, &calls, Duration::ZERO, tokens()).await;
    assert!(matches!(flight, Flight::Ran(1)));
    assert_eq!(cluster.hit("login", "192.0.2.1").await.events, 1);
    assert_eq!(cluster.hit("login", "192.0.2.1").await.events, 2);
    assert_eq!(cluster.counted_here("login", "192.0.2.1").events, 2);
    let now = crate::clock::unix_now();
    cluster.revocations().saw_lifetime(600);
    cluster.revoke(Revocation::token(None, TOKEN, now + 60, true));
    assert!(cluster
        .revocations()
        .check(&TokenFacts::opaque(TOKEN), now)
        .is_some());
}

#[tokio::test(start_paused = true)]
async fn a_call_longer_than_the_lease_is_made_once_across_instances() {
    let (store, cluster) = instances(3);
    let calls = Arc::new(AtomicUsize::new(0));
    let takes = LEASE + Duration::from_secs(3);
    let first = spawn_refresh(&cluster[0], &calls, takes, tokens());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = spawn_refresh(&cluster[1], &calls, takes, tokens());
    // After the first lease would have lapsed, had it not been renewed.
    tokio::time::sleep(LEASE + Duration::from_secs(1)).await;
    let third = spawn_refresh(&cluster[2], &calls, takes, tokens());
    assert!(matches!(first.await.expect("task"), Flight::Ran(1)));
    assert!(reused(&second.await.expect("task")));
    assert!(reused(&third.await.expect("task")));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(store.attempts("renew") >= 3, "the lease was renewed");
    // A second later, on another instance: the published outcome, no call.
    let late = refresh(&cluster[1], &calls, takes, tokens()).await;
    assert!(reused(&late));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_never_calls_when_the_store_fails_after_it_saw_the_claim_held() {
    let (store, cluster) = instances(2);
    let calls = Arc::new(AtomicUsize::new(0));
    let holder = spawn_refresh(&cluster[0], &calls, Duration::from_secs(2), tokens());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiter = spawn_refresh(&cluster[1], &calls, Duration::ZERO, tokens());
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The waiter has seen the claim held. Now every look fails, and the store calls itself
    // down; the holder's first attempts to publish fail too.
    store.fault("outcome", Some(Fault::Fail));
    store.fault("publish", Some(Fault::Fail));
    store.set_down(true);
    assert!(matches!(holder.await.expect("task"), Flight::Ran(1)));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter waits, whatever the store does"
    );
    store.fault("outcome", None);
    store.fault("publish", None);
    store.set_down(false);
    assert!(reused(&waiter.await.expect("task")));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(
        store.attempts("publish") > 1,
        "the holder retried its publish"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_store_delays_a_claim_but_never_licenses_a_second_call() {
    let (store, cluster) = instances(2);
    let calls = Arc::new(AtomicUsize::new(0));
    let holder = spawn_refresh(&cluster[0], &calls, Duration::from_secs(1), tokens());
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Claims time out for a while (the store is slow, not down): retried, not called.
    store.fault("claim", Some(Fault::Fail));
    let late = spawn_refresh(&cluster[1], &calls, Duration::ZERO, tokens());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!late.is_finished());
    store.fault("claim", None);
    assert!(matches!(holder.await.expect("task"), Flight::Ran(1)));
    assert!(reused(&late.await.expect("task")));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(store.attempts("claim") > 3);
}

#[tokio::test(start_paused = true)]
async fn a_claim_whose_reply_was_lost_is_won_on_retry() {
    let (store, cluster) = instances(2);
    let calls = Arc::new(AtomicUsize::new(0));
    store.fault("claim", Some(Fault::Lost));
    let first = spawn_refresh(&cluster[0], &calls, Duration::from_secs(1), tokens());
    tokio::time::sleep(Duration::from_millis(10)).await;
    store.fault("claim", None);
    let second = spawn_refresh(&cluster[1], &calls, Duration::from_secs(1), tokens());
    assert!(matches!(first.await.expect("task"), Flight::Ran(1)));
    assert!(reused(&second.await.expect("task")));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_store_down_before_anyone_claimed_costs_one_call_per_instance() {
    let (store, cluster) = instances(2);
    let calls = Arc::new(AtomicUsize::new(0));
    store.set_down(true);
    for cluster in &cluster {
        let flight = refresh(cluster, &calls, Duration::ZERO, tokens()).await;
        assert!(matches!(flight, Flight::Ran(_)));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        store.attempts("claim"),
        0,
        "a store known down is not asked"
    );
    // Down while claiming (before anyone was seen holding the claim): called here.
    store.set_down(false);
    store.fault("claim", Some(Fault::Fail));
    let flight = tokio::spawn({
        let (cluster, calls) = (Arc::clone(&cluster[0]), Arc::clone(&calls));
        async move { refresh(&cluster, &calls, Duration::ZERO, tokens()).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    store.set_down(true);
    assert!(matches!(flight.await.expect("task"), Flight::Ran(3)));
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_gives_up_lets_its_waiters_give_up_and_the_next_request_call() {
    let (_store, cluster) = instances(2);
    let calls = Arc::new(AtomicUsize::new(0));
    let holder = spawn_refresh(&cluster[0], &calls, Duration::from_secs(1), Share::GaveUp);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiter = spawn_refresh(&cluster[1], &calls, Duration::ZERO, tokens());
    assert!(matches!(holder.await.expect("task"), Flight::Ran(1)));
    assert!(matches!(waiter.await.expect("task"), Flight::GaveUp));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "a waiter never calls");
    // The next request finds no outcome to reuse, and tries itself.
    let next = refresh(&cluster[1], &calls, Duration::ZERO, tokens()).await;
    assert!(matches!(next, Flight::Ran(2)));
}

#[tokio::test(start_paused = true)]
async fn an_old_give_up_does_not_end_the_wait_for_a_new_holder() {
    let (store, cluster) = instances(3);
    let calls = Arc::new(AtomicUsize::new(0));
    // An earlier holder gave up.
    let old = refresh(&cluster[0], &calls, Duration::ZERO, Share::GaveUp).await;
    assert!(matches!(old, Flight::Ran(1)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(store.attempts("publish") >= 1);
    // A new holder, and a waiter that must wait for it, not take the old give-up.
    let holder = spawn_refresh(&cluster[1], &calls, Duration::from_secs(2), tokens());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiter = spawn_refresh(&cluster[2], &calls, Duration::ZERO, tokens());
    assert!(matches!(holder.await.expect("task"), Flight::Ran(2)));
    assert!(reused(&waiter.await.expect("task")));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_gives_up_without_calling_when_the_holder_vanishes() {
    let (store, cluster) = instances(1);
    let calls = Arc::new(AtomicUsize::new(0));
    // A holder that dies mid-call: its claim lapses, nothing is ever published.
    store.plant_claim(&Id::of("refresh", TOKEN.as_bytes()), 42, LEASE);
    let started = Instant::now();
    let flight = refresh(&cluster[0], &calls, Duration::ZERO, tokens()).await;
    assert!(matches!(flight, Flight::Stuck));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(started.elapsed() >= CALL_WITHIN + LEASE * 2);
}

#[tokio::test(start_paused = true)]
async fn garbage_under_the_outcome_is_never_taken_for_tokens() {
    let (store, cluster) = instances(1);
    let calls = Arc::new(AtomicUsize::new(0));
    let key = Id::of("refresh", TOKEN.as_bytes());
    // Sealed under another secret, or not sealed at all.
    let other = seal_outcome(
        &Sealer::new("refresh", b"another token"),
        &key,
        &tokens(),
        1,
    )
    .expect("sealed");
    for value in [other, b"d{\"access\":\"forged\"}".to_vec()] {
        store.plant_value(&key, value, Duration::from_secs(1));
        let flight = refresh(&cluster[0], &calls, Duration::ZERO, tokens()).await;
        assert!(matches!(flight, Flight::Stuck), "{flight:?}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[test]
fn outcomes_are_sealed_with_their_tag() {
    let key = Id::of("refresh", TOKEN.as_bytes());
    let sealer = Sealer::new("refresh", TOKEN.as_bytes());
    let value = seal_outcome(&sealer, &key, &tokens(), 7).expect("sealed");
    assert!(is_outcome(&value));
    assert!(!value.windows(10).any(|w| w == b"new tokens"));
    assert!(matches!(
        open_outcome(&sealer, &key, &value),
        Some(Opened::Outcome(plain)) if plain == b"new tokens"
    ));
    let gave_up = seal_outcome(&sealer, &key, &Share::GaveUp, 7).expect("sealed");
    assert!(!is_outcome(&gave_up));
    assert!(matches!(
        open_outcome(&sealer, &key, &gave_up),
        Some(Opened::GaveUp(7))
    ));
    // The outer tag cannot be flipped: the sealed one disagrees.
    let mut flipped = gave_up.clone();
    flipped[0] = DONE;
    assert!(open_outcome(&sealer, &key, &flipped).is_none());
}

#[tokio::test(start_paused = true)]
async fn every_instance_waits_for_a_slow_store() {
    let (store, cluster) = instances(3);
    let calls = Arc::new(AtomicUsize::new(0));
    store.slow(Duration::from_millis(300));
    let flights: Vec<_> = cluster
        .iter()
        .map(|cluster| spawn_refresh(cluster, &calls, Duration::from_millis(100), tokens()))
        .collect();
    let mut ran = 0;
    for flight in flights {
        match flight.await.expect("task") {
            Flight::Ran(_) => ran += 1,
            other => assert!(reused(&other), "{other:?}"),
        }
    }
    assert_eq!((ran, calls.load(Ordering::SeqCst)), (1, 1));
}
