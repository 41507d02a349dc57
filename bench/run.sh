#!/usr/bin/env bash
# Peer benchmark for the authenticating reverse proxy.
#
#   ./run.sh            setup (idempotent) -> mint tokens -> start peers -> functional checks ->
#                       wrk, ROUNDS interleaved rounds over all targets -> median table
#   ./run.sh check      start peers, run the functional checks, stop
#   ./run.sh serve      start peers, run the checks, keep them running until Ctrl-C
#
# Knobs (env):                                     defaults
#   DURATION, CONNS, THREADS, ROUNDS, WARMUP       10s, 32, 1, 3, 3s     (wrk -d/-c/-t)
#   LOADGEN_CPU, PROXY_CPU, UPSTREAM_CPU           1, 0, 0              (taskset pinning; "" = no pinning)
#   REQ_PATH                                       /api/v1/items?page=1  (a protected path)
#   TARGETS                                        all (or comma list of target names, e.g. direct,haproxy-jwt-hs256,ours)
#   NODE_PEERS=0                                   skip the Node.js peers
#   OURS_URL=http://127.0.0.1:PORT/path            add our proxy as target "ours" (or OURS_NAME)
#   OURS_ALG=hs256|rs256|es256|eddsa               which token to send it (default hs256)
#   OURS_KIND=jwt|plain                            jwt: run the auth checks too (default jwt)
#   OURS_FAIL_CODE=401|302                         expected status for a bad token (default 401)
#   OURS_CMD='path/to/binary args'                 optional: run.sh starts it (pinned to PROXY_CPU,
#                                                  after keys are minted) and stops it at the end
#   OURS_LIST=FILE                                 several of our targets, one per line:
#                                                  name|url|alg|kind|fail code|command (started like OURS_CMD);
#                                                  their RSS after the run goes to results/<ts>/rss.tsv
#   SKIP_SETUP=1, SKIP_CHECKS=1
# All paths are relative to this folder; results go to results/<timestamp>/.
set -euo pipefail
cd "$(dirname "$0")"
BENCH="$(pwd)"
MODE="${1:-bench}"

DURATION="${DURATION:-10s}"; CONNS="${CONNS:-32}"; THREADS="${THREADS:-1}"
ROUNDS="${ROUNDS:-3}"; WARMUP="${WARMUP:-3s}"
LOADGEN_CPU="${LOADGEN_CPU-1}"; PROXY_CPU="${PROXY_CPU-0}"; UPSTREAM_CPU="${UPSTREAM_CPU-0}"
REQ_PATH="${REQ_PATH:-/api/v1/items?page=1}"
TARGETS="${TARGETS:-all}"
NODE_PEERS="${NODE_PEERS:-1}"
OURS_NAME="${OURS_NAME:-ours}"; OURS_ALG="${OURS_ALG:-hs256}"; OURS_KIND="${OURS_KIND:-jwt}"
OURS_FAIL_CODE="${OURS_FAIL_CODE:-401}"

