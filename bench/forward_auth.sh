#!/usr/bin/env bash
# Forward-auth decisions per second: wrk against Portcullis's forward_auth.listen, asking the way
# Traefik and Caddy ask (X-Forwarded-Method/-Proto/-Host/-Uri) about a protected request with a
# valid HS256 cookie, so every answer is a 200 carrying the bearer token. Two runs:
#   warm  the verified-token cache on (the default)
#   cold  jwt.cache = 0: every decision verifies the signature
# Pinned like run.sh: Portcullis (one tokio worker) on PROXY_CPU, wrk on LOADGEN_CPU. Nothing
# is forwarded, so no upstream runs. Prints one figure per line, with Portcullis's CPU time per
# decision (user + system, from /proc/<pid>/stat around the wrk run):
#   forward-auth-hs256 warm: 52000 decisions/s (p50 0.55 ms, p99 1.20 ms, 9.8 us CPU per decision, 0 errors)
#
# Env: OURS_BIN (default: ../target/release/portcullis, built when missing), DURATION (seconds
# per run, default 10), CONNS (default 32), PROXY_CPU (0), LOADGEN_CPU (1); "" = no pinning;
# FA_JSON=FILE also writes the figures there as JSON (compare.sh does, for compare.py).
set -euo pipefail
cd "$(dirname "$0")"
BENCH="$(pwd)"
ROOT="$(cd .. && pwd)"
DURATION="${DURATION:-10}"
CONNS="${CONNS:-32}"
PROXY_CPU="${PROXY_CPU-0}"
LOADGEN_CPU="${LOADGEN_CPU-1}"
log() { printf '[forward_auth] %s\n' "$*" >&2; }
pin() { local cpu="$1"; shift; if [ -n "$cpu" ]; then taskset -c "$cpu" "$@"; else "$@"; fi; }

