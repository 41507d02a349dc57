//! `bench/compare.sh --quick` runs, so the benchmark cannot rot: Portcullis (this build's
//! binary) passes the harness's functional checks warm and cold, and wrk gets answers from it.
//! Needs `wrk` (Debian: `apt-get install wrk`; `.ci/run` installs it) and `python3`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// A script of `bench/`.
fn bench(script: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("bench")
        .join(script)
}

/// What `command` (running `what`) printed, with no input; it must finish within `seconds`.
async fn bounded(mut command: Command, what: &str, seconds: u64) -> std::process::Output {
    let run = command.stdin(Stdio::null()).kill_on_drop(true).output();
    tokio::time::timeout(Duration::from_secs(seconds), run)
        .await
        .unwrap_or_else(|_| panic!("{what} finishes within {seconds} s"))
        .unwrap_or_else(|err| panic!("{what} could not start: {err}"))
}

#[tokio::test]
async fn the_quick_benchmark_runs() {
    let installed = |tool: &str, arg: &str| {
        std::process::Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    assert!(
        installed("wrk", "-v"),
        "wrk is not installed: the benchmark smoke test needs it (Debian: apt-get install wrk)"
    );
    assert!(
        installed("python3", "-V"),
        "python3 is not installed: bench/solo.py needs it"
    );
    let mut command = Command::new("bash");
    command
        .arg(bench("compare.sh"))
        .arg("--quick")
        .env("OURS_BIN", env!("CARGO_BIN_EXE_portcullis"))
        .env("DURATION", "1")
        .env("TIME_LIMIT", "60");
    let output = bounded(command, "compare.sh --quick", 90).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "compare.sh --quick failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    for row in [
        "| direct |",
        "| portcullis-hs256 |",
        "| portcullis-hs256-cold |",
        "RSS",
    ] {
        assert!(stdout.contains(row), "no {row:?} in the table:\n{stdout}");
    }
    assert!(
        !stderr.contains("FAIL"),
        "a functional check failed:\n{stderr}"
    );
}

/// The training run of the profile-guided build (`bench/pgo.sh`, which the Dockerfile runs)
/// still drives the demo as a site's users would: signed in, most requests proxied with the
/// session, the refusals among them, and the demo exiting cleanly on SIGINT (an instrumented
/// binary writes its profile only then). A demo or sign-in change that broke it would leave
/// the shipped binary optimized for the wrong traffic; the script fails on that, and so does
/// this test.
#[tokio::test]
async fn the_profile_guided_build_trains_on_a_sites_traffic() {
    let mut command = Command::new("python3");
    command
        .arg(bench("pgo_train.py"))
        .arg(env!("CARGO_BIN_EXE_portcullis"))
        .arg("2");
    let output = bounded(command, "pgo_train.py", 60).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "pgo_train.py failed ({}):\n{stderr}",
        output.status
    );
    let count = |key: &str| -> u64 {
        stderr
            .lines()
            .find(|line| line.trim_end().ends_with(key))
            .and_then(|line| line.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let proxied = count("GET /api/items 200");
    let refused = count("GET /api/items 401");
    assert!(
        proxied > 10 * refused && refused > 0,
        "most of the traffic is proxied with a session, some refused:\n{stderr}"
    );
    for key in [
        "GET /dashboard 200",
        "GET /auth/me 200",
        "POST /login 403",
        "POST /logout 303",
    ] {
        assert!(count(key) > 0, "no {key:?} in the training run:\n{stderr}");
    }
}