log() { printf '[run] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
pin() { local cpu="$1"; shift; if [ -n "$cpu" ]; then taskset -c "$cpu" "$@"; else "$@"; fi; }

[ "${SKIP_SETUP:-0}" = 1 ] || ./setup.sh >/dev/null
.venv/bin/python mint.py
# shellcheck disable=SC1091
. keys/claims.env
export JWT_ISS JWT_AUD

mkdir -p run
PIDS=(); NAMES=()
cleanup() {
  local i pid
  for i in "${!PIDS[@]}"; do
    pid="${PIDS[$i]}"
    # each service was started with setsid: its PID is its process group (nginx workers included)
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for i in "${!PIDS[@]}"; do
    pid="${PIDS[$i]}"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; fi
  done
  [ "${#PIDS[@]}" = 0 ] || log "stopped ${#PIDS[@]} services (${NAMES[*]})"
  PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  local port="$1" name="$2"
  for _ in $(seq 100); do port_busy "$port" && return 0; sleep 0.1; done
  die "$name did not listen on $port (see run/$name.log)"
}
# start NAME PORT CPU ENV... -- CMD...
start() {
  local name="$1" port="$2" cpu="$3"; shift 3
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
  port_busy "$port" && die "port $port already in use (leftover from an earlier run?)"
  env "${envs[@]}" bash -c 'cpu="$1"; shift; if [ -n "$cpu" ]; then exec taskset -c "$cpu" setsid "$@"; else exec setsid "$@"; fi' \
    _ "$cpu" "$@" >"run/$name.log" 2>&1 </dev/null &
  PIDS+=("$!"); NAMES+=("$name")
  wait_port "$port" "$name"
}

# ---------------------------------------------------------------- targets
# name|url|token alg|kind(plain|jwt)|expected status for a rejected token
T=()
T+=("direct|http://127.0.0.1:18080$REQ_PATH|hs256|plain|")
T+=("nginx-plain|http://127.0.0.1:18081$REQ_PATH|hs256|plain|")
T+=("haproxy-plain|http://127.0.0.1:18082$REQ_PATH|hs256|plain|")
T+=("haproxy-jwt-hs256|http://127.0.0.1:18083$REQ_PATH|hs256|jwt|401")
T+=("haproxy-jwt-rs256|http://127.0.0.1:18084$REQ_PATH|rs256|jwt|401")
T+=("haproxy-jwt-es256|http://127.0.0.1:18085$REQ_PATH|es256|jwt|401")
HAVE_NODE=0
if [ "$NODE_PEERS" = 1 ] && command -v node >/dev/null && [ -d node/node_modules/jose ]; then
  HAVE_NODE=1
  T+=("node-plain|http://127.0.0.1:18090$REQ_PATH|hs256|plain|")
  T+=("node-jwt-hs256|http://127.0.0.1:18086$REQ_PATH|hs256|jwt|401")
  T+=("node-jwt-rs256|http://127.0.0.1:18087$REQ_PATH|rs256|jwt|401")
  T+=("node-jwt-es256|http://127.0.0.1:18088$REQ_PATH|es256|jwt|401")
  T+=("node-jwt-eddsa|http://127.0.0.1:18089$REQ_PATH|eddsa|jwt|401")
fi
[ -z "${OURS_URL:-}" ] || T+=("$OURS_NAME|$OURS_URL|$OURS_ALG|$OURS_KIND|$OURS_FAIL_CODE")
OURS_MANY=()   # name|url|alg|kind|fail code|command, from OURS_LIST
if [ -n "${OURS_LIST:-}" ]; then
  while IFS= read -r line; do
    [ -n "$line" ] && [ "${line:0:1}" != "#" ] || continue
    OURS_MANY+=("$line"); T+=("${line%|*}")
  done <"$OURS_LIST"
fi
url_port() { sed -E 's#^[a-z]+://[^:/]+:([0-9]+).*#\1#' <<<"$1"; }
# check-only target: HAProxy HS256 in redirect mode
CHECK_ONLY=("haproxy-jwt-hs256-redirect|http://127.0.0.1:18093$REQ_PATH|hs256|jwt|302")

selected() { [ "$TARGETS" = all ] || [[ ",$TARGETS," == *",$1,"* ]]; }

# ---------------------------------------------------------------- services
log "starting services (proxy cpu=${PROXY_CPU:-any}, upstream cpu=${UPSTREAM_CPU:-any}, loadgen cpu=${LOADGEN_CPU:-any})"
for n in nginx-upstream nginx-proxy; do mkdir -p "run/$n/tmp"; done
start nginx-upstream 18080 "$UPSTREAM_CPU" -- \
  nginx -p "$BENCH/run/nginx-upstream/" -c "$BENCH/conf/upstream.nginx.conf" -e "$BENCH/run/nginx-upstream/error.log"
start nginx-proxy 18081 "$PROXY_CPU" -- \
  nginx -p "$BENCH/run/nginx-proxy/" -c "$BENCH/conf/proxy.nginx.conf" -e "$BENCH/run/nginx-proxy/error.log"
start haproxy-plain 18082 "$PROXY_CPU" HAPROXY_NBTHREAD=1 -- haproxy -db -f conf/haproxy-plain.cfg
HS_SECRET="$(tr -d '\n' < keys/hs256.secret)"
hap_jwt() { # name port alg key on_fail
  start "$1" "$2" "$PROXY_CPU" HAPROXY_NBTHREAD=1 JWT_PORT="$2" JWT_ALG="$3" JWT_KEY="$4" JWT_ON_FAIL="$5" \
    -- haproxy -db -f conf/haproxy-jwt.cfg
}
hap_jwt haproxy-jwt-hs256 18083 HS256 "$HS_SECRET" 401
hap_jwt haproxy-jwt-rs256 18084 RS256 keys/rs256.pub.pem 401
hap_jwt haproxy-jwt-es256 18085 ES256 keys/es256.pub.pem 401
hap_jwt haproxy-jwt-hs256-redirect 18093 HS256 "$HS_SECRET" redirect
if [ "$HAVE_NODE" = 1 ]; then
  for spec in plain:none:18090 jwt-hs256:HS256:18086 jwt-rs256:RS256:18087 jwt-es256:ES256:18088 jwt-eddsa:EdDSA:18089; do
    IFS=: read -r a alg port <<<"$spec"
    start "node-$a" "$port" "$PROXY_CPU" PORT="$port" JWT_ALG="$alg" KEY_DIR="$BENCH/keys/" \
      UV_THREADPOOL_SIZE=1 -- node node/proxy.mjs
  done
fi
if [ -n "${OURS_CMD:-}" ]; then
  [ -n "${OURS_URL:-}" ] || die "OURS_CMD needs OURS_URL"
  ours_port="$(sed -E 's#^[a-z]+://[^:/]+:([0-9]+).*#\1#' <<<"$OURS_URL")"
  # shellcheck disable=SC2086
  start "$OURS_NAME" "$ours_port" "$PROXY_CPU" BENCH_KEYS="$BENCH/keys" -- bash -c "$OURS_CMD"
fi
for o in "${OURS_MANY[@]}"; do
  IFS='|' read -r name url _ _ _ cmd <<<"$o"
  start "$name" "$(url_port "$url")" "$PROXY_CPU" BENCH_KEYS="$BENCH/keys" -- bash -c "$cmd"
done

# ---------------------------------------------------------------- functional checks
tok() { tr -d '\n' < "keys/tokens/$1.jwt"; }
http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" || true; }
CHECK_FAILS=()
expect() { # target desc want got
  if [ "$3" = "$4" ]; then printf '  ok    %-28s %-44s %s\n' "$1" "$2" "$4" >&2
  else printf '  FAIL  %-28s %-44s want %s got %s\n' "$1" "$2" "$3" "$4" >&2; CHECK_FAILS+=("$1: $2"); fi
}
check_target() {
  local name url alg kind failc origin path good other c body
  IFS='|' read -r name url alg kind failc <<<"$1"
  origin="$(sed -E 's#^([a-z]+://[^/]+).*#\1#' <<<"$url")"; path="${url#"$origin"}"; path="${path:-/}"
  good="$(tok "$alg.valid")"
  expect "$name" "valid $alg cookie -> 200" 200 "$(http_code -H "Cookie: access_token=$good" "$url")"
  [ "$kind" = jwt ] || return 0
  body="$(curl -s --max-time 5 -H "Cookie: access_token=$good" -H 'Authorization: Bearer forged' "$origin/__echo" | sed -n 1p)"
  if [ "$body" = "authorization=Bearer $good" ]; then c=injected; else c="got: ${body:0:60}"; fi
  expect "$name" "upstream sees Authorization: Bearer <cookie>" injected "$c"
  expect "$name" "no cookie -> $failc" "$failc" "$(http_code "$url")"
  for case in expired tampered wrongkey badiss badaud; do
    expect "$name" "$case -> $failc" "$failc" "$(http_code -H "Cookie: access_token=$(tok "$alg.$case")" "$url")"
  done
  expect "$name" "alg=none -> $failc" "$failc" "$(http_code -H "Cookie: access_token=$(tok none)" "$url")"
  expect "$name" "garbage -> $failc" "$failc" "$(http_code -H "Cookie: access_token=$(tok garbage)" "$url")"
  if [ "$alg" = hs256 ]; then other=rs256; else other=hs256; fi
  expect "$name" "valid $other token (wrong alg) -> $failc" "$failc" \
    "$(http_code -H "Cookie: access_token=$(tok "$other.valid")" "$url")"
  if [ "$failc" = 302 ]; then
    c="$(curl -s -o /dev/null -w '%{redirect_url}' --max-time 5 "$url")"
    expect "$name" "redirect target" "$origin/login" "$c"
  fi
  expect "$name" "public path /public/x, no cookie -> 200" 200 "$(http_code "$origin/public/x")"
}
if [ "${SKIP_CHECKS:-0}" != 1 ] || [ "$MODE" != bench ]; then
  log "functional checks"
  for t in "${T[@]}" "${CHECK_ONLY[@]}"; do check_target "$t"; done
  if ((${#CHECK_FAILS[@]})); then
    log "${#CHECK_FAILS[@]} check(s) failed:"; printf '    %s\n' "${CHECK_FAILS[@]}" >&2
    [ "$MODE" = bench ] && [ "${SKIP_CHECKS:-0}" != 1 ] && die "fix the failing target(s) or set SKIP_CHECKS=1"
  else
    log "all checks passed"
  fi
fi
case "$MODE" in
  check) exit $((${#CHECK_FAILS[@]} > 0)) ;;
  serve) log "services up; Ctrl-C to stop"; while true; do sleep 3600; done ;;
  bench) ;;
  *) die "unknown mode $MODE (bench|check|serve)" ;;
esac

# ---------------------------------------------------------------- benchmark
BT=(); for t in "${T[@]}"; do selected "${t%%|*}" && BT+=("$t"); done
((${#BT[@]})) || die "no target selected by TARGETS=$TARGETS"
OUT="results/$(date -u +%Y%m%dT%H%M%SZ)"; mkdir -p "$OUT"
RAW="$OUT/raw.jsonl"; : >"$RAW"
{
  echo "date_utc=$(date -u +%FT%TZ)"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') nproc=$(nproc)"
  echo "kernel=$(uname -r) loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "haproxy=$(haproxy -v | sed -n 1p | awk '{print $3}') nginx=$(nginx -v 2>&1 | cut -d/ -f2) wrk=$(wrk -v 2>&1 | sed -n 1p | awk '{print $2}') node=$(node --version 2>/dev/null || echo -)"
  echo "wrk=-t$THREADS -c$CONNS -d$DURATION rounds=$ROUNDS warmup=$WARMUP path=$REQ_PATH"
  echo "pinning: loadgen=cpu${LOADGEN_CPU:-any} proxy=cpu${PROXY_CPU:-any} upstream=cpu${UPSTREAM_CPU:-any}"
} >"$OUT/meta.txt"
head -1 /proc/stat >"$OUT/procstat.before"

run_wrk() { # url alg duration
  pin "$LOADGEN_CPU" wrk -t"$THREADS" -c"$CONNS" -d"$3" --latency -s report.lua \
    -H "Cookie: access_token=$(tok "$2")" "$1"
}
log "warmup ($WARMUP per target)"
for t in "${BT[@]}"; do IFS='|' read -r name url alg _ <<<"$t"; run_wrk "$url" "$alg.valid" "$WARMUP" >/dev/null; done

n=${#BT[@]}
for r in $(seq 1 "$ROUNDS"); do
  for i in $(seq 0 $((n - 1))); do
    t="${BT[$(((i + r - 1) % n))]}"   # rotate the order each round
    IFS='|' read -r name url alg _ <<<"$t"
    out="$(run_wrk "$url" "$alg.valid" "$DURATION" 2>&1)"
    j="$(grep '^WRKJSON ' <<<"$out" | sed 's/^WRKJSON //')" || true
    [ -n "$j" ] || { log "wrk failed for $name:"; echo "$out" >&2; continue; }
    echo "{\"target\":\"$name\",\"round\":$r,${j#\{}" >>"$RAW"
    .venv/bin/python - "$name" "$r" "$j" <<'PY'
import json, sys
d = json.loads(sys.argv[3]); rps = d["requests"] / (d["duration_us"] / 1e6)
errs = sum(v for k, v in d.items() if k.startswith("err_"))
print(f"[run] round {sys.argv[2]}  {sys.argv[1]:<26} {rps:>10.0f} rps  p50 {d['lat_p50_us']/1000:.3f} ms  p99 {d['lat_p99_us']/1000:.3f} ms  errors {errs}", file=sys.stderr)
PY
  done
done
head -1 /proc/stat >"$OUT/procstat.after"
# Resident memory of each of our targets after its runs: the process listening on its port.
for o in "${OURS_MANY[@]}"; do
  IFS='|' read -r name url _ <<<"$o"
  pid="$(ss -Htlnp "sport = :$(url_port "$url")" | grep -o 'pid=[0-9]*' | sed -n 1p | cut -d= -f2)" || true
  if [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; then
    printf '%s\t%s\t%s\n' "$name" "$(awk '/^VmRSS/{print $2}' "/proc/$pid/status")" \
      "$(awk '/^VmHWM/{print $2}' "/proc/$pid/status")" >>"$OUT/rss.tsv"
  fi
done
echo "loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/meta.txt"
.venv/bin/python summarize.py "$OUT" "$(IFS=,; for t in "${BT[@]}"; do printf '%s,' "${t%%|*}"; done)"
log "results in $OUT/ (raw.jsonl, summary.md, summary.json)"
