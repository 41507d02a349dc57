//! `bench/compare.sh --quick` runs, so the benchmark cannot rot: Portcullis (this build's
//! binary) passes the harness's functional checks warm and cold, and wrk gets answers from it.
//! Needs `wrk` (Debian: `apt-get install wrk`; `.ci/run` installs it) and `python3`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

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
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/compare.sh");
    let run = Command::new("bash")
        .arg(&script)
        .arg("--quick")
        .env("OURS_BIN", env!("CARGO_BIN_EXE_portcullis"))
        .env("DURATION", "1")
        .env("TIME_LIMIT", "60")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("compare.sh --quick finishes within 90 s")
        .expect("bash runs");
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
