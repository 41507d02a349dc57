//! Path normalization and rule matching: what every request pays before authentication.
//!
//! `cargo bench --bench routing`. The rules are the contract's example: five routes, the
//! catch-all last, so a page request walks the whole list.

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::{path, rules, Config};
use std::hint::black_box;

const CONFIG: &str = r#"
[upstreams]
frontend = "http://127.0.0.1:3000"
api = "http://127.0.0.1:4000"

[jwt]
algorithms = ["HS256"]
secret = "0123456789abcdef0123456789abcdef0123456789abcdef"

[[routes]]
path = "/dashboard/:path*"
auth = "required"
upstream = "frontend"

[[routes]]
path = "/api/admin/:path*"
auth = "required"
claims = { role = "admin" }
upstream = "api"

[[routes]]
path = "/api/:path*"
auth = "required"
on_unauthenticated = "status"
upstream = "api"

[[routes]]
path = "/login"
auth = "guest"
upstream = "frontend"

[[routes]]
path = "/:path*"
upstream = "frontend"
"#;

fn routing(c: &mut Criterion) {
    let config = Config::from_toml_str(CONFIG).expect("the bench config is valid");
    let mut group = c.benchmark_group("normalize+route");
    for (name, raw) in [
        ("api", "/api/v1/items"),
        ("page", "/assets/app/main.js"),
        ("dot-segments", "/api/v1/../v1/./items//42"),
        ("percent-encoded", "/api/v1/it%65ms/%7Euser"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let normalized = path::normalize(black_box(raw)).expect("a valid path");
                black_box(
                    rules::route(&config.rules, "app.example.com", &normalized).map(|r| r.index),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
