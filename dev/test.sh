#!/usr/bin/env bash
# Installs what the tests need (Debian packages, a virtualenv with the package and its test
# extras) and runs the whole suite: ruff, mypy --strict, pytest. Safe to run again.
# Arguments go to pytest: `bash dev/test.sh -m "not system"` is the fast suite, which needs no
# root and no Debian package but redis-server and curl (the tests start their own redis-server,
# on a free port).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive for real.
packages=(redis-server chromium dnf createrepo-c rpm openssl)
# bench/ (and tests/e2e/test_bench.py, which checks its pieces) drives nginx and wrk.
packages+=(nginx wrk)
# deploy/ is checked with the real tools: nginx -t and a live nginx, systemd-analyze verify.
packages+=(nginx openssl curl systemd)
# tests/e2e/test_ftpsync_system.py runs Debian's ftpsync against a loopback rsync daemon.
packages+=(ftpsync rsync)
# tests/e2e/test_poison.py makes a file store's directory immutable (chattr +i): unwritable to root.
packages+=(e2fsprogs)
# deploy/prometheus/alerts.yml is checked and unit-tested with promtool, which Debian ships in
# the prometheus package.
packages+=(prometheus)
# tests/e2e/test_metalink_clients.py downloads an ISO through a Metalink with aria2c and wget2;
# tests/e2e/test_hashes.py compares ?sha256 with coreutils and reads the 302 with curl.
packages+=(aria2 wget2 coreutils curl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})) && ((EUID == 0)); then
  echo "== installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
elif ((${#missing[@]})); then
  # Without root nothing is installed: the tests that drive a missing tool fail and say which
  # (they never skip), and -m "not system" leaves out all that need more than redis-server.
  echo "== not root, not installing: ${missing[*]} (or run: bash dev/test.sh -m \"not system\")"
fi
# The packages start redis-server and nginx as services, which the tests do not need: they run
# their own on free loopback ports, so a host's own servers keep running. Only a throwaway CI
# machine has them stopped, to leave its memory to the tests.
if [[ -n "${CI:-}" ]] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now redis-server nginx >/dev/null 2>&1 || true
fi

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
