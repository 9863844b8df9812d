"""`redirector serve --workers N` as a real process tree: shared state, restarts, clean stops."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from redirector.cli.workers import check_address, default_state_dir, default_workers
from redirector.config.settings import parse_settings
from tests.conftest import free_port
from tests.farm import Farm, error_500
from tests.support import ROOT

FILE = "releases/10/smeos/x86_64/Packages/a.rpm"


def config(farm: Farm, port: int) -> str:
    return f"""
[redirector]
listen = "127.0.0.1:{port}"
master = "{farm.url("master")}"
poll_interval = "1s"
probe_timeout = "1s"
failures_before_down = 1
lease_ttl = "3s"
geoip_db = ""
access_log = "off"
verify_files = false

[[mirror]]
name = "nl"
http = "{farm.url("nl")}"
country = "NL"
latitude = 52.37
longitude = 4.90

[[mirror]]
name = "us"
http = "{farm.url("us")}"
country = "US"
latitude = 35.91
longitude = -79.05
"""


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    port: int
    log: Path
    session: aiohttp.ClientSession
    seen: dict[int, dict[str, object]] = field(default_factory=dict)  # pid -> last /health

    async def health(self) -> dict[str, object]:
        async with self.session.get(f"http://127.0.0.1:{self.port}/health") as resp:
            body: dict[str, object] = json.loads(await resp.text())
        self.seen[int(str(body["pid"]))] = body
        return body

    async def until(self, what: str, ok: object, timeout: float = 30.0) -> None:
        """Ask /health on fresh connections (spread over the workers) until `ok()` holds."""
        deadline = time.monotonic() + timeout
        while not ok():  # type: ignore[operator]
            assert self.proc.returncode is None, self.log.read_text()
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.seen}"
            with contextlib.suppress(aiohttp.ClientError):
                await self.health()
            await asyncio.sleep(0.05)

    def pids_with(self, fresh: int, among: set[int] | None = None) -> set[int]:
        return {
            pid
            for pid, h in self.seen.items()
            if (among is None or pid in among)
            and isinstance(h["mirrors"], dict)
            and h["mirrors"]["fresh"] == fresh
        }


@pytest.fixture
async def served(farm: Farm, tmp_path: Path) -> AsyncIterator[Served]:
    now = time.time()
    for name in ("master", "nl", "us"):
        farm.set_trace(name, now - 600)
    port = free_port()
    cfg = tmp_path / "workers.toml"
    cfg.write_text(config(farm, port))
    parse_settings(cfg.read_text(), cfg)  # a typo here should fail loudly, not as a timeout
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "redirector.cli", "serve", "--config", str(cfg),
            "--workers", "2",
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    connector = aiohttp.TCPConnector(force_close=True)  # a new connection, a new worker maybe
    async with aiohttp.ClientSession(connector=connector) as session:
        s = Served(proc, port, log, session)
        try:
            yield s
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.wait(), 30)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_two_workers_share_fresh_state_restart_and_stop(served: Served, farm: Farm) -> None:
    # Both workers answer, and both see both mirrors fresh: one of them polled the farm and the
    # other read the result from the shared file store.
    await served.until("two workers with 2 fresh mirrors", lambda: len(served.pids_with(2)) >= 2)
    first = set(served.seen)
    assert len(first) == 2
    store = {json.dumps(h["store"]) for h in served.seen.values()}
    assert len(store) == 1
    assert '"kind": "file"' in store.pop()

    # Exactly one of them polls: the lease.
    log = served.log.read_text()
    assert log.count("this process polls") == 1, log

    # Redirects from every worker go to a fresh farm mirror.
    for _ in range(20):
        async with served.session.get(
            f"http://127.0.0.1:{served.port}/smeserver/{FILE}", allow_redirects=False
        ) as resp:
            assert resp.status == 302
            assert resp.headers["Location"] in (farm.url("nl") + FILE, farm.url("us") + FILE)

    # A mirror breaking is seen by both workers after the next pass.
    farm.behaviours["nl"] = error_500
    served.seen.clear()
    await served.until("both workers with 1 fresh mirror", lambda: served.pids_with(1) == first)
    for _ in range(10):
        async with served.session.get(
            f"http://127.0.0.1:{served.port}/smeserver/{FILE}", allow_redirects=False
        ) as resp:
            assert resp.headers["Location"] == farm.url("us") + FILE

    # The polling worker dies: it is replaced, another worker takes the lease over and polls,
    # and both workers follow the mirror recovering.
    match = re.search(r"lease as [^/\s]+/(\d+)/", log)
    assert match is not None, log
    victim = int(match.group(1))
    assert victim in first
    os.kill(victim, signal.SIGKILL)
    farm.behaviours.pop("nl")
    served.seen.clear()
    await served.until(
        "two workers, one new, with 2 fresh mirrors again",
        lambda: len(served.pids_with(2) - {victim}) >= 2,
    )
    assert victim not in served.seen
    workers = set(served.seen)
    log = served.log.read_text()
    assert "exited with -9; restarting" in log
    assert log.count("this process polls") == 2, log

    # SIGTERM stops the supervisor and every worker.
    served.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(served.proc.wait(), 30) == 0
    assert not [pid for pid in workers if alive(pid)]


def test_a_taken_port_is_refused_before_any_worker_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="in use"):
            check_address("127.0.0.1", port)
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            f'[redirector]\nlisten = "127.0.0.1:{port}"\nmaster = "http://m.test/"\ngeoip_db = ""\n'
        )
        r = subprocess.run(
            [sys.executable, "-m", "redirector.cli", "serve", "--config", str(cfg),
             "--workers", "2", "--no-poll"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert r.returncode == 1
    assert f"cannot serve on 127.0.0.1:{port}" in r.stderr
    assert "Traceback" not in r.stderr


def test_workers_must_be_a_positive_number() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "redirector.cli", "serve", "--workers", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 2
    assert "--workers" in r.stderr
    assert default_workers() >= 1


async def mirrors_json(session: aiohttp.ClientSession, port: int) -> dict[str, dict[str, object]]:
    async with session.get(f"http://127.0.0.1:{port}/mirrors.json") as resp:
        body = json.loads(await resp.text())
    return {m["name"]: m for m in body["mirrors"]}


async def test_a_restart_keeps_the_masters_history(
    farm: Farm, tmp_path: Path, state_home: Path
) -> None:
    # Every restart with the file store used to be a cold start: the state lived in a private
    # directory removed on exit, so the master's history was lost, and a mirror 3 days behind
    # was taken for one 1 h behind (the age of the master's current trace).
    now = time.time()
    day = 86400.0
    farm.set_trace("master", now - 3 * day)
    farm.set_trace("nl", now - 3 * day)
    farm.set_trace("us", now - 4 * day)  # lacks the master state first seen 3 days ago
    port = free_port()
    cfg = tmp_path / "workers.toml"
    # The runs ask for /mirrors.json ten times a second: loopback is exempt monitoring.
    exempt = '[redirector]\nviews_exempt = ["127.0.0.1/32"]\n'
    cfg.write_text(config(farm, port).replace("[redirector]\n", exempt, 1))
    settings = parse_settings(cfg.read_text(), cfg)
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def lag_of_us() -> float | None:
            with contextlib.suppress(aiohttp.ClientError):
                rows = await mirrors_json(session, port)
                lag = rows["us"]["lag_seconds"]
                return float(lag) if isinstance(lag, int | float) else None
            return None

        async def run(until: Callable[[], Awaitable[bool]], what: str) -> None:
            log = tmp_path / "serve.log"
            with log.open("ab") as out:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "redirector.cli", "serve", "--config", str(cfg),
                    "--workers", "2",
                    cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                )  # fmt: skip
            try:
                deadline = time.monotonic() + 30
                while not await until():
                    assert proc.returncode is None, log.read_text()
                    assert time.monotonic() < deadline, f"timed out: {what}\n{log.read_text()}"
                    await asyncio.sleep(0.1)
            finally:
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(proc.wait(), 30) == 0

        async def three_days_behind() -> bool:
            lag = await lag_of_us()
            return lag is not None and lag > 2.9 * day

        await run(three_days_behind, "us 3 days behind")
        # The master moves on (its trace now an hour old); nl follows, us still lacks both.
        farm.set_trace("master", now - 3600)
        farm.set_trace("nl", now - 3600)

        async def nl_current() -> bool:
            with contextlib.suppress(aiohttp.ClientError):
                rows = await mirrors_json(session, port)
                return rows["nl"]["lag_seconds"] == 0 and rows["nl"]["state"] == "fresh"
            return False

        await run(nl_current, "nl current again")
        # A third start, after one pass: us is still 3 days behind, not 1 h.
        started = time.time()

        async def passed_and_us_behind() -> bool:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/health") as resp:
                    body = json.loads(await resp.text())
                age = body["poller"]["age_seconds"]
                if age is None or time.time() - age < started:
                    return False
                lag = await lag_of_us()
                assert lag is not None
                assert lag > 2.9 * day, f"us lag {lag} s after a restart"
                return True
            return False

        await run(passed_and_us_behind, "a pass after the restart")
    assert default_state_dir(settings).is_relative_to(state_home)
