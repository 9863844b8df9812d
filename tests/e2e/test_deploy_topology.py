"""The deployment on the master's own host, end to end on one machine (docs/topology.md).

nginx with the shipped site file (only ports, certificate, temp paths and the tree's directory
rendered for the test) in front of `redirector serve --no-poll` and `redirector poll` as the
systemd units run them, sharing a real redis-server; the master tree on local disk; mirrors on
loopback. It shows: a fresh mirror is served; a new master state on disk is seen within one
pass; with every mirror down a file comes from the local tree, not a redirect loop; mirror
lists and metalinks never name the front door.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import RedisServer, free_port
from tests.e2e.test_deploy import (
    NAMES,
    SITE,
    _wait_port,
    main_conf,
    make_certificate,
    need,
    nginx_test,
    substitute,
    text_of,
)
from tests.farm import MASTER_TRACE, Farm, trace_c
from tests.mmdb_build import CityRecord
from tests.support.world import city_db

NL_CLIENT = "145.100.1.7"
DIR = "releases/10/smeos/x86_64"
REPOMD = f"{DIR}/repodata/repomd.xml"
ISO = "releases/10/iso/x86_64/smeserver-10.1-x86_64.iso"
ODD = "contribs/a b+c.txt"  # percent-encoded on the wire: nginx must find it all the same
MIRRORS = {"nl": ("NL", 52.37, 4.90), "us": ("US", 35.91, -79.05)}


@dataclass
class Site:
    http: int
    https: int
    cert: Path
    tree: Path
    farm: Farm
    work: Path


def write_tree(tree: Path, trace_date: float) -> None:
    """The master tree as it is on the master's disk."""
    for path, body in {
        MASTER_TRACE: trace_c(trace_date, host="mirror.contribs.org"),
        REPOMD: b"<repomd><data><timestamp>1700000000</timestamp></data></repomd>\n",
        ISO: b"ISO" * 1000,
        ODD: b"odd name\n",
        "releases/index.html": b"releases\n",
    }.items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_bytes(body)


def config(site_http: int, tree: Path, farm: Farm, redis_url: str, db: Path, listen: int) -> str:
    mirrors = "".join(
        f'[[mirror]]\nname = "{n}"\nhttp = "{farm.url(n)}"\ncountry = "{cc}"\n'
        f"latitude = {lat}\nlongitude = {lon}\n\n"
        for n, (cc, lat, lon) in MIRRORS.items()
    )
    names = ", ".join(f'"{n}"' for n in (*NAMES, f"127.0.0.1:{site_http}"))
    # As deploy/mirrors.toml: the master's public URL is the front door itself, the poller
    # reads the tree from disk, fallbacks are served by nginx.
    return f"""
[redirector]
listen = "127.0.0.1:{listen}"
master = "http://mirror.contribs.org/smeserver/"
master_origin = "file://{tree}/"
public_names = [{names}]
fallback = "local"
trusted_proxies = ["127.0.0.1/32", "127.0.0.2/32"]
geoip_db = "{db}"
redis_url = "{redis_url}"
poll_interval = "0.5s"
probe_timeout = "2s"
failures_before_down = 1
backoff_max = "1s"
repos = ["smeos"]
repodata_versions = ["10"]

{mirrors}"""


async def start(*args: str, log: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    out = log.open("ab")
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "redirector.cli", *args, stdout=out, stderr=out, env=env
        )
    finally:
        out.close()


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 15)
    except TimeoutError:
        proc.kill()
        await proc.wait()


