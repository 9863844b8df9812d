"""Tests for redirector.store: one contract suite for the three stores, then Redis-only cases."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import RedisError

from redirector.core.models import MasterState, MasterVersion, MirrorState, Status
from redirector.store import open_store
from redirector.store.base import Counts, Store, StoreError
from redirector.store.codec import (
    POISONED_GENERATION,
    decode_master,
    decode_state,
    encode_master,
    encode_state,
)
from redirector.store.file import FileStore
from redirector.store.memory import MemoryStore
from redirector.store.redis import RedisStore
from tests.conftest import RedisServer, free_port
from tests.support.clock import Clock

Elapse = Callable[[float], Awaitable[None]]


def full_state(name: str, status: Status = Status.UP) -> MirrorState:
    return MirrorState(
        name=name,
        status=status,
        checked_at=1_700_000_000.25,
        master_date=1_699_999_000.5,
        behind_since=1_699_999_500.0,
        own_date=1_699_998_000.75,
        error="HTTP 503",
        failures=3,
        lacks=("7/", "contribs/"),
    )


def bare_state(name: str) -> MirrorState:
    return MirrorState(name=name, status=Status.UNKNOWN, checked_at=0.0)


MASTER = MasterState(
    history=(
        MasterVersion(date=1_699_990_000.0, first_seen=1_699_990_060.5),
        MasterVersion(date=1_700_000_000.0, first_seen=1_700_000_030.0),
    ),
    checked_at=1_700_000_100.0,
    error=None,
)


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis", "file"])
async def store(
    request: pytest.FixtureRequest, clock: Clock, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[Store]:
    """Each backend in turn, empty."""
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


@pytest.fixture
def elapse(store: Store, clock: Clock) -> Elapse:
    """Let `seconds` pass for the store's lease expiry: the fake clock, or real time in Redis."""

    async def advance(seconds: float) -> None:
        clock.t += seconds

    return advance if isinstance(store, MemoryStore | FileStore) else asyncio.sleep


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisStore]:
    s = RedisStore(redis_url, timeout=1.0)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client on the same database, to plant data behind the store's back."""
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


# --- serialization -------------------------------------------------------------------------


@pytest.mark.parametrize("status", list(Status))
def test_state_round_trips_every_status(status: Status) -> None:
    s = full_state("m", status)
    assert decode_state(encode_state(s)) == s
    assert decode_state(encode_state(s).encode()) == s


def test_state_round_trips_defaults() -> None:
    s = bare_state("m")
    assert decode_state(encode_state(s)) == s


def test_state_json_is_versioned_and_status_by_value() -> None:
    obj = json.loads(encode_state(full_state("m", Status.SYNCING)))
    assert obj["v"] == 1
    assert obj["status"] == "syncing"
    assert obj["lacks"] == ["7/", "contribs/"]


def test_decode_ignores_unknown_keys_and_fills_defaults() -> None:
    raw = json.dumps(
        {"v": 1, "name": "m", "status": "down", "checked_at": 5, "from_the_future": {"x": 1}}
    )
    assert decode_state(raw) == MirrorState(name="m", status=Status.DOWN, checked_at=5.0)
    master = json.dumps({"v": 1, "history": [], "checked_at": 1, "extra": True})
    assert decode_master(master) == MasterState(history=(), checked_at=1.0)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not json",
        b"\xff\xfe",
        "[]",
        "null",
        '{"name": "m", "status": "up", "checked_at": 1}',  # no version
        '{"v": 2, "name": "m", "status": "up", "checked_at": 1}',
        '{"v": 1, "status": "up", "checked_at": 1}',
        '{"v": 1, "name": "m", "status": "sideways", "checked_at": 1}',
        '{"v": 1, "name": "m", "status": "up"}',
        '{"v": 1, "name": "m", "status": "up", "checked_at": "yesterday"}',
        '{"v": 1, "name": "m", "status": "up", "checked_at": true}',
        '{"v": 1, "name": "m", "status": "up", "checked_at": NaN}',
        '{"v": 1, "name": "m", "status": "up", "checked_at": 1, "failures": 1.5}',
        '{"v": 1, "name": "m", "status": "up", "checked_at": 1, "failures": -1}',
        '{"v": 1, "name": "m", "status": "up", "checked_at": 1, "lacks": "7/"}',
        '{"v": 1, "name": "m", "status": "up", "checked_at": 1, "lacks": [7]}',
        '{"v": 1, "name": "m", "status": "up", "checked_at": 1, "error": 503}',
        '{"v": 1, "name": 5, "status": "up", "checked_at": 1}',
    ],
)
def test_decode_state_rejects_garbage(raw: str | bytes) -> None:
    with pytest.raises(StoreError):
        decode_state(raw)


