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

pin_project_lite::pin_project! {
    /// A timer polled only when it may have fired. Polling a pending `tokio::time::Sleep`
    /// registers the task's waker with it anew (an atomic swap and a comparison of wakers)
    /// and takes from the task's budget; a connection's task wakes several times per request
    /// and its timer rarely fires. A timer polled pending with budget left keeps that waker
    /// until it fires, a reset included, so until it has fired a poll here only reads its
    /// state. For a future polled by one task, whose waker does not change between polls.
    pub struct Alarm {
        #[pin]
        sleep: tokio::time::Sleep,
        // Polled pending since the last reset, with the waker registered.
        armed: bool,
    }
}

impl Alarm {
    pub fn until(deadline: Instant) -> Alarm {
        Alarm {
            sleep: tokio::time::sleep_until(deadline.into()),
            armed: false,
        }
    }

    pub fn deadline(&self) -> Instant {
        self.sleep.deadline().into_std()
    }

    pub fn reset(self: std::pin::Pin<&mut Self>, deadline: Instant) {
        let this = self.project();
        *this.armed = false;
        this.sleep.reset(deadline.into());
    }

    /// Registers the next poll's waker, without moving the deadline: for a timer another
    /// task polled before.
    pub fn rearm(self: std::pin::Pin<&mut Self>) {
        *self.project().armed = false;
    }

    /// `Ready` once the deadline has come.
    pub fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        use std::future::Future as _;
        let this = self.project();
        if *this.armed && !this.sleep.is_elapsed() {
            return std::task::Poll::Pending;
        }
        // Out of budget, a `Sleep` answers pending without registering the waker.
        let registers = tokio::task::coop::has_budget_remaining();
        let polled = this.sleep.poll(cx);
        *this.armed = polled.is_pending() && registers;
        polled
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future as _;
    use std::task::Poll;

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

    /// Polls `alarm` until it fires, waking the task every millisecond besides (as requests
    /// wake a connection's task), resetting it to `reset` on the first poll if given.
    async fn fired(alarm: std::pin::Pin<&mut Alarm>, reset: Option<Instant>) -> Instant {
        let mut alarm = alarm;
        let mut reset = reset;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let polled = std::future::poll_fn(|cx| {
            while tick.poll_tick(cx).is_ready() {}
            if let Some(deadline) = reset.take() {
                // Armed first, so that the reset is of a timer holding the waker.
                let _ = alarm.as_mut().poll(cx);
                alarm.as_mut().reset(deadline);
            }
            alarm.as_mut().poll(cx).map(|()| Instant::now())
        });
        tokio::time::timeout(Duration::from_secs(5), polled)
            .await
            .expect("the alarm fires")
    }

    #[tokio::test]
    async fn an_alarm_polled_only_when_it_may_have_fired_still_fires_on_time() {
        let start = Instant::now();
        let mut alarm = std::pin::pin!(Alarm::until(start + Duration::from_millis(40)));
        let at = fired(alarm.as_mut(), None).await;
        assert!(
            at >= start + Duration::from_millis(40),
            "not before its deadline"
        );
        assert!(
            at < start + Duration::from_millis(400),
            "woken when it came"
        );

        // Fired, then reset: polled again, so that the timer has the waker again.
        let again = Instant::now() + Duration::from_millis(30);
        alarm.as_mut().reset(again);
        let at = fired(alarm.as_mut(), None).await;
        assert!(at >= again && at < again + Duration::from_millis(360));

        // Armed, then moved earlier: it fires at the earlier deadline.
        alarm
            .as_mut()
            .reset(Instant::now() + Duration::from_secs(60));
        let earlier = Instant::now() + Duration::from_millis(30);
        let at = fired(alarm.as_mut(), Some(earlier)).await;
        assert!(at >= earlier && at < earlier + Duration::from_millis(360));
    }

    #[tokio::test]
    async fn an_alarm_polled_out_of_budget_is_polled_again() {
        let deadline = Instant::now() + Duration::from_millis(30);
        let mut alarm = std::pin::pin!(Alarm::until(deadline));
        // Spend the task's budget: the `Sleep` then answers pending without taking the
        // waker, and the alarm must not count on it.
        std::future::poll_fn(|cx| {
            while tokio::task::coop::has_budget_remaining() {
                let _ = std::pin::pin!(tokio::task::consume_budget()).poll(cx);
            }
            assert!(alarm.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        let at = fired(alarm.as_mut(), None).await;
        assert!(at >= deadline && at < deadline + Duration::from_millis(370));
    }
}
