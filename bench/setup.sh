#!/usr/bin/env bash
# Idempotent setup for the proxy benchmark harness.
# Installs: haproxy (2.6 on Debian 12), nginx, wrk, curl (apt);
#           pyjwt + cryptography in ./.venv (pip);
#           jose + http-proxy in ./node/node_modules (npm, only if node/npm exist).
# Usage: ./setup.sh            (from anywhere; all paths are relative to this folder)
set -euo pipefail
cd "$(dirname "$0")"

need_apt=()
for bin in haproxy nginx wrk curl taskset ss; do
  command -v "$bin" >/dev/null 2>&1 || need_apt+=("$bin")
done
if ((${#need_apt[@]})); then
  echo "[setup] apt-get install haproxy nginx wrk curl util-linux iproute2"
  export DEBIAN_FRONTEND=noninteractive
  # Do not let the packages' init scripts start system-wide nginx/haproxy
  # services on machines where that would happen (we start our own instances).
  policy_created=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; policy_created=1
  fi
  apt-get update -qq
  apt-get install -y -qq haproxy nginx wrk curl util-linux iproute2 >/dev/null
  if [ "$policy_created" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# Python: token minting (PyJWT + cryptography) in a local venv.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import jwt, cryptography' 2>/dev/null; then
  echo "[setup] python venv + pyjwt cryptography"
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check 'pyjwt[crypto]>=2.8' 'cryptography>=41'
fi

# Node.js peer (optional): jose + http-proxy.
if command -v npm >/dev/null 2>&1; then
  if [ ! -d node/node_modules/jose ] || [ ! -d node/node_modules/http-proxy ]; then
    echo "[setup] npm install (node peer)"
    (cd node && npm install --no-audit --no-fund --silent)
  fi
else
  echo "[setup] node/npm not found: the node peer targets will be skipped"
fi

echo "[setup] versions:"
haproxy -v | sed -n 1p
nginx -v 2>&1
wrk -v 2>&1 | sed -n 1p || true
.venv/bin/python -c 'import jwt, cryptography; print("pyjwt", jwt.__version__, "cryptography", cryptography.__version__)'
if command -v node >/dev/null; then echo "node $(node --version)"; fi
echo "[setup] ok"
