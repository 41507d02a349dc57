use super::*;

#[test]
fn matching_table() {
    let cases: &[(&str, &str, bool)] = &[
        ("/dashboard/:path*", "/dashboard", true),
        ("/dashboard/:path*", "/dashboard/", true),
        ("/dashboard/:path*", "/dashboard/a/b", true),
        ("/dashboard/:path*", "/dashboardx", false),
        ("/dashboard/:path*", "/dash", false),
        ("/dashboard/:path+", "/dashboard", false),
        ("/dashboard/:path+", "/dashboard/a", true),
        ("/dashboard/:path+", "/dashboard/a/b", true),
        ("/users/:id", "/users/7", true),
        ("/users/:id", "/users", false),
        ("/users/:id", "/users/7/edit", false),
        ("/users/:id?", "/users", true),
        ("/users/:id?", "/users/7", true),
        ("/users/:id?", "/users/7/edit", false),
        ("/x/**", "/x", true),
        ("/x/**", "/x/a/b/c", true),
        ("/x/**", "/xy", false),
        ("/x/*", "/x/a", true),
        ("/x/*", "/x", false),
        ("/x/*", "/x/a/b", false),
        ("/login", "/login", true),
        ("/login", "/login/", true),
        ("/login", "/login/x", false),
        ("/login", "/Login", false),
        ("/:path*", "/", true),
        ("/:path*", "/anything/at/all", true),
        ("/", "/", true),
        ("/", "/a", false),
        ("/**", "/", true),
        // Literals are normalized like paths.
        ("/%40admin/:path*", "/@admin/x", true),
        ("/@admin/:path*", "/@admin/x", true),
        ("/café/:path*", "/caf%C3%A9/menu", true),
        ("/caf%c3%a9", "/caf%C3%A9", true),
    ];
    for (pattern, path, want) in cases {
        let compiled = Pattern::parse(pattern).expect(pattern);
        assert_eq!(compiled.matches(path), *want, "{pattern} vs {path}");
    }
}

#[test]
fn bad_patterns() {
    for pattern in [
        "dashboard",
        "/a//b",
        "/a/:",
        "/a/:pa-th",
        "/a/**/b",
        "/a/:x*/b",
        "/a/x*y",
        "/a/../b",
        "/a;b",
        "/a/:id?/b",
    ] {
        assert!(Pattern::parse(pattern).is_err(), "{pattern}");
    }
}

#[test]
fn first_match_wins() {
    let rule = |index: usize, pattern: &str, auth| Rule {
        index,
        pattern: Pattern::parse(pattern).expect("pattern"),
        auth,
        on_unauthenticated: OnUnauthenticated::Auto,
        upstream: 0,
        claims: Vec::new(),
        headers: Vec::new(),
    };
    let rules = [
        rule(0, "/api/admin/:path*", Auth::Required),
        rule(1, "/api/:path*", Auth::Required),
        rule(2, "/login", Auth::Guest),
        rule(3, "/:path*", Auth::Public),
    ];
    let index = |path| route(&rules, path).map(|r| r.index);
    assert_eq!(index("/api/admin/users"), Some(0));
    assert_eq!(index("/api/items"), Some(1));
    assert_eq!(index("/login"), Some(2));
    assert_eq!(index("/"), Some(3));
    assert!(route(&rules[..3], "/other").is_none());
}

#[test]
fn covers() {
    let p = |s| Pattern::parse(s).expect(s);
    assert!(p("/:path*").covers(&p("/dashboard/:path*")));
    assert!(p("/api/:path*").covers(&p("/api/admin/:path*")));
    assert!(!p("/api/admin/:path*").covers(&p("/api/:path*")));
    assert!(p("/x/*").covers(&p("/x/y")));
    assert!(!p("/x/*").covers(&p("/x/:p*")));
    assert!(p("/login").covers(&p("/login")));
    assert!(!p("/login").covers(&p("/logout")));
}

#[test]
fn required_rules_ignore_case_and_others_do_not() {
    let rule = |pattern: &str, auth| Rule {
        index: 0,
        pattern: Pattern::parse(pattern).expect("pattern"),
        auth,
        on_unauthenticated: OnUnauthenticated::Auto,
        upstream: 0,
        claims: Vec::new(),
        headers: Vec::new(),
    };
    let required = rule("/api/:path*", Auth::Required);
    assert!(required.matches("/API/users"));
    assert!(required.matches("/Api"));
    let public = rule("/public/:path*", Auth::Public);
    assert!(!public.matches("/PUBLIC/x"));
}
