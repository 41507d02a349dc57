//! The one integration test binary: Portcullis started in-process against real servers on
//! `127.0.0.1:0` (a recording upstream, a fake credential backend issuing real tokens).

mod bench_smoke;
mod browser;
mod cluster;
mod configs;
mod core;
mod csrf;
mod django;
mod exhaustion;
mod guard;
mod hardening;
mod hosts;
mod ingress;
mod lane;
mod lifecycle;
mod pool;
mod session;
mod storm;
mod support;
mod tools;
mod transport;
