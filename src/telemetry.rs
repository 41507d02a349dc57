//! Metrics: the Prometheus recorder and the names of everything Portcullis counts.
//!
//! One process-wide recorder (the `metrics` facade allows one), rendered by the admin
//! listener's `/metrics`. Label values are bounded (one per configured rule, status classes,
//! fixed decision and error names), never request paths or other user input, so cardinality
//! cannot explode. Every metric is described ([`DESCRIPTIONS`]), so `/metrics` has a `# HELP`
//! line for each.
//!
//! What every request records goes through handles registered once ([`RequestMetrics`] per
//! `App`, the fixed-label ones when the recorder is installed): recording is then an atomic
//! add, where the `counter!` macro builds a key (allocating its labels) and looks it up in
//! the registry on each call. The two histograms every request records (its duration, its
//! upstream's) are Portcullis's own ([`Durations`]: two atomic adds a sample) and rendered
//! after the recorder's families ([`render`]). The recorder keeps every sample of its own
//! histograms until it is folded into the buckets, so [`upkeep`] does that every few seconds
//! whether or not anyone scrapes `/metrics`; otherwise memory would grow with the call count.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Handles for the metrics whose labels are fixed, registered with the recorder once.
struct Fixed {
    /// One counter per name in [`AUTH_DECISIONS`], in that order.
    auth: Vec<Counter>,
}

static FIXED: OnceLock<Fixed> = OnceLock::new();

/// The decisions [`auth`] counts through a registered handle; any other name still counts.
const AUTH_DECISIONS: [&str; 13] = [
    "allow",
    "guest_redirect",
    "redirect",
    "unauthenticated",
    "forbidden",
    "csrf",
    "error",
    "refresh_ok",
    "refresh_failed",
    "login_ok",
    "login_failed",
    "login_rate_limited",
    "logout",
];

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the recorder on first use; returns the handle that renders `/metrics`.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding application's): then
            // Portcullis's metrics go there and `/metrics` reports what this handle sees.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            let _ = FIXED.set(Fixed {
                auth: AUTH_DECISIONS
                    .iter()
                    .map(|&decision| counter!("portcullis_auth_decisions_total", "decision" => decision))
                    .collect(),
            });
            Some(handle)
        })
        .as_ref()
}

/// Every metric's `# HELP` text. A test renders `/metrics` and checks that no family lacks one.
pub const DESCRIPTIONS: &[(&str, &str)] = &[
    (
        "portcullis_requests_total",
        "Requests answered, by mode (proxy, or forward_auth for an ingress's subrequests), route (its host and path pattern; none when no rule matched) and status class.",
    ),
    (
        "portcullis_request_duration_seconds",
        "Time from a request's arrival to its response head, in seconds, by mode.",
    ),
    (
        "portcullis_upstream_duration_seconds",
        "Time until an upstream's response head arrived, in seconds.",
    ),
    (
        "portcullis_upstream_errors_total",
        "Upstream failures, by kind: connect, timeout, request, bad_upgrade.",
    ),
    (
        "portcullis_auth_decisions_total",
        "Authentication decisions: allow, guest_redirect, redirect, unauthenticated, forbidden, csrf, error, refresh_ok, refresh_failed, login_ok, login_failed, login_rate_limited, logout.",
    ),
    (
        "portcullis_token_cache_total",
        "Verified-token cache lookups, by result: hit or miss.",
    ),
    (
        "portcullis_open_connections",
        "Downstream connections open now.",
    ),
    (
        "portcullis_parked_connections",
        "HTTP/1.1 connections idle between requests whose HTTP state has been let go: only their socket is held until the client sends again (part of portcullis_open_connections).",
    ),
    (
        "portcullis_config_reloads_total",
        "Configuration reload attempts, by result: ok or failed.",
    ),
    (
        "portcullis_config_last_reload_success",
        "1 when the last configuration reload succeeded, 0 when it was refused.",
    ),
    (
        "portcullis_jwks_last_refresh_timestamp_seconds",
        "Unix time of the last successful fetch of jwt.jwks_url.",
    ),
    (
        "portcullis_cluster_connected",
        "1 while this instance reaches the Redis of [cluster], 0 while it serves with local state.",
    ),
    (
        "portcullis_cluster_call_duration_seconds",
        "Time of each Redis call, by operation, in seconds.",
    ),
    (
        "portcullis_cluster_call_failures_total",
        "Redis calls that failed or outlasted cluster.timeout, by operation.",
    ),
    (
        "portcullis_revocations",
        "Revocations in force on this instance (tokens and subjects).",
    ),
    (
        "portcullis_revocations_refused_total",
        "Revocations refused because the set was full, by reason: full, unproven_full.",
    ),
    (
        "portcullis_cluster_events_total",
        "Shared-refresh events, by event: lease_lost (a refresh outlived its claim), stuck (a waiter gave up on another instance's refresh), unpublished (an outcome could not be published within the reuse window).",
    ),
];

