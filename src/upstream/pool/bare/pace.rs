//! When a request's head goes out: as soon as it is ready, or at the end of the scheduler's
//! turn together with the other heads read in that turn.
//!
//! At once is what a request wants, and what nginx does: the head does not wait for the rest
//! of the turn's requests to be read and checked, and the tail of the latency is shorter
//! (docs/performance.md, "Eighth pass"). But each head written wakes the upstream, and where
//! the upstream shares the proxy's CPU the kernel may hand it the CPU at every one of those
//! wake-ups: proxy and upstream then run in lockstep, a preemption and a context switch per
//! request, and the throughput falls by a tenth or more (a proxy slowed by 4-8 µs a request
//! in the benchmark's harness: 92 preemptions per 100 requests against 42, 8% fewer
//! requests/s). A turn's heads written together wake the upstream once.
//!
//! So each thread counts how often the kernel preempted it (`nonvoluntary_ctxt_switches` in
//! `/proc/thread-self/status`, read once every [`WINDOW`] exchanges, a few microseconds each
//! time) while it writes heads at once. When that is at least every other exchange, it holds
//! heads to the turn's end for [`BATCHED_WINDOWS`] windows, then writes at once again and
//! looks again. Where the count cannot be read (no procfs), heads go out at once.

use std::cell::Cell;

/// Exchanges between two readings of the thread's preemption count.
const WINDOW: u32 = 4096;
/// Preemptions in a window of heads written at once that mean lockstep: every other exchange.
const LOCKSTEP: u64 = WINDOW as u64 / 2;
/// Windows that heads are held to the turn's end once lockstep was seen, before trying again.
const BATCHED_WINDOWS: u32 = 16;

thread_local! {
    static PACE: Cell<Pace> = const { Cell::new(Pace::START) };
}

/// Whether the next head on this thread goes out at once (`false`: at the end of the turn).
pub(super) fn at_once() -> bool {
    PACE.with(|cell| {
        let mut pace = cell.get();
        let at_once = pace.next(preemptions);
        cell.set(pace);
        at_once
    })
}

/// Makes every head on this thread go out at once, or every one at the end of its turn.
#[cfg(test)]
pub(in crate::upstream::pool) fn set_here(at_once: bool) {
    let batched = if at_once { 0 } else { u32::MAX };
    PACE.with(|cell| {
        cell.set(Pace {
            left: u32::MAX,
            batched,
            since: None,
        })
    });
}

/// One thread's pacing: a window's countdown, and what the last reading found.
#[derive(Clone, Copy, Debug)]
struct Pace {
    /// Exchanges left in the current window.
    left: u32,
    /// Windows left with heads held to the turn's end; 0 when they go out at once.
    batched: u32,
    /// The preemption count when the current window of heads written at once began.
    since: Option<u64>,
}

impl Pace {
    /// The first exchange takes the first reading.
    const START: Pace = Pace {
        left: 0,
        batched: 0,
        since: None,
    };

    /// Counts one exchange, reading `preemptions` when a window ends; whether its head goes
    /// out at once.
    fn next(&mut self, preemptions: impl FnOnce() -> Option<u64>) -> bool {
        if self.left > 0 {
            self.left -= 1;
            return self.batched == 0;
        }
        self.left = WINDOW - 1;
        if self.batched > 0 {
            self.batched -= 1;
            if self.batched == 0 {
                // A window at once begins, measured from here.
                self.since = preemptions();
            }
            return self.batched == 0;
        }
        let now = preemptions();
        if let (Some(before), Some(now)) = (self.since, now) {
            let preempted = now.saturating_sub(before);
            if preempted >= LOCKSTEP {
                tracing::debug!(
                    preempted,
                    exchanges = WINDOW,
                    "preempted at every other upstream request written: holding request heads to the end of the scheduler's turn"
                );
                // `since` is read again only once the held windows are over.
                self.batched = BATCHED_WINDOWS;
                return false;
            }
        }
        self.since = now;
        true
    }
}

/// The calling thread's involuntary context switches so far.
fn preemptions() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("nonvoluntary_ctxt_switches:"))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `windows` windows from `pace`, the thread preempted `rate` times per exchange
    /// while heads go out at once (and never otherwise); how many heads went out at once.
    fn run(pace: &mut Pace, count: &mut u64, windows: u32, rate: f64) -> u32 {
        let mut at_once = 0;
        let mut owed = 0.0;
        for _ in 0..windows * WINDOW {
            let reading = *count;
            let now = pace.next(|| Some(reading));
            if now {
                at_once += 1;
                owed += rate;
                *count += owed as u64;
                owed = owed.fract();
            }
        }
        at_once
    }

    #[test]
    fn heads_go_out_at_once_while_the_kernel_leaves_the_thread_alone() {
        let (mut pace, mut count) = (Pace::START, 0);
        assert_eq!(run(&mut pace, &mut count, 40, 0.3), 40 * WINDOW);
    }

    #[test]
    fn lockstep_holds_heads_to_the_turns_end_then_looks_again() {
        let (mut pace, mut count) = (Pace::START, 0);
        // The first window is read at its end: one window at once, then held.
        assert_eq!(run(&mut pace, &mut count, 1, 0.9), WINDOW);
        assert_eq!(run(&mut pace, &mut count, BATCHED_WINDOWS, 0.9), 0);
        // Then one more window at once, and lockstep again.
        assert_eq!(run(&mut pace, &mut count, 1, 0.9), WINDOW);
        assert_eq!(run(&mut pace, &mut count, BATCHED_WINDOWS, 0.9), 0);
        // Once the lockstep is over, at once it stays.
        assert_eq!(run(&mut pace, &mut count, 1, 0.2), WINDOW);
        assert_eq!(run(&mut pace, &mut count, 8, 0.2), 8 * WINDOW);
    }

    #[test]
    fn without_a_count_heads_go_out_at_once() {
        let mut pace = Pace::START;
        for _ in 0..3 * WINDOW {
            assert!(pace.next(|| None));
        }
    }

    #[test]
    fn this_thread_has_a_count() {
        let first = preemptions().expect("Linux has /proc/thread-self/status");
        assert!(preemptions().expect("read again") >= first);
    }
}