@pytest.fixture
async def site(
    tmp_path: Path, farm: Farm, redis_url: str, redis_server: RedisServer
) -> AsyncIterator[Site]:
    now = time.time()
    tree = tmp_path / "srv" / "smeserver"
    write_tree(tree, now - 600)
    for name in MIRRORS:
        farm.set_trace(name, now - 600)
        farm.put(name, "releases/", b"index")
        farm.put(name, REPOMD, (tree / REPOMD).read_bytes())
        farm.put(name, ISO, (tree / ISO).read_bytes())
    db = city_db(tmp_path / "city.mmdb", {"145.100.0.0/16": CityRecord("NL", "EU", 52.37, 4.90)})
    http, https, upstream = free_port(), free_port(), free_port()
    cfg = tmp_path / "mirrors.toml"
    cfg.write_text(config(http, tree, farm, redis_url, db, upstream))
    log = tmp_path / "redirector.log"
    serve = await start("serve", "--no-poll", "--workers", "1", "--config", str(cfg), log=log)
    poll = await start("poll", "--config", str(cfg), log=log)

    cert, key = make_certificate(tmp_path)
    site_file = tmp_path / "redirector.conf"
    site_file.write_text(
        substitute(
            SITE.read_text(),
            {
                "listen 80 default_server;": f"listen 127.0.0.1:{http} default_server;",
                "listen [::]:80 default_server;": "",
                "listen 443 ssl http2 default_server;": (
                    f"listen 127.0.0.1:{https} ssl http2 default_server;"
                ),
                "listen [::]:443 ssl http2 default_server;": "",
                "/etc/ssl/redirector/fullchain.pem": str(cert),
                "/etc/ssl/redirector/privkey.pem": str(key),
                "server 127.0.0.1:8080;": f"server 127.0.0.1:{upstream};",
                "alias /srv/smeserver/;": f"alias {tree}/;",
            },
        )
    )
    conf = main_conf(tmp_path, site_file)
    checked = nginx_test(conf, tmp_path)
    assert checked.returncode == 0, checked.stderr
    err = tmp_path / "error.log"
    nginx = await asyncio.create_subprocess_exec(
        need("nginx"), "-p", str(tmp_path), "-c", str(conf), "-e", str(err), "-g", "daemon off;",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await _wait_port(http, nginx, err)
        await _wait_port(https, nginx, err)
        await _wait_port(upstream, serve, log)
        yield Site(http, https, cert, tree, farm, tmp_path)
    finally:
        await stop(nginx)
        await stop(poll)
        await stop(serve)


@dataclass
class Answer:
    status: int
    location: str
    body: bytes
    headers: str
    redirects: int


async def curl(
    site: Site,
    path: str,
    *,
    name: str = NAMES[0],
    source: str = "127.0.0.2",
    client: str | None = NL_CLIENT,
    follow: bool = False,
    head: bool = False,
) -> Answer:
    """curl through nginx as a client at `source` (127.0.0.2: a trusted balancer that says
    the client is `client`), with the production name; no DNS (--resolve)."""
    out = site.work / f"body-{time.monotonic_ns()}"
    args = [
        need("curl"), "-s", "-o", str(out), "-D", "-",
        "-w", "\n%{http_code} %{num_redirects} %{redirect_url}",
        "--noproxy", "*", "--max-time", "10", "--interface", source,
        "--resolve", f"{name}:{site.http}:127.0.0.1", "--max-redirs", "10",
    ]  # fmt: skip
    if client:
        args += ["-H", f"X-Forwarded-For: {client}"]
    if follow:
        args.append("-L")
    if head:
        args.append("-I")
    proc = await asyncio.create_subprocess_exec(
        *args,
        f"http://{name}:{site.http}{path}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    raw, errs = await asyncio.wait_for(proc.communicate(), 20)
    # 47: too many redirects. That is the loop this layout exists to make impossible.
    assert proc.returncode == 0, f"curl {path}: exit {proc.returncode}: {errs.decode()}"
    text = raw.decode(errors="replace")
    headers, _, tail = text.rpartition("\n")
    status, redirects, location = [*tail.split(" ", 2), ""][:3]
    body = out.read_bytes() if out.exists() else b""
    return Answer(int(status), location, body, headers, int(redirects))


async def eventually(what: str, check: Callable[[], Awaitable[bool]], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def health(site: Site) -> dict[str, object]:
    got = await curl(site, "/health", client=None)
    doc: dict[str, object] = json.loads(got.body)
    return doc


def fresh(doc: dict[str, object]) -> int:
    mirrors = doc["mirrors"]
    assert isinstance(mirrors, dict)
    n: int = mirrors["fresh"]
    return n


def list_urls(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def names_front(text: str, site: Site) -> bool:
    return any(n in text for n in (*NAMES, f"127.0.0.1:{site.http}"))


@pytest.mark.system
async def test_the_master_host_layout_end_to_end(site: Site) -> None:
    farm = site.farm

    # 1. The poller reads the master from disk and finds both mirrors fresh.
    async def both_fresh() -> bool:
        return fresh(await health(site)) == 2

    await eventually("both mirrors fresh", both_fresh)
    doc = await health(site)
    master = doc["master"]
    assert isinstance(master, dict)
    assert master["reachable"] is True, master
    assert master["origin"] == f"file://{site.tree}/"
    assert not [h for h in farm.hits if h.startswith("master/")]  # no master over HTTP at all

    # A fresh mirror is served: the NL client goes to nl.
    got = await curl(site, f"/smeserver/{ISO}")
    assert (got.status, got.location) == (302, farm.url("nl") + ISO)

    # Mirror lists and metalinks name mirrors, never the front door.
    for name in NAMES:
        listed = await curl(site, "/mirrorlist/smeos-10", name=name)
        assert listed.status == 200
        urls = list_urls(listed.body.decode())
        assert urls[0] == farm.url("nl") + "releases/10/smeos/$basearch"
        assert len(urls) == 2
        assert not names_front(listed.body.decode(), site)

    async def metalink_ready() -> bool:
        return (await curl(site, "/metalink?repo=smeos-10&arch=x86_64")).status == 200

    await eventually("the repodata pass to read repomd.xml from disk", metalink_ready)
    meta = (await curl(site, "/metalink?repo=smeos-10&arch=x86_64")).body.decode()
    assert "<mm0:timestamp>1700000000</mm0:timestamp>" in meta
    assert farm.url("nl") + REPOMD in meta
    assert not names_front(meta, site)

    # 2. A new master state on disk is seen within one pass (0.5 s; a second of slack).
    before = master["current"]
    write_tree(site.tree, time.time() - 5)
    written = time.monotonic()

    async def new_state() -> bool:
        m = (await health(site))["master"]
        assert isinstance(m, dict)
        return bool(m["current"] != before)

    await eventually("the new master state", new_state, seconds=5)
    assert time.monotonic() - written < 2.5

    # 3. Every mirror down: the file comes from the local tree through nginx, no redirect.
    async def down(request: web.Request, rest: str) -> web.StreamResponse:
        return web.Response(status=503, text="down for maintenance")

    for name in MIRRORS:
        farm.behaviours[name] = down

    async def none_fresh() -> bool:
        return fresh(await health(site)) == 0

    await eventually("every mirror down", none_fresh)
    hits = len(farm.hits)
    got = await curl(site, f"/smeserver/{ISO}", follow=True)
    assert (got.status, got.redirects) == (200, 0), got.headers
    assert got.body == (site.tree / ISO).read_bytes()
    assert "x-accel-redirect" not in got.headers.lower()  # nginx consumed it
    assert "content-type: application/octet-stream" in got.headers.lower()
    got = await curl(site, "/pub/smeserver/contribs/a%20b+c.txt", follow=True)
    assert (got.status, got.body) == (200, b"odd name\n")
    got = await curl(site, f"/smeserver/{REPOMD}", head=True)
    assert got.status == 200
    assert "content-length: 64" in got.headers.lower()
    # A file the tree does not have: nginx's 404, still no redirect.
    got = await curl(site, "/smeserver/releases/10/none.iso", follow=True)
    assert (got.status, got.redirects) == (404, 0)
    # The internal location is not reachable from outside.
    assert (await curl(site, f"/_master/{ISO}")).status == 404
    # Nothing was asked of the mirrors for these files: the tree answered.
    assert not [h for h in farm.hits[hits:] if ISO in h]

    # The lists then name nothing rather than the front door; the metalink is a 404.
    emptied = (await curl(site, "/mirrorlist/smeos-10", name=NAMES[1])).body.decode()
    assert list_urls(emptied) == []
    assert not names_front(emptied, site)
    meta_down = await curl(site, "/metalink?repo=smeos-10&arch=x86_64", name=NAMES[1])
    assert meta_down.status == 404
    assert not names_front(meta_down.body.decode(), site)

    # 4. A mirror comes back and is served again.
    del farm.behaviours["nl"]

    async def nl_back() -> bool:
        return (await curl(site, f"/smeserver/{ISO}")).location == farm.url("nl") + ISO

    await eventually("nl back", nl_back)
    assert "Traceback" not in text_of(site.work / "redirector.log")


def test_the_shipped_site_serves_the_tree_internally() -> None:
    text = SITE.read_text()
    block = text[text.index("location /_master/ {") :]
    block = block[: block.index("}")]
    assert "internal;" in block
    assert "alias /srv/smeserver/;" in block
    prod = (SITE.parent.parent / "mirrors.toml").read_text()
    assert 'master_origin = "file:///srv/smeserver/"' in prod
    assert 'fallback = "local"' in prod


def test_the_production_config_cannot_loop() -> None:
    from redirector.config.settings import load_settings
    from redirector.core.topology import LOCAL_PREFIX, names_url

    s = load_settings(SITE.parent.parent / "mirrors.toml")
    assert set(NAMES) <= set(s.public_names)
    assert names_url(s.own_names, s.master) == NAMES[0]  # the master is the front door...
    assert s.fallback == "local"  # ...so fallbacks are served, never redirected
    assert s.origin.startswith("file:///")
    assert LOCAL_PREFIX == "/_master/"
    for m in s.mirrors:
        assert names_url(s.own_names, m.base) is None


def test_check_config_refuses_the_looping_layout(tmp_path: Path) -> None:
    prod = (SITE.parent.parent / "mirrors.toml").read_text()
    looping = tmp_path / "mirrors.toml"
    looping.write_text(prod.replace('fallback = "local"', 'fallback = "redirect"'))
    r = subprocess.run(
        [sys.executable, "-m", "redirector.cli", "check-config", str(looping)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 2
    assert "fields 'master' and 'fallback'" in r.stderr
    assert "Traceback" not in r.stderr
