//! The return-path validator. Oracle: whatever it accepts is a same-site relative path: it
//! starts with one `/`, has no backslash or control character, and stays so after one more
//! round of percent-decoding and after a browser resolves its dot segments (RFC 3986 §5.2.4,
//! with `%2e` read as `.`), in either spelling.
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

/// The path part resolved as a browser would: a stack of segments, `.` dropped, `..` popping.
fn resolved(path: &[u8]) -> Vec<u8> {
    let end = path
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(path.len());
    let path = &path[..end];
    let Some(rest) = path.strip_prefix(b"/") else {
        return path.to_vec();
    };
    let is = |segment: &[u8], dots: &str| {
        String::from_utf8_lossy(segment)
            .to_ascii_lowercase()
            .replace("%2e", ".")
            == dots
    };
    let mut stack: Vec<&[u8]> = Vec::new();
    let segments: Vec<&[u8]> = rest.split(|&b| b == b'/').collect();
    let mut trailing = false;
    for segment in &segments {
        trailing = false;
        if is(segment, ".") {
            trailing = true;
        } else if is(segment, "..") {
            stack.pop();
            trailing = true;
        } else {
            stack.push(segment);
        }
    }
    let mut out = Vec::new();
    for segment in &stack {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if trailing || stack.is_empty() {
        out.push(b'/');
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
        for spelling in [accepted.as_bytes(), &decoded] {
            let path = resolved(spelling);
            assert!(
                path.first() == Some(&b'/')
                    && path.get(1) != Some(&b'/')
                    && path.get(1) != Some(&b'\\'),
                "accepted {accepted:?}, which resolves to {:?}",
                String::from_utf8_lossy(&path)
            );
        }
    }
});
