"""The benchmark's pieces work: config, GeoIP world, nginx config, wrk's Lua script (not the bench).

The load tests themselves never run here (timings belong in bench/, not in CI); this only makes
sure `python bench/run.py` will not fail on a piece that rotted.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from redirector.config.settings import parse_settings
from redirector.geo import GeoReader
from tests.support import ROOT

BENCH = ROOT / "bench"


@pytest.fixture(scope="module")
def common() -> Iterator[object]:
    sys.path.insert(0, str(BENCH))
    try:
        import common as module  # type: ignore[import-not-found]  # bench/ is not a package

        yield module
    finally:
        sys.path.remove(str(BENCH))


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if found is None:
        # Never skip: dev/test.sh installs it.
        pytest.fail(f"{name} is not installed: run dev/test.sh, which installs it")
    return found


def test_world_config_and_states(common: object, tmp_path: Path) -> None:
    c = common  # the bench's module, imported from bench/
    world = c.build_world(tmp_path, clients=50)  # type: ignore[attr-defined]
    assert len(world.clients) == 50
    geo = GeoReader.open(world.db)
    assert all(geo.locate(ip) is not None for ip in world.clients)
    synthetic = c.synthetic_mirrors(20)  # type: ignore[attr-defined]
    text = c.config_text("127.0.0.1:1", world.db, synthetic)  # type: ignore[attr-defined]
    settings = parse_settings(text, "bench.toml")
    assert len(settings.mirrors) == 9 + 20
    assert settings.geoip_db == world.db
    states = c.fresh_states([m.name for m in settings.mirrors], 1e9)  # type: ignore[attr-defined]
    assert all(s.lag(1e9) == 0 for s in states)


@pytest.mark.system
def test_nginx_config_is_valid(common: object, tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(common.nginx_conf(tmp_path, 18080, 2))  # type: ignore[attr-defined]
    r = subprocess.run(
        [tool("nginx"), "-t", "-c", str(conf), "-p", str(tmp_path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


@pytest.mark.system
def test_every_feature_on_against_the_mirror_stub(common: object, tmp_path: Path) -> None:
    """The bench's redirector as shipped: the file check and the access log on, and every
    mirror on the loopback stub (no other host is ever named); the stub's nginx config valid."""
    world = common.build_world(tmp_path, clients=20)  # type: ignore[attr-defined]
    synthetic = common.synthetic_mirrors(8)  # type: ignore[attr-defined]
    text = common.config_text("127.0.0.1:1", world.db, synthetic, stub=18081)  # type: ignore[attr-defined]
    settings = parse_settings(text, "bench.toml")
    assert len(settings.mirrors) == 8
    assert settings.verify_files
    assert settings.access_log == "text"
    assert all(m.http.startswith("http://127.0.0.1:18081/") for m in settings.mirrors if m.http)
    assert all(m.https is None for m in settings.mirrors)
    conf = tmp_path / "stub.conf"
    conf.write_text(common.mirror_stub_conf(tmp_path, 18081))  # type: ignore[attr-defined]
    r = subprocess.run(
        [tool("nginx"), "-t", "-c", str(conf), "-p", str(tmp_path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


@pytest.mark.system
async def test_lua_script_rotates_forwarded_for(common: object, tmp_path: Path) -> None:
    """One short wrk run (1 s, one connection) against a loopback server that records."""
    clients = ["192.0.2.1", "198.51.100.2", "2001:db8::3"]
    script = tmp_path / "xff.lua"
    script.write_text(common.lua_script(clients, ("/a", "/b")))  # type: ignore[attr-defined]
    seen: list[tuple[str, str | None]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.path, request.headers.get("X-Forwarded-For")))
        return web.Response(status=302, headers={"Location": "http://x.test/"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server  # aiohttp exposes the bound port only through the server
    assert isinstance(server, asyncio.Server)
    port = server.sockets[0].getsockname()[1]
    try:
        proc = await asyncio.create_subprocess_exec(
            tool("wrk"), "-t1", "-c1", "-d1s", "-s", str(script), f"http://127.0.0.1:{port}/",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await runner.cleanup()
    assert proc.returncode == 0, err
    line = next(ln for ln in out.decode().splitlines() if ln.startswith("BENCH "))
    fields = line.split()
    assert int(fields[1]) >= len(seen) - 1 > 3  # wrk may count the one cut off at the end
    assert [int(f) for f in fields[5:10]] == [0, 0, 0, 0, 0]
    assert {xff for _, xff in seen} == set(clients)
    assert {path for path, _ in seen} == {"/a", "/b"}
    # In turn, not at random: each request carries the next address and the next path.
    for (path, xff), (next_path, next_xff) in itertools.pairwise(seen):
        assert clients.index(str(next_xff)) == (clients.index(str(xff)) + 1) % len(clients)
        assert next_path != path


async def test_views_load_loops_fetch_a_view_until_stopped(common: object) -> None:
    """bench/views_load.py's view loop against a loopback server, and its defaults."""
    import views_load  # type: ignore[import-not-found]  # bench/ is not a package

    args = views_load.parse_args([])
    assert (args.mirrors, args.loops, args.rounds) == (1000, 4, 2)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="view")

    app = web.Application()
    app.router.add_get("/mirrors", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server  # aiohttp exposes the bound port only through the server
    assert isinstance(server, asyncio.Server)
    port = server.sockets[0].getsockname()[1]
    stop = threading.Event()
    loop = views_load.Loop(port, "/mirrors", stop)
    try:
        loop.start()
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.to_thread(loop.join, 10)
    finally:
        await runner.cleanup()
    assert loop.count > 0
    assert loop.errors == 0
