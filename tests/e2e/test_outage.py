"""Redis outages under load: the real redis-server stopped, started late, or flushed.

Two redirector apps share one Redis (as two processes or two machines would), both with the
poller enabled, so the lease decides which one polls. A paced load of redirects, mirror lists,
metalinks, health and status requests runs against both the whole time; every answer is kept.

CI stops Redis for a few seconds; the full version of the issue stops it for 30:

    REDIRECTOR_OUTAGE_SECONDS=30 python -m pytest tests/e2e/test_outage.py
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient

from redirector.config.settings import Settings, parse_settings
from redirector.poll.poller import PassResult
from redirector.store.lease import Lease
from redirector.store.redis import RedisStore
from redirector.web import keys
from redirector.web.app import create_app
from tests.conftest import RedisServer
from tests.farm import MASTER_TRACE, Farm, error_500, trace_c

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]

OUTAGE = float(os.environ.get("REDIRECTOR_OUTAGE_SECONDS", "4"))
FLOW_LIMIT = 5.0  # seconds from Redis answering again to the new state in every process
REPOMD = "releases/10/smeos/x86_64/repodata/repomd.xml"
CLIENTS = [f"198.51.{i}.7" for i in range(24)]  # one per /24: spread over both mirrors


def config(farm: Farm, redis_url: str) -> Settings:
    """Two mirrors, polled every second; the master answers in 0.4 s (see `slow_master`)."""
    mirrors = "".join(
        f'[[mirror]]\nname = "{n}"\nhttp = "{farm.url(n)}"\ncountry = "NL"\n'
        f"latitude = 52.0\nlongitude = 5.0\n\n"
        for n in ("a", "b")
    )
    return parse_settings(
        f"""
[redirector]
master = "{farm.url("master")}"
redis_url = "{redis_url}"
poll_interval = "1s"
probe_timeout = "2s"
lease_ttl = "900ms"
failures_before_down = 1
trusted_proxies = ["127.0.0.1/32"]
geoip_db = ""
verify_files = false
access_log = "off"
# The load's clients ask for views far more often than the views' budget allows (which
# test_viewbudget.py tests): they stand for exempt monitoring here.
views_exempt = ["198.51.0.0/16"]

