"""The `redirector` command as a user runs it: real processes, real curl."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.support import ROOT
from tests.support.world import city_db

EXAMPLE = ROOT / "examples" / "mirrors.toml"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redirector.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_prints_the_mirrors() -> None:
    r = run("check-config", str(EXAMPLE))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].split()[:3] == ["NAME", "CC", "LAT"]
    assert "nluug" in r.stdout
    assert "9 mirrors (8 enabled)" in r.stdout


def test_check_config_refuses_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace("latitude = 52.37", "latitude = 152.37"))
    r = run("check-config", str(bad))
    assert r.returncode == 2
    assert f"{bad}:" in r.stderr
    assert "mirror 'nluug' field 'latitude'" in r.stderr
    assert "Traceback" not in r.stderr


def test_locate(tmp_path: Path) -> None:
    db = city_db(tmp_path / "c.mmdb")
    r = run("locate", "145.100.3.4", "--db", str(db))
    assert r.returncode == 0, r.stderr
    assert "country NL, continent EU, latitude 52.3700, longitude 4.9000" in r.stdout
    assert run("locate", "10.1.2.3", "--db", str(db)).returncode == 1
    assert run("locate", "not-an-ip", "--db", str(db)).returncode == 2


@pytest.fixture
def served() -> Iterator[int]:
    """`redirector serve` on the example config; --no-poll keeps its traffic on loopback."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "redirector.cli", "serve", "--config", str(EXAMPLE),
         "--listen", f"127.0.0.1:{port}", "--no-poll"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while subprocess.run(
            ["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/health"], check=False
        ).returncode:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # also closes the pipe


def test_serve_answers_curl_with_302_to_master(served: int) -> None:
    url = f"http://127.0.0.1:{served}/smeserver/releases/10/smeos/x86_64/repodata/repomd.xml"
    out = subprocess.run(["curl", "-sI", url], capture_output=True, text=True, check=True).stdout
    assert out.startswith("HTTP/1.1 302")
    assert (
        "Location: http://mirror.contribs.org/smeserver/releases/10/smeos/x86_64/repodata/repomd.xml"
        in out
    )
