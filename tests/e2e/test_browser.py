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

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from redirector.stats import flush
from redirector.store.base import MemoryStore
from redirector.web import keys
from redirector.web.app import create_app
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
