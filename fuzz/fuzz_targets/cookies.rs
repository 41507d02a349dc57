//! The Cookie header parser. Oracles: no panic; after stripping the proxy's cookies none of
//! them can be found again; cookies that were not stripped keep their values.
#![no_main]

use http::header::{HeaderMap, HeaderValue, COOKIE};
use libfuzzer_sys::fuzz_target;
use portcullis::cookie_header as cookies;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(COOKIE, value);
        }
    }
    let theme_before = cookies::find(&headers, "theme").map(str::to_owned);
    let _ = cookies::find(&headers, "access_token");
    cookies::strip(&mut headers, &["access_token", "refresh_token"]);
    assert!(cookies::find(&headers, "access_token").is_none());
    assert!(cookies::find(&headers, "refresh_token").is_none());
    assert_eq!(
        cookies::find(&headers, "theme").map(str::to_owned),
        theme_before
    );
});
