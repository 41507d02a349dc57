//! Instants as milliseconds in a `u64`, so that they fit an atomic shared between a
//! connection's task and the requests on it; the wall clock (unix time), which tokens and
//! revocations speak; and [`Moment`]s, which read the clock once per wake-up of a task.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds from the process's first call to `at` (0 for anything earlier).
pub fn millis(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_millis()).unwrap_or(u64::MAX)
}

/// The instant `millis` milliseconds after the epoch.
pub fn instant(millis: u64) -> Instant {
    epoch() + Duration::from_millis(millis)
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix milliseconds now.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The time of the event being handled: a connection's task reads the clock once per wake-up,
/// not once per question (about ten per proxied request otherwise). Inside a [`Moment`]
/// [`now`] and [`unix_seconds`] give the instant and the unix second of the first question
/// asked in it; outside one they read the clock. A moment lasts one poll of a task, so what
/// it answers is never older than the work done in that poll.
#[must_use = "a moment lasts until it is dropped"]
pub struct Moment {
    /// This guard opened the moment (an inner one leaves it to the outer).
    opened: bool,
    /// Not `Send`: held across an `.await`, it could end on another thread's cache.
    _thread: std::marker::PhantomData<*const ()>,
}

#[derive(Clone, Copy)]
struct Cached {
    open: bool,
    instant: Option<Instant>,
    unix: Option<u64>,
}

thread_local! {
    static CACHED: Cell<Cached> = const {
        Cell::new(Cached { open: false, instant: None, unix: None })
    };
}

/// Opens a moment on this thread until the guard is dropped.
pub fn moment() -> Moment {
    CACHED.with(|cached| {
        let mut state = cached.get();
        if state.open {
            return Moment {
                opened: false,
                _thread: std::marker::PhantomData,
            };
        }
        state.open = true;
        cached.set(state);
        Moment {
            opened: true,
            _thread: std::marker::PhantomData,
        }
    })
}

impl Drop for Moment {
    fn drop(&mut self) {
        if self.opened {
            CACHED.with(|cached| {
                cached.set(Cached {
                    open: false,
                    instant: None,
                    unix: None,
                })
            });
        }
    }
}

/// The monotonic time of the current moment (see [`Moment`]), or of the clock outside one.
pub fn now() -> Instant {
    cached(|state| &mut state.instant, Instant::now)
}

/// Unix seconds of the current moment (see [`Moment`]), or of the clock outside one.
pub fn unix_seconds() -> u64 {
    cached(|state| &mut state.unix, unix_now)
}

/// The value `field` of the open moment holds, read with `read` the first time it is asked;
/// `read` alone outside a moment.
fn cached<T: Copy>(field: fn(&mut Cached) -> &mut Option<T>, read: fn() -> T) -> T {
    CACHED.with(|cached| {
        let mut state = cached.get();
        if let Some(value) = *field(&mut state) {
            return value;
        }
        let value = read();
        if state.open {
            *field(&mut state) = Some(value);
            cached.set(state);
        }
        value
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moment_answers_one_time_until_it_ends() {
        let outside = now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(now() > outside, "outside a moment the clock is read");
        let first = {
            let _moment = moment();
            let first = now();
            let unix = unix_seconds();
            std::thread::sleep(Duration::from_millis(2));
            assert_eq!(now(), first, "one moment, one instant");
            {
                let _inner = moment();
                assert_eq!(now(), first, "an inner moment keeps the outer one's time");
            }
            assert_eq!(now(), first, "closing an inner moment keeps the outer one");
            assert_eq!(unix_seconds(), unix);
            first
        };
        assert!(now() > first, "the moment is over");
    }
}