/// Registers every metric's `# HELP` text with the recorder (the recorder's own only).
fn describe() {
    for &(name, help) in DESCRIPTIONS {
        if OWN_HISTOGRAMS.contains(&name) {
            continue;
        }
        if name.ends_with("_seconds") && !name.ends_with("timestamp_seconds") {
            metrics::describe_histogram!(name, metrics::Unit::Seconds, help);
        } else if name.ends_with("_total") {
            metrics::describe_counter!(name, help);
        } else {
            metrics::describe_gauge!(name, help);
        }
    }
}

/// The text of `/metrics`: the recorder's families, then Portcullis's own histograms.
pub fn render() -> String {
    let mut text = handle().map(|h| h.render()).unwrap_or_default();
    let help = |name: &str| {
        DESCRIPTIONS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, help)| help)
    };
    let [requests, upstream] = OWN_HISTOGRAMS;
    family_head(&mut text, requests, help(requests));
    for (mode, durations) in MODES.iter().zip(&REQUEST_DURATIONS) {
        durations.render(&mut text, requests, &format!("mode=\"{mode}\""));
    }
    family_head(&mut text, upstream, help(upstream));
    UPSTREAM_DURATIONS.render(&mut text, upstream, "");
    text
}

fn family_head(text: &mut String, name: &str, help: &str) {
    if !text.is_empty() && !text.ends_with("\n\n") {
        text.push('\n');
    }
    let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} histogram");
}

/// The bucket bounds of every duration histogram, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The histograms Portcullis keeps itself ([`Durations`]), not through the recorder.
const OWN_HISTOGRAMS: [&str; 2] = [
    "portcullis_request_duration_seconds",
    "portcullis_upstream_duration_seconds",
];

/// Request durations, by mode ([`MODES`] order).
static REQUEST_DURATIONS: [Durations; 2] = [Durations::new(), Durations::new()];
static UPSTREAM_DURATIONS: Durations = Durations::new();

/// A Prometheus histogram of durations with the [`BUCKETS`] bounds, recorded with two relaxed
/// atomic adds: the sample's bucket and the sum. The recorder's histograms keep each sample
/// (pushed to a lock-free queue under an epoch guard, stamped with the time for idle expiry)
/// until they are folded into buckets; for the two samples of every request that was a
/// measurable part of its cost. Process-wide, as the recorder is: a reload keeps counting.
pub struct Durations {
    /// Samples per bucket, not cumulative; the last one is past every bound (`+Inf`).
    buckets: [AtomicU64; BUCKETS.len() + 1],
    /// The sum of every sample, in nanoseconds (584 years of them fit).
    nanos: AtomicU64,
}

impl Durations {
    #[allow(clippy::declare_interior_mutable_const)]
    const fn new() -> Durations {
        const ZERO: AtomicU64 = AtomicU64::new(0);
        Durations {
            buckets: [ZERO; BUCKETS.len() + 1],
            nanos: ZERO,
        }
    }

