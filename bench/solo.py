#!/usr/bin/env python3
"""Portcullis alone, without the peers: a smoke run and the idle-connection memory check.

usage: solo.py quick   functional checks + a few seconds of wrk against the upstream ("direct"),
                       Portcullis HS256 warm (token cache on) and cold (jwt.cache = 0); prints
                       the table. Needs python3 (stdlib only), wrk and a Portcullis binary.
       solo.py idle    opens CONNS (default 10000) keep-alive connections through Portcullis,
                       one request each, holds them idle and prints Portcullis's RSS; then
                       the same through nginx (one worker) for the peer figure. IDLE_JSON=FILE
                       also writes the figures there.

Env: OURS_BIN (default: ../target/release/portcullis), DURATION (quick: seconds per
wrk run, default 1), CONNS (idle), TIME_LIMIT (seconds for the whole run, default 240).
Everything listens on 127.0.0.1 ports chosen by the kernel and stops by itself at the end.
The upstream is a small stdlib HTTP/1.1 server in this process: it answers "ok" and, on
/__echo, the Authorization and Cookie headers it received (like conf/upstream.nginx.conf).
"""
import asyncio
import base64
import hashlib
import hmac
import http.server
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ISS, AUD = "https://auth.bench.local/", "bench-api"


def log(msg):
    print(f"[solo] {msg}", file=sys.stderr, flush=True)


def die(msg):
    log(f"ERROR: {msg}")
    sys.exit(1)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(secret: bytes, claims: dict) -> str:
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(mac)}"


def claims(**over):
    now = int(time.time())
    c = {"iss": ISS, "aud": AUD, "sub": "user-0001", "iat": now, "nbf": now - 5, "exp": now + 3600}
    c.update(over)
    return c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body are two writes: without TCP_NODELAY, Nagle + delayed ACK add 40 ms.
    disable_nagle_algorithm = True

    def do_GET(self):
        if self.path == "/__echo":
            body = (f"authorization={self.headers.get('Authorization', '')}\n"
                    f"cookie={self.headers.get('Cookie', '')}\n").encode()
        else:
            body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def start_upstream() -> int:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    server.daemon_threads = True
    server.request_queue_size = 1024
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def upstream_process():
    """The upstream in a process of its own (idle mode: this one is busy holding sockets)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "upstream", str(port)],
                            stdin=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    die("the upstream did not start")


CONFIG = """
[server]
listen = "127.0.0.1:{port}"
max_connections = {max_connections}

[upstreams]
upstream = "http://127.0.0.1:{upstream}"

[jwt]
algorithms = ["HS256"]
secret_file = "hs256.secret"
issuer = "{iss}"
audience = "{aud}"
cache = {cache}

[log]
level = "warn"

[[routes]]
path = "/login"
upstream = "upstream"

[[routes]]
path = "/healthz"
upstream = "upstream"

[[routes]]
path = "/public/:path*"
upstream = "upstream"