def test_master_round_trips() -> None:
    assert decode_master(encode_master(MASTER)) == MASTER
    failed = MasterState(history=(), checked_at=2.0, error="timeout")
    assert decode_master(encode_master(failed)) == failed


@pytest.mark.parametrize(
    "raw",
    [
        "{",
        '{"v": 1, "history": {}, "checked_at": 1}',
        '{"v": 1, "history": [[1, 2]], "checked_at": 1}',
        '{"v": 1, "history": [{"date": 1}], "checked_at": 1}',
        '{"v": 1, "history": []}',
        '{"v": 3, "history": [], "checked_at": 1}',
    ],
)
def test_decode_master_rejects_garbage(raw: str) -> None:
    with pytest.raises(StoreError):
        decode_master(raw)


def test_encode_refuses_nan() -> None:
    with pytest.raises(StoreError):
        encode_state(MirrorState(name="m", status=Status.UP, checked_at=float("nan")))


def test_open_store_picks_backend_without_connecting() -> None:
    assert open_store(None).kind == "memory"
    assert isinstance(open_store(None), MemoryStore)
    s = open_store(f"redis://127.0.0.1:{free_port()}/0", prefix="x:")
    assert isinstance(s, RedisStore)
    assert s.kind == "redis"
    assert s.prefix == "x:"


# --- the contract, against every store ----------------------------------------------------


async def test_empty_load(store: Store) -> None:
    data = await store.load()
    assert dict(data.states) == {}
    assert data.master is None
    assert data.generation == 0
    assert await store.generation() == 0


async def test_states_round_trip_every_field(store: Store) -> None:
    states = [full_state(f"m-{s.value}", s) for s in Status] + [bare_state("bare")]
    await store.put_states(states)
    data = await store.load()
    assert dict(data.states) == {s.name: s for s in states}


async def test_put_states_upserts(store: Store) -> None:
    await store.put_states([full_state("a"), full_state("b")])
    newer = bare_state("a")
    await store.put_states([newer, full_state("c")])
    data = await store.load()
    assert dict(data.states) == {"a": newer, "b": full_state("b"), "c": full_state("c")}


async def test_forget_drops_only_named(store: Store) -> None:
    await store.put_states([full_state("a"), full_state("b"), full_state("c")])
    await store.forget(["a", "c", "never-there"])
    assert dict((await store.load()).states) == {"b": full_state("b")}


async def test_master_round_trip(store: Store) -> None:
    await store.put_master(MASTER)
    assert (await store.load()).master == MASTER
    failed = MasterState(history=MASTER.history, checked_at=9.0, error="HTTP 500")
    await store.put_master(failed)
    assert (await store.load()).master == failed


async def test_generation_changes_on_every_write_only(store: Store) -> None:
    seen = [await store.generation()]

    async def assert_changed() -> None:
        gen = await store.generation()
        assert gen not in seen
        assert (await store.load()).generation == gen
        seen.append(gen)

    async def assert_stable() -> None:
        assert await store.generation() == seen[-1]
        assert (await store.load()).generation == seen[-1]

    await assert_stable()  # reading is not writing
    await store.put_states([full_state("a")])
    await assert_changed()
    await store.put_states([full_state("a")])  # same content is still a write
    await assert_changed()
    await store.put_states([full_state("b"), full_state("c")])
    await assert_changed()
    await store.put_master(MASTER)
    await assert_changed()
    await store.forget(["b"])
    await assert_changed()
    await store.put_states([])
    await assert_stable()
    await store.forget(["nobody"])
    await assert_stable()
    await store.forget([])
    await assert_stable()
    assert await store.acquire_lease("poller", "x", 5.0)
    await store.release_lease("poller", "x")
    await assert_stable()  # leases are not data


