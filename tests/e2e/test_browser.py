"""The status page in a real browser: Debian's headless Chromium reads it and takes screenshots.

The screenshots land in artifacts/ at the repository root (kept by CI, ignored by git).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from redirector.config.settings import parse_settings
from redirector.core.models import MasterState, MasterVersion, MirrorState, Status
from redirector.stats import flush
from redirector.store.history import record_pass
from redirector.store.memory import MemoryStore
from redirector.web import keys
from redirector.web.app import create_app
from tests.cli.test_workers import config as workers_config
from tests.farm import Farm, error_500
from tests.support import ROOT
from tests.support.world import (
    EXPECTED,
    NL6_CLIENT,
    NL_CLIENT,
    REPOMD,
    STATUS,
    US_CLIENT,
    fill,
    geo,
)

pytestmark = pytest.mark.system  # Debian's chromium

ARTIFACTS = ROOT / "artifacts"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


def chromium_binary() -> str:
    binary = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(binary).exists():
        # Never skip: dev/test.sh installs Debian's chromium.
        pytest.fail("chromium is not installed: run dev/test.sh, which installs it")
    return binary


async def chromium(tmp_path: Path, *args: str) -> bytes:
    """Run headless Chromium to completion (the event loop keeps serving meanwhile)."""
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    proc = await asyncio.create_subprocess_exec(
        chromium_binary(),
        *FLAGS,
        f"--user-data-dir={profile}",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 40)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def count_downloads(srv: TestServer, n: int) -> None:
    """`n` redirects, as a trusted proxy forwards them for clients in NL and the US."""
    async with aiohttp.ClientSession() as session:
        for i in range(n):
            ip = (NL_CLIENT, US_CLIENT, NL6_CLIENT)[i % 3]
            async with session.get(
                srv.make_url(f"/smeserver/{REPOMD}"),
                headers={"X-Forwarded-For": ip},
                allow_redirects=False,
            ) as resp:
                assert resp.status == 302


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[TestServer]:
    """The real app on a loopback port, with known states and some downloads counted."""
    store = MemoryStore()
    await fill(store)
    app = create_app(STATUS.config(), poll=False, store=store, geo=geo(tmp_path))
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    try:
        await count_downloads(srv, 60)
        await flush(app[keys.TALLY], app[keys.STORE], time.time())
        yield srv
    finally:
        await srv.close()


async def test_rows_and_states_in_the_dom(server: TestServer, tmp_path: Path) -> None:
    dom = (await chromium(tmp_path, "--dump-dom", str(server.make_url("/mirrors")))).decode()
    rows = dict(re.findall(r'<tr id="mirror-([\w.-]+)" data-state="(\w+)">', dom))
    assert rows == EXPECTED
    assert re.search(r'<strong id="fresh-count">3 of 8</strong>', dom)
    # The reasons are on the page, escaped as text.
    row = dom[dom.index('<tr id="mirror-pacific"') :]
    row = row[: row.index("</tr>")]
    assert "not a trace: &lt;html&gt; &lt;b&gt;404&lt;/b&gt;" in row
    assert "(2 failed checks)" in row
    row = dom[dom.index('<tr id="mirror-contribs-fr"') :]
    assert re.search(r"\(4 failed checks\); next probe in [45]m\d\ds", row[: row.index("</tr>")])
    row = dom[dom.index('<tr id="mirror-pialasse"') :]
    assert "stale by 9h00m" in row[: row.index("</tr>")]
    # The maps: one dot per mirror on the world map, the European ones again in the inset.
    assert len(re.findall(r'<circle class="dot s-', dom)) == len(EXPECTED) + 4
    assert '<strong id="dl-hour">60</strong>' in dom


async def test_screenshots(server: TestServer, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    url = str(server.make_url("/mirrors"))
    desktop = ARTIFACTS / "mirrors.png"
    phone = ARTIFACTS / "mirrors-phone.png"
    for path in (desktop, phone):
        path.unlink(missing_ok=True)
    await chromium(tmp_path, f"--screenshot={desktop}", "--window-size=1366,2000", url)
    await chromium(tmp_path, f"--screenshot={phone}", "--window-size=412,3600", url)
    assert png_size(desktop) == (1366, 2000)
    assert png_size(phone) == (412, 3600)
    assert desktop.stat().st_size > 50_000  # a page, not a blank sheet


async def test_explain_page_screenshot(server: TestServer, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "mirrorlist.png"
    shot.unlink(missing_ok=True)
    url = str(server.make_url(f"/smeserver/{REPOMD}?mirrorlist"))
    dom = (await chromium(tmp_path, "--dump-dom", url)).decode()
    assert '<tr class="chosen"' in dom
    assert len(re.findall(r'<tr class="(?:chosen|eligible|rejected)"', dom)) == len(EXPECTED)
    await chromium(tmp_path, f"--screenshot={shot}", "--window-size=1100,900", url)
    assert png_size(shot) == (1100, 900)


# --- history after a scripted outage -----------------------------------------------------------


async def mirror_json(srv: TestServer, name: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(srv.make_url("/mirrors.json")) as resp,
    ):
        doc = await resp.json()
    found: dict[str, Any] = next(m for m in doc["mirrors"] if m["name"] == name)
    return found


async def until_state(srv: TestServer, name: str, states: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (await mirror_json(srv, name))["state"] not in states:
        assert time.monotonic() < deadline, f"{name} never became {states}"
        await asyncio.sleep(0.2)


async def test_a_scripted_outage_shows_strip_down_since_and_events(
    farm: Farm, tmp_path: Path
) -> None:
    now = time.time()
    for name in ("master", "nl", "us"):
        farm.set_trace(name, now - 600)
    # until_state asks for /mirrors.json five times a second: loopback is exempt monitoring.
    head = '[redirector]\nbackoff_max = "1s"\nviews_exempt = ["127.0.0.1/32"]\n'
    text = workers_config(farm, 8080).replace("[redirector]\n", head, 1)
    settings = parse_settings(text, "outage.toml")
    store = MemoryStore()
    # Earlier days, written through the same API the poller uses: nl was out for 6 hours
    # three days ago, so the strip has a day that is not all green.
    master = MasterState((MasterVersion(now - 600, now - 600),), now - 600)
    for at, status in ((now - 10 * 86400, Status.UP), (now - 3 * 86400, Status.DOWN),
                       (now - 3 * 86400 + 6 * 3600, Status.UP)):  # fmt: skip
        down = status is Status.DOWN
        states = [MirrorState(n, status if n == "nl" else Status.UP, at, master_date=at,
                              error="timed out after 10 s" if down and n == "nl" else None)
                  for n in ("nl", "us")]  # fmt: skip
        await record_pass(store, states, master, master, at)
    app = create_app(settings, poll=True, store=store, use_geo_settings=False)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    ARTIFACTS.mkdir(exist_ok=True)
    url = str(srv.make_url("/mirrors"))
    try:
        await until_state(srv, "nl", {"fresh"})
        farm.behaviours["nl"] = error_500
        await until_state(srv, "nl", {"down"})
        await asyncio.sleep(1.2)  # a little while out of service
        during = (await chromium(tmp_path, "--dump-dom", url)).decode()
        shot = ARTIFACTS / "outage-down.png"
        await chromium(tmp_path, f"--screenshot={shot}", "--window-size=1366,1400", url)
        farm.behaviours.pop("nl")
        await until_state(srv, "nl", {"fresh"})
        after = (await chromium(tmp_path, "--dump-dom", url)).decode()
        shot = ARTIFACTS / "outage-back.png"
        await chromium(tmp_path, f"--screenshot={shot}", "--window-size=1366,1400", url)
        phone = ARTIFACTS / "outage-phone.png"
        await chromium(tmp_path, f"--screenshot={phone}", "--window-size=412,1400", url)
    finally:
        await srv.close()

    # While down: first in the table, out of service since, the strip.
    rows = re.findall(r'<tr id="mirror-([\w.-]+)" data-state="(\w+)">', during)
    assert rows[0] == ("nl", "down")
    row = during[during.index('<tr id="mirror-nl"') :]
    row = row[: row.index("</tr>")]
    assert re.search(r'<div class="down-since">out of service since <time datetime="[^"]+">', row)
    assert len(re.findall(r'<rect class="day ', row)) == 14
    assert len(re.findall(r'<rect class="day d-down"', row)) >= 1  # three days ago
    events = during[during.index('<section id="events">') :]
    assert re.search(r'<span class="ev ev-mirror-down">down</span></td><td>nl</td>', events)

    # After: back in service, in the log with how long it was out; no "down since" any more.
    row = after[after.index('<tr id="mirror-nl"') :]
    row = row[: row.index("</tr>")]
    assert 'data-state="fresh"' in row
    assert "down-since" not in row
    events = after[after.index('<section id="events">') :]
    events = events[: events.index("</section>")]
    assert re.search(
        r'<span class="ev ev-mirror-up">up</span></td><td>nl</td><td>back in service after '
        r"[\d.]+s</td>",
        events,
    )
    assert events.index("ev-mirror-up") < events.index("ev-mirror-down")  # newest first
    assert png_size(ARTIFACTS / "outage-down.png") == (1366, 1400)
