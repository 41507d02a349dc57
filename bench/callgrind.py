#!/usr/bin/env python3
"""Instructions per request under callgrind: the noise-free figure of docs/performance.md.

usage: callgrind.py [-s SECONDS] [-c CONNS] BINARY [ENV=V...]

Runs BINARY (a release build of Portcullis) under `valgrind --tool=callgrind` with
bench/portcullis/hs256.toml, one worker, in front of the harness's nginx upstream, all on free
loopback ports (as cpu.py). wrk -t1 -cCONNS warms it for 2 s, the counters are zeroed
(`callgrind_control -z`), wrk runs SECONDS with a valid HS256 cookie, the counters are dumped
(`callgrind_control -d`), and the instructions of the dump are divided by wrk's requests.
Extra ENV=V pairs go to the proxy (e.g. PORTCULLIS_JWT__CACHE=0).
"""
import argparse
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cpu  # noqa: E402  (the same upstream, token and port helpers)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-s", "--seconds", type=int, default=5)
    ap.add_argument("-c", "--conns", type=int, default=4)
    ap.add_argument("binary")
    ap.add_argument("env", nargs="*")
    args = ap.parse_args()
    secret = secrets.token_hex(32).encode()
    cookie = f"access_token={cpu.token(secret)}"
    procs = []
    with tempfile.TemporaryDirectory(prefix="portcullis-callgrind-") as work:
        (Path(work) / "hs256.secret").write_bytes(secret + b"\n")
        up, port = cpu.free_port(), cpu.free_port()
        try:
            upstream = subprocess.Popen(
                cpu.nginx_conf(work, "upstream", "upstream.nginx.conf", {18080: up}),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            procs.append(upstream)
            cpu.wait_port(up, upstream, "upstream nginx")
            env = dict(os.environ)
            env.update(TOKIO_WORKER_THREADS="1",
                       PORTCULLIS_SERVER__LISTEN=f"127.0.0.1:{port}",
                       PORTCULLIS_UPSTREAMS__UPSTREAM=f"http://127.0.0.1:{up}",
                       PORTCULLIS_JWT__SECRET_FILE=str(Path(work) / "hs256.secret"))
            env.update(dict(e.split("=", 1) for e in args.env))
            out = Path(work) / "callgrind.out"
            proxy = subprocess.Popen(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                 args.binary, "run", "--config", str(cpu.HERE / "portcullis/hs256.toml")],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)
            procs.append(proxy)
            deadline = time.time() + 60
            while True:
                try:
                    cpu.wait_port(port, proxy, "portcullis")
                    break
                except SystemExit:
                    if time.time() > deadline or proxy.poll() is not None:
                        raise
            url = f"http://127.0.0.1:{port}/api/v1/items?page=1"
            wrk = ["wrk", "-t1", f"-c{args.conns}", "-H", f"Cookie: {cookie}", url]
            subprocess.run(wrk[:3] + ["-d2s"] + wrk[3:], capture_output=True)
            subprocess.run(["callgrind_control", "-z", str(proxy.pid)], capture_output=True)
            text = subprocess.run(wrk[:3] + [f"-d{args.seconds}s"] + wrk[3:],
                                  capture_output=True, text=True).stdout
            subprocess.run(["callgrind_control", "-d", str(proxy.pid)], capture_output=True)
            requests = int(re.search(r"(\d+) requests in", text).group(1))
            if re.search(r"Non-2xx or 3xx responses: (\d+)", text):
                sys.exit(f"non-2xx responses:\n{text}")
            dumps = sorted(Path(work).glob("callgrind.out*"), key=lambda p: p.stat().st_mtime)
            total = 0
            for line in dumps[-1].read_text().splitlines():
                if line.startswith(("summary:", "totals:")):
                    total = int(line.split()[1])
            print(f"{requests} requests, {total} instructions: {total / requests:,.0f} per request")
        finally:
            for proc in procs:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
