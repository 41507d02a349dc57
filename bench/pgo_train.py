#!/usr/bin/env python3
"""The training run of a profile-guided build (bench/pgo.sh): traffic through `portcullis demo`.

usage: pgo_train.py BINARY [SECONDS]

Starts BINARY (built with `-Cprofile-generate`) as `portcullis demo` on a free loopback port,
once per scheduler of the runtime (a worker per core, then `TOKIO_WORKER_THREADS=1`), and
sends it what a site's users send, from THREADS keep-alive clients for SECONDS in all
(default 20): sign in (form POST with Origin), pages and API calls with the session cookies
(most of the traffic: the guarded proxy path with its Bearer injection), `/auth/me`, public
pages, requests with no session (401 for the API, a redirect for a page), a forged and an
unsigned token, a session renewed from its refresh cookie alone, a cross-origin sign-in
(403), a wrong password, an upload through the proxy, and sign-out. Then it stops the demo with SIGINT, which makes it
exit normally and write its profile (LLVM_PROFILE_FILE says where; `%p` in it keeps the two
runs' profiles apart).

It does not replay the benchmark's requests (bench/compare.sh): the profile is what the
product does for a site's users, and a benchmark measured on it is not measured on its own
training. Only the standard library (and bench/cpu.py's helpers): it runs where the build
runs (Dockerfile included).
"""
import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

from cpu import free_port, wait_port  # the harness's helpers (stdlib only, like this file)

THREADS = 8
USER, PASSWORD = "demo@portcullis.dev", "portcullis"


class Client:
    """One keep-alive connection with its own cookie jar (name -> value)."""

    def __init__(self, port, source):
        self.port = port
        self.source = source
        self.origin = f"http://127.0.0.1:{port}"
        self.jar = {}
        self.conn = None
        self.counts = {}

    def request(self, method, path, body=None, headers=None, cookies=None):
        headers = dict(headers or {})
        jar = self.jar if cookies is None else cookies
        if jar:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10,
                                                       source_address=(self.source, 0))
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                response.read()
                break
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        if response.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = None
        if cookies is None:
            for line in response.msg.get_all("Set-Cookie") or []:
                pair = line.split(";", 1)[0]
                name, _, value = pair.partition("=")
                if value:
                    self.jar[name.strip()] = value.strip()
                else:
                    self.jar.pop(name.strip(), None)
        key = f"{method} {path.split('?')[0]} {response.status}"
        self.counts[key] = self.counts.get(key, 0) + 1
        return response

    def sign_in(self, origin=None, password=PASSWORD):
        form = urllib.parse.urlencode({"email": USER, "password": password})
        return self.request("POST", "/login?next=/dashboard", body=form, headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": origin or self.origin,
        })


def forged(token):
    """The token with its payload changed and the signature kept: must be refused."""
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "admin"
    changed = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{changed}.{signature}"


def unsigned(token):
    payload = token.split(".")[1]
    head = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    return f"{head}.{payload}."


def user(number, port, until, totals, lock, done):
    client = Client(port, "127.0.0.1")
    api = {"Accept": "application/json"}
    page = {"Accept": "text/html,application/xhtml+xml"}
    round_ = 0
    while time.time() < until:
        round_ += 1
        # A client address of its own per round (all of 127/8 is loopback): sign-ins and
        # renewals are limited per client address, and each round is another user.
        client.source = f"127.{number + 1}.{round_ // 250}.{round_ % 250 + 1}"
        if client.conn is not None:
            client.conn.close()
            client.conn = None
        client.jar.clear()
        client.request("GET", "/api/items", headers=api)  # 401
        client.request("GET", "/dashboard", headers=page)  # to the sign-in page
        client.request("GET", "/login", headers=page)
        client.sign_in()
        access = client.jar.get("access_token", "")
        for i in range(200):
            client.request("GET", f"/api/items?page={i % 7}", headers=api)
            if i % 10 == 0:
                client.request("GET", "/dashboard", headers=page)
                client.request("GET", "/style.css")
            if i % 25 == 0:
                client.request("GET", "/auth/me", headers=api)
                client.request("GET", "/admin", headers=page)  # 403: not an admin
                client.request("POST", "/api/items", body=b'{"name":"x"}' * 50,
                               headers={**api, "Content-Type": "application/json",
                                        "Origin": client.origin})
        if access:
            client.request("GET", "/api/items", headers=api,
                           cookies={"access_token": forged(access)})
            client.request("GET", "/api/items", headers=api,
                           cookies={"access_token": unsigned(access)})
        # Only the refresh cookie: the proxy renews the session on the way.
        refresh = client.jar.get("refresh_token")
        if refresh:
            client.jar = {"refresh_token": refresh}
            client.request("GET", "/api/items", headers=api)
        if round_ % 4 == 1:
            client.sign_in(origin="http://evil.example")  # 403
            client.sign_in(password="wrong")
    # Signing out last, once every client is done: the eight clients are one demo user, and
    # signing out ends that user's sessions for the others too (a client still in its round on
    # a loaded machine would then train on refusals).
    try:
        done.wait(timeout=60)
    except threading.BrokenBarrierError:
        pass
    client.request("POST", "/logout", headers={"Origin": client.origin})
    client.request("GET", "/api/items", headers=api)  # 401 again
    with lock:
        for key, n in client.counts.items():
            totals[key] = totals.get(key, 0) + n


def train(binary, seconds, workers):
    """One demo process (`TOKIO_WORKER_THREADS=workers`, or the runtime's default) under the
    users' traffic for `seconds`: (requests by method, path and status; the exit code)."""
    env = dict(os.environ)
    env.pop("TOKIO_WORKER_THREADS", None)
    if workers:
        env["TOKIO_WORKER_THREADS"] = workers
    port = free_port()
    demo = subprocess.Popen([binary, "demo", "--listen", f"127.0.0.1:{port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    totals, lock = {}, threading.Lock()
    try:
        wait_port(port, demo, "pgo_train: the demo")
        until = time.time() + seconds
        done = threading.Barrier(THREADS)
        threads = [threading.Thread(target=user, args=(n, port, until, totals, lock, done))
                   for n in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            code = demo.wait(30)
        except subprocess.TimeoutExpired:
            demo.kill()
            sys.exit("pgo_train: the demo did not stop on SIGINT (no profile written)")
    return totals, code


def main():
    binary = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
    # Both of the runtime's schedulers, half the time each: the work-stealing one (a worker
    # per core, the default) and the current-thread one (`TOKIO_WORKER_THREADS=1`).
    totals, codes = {}, []
    for workers in (None, "1"):
        counts, code = train(binary, seconds / 2, workers)
        codes.append(code)
        for key, n in counts.items():
            totals[key] = totals.get(key, 0) + n
    requests = sum(totals.values())
    print(f"pgo_train: {requests} requests in {seconds:.0f} s; the demo exited with "
          f"{' and '.join(map(str, codes))}", file=sys.stderr)
    for key in sorted(totals):
        print(f"  {totals[key]:7d}  {key}", file=sys.stderr)
    expected = ["GET /api/items 200", "GET /api/items 401", "POST /login 303", "POST /login 403"]
    missing = [key for key in expected if key not in totals]
    if any(codes) or missing:
        sys.exit(f"pgo_train: not the traffic a profile needs (exit {codes}, missing {missing})")


if __name__ == "__main__":
    main()
