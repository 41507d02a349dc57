//! The host of a request: `Host` parsing and host-rule matching on arbitrary bytes. Oracles:
//! nothing panics; a parsed host is the text it came from, its name and port put together
//! again; no userinfo, no empty label and no percent sign survives; a host an exact rule
//! matches is that name in some case, with at most one trailing dot; a host under a wildcard
//! rule ends with its domain after a dot.
#![no_main]

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use portcullis::rules::HostPattern;
use portcullis::view::Host;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let Ok(host) = Host::parse(value) else {
        return;
    };
    let text = host.as_str();
    assert_eq!(text.as_bytes(), data);
    let rebuilt = match host.port() {
        Some(port) => format!("{}:{port}", host.name()),
        None => host.name().to_owned(),
    };
    assert_eq!(rebuilt, text);
    assert!(!text.contains('@') && !text.contains('%'), "{text:?}");
    assert!(!host.name().contains(".."), "{text:?}");
    let matchable = host.matchable();
    let exact = HostPattern::parse("app.example.com").expect("exact");
    if exact.matches(matchable) {
        assert!(matchable.eq_ignore_ascii_case("app.example.com"), "{text:?}");
    }
    let wildcard = HostPattern::parse("*.example.com").expect("wildcard");
    if wildcard.matches(matchable) {
        let lower = matchable.to_ascii_lowercase();
        assert!(lower.ends_with(".example.com") && lower.len() > ".example.com".len());
    }
});
