#!/usr/bin/env python3
"""Instructions per request under callgrind: a count that does not depend on the machine's load.

usage: callgrind.py [-s SECONDS] [-c CONNS] [--alg ALG] [--cold] [--top N] [--keep DIR] TARGET...

TARGET is one of
  floor[=BIN]                the bare hyper proxy (floor/, MODE=conn; MODE=legacy via env)
  NAME=BINARY[,ENV=V...]     a Portcullis binary with portcullis/<ALG>.toml, one worker; extra
                             ENV=V pairs are passed to it (--cold adds PORTCULLIS_JWT__CACHE=0)

Each target runs alone under `valgrind --tool=callgrind`, pinned with an nginx upstream
(conf/upstream.nginx.conf) to cpu0 (PROXY_CPU), wrk on cpu1 (LOADGEN_CPU): wrk -c CONNS for
2 s of warm-up, counters zeroed (callgrind_control -z), SECONDS of wrk with a valid ALG token
from mint.py in the access cookie, counters dumped (callgrind_control -d). The dump's self
cost per function, divided by wrk's request count, is grouped by phase (the table of
docs/performance.md) and, with --top, listed per function. `rep movsb` (glibc's memcpy of
large blocks) counts one instruction per byte under valgrind, so moves look costlier than
they are.
"""
import argparse
import collections
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cpu  # the harness helpers: free ports, pinning, the nginx upstream

HERE = Path(__file__).resolve().parent
URL = "http://127.0.0.1:{}/api/v1/items?page=1"

PHASES = [
    ("allocator (mimalloc)", r"^_?mi_"),
    ("memcpy (moves of futures and buffers)", r"memcpy|memmove"),
    ("upstream connection pool", r"hyper_util::client::legacy|portcullis::upstream::pool|"
                                 r"hyper::client::conn|hyper::client::dispatch"),
    ("SipHash", r"core::hash::sip"),
    ("hyper HTTP/1 (parse, encode, dispatch; both sides)",
     r"hyper::|httparse|hyper_util::(server|common|rt)"),
    ("`http` header maps and URIs", r"http::header|http::uri|http::extensions"),
    ("Portcullis: cookie find/strip", r"portcullis::(auth::cookies|cookie_header)"),
    ("Portcullis: header rewrite", r"portcullis::(upstream|auth::bearer)"),
    ("JWT verification (ours, serde_json, base64)", r"portcullis::auth::jwt|serde_json|base64::"),
    ("signature (ring, OpenSSL, josekit)", r"^ring::|ring_core|^josekit|openssl|^EVP_|^BN_|"
                                           r"^ECDSA|^ec_|^RSA|^bn_|^sha256|^SHA256|^ossl_|"
                                           r"^CRYPTO_|^OPENSSL|^ERR_|^x86_64_|^p256_|^ecp_"),
    ("Portcullis: pipeline (view, route, admit, log, metrics, connection limits)",
     r"portcullis::|metrics|quanta|tracing"),
    ("tokio (scheduler, IO readiness, timers, channels)", r"tokio::"),
]


def phase(name):
    for label, pattern in PHASES:
        if re.search(pattern, name):
            return label
    return "std/core/bytes/fmt/time (called from all of the phases)"


def self_costs(path):
    """Self cost (instructions) per function of a callgrind dump, names decompressed."""
    names, cost = {}, collections.Counter()
    fn, after_calls = None, False

    def name(token):
        m = re.match(r"\((\d+)\)(?: (.*))?", token)
        if not m:
            return token
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), m.group(1))

    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if line.startswith("fn="):
            fn = name(line[3:])
        elif line.startswith("cfn="):
            name(line[4:])
        elif line.startswith("calls="):
            after_calls = True
        elif line and (line[0].isdigit() or line[0] in "+-*"):
            parts = line.split()
            if len(parts) >= 2:
                if after_calls:
                    after_calls = False  # inclusive cost of a call: not this function's own
                else:
                    cost[fn] += int(parts[1])
    return cost


