"""One poller among many processes: the lease in a real Redis, and two apps sharing it."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient

from redirector.config.settings import parse_settings
from redirector.poll.poller import PassResult
from redirector.store.lease import Lease
from redirector.store.memory import MemoryStore
from redirector.store.redis import RedisStore
from redirector.web import keys
from redirector.web.app import create_app
from tests.conftest import RedisServer
from tests.farm import MASTER_TRACE, Farm
from tests.support.clock import Clock

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


async def test_lease_is_held_by_one_and_expires() -> None:
    clock = Clock(0.0)
    store = MemoryStore(clock=clock)
    a, b = Lease(store, owner="a", ttl=30), Lease(store, owner="b", ttl=30)
    assert await a.confirm()
    assert not await b.confirm()
    assert (a.held, b.held) == (True, False)
    clock.t += 20
    assert await a.confirm()  # renewed for another 30 s
    clock.t += 20
    assert not await b.confirm()
    clock.t += 31  # a stopped renewing (hung, cut off): b takes over
    assert await b.confirm()
    assert not await a.confirm()
    assert not a.held  # and a knows it lost it
    await b.release()
    assert await store.lease_holder("poller") is None
    assert await a.confirm()


async def test_redis_lease_and_an_unreachable_store(
    redis_server: RedisServer, redis_url: str
) -> None:
    store = RedisStore(redis_url)
    try:
        a, b = Lease(store, ttl=5), Lease(store, ttl=5)
        assert a.owner != b.owner
        assert await a.confirm()
        assert not await b.confirm()
        assert await store.lease_holder("poller") == a.owner
        with redis_server.stopped():
            assert not await a.confirm()  # cannot prove it holds it: stops polling
            assert not a.held
        # Redis came back empty: whoever asks first takes it.
        assert await b.confirm()
        assert not await a.confirm()
        await a.release()  # not its lease: nothing happens
        assert await store.lease_holder("poller") == b.owner
        await b.release()
        assert await store.lease_holder("poller") is None
    finally:
        await store.close()


def config(farm: Farm, redis_url: str) -> str:
    return f"""
[redirector]
master = "{farm.url("master")}"
poll_interval = "100ms"
probe_timeout = "1s"
lease_ttl = "600ms"
redis_url = "{redis_url}"
geoip_db = ""

[[mirror]]
name = "m"
http = "{farm.url("m")}"
country = "NL"
latitude = 52.0
longitude = 5.0
"""


async def wait_until(cond: Callable[[], bool], what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def test_two_processes_share_redis_and_only_one_polls(
    aiohttp_client: ClientFactory, farm: Farm, redis_url: str
) -> None:
    now = time.time()
    farm.set_trace("master", now - 60)
    farm.set_trace("m", now - 60)
    settings = parse_settings(config(farm, redis_url), "lease.toml")
    passes: dict[str, list[PassResult]] = {"a": [], "b": []}

    def recorder(who: str) -> Callable[[aiohttp.ClientSession, PassResult], Awaitable[None]]:
        async def record(_: aiohttp.ClientSession, result: PassResult) -> None:
            passes[who].append(result)

        return record

    app_a = create_app(settings, pass_hooks=[recorder("a")])
    client_a = await aiohttp_client(app_a)
    await wait_until(lambda: len(passes["a"]) >= 1, "a polls")
    app_b = create_app(settings)
    app_b[keys.PASS_HOOKS].append(recorder("b"))  # the other way to register a hook
    client_b = await aiohttp_client(app_b)
    lease_a, lease_b = app_a[keys.LEASE], app_b[keys.LEASE]
    assert lease_a is not None
    assert lease_b is not None

    def master_hits() -> int:
        return sum(1 for t in farm.hits if t == "master/" + MASTER_TRACE)

    seen = len(passes["a"])
    await wait_until(lambda: len(passes["a"]) >= seen + 5, "a keeps polling")
    # Several renewals later: a still holds the lease, b never polled, and every request the
    # farm saw for the master's trace belongs to one of a's passes (one may be under way).
    store = RedisStore(redis_url)
    try:
        assert await store.lease_holder("poller") == lease_a.owner
        assert (lease_a.held, lease_b.held) == (True, False)
        assert passes["b"] == []
        assert master_hits() - len(passes["a"]) in (0, 1)
        # b serves from what a wrote.
        resp = await client_b.get("/health")
        assert (await resp.json())["mirrors"]["fresh"] == 1

        # a stops (a deploy, a crash): it releases the lease and b takes over.
        await client_a.close()
        stopped_at = len(passes["a"])
        await wait_until(lambda: len(passes["b"]) >= 2, "b takes over")
        assert await store.lease_holder("poller") == lease_b.owner
        assert len(passes["a"]) == stopped_at
    finally:
        await store.close()
        await client_b.close()


@pytest.mark.parametrize("ttl", [0.0, -1.0])
def test_lease_ttl_must_be_positive(ttl: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        Lease(MemoryStore(), ttl=ttl)


async def test_a_process_that_loses_the_lease_stops_polling(
    aiohttp_client: ClientFactory, farm: Farm, redis_url: str
) -> None:
    now = time.time()
    farm.set_trace("master", now - 60)
    farm.set_trace("m", now - 60)
    settings = parse_settings(config(farm, redis_url), "lease.toml")
    passes: list[PassResult] = []

    async def record(_: aiohttp.ClientSession, result: PassResult) -> None:
        passes.append(result)

    app = create_app(settings, pass_hooks=[record])
    await aiohttp_client(app)
    lease = app[keys.LEASE]
    assert lease is not None
    await wait_until(lambda: len(passes) >= 2, "polls")
    store = RedisStore(redis_url)
    try:
        # Another process holds it now (this one was cut off long enough for it to expire):
        # one atomic SET, so this process cannot renew in between.
        raw = aioredis.Redis.from_url(redis_url)
        try:
            await raw.set("redirector:lease:poller", "intruder", px=60_000)
        finally:
            await raw.aclose()
        await wait_until(lambda: not lease.held, "notices within a third of the ttl")
        await asyncio.sleep(0.1)  # a pass under way when it noticed may still end
        stopped = len(passes)
        await asyncio.sleep(0.5)  # five poll intervals
        assert len(passes) == stopped
        assert await store.lease_holder("poller") == "intruder"
    finally:
        await store.close()


async def test_redirector_poll_runs_alone_with_the_lease(
    farm: Farm, redis_url: str, tmp_path: Path
) -> None:
    now = time.time()
    farm.set_trace("master", now - 60)
    farm.set_trace("m", now - 60)
    cfg = tmp_path / "poll.toml"
    cfg.write_text(config(farm, redis_url))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "redirector.cli", "poll", "--config", str(cfg),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    store = RedisStore(redis_url)
    try:
        deadline = time.monotonic() + 20
        while "m" not in (await store.load()).states:
            assert time.monotonic() < deadline, "the poller wrote nothing"
            await asyncio.sleep(0.05)
        holder = await store.lease_holder("poller")
        assert holder is not None
        assert holder.split("/")[1] == str(proc.pid)
        proc.send_signal(signal.SIGTERM)  # systemd's stop: the lease is released on the way out
        _, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err.decode()
        assert await store.lease_holder("poller") is None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await store.close()
