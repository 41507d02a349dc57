use super::*;

fn config(extra: &str, routes: &str) -> Config {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:18999\"\n[upstreams]\napp = \"http://127.0.0.1:3000\"\nself = \"http://127.0.0.1:18999\"\n[jwt]\nsecret = \"0123456789abcdef0123456789abcdef\"\n{extra}\n{routes}"
    );
    Config::from_toml_str(&text).expect("valid config")
}

fn paths(warnings: &[Warning]) -> Vec<&str> {
    warnings.iter().map(|w| w.path.as_str()).collect()
}

#[test]
fn finds_shadowed_and_unprotected_rules() {
    let routes = "[[routes]]\npath = \"/:path*\"\nupstream = \"app\"\n[[routes]]\npath = \"/dashboard/:path*\"\nauth = \"required\"\nupstream = \"app\"\n";
    let warnings = lint(&config("", routes));
    let shadowed = warnings
        .iter()
        .find(|w| w.path == "routes[1]")
        .expect("routes[1] flagged");
    assert!(shadowed.message.contains("NOT protected"), "{shadowed}");
    assert!(paths(&warnings).contains(&"upstreams.self"));
}

#[test]
fn a_clean_config_has_no_findings() {
    let routes = "[[routes]]\npath = \"/dashboard/:path*\"\nauth = \"required\"\nupstream = \"app\"\n[[routes]]\npath = \"/:path*\"\nupstream = \"app\"\n";
    let text = format!("[upstreams]\napp = \"http://127.0.0.1:3000\"\n[jwt]\nsecret = \"9f8e2b7c41d05a3e6f1c8b92d7e04a5f\"\n{routes}");
    assert_eq!(
        lint(&Config::from_toml_str(&text).expect("valid")),
        Vec::new()
    );
}

#[test]
fn weak_settings_are_flagged() {
    let routes = "[[routes]]\npath = \"/:path*\"\nupstream = \"app\"\n";
    let text = format!(
        "[server]\ntrusted_proxies = [\"0.0.0.0/0\"]\n[upstreams]\napp = \"http://127.0.0.1:3000\"\n[session]\nsame_site = \"none\"\n[jwt]\nsecret = \"abababababababababababababababab\"\n{routes}"
    );
    let warnings = lint(&Config::from_toml_str(&text).expect("valid"));
    for path in [
        "routes",
        "session.same_site",
        "jwt.secret",
        "server.trusted_proxies[0]",
    ] {
        assert!(
            paths(&warnings).contains(&path),
            "{path} not flagged: {warnings:?}"
        );
    }
}

