"""The operator views' budget over HTTP: a loop is cut, other networks and redirects are not."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from redirector.config.settings import parse_settings
from redirector.geo import GeoReader
from redirector.web import keys
from redirector.web.app import create_app
from tests.support.clock import Clock
from tests.support.world import AU_CLIENT, FRONT, NL_CLIENT, REPOMD, US_CLIENT, fresh_store

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]
Client = TestClient[web.Request, web.Application]

EXPLAIN = f"/smeserver/{REPOMD}?mirrorlist"
TRUSTED = 'trusted_proxies = ["127.0.0.1/32", "::1/128"]'  # as World.config_text writes it
VIEWS = ("/mirrors", "/mirrors/", "/mirrors.json", "/schema/mirrors-v1.json", "/metrics", EXPLAIN)


async def serve(
    aiohttp_client: ClientFactory,
    geo: GeoReader,
    extra: str = "",
    clock: Clock | None = None,
    *,
    trusted: str = TRUSTED,
) -> Client:
    """The FRONT mirrors, all fresh, on a test server trusting `trusted` as proxies (loopback by
    default); `extra` goes into [redirector]; `clock`, when given, drives the views' budget."""
    text = FRONT.config_text(extra=extra).replace(TRUSTED, trusted, 1)
    settings = parse_settings(text, "views.toml")
    store = await fresh_store(FRONT.names)
    client = await aiohttp_client(create_app(settings, poll=False, store=store, geo=geo))
    if clock is not None:
        client.app[keys.VIEW_GUARD].clock = clock
    return client


def via(ip: str) -> dict[str, str]:
    """Headers of a request that loopback (a trusted proxy here) forwards for `ip`."""
    return {"X-Forwarded-For": ip}


async def status_of(client: Client, path: str, ip: str = NL_CLIENT) -> int:
    resp = await client.get(path, headers=via(ip), allow_redirects=False)
    await resp.read()
    return resp.status


async def refusals(client: Client, ip: str) -> dict[tuple[str, str], float]:
    """redirector_view_refusals_total by (view, reason), as /metrics shows it to `ip`."""
    resp = await client.get("/metrics", headers=via(ip))
    assert resp.status == 200
    return {
        (s.labels["view"], s.labels["reason"]): s.value
        for f in text_string_to_metric_families(await resp.text())
        for s in f.samples
        if s.name == "redirector_view_refusals_total"
    }


async def test_a_loop_on_the_status_page_from_one_client_is_cut_after_its_burst(
    aiohttp_client: ClientFactory, geo: GeoReader
) -> None:
    """The problem: nothing limited how often one client fetches a view, so a loop on /mirrors
    got every answer (each one written out by the event loop that writes the redirects)."""
    client = await serve(aiohttp_client, geo)
    started = time.monotonic()
    got = [await status_of(client, "/mirrors") for _ in range(200)]
    elapsed = time.monotonic() - started
    # The default budget: 20 at once, then 2 a second.
    assert got[:20] == [200] * 20
    assert got.count(200) <= 20 + 2 * elapsed + 1, got
    assert got.count(429) == 200 - got.count(200)


async def test_past_its_burst_a_network_gets_429_and_retry_after_while_another_gets_200(
    aiohttp_client: ClientFactory, geo: GeoReader, clock: Clock
) -> None:
    extra = "views_network_burst = 6\nviews_network_rate = 0.25"
    client = await serve(aiohttp_client, geo, extra, clock)
    views = client.app[keys.VIEWS]
    # One bucket for every view the network asks for; the burst is 6.
    assert [await status_of(client, v) for v in VIEWS] == [200] * 6
    before = views.renderings
    resp = await client.get("/mirrors", headers=via(NL_CLIENT))
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "4"  # a token every 4 s
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.text()
    assert body.startswith("429 Too Many Requests")
    assert len(body) < 200
    assert views.renderings == before  # nothing was rendered for it
    # The same /24 is the same network; another network has a bucket of its own.
    assert await status_of(client, "/mirrors.json", "145.100.1.99") == 429
    assert await status_of(client, EXPLAIN) == 429
    assert await status_of(client, "/mirrors", US_CLIENT) == 200
    # A token every 4 s: one view, then refused again.
    clock.t += 4
    assert [await status_of(client, "/mirrors") for _ in range(2)] == [200, 429]
    counted = await refusals(client, AU_CLIENT)
    assert counted[("mirrors", "network")] == 2
    assert counted[("mirrors.json", "network")] == 1
    assert counted[("explain", "network")] == 1


