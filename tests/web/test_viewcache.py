"""Operator views rendered once per state: the cache alone, then 1,000 mirrors and view loops."""

from __future__ import annotations

import asyncio
import gzip
import json
import sys
import time
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from redirector.config.settings import Settings, parse_settings
from redirector.core.models import MirrorState, Status
from redirector.stats import READ_MAX_AGE, flush
from redirector.store.memory import MemoryStore
from redirector.views.status import Section
from redirector.web import keys
from redirector.web.app import create_app
from redirector.web.viewcache import SWITCH_INTERVAL, Page, Throttle, Views
from tests.support.clock import Clock
from tests.support.world import fresh_store

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]
Client = TestClient[web.Request, web.Application]


# --- the cache alone ------------------------------------------------------------------------------


class Maker:
    """Renders "<label>:<n>" and counts its renderings; `gate` holds them until set."""

    def __init__(self) -> None:
        self.count = 0
        self.gate = asyncio.Event()
        self.gate.set()

    def __call__(self, label: str) -> Callable[[], Awaitable[str]]:
        async def make() -> str:
            await self.gate.wait()
            self.count += 1
            return f"{label}:{self.count}"

        return make


async def test_one_rendering_per_state_shared_by_everyone_asking() -> None:
    clock, make = Clock(0.0), Maker()
    views = Views(clock, max_age=30)
    snap_a, snap_b = object(), object()
    assert await views.get("page", (snap_a,), make("a")) == "a:1"
    assert await views.get("page", (snap_a,), make("a")) == "a:1"  # the same state: cached
    make.gate.clear()
    waiting = [asyncio.create_task(views.get("page", (snap_b,), make("b"))) for _ in range(10)]
    await asyncio.sleep(0.01)
    make.gate.set()
    assert set(await asyncio.gather(*waiting)) == {"b:2"}  # a new state: one rendering for all
    assert make.count == 2
    await views.close()


async def test_past_its_age_the_old_rendering_serves_while_a_new_one_is_made() -> None:
    clock, make = Clock(0.0), Maker()
    views = Views(clock, max_age=30)
    assert await views.get("page", ("s",), make("p")) == "p:1"
    clock.t = 31
    make.gate.clear()
    assert await views.get("page", ("s",), make("p")) == "p:1"  # no wait
    assert await views.get("page", ("s",), make("p")) == "p:1"  # one refresh under way, not two
    make.gate.set()
    await asyncio.sleep(0.01)
    assert await views.get("page", ("s",), make("p")) == "p:2"
    assert make.count == 2
    await views.close()


async def test_a_throttled_view_is_rendered_again_at_most_at_its_rate() -> None:
    clock, make = Clock(0.0), Maker()
    views = Views(clock)
    got = [await views.get("n", (i,), make("c"), throttled=True) for i in range(10)]
    # The first, then a burst of five changes at once, then the last rendering is served.
    assert got == ["c:1", "c:2", "c:3", "c:4", "c:5", "c:6", "c:6", "c:6", "c:6", "c:6"]
    clock.t = 0.5  # two a second
    assert await views.get("n", (10,), make("c"), throttled=True) == "c:7"
    assert await views.get("n", (11,), make("c"), throttled=True) == "c:7"
    await views.close()


def test_throttle_burst_and_rate() -> None:
    t = Throttle(burst=2, rate=1)
    assert [t.allow(0.0) for _ in range(3)] == [True, True, False]
    assert t.allow(0.5) is False
    assert t.allow(1.0) is True
    assert t.allow(0.2) is False  # a clock going back refills nothing


async def test_the_views_thread_hands_the_interpreter_back_within_half_a_millisecond() -> None:
    views = Views()
    assert sys.getswitchinterval() <= SWITCH_INTERVAL == 0.0005
    await views.close()


def test_a_page_carries_its_gzip() -> None:
    page = Page.of("<p>é</p>")
    assert gzip.decompress(page.gzipped) == page.body == "<p>é</p>".encode()


# --- a thousand mirrors --------------------------------------------------------------------------

MIRRORS = 1000


def thousand() -> Settings:
    blocks = [
        '[redirector]\nmaster = "http://master.example/smeserver/"\n'
        'trusted_proxies = ["127.0.0.1/32"]\nverify_files = false\naccess_log = "off"\n'
        # These loops measure renderings; the views' budget is test_viewbudget.py's.
        'views_exempt = ["0.0.0.0/0", "::/0"]\n'
    ]
    for i in range(MIRRORS):
        lat, lon = -40 + (i * 37) % 100, -180 + (i * 53) % 360
        blocks.append(
            f'[[mirror]]\nname = "m{i:04d}"\nhttp = "http://m{i:04d}.example/sme/"\n'
            f'country = "NL"\nlatitude = {lat}\nlongitude = {lon}\n'
        )
    return parse_settings("\n".join(blocks), "thousand.toml")


