"""Download statistics: the tally, the store's counters (both backends), batching, reading."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient

from redirector.stats import (
    DAY,
    DAYS_KEPT,
    HOUR,
    OTHER,
    StatsReader,
    Tally,
    batches,
    buckets_for,
    flush,
    read,
    subtree_of,
    summarize,
)
from redirector.store.base import Counts, Store, StoreError
from redirector.store.file import FileStore
from redirector.store.memory import MemoryStore
from redirector.store.redis import RedisStore
from redirector.web import keys
from redirector.web.app import create_app
from tests.conftest import RedisServer
from tests.support.clock import Clock
from tests.support.world import NL_CLIENT, REPOMD, STATUS, US_CLIENT, fill, geo

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]

NOW = 1_790_000_000.0  # 2026-09-21 14:13:20 UTC


@pytest.fixture(params=["memory", "redis", "file"])
async def store(
    request: pytest.FixtureRequest, clock: Clock, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[Store]:
    """Each backend: in-process, Redis, and the workers' shared file (filestore.py)."""
    if request.param == "memory":
        yield MemoryStore(clock=clock)
        return
    if request.param == "file":
        yield FileStore(tmp_path, clock=clock)
        return
    redis_server.flush()
    s = RedisStore(redis_server.url, timeout=2.0)
    try:
        yield s
    finally:
        await s.close()


# --- the tally and its batches (pure) -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "subtree"),
    [
        ("releases/10/smeos/x86_64/repodata/repomd.xml", "releases"),
        ("contribs/a/b.rpm", "contribs"),
        ("obsolete/6/iso/a.iso", "obsolete"),
        ("project/trace/mirror.contribs.org", "project"),
        ("", OTHER),
        ("made-up-by-a-client/x", OTHER),
        ("releases", "releases"),  # the directory itself
        ("releasesx/y", OTHER),
    ],
)
def test_subtree_of_is_bounded(path: str, subtree: str) -> None:
    assert subtree_of(path) == subtree


def test_tally_counts_and_batches_into_three_buckets() -> None:
    t = Tally()
    for _ in range(3):
        t.count("nluug", "NL", REPOMD)
    t.count("ibiblio", "US", "contribs/x.rpm")
    t.count(None, None, "whatever/x")  # the master, for a client of unknown country
    assert t.pending == 5
    got = {b.bucket: b for b in batches(t.take(), NOW)}
    assert t.pending == 0
    window = {"total": 5, "master": 1, "m:nluug": 3, "m:ibiblio": 1}
    assert got["5m:5966666"].fields == window
    assert got["5m:5966666"].ttl == 2 * HOUR
    assert got["h:497222"].fields == window
    assert got["d:2026-09-21"].fields == {
        **window, "c:NL": 3, "c:US": 1, "c:--": 1, "t:releases": 3, "t:contribs": 1, "t:other": 1,
    }  # fmt: skip
    assert got["d:2026-09-21"].ttl == DAYS_KEPT * DAY
    assert batches({}, NOW) == []


def test_put_back_merges() -> None:
    t = Tally()
    t.count("a", "NL", "releases/x")
    taken = t.take()
    t.count("a", "NL", "releases/y")
    t.put_back(taken)
    assert t.take() == {("a", "NL", "releases"): 2}


def test_summarize_windows_and_days() -> None:
    five, hours, days = buckets_for(NOW)
    assert (len(five), len(hours), len(days)) == (12, 24, 7)
    assert days[:2] == ["d:2026-09-21", "d:2026-09-20"]
    raw = {
        five[0]: {"total": 3, "master": 1, "m:a": 2},
        five[11]: {"total": 1, "m:b": 1},
        "5m:1": {"total": 100, "m:a": 100},  # long gone: not in the hour
        hours[0]: {"total": 4, "master": 1, "m:a": 2, "m:b": 1},
        hours[23]: {"total": 6, "m:b": 6},
        days[1]: {"total": 9, "master": 2, "m:a": 7, "c:NL": 8, "c:--": 1, "t:releases": 9},
    }
    s = summarize(raw, NOW)
    assert (s.hour.total, s.hour.master, dict(s.hour.mirrors)) == (4, 1, {"a": 2, "b": 1})
    assert s.hour.share("a") == 0.5
    assert (s.day.total, dict(s.day.mirrors)) == (10, {"a": 2, "b": 7})
    assert s.days[0].total == 0
    assert s.days[1].date == "2026-09-20"
    assert dict(s.days[1].countries) == {"NL": 8, "--": 1}
    assert dict(s.days[1].subtrees) == {"releases": 9}
    assert summarize({}, NOW).hour.share("a") is None