{mirrors}""",
        "outage.toml",
    )


MASTER_DELAY = 0.4


def slow_master(date: float) -> Callable[[web.Request, str], Awaitable[web.StreamResponse]]:
    """The master's trace, after a pause: each pass takes that long before it writes, which
    leaves a window where a restarted or flushed Redis is empty and readers must not believe
    it (snapshot.lost_data)."""

    async def behave(request: web.Request, rest: str) -> web.StreamResponse:
        await asyncio.sleep(MASTER_DELAY)
        if rest == MASTER_TRACE:
            return web.Response(body=trace_c(date))
        return web.Response(status=404)

    return behave


def start_farm(farm: Farm) -> None:
    now = time.time()
    farm.behaviours["master"] = slow_master(now - 3600)
    for name in ("a", "b"):
        farm.set_trace(name, now - 3600)


@dataclass
class Answer:
    at: float  # time.monotonic() when the answer arrived
    app: int
    kind: str
    status: int
    location: str


# (kind, path and query, expected status); redirects rotate over CLIENTS.
MIX: Sequence[tuple[str, str, int]] = (
    ("redirect", "/smeserver/" + REPOMD, 302),
    ("redirect", "/smeserver/releases/10/smeos/x86_64/Packages/a.rpm", 302),
    ("mirrorlist", "/mirrorlist/smeos-10", 200),
    ("redirect", "/pub/smeserver/" + REPOMD, 302),
    ("metalink", "/metalink?repo=smeos-10&arch=x86_64", 200),
    ("health", "/health", 200),
    ("redirect", "/smeserver/contribs/x.tar.gz", 302),
    ("status", "/mirrors.json", 200),
    ("explain", "/smeserver/" + REPOMD + "?mirrorlist&json", 200),
)


@dataclass
class Load:
    """Paced clients against every app until stopped: steady load, not a flood, so that the
    apps' own tasks (lease, poller, snapshot) share the loop as in production."""

    bases: Sequence[str]
    workers_per_app: int = 2
    pause: float = 0.01
    answers: list[Answer] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def __aenter__(self) -> Load:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._tasks = [
            asyncio.create_task(self._worker(i, w))
            for i in range(len(self.bases))
            for w in range(self.workers_per_app)
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._session.close()

    async def _worker(self, app: int, seed: int) -> None:
        n = seed
        while not self._stop.is_set():
            kind, target, expected = MIX[n % len(MIX)]
            client = CLIENTS[n % len(CLIENTS)]
            n += 1
            try:
                async with self._session.get(
                    self.bases[app] + target,
                    headers={"X-Forwarded-For": client},
                    allow_redirects=False,
                ) as resp:
                    await resp.read()
                    loc = resp.headers.get("Location", "")
                    self.answers.append(Answer(time.monotonic(), app, kind, resp.status, loc))
                    # A metalink is a 404 while no master repomd.xml is known (Redis lost it,
                    # or the repodata pass has not run yet): never one without hashes.
                    unverifiable = kind == "metalink" and resp.status == 404
                    if resp.status != expected and not unverifiable:
                        self.failures.append(f"{kind} {target}: HTTP {resp.status}")
            except (aiohttp.ClientError, TimeoutError) as e:
                self.failures.append(f"{kind} {target}: {type(e).__name__}: {e}")
            await asyncio.sleep(self.pause)

    def redirects(self, since: float = 0.0, until: float = float("inf")) -> list[Answer]:
        return [a for a in self.answers if a.kind == "redirect" and since <= a.at < until]


async def json_of(
    client: TestClient[web.Request, web.Application], path: str
) -> tuple[int, dict[str, Any]]:
    resp = await client.get(path)
    return resp.status, await resp.json()


async def wait_until(
    check: Callable[[], Awaitable[bool]], what: str, seconds: float = 10.0
) -> float:
    """Poll `check` every 20 ms; the monotonic time it first held."""
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"not within {seconds:g} s: {what}"
        await asyncio.sleep(0.02)
    return time.monotonic()


async def fresh_everywhere(
    clients: Sequence[TestClient[web.Request, web.Application]], n: int
) -> bool:
    for c in clients:
        _, body = await json_of(c, "/health")
        if body["mirrors"]["fresh"] != n:
            return False
    return True


@contextlib.contextmanager
def recorded(apps: Sequence[web.Application]) -> Iterator[list[list[PassResult]]]:
    """Each app's written poller passes, in order."""
    passes: list[list[PassResult]] = [[] for _ in apps]
    for i, app in enumerate(apps):

        async def record(_: aiohttp.ClientSession, result: PassResult, i: int = i) -> None:
            passes[i].append(result)

        app[keys.PASS_HOOKS].append(record)
    yield passes


def leases(apps: Sequence[web.Application]) -> list[Lease]:
    out = []
    for app in apps:
        lease = app[keys.LEASE]
        assert lease is not None
        out.append(lease)
    return out


async def one_holder(apps: Sequence[web.Application], redis_url: str) -> str:
    """Exactly one app holds the poller lease, and Redis agrees; its owner id."""
    held = [lease for lease in leases(apps) if lease.held]
    assert len(held) == 1, [lease.held for lease in leases(apps)]
    store = RedisStore(redis_url)
    try:
        assert await store.lease_holder("poller") == held[0].owner
    finally:
        await store.close()
    return held[0].owner


async def steady_holder(apps: Sequence[web.Application], redis_url: str) -> None:
    """The same single holder across several renewals (the ttl is 0.9 s, renewed every 0.3 s)."""
    owners = set()
    for _ in range(8):
        owners.add(await one_holder(apps, redis_url))
        await asyncio.sleep(0.2)
    assert len(owners) == 1, owners


async def start_pair(
    aiohttp_client: ClientFactory, settings: Settings
) -> tuple[list[web.Application], list[TestClient[web.Request, web.Application]]]:
    apps = [create_app(settings), create_app(settings)]
    clients = [await aiohttp_client(app) for app in apps]
    return apps, clients


# --- a Redis outage under load ---------------------------------------------------------------


@pytest.mark.timeout(OUTAGE + 50)
async def test_redis_outage_under_load(
    aiohttp_client: ClientFactory, farm: Farm, redis_server: RedisServer, redis_url: str
) -> None:
    start_farm(farm)
    settings = config(farm, redis_url)
    apps, clients = await start_pair(aiohttp_client, settings)
    with recorded(apps) as passes:
        await wait_until(lambda: fresh_everywhere(clients, 2), "both mirrors fresh everywhere")
        bases = [str(c.make_url("")).rstrip("/") for c in clients]
        mirror_bases = (farm.url("a"), farm.url("b"))
        async with Load(bases) as load:
            await asyncio.sleep(1.0)
            await asyncio.to_thread(redis_server.stop)
            down_at = time.monotonic()
            try:
                # Nobody can poll without the store: the mirror "b" failing now goes unseen
                # until Redis is back, and every process keeps serving its last snapshot.
                farm.behaviours["b"] = error_500
                readiness: list[tuple[int, str]] = []
                settled: list[int] | None = None  # passes written, once one in flight ended
                while time.monotonic() - down_at < OUTAGE:
                    if settled is None and time.monotonic() - down_at > 1.5:
                        settled = [len(p) for p in passes]
                    for c in clients:
                        status, body = await json_of(c, "/health/ready")
                        readiness.append((status, body["status"]))
                    await asyncio.sleep(0.25)
                assert set(readiness) == {(200, "degraded")}, readiness
                for c in clients:
                    _, health = await json_of(c, "/health")
                    assert health["store"]["ok"] is False
                    assert health["mirrors"]["fresh"] == 2  # the last snapshot
                assert not any(lease.held for lease in leases(apps))
                assert settled is None or [len(p) for p in passes] == settled  # none polled
            finally:
                await asyncio.to_thread(redis_server.start)
            back_at = time.monotonic()
            outage = load.redirects(down_at, back_at)
            assert {a.location.split("/")[3] for a in outage} == {"a", "b"}  # both, as before

            # Redis is back (empty: no persistence). One process takes the lease, polls, and
            # every process sees "b" gone within FLOW_LIMIT seconds.
            flowed_at = await wait_until(
                lambda: fresh_everywhere(clients, 1), "the new state in every process", 15
            )
            assert flowed_at - back_at <= FLOW_LIMIT, f"took {flowed_at - back_at:.1f} s"
            await steady_holder(apps, redis_url)
            counts = [len(p) for p in passes]
            await asyncio.sleep(2.5)  # two passes
            grew = [len(p) > c for p, c in zip(passes, counts, strict=True)]
            assert sorted(grew) == [False, True]  # only the holder polls
            for c in clients:
                status, body = await json_of(c, "/health/ready")
                assert (status, body["status"]) == (200, "ready")
            flowed = time.monotonic()
            await asyncio.sleep(0.5)

    assert load.failures == [], load.failures[:20]
    assert len(load.answers) > 200
    assert all(a.location.startswith(mirror_bases) for a in load.redirects())  # never the master
    assert all(a.location.startswith(farm.url("a")) for a in load.redirects(since=flowed))


# --- Redis not up when the redirector starts -------------------------------------------------


async def test_starting_without_redis_serves_the_master_and_catches_up(
    aiohttp_client: ClientFactory, farm: Farm, redis_server: RedisServer, redis_url: str
) -> None:
    start_farm(farm)
    settings = config(farm, redis_url)
    await asyncio.to_thread(redis_server.stop)
    try:
        apps, clients = await start_pair(aiohttp_client, settings)  # starts all the same
        bases = [str(c.make_url("")).rstrip("/") for c in clients]
        async with Load(bases) as load:
            await asyncio.sleep(1.0)
            for c in clients:
                status, health = await json_of(c, "/health")
                assert status == 200
                assert health["store"]["ok"] is False
                assert health["mirrors"] == {"configured": 2, "enabled": 2, "fresh": 0}
            # The configured mirrors, none checked yet: everyone goes to the master.
            assert load.redirects()
            assert all(a.location.startswith(farm.url("master")) for a in load.redirects())
            assert not any(lease.held for lease in leases(apps))
            await asyncio.to_thread(redis_server.start)
            back_at = time.monotonic()
            await wait_until(lambda: fresh_everywhere(clients, 2), "caught up", 15)
            caught_up = time.monotonic()
            await steady_holder(apps, redis_url)
            await asyncio.sleep(0.5)
    finally:
        await asyncio.to_thread(redis_server.start)
    assert load.failures == [], load.failures[:20]
    assert caught_up - back_at <= FLOW_LIMIT
    after = load.redirects(since=caught_up + 0.5)
    assert after
    assert {a.location.split("/")[3] for a in after} == {"a", "b"}


# --- Redis flushed while running -------------------------------------------------------------


async def test_redis_flushed_while_running(
    aiohttp_client: ClientFactory, farm: Farm, redis_url: str
) -> None:
    start_farm(farm)
    settings = config(farm, redis_url)
    apps, clients = await start_pair(aiohttp_client, settings)
    await wait_until(lambda: fresh_everywhere(clients, 2), "both mirrors fresh everywhere")
    generations = [app[keys.HOLDER].current.generation for app in apps]
    bases = [str(c.make_url("")).rstrip("/") for c in clients]
    store = RedisStore(redis_url)
    raw = aioredis.Redis.from_url(redis_url)
    try:
        async with Load(bases) as load:
            await asyncio.sleep(0.5)
            await raw.flushall()  # an operator's mistake, or a failover to an empty replica
            flushed_at = time.monotonic()

            async def rewritten() -> bool:
                data = await store.load()
                return len(data.states) == 2 and data.master is not None

            await wait_until(rewritten, "the poller writes everything again", FLOW_LIMIT)
            await wait_until(
                lambda: _all_moved(apps, generations), "every process loads it", FLOW_LIMIT
            )
            assert time.monotonic() - flushed_at <= FLOW_LIMIT
            await steady_holder(apps, redis_url)
            for c in clients:
                status, body = await json_of(c, "/health/ready")
                assert (status, body["status"]) == (200, "ready")
    finally:
        await raw.aclose()
        await store.close()
    assert load.failures == [], load.failures[:20]
    # Between the flush and the poller's next write, the last snapshot served: no client
    # was sent to the master for want of state.
    redirects = load.redirects()
    assert redirects
    assert all(a.location.startswith((farm.url("a"), farm.url("b"))) for a in redirects)


async def _all_moved(apps: Sequence[web.Application], before: Sequence[int]) -> bool:
    now = [app[keys.HOLDER].current.generation for app in apps]
    return all(n != b for n, b in zip(now, before, strict=True)) and all(
        c.state is not None for app in apps for c in app[keys.HOLDER].current.candidates
    )
