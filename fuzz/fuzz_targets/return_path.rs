//! The return-path validator. Oracle: whatever it accepts is a same-site relative path: it
//! starts with one `/`, has no backslash or control character, and stays so after one more
//! round of percent-decoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::auth::login::safe_return_path;

fn decode(input: &str) -> Vec<u8> {
    let bytes = input.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn same_site(path: &[u8]) -> bool {
    path.first() == Some(&b'/')
        && path.get(1) != Some(&b'/')
        && path.get(1) != Some(&b'\\')
        && !path.iter().any(|b| *b == b'\\' || b.is_ascii_control())
}

fuzz_target!(|data: &[u8]| {
    let Ok(candidate) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(accepted) = safe_return_path(candidate) {
        assert!(same_site(accepted.as_bytes()), "accepted {accepted:?}");
        let decoded = decode(accepted);
        assert!(
            decoded.first() == Some(&b'/')
                && decoded.get(1) != Some(&b'/')
                && decoded.get(1) != Some(&b'\\'),
            "accepted {accepted:?}"
        );
        assert!(
            !decoded.iter().any(|b| b.is_ascii_control()),
            "accepted {accepted:?}"
        );
    }
});
