//! Metrics: the Prometheus recorder and the names of everything Portcullis counts.
//!
//! One process-wide recorder (the `metrics` facade allows one), rendered by the admin
//! listener's `/metrics`. Label values are bounded (rule indexes, status classes, fixed
//! decision and error names), never paths or user input, so cardinality cannot explode.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

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
            Some(handle)
        })
        .as_ref()
}

/// The status class label: "2xx", "4xx", …
fn class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// One downstream request finished.
pub fn request(rule: Option<usize>, status: u16, elapsed: Duration) {
    let rule = rule.map_or_else(|| "none".to_owned(), |r| r.to_string());
    counter!("portcullis_requests_total", "rule" => rule, "status" => class(status)).increment(1);
    histogram!("portcullis_request_duration_seconds").record(elapsed.as_secs_f64());
}

/// Time until an upstream's response head arrived.
pub fn upstream_latency(elapsed: Duration) {
    histogram!("portcullis_upstream_duration_seconds").record(elapsed.as_secs_f64());
}

/// An upstream failure: `connect`, `timeout`, `request`.
pub fn upstream_error(kind: &'static str) {
    counter!("portcullis_upstream_errors_total", "kind" => kind).increment(1);
}

/// An authentication decision: `allow`, `redirect`, `unauthenticated`, `forbidden`,
/// `refresh_ok`, `refresh_failed`, `login_ok`, `login_failed`, `login_rate_limited`, `logout`.
pub fn auth(decision: &'static str) {
    counter!("portcullis_auth_decisions_total", "decision" => decision).increment(1);
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
