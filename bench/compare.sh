#!/usr/bin/env bash
# Portcullis beside nginx, HAProxy and Node + jose, in one run of the peer harness (run.sh).
#
#   bench/compare.sh            setup (apt, venv, npm) -> builds (Portcullis profile-guided with
#                               bench/pgo.sh, as it ships, ~10 min; PGO=0: plain release; floor/) ->
#                               run.sh with the peers, the floor and ten Portcullis targets ->
#                               the idle-connection check (Portcullis and nginx) -> the
#                               comparison table with every target marked met or missed (~19 min
#                               after the builds)
#   bench/compare.sh --quick    smoke run, a few seconds: Portcullis HS256 warm and cold against a
#                               stdlib Python upstream, functional checks + 1 s of wrk each.
#                               Needs python3, wrk and a built binary (OURS_BIN, or it builds
#                               the plain release binary)
#   bench/compare.sh --idle     10,000 idle keep-alive connections through Portcullis, then
#                               through nginx -> the RSS of each
#
# OURS_BIN=path uses that binary instead of building (not PORTCULLIS_*: Portcullis reads
# those as configuration overrides).
# The Portcullis targets: portcullis-<alg> (verified-token cache on, the default) and
# portcullis-<alg>-cold (jwt.cache = 0: every request verifies its signature) for HS256, RS256,
# ES256 and EdDSA, each one process with one tokio worker, pinned like the peers. Their configs
# are portcullis/<alg>.toml: the peers' rules, log level warn (no access log).
# Also: "floor" (floor/, a bare hyper proxy with its own connection pool, MODE=conn: what
# anything built on hyper can reach here) and portcullis-hs256-cluster (HS256 warm with
# [cluster] on a redis-server it starts on port 18120; skipped with a message when the binary
# does not know [cluster]).
# Every run.sh knob works here too (DURATION, ROUNDS, TARGETS, NODE_PEERS=0, ...); IDLE=0
# skips the idle-connection check, CONNS_IDLE sets its count (default 10000).
set -euo pipefail
# A relative OURS_BIN means one relative to where the script was started from.
case "${OURS_BIN:-}" in "" | /*) ;; *) OURS_BIN="$(pwd)/$OURS_BIN" ;; esac
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
  local target="${CARGO_TARGET_DIR:-$ROOT/target}"
  if [ "${PGO:-1}" = 0 ]; then
    log "cargo build --release (PGO=0: without profile-guided optimization)"
    (cd "$ROOT" && cargo build --release --locked --quiet)
    OURS_BIN="$target/release/portcullis"
  else
    # The binary that ships (the Dockerfile builds the same way).
    log "bench/pgo.sh: the profile-guided build (~10 min; PGO=0 for a plain release build)"
    "$BENCH/pgo.sh"
    OURS_BIN="$target/pgo/portcullis"
  fi
  case "$OURS_BIN" in /*) ;; *) OURS_BIN="$ROOT/$OURS_BIN" ;; esac
  export OURS_BIN
}

case "$MODE" in
  --quick)
    PGO="${PGO:-0}" build
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

# The floor: the same harness, a bare hyper proxy (no auth) with its own connection pool.
log "cargo build --release (floor/)"
(cd floor && cargo build --release --locked --quiet)
echo "floor|http://127.0.0.1:18110/api/v1/items?page=1|hs256|plain||MODE=conn LISTEN=127.0.0.1:18110 UP=127.0.0.1:18080 exec $BENCH/floor/target/release/floor" >>"$LIST"

# HS256 warm with [cluster]: its own redis-server, stopped at the end.
REDIS_PID=""
stop_redis() { [ -z "$REDIS_PID" ] || { kill "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; }; }
trap stop_redis EXIT
CLUSTER_CONF="$BENCH/portcullis/hs256-cluster.toml"
if [ ! -f "$CLUSTER_CONF" ]; then
  log "portcullis-hs256-cluster skipped: $CLUSTER_CONF is missing"
elif ! command -v redis-server >/dev/null; then
  log "portcullis-hs256-cluster skipped: redis-server is not installed"
elif grep -qi "unknown.*cluster" <<<"$("$OURS_BIN" check --config "$CLUSTER_CONF" 2>&1 || true)"; then
  log "portcullis-hs256-cluster skipped: this binary does not know [cluster]"
else
  redis-server --port 18120 --bind 127.0.0.1 --save '' --appendonly no --dir "$BENCH/run" \
    >"$BENCH/run/redis.log" 2>&1 </dev/null &
  REDIS_PID=$!
  echo "portcullis-hs256-cluster|http://127.0.0.1:18108/api/v1/items?page=1|hs256|jwt|401|TOKIO_WORKER_THREADS=1 PORTCULLIS_JWT__SECRET_FILE=\$BENCH_KEYS/hs256.secret PORTCULLIS_SERVER__LISTEN=127.0.0.1:18108 exec $OURS_BIN run --config $CLUSTER_CONF" >>"$LIST"
fi

log "run.sh with $(wc -l <"$LIST") targets of ours (binary: $OURS_BIN)"
OURS_LIST="$LIST" ./run.sh
OUT="$(ls -1d results/*/ | tail -1)"
stop_redis; REDIS_PID=""

# Forward-auth decisions per second, warm and cold, pinned like the proxies, same run.
if [ "${FORWARD_AUTH:-1}" = 1 ]; then
  log "forward auth: decisions/s warm and cold"
  OURS_BIN="$OURS_BIN" DURATION="${FA_DURATION:-10}" FA_JSON="$OUT/forward_auth.json" \
    ./forward_auth.sh | tee "$OUT/forward_auth.txt"
fi

if [ "${IDLE:-1}" = 1 ]; then
  log "idle connections: $(( ${CONNS_IDLE:-10000} )) through Portcullis, then nginx"
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  CONNS="${CONNS_IDLE:-10000}" IDLE_JSON="$OUT/idle.json" python3 solo.py idle | tee "$OUT/idle.md"
fi
.venv/bin/python compare.py "$OUT"
