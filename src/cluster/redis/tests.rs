//! The Redis store against a real `redis-server` (started here on a free loopback port with
//! its own directory, no persistence, killed at the end): the scripts, paged loading, caps,
//! and when calls that fail make the store down.

use std::process::{Child, Command, Stdio};

use super::*;
use crate::cluster::revocations::MAX_UNPROVEN;
use crate::cluster::{is_outcome, LEASE};

struct Server {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn redis_server() -> Server {
    let dir = tempfile::tempdir().expect("a directory");
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (the Debian package) is installed");
    let server = Server {
        port,
        child,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "redis-server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server
}

fn store_on(port: u16) -> RedisStore {
    let config = crate::config::Cluster {
        redis: format!("redis://127.0.0.1:{port}/0"),
        key_prefix: "unit:".into(),
        timeout: Duration::from_millis(200),
        ca_pem: None,
    };
    let store = RedisStore::new(&config, Arc::new(Revocations::new())).expect("a store");
    store.mark_up();
    store
}

#[tokio::test]
async fn claims_are_taken_renewed_found_and_released_by_lease_id() {
    let server = redis_server().await;
    let store = store_on(server.port);
    let key = Id::of("refresh", b"token");
    let lease = Duration::from_secs(6);
    assert_eq!(
        store.claim(&key, 1, lease).await.expect("claim"),
        Claim::Won
    );
    assert_eq!(
        store.claim(&key, 1, lease).await.expect("claim"),
        Claim::Won,
        "the same lease id wins again (a retried claim)"
    );
    assert_eq!(
        store.claim(&key, 2, lease).await.expect("claim"),
        Claim::Held(1)
    );
    assert!(store.renew(&key, 1, lease).await.expect("renew"));
    assert!(!store.renew(&key, 2, lease).await.expect("renew"));
    // A give-up ('g') releases the claim but is no outcome: the next claim is won.
    let mut woken = store.watch(&key);
    store
        .publish_outcome(&key, 1, b"g-sealed", Duration::from_secs(10))
        .await
        .expect("publish");
    assert_eq!(
        store.claim(&key, 3, lease).await.expect("claim"),
        Claim::Won
    );
    // An outcome ('d') ends every later claim, and releases only its own lease.
    store
        .publish_outcome(&key, 1, b"d-sealed", Duration::from_secs(10))
        .await
        .expect("publish");
    assert!(is_outcome(b"d-sealed"));
    assert_eq!(
        store.claim(&key, 4, lease).await.expect("claim"),
        Claim::Found(b"d-sealed".to_vec())
    );
    assert!(
        store.renew(&key, 3, lease).await.expect("renew"),
        "lease 3 still holds"
    );
    assert_eq!(
        store.outcome(&key).await.expect("outcome").as_deref(),
        Some(&b"d-sealed"[..])
    );
    // Without the keeper's subscription nothing wakes the waiter; the receiver is live.
    assert!(!woken.has_changed().expect("the sender lives"));
    woken.mark_unchanged();
}

#[tokio::test]
async fn revocations_are_written_capped_and_loaded_page_by_page() {
    let server = redis_server().await;
    let store = store_on(server.port);
    let until = crate::clock::unix_now() + 3600;
    let count = PAGE * 2 + 17;
    for i in 0..count {
        store
            .write_revocation(&Revocation::token(Some(&i.to_string()), "", until, true))
            .await
            .expect("write");
    }
    // A lapsed record, written straight in, is pruned by the next write (Redis's clock).
    let mut conn = store.conn();
    let lapsed = Revocation::token(Some("old"), "", 1, true).encode();
    let _: i64 = redis::cmd("ZADD")
        .arg("unit:revoked")
        .arg(1)
        .arg(&lapsed)
        .query_async(&mut conn)
        .await
        .expect("ZADD");
    store
        .write_revocation(&Revocation::token(None, "refresh", until, false))
        .await
        .expect("write");
    store
        .write_revocation(&Revocation::token(Some("last"), "", until, true))
        .await
        .expect("write");
    let score: Option<f64> = redis::cmd("ZSCORE")
        .arg("unit:revoked")
        .arg(&lapsed)
        .query_async(&mut conn)
        .await
        .expect("ZSCORE");
    assert_eq!(score, None, "lapsed records are pruned");
    let loaded = store.fetch_revocations().await.expect("load");
    assert_eq!(loaded.len(), count + 2);
    assert_eq!(loaded.iter().filter(|r| r.is_unproven()).count(), 1);
    store.load().await.expect("load");
    assert_eq!(store.revocations.len(), count + 2);
}

#[tokio::test]
async fn a_full_shared_set_refuses_new_records() {
    let server = redis_server().await;
    let store = store_on(server.port);
    let until = crate::clock::unix_now() + 3600;
    let mut conn = store.conn();
    // Fill the unproven set to its cap straight in Redis.
    for chunk in 0..MAX_UNPROVEN / 10_000 {
        let mut zadd = redis::cmd("ZADD");
        zadd.arg("unit:revoked:unproven");
        for i in chunk * 10_000..(chunk + 1) * 10_000 {
            zadd.arg(until).arg(format!("u:{i:032x}{:032x}:{until}", 0));
        }
        let _: i64 = zadd.query_async(&mut conn).await.expect("ZADD");
    }
    store
        .write_revocation(&Revocation::token(None, "one more", until, false))
        .await
        .expect("write");
    let size: usize = redis::cmd("ZCARD")
        .arg("unit:revoked:unproven")
        .query_async(&mut conn)
        .await
        .expect("ZCARD");
    assert_eq!(size, MAX_UNPROVEN, "refused");
    // Proven ones have their own set.
    store
        .write_revocation(&Revocation::token(None, "proven", until, true))
        .await
        .expect("write");
    let size: usize = redis::cmd("ZCARD")
        .arg("unit:revoked")
        .query_async(&mut conn)
        .await
        .expect("ZCARD");
    assert_eq!(size, 1);
}

#[tokio::test]
async fn one_failed_call_is_slow_calls_failing_for_a_while_are_down() {
    // Nothing listens here: every call fails at once.
    let store = store_on(free_port());
    let key = Id::of("refresh", b"token");
    assert!(store.outcome(&key).await.is_err());
    assert!(store.is_up(), "one failure is not an outage");
    let started = Instant::now();
    while store.is_up() {
        assert!(
            started.elapsed() < store.down_after * 3,
            "still up after failing for {:?}",
            started.elapsed()
        );
        let _ = store.outcome(&key).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() >= store.down_after / 2);
    // While down, request-path calls are not even attempted.
    let before = Instant::now();
    assert!(store.claim(&key, 1, LEASE).await.is_err());
    assert!(before.elapsed() < Duration::from_millis(50));
}
