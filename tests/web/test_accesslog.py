"""The access log: its line formats, a real server writing it, and a poller that stays quiet."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from redirector.config.settings import ConfigError, load_settings, parse_settings
from redirector.web import accesslog, keys
from redirector.web.accesslog import AccessEntry, format_json, format_text
from redirector.web.app import create_app
from redirector.web.front import FrontSite
from tests.farm import Farm, error_500
from tests.support.world import FRONT, NL_CLIENT, city_db, fresh_store, mirror_url, replace_file

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]

ENTRY = AccessEntry(
    time=1_764_000_000.25,
    client="145.100.1.7",
    country="NL",
    scheme="https",
    host="mirrorlist.koozali.org",
    method="GET",
    path="/smeserver/releases/10/smeos/x86_64/repodata/repomd.xml",
    status=302,
    mirror="nluug",
    target="https://ftp.nluug.nl/os/Linux/distr/smeserver/releases/10/smeos/x86_64/repodata/repomd.xml",
    decision_seconds=0.0000412,
    seconds=0.00035,
    user_agent="urlgrabber/3.10 yum/3.4.3",
)


# --- the formats (pure) ------------------------------------------------------------------------


def test_text_line() -> None:
    assert format_text(ENTRY) == (
        "2025-11-24T16:00:00.250Z 145.100.1.7 NL https mirrorlist.koozali.org"
        ' "GET /smeserver/releases/10/smeos/x86_64/repodata/repomd.xml" 302 nluug 41us 0.35ms'
        ' "urlgrabber/3.10 yum/3.4.3"'
    )


def test_text_line_unknowns_and_hostile_fields() -> None:
    e = replace(
        ENTRY,
        client=None,
        country=None,
        host="",
        mirror=None,
        decision_seconds=None,
        status=404,
        path='/x"y\\z',
        user_agent='evil" 302 nluug\x1b[31m' + "A" * 5000,
    )
    line = format_text(e)
    assert line.startswith("2025-11-24T16:00:00.250Z - - https - ")
    assert ' "GET /x\\"y\\\\z" 404 - - 0.35ms "evil\\" 302 nluug\\x1b[31mAAA' in line
    assert "\x1b" not in line
    assert "\n" not in line
    assert len(line) < 1200  # the user agent was cut


def test_json_line() -> None:
    doc = json.loads(format_json(ENTRY))
    assert doc == {
        "time": "2025-11-24T16:00:00.250Z",
        "client": "145.100.1.7",
        "country": "NL",
        "scheme": "https",
        "host": "mirrorlist.koozali.org",
        "method": "GET",
        "path": "/smeserver/releases/10/smeos/x86_64/repodata/repomd.xml",
        "status": 302,
        "mirror": "nluug",
        "target": "https://ftp.nluug.nl/os/Linux/distr/smeserver/releases/10/smeos/x86_64/repodata/repomd.xml",
        "decision_us": 41.2,
        "duration_ms": 0.35,
        "user_agent": "urlgrabber/3.10 yum/3.4.3",
    }
    assert "\n" not in format_json(replace(ENTRY, path="/a\nb"))


def test_settings_keys() -> None:
    s = parse_settings(FRONT.config_text(["nl"]))
    assert (s.access_log, s.access_log_path) == ("text", None)
    s = parse_settings(
        FRONT.config_text(["nl"], extra='access_log = "json"\naccess_log_path = "/var/log/r/a.log"')
    )
    assert (s.access_log, s.access_log_path) == ("json", Path("/var/log/r/a.log"))
    assert parse_settings(FRONT.config_text(["nl"], extra='access_log = "off"')).access_log == "off"
    with pytest.raises(ConfigError, match=r"field 'access_log': 'xml': use \"text\""):
        parse_settings(FRONT.config_text(["nl"], extra='access_log = "xml"'))


# --- a real server writing it ------------------------------------------------------------------


@pytest.fixture
def access_log_closed() -> Iterator[None]:
    yield
    accesslog.close()


@pytest.fixture(params=["front", "aiohttp"])
async def served(
    request: pytest.FixtureRequest, tmp_path: Path, access_log_closed: None
) -> AsyncIterator[tuple[str, Path, Path]]:
    """The app behind a real AppRunner with the access log of `redirector serve`, to a file;
    on the fast path's site as `serve` runs it, and on aiohttp's own: the same lines."""
    db = city_db(tmp_path / "city.mmdb")
    cfg = tmp_path / "mirrors.toml"
    log = tmp_path / "access.log"
    cfg.write_text(
        FRONT.config_text(["nl", "us"], extra=f'geoip_db = "{db}"\naccess_log_path = "{log}"')
    )
    settings = load_settings(cfg)
    app = create_app(settings, poll=False, store=await fresh_store(["nl", "us"]))
    runner = web.AppRunner(app, **accesslog.runner_kwargs(settings))
    await runner.setup()
    if request.param == "front":
        fast = FrontSite(runner, "127.0.0.1", 0)
        await fast.start()
        port = fast.port
    else:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only through the server
        assert isinstance(server, asyncio.Server)
        port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", cfg, log
    finally:
        await runner.cleanup()


def lines_of(log: Path) -> list[str]:
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


async def wait_lines(log: Path, n: int) -> list[str]:
    deadline = time.monotonic() + 10
    while len(lines := lines_of(log)) < n:
        assert time.monotonic() < deadline, lines
        await asyncio.sleep(0.02)
    return lines


TEXT_LINE = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<client>\S+) (?P<cc>\S+) (?P<scheme>\S+)"
    r' (?P<host>\S+) "(?P<method>\S+) (?P<path>[^"]*)" (?P<status>\d{3}) (?P<mirror>\S+)'
    r' (?P<decision>\d+us|-) (?P<total>[\d.]+ms) "(?P<ua>[^"]*)"'
)


async def test_a_line_per_request_text_then_json_then_off(
    served: tuple[str, Path, Path],
) -> None:
    base, cfg, log = served
    path = "/smeserver/releases/10/smeos/x86_64/repodata/repomd.xml"
    async with aiohttp.ClientSession() as s:
        r = await s.get(
            base + path,
            headers={"X-Forwarded-For": NL_CLIENT, "User-Agent": "yum/3.4.3"},
            allow_redirects=False,
        )
        assert r.headers["Location"] == mirror_url("nl") + path.removeprefix("/smeserver/")
        r = await s.head(
            base + "/pub/smeserver/contribs/a%20b.rpm",
            headers={"X-Forwarded-For": NL_CLIENT, "X-Forwarded-Proto": "https"},
            allow_redirects=False,
        )
        assert r.status == 302
        assert (await s.get(base + "/nothing-here")).status == 404

        first, second, third = [TEXT_LINE.fullmatch(line) for line in await wait_lines(log, 3)]
        assert first is not None
        assert second is not None
        assert third is not None
        # The client as resolved through the trusted proxy, where it was placed and sent.
        assert first["client"] == NL_CLIENT
        assert first["cc"] == "NL"
        assert first["scheme"] == "http"
        assert (first["method"], first["path"], first["status"]) == ("GET", path, "302")
        assert first["mirror"] == "nl"
        assert first["decision"].endswith("us")
        assert first["ua"] == "yum/3.4.3"
        assert second["scheme"] == "https"
        assert (second["method"], second["path"], second["mirror"]) == (
            "HEAD",
            "/pub/smeserver/contribs/a%20b.rpm",
            "nl",
        )
        # Not a redirect: no mirror, no decision, no location; the client is still resolved.
        assert (third["client"], third["cc"], third["status"]) == ("127.0.0.1", "-", "404")
        assert (third["mirror"], third["decision"]) == ("-", "-")

        # JSON lines from the next request on, by a reload of the config.
        replace_file(
            cfg, cfg.read_text().replace("access_log_path", 'access_log = "json"\naccess_log_path')
        )
        deadline = time.monotonic() + 10
        while True:
            await s.get(base + path, headers={"X-Forwarded-For": NL_CLIENT}, allow_redirects=False)
            last = (await wait_lines(log, 4))[-1]
            if last.startswith("{"):
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        doc = json.loads(last)
        assert (doc["client"], doc["country"], doc["mirror"], doc["status"]) == (
            NL_CLIENT,
            "NL",
            "nl",
            302,
        )
        assert doc["path"] == path
        assert doc["target"] == mirror_url("nl") + path.removeprefix("/smeserver/")
        assert doc["decision_us"] > 0

        # And off.
        replace_file(cfg, cfg.read_text().replace('access_log = "json"', 'access_log = "off"'))
        deadline = time.monotonic() + 10
        app_router_off = False
        while not app_router_off:
            assert time.monotonic() < deadline
            before = len(lines_of(log))
            await s.get(base + path, allow_redirects=False)
            await asyncio.sleep(0.2)
            app_router_off = len(lines_of(log)) == before
        count = len(lines_of(log))
        for _ in range(5):
            await s.get(base + path, allow_redirects=False)
        await asyncio.sleep(0.2)
        assert len(lines_of(log)) == count


async def test_rotated_file_is_reopened(served: tuple[str, Path, Path]) -> None:
    base, _, log = served
    async with aiohttp.ClientSession() as s:
        await s.get(base + "/smeserver/a", allow_redirects=False)
        await wait_lines(log, 1)
        log.rename(log.with_suffix(".log.1"))  # what logrotate does
        await s.get(base + "/smeserver/b", allow_redirects=False)
        (line,) = await wait_lines(log, 1)
    assert '"GET /smeserver/b"' in line


# --- the poller stays quiet about healthy mirrors ------------------------------------------------


async def test_no_log_line_per_poll_per_healthy_mirror(
    aiohttp_client: ClientFactory, farm: Farm, caplog: pytest.LogCaptureFixture
) -> None:
    names = ("alpha-mirror", "bravo-mirror", "charlie-mirror")
    now = time.time()
    farm.set_trace("master", now - 60)
    lines = [
        "[redirector]",
        f'master = "{farm.url("master")}"',
        'poll_interval = "100ms"',
        'probe_timeout = "2s"',
    ]
    for n in names:
        farm.set_trace(n, now - 60)
        lines += ["[[mirror]]", f'name = "{n}"', f'http = "{farm.url(n)}"', 'country = "NL"',
                  "latitude = 52.0", "longitude = 4.9"]  # fmt: skip
    settings = parse_settings("\n".join(lines) + "\n")
    caplog.set_level(logging.DEBUG, logger="redirector")
    client = await aiohttp_client(create_app(settings, use_geo_settings=False))

    async def passes(n: int) -> None:
        seen: set[str] = set()
        deadline = time.monotonic() + 20
        while len(seen) < n:
            assert time.monotonic() < deadline, seen
            body = await (await client.get("/health")).json()
            if body["poller"]["last_pass"]:
                seen.add(body["poller"]["last_pass"])
            await asyncio.sleep(0.02)

    await passes(5)
    about_mirrors = [
        r
        for r in caplog.records
        if r.levelno >= logging.INFO and any(n in r.getMessage() for n in names)
    ]
    assert about_mirrors == []

    # A mirror that goes down is logged once, however many passes find it down.
    farm.behaviours["bravo-mirror"] = error_500
    deadline = time.monotonic() + 20
    while not [r for r in caplog.records if "bravo-mirror" in r.getMessage()]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await passes(5)
    down = [r for r in caplog.records if "bravo-mirror" in r.getMessage()]
    assert len(down) == 1
    assert down[0].levelno == logging.WARNING
    assert not [r for r in caplog.records if r.name == "redirector.web.app" and r.levelno >= 40]
    assert keys.ROUTER in client.app  # the app ran for real
