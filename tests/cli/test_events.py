"""`redirector events`, `mirrors`, `explain` read what `serve --workers N` shares without Redis."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from redirector.config.settings import parse_settings
from tests.cli.test_workers import Served
from tests.cli.test_workers import config as workers_config
from tests.conftest import free_port
from tests.farm import Farm, error_500
from tests.support import ROOT

NL_CLIENT = "145.100.1.7"
FILE = "releases/10/smeos/x86_64/Packages/a.rpm"


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The command in a real process, off the event loop (which keeps the farm serving)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "redirector.cli", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def test_the_cli_reads_the_workers_file_store(farm: Farm, tmp_path: Path) -> None:
    now = time.time()
    for name in ("master", "nl", "us"):
        farm.set_trace(name, now - 600)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    port = free_port()
    cfg = tmp_path / "workers.toml"
    text = workers_config(farm, port).replace(
        "[redirector]\n", f'[redirector]\nstate_dir = "{state}"\n', 1
    )
    cfg.write_text(text)
    parse_settings(text, cfg)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "redirector.cli", "serve", "--config", str(cfg),
            "--workers", "2", cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    connector = aiohttp.TCPConnector(force_close=True)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            served = Served(proc, port, log, session)
            await served.until("2 fresh mirrors", lambda: served.pids_with(2))
            # The scripted outage: nl fails, is seen down, comes back.
            farm.behaviours["nl"] = error_500
            served.seen.clear()
            await served.until("nl down", lambda: served.pids_with(1))
            await asyncio.sleep(1.5)
            farm.behaviours.pop("nl")
            served.seen.clear()
            await served.until("nl back", lambda: served.pids_with(2))
            # One more pass, so the recovery is in the history as well as the snapshot.
            await asyncio.sleep(2.5)

            mirrors = await cli("mirrors", "--config", str(cfg))
            assert mirrors.returncode == 0, mirrors.stderr
            assert "2 of 2 mirrors fresh" in mirrors.stdout
            assert "not checked" not in mirrors.stdout

            events = await cli("events", "--config", str(cfg))
            assert events.returncode == 0, events.stderr
            lines = events.stdout.splitlines()
            down = [x for x in lines if "mirror-down" in x and " nl: " in x]
            up = [x for x in lines if "mirror-up" in x and " nl: back in service (after " in x]
            assert down, events.stdout
            assert up, events.stdout
            assert lines.index(down[0]) < lines.index(up[0])
            table = lines[lines.index("") + 1 :]
            assert table[0].split()[:4] == ["MIRROR", "24H", "7D", "30D"]
            nl = next(x for x in table if x.startswith("nl "))
            assert "100.0%" not in nl.split()[1]  # it was out for a while
            us = next(x for x in table if x.startswith("us "))
            assert us.split()[1:4] == ["100.0%", "100.0%", "100.0%"]

            as_json = await cli("events", "--config", str(cfg), "--json", "--mirror", "nl")
            doc = json.loads(as_json.stdout)
            assert {e["subject"] for e in doc["events"]} == {"nl"}
            assert doc["mirrors"]["nl"]["down_since"] is None

            # The same directory given on the command line, to a config without state_dir.
            bare = tmp_path / "bare.toml"
            bare.write_text(workers_config(farm, port))
            explained = await cli(
                "explain", NL_CLIENT, f"/smeserver/{FILE}", "--config", str(bare),
                "--state-dir", str(state),
            )  # fmt: skip
            assert explained.returncode == 0, explained.stderr
            assert "not checked yet" not in explained.stdout
            assert farm.url("nl") + FILE in explained.stdout or farm.url("us") + FILE in (
                explained.stdout
            )
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)


async def test_without_a_shared_store_the_cli_says_so(farm: Farm, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(workers_config(farm, free_port()))
    for args in (("events",), ("mirrors",)):
        r = await cli(*args, "--config", str(cfg))
        assert r.returncode == 1
        assert "no redis_url in the config, and no state_dir" in r.stderr
        assert "Traceback" not in r.stderr
    gone = await cli("events", "--config", str(cfg), "--state-dir", str(tmp_path / "nope"))
    assert gone.returncode == 1
    assert "does not exist" in gone.stderr
    unknown = await cli("events", "--config", str(cfg), "--state-dir", str(tmp_path),
                        "--mirror", "atlantis")  # fmt: skip
    assert unknown.returncode == 2
    assert "no mirror 'atlantis'" in unknown.stderr
    explained = await cli("explain", NL_CLIENT, f"/smeserver/{FILE}", "--config", str(cfg))
    assert "append ?mirrorlist to the URL" in explained.stderr
    assert "Traceback" not in explained.stderr