def run_target(spec, args, work, up, cookie):
    port = cpu.free_port()
    env = dict(os.environ)
    out = Path(work) / f"cg.{port}.out"
    if spec.split("=")[0] == "floor":
        name = "floor-" + os.environ.get("MODE", "conn")
        binary = spec.split("=", 1)[1] if "=" in spec else str(HERE / "floor/target/release/floor")
        argv = [binary]
        env.update(LISTEN=f"127.0.0.1:{port}", UP=f"127.0.0.1:{up}")
    else:
        name, rest = spec.split("=", 1)
        binary, *extra = rest.split(",")
        argv = [binary, "run", "--config", str(HERE / f"portcullis/{args.alg}.toml")]
        keys = HERE / "keys"
        key = (f"PORTCULLIS_JWT__SECRET_FILE={keys / 'hs256.secret'}" if args.alg == "hs256"
               else f"PORTCULLIS_JWT__JWKS_FILE={keys / 'jwks.json'}")
        env.update(dict([key.split("=", 1)]),
                   TOKIO_WORKER_THREADS="1",
                   PORTCULLIS_SERVER__LISTEN=f"127.0.0.1:{port}",
                   PORTCULLIS_UPSTREAMS__UPSTREAM=f"http://127.0.0.1:{up}")
        if args.cold:
            env["PORTCULLIS_JWT__CACHE"] = "0"
        env.update(dict(e.split("=", 1) for e in extra))
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no"]
    proc = subprocess.Popen(cpu.pinned(args.proxy_cpu, valgrind + argv), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                sys.exit(f"{name} exited with {proc.returncode}")
            ok = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                                 f"Cookie: {cookie}", URL.format(port)],
                                capture_output=True, text=True).stdout
            if ok == "200":
                break
            if time.time() > deadline:
                sys.exit(f"{name} did not answer 200 on {port} (last: {ok!r})")
            time.sleep(0.3)
        wrk = lambda secs: subprocess.run(
            cpu.pinned(args.load_cpu, ["wrk", "-t1", f"-c{args.conns}", f"-d{secs}s", "-H",
                                       f"Cookie: {cookie}", URL.format(port)]),
            capture_output=True, text=True).stdout
        wrk(2)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True)
        text = wrk(args.seconds)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True)
        requests = int(re.search(r"(\d+) requests in", text).group(1))
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        if non2xx:
            sys.exit(f"{name}: {non2xx.group(1)} non-2xx responses")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    dumps = sorted(Path(work).glob(f"cg.{port}.out.*"), key=lambda p: p.stat().st_mtime)
    if not dumps:
        sys.exit(f"{name}: callgrind wrote no dump")
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        (Path(args.keep) / f"{name}.callgrind").write_bytes(dumps[-1].read_bytes())
    return name, requests, self_costs(dumps[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-s", "--seconds", type=int, default=5)
    ap.add_argument("-c", "--conns", type=int, default=4)
    ap.add_argument("--alg", choices=["hs256", "rs256", "es256", "eddsa"], default="hs256")
    ap.add_argument("--cold", action="store_true", help="PORTCULLIS_JWT__CACHE=0")
    ap.add_argument("--top", type=int, default=0, help="also list the N costliest functions")
    ap.add_argument("--keep", help="copy each dump here as NAME.callgrind")
    ap.add_argument("targets", nargs="+")
    args = ap.parse_args()
    args.proxy_cpu = os.environ.get("PROXY_CPU", "0")
    args.load_cpu = os.environ.get("LOADGEN_CPU", "1")
    subprocess.run([sys.executable, str(HERE / "mint.py")], check=True,
                   stderr=subprocess.DEVNULL)
    token = (HERE / "keys" / "tokens" / f"{args.alg}.valid.jwt").read_text().strip()
    cookie = f"access_token={token}"
    results = []
    with tempfile.TemporaryDirectory(prefix="portcullis-cg-") as work:
        up = cpu.free_port()
        upstream = subprocess.Popen(
            cpu.pinned(args.proxy_cpu,
                       cpu.nginx_conf(work, "upstream", "upstream.nginx.conf", {18080: up})),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            cpu.wait_port(up, upstream, "upstream nginx")
            for spec in args.targets:
                name, requests, costs = run_target(spec, args, work, up, cookie)
                total = sum(costs.values())
                print(f"{name}: {requests} requests, {total} instructions, "
                      f"{total / requests:,.0f} per request", file=sys.stderr)
                results.append((name, requests, costs))
        finally:
            os.killpg(upstream.pid, signal.SIGTERM)
            upstream.wait(5)
    grouped = []
    for name, requests, costs in results:
        g = collections.Counter()
        for fn, c in costs.items():
            g[phase(fn)] += c / requests
        grouped.append(g)
    labels = sorted({k for g in grouped for k in g}, key=lambda k: -max(g[k] for g in grouped))
    print(f"\n{args.alg} {'cold' if args.cold else 'warm'}, instructions per request")
    print("| phase | " + " | ".join(name for name, _, _ in results) + " |")
    print("|---|" + "---:|" * len(results))
    for label in labels:
        print(f"| {label} | " + " | ".join(f"{g[label]:,.0f}" for g in grouped) + " |")
    print("| **total** | " + " | ".join(f"**{sum(g.values()):,.0f}**" for g in grouped) + " |")
    for name, requests, costs in results if args.top else []:
        total = sum(costs.values())
        print(f"\n{name}: the {args.top} costliest functions (self, per request)")
        for fn, c in costs.most_common(args.top):
            print(f"{c / requests:8.0f} {100 * c / total:5.1f}%  {fn[:160]}")


if __name__ == "__main__":
    main()
