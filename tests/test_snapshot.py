"""Snapshots over a real Redis: changes show within 2 s, and an outage keeps the last one."""

from __future__ import annotations

import asyncio
import contextlib
import time

from redirector.core.models import Mirror, MirrorState, Status
from redirector.snapshot import SnapshotHolder, refresh_forever
from redirector.store.redis import RedisStore
from tests.conftest import RedisServer

MIRRORS = (
    Mirror("a", "http://a.test/", None, "NL", 52.0, 5.0),
    Mirror("b", "http://b.test/", None, "US", 35.0, -79.0),
)


def up(name: str) -> MirrorState:
    return MirrorState(name, Status.UP, time.time(), master_date=1.0)


async def test_a_write_in_one_process_shows_in_another_within_2s(redis_url: str) -> None:
    writer, reader = RedisStore(redis_url), RedisStore(redis_url)
    holder = SnapshotHolder(MIRRORS)
    task = asyncio.create_task(refresh_forever(holder, reader, 0.5))
    try:
        await asyncio.sleep(0.1)
        assert all(c.state is None for c in holder.current.candidates)
        await writer.put_states([up("a")])
        written = time.monotonic()
        while holder.current.candidates[0].state is None:
            assert time.monotonic() - written < 2.0
            await asyncio.sleep(0.02)
        seen = holder.current.candidates[0].state
        assert seen is not None
        assert (seen.name, seen.status) == ("a", Status.UP)
        assert holder.current.candidates[1].state is None
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await writer.close()
        await reader.close()


async def test_outage_keeps_the_last_snapshot(redis_server: RedisServer, redis_url: str) -> None:
    store = RedisStore(redis_url, timeout=0.5)
    holder = SnapshotHolder(MIRRORS)
    try:
        await store.put_states([up("a"), up("b")])
        assert await holder.refresh(store)
        before = holder.current
        with redis_server.stopped():
            assert not await holder.refresh(store)
            assert holder.current is before  # still serving what we knew
            assert holder.store_error is not None
        # Restarted empty (as after a flush): the store answers again.
        await holder.refresh(store)
        assert holder.store_error is None
        await store.put_states([up("b")])
        await holder.refresh(store)
        assert holder.current.candidates[1].state is not None
    finally:
        await store.close()


async def test_unreachable_at_start_then_catches_up(redis_server: RedisServer) -> None:
    with redis_server.stopped():
        store = RedisStore(redis_server.url, timeout=0.5)  # must not raise
        holder = SnapshotHolder(MIRRORS)
        assert not await holder.refresh(store)
        assert holder.store_error is not None
        assert all(c.state is None for c in holder.current.candidates)
    try:
        await store.put_states([up("a")])
        assert await holder.refresh(store)
        assert holder.current.candidates[0].state is not None
    finally:
        await store.close()
