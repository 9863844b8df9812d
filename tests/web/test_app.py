"""End to end: the app polls loopback mirrors serving real trace files and redirects clients."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from redirector.config.settings import Settings, parse_settings
from redirector.geo import GeoReader
from redirector.web.app import create_app
from tests.farm import Farm, error_500, raw_get, status_of
from tests.support.world import AU_CLIENT, NL6_CLIENT, NL_CLIENT, REPOMD, US_CLIENT

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


def config(farm: Farm, trusted: str = '"127.0.0.1/32", "::1/128"', extra: str = "") -> Settings:
    return parse_settings(
        f"""
[redirector]
master = "{farm.url("master")}"
poll_interval = "1s"
probe_timeout = "1s"
trusted_proxies = [{trusted}]
{extra}

[[mirror]]
name = "nl"
http = "{farm.url("nl")}"
https = "https://nl.example/sme/"
country = "NL"
latitude = 52.37
longitude = 4.90
ipv6 = true
exclude = ["obsolete/"]

[[mirror]]
name = "us"
http = "{farm.url("us")}"
country = "US"
latitude = 35.91
longitude = -79.05

[[mirror]]
name = "au"
http = "{farm.url("au")}"
country = "AU"
latitude = -37.81
longitude = 144.96
""",
        "test.toml",
    )


async def wait_fresh(client: TestClient[web.Request, web.Application], n: int) -> dict[str, object]:
    deadline = time.monotonic() + 10
    while True:
        resp = await client.get("/health")
        body: dict[str, object] = json.loads(await resp.text())
        mirrors = body["mirrors"]
        assert isinstance(mirrors, dict)
        if mirrors["fresh"] == n:
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


async def location_of(
    client: TestClient[web.Request, web.Application], ip: str, path: str = REPOMD, **headers: str
) -> str:
    resp = await client.get(
        "/smeserver/" + path, headers={"X-Forwarded-For": ip, **headers}, allow_redirects=False
    )
    assert resp.status == 302, await resp.text()
    assert resp.headers["Cache-Control"] == "private, no-store"
    return resp.headers["Location"]


async def test_redirects_to_close_fresh_mirror(
    aiohttp_client: ClientFactory, farm: Farm, geo: GeoReader
) -> None:
    now = time.time()
    # The master last changed 10 h ago (push mirrors holding that state are fresh however old
    # its date); the Australian mirror holds a state three days old, so it is 10 h behind.
    farm.set_trace("master", now - 10 * 3600)
    farm.set_trace("nl", now - 10 * 3600)
    farm.set_trace("us", now - 10 * 3600)
    farm.set_trace("au", now - 3 * 86400)
    # Selection alone: the files named below exist nowhere (never-a-404 is test_verify's).
    unchecked = "verify_files = false"
    client = await aiohttp_client(create_app(config(farm, extra=unchecked), geo=geo))
    health = await wait_fresh(client, 2)
    assert health["status"] == "ok"

    assert await location_of(client, NL_CLIENT) == farm.url("nl") + REPOMD
    assert await location_of(client, US_CLIENT) == farm.url("us") + REPOMD
    # The Australian mirror is stale: Sydney goes to the nearest fresh one.
    assert (await location_of(client, AU_CLIENT)).startswith(farm.url("us"))
    # IPv6 clients only to IPv6 mirrors, https only to https mirrors.
    assert await location_of(client, NL6_CLIENT) == farm.url("nl") + REPOMD
    assert await location_of(client, US_CLIENT, "x", **{"X-Forwarded-Proto": "https"}) == (
        "https://nl.example/sme/x"
    )
    # The NL mirror excludes obsolete/: the NL client goes elsewhere for it.
    assert (await location_of(client, NL_CLIENT, "obsolete/6/a.iso")).startswith(farm.url("us"))
    # Legacy prefix, percent-encoding kept as sent, HEAD works too.
    resp = await client.head(
        "/pub/smeserver/contribs/a%20b/c%2Bd.rpm",
        headers={"X-Forwarded-For": NL_CLIENT},
        allow_redirects=False,
    )
    assert resp.status == 302
    assert resp.headers["Location"] == farm.url("nl") + "contribs/a%20b/c%2Bd.rpm"


async def test_untrusted_peer_cannot_choose_its_location(
    aiohttp_client: ClientFactory, farm: Farm, geo: GeoReader
) -> None:
    now = time.time()
    for name in ("master", "nl", "us"):
        farm.set_trace(name, now - 60)
    # The test client connects from 127.0.0.1, which this config does not trust.
    client = await aiohttp_client(create_app(config(farm, trusted=""), geo=geo))
    await wait_fresh(client, 2)
    targets = set()
    for i in range(64):
        # Loopback has no location: spread by weight, whatever the header says.
        targets.add(await location_of(client, f"145.100.{i}.1"))
    assert len(targets) == 1  # one peer, one /24: one stable choice, headers ignored


async def test_master_fallback_and_health(
    aiohttp_client: ClientFactory, farm: Farm, geo: GeoReader
) -> None:
    farm.set_trace("master", time.time() - 60)
    for name in ("nl", "us", "au"):
        farm.behaviours[name] = error_500
    client = await aiohttp_client(create_app(config(farm), geo=geo))
    body = await wait_fresh(client, 0)
    # Wait for a poller pass: then the master is known reachable.
    deadline = time.monotonic() + 10
    while body["poller"]["last_pass"] is None:  # type: ignore[index]  # JSON body
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
        body = json.loads(await (await client.get("/health")).text())
    assert body["status"] == "degraded"
    assert await location_of(client, NL_CLIENT) == farm.url("master") + REPOMD

    # With the master gone too, health fails.
    farm.behaviours["master"] = error_500
    deadline = time.monotonic() + 10
    while True:
        resp = await client.get("/health")
        if resp.status == 503:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    body = json.loads(await resp.text())
    assert body["status"] == "failing"
    assert "HTTP 500" in body["master"]["error"]
    # Still answering: the master is the last resort whatever its state.
    assert await location_of(client, NL_CLIENT) == farm.url("master") + REPOMD


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/smeserver/releases/", 405),
        ("DELETE", "/smeserver/x", 405),
        ("GET", "/smeserver/../etc/passwd", 400),
        ("GET", "/smeserver/%2e%2e/etc/passwd", 400),
        ("GET", "/smeserver/a%00b", 400),
        ("GET", "/smeserver/a%0d%0aSet-Cookie:x", 400),
        ("GET", "/smeserver/a%5c..%5cb", 400),
        ("GET", "/nothing-here", 404),
    ],
)
async def test_bad_requests(
    aiohttp_client: ClientFactory, farm: Farm, method: str, path: str, status: int
) -> None:
    client = await aiohttp_client(create_app(config(farm), poll=False, use_geo_settings=False))
    assert client.server.port is not None
    # The path goes out exactly as written, as a hostile client would send it.
    raw = await raw_get(client.server.port, path, method=method)
    assert status_of(raw) == status, raw
    assert b"Traceback" not in raw
    if status == 405:
        assert b"\r\nAllow: GET, HEAD\r\n" in raw


async def test_two_apps_share_state_through_redis(
    aiohttp_client: ClientFactory, farm: Farm, geo: GeoReader, redis_url: str
) -> None:
    now = time.time()
    for name in ("master", "nl", "us"):
        farm.set_trace(name, now - 60)
    shared = f'redis_url = "{redis_url}"'
    poller = await aiohttp_client(create_app(config(farm, extra=shared), geo=geo))
    reader = await aiohttp_client(create_app(config(farm, extra=shared), geo=geo, poll=False))
    await wait_fresh(poller, 2)
    body = await wait_fresh(reader, 2)  # never polled itself: it reads the poller's state
    assert body["store"] == {"kind": "redis", "ok": True, "error": None}
    assert await location_of(reader, NL_CLIENT) == farm.url("nl") + REPOMD
