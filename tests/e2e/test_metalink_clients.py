"""Real Metalink clients: aria2c and wget2 fetch an ISO through the redirector's .meta4 URL.

Two loopback mirrors serve the ISO with aiohttp's static files (ranges and all); the nearer one
serves a corrupt copy of the same size, which no HEAD can tell apart. The clients check each
piece against the Metalink's piece hashes, fetch the bad piece again from the other mirror,
and end with the master's file, verified against the Metalink's sha-256.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from redirector.config.settings import parse_settings
from redirector.geo import GeoReader
from redirector.web.app import create_app
from tests.farm import MASTER_TRACE, trace_c
from tests.mmdb_build import CityRecord
from tests.support.world import city_db

pytestmark = pytest.mark.system

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]
Client = TestClient[web.Request, web.Application]

NL_CLIENT = "145.100.1.7"
ISO = "releases/10/iso/x86_64/smeserver-10.0-x86_64.iso"
ISO_SIZE = 24 * 1024 * 1024 + 4321  # ISO-sized, with a short last piece


@dataclass
class Tree:
    master: Path
    good: Path
    bad: Path
    sha256: str


@pytest.fixture
def trees(tmp_path: Path) -> Tree:
    data = os.urandom(ISO_SIZE)
    trace = trace_c(time.time() - 3600)
    roots = {}
    for name in ("master", "good", "bad"):
        root = tmp_path / name
        (root / ISO).parent.mkdir(parents=True)
        (root / MASTER_TRACE).parent.mkdir(parents=True)
        (root / MASTER_TRACE).write_bytes(trace)
        (root / ISO).write_bytes(data)
        roots[name] = root
    # The same size, 64 KiB of junk 10 MB in: only a piece hash tells.
    with open(roots["bad"] / ISO, "r+b") as f:
        f.seek(10 * 1024 * 1024)
        f.write(b"\x00" * 65536)
    return Tree(roots["master"], roots["good"], roots["bad"], hashlib.sha256(data).hexdigest())


@pytest.fixture
async def static() -> AsyncIterator[Callable[[Path], Awaitable[str]]]:
    """Serve a directory over http on loopback, as a mirror's web server would."""
    runners: list[web.AppRunner] = []

    async def serve(root: Path) -> str:
        app = web.Application()
        app.router.add_static("/", root, show_index=True)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        server = site._server  # aiohttp exposes the bound port only through the server
        assert isinstance(server, asyncio.Server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"

    yield serve
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def geo(tmp_path: Path) -> GeoReader:
    db = city_db(tmp_path / "city.mmdb", {"145.100.0.0/16": CityRecord("NL", "EU", 52.37, 4.90)})
    return GeoReader.open(db)


async def redirector(
    aiohttp_client: ClientFactory,
    static: Callable[[Path], Awaitable[str]],
    trees: Tree,
    geo: GeoReader,
    extra: str = "",
    poll: str = "1s",
) -> Client:
    master, bad, good = [await static(p) for p in (trees.master, trees.bad, trees.good)]
    settings = parse_settings(
        f"""
[redirector]
master = "{master}"
poll_interval = "{poll}"
probe_timeout = "2s"
hash_tree = "{trees.master}"
hash_read_rate = 1000
{extra}

[[mirror]]
name = "corrupt"
http = "{bad}"
country = "NL"
latitude = 52.37
longitude = 4.90

[[mirror]]
name = "sound"
http = "{good}"
country = "US"
latitude = 35.91
longitude = -79.05
""",
        "clients.toml",
    )
    client = await aiohttp_client(create_app(settings, geo=geo))
    deadline = time.monotonic() + 30
    while True:
        health = json.loads(await (await client.get("/health")).text())
        known = await client.get(f"/smeserver/{ISO}?sha256")
        if health["mirrors"]["fresh"] == 2 and known.status == 200:
            assert await known.text() == trees.sha256 + "\n"
            return client
        assert time.monotonic() < deadline, health
        await asyncio.sleep(0.1)


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:  # never skip: dev/test.sh installs it
        pytest.fail(f"{name} is not on PATH: run dev/test.sh, which installs it")
    return found


async def run(*argv: str, cwd: Path, timeout: float = 120) -> tuple[int, str]:
    """A client beside the loop that serves it (a blocking run would starve the app); its
    exit code and output, which a timeout shows too."""
    log = cwd / f"{Path(argv[0]).name}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(*argv, cwd=cwd, stdout=out, stderr=out)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            pytest.fail(f"{argv[0]} still running after {timeout}s:\n{log.read_text()[-3000:]}")
    assert proc.returncode is not None
    return proc.returncode, log.read_text(errors="replace")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


async def test_aria2c_ends_with_the_masters_iso_although_the_nearer_mirror_is_corrupt(
    aiohttp_client: ClientFactory,
    static: Callable[[Path], Awaitable[str]],
    trees: Tree,
    geo: GeoReader,
    tmp_path: Path,
) -> None:
    client = await redirector(aiohttp_client, static, trees, geo)
    # The corrupt mirror is the nearer one, and first in the Metalink: its size is right.
    meta4 = await client.get(f"/smeserver/{ISO}.meta4", headers={"X-Forwarded-For": NL_CLIENT})
    body = await meta4.text()
    assert body.index('location="nl"') < body.index('location="us"')
    out = tmp_path / "aria2"
    out.mkdir()
    url = str(client.make_url(f"/smeserver/{ISO}.meta4"))
    # Split over both mirrors (-s2, 1 MiB segments), two connections a server: the documented
    # way to fetch from several Metalink sources at once.
    code, log = await run(
        tool("aria2c"), "--check-integrity=true", "--allow-overwrite=true",
        "--console-log-level=notice", "--summary-interval=0", "-s2", "-x2", "-k1M",
        "--max-tries=5", "--retry-wait=0",
        f"--header=X-Forwarded-For: {NL_CLIENT}", "-d", str(out), url,
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, log
    got = out / ISO.rsplit("/", 1)[1]
    assert got.stat().st_size == ISO_SIZE
    assert sha256_of(got) == trees.sha256
    assert sha256_of(trees.bad / ISO) != trees.sha256  # the corrupt copy was in play


async def test_wget2_gets_the_iso_once_sample_checks_caught_the_corrupt_mirror(
    aiohttp_client: ClientFactory,
    static: Callable[[Path], Awaitable[str]],
    trees: Tree,
    geo: GeoReader,
    tmp_path: Path,
) -> None:
    # wget2 (1.99.1) fetches a piece that fails its hash again from the same mirror, forever:
    # it needs a Metalink without the corrupt mirror. 60 samples cover every piece of the ISO
    # on both mirrors (25 each), so the first pass after the hash catches the corrupt one; a
    # pass every 3s keeps the sound mirror's share of that budget from slowing the download.
    client = await redirector(aiohttp_client, static, trees, geo, "sample_checks = 60", "3s")
    deadline = time.monotonic() + 20
    while True:
        meta4 = await client.get(f"/smeserver/{ISO}.meta4", headers={"X-Forwarded-For": NL_CLIENT})
        body = await meta4.text()
        if 'location="nl"' not in body:
            break
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.1)
    assert body.count("<url ") == 1
    assert 'location="us"' in body
    page = await (await client.get("/mirrors")).text()
    assert 'data-mirror="corrupt"' in page[page.index('id="bad-copies"') :]
    out = tmp_path / "wget2"
    out.mkdir()
    url = str(client.make_url(f"/smeserver/{ISO}.meta4"))
    code, log = await run(
        tool("wget2"), "--metalink", "--no-config", "--tries=3",
        f"--header=X-Forwarded-For: {NL_CLIENT}", url,
        cwd=out, timeout=40,  # wget2 saves a Metalink's file in the working directory
    )  # fmt: skip
    assert code == 0, log
    got = out / ISO.rsplit("/", 1)[1]
    assert got.stat().st_size == ISO_SIZE, log
    assert sha256_of(got) == trees.sha256
