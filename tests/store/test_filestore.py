"""FileStore: the Store protocol over one file shared by processes, as MemoryStore behaves."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from pathlib import Path

import pytest

from redirector.core.models import (
    MasterState,
    MasterVersion,
    MirrorState,
    RepoCheck,
    RepodataState,
    RepomdHistory,
    RepomdVersion,
    Status,
)
from redirector.store.base import Counts, StoreError
from redirector.store.codec import POISONED_GENERATION
from redirector.store.file import PREV_FILE, STATE_FILE, FileStore
from redirector.store.memory import MemoryStore
from tests.support.clock import Clock

NOW = 1_764_000_000.0


def state(name: str, **kw: object) -> MirrorState:
    return MirrorState(name, Status.UP, NOW, master_date=NOW - 60, **kw)  # type: ignore[arg-type]


async def test_empty_directory_reads_as_an_empty_store(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    data = await store.load()
    assert dict(data.states) == {}
    assert data.master is None
    assert data.repodata is None
    assert data.generation == await store.generation() == 0
    await store.ping()


async def test_writes_round_trip_and_bump_the_generation_like_memory(tmp_path: Path) -> None:
    file, memory = FileStore(tmp_path), MemoryStore()
    master = MasterState((MasterVersion(NOW - 3600, NOW - 3500),), NOW, None)
    repodata = RepodataState(
        repos={
            "releases/10/smeos/x86_64": RepomdHistory(
                (RepomdVersion(10, 5, "a", "b", "c", "d", NOW),), NOW
            )
        },
        mirrors={"nl": {"releases/10/smeos/x86_64": RepoCheck.MISMATCHED}},
        checked_at=NOW,
    )
    for store in (file, memory):
        await store.put_states([state("nl"), state("us", lacks=("obsolete/",))])
        await store.put_states([])  # nothing: no bump
        await store.put_master(master)
        await store.put_repodata(repodata)
        await store.forget(["nobody"])  # nothing present: no bump
        await store.forget(["us"])
        await store.put_states([state("nl", failures=2)])
    got, want = await file.load(), await memory.load()
    assert dict(got.states) == dict(want.states) == {"nl": state("nl", failures=2)}
    assert got.master == want.master == master
    assert got.repodata is not None
    assert dict(got.repodata.repos) == dict(repodata.repos)
    assert {k: dict(v) for k, v in got.repodata.mirrors.items()} == {
        k: dict(v) for k, v in repodata.mirrors.items()
    }
    assert got.generation == want.generation == await file.generation() == 5


async def test_a_second_instance_sees_the_writes_of_the_first(tmp_path: Path) -> None:
    writer, reader = FileStore(tmp_path), FileStore(tmp_path)
    await writer.put_states([state("nl")])
    assert await reader.generation() == 1
    assert (await reader.load()).states["nl"] == state("nl")


async def test_leases_expire_by_the_clock(tmp_path: Path) -> None:
    clock = Clock()
    a, b = FileStore(tmp_path, clock=clock), FileStore(tmp_path, clock=clock)
    assert await a.acquire_lease("poller", "a", 30)
    assert not await b.acquire_lease("poller", "b", 30)
    assert await b.lease_holder("poller") == "a"
    assert await a.acquire_lease("poller", "a", 30)  # renewed
    clock.t += 31
    assert await b.lease_holder("poller") is None
    assert await b.acquire_lease("poller", "b", 30)
    await a.release_lease("poller", "a")  # not a's any more: nothing happens
    assert await a.lease_holder("poller") == "b"
    await b.release_lease("poller", "b")
    assert await a.lease_holder("poller") is None
    assert await a.generation() == 0  # leases are not mirror state
    with pytest.raises(ValueError, match="ttl"):
        await a.acquire_lease("poller", "a", 0)


async def test_counts_add_up_and_expire(tmp_path: Path) -> None:
    clock = Clock()
    store = FileStore(tmp_path, clock=clock)
    await store.add_counts([Counts("d:2025-11-25", 100, {"nl": 2, "us": 1})])
    await store.add_counts([Counts("d:2025-11-25", 100, {"nl": 3}), Counts("h:10", 10, {"x": 1})])
    assert await store.get_counts(["d:2025-11-25", "h:10", "none"]) == {
        "d:2025-11-25": {"nl": 5, "us": 1},
        "h:10": {"x": 1},
        "none": {},
    }
    clock.t += 11
    assert await store.get_counts(["h:10"]) == {"h:10": {}}
    assert await store.generation() == 0


async def test_a_damaged_file_is_read_as_far_as_it_goes_and_repaired(tmp_path: Path) -> None:
    # A damaged file used to fail every load and every write for good: every worker froze on
    # its last snapshot, and a worker restarted meanwhile had none.
    (tmp_path / STATE_FILE).write_text("not json\n{}")
    store = FileStore(tmp_path)
    assert await store.generation() == POISONED_GENERATION
    data = await store.load()
    assert [(p.key, p.field) for p in data.poisoned] == [("file", "header")]
    await store.put_states([state("nl")])
    assert (await store.load()).poisoned == ()
    assert await store.generation() > 0
    (tmp_path / STATE_FILE).write_text('{"v": 1, "generation": 3}\n[1, 2]')
    data = await store.load()
    assert data.generation == 3
    assert [p.key for p in data.poisoned] == ["file"]
    await store.put_states([state("nl")])
    assert (await store.load()).states == {"nl": state("nl")}


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('{"states": []}', "states"),
        ('{"states": {"nl": {"v": 1}}}', "states"),
        ('{"states": {"nl": "junk"}}', "states"),
        ('{"master": 7}', "master"),
        ('{"leases": {"poller": [1, 2, 3]}}', "leases"),
        ('{"leases": {"poller": "me"}}', "leases"),
        ('{"leases": []}', "leases"),
        ('{"counts": {"d": [{"n": "x"}, 1e9]}}', "counts"),
        ('{"repodata": {"v": 1}}', "repodata"),
        ('{"sync": 3}', "sync"),
        ('{"states": {"nl": "', "file"),  # truncated
    ],
)
async def test_wrong_shapes_are_dropped_not_fatal(tmp_path: Path, body: str, key: str) -> None:
    good = FileStore(tmp_path)
    await good.put_states([state("us")])
    (tmp_path / STATE_FILE).write_text('{"v": 1, "generation": 5}\n' + body)
    data = await good.load()
    assert key in {p.key for p in data.poisoned}
    assert await good.acquire_lease("poller", "me", 10.0)  # the lease keeper is not stopped
    assert await good.lease_holder("poller") == "me"
    assert await good.get_counts(["d"]) is not None
    await good.put_states([state("nl")])
    assert "nl" in (await good.load()).states


async def test_a_lease_expiring_beyond_any_ttl_is_dropped(tmp_path: Path) -> None:
    clock = Clock()
    store = FileStore(tmp_path, clock=clock)
    await store.put_states([state("nl")])
    # expiries are CLOCK_MONOTONIC seconds: a file from before a reboot holds huge ones
    (tmp_path / STATE_FILE).write_text(
        '{"v": 1, "generation": 5}\n{"leases": {"poller": ["gone", 1e12]}}'
    )
    assert await store.lease_holder("poller") is None
    assert await store.acquire_lease("poller", "me", 10.0)


async def test_an_unwritable_directory_is_a_store_error(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "missing")
    with pytest.raises(StoreError):
        await store.ping()
    with pytest.raises(StoreError):
        await store.put_states([state("nl")])


def _hammer(directory: str, worker: int, rounds: int) -> None:
    store = FileStore(directory)

    async def go() -> None:
        for i in range(rounds):
            await store.put_states([state(f"w{worker}-{i}")])
            await store.add_counts([Counts("total", 100, {"n": 1})])

    asyncio.run(go())


def test_writers_in_several_processes_lose_nothing(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path), w, 40)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    store = FileStore(tmp_path)
    data = asyncio.run(store.load())
    assert len(data.states) == 120
    assert data.generation == 120
    assert asyncio.run(store.get_counts(["total"])) == {"total": {"n": 120}}
    # Only the state file, its copy and the lock remain: every temporary file was renamed
    # into place.
    assert sorted(os.listdir(tmp_path)) == ["lock", STATE_FILE, PREV_FILE]


async def test_a_truncated_file_is_read_from_its_last_copy(tmp_path: Path) -> None:
    # A worker starting while state.json is damaged used to have no state at all and send
    # every client to the master; it now reads the copy of the last state change.
    store = FileStore(tmp_path)
    await store.put_states([state("nl"), state("us")])
    whole = (tmp_path / STATE_FILE).read_bytes()
    (tmp_path / STATE_FILE).write_bytes(whole[: len(whole) // 2])
    fresh = FileStore(tmp_path)  # a worker restarted meanwhile
    data = await fresh.load()
    assert set(data.states) == {"nl", "us"}
    assert [(p.key, p.field) for p in data.poisoned] == [("file", "body")]
    assert data.generation == await fresh.generation()
    await fresh.put_master(MasterState((MasterVersion(NOW - 60, NOW - 60),), NOW))
    repaired = await fresh.load()
    assert repaired.poisoned == ()
    assert set(repaired.states) == {"nl", "us"}