async def test_put_states_bumps_generation_once(store: Store) -> None:
    await store.put_master(MASTER)  # Redis seeds the counter on the first write
    before = await store.generation()
    await store.put_states([full_state(f"m{i}") for i in range(5)])
    assert await store.generation() == before + 1


async def test_lease_first_owner_wins_and_renews(store: Store) -> None:
    assert await store.lease_holder("poller") is None
    assert await store.acquire_lease("poller", "a", 5.0)
    assert not await store.acquire_lease("poller", "b", 5.0)
    assert await store.acquire_lease("poller", "a", 5.0)
    assert await store.lease_holder("poller") == "a"
    assert await store.acquire_lease("other", "b", 5.0)  # leases are independent
    assert await store.lease_holder("other") == "b"


async def test_lease_expires_and_old_owner_cannot_renew(store: Store, elapse: Elapse) -> None:
    assert await store.acquire_lease("poller", "a", 0.2)
    await elapse(0.3)
    assert await store.lease_holder("poller") is None
    assert await store.acquire_lease("poller", "b", 5.0)
    assert not await store.acquire_lease("poller", "a", 0.2)
    assert await store.lease_holder("poller") == "b"


async def test_renewal_extends_the_lease(store: Store, elapse: Elapse) -> None:
    assert await store.acquire_lease("poller", "a", 1.0)
    await elapse(0.6)
    assert await store.acquire_lease("poller", "a", 1.0)
    await elapse(0.6)  # past the first expiry, well within the renewed one
    assert await store.lease_holder("poller") == "a"
    assert not await store.acquire_lease("poller", "b", 1.0)


async def test_release(store: Store) -> None:
    assert await store.acquire_lease("poller", "a", 5.0)
    await store.release_lease("poller", "b")  # not the holder: nothing happens
    assert await store.lease_holder("poller") == "a"
    await store.release_lease("poller", "a")
    assert await store.lease_holder("poller") is None
    assert await store.acquire_lease("poller", "b", 5.0)
    await store.release_lease("nobody-holds-this", "a")


async def test_release_after_expiry_does_not_free_the_new_holder(
    store: Store, elapse: Elapse
) -> None:
    assert await store.acquire_lease("poller", "a", 0.2)
    await elapse(0.3)
    assert await store.acquire_lease("poller", "b", 5.0)
    await store.release_lease("poller", "a")
    assert await store.lease_holder("poller") == "b"


@pytest.mark.parametrize("ttl", [0.0, -1.0, float("nan"), float("inf")])
async def test_lease_ttl_must_be_positive(store: Store, ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await store.acquire_lease("poller", "a", ttl)


async def test_ping_and_close(store: Store) -> None:
    await store.ping()


async def test_load_snapshot_is_not_live(store: Store) -> None:
    await store.put_states([full_state("a")])
    data = await store.load()
    await store.put_states([full_state("b")])
    assert set(data.states) == {"a"}


# --- Redis only ----------------------------------------------------------------------------

_UNREACHABLE_CALLS: list[tuple[str, Callable[[RedisStore], Awaitable[object]]]] = [
    ("ping", lambda s: s.ping()),
    ("load", lambda s: s.load()),
    ("generation", lambda s: s.generation()),
    ("put_states", lambda s: s.put_states([full_state("a")])),
    ("put_master", lambda s: s.put_master(MASTER)),
    ("forget", lambda s: s.forget(["a"])),
    ("acquire_lease", lambda s: s.acquire_lease("poller", "a", 1.0)),
    ("release_lease", lambda s: s.release_lease("poller", "a")),
    ("lease_holder", lambda s: s.lease_holder("poller")),
]


async def assert_store_error(call: Awaitable[object], within: float) -> StoreError:
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        await call
    assert time.monotonic() - started < within
    assert not isinstance(info.value, RedisError)
    return info.value


@pytest.mark.parametrize(("op", "call"), _UNREACHABLE_CALLS, ids=[c[0] for c in _UNREACHABLE_CALLS])
async def test_closed_port_raises_store_error(
    op: str, call: Callable[[RedisStore], Awaitable[object]]
) -> None:
    s = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)  # must not connect
    try:
        err = await assert_store_error(call(s), within=1.5)
        assert str(err).startswith(f"redis {op}:")
    finally:
        await s.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


