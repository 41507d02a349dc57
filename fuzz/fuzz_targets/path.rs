//! Path normalization + rule matching. Oracles: no panic; normalization is idempotent; the
//! normalized path holds no dot, empty or ambiguous segment; a path that normalizes into the
//! protected prefix is never matched by a public rule; what is forwarded is what was matched;
//! a path taken as sent (forward auth) is one whose normal form is itself, segment for segment;
//! a path the fast check calls normal (`is_normal_form`, which skips normalizing) is its own
//! normal form either way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::path::{is_normal_form, normal, normalize};
use portcullis::rules::{route, Auth, OnUnauthenticated, Pattern, Rule};

fn rule(index: usize, pattern: &str, auth: Auth) -> Rule {
    Rule {
        index,
        host: None,
        pattern: Pattern::parse(pattern).expect("fixed pattern"),
        auth,
        on_unauthenticated: OnUnauthenticated::Auto,
        upstream: 0,
        claims: Vec::new(),
        headers: Vec::new(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(normalized) = normalize(raw) else {
        assert!(normal(raw).is_err(), "normal but not normalizable: {raw:?}");
        assert!(!is_normal_form(raw), "passed the fast check but refused: {raw:?}");
        return;
    };
    if is_normal_form(raw) {
        assert_eq!(normalized, raw, "passed the fast check but normalizes: {raw:?}");
        assert_eq!(normal(raw).as_deref(), Ok(raw), "passed the fast check: {raw:?}");
    }
    if let Ok(as_sent) = normal(raw) {
        assert_eq!(as_sent, normalized, "taken as sent as another path: {raw:?}");
        // Only the spelling may differ: as many segments, none a dot or empty one.
        assert_eq!(
            raw.split('/').count(),
            as_sent.split('/').count(),
            "segments changed: {raw:?} -> {as_sent:?}"
        );
    }
    assert_eq!(
        normalize(&normalized).as_deref(),
        Ok(normalized.as_str()),
        "not idempotent: {raw:?}"
    );
    assert!(normalized.starts_with('/'));
    for segment in normalized.split('/').skip(1) {
        assert!(
            segment != "." && segment != "..",
            "dot segment survived: {raw:?} -> {normalized:?}"
        );
    }
    assert!(
        !normalized.contains("//"),
        "empty segment survived: {normalized:?}"
    );
    let lower = normalized.to_ascii_lowercase();
    for banned in ["%2f", "%5c", "%00", ";", "\\"] {
        assert!(!lower.contains(banned), "{banned} survived: {normalized:?}");
    }
    let rules = [
        rule(0, "/public/:path*", Auth::Public),
        rule(1, "/dashboard/:path*", Auth::Required),
        rule(2, "/:path*", Auth::Public),
    ];
    let protected = normalized == "/dashboard" || normalized.starts_with("/dashboard/");
    let matched = route(&rules, "app.example.com", &normalized).expect("the catch-all matches everything");
    if protected {
        assert_eq!(
            matched.auth,
            Auth::Required,
            "{raw:?} -> {normalized:?} escaped the guard"
        );
    }
});
