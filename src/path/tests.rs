use super::*;

#[test]
fn normalization_table() {
    let cases: &[(&str, Result<&str, PathError>)] = &[
        ("/", Ok("/")),
        ("/dashboard", Ok("/dashboard")),
        ("/dashboard/", Ok("/dashboard/")),
        ("/a/./b/../c//d", Ok("/a/c/d")),
        ("//dashboard", Ok("/dashboard")),
        ("/public/../dashboard", Ok("/dashboard")),
        ("/public/%2e%2e/dashboard", Ok("/dashboard")),
        ("/public/%2E%2E/dashboard", Ok("/dashboard")),
        ("/public/.%2e/dashboard", Ok("/dashboard")),
        ("/%64ashboard", Ok("/dashboard")),
        ("/../../dashboard", Ok("/dashboard")),
        ("/a/..", Ok("/")),
        ("/a/b/..", Ok("/a/")),
        ("/a/.", Ok("/a/")),
        // RFC 3986 §5.2.4: an empty segment is one `..` removes (WHATWG URL agrees).
        ("/a//../b", Ok("/a/b")),
        ("/dashboard//../public", Ok("/dashboard/public")),
        ("/a//..", Ok("/a/")),
        ("/a/b//../../c", Ok("/a/c")),
        ("/..//x", Ok("/x")),
        ("/a//", Ok("/a/")),
        // A raw `#` would start a fragment for some readers and not for others.
        ("/dashboard/x#/../../public", Err(PathError::Fragment)),
        ("/a#", Err(PathError::Fragment)),
        ("/%7euser", Ok("/~user")),
        // Decoded once: %25 is '%', which is not unreserved, so it stays encoded.
        (
            "/public/%252e%252e/dashboard",
            Ok("/public/%252e%252e/dashboard"),
        ),
        ("/caf%c3%a9", Ok("/caf%C3%A9")),
        ("/a%20b", Ok("/a%20b")),
        // One spelling: pchar characters plain, everything else escaped.
        ("/%40admin/x", Ok("/@admin/x")),
        ("/@admin/x", Ok("/@admin/x")),
        ("/a%2Bb%3a%21", Ok("/a+b:!")),
        ("/%7b%22x%22%7d", Ok("/%7B%22x%22%7D")),
        ("/{\"x\"}", Ok("/%7B%22x%22%7D")),
        ("/%3F%23", Ok("/%3F%23")),
        ("/100%25", Ok("/100%25")),
        // A trailing dot or space is trimmed by some servers: refused.
        ("/dashboard.", Err(PathError::AmbiguousSegment)),
        ("/dashboard%2e", Err(PathError::AmbiguousSegment)),
        ("/dashboard%20", Err(PathError::AmbiguousSegment)),
        ("/dashboard%20/x", Err(PathError::AmbiguousSegment)),
        ("/a.b/c", Ok("/a.b/c")),
        ("/public/..%2fdashboard", Err(PathError::EncodedSlash)),
        ("/dashboard%2fx", Err(PathError::EncodedSlash)),
        ("/dashboard%2Fx", Err(PathError::EncodedSlash)),
        ("/public/..%5cdashboard", Err(PathError::EncodedSlash)),
        ("/public/..\\dashboard", Err(PathError::Backslash)),
        ("/dashboard%00", Err(PathError::Control)),
        ("/dashboard%0a", Err(PathError::Control)),
        ("/dashboard%7f", Err(PathError::Control)),
        ("/dashboard;x=1", Err(PathError::PathParameter)),
        ("/dashboard%3bx=1", Err(PathError::PathParameter)),
        ("/dash%", Err(PathError::BadEscape)),
        ("/dash%4", Err(PathError::BadEscape)),
        ("/dash%zz", Err(PathError::BadEscape)),
        ("/caf%c3", Err(PathError::InvalidUtf8)),
        ("/%ff", Err(PathError::InvalidUtf8)),
        ("/a b", Err(PathError::Control)),
        ("dashboard", Err(PathError::NotOriginForm)),
        ("*", Err(PathError::NotOriginForm)),
        ("", Err(PathError::NotOriginForm)),
    ];
    for (input, want) in cases {
        let got = normalize(input);
        assert_eq!(
            got.as_deref().map_err(|e| *e),
            want.as_ref().map(|s| *s).map_err(|e| *e),
            "{input:?}"
        );
    }
}

#[test]
fn a_normal_path_is_one_whose_segments_are_the_decided_ones() {
    let cases: &[(&str, Result<&str, PathError>)] = &[
        ("/", Ok("/")),
        ("/dashboard/x/", Ok("/dashboard/x/")),
        // Only the spelling changes: each segment is the one the upstream reads.
        ("/%64ashboard", Ok("/dashboard")),
        ("/caf%c3%a9", Ok("/caf%C3%A9")),
        ("/a.b/c", Ok("/a.b/c")),
        ("/public/../dashboard", Err(PathError::NotNormal)),
        ("/public/%2e%2e/dashboard", Err(PathError::NotNormal)),
        ("/public/.%2E/dashboard", Err(PathError::NotNormal)),
        ("/dashboard/./x", Err(PathError::NotNormal)),
        ("/dashboard//../public", Err(PathError::NotNormal)),
        ("//dashboard", Err(PathError::NotNormal)),
        ("/dashboard//x", Err(PathError::NotNormal)),
        ("/a/.", Err(PathError::NotNormal)),
        ("/a/..", Err(PathError::NotNormal)),
        ("/dashboard/x#/../../public", Err(PathError::Fragment)),
        ("/dashboard%2fx", Err(PathError::EncodedSlash)),
        ("/dashboard.", Err(PathError::AmbiguousSegment)),
        ("dashboard", Err(PathError::NotOriginForm)),
    ];
    for (input, want) in cases {
        let got = normal(input);
        assert_eq!(
            got.as_deref().map_err(|e| *e),
            want.as_ref().map(|s| *s).map_err(|e| *e),
            "{input:?}"
        );
        // What is normal normalizes to itself.
        if let Ok(normal) = &got {
            assert_eq!(normalize(input).as_ref(), Ok(normal), "{input:?}");
        }
    }
}

