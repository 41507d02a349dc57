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
        host: None,
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
    let index = |path| route(&rules, "app.test", path).map(|r| r.index);
    assert_eq!(index("/api/admin/users"), Some(0));
    assert_eq!(index("/api/items"), Some(1));
    assert_eq!(index("/login"), Some(2));
    assert_eq!(index("/"), Some(3));
    assert!(route(&rules[..3], "app.test", "/other").is_none());
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
        host: None,
        pattern: Pattern::parse(pattern).expect("pattern"),
        auth,
        on_unauthenticated: OnUnauthenticated::Auto,
        upstream: 0,
        claims: Vec::new(),
        headers: Vec::new(),
    };
    let required = rule("/api/:path*", Auth::Required);
    assert!(required.matches("app.test", "/API/users"));
    assert!(required.matches("app.test", "/Api"));
    let public = rule("/public/:path*", Auth::Public);
    assert!(!public.matches("app.test", "/PUBLIC/x"));
}

#[test]
fn host_patterns() {
    // (pattern, request host as `Host::matchable` gives it, matches)
    let cases: &[(&str, &str, bool)] = &[
        ("app.example.com", "app.example.com", true),
        ("app.example.com", "APP.Example.COM", true),
        ("App.Example.com.", "app.example.com", true),
        ("app.example.com", "api.example.com", false),
        ("app.example.com", "app.example.com.evil.test", false),
        ("app.example.com", "xapp.example.com", false),
        ("*.example.com", "a.example.com", true),
        ("*.example.com", "a.b.example.com", true),
        ("*.example.com", "A.EXAMPLE.com", true),
        ("*.example.com", "example.com", false),
        ("*.example.com", "evilexample.com", false),
        ("*.example.com", "example.com.evil.test", false),
        ("127.0.0.1", "127.0.0.1", true),
        ("::1", "[::1]", true),
        ("[::1]", "[0:0::1]", true),
        ("[::1]", "[::2]", false),
    ];
    for (pattern, host, want) in cases {
        let compiled = HostPattern::parse(pattern).expect(pattern);
        assert_eq!(compiled.matches(host), *want, "{pattern} vs {host}");
    }
    for bad in [
        "",
        "*",
        "*.",
        "a.*.com",
        "app.example.com:8080",
        "https://app.example.com",
        "app..example.com",
        "*.127.0.0.1x y",
        "caf\u{e9}.example",
        "app.example.com/x",
    ] {
        assert!(HostPattern::parse(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn host_patterns_cover() {
    let p = |s: &str| HostPattern::parse(s).expect(s);
    assert!(p("*.example.com").covers(&p("a.example.com")));
    assert!(p("*.example.com").covers(&p("*.a.example.com")));
    assert!(!p("*.example.com").covers(&p("example.com")));
    assert!(!p("*.a.example.com").covers(&p("*.example.com")));
    assert!(!p("a.example.com").covers(&p("*.example.com")));
    assert!(p("a.example.com").covers(&p("A.example.com")));
}

#[test]
fn host_rules_route_first_and_rules_without_host_take_any() {
    let rule = |index: usize, host: Option<&str>, pattern: &str| Rule {
        index,
        host: host.map(|h| HostPattern::parse(h).expect(h)),
        pattern: Pattern::parse(pattern).expect("pattern"),
        auth: Auth::Required,
        on_unauthenticated: OnUnauthenticated::Auto,
        upstream: 0,
        claims: Vec::new(),
        headers: Vec::new(),
    };
    let rules = [
        rule(0, Some("admin.example.com"), "/:path*"),
        rule(1, Some("*.example.com"), "/api/:path*"),
        rule(2, None, "/:path*"),
    ];
    let index = |host, path| route(&rules, host, path).map(|r| r.index);
    assert_eq!(index("Admin.Example.com", "/x"), Some(0));
    assert_eq!(index("shop.example.com", "/api/x"), Some(1));
    assert_eq!(index("shop.example.com", "/x"), Some(2));
    assert_eq!(index("other.test", "/api/x"), Some(2));
    assert!(rules[2].covers(&rules[0]));
    assert!(!rules[0].covers(&rules[2]));
    assert!(!rules[1].covers(&rules[0]));
}

#[test]
fn segments_are_what_split_skip_one_yields() {
    for path in [
        "", "/", "//", "/a", "/a/", "/a//b", "a/b", "a", "/a/b/c", "///x/",
    ] {
        let want: Vec<&str> = path.split('/').skip(1).collect();
        assert_eq!(segments(path).collect::<Vec<_>>(), want, "{path:?}");
    }
}