[[routes]]
path = "/:path*"
auth = "required"
on_unauthenticated = "status"
upstream = "upstream"
"""


class Portcullis:
    """One Portcullis process on a free port, one tokio worker, config in a temp dir."""

    def __init__(self, binary, workdir, upstream, cache, max_connections=10000):
        self.port = free_port()
        conf = Path(workdir) / f"portcullis-{self.port}.toml"
        conf.write_text(CONFIG.format(port=self.port, upstream=upstream, iss=ISS, aud=AUD,
                                      cache=cache, max_connections=max_connections))
        env = dict(os.environ, TOKIO_WORKER_THREADS="1")
        self.log = open(Path(workdir) / f"portcullis-{self.port}.log", "wb")
        self.proc = subprocess.Popen([binary, "run", "--config", str(conf)], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                die(f"portcullis exited with {self.proc.returncode}: "
                    f"{Path(self.log.name).read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        die(f"portcullis did not listen on {self.port}")

    def url(self, path="/api/v1/items?page=1"):
        return f"http://127.0.0.1:{self.port}{path}"

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def get(url, cookie=None, headers=None):
    req = urllib.request.Request(url, headers=dict(headers or {}))
    if cookie:
        req.add_header("Cookie", cookie)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def checks(p: Portcullis, good: str, secret: bytes) -> list:
    failures = []

    def expect(what, want, got):
        ok = want == got
        log(f"  {'ok  ' if ok else 'FAIL'}  :{p.port} {what:<48} {got}")
        if not ok:
            failures.append(f"{what}: want {want} got {got}")

    expect("valid token -> 200", 200, get(p.url(), f"access_token={good}")[0])
    status, body = get(p.url("/__echo"), f"access_token={good}",
                       {"Authorization": "Bearer forged"})
    echoed = body.splitlines()[:2] if status == 200 else [f"status {status}"]
    expect("upstream sees the bearer, not the cookie", "injected",
           "injected" if echoed == [f"authorization=Bearer {good}", "cookie="] else echoed[0][:60])
    expect("no cookie -> 401", 401, get(p.url())[0])
    for what, token in [
        ("expired", hs256(secret, claims(exp=int(time.time()) - 3600))),
        ("wrong key", hs256(secrets.token_bytes(32), claims())),
        ("bad iss", hs256(secret, claims(iss="https://evil.example/"))),
        ("bad aud", hs256(secret, claims(aud="someone-else"))),
        ("garbage", "not-a-jwt"),
    ]:
        expect(f"{what} -> 401", 401, get(p.url(), f"access_token={token}")[0])
    expect("public path, no cookie -> 200", 200, get(p.url("/public/x"))[0])
    return failures


def wrk(url, token, duration, conns):
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", "-s",
         str(HERE / "report.lua"), "-H", f"Cookie: access_token={token}", url],
        capture_output=True, text=True, timeout=duration + 30)
    line = next((l for l in out.stdout.splitlines() if l.startswith("WRKJSON ")), None)
    if out.returncode != 0 or line is None:
        die(f"wrk failed against {url}: {out.stdout[-500:]} {out.stderr[-500:]}")
    d = json.loads(line[len("WRKJSON "):])
    d["rps"] = d["requests"] / (d["duration_us"] / 1e6)
    d["errors"] = sum(v for k, v in d.items() if k.startswith("err_"))
    return d


def binary():
    default = HERE.parent / "target" / "release" / "portcullis"
    path = os.environ.get("OURS_BIN", str(default))
    if not os.access(path, os.X_OK):
        die(f"no Portcullis binary at {path} (build it, or set OURS_BIN)")
    return path


def quick():
    if shutil.which("wrk") is None:
        die("wrk is not installed (Debian: apt-get install wrk)")
    duration = int(os.environ.get("DURATION", "1"))
    secret = secrets.token_hex(32).encode()
    good = hs256(secret, claims())
    upstream = start_upstream()
    with tempfile.TemporaryDirectory(prefix="portcullis-bench-") as work:
        (Path(work) / "hs256.secret").write_bytes(secret + b"\n")
        warm = Portcullis(binary(), work, upstream, cache=10000)
        cold = Portcullis(binary(), work, upstream, cache=0)
        try:
            log("functional checks")
            failures = checks(warm, good, secret) + checks(cold, good, secret)
            if failures:
                die(f"{len(failures)} check(s) failed: {failures}")
            rows = []
            for name, url in [("direct", f"http://127.0.0.1:{upstream}/api/v1/items?page=1"),
                              ("portcullis-hs256", warm.url()),
                              ("portcullis-hs256-cold", cold.url())]:
                rows.append((name, wrk(url, good, duration, 8)))
            rss = warm.rss_kib()
        finally:
            warm.stop()
            cold.stop()
    base = rows[0][1]["rps"]
    print(f"| target | rps | p50 ms | p99 ms | vs direct | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, d in rows:
        print(f"| {name} | {d['rps']:.0f} | {d['lat_p50_us'] / 1000:.3f} | "
              f"{d['lat_p99_us'] / 1000:.3f} | {d['rps'] / base:.2f}x | {d['errors']} |")
    print(f"\nportcullis-hs256 RSS after its run: {rss / 1024:.1f} MiB")
    print("(smoke run: a Python upstream, no pinning; use compare.sh for real figures)")
    bad = [name for name, d in rows if d["errors"] or d["requests"] == 0]
    if bad:
        die(f"wrk saw errors or no requests for {bad}")


async def hold(port, conns, token, measure, concurrency=16):
    request = (f"GET /api/v1/items?page=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Cookie: access_token={token}\r\n\r\n").encode()
    sem = asyncio.Semaphore(concurrency)  # few upstream connections: the proxy reuses them
    writers = []

    async def one():
        async with sem:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"answer {head[:40]!r}")
            length = int(re.search(rb"content-length: *(\d+)", head, re.I).group(1))
            await reader.readexactly(length)
            writers.append(writer)

    started = time.time()
    try:
        await asyncio.gather(*(one() for _ in range(conns)))
        log(f"{len(writers)} connections open and idle after {time.time() - started:.1f}s")
        # IDLE_WAIT: how long they sit idle before the RSS is read (1 s; longer shows whether
        # memory freed by idle connections goes back to the system).
        await asyncio.sleep(float(os.environ.get("IDLE_WAIT", "1")))
        return measure()
    finally:
        for writer in writers:
            writer.close()


NGINX_IDLE = """
worker_processes 1;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_rlimit_nofile {files};
events {{ worker_connections {files}; }}
http {{
    access_log off;
    keepalive_timeout 75s;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
    upstream up {{
        server 127.0.0.1:{upstream};
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


class Nginx:
    """nginx 1.22 as a plain reverse proxy with one worker, the peer of the idle figure."""

    def __init__(self, workdir, upstream, conns):
        self.port = free_port()
        prefix = Path(workdir) / "nginx"
        (prefix / "tmp").mkdir(parents=True)
        conf = prefix / "nginx.conf"
        conf.write_text(NGINX_IDLE.format(prefix=prefix, files=conns + 1024, upstream=upstream,
                                          port=self.port))
        self.proc = subprocess.Popen(["nginx", "-p", f"{prefix}/", "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            self.stop()
            die("nginx did not listen")
        kids = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                              text=True).stdout.split()
        if not kids:
            self.stop()
            die("nginx has no worker process")
        self.worker = int(kids[0])

    def url(self, path="/api/v1/items?page=1"):
        return f"http://127.0.0.1:{self.port}{path}"

    def rss_kib(self) -> int:
        """The worker's and the master's resident memory together."""
        total = 0
        for pid in (self.proc.pid, self.worker):
            status = Path(f"/proc/{pid}/status").read_text()
            total += int(re.search(r"^VmRSS:\s+(\d+)", status, re.M).group(1))
        return total

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def measure_idle(proxy, port, conns, token):
    """RSS (KiB) of `proxy` after one request, and with `conns` idle connections held."""
    if get(proxy.url(), f"access_token={token}")[0] != 200:
        die(f"{type(proxy).__name__}: the first request was refused")
    before = proxy.rss_kib()
    held = asyncio.run(asyncio.wait_for(hold(port, conns, token, proxy.rss_kib), 100))
    return before, held


def idle():
    """10,000 idle keep-alive connections through Portcullis, then through nginx: RSS each.

    Writes the figures as JSON to IDLE_JSON when set (compare.sh reads it)."""
    conns = int(os.environ.get("CONNS", "10000"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = conns + 1024
    if hard != resource.RLIM_INFINITY and hard < need:
        die(f"the open-files hard limit is {hard}; {need} are needed (raise it with ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else hard, hard))
    secret = secrets.token_hex(32).encode()
    token = hs256(secret, claims())
    upstream, port = upstream_process()
    figures = {"conns": conns}
    with tempfile.TemporaryDirectory(prefix="portcullis-bench-") as work:
        (Path(work) / "hs256.secret").write_bytes(secret + b"\n")
        try:
            p = Portcullis(binary(), work, port, cache=10000, max_connections=conns + 1000)
            try:
                figures["portcullis"] = measure_idle(p, p.port, conns, token)
            except Exception:
                log(f"Portcullis's log:\n{Path(p.log.name).read_text()[-3000:]}")
                raise
            finally:
                p.stop()
            if shutil.which("nginx") is None:
                log("nginx is not installed: no peer figure")
            else:
                n = Nginx(work, port, conns)
                try:
                    figures["nginx"] = measure_idle(n, n.port, conns, token)
                finally:
                    n.stop()
        finally:
            upstream.kill()
            upstream.wait()
    print("| proxy | RSS after one request | with {0} idle connections | per connection |".format(conns))
    print("|---|---:|---:|---:|")
    for name in ("portcullis", "nginx"):
        if name in figures:
            before, held = figures[name]
            print(f"| {name} | {before / 1024:.1f} MiB | {held / 1024:.1f} MiB | "
                  f"{(held - before) / conns:.2f} KiB |")
    if os.environ.get("IDLE_JSON"):
        Path(os.environ["IDLE_JSON"]).write_text(json.dumps(figures) + "\n")


def main():
    limit = int(os.environ.get("TIME_LIMIT", "240"))
    signal.signal(signal.SIGALRM, lambda *_: die(f"time limit of {limit}s reached"))
    signal.alarm(limit)
    mode = sys.argv[1] if len(sys.argv) > 1 else "quick"
    if mode == "upstream":  # internal: the idle mode's upstream process
        server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Upstream)
        server.daemon_threads = True
        server.request_queue_size = 1024
        server.serve_forever()
    elif mode == "quick":
        quick()
    elif mode == "idle":
        idle()
    else:
        die(f"unknown mode {mode} (quick | idle)")


if __name__ == "__main__":
    main()