    pub fn record(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The series of one histogram, as the recorder writes its own: cumulative `_bucket`
    /// lines up to `+Inf`, then `_sum` and `_count`.
    fn render(&self, text: &mut String, name: &str, labels: &str) {
        let comma = if labels.is_empty() { "" } else { "," };
        let mut count = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            count += bucket.load(Ordering::Relaxed);
            let _ = match BUCKETS.get(i) {
                Some(bound) => writeln!(
                    text,
                    "{name}_bucket{{{labels}{comma}le=\"{bound}\"}} {count}"
                ),
                None => writeln!(text, "{name}_bucket{{{labels}{comma}le=\"+Inf\"}} {count}"),
            };
        }
        let sum = self.nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let (open, close) = if labels.is_empty() {
            ("", "")
        } else {
            ("{", "}")
        };
        let _ = writeln!(
            text,
            "{name}_sum{open}{labels}{close} {sum}\n{name}_count{open}{labels}{close} {count}"
        );
    }
}

/// Folds histogram samples into buckets every few seconds, until `shutdown` completes.
pub async fn upkeep(shutdown: impl std::future::Future<Output = ()>) {
    let Some(handle) = handle() else { return };
    let fold = async {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            handle.run_upkeep();
        }
    };
    tokio::select! {
        () = fold => {}
        () = shutdown => {}
    }
}

/// The status class labels, indexed by [`class`].
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index of a status's class in [`CLASSES`].
fn class(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// The `mode` label values: requests served by the public listener, and forward-auth
/// decisions.
const MODES: [&str; 2] = ["proxy", "forward_auth"];

/// The request counters of one configuration, one per (mode, rule, status class), registered
/// when the `App` is built.
pub struct RequestMetrics {
    /// `[mode][rule index][status class]`; each mode's last row counts requests no rule
    /// matched.
    requests: [Vec<[Counter; 5]>; 2],
}

impl RequestMetrics {
    /// Counters labelled by mode and by each rule's name (its host and path pattern, see
    /// [`route_labels`]).
    pub fn new(routes: &[String]) -> RequestMetrics {
        let labels = route_labels(routes);
        let rows = |mode: &'static str| {
            let row = |route: String| {
                CLASSES.map(|status| {
                    counter!("portcullis_requests_total", "mode" => mode, "route" => route.clone(), "status" => status)
                })
            };
            labels
                .iter()
                .cloned()
                .map(row)
                .chain(std::iter::once(row("none".to_owned())))
                .collect()
        };
        RequestMetrics {
            requests: MODES.map(rows),
        }
    }

    /// One request finished; `mode` is `"proxy"` or `"forward_auth"`.
    pub fn request(&self, mode: &str, rule: Option<usize>, status: u16, elapsed: Duration) {
        let mode = usize::from(mode == MODES[1]);
        let requests = &self.requests[mode];
        let none = requests.len() - 1;
        let row = rule.filter(|&r| r < none).unwrap_or(none);
        requests[row][class(status)].increment(1);
        REQUEST_DURATIONS[mode].record(elapsed);
    }
}

/// The `route` label of each rule: its path pattern, which a dashboard reader recognizes and
/// which stays put when rules are reordered. One value per rule, so cardinality is bounded by
/// the configuration; a pattern that repeats (rules told apart by something else) gets its
/// index added.
pub fn route_labels(patterns: &[String]) -> Vec<String> {
    patterns
        .iter()
        .enumerate()
        .map(|(i, pattern)| {
            if patterns.iter().filter(|p| *p == pattern).count() > 1 {
                format!("{pattern} (routes[{i}])")
            } else {
                pattern.clone()
            }
        })
        .collect()
}

/// Time until an upstream's response head arrived.
pub fn upstream_latency(elapsed: Duration) {
    UPSTREAM_DURATIONS.record(elapsed);
}

/// An upstream failure: `connect`, `timeout`, `request`.
pub fn upstream_error(kind: &'static str) {
    counter!("portcullis_upstream_errors_total", "kind" => kind).increment(1);
}

/// An authentication decision: `allow`, `redirect`, `unauthenticated`, `forbidden`, `csrf`,
/// `refresh_ok`, `refresh_failed`, `login_ok`, `login_failed`, `login_rate_limited`, `logout`.
pub fn auth(decision: &'static str) {
    let registered = FIXED.get().and_then(|fixed| {
        let index = AUTH_DECISIONS.iter().position(|&d| d == decision)?;
        fixed.auth.get(index)
    });
    match registered {
        Some(counter) => counter.increment(1),
        None => counter!("portcullis_auth_decisions_total", "decision" => decision).increment(1),
    }
}

