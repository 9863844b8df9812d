#!/usr/bin/env bash
# Installs what the tests need (Debian packages, a virtualenv with the package and its test
# extras) and runs the whole suite: ruff, mypy --strict, pytest. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive for real.
packages=(redis-server chromium dnf createrepo-c rpm openssl)
# bench/ (and tests/test_bench.py, which checks its pieces) drives nginx and wrk.
packages+=(nginx wrk)
# deploy/ is checked with the real tools: nginx -t and a live nginx, systemd-analyze verify.
packages+=(nginx openssl curl systemd)
# tests/test_ftpsync_system.py runs Debian's ftpsync against a loopback rsync daemon.
packages+=(ftpsync rsync)
# tests/test_metalink_clients.py downloads an ISO through a Metalink with aria2c and wget2;
# tests/test_hashes.py compares ?sha256 with coreutils and reads the 302 with curl.
packages+=(aria2 wget2 coreutils curl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "== installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The package starts redis-server as a service; the tests start their own on a free port.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
# The same for nginx: the tests run their own, on loopback ports, with deploy/'s site file.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now nginx >/dev/null 2>&1 || true; fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test,speed]'

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest"
.venv/bin/pytest "$@"