command -v wrk >/dev/null || { log "wrk is not installed (Debian: apt-get install wrk)"; exit 1; }
command -v curl >/dev/null || { log "curl is not installed"; exit 1; }
if [ -z "${OURS_BIN:-}" ]; then
  OURS_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/portcullis"
  case "$OURS_BIN" in /*) ;; *) OURS_BIN="$ROOT/$OURS_BIN" ;; esac
  if [ ! -x "$OURS_BIN" ]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --locked --quiet)
  fi
fi
[ -x "$OURS_BIN" ] || { log "no Portcullis binary at $OURS_BIN (set OURS_BIN)"; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/portcullis-fa-bench.XXXXXX")"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# A secret, a valid token for it (HS256, one hour, iss/aud as the peer benchmark), free ports.
read -r SECRET TOKEN MAIN_PORT FA_PORT < <(python3 - <<'EOF'
import base64, hashlib, hmac, json, secrets, socket, time
def b64(d): return base64.urlsafe_b64encode(d).rstrip(b"=").decode()
secret = secrets.token_hex(32)
now = int(time.time())
claims = {"iss": "https://auth.bench.local/", "aud": "bench-api", "sub": "user-0001",
          "email": "user-0001@bench.local", "iat": now, "nbf": now - 5, "exp": now + 3600}
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps(claims, separators=(",", ":")).encode())
mac = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
ports = []
for _ in range(2):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ports.append(s.getsockname()[1]); s.close()
print(secret, f"{head}.{body}.{b64(mac)}", *ports)
EOF
)
printf '%s' "$SECRET" >"$WORK/hs256.secret"
cat >"$WORK/portcullis.toml" <<EOF
[server]
listen = "127.0.0.1:$MAIN_PORT"

[forward_auth]
listen = "127.0.0.1:$FA_PORT"

[upstreams]
upstream = "http://127.0.0.1:9"

[jwt]
algorithms = ["HS256"]
secret_file = "hs256.secret"
issuer = "https://auth.bench.local/"
audience = "bench-api"

[log]
level = "warn"

[[routes]]
path = "/public/:path*"
upstream = "upstream"

[[routes]]
path = "/:path*"
auth = "required"
on_unauthenticated = "status"
headers = { "x-user-email" = "email" }
upstream = "upstream"
EOF

URL="http://127.0.0.1:$FA_PORT/"
ASK=(-H "X-Forwarded-Method: GET" -H "X-Forwarded-Proto: https" -H "X-Forwarded-Host: bench.local"
     -H "X-Forwarded-Uri: /api/v1/items?page=1")

run() {
  local name="$1" cache="$2"
  # taskset and env exec the next program, so $! is Portcullis itself.
  local launch=(env TOKIO_WORKER_THREADS=1 PORTCULLIS_JWT__CACHE="$cache"
                "$OURS_BIN" run --config "$WORK/portcullis.toml")
  if [ -n "$PROXY_CPU" ]; then launch=(taskset -c "$PROXY_CPU" "${launch[@]}"); fi
  "${launch[@]}" >"$WORK/$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  local up=0
  for _ in $(seq 1 200); do
    if curl -s -o /dev/null "$URL"; then up=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  [ "$up" = 1 ] || { log "Portcullis did not start: $(tail -5 "$WORK/$name.log")"; exit 1; }
  # Functional checks: the answer carries the bearer; no cookie is a 401.
  local auth
  auth="$(curl -s -D - -o /dev/null "${ASK[@]}" -H "Cookie: access_token=$TOKEN" "$URL" \
    | tr -d '\r' | awk -F': ' 'tolower($1) == "authorization" { print $2 }')"
  [ "$auth" = "Bearer $TOKEN" ] || { log "$name: the answer did not carry the bearer"; exit 1; }
  local refused
  refused="$(curl -s -o /dev/null -w '%{http_code}' "${ASK[@]}" "$URL")"
  [ "$refused" = 401 ] || { log "$name: no cookie answered $refused, not 401"; exit 1; }

  # CPU time (user + system clock ticks) around the run: far steadier than decisions/s on a
  # shared machine.
  local ticks_before ticks_after out
  ticks_before="$(awk '{ print $14 + $15 }' "/proc/$pid/stat")"
  out="$(pin "$LOADGEN_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$BENCH/report.lua" \
    "${ASK[@]}" -H "Cookie: access_token=$TOKEN" "$URL")"
  ticks_after="$(awk '{ print $14 + $15 }' "/proc/$pid/stat")"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local json
  json="$(printf '%s\n' "$out" | sed -n 's/^WRKJSON //p')"
  [ -n "$json" ] || { log "$name: wrk failed: $out"; exit 1; }
  python3 -c '
import json, os, sys
name, d = sys.argv[1], json.loads(sys.argv[2])
ticks = int(sys.argv[3])
rps = d["requests"] / (d["duration_us"] / 1e6)
errors = sum(v for k, v in d.items() if k.startswith("err_"))
p50, p99 = d["lat_p50_us"] / 1000, d["lat_p99_us"] / 1000
cpu_us = ticks / os.sysconf("SC_CLK_TCK") * 1e6 / max(d["requests"], 1)
print(f"{name}: {rps:.0f} decisions/s (p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
      f"{cpu_us:.1f} us CPU per decision, {errors} errors)")
out = os.environ.get("FA_JSON")
if out:
    figures = json.load(open(out)) if os.path.exists(out) else {}
    figures[name] = {"rps": round(rps), "p50_ms": round(p50, 3), "p99_ms": round(p99, 3),
                     "cpu_us": round(cpu_us, 2), "errors": errors}
    json.dump(figures, open(out, "w"), indent=1)
' "forward-auth-hs256 $name" "$json" "$((ticks_after - ticks_before))"
}

log "binary $OURS_BIN, ${DURATION}s per run, $CONNS connections, proxy cpu=${PROXY_CPU:-any}, wrk cpu=${LOADGEN_CPU:-any}"
run warm 10000
run cold 0