async def test_silent_server_times_out_as_store_error(silent_port: int) -> None:
    s = RedisStore(f"redis://127.0.0.1:{silent_port}/0", timeout=0.3)
    try:
        await assert_store_error(s.ping(), within=1.5)
        await assert_store_error(s.load(), within=1.5)
    finally:
        await s.close()


async def test_outage_and_recovery(redis_server: RedisServer, redis_store: RedisStore) -> None:
    await redis_store.put_states([full_state("a")])
    await redis_store.put_master(MASTER)
    before = await redis_store.generation()
    with redis_server.stopped():
        await assert_store_error(redis_store.ping(), within=3.0)
        await assert_store_error(redis_store.load(), within=3.0)
        await assert_store_error(redis_store.put_states([full_state("b")]), within=3.0)
        await assert_store_error(redis_store.acquire_lease("poller", "a", 1.0), within=3.0)
    # The same store recovers on its own; the restarted server lost everything (no persistence),
    # which reads as empty at generation 0 until the poller writes again.
    await redis_store.ping()
    data = await redis_store.load()
    assert (dict(data.states), data.master, data.generation) == ({}, None, 0)
    await redis_store.put_states([full_state("b")])
    assert await redis_store.generation() > before  # a reset never brings an old value back
    assert await redis_store.acquire_lease("poller", "a", 1.0)


async def test_flush_while_running_reads_as_empty(
    redis_store: RedisStore, raw: redis.Redis
) -> None:
    await redis_store.put_states([full_state("a")])
    await redis_store.put_master(MASTER)
    raw.flushdb()
    data = await redis_store.load()
    assert (dict(data.states), data.master, data.generation) == ({}, None, 0)
    assert await redis_store.generation() == 0


async def test_prefixes_isolate_stores(redis_url: str) -> None:
    one = RedisStore(redis_url, prefix="one:")
    two = RedisStore(redis_url, prefix="two:")
    try:
        await one.put_states([full_state("a")])
        await one.put_master(MASTER)
        assert await one.acquire_lease("poller", "x", 5.0)
        assert await two.acquire_lease("poller", "y", 5.0)
        await two.put_states([full_state("b")])
        await two.forget(["a"])
        assert set((await one.load()).states) == {"a"}
        assert (await one.load()).master == MASTER
        assert set((await two.load()).states) == {"b"}
        assert (await two.load()).master is None
        gen_one = await one.generation()
        await two.put_master(MASTER)
        assert await one.generation() == gen_one
        assert await one.lease_holder("poller") == "x"
        assert await two.lease_holder("poller") == "y"
    finally:
        await one.close()
        await two.close()


async def test_key_schema(redis_store: RedisStore, raw: redis.Redis) -> None:
    started_us = time.time_ns() // 1000
    await redis_store.put_states([full_state("a")])
    await redis_store.put_master(MASTER)
    assert await redis_store.acquire_lease("poller", "me", 5.0)
    assert sorted(raw.keys()) == [
        b"redirector:gen",
        b"redirector:lease:poller",
        b"redirector:master",
        b"redirector:states",
    ]
    assert decode_state(raw.hget("redirector:states", "a") or b"") == full_state("a")
    # seeded with the wall clock in microseconds, then one INCR per write
    assert started_us + 2 <= int(raw.get("redirector:gen") or 0) <= time.time_ns() // 1000 + 2
    assert raw.get("redirector:lease:poller") == b"me"
    assert 0 < raw.pttl("redirector:lease:poller") <= 5000


