"""File-check budgets: the pure buckets, then a random-path flood against real loopback mirrors."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from redirector.config.settings import parse_settings
from redirector.core.budget import Budget, Limits, Refusal, directory
from redirector.core.models import MasterState, MasterVersion, MirrorState, Status
from redirector.geo import GeoReader
from redirector.poll.filecheck import MAX_LOOKUPS, Verifier, open_check_session
from redirector.router import Routed, Router
from redirector.snapshot import Snapshot, SnapshotHolder
from redirector.store.base import StoreData
from redirector.web import keys
from redirector.web.app import create_app
from tests.farm import Farm
from tests.mmdb_build import CityRecord
from tests.support.clock import Clock
from tests.support.world import city_db

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]

NET_A = b"\x91\x64\x01"  # 145.100.1.0/24
NET_B = b"\x91\x64\x02"


# --- the pure budget ----------------------------------------------------------------------------


def test_a_network_gets_its_burst_then_its_rate() -> None:
    b = Budget(Limits(network_burst=3, network_per_minute=6, total_burst=100))
    got = [b.admit(NET_A, f"m{i}", 0.0) for i in range(5)]
    assert got == [None, None, None, Refusal.NETWORK, Refusal.NETWORK]
    assert b.admit(NET_B, "m9", 0.0) is None  # another network has its own bucket
    assert b.admit(NET_A, "m5", 9.9) is Refusal.NETWORK  # 6 a minute: one per 10 s
    assert b.admit(NET_A, "m5", 10.0) is None
    assert b.admit(NET_A, "m6", 5.0) is Refusal.NETWORK  # a clock going back adds nothing


def test_a_mirror_has_a_cap_in_flight_and_release_frees_it() -> None:
    b = Budget(Limits(mirror_inflight=2))
    assert [b.admit(NET_A, "m", 0.0) for _ in range(3)] == [None, None, Refusal.MIRROR]
    assert b.admit(NET_A, "other", 0.0) is None
    b.release("m")
    assert b.admit(NET_A, "m", 0.0) is None
    assert b.inflight == 3


def test_the_total_has_a_cap_in_flight_and_a_rate() -> None:
    b = Budget(Limits(total_inflight=2, total_burst=10))
    assert b.admit(NET_A, "a", 0.0) is None
    assert b.admit(NET_B, "b", 0.0) is None
    assert b.admit(b"\x01\x02\x03", "c", 0.0) is Refusal.TOTAL
    b.release("a")
    b.release("b")
    b = Budget(Limits(total_burst=2, total_per_second=1, total_inflight=100))
    nets = [bytes([i, 0, 0]) for i in range(4)]
    assert [b.admit(n, str(i), 0.0) for i, n in enumerate(nets)] == [
        None, None, Refusal.TOTAL, Refusal.TOTAL,
    ]  # fmt: skip
    # A refusal by the total takes nothing from the network's bucket.
    assert b.admit(nets[2], "x", 1.0) is None


def test_networks_are_remembered_up_to_a_bound() -> None:
    b = Budget(Limits(network_burst=1, networks=2, total_burst=100))
    for net in (b"a", b"b", b"c"):
        assert b.admit(net, "m" + net.decode(), 0.0) is None
        b.release("m" + net.decode())
    assert len(b._networks) == 2  # "a", the least recently used, was forgotten
    assert b.admit(b"c", "m", 0.0) is Refusal.NETWORK


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("releases/10/iso/x.iso", "releases/10/iso/"),
        ("x.iso", ""),
        ("contribs/a/", "contribs/a/"),
    ],
)
def test_directory(path: str, expected: str) -> None:
    assert directory(path) == expected


# --- the Verifier with its budgets, a frozen clock --------------------------------------------


def heads(farm: Farm) -> list[str]:
    return [t for m, t in farm.requests if m == "HEAD"]


class Rig:
    """Fresh mirrors on the farm, in a snapshot; routing and a budgeted verifier over them."""

    def __init__(self, farm: Farm, names: list[str]) -> None:
        blocks = "".join(
            f'[[mirror]]\nname = "{n}"\nhttp = "{farm.url(n)}"\ncountry = "NL"\n'
            f"latitude = 52.0\nlongitude = 5.0\n\n"
            for n in names
        )
        self.settings = parse_settings(
            f'[redirector]\nmaster = "{farm.url("master")}"\nverify_timeout = "1s"\n'
            f'verify_ttl = "10m"\nverify_negative_ttl = "1m"\n\n{blocks}',
            "budget.toml",
        )
        now = time.time()
        states = {n: MirrorState(n, Status.UP, now, master_date=now - 60) for n in names}
        master = MasterState((MasterVersion(now - 60, now - 60),), now)
        self.holder = SnapshotHolder(self.settings.mirrors)
        self.holder.current = Snapshot.build(
            self.settings.mirrors, StoreData(states, master, 1), now
        )
        self.router = Router(self.settings, self.holder, None)

    def route(self, path: str, peer: str = "145.100.1.7") -> Routed:
        return self.router.resolve(peer, None, None, "http", path)


@pytest.fixture
async def vsession() -> AsyncIterator[aiohttp.ClientSession]:
    settings = parse_settings('[redirector]\nmaster = "http://127.0.0.1:1/"\n')
    async with open_check_session(settings) as s:
        yield s


async def test_a_flood_from_one_network_costs_its_burst_then_its_rate(
    farm: Farm, vsession: aiohttp.ClientSession
) -> None:
    rig = Rig(farm, ["a", "b", "c", "d"])
    clock = Clock(1000.0)
    limits = Limits(network_burst=10, network_per_minute=6)
    v = Verifier(rig.settings, vsession, rig.holder, clock=clock, limits=limits)
    rng = random.Random(5)
    for i in range(200):  # random paths nobody has, from addresses in one /24
        path = f"releases/{rng.randrange(10**9)}/x{i}.iso"
        target = await v.target(rig.route(path, f"145.100.1.{i % 250 + 1}"))
        assert target.startswith(farm.base)  # a mirror or the master: never an error
    assert len(heads(farm)) == 10  # its burst; without budgets, 3 per request: 600
    clock.t += 60  # a minute later: 6 more
    for i in range(50):
        await v.target(rig.route(f"releases/later/y{i}.iso", "145.100.1.9"))
    assert len(heads(farm)) == 16
    assert v.refused[Refusal.NETWORK] > 0
    # Another network is not held back by the flood.
    farm.put("b", "releases/10/real.iso", b"iso")
    order = [r.mirror.name for r in rig.route("releases/10/real.iso", "145.100.2.7").top(4)]
    got = await v.target(rig.route("releases/10/real.iso", "145.100.2.7"))
    assert got == farm.url("b") + "releases/10/real.iso"
    assert heads(farm)[16:] == [f"{n}/releases/10/real.iso" for n in order[: order.index("b") + 1]]


async def test_past_the_budget_the_ranked_order_minus_what_is_known(
    farm: Farm, vsession: aiohttp.ClientSession
) -> None:
    rig = Rig(farm, ["a", "b", "c"])
    order = [r.mirror.name for r in rig.route("releases/10/iso/a.iso").top(3)]
    first, second, third = order
    farm.put(second, "releases/10/iso/a.iso", b"iso")
    farm.put(second, "releases/10/iso/b.iso", b"iso")
    v = Verifier(
        rig.settings, vsession, rig.holder, clock=Clock(0.0), limits=Limits(network_burst=2)
    )
    # Within the budget: the first lacks a.iso, the second has it.
    assert await v.target(rig.route("releases/10/iso/a.iso")) == farm.url(second) + (
        "releases/10/iso/a.iso"
    )
    assert len(heads(farm)) == 2
    # Past it (no tokens left): no HEAD; the first lacked a file of this directory, so b.iso
    # goes to the second, unchecked; a file elsewhere goes to the first, unchecked.
    assert await v.target(rig.route("releases/10/iso/b.iso")) == farm.url(second) + (
        "releases/10/iso/b.iso"
    )
    assert await v.target(rig.route("contribs/c.tar.gz")) == farm.url(first) + "contribs/c.tar.gz"
    # Known answers still count: a.iso again goes to the second with no HEAD at all.
    assert await v.target(rig.route("releases/10/iso/a.iso")) == farm.url(second) + (
        "releases/10/iso/a.iso"
    )
    assert len(heads(farm)) == 2
    assert third in order


async def test_a_mirror_never_has_more_than_its_cap_in_flight(
    farm: Farm, vsession: aiohttp.ClientSession
) -> None:
    rig = Rig(farm, ["a"])
    gate = asyncio.Event()
    now_in, most = 0, 0

    async def slow_no(request: web.Request, rest: str) -> web.StreamResponse:
        nonlocal now_in, most
        now_in += 1
        most = max(most, now_in)
        await gate.wait()
        now_in -= 1
        return web.Response(status=404)

    farm.behaviours["a"] = slow_no
    v = Verifier(rig.settings, vsession, rig.holder, limits=Limits(mirror_inflight=3))
    # Twenty clients of twenty networks, twenty files: only three HEADs go out at once, and
    # the others are answered at once (not queued behind them).
    waiting = [
        asyncio.create_task(v.target(rig.route(f"contribs/f{i}.rpm", f"10.0.{i}.1")))
        for i in range(20)
    ]
    done, _ = await asyncio.wait(waiting, timeout=0.5)
    assert len(done) == 17
    assert {t.result() for t in done} == {
        farm.url("a") + f"contribs/f{i}.rpm" for i in range(3, 20)
    }
    assert (most, v.budget.inflight) == (3, 3)
    gate.set()
    await asyncio.gather(*waiting)
    assert v.budget.inflight == 0
    assert v.refused[Refusal.MIRROR] == 17


# --- end to end: a flood from one network through the app -------------------------------------


@pytest.fixture
def geo(tmp_path: Path) -> GeoReader:
    db = city_db(tmp_path / "city.mmdb", {"145.100.0.0/16": CityRecord("NL", "EU", 52.37, 4.90)})
    return GeoReader.open(db)


async def started(
    aiohttp_client: ClientFactory, farm: Farm, geo: GeoReader
) -> TestClient[web.Request, web.Application]:
    now = time.time()
    blocks = ""
    for name, (cc, lat, lon) in {"near": ("NL", 52.37, 4.90), "far": ("US", 35.9, -79.0)}.items():
        farm.set_trace(name, now - 3600)
        blocks += (
            f'[[mirror]]\nname = "{name}"\nhttp = "{farm.url(name)}"\ncountry = "{cc}"\n'
            f"latitude = {lat}\nlongitude = {lon}\n\n"
        )
    farm.set_trace("master", now - 3600)
    settings = parse_settings(
        f'[redirector]\nmaster = "{farm.url("master")}"\npoll_interval = "1s"\n'
        f'probe_timeout = "1s"\nverify_timeout = "1s"\n'
        f'trusted_proxies = ["127.0.0.1/32"]\n\n{blocks}',
        "flood.toml",
    )
    client = await aiohttp_client(create_app(settings, geo=geo))
    deadline = time.monotonic() + 10
    while True:
        body = json.loads(await (await client.get("/health")).text())
        if body["mirrors"]["fresh"] == 2:
            return client
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


async def test_a_random_path_flood_from_one_network_causes_a_bounded_number_of_heads(
    aiohttp_client: ClientFactory, farm: Farm, geo: GeoReader
) -> None:
    client = await started(aiohttp_client, farm, geo)
    lim = Limits()
    farm.requests.clear()
    started_at = time.monotonic()
    rng = random.Random(9)
    statuses = []
    for i in range(300):
        resp = await client.get(
            f"/smeserver/contribs/x{rng.randrange(10**9)}/f{i}.tar.gz",
            headers={"X-Forwarded-For": f"145.100.1.{i % 250 + 1}"},
            allow_redirects=False,
        )
        statuses.append(resp.status)
    elapsed = time.monotonic() - started_at
    assert set(statuses) == {302}
    bound = lim.network_burst + elapsed * lim.network_per_minute / 60 + 1
    # The flood's HEADs: the network's burst plus its rate over the flood's duration, where
    # each request used to cost up to MAX_LOOKUPS (here 2 mirrors: 600).
    assert len(heads(farm)) <= bound < 300 * min(2, MAX_LOOKUPS), (len(heads(farm)), bound)
    verifier = client.app[keys.VERIFIER]
    assert verifier.refused[Refusal.NETWORK] > 0


async def test_a_flood_of_slow_heads_does_not_delay_another_clients_redirect(
    aiohttp_client: ClientFactory, farm: Farm, geo: GeoReader
) -> None:
    client = await started(aiohttp_client, farm, geo)

    def slow_heads(name: str) -> Callable[[web.Request, str], Awaitable[web.StreamResponse]]:
        async def behaviour(request: web.Request, rest: str) -> web.StreamResponse:
            if request.method == "HEAD":
                await asyncio.sleep(0.4)  # mirrors busy answering HEADs
                return web.Response(status=404)
            body = farm.files.get(f"{name}/{rest}")  # the poller's GETs: the traces
            return web.Response(body=body) if body is not None else web.Response(status=404)

        return behaviour

    farm.behaviours.update({n: slow_heads(n) for n in ("near", "far")})
    flood = [
        asyncio.create_task(
            client.get(
                f"/smeserver/contribs/flood/f{i}.tar.gz",
                headers={"X-Forwarded-For": f"145.100.1.{i % 250 + 1}"},
                allow_redirects=False,
            )
        )
        for i in range(300)
    ]
    await asyncio.sleep(0.1)  # the flood is under way
    async with aiohttp.ClientSession() as other:  # its own connections, as another client has
        t0 = time.monotonic()
        resp = await other.get(
            client.make_url("/smeserver/releases/10/iso/real.iso"),
            headers={"X-Forwarded-For": "145.100.7.7"},
            allow_redirects=False,
        )
    took = time.monotonic() - t0
    assert resp.status == 302
    # At most its own HEADs (two at 0.4 s); queued behind the flood's it took seconds.
    assert took < 1.2, took
    answers = await asyncio.gather(*flood)
    assert {r.status for r in answers} == {302}