/// A verified-token cache lookup.
pub fn token_cache(hit: bool) {
    counter!("portcullis_token_cache_total", "result" => if hit { "hit" } else { "miss" })
        .increment(1);
}

pub fn connection_opened() {
    gauge!("portcullis_open_connections").increment(1.0);
}

pub fn connection_closed() {
    gauge!("portcullis_open_connections").decrement(1.0);
}

/// An idle HTTP/1.1 connection parked (`true`), or woken or closed while parked (`false`).
pub fn connection_parked(parked: bool) {
    let gauge = gauge!("portcullis_parked_connections");
    if parked {
        gauge.increment(1.0);
    } else {
        gauge.decrement(1.0);
    }
}

/// A configuration reload attempt and its result.
pub fn reload(ok: bool) {
    counter!("portcullis_config_reloads_total", "result" => if ok { "ok" } else { "failed" })
        .increment(1);
    gauge!("portcullis_config_last_reload_success").set(if ok { 1.0 } else { 0.0 });
}

/// Unix time of the last successful JWKS fetch.
pub fn jwks_refreshed(unix_secs: u64) {
    gauge!("portcullis_jwks_last_refresh_timestamp_seconds").set(unix_secs as f64);
}

/// Whether this instance reaches Redis (`[cluster]`): 1 or 0.
pub fn cluster_connected(up: bool) {
    gauge!("portcullis_cluster_connected").set(if up { 1.0 } else { 0.0 });
}

/// One Redis call: its latency, and whether it failed (error or past `cluster.timeout`).
pub fn cluster_call(op: &'static str, elapsed: Duration, ok: bool) {
    histogram!("portcullis_cluster_call_duration_seconds", "op" => op)
        .record(elapsed.as_secs_f64());
    if !ok {
        counter!("portcullis_cluster_call_failures_total", "op" => op).increment(1);
    }
}

/// Revocations in force on this instance.
pub fn revocations(count: usize) {
    gauge!("portcullis_revocations").set(count as f64);
}

/// A revocation refused because the set (or its unproven pool) was full.
pub fn revocations_refused(reason: &'static str) {
    counter!("portcullis_revocations_refused_total", "reason" => reason).increment(1);
}

/// Something worth counting in the shared refresh (see the `# HELP` text).
pub fn cluster_event(event: &'static str) {
    counter!("portcullis_cluster_events_total", "event" => event).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_render_as_a_prometheus_histogram() {
        let durations = Durations::new();
        for sample in [
            Duration::from_micros(400),
            Duration::from_millis(1),
            Duration::from_millis(2),
            Duration::from_secs(20),
        ] {
            durations.record(sample);
        }
        let mut text = String::new();
        durations.render(&mut text, "x_seconds", "mode=\"proxy\"");
        let value = |series: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("no {series} in\n{text}"))
                .parse::<f64>()
                .expect("a number")
        };
        let bucket = |le: &str| value(&format!("x_seconds_bucket{{mode=\"proxy\",le=\"{le}\"}}"));
        // Cumulative, a bound included in its bucket.
        assert_eq!(bucket("0.0005"), 1.0);
        assert_eq!(bucket("0.001"), 2.0);
        assert_eq!(bucket("0.0025"), 3.0);
        assert_eq!(bucket("10"), 3.0);
        assert_eq!(bucket("+Inf"), 4.0);
        assert_eq!(value("x_seconds_count{mode=\"proxy\"}"), 4.0);
        assert!((value("x_seconds_sum{mode=\"proxy\"}") - 20.0034).abs() < 1e-9);
        assert_eq!(text.lines().count(), BUCKETS.len() + 3);

        let mut text = String::new();
        Durations::new().render(&mut text, "y_seconds", "");
        assert!(text.contains("y_seconds_bucket{le=\"+Inf\"} 0\n"), "{text}");
        assert!(
            text.contains("y_seconds_sum 0\ny_seconds_count 0\n"),
            "{text}"
        );
    }
}
