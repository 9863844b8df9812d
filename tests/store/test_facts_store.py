"""The file facts in every store: round trips, the generation, and damaged entries left out."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from redirector.core.filefacts import BadCopy, Digester, FileFacts
from redirector.store.base import FactStore, StoreError
from redirector.store.codec import decode_facts, encode_facts
from redirector.store.facts import FactsHolder
from redirector.store.file import FACTS_FILE, FileStore
from redirector.store.memory import MemoryStore
from redirector.store.redis import RedisStore


def hashed(path: str, data: bytes) -> FileFacts:
    d = Digester(len(data))
    d.update(data)
    return d.facts(path, 1700000000.5)


ISO = hashed("releases/10/iso/x86_64/smeserver-10.0-x86_64.iso", b"iso" * 1000)
IMG = hashed("releases/10/iso/x86_64/boot.img", b"img")
SUMS_ONLY = FileFacts("releases/9/iso/old.iso", 5, 1.0, sha256=hashlib.sha256(b"").hexdigest(),
                      source="sums")  # fmt: skip


@pytest.fixture(params=["memory", "redis", "file"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str
) -> AsyncIterator[MemoryStore | RedisStore | FileStore]:
    st: MemoryStore | RedisStore | FileStore
    if request.param == "memory":
        st = MemoryStore()
    elif request.param == "redis":
        st = RedisStore(redis_url, prefix="t:")
    else:
        st = FileStore(tmp_path)
    yield st
    await st.close()


async def test_facts_round_trip_and_move_the_generation(
    store: MemoryStore | RedisStore | FileStore,
) -> None:
    assert isinstance(store, FactStore)
    assert await store.load_facts() == {}
    g0 = await store.facts_generation()
    await store.put_facts([ISO, IMG, SUMS_ONLY])
    g1 = await store.facts_generation()
    assert g1 != g0
    assert await store.load_facts() == {f.path: f for f in (ISO, IMG, SUMS_ONLY)}
    await store.put_facts([])
    assert await store.facts_generation() == g1
    await store.drop_facts([IMG.path, "not/there.iso"])
    g2 = await store.facts_generation()
    assert g2 != g1
    assert set(await store.load_facts()) == {ISO.path, SUMS_ONLY.path}
    await store.drop_facts(["not/there.iso"])
    assert await store.facts_generation() == g2 or store.kind == "redis"


async def test_bad_copies_are_kept_per_mirror_and_path_newest_first(
    store: MemoryStore | RedisStore | FileStore,
) -> None:
    await store.put_bad_copies([BadCopy("nl", ISO.path, "size 1, the master's 3000", 10.0)])
    await store.put_bad_copies([BadCopy("us", ISO.path, "size 2, the master's 3000", 20.0)])
    await store.put_bad_copies([BadCopy("nl", ISO.path, "size 5, the master's 3000", 30.0)])
    got = await store.load_bad_copies()
    assert [(b.mirror, b.reason, b.seen_at) for b in got] == [
        ("nl", "size 5, the master's 3000", 30.0),
        ("us", "size 2, the master's 3000", 20.0),
    ]


def _poisoned() -> dict[str, str]:
    good = json.loads(encode_facts(ISO))
    out = {}
    changes: dict[str, dict[str, object]] = {
        "short hash": {"sha256": "abc"},
        "upper-case hash": {"sha256": ISO.sha256.upper() if ISO.sha256 else ""},
        "pieces short": {"pieces": [*list(ISO.pieces), ISO.pieces[0]]},
        "escaping path": {"path": "../../etc/passwd"},
        "negative size": {"size": -1},
        "infinite date": {"mtime": 1e400},
        "unknown source": {"source": "rumour"},
        "schema": {"v": 2},
    }
    for name, change in changes.items():
        out[name] = json.dumps({**good, **change})
    return out


@pytest.mark.parametrize(("what", "raw"), list(_poisoned().items()))
def test_decode_refuses_facts_a_client_would_be_checked_against(what: str, raw: str) -> None:
    with pytest.raises(StoreError):
        decode_facts(raw)


async def test_a_damaged_redis_entry_costs_that_entry_only(redis_url: str) -> None:
    st = RedisStore(redis_url, prefix="t:")
    client = aioredis.Redis.from_url(redis_url)
    try:
        await st.put_facts([ISO, IMG])
        await client.hset("t:facts", IMG.path, "{not json")
        await client.hset("t:facts", "other.iso", encode_facts(ISO))  # filed under another path
        await client.hset("t:badcopies", "x y", "[]")
        assert await st.load_facts() == {ISO.path: ISO}
        assert await st.load_bad_copies() == []
    finally:
        await client.aclose()
        await st.close()


async def test_a_damaged_facts_file_entry_costs_that_entry_only(tmp_path: Path) -> None:
    st = FileStore(tmp_path)
    await st.put_facts([ISO, IMG])
    path = tmp_path / FACTS_FILE
    head, body = path.read_text().split("\n", 1)
    doc = json.loads(body)
    doc["facts"][IMG.path] = json.dumps({**json.loads(doc["facts"][IMG.path]), "md5": 7})
    path.write_text(head + "\n" + json.dumps(doc))
    assert await st.load_facts() == {ISO.path: ISO}
    doc["facts"] = []  # a wrong-type section reads as empty, and the next write replaces it
    path.write_text(head + "\n" + json.dumps(doc))
    assert await st.load_facts() == {}
    await st.put_facts([IMG])
    assert await st.load_facts() == {IMG.path: IMG}


async def test_the_holder_reloads_only_when_the_generation_moves(redis_url: str) -> None:
    st = RedisStore(redis_url, prefix="t:")
    holder = FactsHolder()
    try:
        assert await holder.refresh(st)  # the first load
        assert holder.get(ISO.path) is None
        await st.put_facts([ISO])
        assert await holder.refresh(st)
        assert holder.get(ISO.path) == ISO
        headers = holder.headers(ISO.path)
        assert headers is not None
        assert "Repr-Digest" in headers
        assert not await holder.refresh(st)
    finally:
        await st.close()
    # A store that fails keeps the last copy.
    down = RedisStore("redis://127.0.0.1:1/0", prefix="t:", timeout=0.2)
    try:
        assert not await holder.refresh(down)
        assert holder.get(ISO.path) == ISO
        assert holder.error is not None
    finally:
        await down.close()
