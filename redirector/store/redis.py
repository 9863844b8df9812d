"""The Redis store: state shared by every redirector process, on any number of machines."""

from __future__ import annotations

import logging
import math
import time
import types
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.typing import EncodableT, FieldT

from redirector.core.filefacts import BadCopy, FileFacts
from redirector.core.history import (
    MAX_EVENTS,
    Event,
    HistoryData,
    MirrorHistory,
)
from redirector.core.models import (
    MasterState,
    MirrorState,
    RepodataState,
    SyncInfo,
)
from redirector.store.base import Counts, Poison, StoreData, StoreError, _check_ttl
from redirector.store.codec import (
    POISONED_GENERATION,
    PoisonLog,
    bad_copy_field,
    check_keep,
    decode_bad_copy,
    decode_each,
    decode_facts,
    decode_histories,
    decode_master_entry,
    decode_repodata,
    decode_states,
    decode_syncs,
    encode_bad_copy,
    encode_event,
    encode_facts,
    encode_history,
    encode_master,
    encode_repo_checks,
    encode_repomd_history,
    encode_state,
    encode_sync,
    facts_by_path,
    field_name,
)

log = logging.getLogger(__name__)

# --- Redis store ---------------------------------------------------------------------------

# Every script below first checks the Redis type of the keys it touches: a key of the wrong
# type (a stray SET over a hash, say) fails every command on it, so a writer that did not
# replace it would leave the store broken for good.

# KEYS[1] lease key; ARGV[1] owner, ARGV[2] ttl in ms. Take if free, renew if ours. A lease
# without an expiry was never written here (we always set one): it would be held for ever.
_ACQUIRE_LUA = """
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'string' and t ~= 'none' then
  redis.call('DEL', KEYS[1])
end
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] and redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('DEL', KEYS[1])
  holder = false
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] lease key; ARGV[1] owner. Delete only if ours.
_RELEASE_LUA = """
if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' then
  return 0
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS[1] generation; ARGV[1] seed. INCR, after resetting to the seed a counter that is
# absent, not a string, or not a non-negative integer INCR can step (at most 18 digits).
_BUMP_LUA = """
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'string' then
  if t ~= 'none' then
    redis.call('DEL', KEYS[1])
  end
  redis.call('SET', KEYS[1], ARGV[1])
else
  local v = redis.call('GET', KEYS[1])
  if #v > 18 or not string.match(v, '^%d+$') then
    redis.call('SET', KEYS[1], ARGV[1])
  end
end
return redis.call('INCR', KEYS[1])
"""

# KEYS[1] a key that must be a hash (or absent).
_HASH_LUA = """
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'hash' and t ~= 'none' then
  redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS[1] a counter bucket; ARGV the fields about to be HINCRBY-ed. Drop a value HINCRBY
# would refuse, so one junk field cannot make every flush fail (and be retried) for good.
_COUNTS_LUA = """
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'hash' then
  if t ~= 'none' then
    redis.call('DEL', KEYS[1])
  end
  return 0