# --- the store's counters, one contract for both backends -----------------------------------


async def test_add_counts_adds_up(store: Store) -> None:
    await store.add_counts([Counts("d:x", 60, {"total": 2, "m:a": 2})])
    await store.add_counts(
        [Counts("d:x", 60, {"total": 1, "m:b": 1}), Counts("h:1", 60, {"total": 5})]
    )
    got = await store.get_counts(["d:x", "h:1", "h:missing"])
    assert got == {"d:x": {"total": 3, "m:a": 2, "m:b": 1}, "h:1": {"total": 5}, "h:missing": {}}
    await store.add_counts([])
    assert await store.get_counts([]) == {}


async def test_counts_do_not_bump_the_generation(store: Store) -> None:
    before = await store.generation()
    await store.add_counts([Counts("d:x", 60, {"total": 1})])
    assert await store.generation() == before


@pytest.mark.parametrize("ttl", [0.0, -1.0, float("inf"), float("nan")])
async def test_add_counts_refuses_bad_ttl(store: Store, ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await store.add_counts([Counts("d:x", ttl, {"total": 1})])


async def test_memory_counts_expire(clock: Clock) -> None:
    s = MemoryStore(clock=clock)
    await s.add_counts([Counts("5m:1", 10, {"total": 1})])
    clock.t += 9
    await s.add_counts([Counts("5m:1", 10, {"total": 1})])  # renews the expiry
    clock.t += 9
    assert await s.get_counts(["5m:1"]) == {"5m:1": {"total": 2}}
    clock.t += 2
    assert await s.get_counts(["5m:1"]) == {"5m:1": {}}


async def test_redis_counts_are_hashes_with_expiry(redis_url: str) -> None:
    s = RedisStore(redis_url, prefix="t:")
    raw = redis.Redis.from_url(redis_url)
    try:
        await s.add_counts([Counts("d:2026-09-21", 35 * DAY, {"total": 4, "c:NL": 4})])
        assert raw.type("t:stats:d:2026-09-21") == b"hash"
        assert raw.hgetall("t:stats:d:2026-09-21") == {b"total": b"4", b"c:NL": b"4"}
        assert 35 * DAY - 5 < raw.ttl("t:stats:d:2026-09-21") <= 35 * DAY
        # A junk count is dropped, not an error for every later read (and flush) for good.
        raw.hset("t:stats:d:bad", mapping={"total": "many", "c:NL": "2"})
        assert await s.get_counts(["d:bad"]) == {"d:bad": {"c:NL": 2}}
    finally:
        raw.close()
        await s.close()


# --- flushing --------------------------------------------------------------------------------


async def test_flush_writes_once_and_keeps_counts_on_failure(
    redis_server: RedisServer, redis_url: str
) -> None:
    s = RedisStore(redis_url, timeout=0.5)
    t = Tally()
    try:
        for _ in range(10):
            t.count("a", "NL", REPOMD)
        with redis_server.stopped():
            with pytest.raises(StoreError):
                await flush(t, s, NOW)
            assert t.pending == 10  # kept for the next try
            t.count("a", "NL", REPOMD)
        assert await flush(t, s, NOW) == 11
        assert t.pending == 0
        got = await read(s, NOW)
        assert got.days[0].total == 11
        assert dict(got.days[0].countries) == {"NL": 11}
        assert await flush(t, s, NOW) == 0
    finally:
        await s.close()


async def test_stats_reader_caches_and_survives_failures(
    redis_server: RedisServer, redis_url: str, clock: Clock
) -> None:
    s = RedisStore(redis_url, timeout=0.5)
    clock.t = NOW
    reader = StatsReader(s, clock=clock, max_age=5)
    try:
        t = Tally()
        t.count("a", "NL", REPOMD)
        await flush(t, s, NOW)
        assert (await reader.get()).hour.total == 1
        t.count("a", "NL", REPOMD)
        await flush(t, s, NOW)
        assert (await reader.get()).hour.total == 1  # cached
        clock.t += 6
        assert (await reader.get()).hour.total == 2
        clock.t += 6
        with redis_server.stopped():
            got = await reader.get()
        assert got.hour.total == 2  # the last figures, with the reason they are not newer
        assert got.error is not None
        assert got.error.startswith("redis get_counts")
    finally:
        await s.close()


# --- batching end to end: requests never touch the store one by one --------------------------


class CountingMemoryStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.add_calls = 0

    async def add_counts(self, batches: Iterable[Counts]) -> None:
        self.add_calls += 1
        await super().add_counts(batches)


async def send(client: TestClient[web.Request, web.Application], n: int) -> None:
    for i in range(n):
        ip = NL_CLIENT if i % 3 else US_CLIENT
        path = REPOMD if i % 2 else "contribs/x.rpm"
        resp = await client.get(
            "/smeserver/" + path, headers={"X-Forwarded-For": ip}, allow_redirects=False
        )
        assert resp.status == 302


async def test_memory_store_gets_batches_not_requests(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    store = CountingMemoryStore()
    await fill(store)
    app = create_app(STATUS.config(), poll=False, store=store, geo=geo(tmp_path))
    client = await aiohttp_client(app)
    await send(client, 300)
    await client.head("/smeserver/" + REPOMD, allow_redirects=False)  # not a download
    await client.get("/smeserver/x?mirrorlist", allow_redirects=False)  # not a download
    # Every flush is one call, whatever the number of requests since the last one.
    assert store.add_calls < 10
    now = time.time()
    await flush(app[keys.TALLY], app[keys.STORE], now)
    days = (await read(store, now)).days
    # Two days only if midnight passed during the test.
    assert sum(d.total for d in days) == 300
    assert sum(d.countries.get("NL", 0) for d in days) == 200
    assert sum(d.subtrees.get("contribs", 0) for d in days) == 150


def commandstats(port: int) -> dict[str, int]:
    """Calls per command since the server started, from INFO commandstats."""
    raw = redis.Redis(host="127.0.0.1", port=port)
    try:
        info = raw.info("commandstats")
    finally:
        raw.close()
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


async def test_redis_sees_batches_not_requests(
    aiohttp_client: ClientFactory, redis_server: RedisServer, redis_url: str, tmp_path: Path
) -> None:
    writer = RedisStore(redis_url)
    await fill(writer)
    await writer.close()
    app = create_app(
        STATUS.config(extra=f'redis_url = "{redis_url}"'), poll=False, geo=geo(tmp_path)
    )
    client = await aiohttp_client(app)
    before = commandstats(redis_server.port)
    await send(client, 500)
    during = commandstats(redis_server.port)
    # One request, one HINCRBY would be 1,500 or more (three buckets); a flush writes at most
    # 16 fields (3 buckets), once every 2 s.
    hincrby = during.get("hincrby", 0) - before.get("hincrby", 0)
    assert hincrby < 100, hincrby
    now = time.time()
    await flush(app[keys.TALLY], app[keys.STORE], now)
    after = commandstats(redis_server.port)
    # What was left went in one transaction (by this flush or a periodic one just before it).
    assert after["exec"] - during.get("exec", 0) == 1
    days = (await read(app[keys.STORE], now)).days
    assert sum(d.total for d in days) == 500
    assert sum(d.mirrors.get("nluug", 0) + d.mirrors.get("mirrorservice", 0) for d in days) > 0
