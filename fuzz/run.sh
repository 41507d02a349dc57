#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds each (default 600), seeded from fuzz/seeds/.
#   fuzz/run.sh            # 10 minutes per target
#   fuzz/run.sh 30 jwt     # 30 seconds, one target
# Needs cargo-fuzz (`cargo install cargo-fuzz`). The toolchain here is stable, so the
# sanitizer flags cargo-fuzz passes are enabled with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-600}"
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(path cookies jwt jwt_mutated claims login_body return_path origin host request_head)
export RUSTC_BOOTSTRAP=1
mkdir -p logs
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "seeds/$target"
  echo "==> $target for ${seconds}s"
  status=0
  cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"logs/$target.log" 2>&1 || status=$?
  grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==|SUMMARY|Done)' \
    "logs/$target.log" || true
  if [ "$status" -ne 0 ] || ls "artifacts/$target"/crash-* >/dev/null 2>&1; then
    echo "!! $target failed (exit $status): see fuzz/logs/$target.log and fuzz/artifacts/$target" >&2
    tail -20 "logs/$target.log" >&2
    exit 1
  fi
done
