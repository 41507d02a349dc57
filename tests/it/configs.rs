//! Every configuration file shipped in `config/` and `examples/` passes `portcullis check`.

use std::path::Path;
use std::process::Command;

const SECRET: &str = "5f0c9e2a7b41d8e36a9f0b2c4d7e18a95c3b6f2e0d4a7c91";

fn check(path: &Path, secret: Option<&str>) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command.arg("check").arg("--config").arg(path);
    for (name, _) in std::env::vars() {
        if name.starts_with("PORTCULLIS_") {
            command.env_remove(name);
        }
    }
    if let Some(secret) = secret {
        command.env("PORTCULLIS_JWT__SECRET", secret);
    }
    let output = command.output().expect("run portcullis check");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), text)
}

#[test]
fn shipped_configs_pass_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for dir in ["config", "examples"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("dir entry").path();
            let is_config = matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("toml" | "yaml" | "yml")
            ) && !path.to_string_lossy().contains("docker-compose");
            if !is_config {
                continue;
            }
            // HMAC configurations take their secret from the environment, as documented.
            let text = std::fs::read_to_string(&path).expect("read config");
            let secret = text.contains("\"HS").then_some(SECRET);
            let (code, text) = check(&path, secret);
            assert_eq!((code, text.trim()), (0, "ok"), "{}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 1, "no configuration files found");
}

#[test]
fn the_example_config_names_the_missing_secret() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/portcullis.example.toml");
    let (code, text) = check(&path, None);
    assert_eq!(code, 1);
    assert!(text.contains("jwt.secret"), "{text}");
}

#[test]
fn several_problems_are_reported_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"nope\"\n[upstreams]\napi = \"http://127.0.0.1:4000\"\n[[routes]]\npath = \"/api/:path*\"\nupstream = \"apii\"\n",
    )
    .expect("write config");
    let (code, text) = check(&path, Some(SECRET));
    assert_eq!(code, 1);
    assert!(text.contains("server.listen[0]"), "{text}");
    assert!(
        text.contains("routes[0].upstream: no upstream named \"apii\""),
        "{text}"
    );
}

#[test]
fn bad_usage_exits_2() {
    let status = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("--no-such-flag")
        .output()
        .expect("run portcullis");
    assert_eq!(status.status.code(), Some(2));
}

/// Every key of the configuration structs appears in docs/configuration.md, so the reference
/// cannot drift from the code.
#[test]
fn the_reference_names_every_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read_to_string(root.join("src/config/raw.rs")).expect("read raw.rs");
    let reference =
        std::fs::read_to_string(root.join("docs/configuration.md")).expect("read reference");
    let sections = [
        ("RawServer", "server"),
        ("RawTls", "server.tls"),
        ("RawSniCert", "server.tls.sni[]"),
        ("RawUpstreamTable", "upstreams.<name>"),
        ("RawAdmin", "admin"),
        ("RawForwardAuth", "forward_auth"),
        ("RawBackend", "backend"),
        ("RawLogin", "login"),
        ("RawLogout", "logout"),
        ("RawSession", "session"),
        ("RawJwt", "jwt"),
        ("RawRoute", "routes[]"),
        ("RawLog", "log"),
    ];
    let mut checked = 0;
    for (type_name, section) in sections {
        let start = raw
            .find(&format!("pub struct {type_name} {{"))
            .expect(type_name);
        let body = &raw[start..start + raw[start..].find("\n}").expect("struct end")];
        for line in body.lines().skip(1) {
            let Some(field) = line
                .trim()
                .strip_prefix("pub ")
                .and_then(|l| l.split(':').next())
            else {
                continue;
            };
            let key = format!("`{section}.{field}`");
            assert!(
                reference.contains(&key),
                "docs/configuration.md does not document {key}"
            );
            checked += 1;
        }
    }
    assert!(
        checked > 60,
        "only {checked} keys found: did raw.rs change shape?"
    );
}

/// Every test `docs/security.md` names (`module::test` or `module::file::test`) exists, so the
/// attack table cannot point at a test that was renamed or removed.
#[test]
fn the_security_page_names_only_tests_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/security.md")).expect("docs/security.md");
    let mut named = 0;
    for quoted in page.split('`').skip(1).step_by(2) {
        let parts: Vec<&str> = quoted.split("::").collect();
        let is_test_path = parts.len() >= 2
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            });
        if !is_test_path {
            continue;
        }
        let (name, modules) = parts.split_last().expect("two parts");
        let dir = modules
            .iter()
            .fold(root.join("tests/it"), |dir, m| dir.join(m));
        let file = dir.with_extension("rs");
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{quoted}: cannot read {}: {e}", file.display()));
        assert!(
            text.contains(&format!("fn {name}(")),
            "docs/security.md names {quoted}, which {} does not define",
            file.display()
        );
        named += 1;
    }
    assert!(named > 40, "only {named} tests named");
}
