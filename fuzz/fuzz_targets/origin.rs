//! `Origin` parsing and the CSRF verdict on arbitrary `Origin` / `Sec-Fetch-Site` bytes.
//! Oracles: nothing panics; a parsed origin prints as `scheme://host:port` and parses back to
//! itself; the verdict passes an `Origin` only when it is the site's or an allowed one, and
//! passes a `Sec-Fetch-Site` only when it says `same-origin` or `none`.
#![no_main]

use http::header::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use portcullis::auth::csrf::{check, Origin, Verdict};

fuzz_target!(|data: &[u8]| {
    let (selector, rest) = data.split_first().unwrap_or((&0, &[]));
    if let Ok(text) = std::str::from_utf8(rest) {
        if let Some(origin) = Origin::parse(text) {
            let printed = origin.to_string();
            assert_eq!(Origin::parse(&printed), Some(origin), "{text:?} -> {printed:?}");
        }
    }
    let Ok(value) = HeaderValue::from_bytes(rest) else {
        return;
    };
    let site = Origin::parse("https://app.example.com").expect("site");
    let allowed = [Origin::parse("http://127.0.0.1:8080").expect("allowed")];
    let mut headers = HeaderMap::new();
    let fetch_metadata = selector & 1 == 1;
    headers.insert(
        if fetch_metadata { "sec-fetch-site" } else { "origin" },
        value.clone(),
    );
    match check(&headers, Some(&site), &allowed) {
        Verdict::Pass(_) if fetch_metadata => {
            let said = String::from_utf8_lossy(value.as_bytes()).trim().to_ascii_lowercase();
            assert!(said == "same-origin" || said == "none", "passed {said:?}");
        }
        Verdict::Pass(_) => {
            let origin = value.to_str().ok().and_then(|v| Origin::parse(v.trim()));
            assert!(
                origin.as_ref() == Some(&site) || origin.as_ref() == Some(&allowed[0]),
                "passed Origin {value:?}"
            );
        }
        Verdict::Refuse(_) => {}
    }
});