@pytest.mark.parametrize(
    ("key", "field", "value"),
    [
        ("redirector:states", "a", "not json"),
        ("redirector:states", "a", '{"v": 1, "name": "a"}'),
        ("redirector:states", "a", b"\xff"),
        ("redirector:states", b"\xff", encode_state(full_state("a"))),
        ("redirector:states", "b", encode_state(full_state("a"))),  # filed under another name
        ("redirector:master", None, "{garbage"),
        ("redirector:gen", None, "seven"),
    ],
)
async def test_garbage_in_redis_is_dropped_listed_and_repaired(
    redis_store: RedisStore,
    raw: redis.Redis,
    key: str,
    field: str | bytes | None,
    value: str | bytes,
) -> None:
    # One bad value used to fail every load for good: no reader got past it, and no writer
    # replaced what it could not read. Now it costs only itself, until the next write.
    await redis_store.put_states([full_state("good")])
    if field is None:
        raw.set(key, value)
    else:
        raw.hset(key, field, value)
    data = await redis_store.load()
    assert data.states.get("good") == full_state("good")
    assert [p.key for p in data.poisoned] == [key.removeprefix("redirector:")]
    assert data.poisoned_states() <= {"a", "b", b"\xff".decode("utf-8", "surrogateescape")}
    # what the poller does each pass: write every state and the master, forget the unreadable
    await redis_store.put_states([full_state("a")])
    await redis_store.put_master(MASTER)
    await redis_store.forget(data.poisoned_states() - {"a"})
    repaired = await redis_store.load()
    assert repaired.poisoned == ()
    assert repaired.master == MASTER
    assert repaired.generation > 0


async def test_garbage_generation_reads_as_poisoned_until_the_next_write(
    redis_store: RedisStore, raw: redis.Redis
) -> None:
    raw.set("redirector:gen", "seven")
    assert await redis_store.generation() == POISONED_GENERATION
    assert (await redis_store.load()).generation == POISONED_GENERATION
    await redis_store.put_master(MASTER)
    assert await redis_store.generation() > 0


@pytest.mark.parametrize(
    "key", ["redirector:states", "redirector:master", "redirector:gen", "redirector:repodata"]
)
async def test_a_key_of_the_wrong_type_is_dropped_and_replaced(
    redis_store: RedisStore, raw: redis.Redis, key: str
) -> None:
    raw.delete(key)
    raw.rpush(key, "junk")  # a list where the schema has a hash or a string
    data = await redis_store.load()
    assert [p.key for p in data.poisoned] == [key.removeprefix("redirector:")]
    await redis_store.put_states([full_state("a")])
    await redis_store.put_master(MASTER)
    repaired = await redis_store.load()
    assert repaired.states == {"a": full_state("a")}
    assert repaired.master == MASTER
    assert [p.key for p in repaired.poisoned] == (["repodata"] if "repodata" in key else [])


async def test_a_lease_of_the_wrong_type_or_without_expiry_is_taken(
    redis_store: RedisStore, raw: redis.Redis
) -> None:
    raw.rpush("redirector:lease:poller", "junk")
    assert await redis_store.lease_holder("poller") is None
    assert await redis_store.acquire_lease("poller", "me", 5.0)
    raw.set("redirector:lease:poller", "stray")  # no PX: it would be held for ever
    assert await redis_store.acquire_lease("poller", "me", 5.0)
    assert await redis_store.lease_holder("poller") == "me"


@pytest.mark.parametrize(
    ("date", "where"),
    [(1e308, "first_seen"), (4_102_444_800.0, "date"), (100.0, "date")],  # 1e308, 2100, 1970
)
async def test_master_dates_out_of_range_are_dropped(
    redis_store: RedisStore, raw: redis.Redis, date: float, where: str
) -> None:
    history = [{"date": 1_700_000_000.0, "first_seen": 1_700_000_000.0}]
    history[0][where] = date
    if where == "date":
        history[0]["first_seen"] = min(date, time.time())
    raw.set(
        "redirector:master",
        json.dumps({"v": 1, "history": history, "checked_at": time.time(), "error": None}),
    )
    data = await redis_store.load()
    assert data.master is None
    assert [p.key for p in data.poisoned] == ["master"]


async def test_counts_with_junk_still_add_up(redis_store: RedisStore, raw: redis.Redis) -> None:
    raw.hset("redirector:stats:d", mapping={"n": "junk", "m": "2"})
    assert await redis_store.get_counts(["d"]) == {"d": {"m": 2}}
    await redis_store.add_counts([Counts("d", 60, {"n": 1, "m": 1})])
    assert await redis_store.get_counts(["d"]) == {"d": {"n": 1, "m": 3}}
    raw.delete("redirector:stats:d")
    raw.set("redirector:stats:d", "junk")
    await redis_store.add_counts([Counts("d", 60, {"n": 1})])
    assert await redis_store.get_counts(["d"]) == {"d": {"n": 1}}
