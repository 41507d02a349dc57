//! Support for Portcullis's integration tests: real servers and clients on loopback, and
//! keys made at test time. Nothing here is a mock: the upstream and the backend are small
//! hyper servers on `127.0.0.1:0`, and every wait is on an event, never a sleep.
//!
//! # Layout
//! - [`keys`]: [`TestKey`] (generated keys, their files and `[jwt]` TOML, signing), plus
//!   helpers for hand-made and malformed tokens.
//! - [`upstream`]: [`upstream()`], the site/API behind the proxy; records every request.
//! - [`backend`]: [`backend()`], the credential service; issues, refreshes and revokes tokens.
//! - [`client`]: [`Req`]/[`Resp`], an HTTP/1.1 and h2c client that never follows redirects.
//! - [`raw`]: byte-exact TCP for smuggling, malformed requests and slowloris; a hand-built
//!   HTTP/2 client for pseudo-headers a well-behaved client never sends.
//! - [`raw_upstream`]: an upstream that records the exact bytes of every request head.
//! - [`scripted`]: an HTTP/1.1 upstream on raw sockets whose answers the test scripts (early,
//!   closing, stalling), for the upstream connection pool.
//! - [`raw_h2`]: an HTTP/2 upstream written frame by frame (refused streams, `GOAWAY`, a low
//!   stream limit, silence).
//! - [`ingress`]: real nginx and Caddy started with the documented forward-auth recipes.
//! - [`proxy`]: [`proxy()`], Portcullis itself, started in-process on `127.0.0.1:0`.
//! - [`cookies`]: [`CookieJar`], a browser's cookie store reduced to one host.
//! - [`django`]: a real Django REST framework + SimpleJWT backend in a child process.
//! - [`pki`]: a test certificate authority and the certificates it signs.
//! - [`redis`]: a real `redis-server` on a free port with its own directory; what it holds
//!   and what is published on it, searched for tokens.
//! - [`cutter`]: a TCP relay whose connections can be cut without a reset (a partition).
//! - [`instance`]: the built `portcullis` binary as a separate process (a replica).

// Each test module uses a different subset of this toolbox.
#![allow(dead_code)]

pub mod backend;
pub mod client;
pub mod cookies;
pub mod cutter;
pub mod django;
pub mod ingress;
pub mod instance;
pub mod keys;
pub mod pki;
pub mod proxy;
pub mod raw;
pub mod raw_h2;
pub mod raw_upstream;
pub mod redis;
pub mod scripted;
mod serve;
pub mod upstream;

// Re-exports for `support::Req` etc.; any one test binary uses only some of them.
#[allow(unused_imports)]
pub use self::backend::{backend, Backend, BackendBuilder, Fault, Format, Shape};
#[allow(unused_imports)]
pub use self::client::{Req, Resp, SetCookie};
#[allow(unused_imports)]
pub use self::cookies::CookieJar;
#[allow(unused_imports)]
pub use self::keys::TestKey;
#[allow(unused_imports)]
pub use self::upstream::{upstream, Recorded, Upstream, UpstreamBuilder};