#[test]
fn normalization_is_idempotent() {
    let inputs = [
        "/a/./b/../c//d",
        "/public/%252e%252e/dashboard",
        "/caf%c3%a9/x/",
        "/%64ashboard/..",
        "/a%20b/%7e",
    ];
    for input in inputs {
        let once = normalize(input).expect("valid");
        assert_eq!(normalize(&once).as_deref(), Ok(once.as_str()), "{input:?}");
    }
}

#[test]
fn the_fast_check_only_passes_paths_normalizing_leaves_alone() {
    // Every path up to five bytes over an alphabet of the bytes that matter: a path the fast
    // check passes normalizes to itself, and every such path without an escape passes it.
    let alphabet = [b'/', b'.', b'a', b'%', b'2', b'e', b'~', b'#', b' ', b';'];
    let mut checked = 0;
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(path) = stack.pop() {
        let text = std::str::from_utf8(&path).expect("ascii");
        let same = normalize(text).is_ok_and(|n| n == text);
        if is_normal_form(text) {
            assert!(
                same,
                "{text:?} passed the fast check but normalizes differently"
            );
        } else {
            assert!(
                !same || text.contains('%'),
                "{text:?} is normal but failed the fast check"
            );
        }
        checked += 1;
        if path.len() < 5 {
            for &byte in &alphabet {
                let mut longer = path.clone();
                longer.push(byte);
                stack.push(longer);
            }
        }
    }
    assert!(checked > 100_000);
    for (path, normal) in [
        ("/", true),
        ("/api/v1/items", true),
        ("/a.b/c/", true),
        ("/a/", true),
        ("/a/.", false),
        ("/a./b", false),
        ("/a//b", false),
        ("/%7e", false),
        ("//", false),
        ("", false),
        ("a", false),
    ] {
        assert_eq!(is_normal_form(path), normal, "{path:?}");
    }
}

/// Every path of up to four segments drawn from dot, empty and plain ones: what `normal`
/// takes is exactly what `normalize` gives, segment for segment; dot and empty segments
/// (but a trailing `/`) are never taken as sent; and `normalize` agrees with RFC 3986 §5.2.4
/// followed by merging `//`.
#[test]
fn normal_paths_are_their_own_normal_form() {
    let pieces = ["a", "B", ".", "..", "", "%2e", "%2E%2e", ".%2e", "%61"];
    let mut paths = vec![String::from("/")];
    for _ in 0..4 {
        let mut longer = Vec::new();
        for path in &paths {
            for piece in pieces {
                longer.push(format!("{}/{piece}", path.trim_end_matches('/')));
                longer.push(format!("{path}{piece}"));
            }
        }
        paths.extend(longer);
        paths.sort();
        paths.dedup();
    }
    for raw in &paths {
        let Ok(normalized) = normalize(raw) else {
            continue;
        };
        assert_eq!(normalized, rfc3986_then_merge(raw), "{raw:?}");
        match normal(raw) {
            Ok(as_sent) => {
                assert_eq!(as_sent, normalized, "{raw:?}");
                assert_eq!(
                    raw.split('/').count(),
                    as_sent.split('/').count(),
                    "{raw:?}"
                );
            }
            Err(err) => {
                assert_eq!(err, PathError::NotNormal, "{raw:?}");
                let decoded = raw.replace("%2e", ".").replace("%2E", ".");
                let inner = decoded.trim_end_matches('/');
                assert!(
                    inner
                        .split('/')
                        .skip(1)
                        .any(|s| matches!(s, "" | "." | ".."))
                        || decoded.ends_with("/.")
                        || decoded.ends_with("/.."),
                    "{raw:?} refused though normal"
                );
            }
        }
    }
}

/// RFC 3986 §5.2.4 word for word (with `%2e` decoded first), then empty segments merged.
fn rfc3986_then_merge(raw: &str) -> String {
    let mut input = raw
        .replace("%2e", ".")
        .replace("%2E", ".")
        .replace("%61", "a");
    let mut output = String::new();
    while !input.is_empty() {
        if let Some(rest) = input
            .strip_prefix("../")
            .or_else(|| input.strip_prefix("./"))
        {
            input = rest.to_owned();
        } else if input.starts_with("/./") {
            input = input[2..].to_owned();
        } else if input == "/." {
            input = "/".to_owned();
        } else if input.starts_with("/../") || input == "/.." {
            input = format!("/{}", &input[if input == "/.." { 3 } else { 4 }..]);
            match output.rfind('/') {
                Some(at) => output.truncate(at),
                None => output.clear(),
            }
        } else if input == "." || input == ".." {
            input.clear();
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            output.push_str(&input[..end]);
            input = input[end..].to_owned();
        }
    }
    let mut merged = String::new();
    for segment in output.split('/').filter(|s| !s.is_empty()) {
        merged.push('/');
        merged.push_str(segment);
    }
    if output.ends_with('/') || merged.is_empty() {
        merged.push('/');
    }
    merged
}