@pytest.fixture
async def big(aiohttp_client: ClientFactory) -> Client:
    settings = thousand()
    store = await fresh_store([m.name for m in settings.mirrors], MemoryStore())
    return await aiohttp_client(create_app(settings, poll=False, store=store))


def counting_section(client: Client) -> list[int]:
    """A status page section that counts the page's renderings."""
    calls = [0]

    async def section() -> Section:
        calls[0] += 1
        return Section("probe", "Probe", "<p>probe</p>")

    client.app[keys.STATUS_SECTIONS].append(section)
    return calls


async def test_a_loop_of_status_page_requests_renders_it_once_per_state(big: Client) -> None:
    calls = counting_section(big)
    for _ in range(30):
        resp = await big.get("/mirrors")
        assert resp.status == 200
        assert "m0999" in await resp.text()
    assert calls == [1]  # it used to be rendered for every request: 30
    # A new snapshot (a poller pass somewhere) shows at once.
    holder, store = big.app[keys.HOLDER], big.app[keys.STORE]
    await store.put_states([MirrorState("m0000", Status.DOWN, time.time(), error="HTTP 500")])
    await holder.refresh(store)
    body = await (await big.get("/mirrors.json")).text()
    rows = {r["name"]: r for r in json.loads(body)["mirrors"]}
    assert rows["m0000"]["state"] == "down"
    assert "HTTP 500" in await (await big.get("/mirrors")).text()
    assert calls == [2]
    # Gzip, made once per rendering, for a client that takes it.
    resp = await big.get("/mirrors", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert resp.headers["Content-Encoding"] == "gzip"
    assert b"m0999" in gzip.decompress(await resp.read())
    resp = await big.get("/mirrors", headers={"Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in resp.headers


async def test_downloads_alone_do_not_render_the_status_page_again(big: Client) -> None:
    """Under traffic the download figures move all the time; rendered for each move, a large
    network's page took the redirects' CPU every few seconds. They are read at most every
    MAX_AGE, so the page is rendered once per snapshot within that age."""
    calls = counting_section(big)
    assert (await big.get("/mirrors")).status == 200
    tally, store = big.app[keys.TALLY], big.app[keys.STORE]
    for i in range(3):
        tally.count("m0001", "NL", "releases/10/x.iso")
        await flush(tally, store, time.time())
        await asyncio.sleep(READ_MAX_AGE / 2 + 0.1 * i)  # past the old 5 s read age, in all
        assert (await big.get("/mirrors")).status == 200
    assert calls == [1]


async def test_loops_on_every_view_cost_one_rendering_per_state(big: Client) -> None:
    """Eight clients looping on the views (status page, JSON, metrics, an explanation) for a
    second: each view is rendered once for the state, the counters at most at their rate. (What
    that does to redirect latency is measured by bench/views_load.py.)"""
    views = big.app[keys.VIEWS]
    stop = asyncio.Event()
    counts: dict[str, int] = {}

    async def loop(path: str) -> None:
        while not stop.is_set():
            resp = await big.get(
                path, headers={"X-Forwarded-For": "145.100.1.7", "Accept-Encoding": "gzip"}
            )
            assert resp.status == 200, path
            assert b"m0999" in await resp.read(), path
            counts[path] = counts.get(path, 0) + 1

    paths = ["/mirrors", "/mirrors.json", "/metrics", "/smeserver/releases/10/x.iso?mirrorlist"]
    for path in paths:
        await (await big.get(path, headers={"X-Forwarded-For": "145.100.1.7"})).read()
    first = views.renderings  # page, JSON, explanation; the metrics' state, counters and join
    assert first == 6
    started = time.monotonic()
    tasks = [asyncio.create_task(loop(p)) for p in paths * 2]
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    assert all(counts[p] >= 5 for p in paths), counts
    # Nothing changed but the clock: only the counters (and their join with the state), once
    # per second they are valid for.
    assert views.renderings - first <= 2 * (elapsed + 1), (views.renderings, counts)


async def test_an_explanation_is_rendered_once_per_client_and_snapshot(big: Client) -> None:
    views = big.app[keys.VIEWS]
    url = "/smeserver/releases/10/x.iso?mirrorlist&json"
    before = views.renderings
    bodies = set()
    for _ in range(10):
        resp = await big.get(url, headers={"X-Forwarded-For": "145.100.1.7"})
        bodies.add(await resp.text())
    assert len(bodies) == 1
    assert json.loads(bodies.pop())["client"]["ip"] == "145.100.1.7"
    assert views.renderings == before + 1
    # Another client has its own.
    resp = await big.get(url, headers={"X-Forwarded-For": "152.2.10.20"})
    assert json.loads(await resp.text())["client"]["ip"] == "152.2.10.20"
    assert views.renderings == before + 2
