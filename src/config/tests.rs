#![allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error.

use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn minimal(extra: &str) -> String {
    format!(
        r#"
[upstreams]
app = "http://127.0.0.1:3000"

[jwt]
secret = "{SECRET}"

[[routes]]
path = "/:path*"
upstream = "app"
{extra}
"#
    )
}

fn problems(text: &str) -> Vec<String> {
    match Config::from_toml_str(text) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn minimal_config_has_sensible_defaults() {
    let config = Config::from_toml_str(&minimal("")).expect("valid");
    assert_eq!(
        config.server.listen,
        vec!["127.0.0.1:8080".parse().expect("addr")]
    );
    assert_eq!(config.server.max_body, 10 << 20);
    assert_eq!(config.login.path, "/login");
    assert_eq!(config.session.access_cookie, "access_token");
    assert!(config.session.secure);
    assert_eq!(config.session.refresh_ahead, Duration::from_secs(60));
    assert_eq!(config.jwt.leeway, Duration::from_secs(30));
    assert_eq!(config.rules.len(), 1);
    assert_eq!(config.rules[0].auth, crate::rules::Auth::Public);
}

#[test]
fn every_problem_is_reported_with_its_key_path() {
    let text = r#"
[server]
listen = "not-an-address"
max_body = "ten megs"

[upstreams]
api = "ftp://example.com"

[jwt]
secret = "too-short"
leeway = "soon"

[session]
same_site = "sometimes"

[[routes]]
path = "/api/:path*"
auth = "requried"
upstream = "apii"

[[routes]]
path = "dashboard"
upstream = "api"
on_unauthenticated = "maybe"
"#;
    let found = problems(text);
    let expect = [
        "server.listen[0]:",
        "server.max_body:",
        "upstreams.api:",
        "jwt.secret: is 9 bytes",
        "jwt.leeway:",
        "session.same_site:",
        "routes[0].auth:",
        "routes[0].upstream: no upstream named \"apii\"",
        "routes[1].path:",
        "routes[1].on_unauthenticated:",
    ];
    for prefix in expect {
        assert!(
            found.iter().any(|p| p.starts_with(prefix)),
            "missing {prefix:?} in {found:#?}"
        );
    }
}

#[test]
fn unknown_keys_are_errors() {
    let found = problems(&minimal("[session]\naccess_cookei = \"x\""));
    assert!(
        found.iter().any(|p| p.contains("access_cookei")),
        "{found:?}"
    );
}

#[test]
fn missing_key_file_names_its_path() {
    let text = minimal("").replace(
        &format!("secret = \"{SECRET}\""),
        "secret_file = \"/nonexistent/hs.secret\"",
    );
    let found = problems(&text);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("jwt.secret_file: cannot read /nonexistent/hs.secret")),
        "{found:?}"
    );
}

#[test]
fn missing_secret_is_named() {
    let text = minimal("").replace(&format!("secret = \"{SECRET}\""), "");
    let found = problems(&text);
    assert!(
        found.iter().any(|p| p.starts_with("jwt.secret:")),
        "{found:?}"
    );
}

#[test]
fn login_fields_may_be_renamed() {
    let config = Config::from_toml_str(&minimal(
        "[login]\nfields = { username = \"email\", password = \"password\" }",
    ))
    .expect("valid");
    assert_eq!(
        config.login.fields,
        vec![
            ("password".to_owned(), "password".to_owned()),
            ("username".to_owned(), "email".to_owned())
        ]
    );
}

#[test]
fn route_claims_accept_a_string_or_a_list() {
    let text = minimal("").replace(
        "[[routes]]\npath = \"/:path*\"",
        "[[routes]]\npath = \"/admin/:path*\"\nauth = \"required\"\nclaims = { role = [\"admin\", \"owner\"], tier = \"gold\" }\nupstream = \"app\"\n\n[[routes]]\npath = \"/:path*\"",
    );
    let config = Config::from_toml_str(&text).expect("valid");
    assert_eq!(
        config.rules[0].claims,
        vec![
            (
                "role".to_owned(),
                vec!["admin".to_owned(), "owner".to_owned()]
            ),
            ("tier".to_owned(), vec!["gold".to_owned()])
        ]
    );
}

#[test]
fn same_site_none_requires_secure() {
    let found = problems(&minimal("[session]\nsame_site = \"none\"\nsecure = false"));
    assert!(
        found.iter().any(|p| p.starts_with("session.same_site:")),
        "{found:?}"
    );
}

#[test]
fn environment_overrides_any_key() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "portcullis.toml",
            &minimal("").replace(&format!("secret = \"{SECRET}\""), ""),
        )?;
        jail.set_env("PORTCULLIS_JWT__SECRET", SECRET);
        jail.set_env("PORTCULLIS_SERVER__LISTEN", "127.0.0.1:9999");
        jail.set_env("PORTCULLIS_SERVER__MAX_BODY", "1KiB");
        jail.set_env("PORTCULLIS_LOGIN__ATTEMPTS_PER_MINUTE", "3");
        jail.set_env("PORTCULLIS_CONFIG", "ignored.toml");
        let config = Config::load(Path::new("portcullis.toml")).map_err(|p| p.to_string())?;
        assert_eq!(
            config.server.listen,
            vec!["127.0.0.1:9999".parse().expect("addr")]
        );
        assert_eq!(config.server.max_body, 1024);
        assert_eq!(config.login.attempts_per_minute, 3);
        assert_eq!(config.jwt.keys.secret.as_deref(), Some(SECRET.as_bytes()));
        Ok(())
    });
}

