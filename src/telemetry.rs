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
//! the registry on each call. The recorder keeps every histogram sample until it is folded
//! into the buckets, so [`upkeep`] does that every few seconds whether or not anyone
//! scrapes `/metrics`; otherwise memory would grow with the request count.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Handles for the metrics whose labels are fixed, registered with the recorder once.
struct Fixed {
    upstream_duration: Histogram,
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
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &buckets)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding application's): then
            // Portcullis's metrics go there and `/metrics` reports what this handle sees.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            let _ = FIXED.set(Fixed {
                upstream_duration: histogram!("portcullis_upstream_duration_seconds"),
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

/// Registers every metric's `# HELP` text with the recorder.
fn describe() {
    for &(name, help) in DESCRIPTIONS {
        if name.ends_with("_seconds") && !name.ends_with("timestamp_seconds") {
            metrics::describe_histogram!(name, metrics::Unit::Seconds, help);
        } else if name.ends_with("_total") {
            metrics::describe_counter!(name, help);
        } else {
            metrics::describe_gauge!(name, help);
        }
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
    /// Request durations per mode.
    durations: [Histogram; 2],
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
            durations: MODES
                .map(|mode| histogram!("portcullis_request_duration_seconds", "mode" => mode)),
        }
    }

    /// One request finished; `mode` is `"proxy"` or `"forward_auth"`.
    pub fn request(&self, mode: &str, rule: Option<usize>, status: u16, elapsed: Duration) {
        let mode = usize::from(mode == MODES[1]);
        let requests = &self.requests[mode];
        let none = requests.len() - 1;
        let row = rule.filter(|&r| r < none).unwrap_or(none);
        requests[row][class(status)].increment(1);
        self.durations[mode].record(elapsed.as_secs_f64());
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
    match FIXED.get() {
        Some(fixed) => fixed.upstream_duration.record(elapsed.as_secs_f64()),
        None => histogram!("portcullis_upstream_duration_seconds").record(elapsed.as_secs_f64()),
    }
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