/// One configuration per warning: each adds exactly the finding it is about to a clean base.
#[test]
fn one_finding_per_warning() {
    let dir = std::env::temp_dir().join(format!("portcullis-lint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    std::fs::write(dir.join("c.pem"), cert.cert.pem()).expect("write cert");
    std::fs::write(dir.join("k.pem"), cert.key_pair.serialize_pem()).expect("write key");
    let tls = format!(
        "tls = {{ cert = {:?}, key = {:?} }}\n",
        dir.join("c.pem").display().to_string(),
        dir.join("k.pem").display().to_string()
    );
    let base = |server: &str, session: &str, jwt: &str, routes: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:18998\"\n{server}\n[upstreams]\napp = \"http://127.0.0.1:3000\"\n[session]\n{session}\n[jwt]\n{jwt}\n{routes}"
        )
    };
    let secret = "secret = \"9f8e2b7c41d05a3e6f1c8b92d7e04a5f\"";
    let guarded = "[[routes]]\npath = \"/app/:path*\"\nauth = \"required\"\nupstream = \"app\"\n[[routes]]\npath = \"/:path*\"\nupstream = \"app\"\n";
    let cases: Vec<(&str, String)> = vec![
        ("routes[1]", base("", "", secret, "[[routes]]\npath = \"/a/:path*\"\nauth = \"required\"\nupstream = \"app\"\n[[routes]]\npath = \"/a/b\"\nauth = \"required\"\nupstream = \"app\"\n")),
        ("routes", base("", "", secret, "[[routes]]\npath = \"/:path*\"\nupstream = \"app\"\n")),
        ("session.secure", base(&tls, "secure = false", secret, guarded)),
        ("session.same_site", base("", "same_site = \"none\"", secret, guarded)),
        ("jwt.secret", base("", "", "secret = \"passwordpasswordpasswordpassword\"", guarded)),
        ("server.trusted_proxies[0]", base("trusted_proxies = [\"::/0\"]", "", secret, guarded)),
        ("upstreams.app", base("", "", secret, guarded).replace("127.0.0.1:3000", "127.0.0.1:18998")),
        ("jwt.leeway", base("", "", &format!("{secret}\nleeway = \"3650d\""), guarded)),
        ("server.trusted_proxies", base("trusted_proxies = [\"0.0.0.0/1\", \"128.0.0.0/1\"]", "", secret, guarded)),
        ("server.trusted_proxies", base("trusted_proxies = [\"11.0.0.0/8\", \"12.0.0.0/8\"]", "", secret, guarded)),
        ("session.secure", base("", "secure = false", secret, guarded).replace("127.0.0.1:18998", "0.0.0.0:18998")),
        ("session.refresh_ahead", base("", "refresh_ahead = \"1h\"", secret, guarded)),
        ("session.csrf", base("", "csrf = \"off\"\nsame_site = \"lax\"", secret, guarded)),
        ("admin.listen", base("", "", secret, guarded) + "[admin]\nlisten = \"0.0.0.0:9090\"\n"),
        ("backend.login", base("", "", secret, guarded) + "[backend]\nlogin = \"http://auth.internal.example/login\"\n"),
        ("backend.refresh", base("", "", secret, guarded) + "[backend]\nlogin = \"https://auth.example/login\"\nrefresh = \"http://auth.example/refresh\"\n"),
        ("forward_auth.listen", base("trusted_proxies = [\"10.0.0.2/32\"]", "", secret, guarded).replace("[upstreams]", "[forward_auth]\nlisten = \"0.0.0.0:18997\"\n[upstreams]")),
        // Behind an ingress, logins reach server.listen from the ingress.
        ("server.trusted_proxies", base("", "", secret, guarded).replace("[upstreams]", "[forward_auth]\nlisten = \"127.0.0.1:18997\"\n[upstreams]")),
        // A host rule behind a rule for every subdomain, and one behind a rule without host.
        ("routes[1]", base("", "", secret, "[[routes]]\nhost = \"*.example.com\"\npath = \"/:path*\"\nauth = \"required\"\nupstream = \"app\"\n[[routes]]\nhost = \"Admin.example.com\"\npath = \"/x\"\nauth = \"required\"\nupstream = \"app\"\n")),
        ("routes[1]", base("", "", secret, "[[routes]]\npath = \"/a/:path*\"\nauth = \"required\"\nupstream = \"app\"\n[[routes]]\nhost = \"admin.example.com\"\npath = \"/a/b\"\nauth = \"required\"\nupstream = \"app\"\n")),
    ];
    for (path, text) in cases {
        let config = Config::from_toml_str(&text).unwrap_or_else(|p| panic!("{path}: {p}"));
        let warnings = lint(&config);
        assert_eq!(paths(&warnings), vec![path], "{path}: {warnings:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mixed_algorithm_families_are_flagged() {
    let dir = std::env::temp_dir().join(format!("portcullis-lint-mixed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let key = openssl::ec::EcKey::generate(
        &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).expect("curve"),
    )
    .expect("key");
    std::fs::write(dir.join("es.pem"), key.public_key_to_pem().expect("pem")).expect("write");
    let text = format!(
        "[upstreams]\napp = \"http://127.0.0.1:3000\"\n[jwt]\nalgorithms = [\"HS256\", \"ES256\"]\nsecret = \"9f8e2b7c41d05a3e6f1c8b92d7e04a5f\"\npublic_key_file = {:?}\n[[routes]]\npath = \"/:path*\"\nauth = \"required\"\nupstream = \"app\"\n",
        dir.join("es.pem").display().to_string()
    );
    let warnings = lint(&Config::from_toml_str(&text).expect("valid"));
    assert_eq!(paths(&warnings), vec!["jwt.algorithms"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn entropy() {
    assert!(is_low_entropy(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
    assert!(is_low_entropy(b"passwordpasswordpasswordpassword"));
    assert!(!is_low_entropy(b"9f8e2b7c41d05a3e6f1c8b92d7e04a5f"));
}

#[test]
fn sound_network_settings_are_not_flagged() {
    let routes = "[[routes]]\npath = \"/app/:path*\"\nauth = \"required\"\nupstream = \"app\"\n";
    let text = format!(
        "[server]\nlisten = \"0.0.0.0:18997\"\ntrusted_proxies = [\"10.0.0.0/8\", \"172.16.0.0/12\", \"fc00::/7\", \"104.16.0.0/13\", \"2400:cb00::/32\"]\n\
         [admin]\nlisten = \"0.0.0.0:9090\"\ntoken = \"0123456789abcdef0123\"\n\
         [backend]\nlogin = \"http://127.0.0.1:4000/login\"\nrefresh = \"http://localhost:4000/refresh\"\n\
         [upstreams]\napp = \"http://127.0.0.1:3000\"\n[jwt]\nsecret = \"9f8e2b7c41d05a3e6f1c8b92d7e04a5f\"\nleeway = \"2m\"\n{routes}"
    );
    assert_eq!(
        lint(&Config::from_toml_str(&text).expect("valid")),
        Vec::new()
    );
}

#[test]
fn host_rules_shadow_only_what_they_cover() {
    let routes = "[[routes]]\nhost = \"app.example.com\"\npath = \"/:path*\"\nupstream = \"app\"\n[[routes]]\nhost = \"admin.example.com\"\npath = \"/:path*\"\nauth = \"required\"\nupstream = \"app\"\n[[routes]]\npath = \"/:path*\"\nauth = \"required\"\nupstream = \"app\"\n";
    let config = |routes: &str| {
        let text = format!("[upstreams]\napp = \"http://127.0.0.1:3000\"\n[jwt]\nsecret = \"9f8e2b7c41d05a3e6f1c8b92d7e04a5f\"\n{routes}");
        Config::from_toml_str(&text).expect("valid")
    };
    assert_eq!(lint(&config(routes)), Vec::new());
    let shadowed = routes.replace("host = \"app.example.com\"\n", "");
    let warnings = lint(&config(&shadowed));
    assert_eq!(paths(&warnings), vec!["routes[1]", "routes[2]"]);
    assert!(
        warnings[0].message.contains("NOT protected"),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[0].message.contains("host and path"),
        "{}",
        warnings[0]
    );
}
