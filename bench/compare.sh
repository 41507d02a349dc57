#!/usr/bin/env bash
# Portcullis beside nginx, HAProxy and Node + jose, in one run of the peer harness (run.sh).
#
#   bench/compare.sh            setup (apt, venv, npm) -> release build -> run.sh with the peers
#                               and eight Portcullis targets -> the comparison table (~17 min)
#   bench/compare.sh --quick    smoke run, a few seconds: Portcullis HS256 warm and cold against a
#                               stdlib Python upstream, functional checks + 1 s of wrk each.
#                               Needs python3, wrk and a built binary (OURS_BIN, or it builds
#                               the release binary)
#   bench/compare.sh --idle     10,000 idle keep-alive connections through Portcullis -> its RSS
#
# OURS_BIN=path uses that binary instead of building (not PORTCULLIS_*: Portcullis reads
# those as configuration overrides).
# The Portcullis targets: portcullis-<alg> (verified-token cache on, the default) and
# portcullis-<alg>-cold (jwt.cache = 0: every request verifies its signature) for HS256, RS256,
# ES256 and EdDSA, each one process with one tokio worker, pinned like the peers. Their configs
# are portcullis/<alg>.toml: the peers' rules, log level warn (no access log).
# Every run.sh knob works here too (DURATION, ROUNDS, TARGETS, NODE_PEERS=0, ...).
set -euo pipefail
cd "$(dirname "$0")"
BENCH="$(pwd)"
ROOT="$(cd .. && pwd)"
MODE="${1:-full}"
log() { printf '[compare] %s\n' "$*" >&2; }

build() {
  if [ -n "${OURS_BIN:-}" ]; then
    [ -x "$OURS_BIN" ] || { log "OURS_BIN=$OURS_BIN is not an executable"; exit 1; }
    return
  fi
  command -v cargo >/dev/null || { log "cargo not found: install Rust (rustup) or set OURS_BIN"; exit 1; }
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release --locked --quiet)
  OURS_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/portcullis"
  case "$OURS_BIN" in /*) ;; *) OURS_BIN="$ROOT/$OURS_BIN" ;; esac
  export OURS_BIN
}

case "$MODE" in
  --quick)
    build
    exec python3 solo.py quick
    ;;
  --idle)
    build
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    exec python3 solo.py idle
    ;;
  full) ;;
  *) log "usage: compare.sh [--quick | --idle]"; exit 2 ;;
esac

[ "${SKIP_SETUP:-0}" = 1 ] || ./setup.sh >/dev/null
export SKIP_SETUP=1
build

mkdir -p run
LIST="$BENCH/run/portcullis.list"
: >"$LIST"
port=18100
for cache in warm cold; do
  for alg in hs256 rs256 es256 eddsa; do
    case "$alg" in
      hs256) key="PORTCULLIS_JWT__SECRET_FILE=\$BENCH_KEYS/hs256.secret" ;;
      *) key="PORTCULLIS_JWT__JWKS_FILE=\$BENCH_KEYS/jwks.json" ;;
    esac
    name="portcullis-$alg"; extra=""
    if [ "$cache" = cold ]; then name="$name-cold"; extra="PORTCULLIS_JWT__CACHE=0 "; fi
    echo "$name|http://127.0.0.1:$port/api/v1/items?page=1|$alg|jwt|401|TOKIO_WORKER_THREADS=1 $key PORTCULLIS_SERVER__LISTEN=127.0.0.1:$port ${extra}exec $OURS_BIN run --config $BENCH/portcullis/$alg.toml" >>"$LIST"
    port=$((port + 1))
  done
done

log "run.sh with $(wc -l <"$LIST") Portcullis targets (binary: $OURS_BIN)"
OURS_LIST="$LIST" ./run.sh
OUT="$(ls -1d results/*/ | tail -1)"
.venv/bin/python compare.py "$OUT"
