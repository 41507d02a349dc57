#!/usr/bin/env python3
"""CPU time per request: a steadier figure than requests/s on a shared machine.

usage: cpu.py [-s SECONDS] [-c CONNS] [-r ROUNDS] TARGET...

TARGET is one of
  nginx                      nginx 1.22 as a plain proxy (the harness's conf/proxy.nginx.conf)
  floor[/MODE][=BIN]         the bare hyper proxy (floor/): MODE conn (the default, or $MODE),
                             legacy or own, e.g. `floor floor/own` runs two of them
  NAME=BINARY[,ENV=V...]     a Portcullis binary with bench/portcullis/hs256.toml, one worker;
                             extra ENV=V pairs are passed to it (e.g. PORTCULLIS_JWT__CACHE=0)

Everything runs on free loopback ports: an nginx upstream (conf/upstream.nginx.conf) pinned
with the proxy to cpu0 (PROXY_CPU), wrk to cpu1 (LOADGEN_CPU), as in run.sh. Each round runs
every target once (wrk -t1 -cCONNS -dSECONDS with a valid HS256 cookie), reading the proxy's
user and system time from /proc/PID/stat before and after; the table gives, per target, the
median over the rounds of microseconds of CPU per request (user, system, total) and rps.
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")
ISS, AUD = "https://auth.bench.local/", "bench-api"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(secret):
    now = int(time.time())
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"iss": ISS, "aud": AUD, "sub": "user-0001", "iat": now,
                           "nbf": now - 5, "exp": now + 3600}).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    deadline = time.time() + 15
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on {port}")


def pinned(cpu, argv):
    return (["taskset", "-c", cpu] if cpu else []) + argv


def nginx_conf(work, name, template, ports):
    text = (HERE / "conf" / template).read_text()
    for old, new in ports.items():
        text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
    prefix = Path(work) / name
    (prefix / "tmp").mkdir(parents=True)
    (prefix / "nginx.conf").write_text(text)
    return ["nginx", "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"),
            "-e", str(prefix / "error.log")]


def cpu_ticks(pid):
    # The task's own utime and stime (fields 14, 15), plus its threads' via /proc/PID/task.
    total_u = total_s = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        total_u += int(fields[11])
        total_s += int(fields[12])
    return total_u, total_s


def switches(pid):
    # Voluntary (the task waited: an empty run queue, a parked worker) and involuntary (the
    # kernel preempted it) context switches, summed over the process's threads.
    vol = invol = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches"):
                vol += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches"):
                invol += int(line.split()[1])
    return vol, invol


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-s", "--seconds", type=int, default=5)
    ap.add_argument("-c", "--conns", type=int, default=32)
    ap.add_argument("-r", "--rounds", type=int, default=3)
    ap.add_argument("targets", nargs="+")
    args = ap.parse_args()
    proxy_cpu = os.environ.get("PROXY_CPU", "0")
    load_cpu = os.environ.get("LOADGEN_CPU", "1")
    secret = secrets.token_hex(32).encode()
    cookie = f"access_token={token(secret)}"
    procs = []
    with tempfile.TemporaryDirectory(prefix="portcullis-cpu-") as work:
        (Path(work) / "hs256.secret").write_bytes(secret + b"\n")
        up = free_port()
        try:
            upstream = subprocess.Popen(
                pinned(proxy_cpu, nginx_conf(work, "upstream", "upstream.nginx.conf", {18080: up})),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            procs.append(upstream)
            wait_port(up, upstream, "upstream nginx")
            targets = []
            for spec in args.targets:
                port = free_port()
                env = dict(os.environ)
                if spec == "nginx":
                    name, argv = "nginx-plain", nginx_conf(work, f"proxy{port}", "proxy.nginx.conf",
                                                           {18081: port, 18080: up})
                elif spec.partition("=")[0].partition("/")[0] == "floor":
                    kind, given, binary = spec.partition("=")
                    mode = kind.partition("/")[2] or os.environ.get("MODE", "conn")
                    binary = binary or str(HERE / "floor/target/release/floor")
                    name = Path(binary).name if given else "floor-" + mode
                    argv = [binary]
                    env.update(LISTEN=f"127.0.0.1:{port}", UP=f"127.0.0.1:{up}", MODE=mode)
                else:
                    name, rest = spec.split("=", 1)
                    binary, *extra = rest.split(",")
                    argv = [binary, "run", "--config", str(HERE / "portcullis/hs256.toml")]
                    env.update(TOKIO_WORKER_THREADS="1",
                               PORTCULLIS_SERVER__LISTEN=f"127.0.0.1:{port}",
                               PORTCULLIS_UPSTREAMS__UPSTREAM=f"http://127.0.0.1:{up}",
                               PORTCULLIS_JWT__SECRET_FILE=str(Path(work) / "hs256.secret"))
                    env.update(dict(e.split("=", 1) for e in extra))
                proc = subprocess.Popen(pinned(proxy_cpu, argv), env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
                procs.append(proc)
                wait_port(port, proc, name)
                pid = proc.pid
                if spec == "nginx":  # the worker does the work
                    time.sleep(0.3)
                    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
                    pid = int(kids[0]) if kids else pid
                targets.append((name, port, pid))
            url = "http://127.0.0.1:{}/api/v1/items?page=1"
            for name, port, _ in targets:  # warm-up
                subprocess.run(pinned(load_cpu, ["wrk", "-t1", f"-c{args.conns}", "-d1s", "-H",
                                                 f"Cookie: {cookie}", url.format(port)]),
                               capture_output=True)
            results = {name: [] for name, _, _ in targets}
            for r in range(args.rounds):
                for name, port, pid in targets[r % len(targets):] + targets[:r % len(targets)]:
                    u0, s0 = cpu_ticks(pid)
                    v0, i0 = switches(pid)
                    out = subprocess.run(pinned(load_cpu, ["wrk", "-t1", f"-c{args.conns}",
                                                           f"-d{args.seconds}s", "--latency", "-H",
                                                           f"Cookie: {cookie}", url.format(port)]),
                                         capture_output=True, text=True).stdout
                    u1, s1 = cpu_ticks(pid)
                    v1, i1 = switches(pid)
                    reqs = int(re.search(r"(\d+) requests in", out).group(1))
                    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
                    if non2xx:
                        sys.exit(f"{name}: {non2xx.group(1)} non-2xx responses")
                    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
                    scale = {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
                    us = lambda t: t / TICK * 1e6 / reqs
                    per100 = lambda n: n / reqs * 100
                    row = (us(u1 - u0), us(s1 - s0), reqs / args.seconds,
                           float(p99.group(1)) * scale, per100(v1 - v0), per100(i1 - i0))
                    results[name].append(row)
                    print(f"round {r + 1} {name:<22} user {row[0]:6.2f} sys {row[1]:6.2f} "
                          f"total {row[0] + row[1]:6.2f} us/req  {row[2]:8.0f} rps  "
                          f"p99 {row[3]:.3f} ms  switches/100 req {row[4]:.1f}+{row[5]:.1f}",
                          file=sys.stderr)
            print("| target | user µs/req | sys µs/req | total µs/req | rps | p99 ms "
                  "| waits/100 req | preempted/100 req |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|")
            for name, rows in results.items():
                med = lambda i: statistics.median(row[i] for row in rows)
                print(f"| {name} | {med(0):.2f} | {med(1):.2f} | {med(0) + med(1):.2f} | "
                      f"{med(2):.0f} | {med(3):.2f} | {med(4):.1f} | {med(5):.1f} |")
        finally:
            for proc in procs:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            for proc in procs:
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