end
for i = 1, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v and (#v > 18 or not string.match(v, '^%-?%d+$')) then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 0
"""

# KEYS[1] states hash, KEYS[2] generation; ARGV[1] generation seed, ARGV[2..] names.
# Bump only if something went away. One HDEL per name: unpack() of a long ARGV would overflow
# the Lua stack. A states key of the wrong type goes away whole.
_FORGET_LUA = """
local removed = 0
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'hash' then
  for i = 2, #ARGV do
    removed = removed + redis.call('HDEL', KEYS[1], ARGV[i])
  end
elseif t ~= 'none' then
  removed = redis.call('DEL', KEYS[1])
end
if removed > 0 then
  local g = redis.call('TYPE', KEYS[2])['ok']
  if g ~= 'string' then
    if g ~= 'none' then
      redis.call('DEL', KEYS[2])
    end
    redis.call('SET', KEYS[2], ARGV[1])
  else
    local v = redis.call('GET', KEYS[2])
    if #v > 18 or not string.match(v, '^%d+$') then
      redis.call('SET', KEYS[2], ARGV[1])
    end
  end
  redis.call('INCR', KEYS[2])
end
return removed
"""


def _int(raw: bytes | str | None) -> int | None:
    """An integer as Redis keeps one: at most 18 digits (INCR-able), or None for junk."""
    if raw is None:
        return 0
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    if not (text.isascii() and 0 < len(text.lstrip("-")) <= 18 and text.lstrip("-").isdigit()):
        return None
    return int(text)


def generation_of(raw: bytes | str | None, poisoned: list[Poison]) -> int:
    """The generation counter's value; POISONED_GENERATION (and an entry in `poisoned`) for
    junk. An absent counter reads as 0."""
    value = _int(raw)
    if value is None or value < 0:
        poisoned.append(Poison("gen", None, f"not an integer: {raw!r:.40}"))
        return POISONED_GENERATION
    return value


def _generation_seed() -> int:
    """Where a missing generation counter restarts: now in microseconds since the epoch.

    Larger than any count a previous incarnation of the key reached (one write per
    microsecond would be needed to catch up), and below 2**53, so exact as a JSON number.
    """
    return time.time_ns() // 1000


def _reply(value: Any, key: str, poisoned: list[Poison]) -> Any:
    """A pipeline reply, or None (and an entry in `poisoned`) when Redis refused the command:
    the key holds another type than the schema says."""
    if isinstance(value, ResponseError):
        poisoned.append(Poison(key, None, f"wrong type: {value}"))
        return None
    return value


@asynccontextmanager
async def _translated(op: str) -> AsyncIterator[None]:
    """Turn every backend failure inside into a StoreError naming `op`."""
    try:
        yield
    except (RedisError, OSError) as exc:  # OSError covers builtin TimeoutError in 3.11
        reason = str(exc) or type(exc).__name__
        raise StoreError(f"redis {op}: {reason}") from exc


class RedisStore:
    """State shared through Redis; see the module docstring for the key schema.

    Connects lazily: constructing it never touches the network, so the app starts while Redis
    is down. Each call waits at most about `timeout` seconds to connect and `timeout` seconds
    for a reply, and raises StoreError on any failure. A dropped connection is retried once at
    once (a restarted Redis leaves stale pooled connections); timeouts are not retried.
    Raises ValueError for a URL redis-py cannot parse. `wall` is the clock stored dates are
    checked against (see `_date`).
    """

    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "redirector:",
        timeout: float = 1.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.prefix = prefix
        self._wall = wall
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # redis-py's default retries ten times with backoff: far past our timeout.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            decode_responses=False,  # we decode, so bad bytes become StoreError not a parser crash
        )
        self._states_key = f"{prefix}states"
        self._master_key = f"{prefix}master"
        self._gen_key = f"{prefix}gen"
        self._repomd_key = f"{prefix}repomd"
        self._repodata_key = f"{prefix}repodata"
        self._sync_key = f"{prefix}sync"
        self._history_key = f"{prefix}history"
        self._events_key = f"{prefix}events"
        self._acquire = self._client.register_script(_ACQUIRE_LUA)
        self._release = self._client.register_script(_RELEASE_LUA)
        self._forget = self._client.register_script(_FORGET_LUA)
        self._poison_log = PoisonLog(f"redis store {prefix}")

    def _lease_key(self, name: str) -> str:
        return f"{self.prefix}lease:{name}"

    async def load(self) -> StoreData:
        async with _translated("load"), self._client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._states_key)
            pipe.get(self._master_key)
            pipe.get(self._gen_key)
            pipe.hgetall(self._repomd_key)
            pipe.get(self._repodata_key)
            # Per-command errors come back as values: a wrong-type key is poisoned data.
            replies = await pipe.execute(raise_on_error=False)
        poisoned: list[Poison] = []
        names = ("states", "master", "gen", "repomd", "repodata")
        raw_states, raw_master, raw_gen, raw_repomd, raw_checks = (
            _reply(r, k, poisoned) for r, k in zip(replies, names, strict=True)
        )
        now = self._wall()
        gen = (
            POISONED_GENERATION
            if any(p.key == "gen" for p in poisoned)
            else generation_of(raw_gen, poisoned)
        )
        data = StoreData(
            states=types.MappingProxyType(decode_states(raw_states or {}, now, poisoned)),
            master=decode_master_entry(raw_master, now, poisoned),
            generation=gen,
            repodata=decode_repodata(raw_repomd or {}, raw_checks, now, poisoned),
            poisoned=tuple(poisoned),
        )
        self._poison_log.report("load", data.poisoned)
        return data

    async def generation(self) -> int:
        async with _translated("generation"):
            try:
                raw = await self._client.get(self._gen_key)
            except ResponseError:  # not a string: junk, as far as readers are concerned
                return POISONED_GENERATION
        value = _int(raw)
        return POISONED_GENERATION if value is None or value < 0 else value

    def _bump(self, pipe: Any) -> None:
        pipe.eval(_BUMP_LUA, 1, self._gen_key, _generation_seed())

    async def put_states(self, states: Iterable[MirrorState]) -> None:
        # annotated with redis-py's own types: Mapping keys are invariant, dict[str, str] fails
        mapping: dict[FieldT, EncodableT] = {s.name: encode_state(s) for s in states}
        if not mapping:
            return
        async with _translated("put_states"), self._client.pipeline(transaction=True) as pipe:
            pipe.eval(_HASH_LUA, 1, self._states_key)
            pipe.hset(self._states_key, mapping=mapping)
            self._bump(pipe)
            await pipe.execute()

    async def put_repodata(self, repodata: RepodataState) -> None:
        repos: dict[FieldT, EncodableT] = {
            d: encode_repomd_history(h) for d, h in repodata.repos.items()
        }
        checks = encode_repo_checks(repodata.mirrors, repodata.checked_at)
        async with _translated("put_repodata"), self._client.pipeline(transaction=True) as pipe:
            pipe.delete(self._repomd_key)
            if repos:
                pipe.hset(self._repomd_key, mapping=repos)
            pipe.set(self._repodata_key, checks)
            self._bump(pipe)
            await pipe.execute()

    async def put_master(self, master: MasterState) -> None:
        raw = encode_master(master)
        async with _translated("put_master"), self._client.pipeline(transaction=True) as pipe:
            pipe.set(self._master_key, raw)  # SET replaces a key of any type
            self._bump(pipe)
            await pipe.execute()

    async def forget(self, names: Iterable[str]) -> None:
        args = sorted(set(names))
        if not args:
            return
        async with _translated("forget"):
            await self._forget(
                keys=[self._states_key, self._gen_key],
                # surrogate escapes back to the bytes they stand for (see field_name)
                args=[_generation_seed(), *(n.encode("utf-8", "surrogateescape") for n in args)],
            )
            await self._client.hdel(
                self._history_key, *(n.encode("utf-8", "surrogateescape") for n in args)
            )

    async def load_history(self) -> HistoryData:
        async with _translated("load_history"), self._client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._history_key)
            pipe.lrange(self._events_key, 0, -1)
            raw_history, raw_events = await pipe.execute(raise_on_error=False)
        poisoned: list[Poison] = []
        raw_history = _reply(raw_history, "history", poisoned) or {}
        raw_events = _reply(raw_events, "events", poisoned) or []
        out = decode_histories(raw_history, raw_events, time.time(), poisoned)
        self._poison_log.report("history", poisoned)
        return out

    async def put_history(self, histories: Iterable[MirrorHistory]) -> None:
        mapping: dict[FieldT, EncodableT] = {h.name: encode_history(h) for h in histories}
        if mapping:
            async with _translated("put_history"):
                await self._client.hset(self._history_key, mapping=mapping)

    async def add_events(self, events: Iterable[Event], keep: int = MAX_EVENTS) -> None:
        check_keep(keep)
        raws = [encode_event(e) for e in events]
        if not raws:
            return
        async with _translated("add_events"), self._client.pipeline(transaction=True) as pipe:
            pipe.rpush(self._events_key, *raws)
            pipe.ltrim(self._events_key, -keep, -1)
            await pipe.execute()

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        _check_ttl(ttl)
        ttl_ms = max(1, math.ceil(ttl * 1000))
        async with _translated("acquire_lease"):
            got = await self._acquire(keys=[self._lease_key(name)], args=[owner, ttl_ms])
        return bool(got)

    async def release_lease(self, name: str, owner: str) -> None:
        async with _translated("release_lease"):
            await self._release(keys=[self._lease_key(name)], args=[owner])

    async def lease_holder(self, name: str) -> str | None:
        async with _translated("lease_holder"):
            try:
                raw = await self._client.get(self._lease_key(name))
            except ResponseError:  # not a string: nobody's lease; the next acquire replaces it
                return None
        return None if raw is None else field_name(raw)

    async def add_counts(self, batches: Iterable[Counts]) -> None:
        todo = list(batches)
        for b in todo:
            _check_ttl(b.ttl)
        if not todo:
            return
        # MULTI/EXEC: all or nothing, so a batch that failed can be retried without counting
        # part of it twice. Each bucket is cleaned first, so no HINCRBY fails half-way.
        async with _translated("add_counts"), self._client.pipeline(transaction=True) as pipe:
            for b in todo:
                key = f"{self.prefix}stats:{b.bucket}"
                pipe.eval(_COUNTS_LUA, 1, key, *b.fields)
                for f, n in b.fields.items():
                    pipe.hincrby(key, f, n)
                pipe.expire(key, max(1, math.ceil(b.ttl)))
            await pipe.execute()

    async def get_counts(self, buckets: Iterable[str]) -> dict[str, dict[str, int]]:
        names = list(dict.fromkeys(buckets))
        if not names:
            return {}
        async with _translated("get_counts"), self._client.pipeline(transaction=False) as pipe:
            for b in names:
                pipe.hgetall(f"{self.prefix}stats:{b}")
            raws = await pipe.execute(raise_on_error=False)
        poisoned: list[Poison] = []
        out: dict[str, dict[str, int]] = {}
        for b, raw in zip(names, raws, strict=True):
            fields: dict[str, int] = {}
            for f, v in (_reply(raw, f"stats:{b}", poisoned) or {}).items():
                n = _int(v)
                if n is None:
                    poisoned.append(Poison(f"stats:{b}", field_name(f), f"not a count: {v!r:.40}"))
                else:
                    fields[field_name(f)] = n
            out[b] = fields
        self._poison_log.report("counts", poisoned)
        return out

    async def ping(self) -> None:
        async with _translated("ping"):
            await self._client.ping()

    async def put_sync(self, infos: Iterable[SyncInfo]) -> None:
        mapping: dict[FieldT, EncodableT] = {i.name: encode_sync(i) for i in infos}
        if mapping:
            async with _translated("put_sync"), self._client.pipeline(transaction=True) as pipe:
                pipe.eval(_HASH_LUA, 1, self._sync_key)
                pipe.hset(self._sync_key, mapping=mapping)
                await pipe.execute()

    async def load_sync(self) -> dict[str, SyncInfo]:
        poisoned: list[Poison] = []
        async with _translated("load_sync"):
            try:
                raw = await self._client.hgetall(self._sync_key)
            except ResponseError as e:
                raw = {}
                poisoned.append(Poison("sync", None, f"wrong type: {e}"))
        out = decode_syncs(raw, self._wall(), poisoned)
        self._poison_log.report("sync", poisoned)
        return out

    async def put_facts(self, facts: Iterable[FileFacts]) -> None:
        mapping: dict[FieldT, EncodableT] = {f.path: encode_facts(f) for f in facts}
        if not mapping:
            return
        async with _translated("put_facts"), self._client.pipeline(transaction=True) as pipe:
            pipe.hset(f"{self.prefix}facts", mapping=mapping)
            pipe.incr(f"{self.prefix}facts_gen")
            await pipe.execute()

    async def drop_facts(self, paths: Iterable[str]) -> None:
        names = sorted(set(paths))
        if not names:
            return
        async with _translated("drop_facts"), self._client.pipeline(transaction=True) as pipe:
            pipe.hdel(f"{self.prefix}facts", *names)
            pipe.incr(f"{self.prefix}facts_gen")
            await pipe.execute()

    async def load_facts(self) -> dict[str, FileFacts]:
        async with _translated("load_facts"):
            raw = await self._client.hgetall(f"{self.prefix}facts")
        return facts_by_path(decode_each(raw, decode_facts, "file facts"))

    async def facts_generation(self) -> int:
        async with _translated("facts_generation"):
            raw = await self._client.get(f"{self.prefix}facts_gen")
        gen = _int(raw)
        return gen if gen is not None and gen >= 0 else POISONED_GENERATION

    async def put_bad_copies(self, copies: Iterable[BadCopy]) -> None:
        mapping: dict[FieldT, EncodableT] = {bad_copy_field(b): encode_bad_copy(b) for b in copies}
        if not mapping:
            return
        async with (
            _translated("put_bad_copies"),
            self._client.pipeline(transaction=True) as pipe,
        ):
            pipe.hset(f"{self.prefix}badcopies", mapping=mapping)
            pipe.incr(f"{self.prefix}facts_gen")
            await pipe.execute()

    async def load_bad_copies(self) -> list[BadCopy]:
        async with _translated("load_bad_copies"):
            raw = await self._client.hgetall(f"{self.prefix}badcopies")
        copies: list[BadCopy] = [b for _, b in decode_each(raw, decode_bad_copy, "bad copy")]
        return sorted(copies, key=lambda b: -b.seen_at)

    async def close(self) -> None:
        async with _translated("close"):
            await self._client.aclose()