async def test_when_the_process_bucket_is_empty_every_network_gets_503(
    aiohttp_client: ClientFactory, geo: GeoReader, clock: Clock
) -> None:
    extra = "views_total_burst = 5\nviews_total_rate = 0.5"
    client = await serve(aiohttp_client, geo, extra, clock)
    many = [f"198.51.{i}.7" for i in range(5)]  # five networks, one view each
    assert [await status_of(client, "/metrics", ip) for ip in many] == [200] * 5
    resp = await client.get("/mirrors", headers=via(US_CLIENT))
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "2"
    assert resp.headers["Cache-Control"] == "no-store"
    assert (await resp.text()).startswith("503 Service Unavailable")
    clock.t += 2  # a token every 2 s, for whichever network asks first
    assert await status_of(client, "/mirrors", US_CLIENT) == 200
    assert await status_of(client, "/mirrors", AU_CLIENT) == 503
    clock.t += 100  # refilled up to the burst
    assert [await status_of(client, "/mirrors", AU_CLIENT) for _ in range(6)] == [200] * 5 + [503]
    clock.t += 2
    assert (await refusals(client, NL_CLIENT))[("mirrors", "total")] == 3


async def test_exempt_networks_are_never_counted_nor_refused(
    aiohttp_client: ClientFactory, geo: GeoReader, clock: Clock
) -> None:
    extra = (
        'views_exempt = ["145.100.0.0/16", "2001:db8::/32"]\n'
        "views_network_burst = 2\nviews_total_burst = 3"
    )
    client = await serve(aiohttp_client, geo, extra, clock)
    for _ in range(20):  # Prometheus scraping, an operator's browser
        assert await status_of(client, "/metrics") == 200
        assert await status_of(client, "/mirrors", "2001:db8:1::5") == 200
    # None of it came out of the process's bucket.
    assert [await status_of(client, "/mirrors", US_CLIENT) for _ in range(3)] == [200, 200, 429]
    assert await status_of(client, "/mirrors", AU_CLIENT) == 200
    assert await status_of(client, "/mirrors", "1.121.0.1") == 503


async def test_redirects_lists_and_health_are_not_budgeted(
    aiohttp_client: ClientFactory, geo: GeoReader, clock: Clock
) -> None:
    client = await serve(aiohttp_client, geo, "views_network_burst = 1", clock)
    assert await status_of(client, "/mirrors") == 200
    assert await status_of(client, "/mirrors") == 429
    for _ in range(30):  # the network past its budget still downloads, lists and checks
        resp = await client.get(
            f"/smeserver/{REPOMD}", headers=via(NL_CLIENT), allow_redirects=False
        )
        assert resp.status == 302
        assert resp.headers["Location"].startswith("http://nl.example/")
        assert await status_of(client, "/mirrorlist/smeos-10") == 200
        assert await status_of(client, "/health") == 200
        assert await status_of(client, "/health/ready") == 200


async def test_forwarded_for_from_an_untrusted_peer_does_not_buy_a_new_bucket(
    aiohttp_client: ClientFactory, geo: GeoReader, clock: Clock
) -> None:
    # No trusted proxy: the peer (loopback) is the client, whatever X-Forwarded-For says.
    trusted = 'trusted_proxies = ["192.0.2.1/32"]'
    client = await serve(aiohttp_client, geo, "views_network_burst = 3", clock, trusted=trusted)
    sent = [NL_CLIENT, US_CLIENT, AU_CLIENT, "198.51.100.1", "203.0.113.9"]
    assert [await status_of(client, "/mirrors", ip) for ip in sent] == [200, 200, 200, 429, 429]


async def test_a_reload_applies_new_limits_to_the_buckets_as_they_are(
    aiohttp_client: ClientFactory, geo: GeoReader, clock: Clock
) -> None:
    client = await serve(aiohttp_client, geo, "views_network_burst = 2", clock)
    assert [await status_of(client, "/mirrors") for _ in range(3)] == [200, 200, 429]
    live = client.app[keys.LIVE]
    live.replace(FRONT.config(extra="views_network_burst = 2\nviews_network_rate = 0.1"))
    clock.t += 5  # half a token at the new rate
    resp = await client.get("/mirrors", headers=via(NL_CLIENT))
    assert (resp.status, resp.headers["Retry-After"]) == (429, "5")
    live.replace(FRONT.config(extra=f'views_exempt = ["{NL_CLIENT}/32"]'))
    assert await status_of(client, "/mirrors") == 200


@pytest.mark.parametrize("path", VIEWS)
async def test_every_costly_view_is_budgeted(
    aiohttp_client: ClientFactory, geo: GeoReader, clock: Clock, path: str
) -> None:
    client = await serve(aiohttp_client, geo, "views_network_burst = 1", clock)
    assert await status_of(client, path) == 200
    resp = await client.head(path, headers=via(NL_CLIENT))
    assert resp.status == 429