#[test]
fn yaml_files_load() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "portcullis.yaml",
            &format!("upstreams:\n  app: http://127.0.0.1:3000\njwt:\n  secret: {SECRET}\nroutes:\n  - path: /:path*\n    upstream: app\n"),
        )?;
        let config = Config::load(Path::new("portcullis.yaml")).map_err(|p| p.to_string())?;
        assert_eq!(config.upstreams[0].name, "app");
        Ok(())
    });
}

#[test]
fn a_jwks_url_alone_is_a_key_source() {
    let text = r#"
[upstreams]
app = "http://127.0.0.1:3000"

[jwt]
algorithms = ["RS256", "ES256"]
jwks_url = "https://issuer.example/.well-known/jwks.json"

[[routes]]
path = "/:path*"
upstream = "app"
"#;
    let config = Config::from_toml_str(text).expect("a JWKS URL is enough");
    assert_eq!(
        config.jwt.jwks_url.map(|u| u.to_string()),
        Some("https://issuer.example/.well-known/jwks.json".to_owned())
    );
    assert_eq!(config.jwt.jwks_refresh, Duration::from_secs(300));

    let refreshed = text.replace("jwks_url =", "jwks_refresh = \"90s\"\njwks_url =");
    let config = Config::from_toml_str(&refreshed).expect("valid");
    assert_eq!(config.jwt.jwks_refresh, Duration::from_secs(90));

    // HMAC algorithms still need a secret: a JWKS never carries one.
    let hmac_only = text.replace(r#"["RS256", "ES256"]"#, r#"["HS256"]"#);
    assert!(problems(&hmac_only)
        .iter()
        .any(|p| p.starts_with("jwt.secret:")));
    let not_a_url = text.replace("https://issuer.example", "issuer.example");
    assert!(problems(&not_a_url)
        .iter()
        .any(|p| p.starts_with("jwt.jwks_url:")));
}

#[test]
fn jwks_refresh_is_a_positive_duration() {
    for (value, problem) in [
        ("\"0s\"", "jwt.jwks_refresh: must be longer than 0s"),
        ("\"soon\"", "jwt.jwks_refresh:"),
        ("\"5 fortnights\"", "jwt.jwks_refresh:"),
    ] {
        let found =
            problems(&minimal("").replace("[jwt]\n", &format!("[jwt]\njwks_refresh = {value}\n")));
        assert!(
            found.iter().any(|p| p.starts_with(problem)),
            "{value}: {found:#?}"
        );
    }
}

#[test]
fn zero_timeouts_are_refused() {
    for (section, key) in [
        ("server", "header_read_timeout"),
        ("server", "upstream_timeout"),
        ("server", "connect_timeout"),
        ("backend", "timeout"),
    ] {
        let extra = match section {
            "backend" => {
                "[backend]\nlogin = \"http://127.0.0.1:4000/login\"\ntimeout = \"0s\"\n".to_owned()
            }
            _ => format!("[server]\n{key} = \"0s\"\n"),
        };
        let found = problems(&minimal(&extra));
        let expected = format!("{section}.{key}: must be more than 0s");
        assert!(
            found.iter().any(|p| p.starts_with(&expected)),
            "{expected}: {found:#?}"
        );
    }
}

#[test]
fn a_cookie_domain_on_a_public_suffix_is_refused() {
    for domain in ["com", "co.uk", ".co.uk", "github.io", "COM"] {
        let found = problems(&minimal(&format!("[session]\ndomain = {domain:?}\n")));
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("session.domain:") && p.contains("public suffix")),
            "{domain}: {found:#?}"
        );
    }
    for domain in [
        "example.com",
        "app.example.co.uk",
        ".example.com",
        "localhost",
        "corp",
    ] {
        let found = problems(&minimal(&format!("[session]\ndomain = {domain:?}\n")));
        assert!(found.is_empty(), "{domain}: {found:#?}");
    }
}

#[test]
fn an_admin_token_is_long_enough() {
    let found = problems(&minimal(
        "[admin]\nlisten = \"127.0.0.1:9090\"\ntoken = \"short\"\n",
    ));
    assert!(
        found.iter().any(|p| p.starts_with("admin.token:")),
        "{found:#?}"
    );
}

#[test]
fn timeouts_and_connection_counts_too_large_to_use_are_refused() {
    let found = problems(&minimal(
        "[server]\nidle_timeout = 9223372036854775807\nkeepalive_timeout = \"400d\"\nmax_connections = 1000000000000\n",
    ));
    for expected in [
        "server.idle_timeout: must be at most 365d",
        "server.keepalive_timeout: must be at most 365d",
        "server.max_connections: must be at most 10000000",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(expected)),
            "{expected}: {found:#?}"
        );
    }
}

#[test]
fn each_upstream_has_a_keepalive_timeout_and_a_connection_cap() {
    let table = |keys: &str| {
        minimal("[server]\nmax_connections = 500\n").replace(
            "app = \"http://127.0.0.1:3000\"",
            &format!("app = {{ url = \"http://127.0.0.1:3000\"{keys} }}"),
        )
    };
    let config = Config::from_toml_str(&table("")).expect("valid");
    let app = &config.upstreams[0];
    assert_eq!(app.keepalive_timeout, Duration::from_secs(4));
    assert_eq!(app.max_connections, 500, "the server's cap by default");
    let config = Config::from_toml_str(&table(", keepalive_timeout = \"1s\", max_connections = 8"))
        .expect("valid");
    let app = &config.upstreams[0];
    assert_eq!(
        (app.keepalive_timeout, app.max_connections),
        (Duration::from_secs(1), 8)
    );
    let found = problems(&table(", keepalive_timeout = \"0s\", max_connections = 0"));
    for expected in [
        "upstreams.app.keepalive_timeout: must be more than 0s",
        "upstreams.app.max_connections: must be at least 1",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(expected)),
            "{expected}: {found:#?}"
        );
    }
}
