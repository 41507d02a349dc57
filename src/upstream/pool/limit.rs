//! The cap on one upstream's connections (`upstreams.<name>.max_connections`).
//!
//! Every connection, idle or busy, HTTP/1.1 or HTTP/2, holds one permit until it closes. A
//! request that finds no idle connection and no permit waits for either: a permit freed by a
//! connection that closed, or a connection handed over by a request that just finished with
//! it. Handing over happens only while requests wait (one atomic load per check-in otherwise),
//! and crosses threads, which is why it goes through a lock here rather than a thread's own
//! idle stack. The wait itself is bounded by the request's deadline (then `503`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::bare::Bare;
use super::IdleConn;

pub(super) struct Limit {
    permits: Arc<Semaphore>,
    /// Requests waiting for a connection.
    waiting: AtomicUsize,
    /// Connections handed over to waiting requests, the most recent last.
    handed: Mutex<VecDeque<Spare>>,
    handed_over: Notify,
}

/// What a waiting request got.
pub(super) enum Got {
    /// Room for a new connection.
    Permit(OwnedSemaphorePermit),
    /// A ready connection another request finished with.
    Conn(Spare),
}

/// A connection going idle, of either kind.
pub(super) enum Spare {
    Hyper(IdleConn),
    Bare(Bare),
}

impl Spare {
    /// Whether it can carry a request (the upstream has not closed it).
    fn usable(&mut self) -> bool {
        match self {
            Spare::Hyper(conn) => conn.sender.is_ready(),
            Spare::Bare(conn) => conn.alive(),
        }
    }
}

impl Limit {
    pub(super) fn new(max: usize) -> Limit {
        Limit {
            permits: Arc::new(Semaphore::new(max)),
            waiting: AtomicUsize::new(0),
            handed: Mutex::new(VecDeque::new()),
            handed_over: Notify::new(),
        }
    }

    /// Room for a new connection, or a connection handed over, whichever comes first.
    /// `queued` is set once the request has to wait.
    pub(super) async fn wait(&self, queued: &mut bool) -> Got {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Got::Permit(permit);
        }
        *queued = true;
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        loop {
            let handed_over = self.handed_over.notified();
            let mut handed_over = std::pin::pin!(handed_over);
            // Registered before looking, so that a hand-over in between is not missed.
            handed_over.as_mut().enable();
            while let Some(mut conn) = self.take_handed() {
                if conn.usable() {
                    return Got::Conn(conn);
                }
            }
            tokio::select! {
                permit = self.permits.clone().acquire_owned() => {
                    // The semaphore is never closed.
                    if let Ok(permit) = permit {
                        return Got::Permit(permit);
                    }
                }
                () = handed_over => {}
            }
        }
    }

    /// Offers a connection going idle to a waiting request; gives it back when none waits.
    pub(super) fn offer(&self, conn: Spare) -> Option<Spare> {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return Some(conn);
        }
        match self.handed.lock() {
            Ok(mut handed) => handed.push_back(conn),
            Err(_) => return Some(conn),
        }
        self.handed_over.notify_one();
        None
    }

    /// Whether a new connection could be opened at once.
    pub(super) fn has_room(&self) -> bool {
        self.permits.available_permits() > 0
    }

    fn take_handed(&self) -> Option<Spare> {
        self.handed.lock().ok()?.pop_back()
    }
}

/// One waiting request, counted while it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
