"""The soak in CI: one minute of bench/soak.py (the full run is ten), as a subprocess.

Mixed load on a real `redirector serve` with its poller running against loopback mirrors that
flap; the session's redis-server holds the state. Zero error responses, no traceback in the
server's log, RSS growth under 10 % from the end of the warm-up to the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RedisServer
from tests.support import ROOT

SOAK = ROOT / "bench" / "soak.py"


@pytest.mark.timeout(180)
def test_one_minute_soak(redis_server: RedisServer, redis_url: str, tmp_path: Path) -> None:
    report_file = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, str(SOAK), "--duration", "60s", "--redis-url", redis_url,
         "--json", str(report_file), "--keep-log"],
        cwd=ROOT, capture_output=True, text=True, timeout=170, check=False,
    )  # fmt: skip
    assert report_file.exists(), done.stdout + done.stderr
    report = json.loads(report_file.read_text())
    summary = done.stdout + done.stderr
    assert report["requests"] > 3000, summary  # 150 req/s for a minute, on a busy machine
    assert set(report["by_kind"]) >= {
        "redirect", "mirrorlist", "metalink", "status", "status-json", "health", "ready",
        "explain", "metrics", "hostile",
    }, summary  # fmt: skip
    assert report["errors"] == 0, summary
    assert report["tracebacks"] == 0, summary
    assert report["flaps"] >= 10, summary  # the mirrors did flap
    assert (report["poller_passes"] or 0) >= 10, summary  # and the poller saw it
    assert report["rss_mb"], summary
    assert report["rss_growth"] < 0.10, summary
    assert done.returncode == 0, summary
