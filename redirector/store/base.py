"""Shared state store: the mirrors' observed states, the master's history and leases.

Two implementations of one `Store` protocol: `MemoryStore` (one process, no I/O) and
`RedisStore` (shared by every redirector process through Redis). Everything that knows how
state looks inside Redis lives in this module.

Key schema (every key starts with the store's `prefix`, by default ``redirector:``):

``{prefix}states``
    Hash: mirror name -> one `MirrorState` as JSON (see `encode_state`).
``{prefix}master``
    String: the `MasterState` as JSON (see `encode_master`); absent until the first write.
``{prefix}gen``
    String holding an integer, ``INCR``-ed in the same ``MULTI``/script as every write of
    ``states`` or ``master``; absent reads as generation 0. Readers poll it (one ``GET``) and
    reload only when it differs from the generation they last loaded. Each write first seeds
    it, if absent, with the writer's wall clock in microseconds (``SET NX``), so after Redis
    lost its data the count resumes far above any generation a reader still holds instead of
    climbing back through 1, 2, ... where a reader could miss a change.
``{prefix}repomd``
    Hash: repo directory (e.g. ``releases/10/smeos/x86_64``) -> the master's repomd.xml
    history for it as JSON (see `encode_repomd_history`). Replaced whole by `put_repodata`.
``{prefix}repodata``
    String: each mirror's repodata verdicts as JSON (see `encode_repo_checks`), absent until
    the first repodata pass. Written with ``{prefix}repomd`` and a ``gen`` bump in one ``MULTI``.
``{prefix}stats:{bucket}``
    Hash: field -> integer count, for download statistics (`redirector.stats` names the
    buckets and fields). Only ever changed by ``HINCRBY`` batches (`add_counts`), one pipeline
    per flush, each bucket's ``EXPIRE`` renewed in the same pipeline; not part of ``gen``.
``{prefix}sync``
    Hash: mirror name -> how it says it syncs (`SyncInfo` as JSON, see `encode_sync`): the
    `Upstream-mirror:` of its trace and its ``_hierarchy`` lines. Written by the sync-tree pass
    hook (`put_sync`), read by the status page (`load_sync`); not part of ``gen``, since no
    redirect depends on it.
``{prefix}lease:{name}``
    String: the owner id of lease `name` (e.g. ``poller``) with a ``PX`` expiry. Taken,
    renewed and released only by Lua scripts that read the holder first, atomically, so an
    owner whose lease expired and was taken by another cannot renew or release it.

JSON values carry ``"v": 1``. Decoders ignore keys they do not know, so a newer writer may add
fields without a version bump; ``v`` changes only for an incompatible change, and a reader
refuses a version it does not know (`StoreError`).

If Redis loses its data (flush, restart without persistence), `RedisStore.load` returns no
states, no master and generation 0; readers then serve from nothing until the poller's next
cycle writes every configured mirror's state and the master again, which it must do each
cycle rather than writing only changes. Leases vanish too; the next `acquire_lease` retakes
them.
"""

from __future__ import annotations

import json
import math
import time
import types
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from redirector.core.models import (
    HierarchyEntry,
    MasterState,
    MasterVersion,
    MirrorState,
    RepoCheck,
    RepodataState,
    RepomdHistory,
    RepomdVersion,
    Status,
    SyncInfo,
)

SCHEMA_VERSION = 1


class StoreError(Exception):
    """The store failed: backend unreachable, too slow, or holding data we cannot read."""


@dataclass(frozen=True, slots=True)
class StoreData:
    """A consistent snapshot of the store."""

    states: Mapping[str, MirrorState]  # by mirror name
    master: MasterState | None
    generation: int  # differs after every write; equal generations mean equal data
    repodata: RepodataState | None = None  # the last repodata pass; None before the first


@dataclass(frozen=True, slots=True)
class Counts:
    """Increments for one counter bucket, which expires `ttl` seconds after its last write."""

    bucket: str  # e.g. "d:2025-11-25"; the store adds its prefix
    ttl: float
    fields: Mapping[str, int]  # field -> increment


class Store(Protocol):
    """What the app and the poller need from shared state, whichever backend holds it."""

    kind: str  # "memory" or "redis"

    async def load(self) -> StoreData:
        """Everything, read atomically."""
        ...

    async def generation(self) -> int:
        """The current generation; cheap enough to poll every half second."""
        ...

    async def put_states(self, states: Iterable[MirrorState]) -> None:
        """Insert or replace these states (last wins per name) and bump the generation once.

        An empty iterable writes nothing and leaves the generation alone.
        """
        ...

    async def put_master(self, master: MasterState) -> None:
        """Replace the master state and bump the generation."""
        ...

    async def put_repodata(self, repodata: RepodataState) -> None:
        """Replace the repodata state (histories and verdicts) and bump the generation."""
        ...

    async def forget(self, names: Iterable[str]) -> None:
        """Drop the states of these mirrors; bump the generation only if one was present."""
        ...

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        """Take lease `name` if free or expired, or renew it if `owner` holds it, for `ttl` s.

        True if `owner` holds the lease afterwards. `ttl` must be positive.
        """
        ...

    async def release_lease(self, name: str, owner: str) -> None:
        """Free lease `name` if `owner` holds it; otherwise do nothing."""
        ...

    async def lease_holder(self, name: str) -> str | None:
        """Who holds lease `name` now, None when nobody does."""
        ...

    async def add_counts(self, batches: Iterable[Counts]) -> None:
        """Add every increment to its bucket in one round trip; renew each bucket's expiry."""
        ...

    async def get_counts(self, buckets: Iterable[str]) -> dict[str, dict[str, int]]:
        """The counters of these buckets; a missing or expired bucket reads as an empty dict."""
        ...

    async def ping(self) -> None:
        """Return if the backend answers; raise StoreError otherwise."""
        ...

    async def close(self) -> None:
        """Release connections; the store must not be used afterwards."""
        ...


# --- serialization -------------------------------------------------------------------------


def _dumps(obj: dict[str, Any]) -> str:
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:  # NaN or infinity: not JSON, and a bug upstream
        raise StoreError(f"cannot encode: {exc}") from exc


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _load_object(raw: str | bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise StoreError(f"bad {what} JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise StoreError(f"bad {what}: not a JSON object")
    version = obj.get("v")
    if version != SCHEMA_VERSION:
        raise StoreError(f"bad {what}: schema version {version!r}, expected {SCHEMA_VERSION}")
    return obj


def _number(obj: Mapping[str, Any], key: str, what: str) -> float:
    value = obj.get(key)
    # bool is an int subclass; True is not a time
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StoreError(f"bad {what}: {key} must be a number, got {value!r}")
    return float(value)


def _optional_number(obj: Mapping[str, Any], key: str, what: str) -> float | None:
    return None if obj.get(key) is None else _number(obj, key, what)


def _string(obj: Mapping[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise StoreError(f"bad {what}: {key} must be a string, got {value!r}")
    return value


def _optional_string(obj: Mapping[str, Any], key: str, what: str) -> str | None:
    return None if obj.get(key) is None else _string(obj, key, what)


def _string_tuple(obj: Mapping[str, Any], key: str, what: str) -> tuple[str, ...]:
    value = obj.get(key, [])
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise StoreError(f"bad {what}: {key} must be a list of strings")
    return tuple(value)


def _optional_bool(obj: Mapping[str, Any], key: str, what: str) -> bool | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, bool):
        raise StoreError(f"bad {what}: {key} must be true, false or null")
    return value


def encode_state(s: MirrorState) -> str:
    """`s` as a JSON object with ``"v": 1``; `decode_state` reverses it exactly."""
    return _dumps(
        {
            "v": SCHEMA_VERSION,
            "name": s.name,
            "status": s.status.value,
            "checked_at": s.checked_at,
            "master_date": s.master_date,
            "behind_since": s.behind_since,
            "own_date": s.own_date,
            "error": s.error,
            "failures": s.failures,
            "lacks": list(s.lacks),
            "covered": list(s.covered),
            "coverage_at": s.coverage_at,
            "coverage_note": s.coverage_note,
            "retry_at": s.retry_at,
            "trace_name": s.trace_name,
            "note": s.note,
            "ipv6": s.ipv6,
            "ipv6_note": s.ipv6_note,
        }
    )


def decode_state(raw: str | bytes) -> MirrorState:
    """Parse `encode_state` output; unknown keys are ignored, anything else wrong is StoreError.

    Only ``v``, ``name``, ``status`` and ``checked_at`` are required; the rest default as in
    `MirrorState`.
    """
    what = "mirror state"
    obj = _load_object(raw, what)
    try:
        status = Status(obj.get("status"))
    except ValueError as exc:
        raise StoreError(f"bad {what}: unknown status {obj.get('status')!r}") from exc
    failures = obj.get("failures", 0)
    if isinstance(failures, bool) or not isinstance(failures, int) or failures < 0:
        raise StoreError(f"bad {what}: failures must be a non-negative integer")
    lacks = obj.get("lacks", [])
    if not isinstance(lacks, list) or not all(isinstance(p, str) for p in lacks):
        raise StoreError(f"bad {what}: lacks must be a list of strings")
    return MirrorState(
        name=_string(obj, "name", what),
        status=status,
        checked_at=_number(obj, "checked_at", what),
        master_date=_optional_number(obj, "master_date", what),
        behind_since=_optional_number(obj, "behind_since", what),
        own_date=_optional_number(obj, "own_date", what),
        error=_optional_string(obj, "error", what),
        failures=failures,
        lacks=tuple(lacks),
        covered=_string_tuple(obj, "covered", what),
        coverage_at=_optional_number(obj, "coverage_at", what),
        coverage_note=_optional_string(obj, "coverage_note", what),
        retry_at=_optional_number(obj, "retry_at", what),
        trace_name=_optional_string(obj, "trace_name", what),
        note=_optional_string(obj, "note", what),
        ipv6=_optional_bool(obj, "ipv6", what),
        ipv6_note=_optional_string(obj, "ipv6_note", what),
    )


def encode_master(m: MasterState) -> str:
    """`m` as a JSON object with ``"v": 1``, history oldest first."""
    return _dumps(
        {
            "v": SCHEMA_VERSION,
            "history": [{"date": v.date, "first_seen": v.first_seen} for v in m.history],
            "checked_at": m.checked_at,
            "error": m.error,
        }
    )


def decode_master(raw: str | bytes) -> MasterState:
    """Parse `encode_master` output; unknown keys are ignored, anything else wrong is StoreError."""
    what = "master state"
    obj = _load_object(raw, what)
    history = obj.get("history", [])
    if not isinstance(history, list):
        raise StoreError(f"bad {what}: history must be a list")
    versions = []
    for entry in history:
        if not isinstance(entry, dict):
            raise StoreError(f"bad {what}: history entries must be objects")
        versions.append(
            MasterVersion(
                date=_number(entry, "date", what), first_seen=_number(entry, "first_seen", what)
            )
        )
    return MasterState(
        history=tuple(versions),
        checked_at=_number(obj, "checked_at", what),
        error=_optional_string(obj, "error", what),
    )


def encode_repomd_history(h: RepomdHistory) -> str:
    """`h` as a JSON object with ``"v": 1``, versions oldest first."""
    return _dumps(
        {
            "v": SCHEMA_VERSION,
            "history": [
                {
                    "size": v.size,
                    "timestamp": v.timestamp,
                    "md5": v.md5,
                    "sha1": v.sha1,
                    "sha256": v.sha256,
                    "sha512": v.sha512,
                    "first_seen": v.first_seen,
                }
                for v in h.history
            ],
            "checked_at": h.checked_at,
            "error": h.error,
        }
    )


def _whole(obj: Mapping[str, Any], key: str, what: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StoreError(f"bad {what}: {key} must be a non-negative integer, got {value!r}")
    return value


def decode_repomd_history(raw: str | bytes) -> RepomdHistory:
    """Parse `encode_repomd_history` output; anything wrong is StoreError."""
    what = "repomd history"
    obj = _load_object(raw, what)
    history = obj.get("history", [])
    if not isinstance(history, list) or not all(isinstance(e, dict) for e in history):
        raise StoreError(f"bad {what}: history must be a list of objects")
    return RepomdHistory(
        history=tuple(
            RepomdVersion(
                size=_whole(e, "size", what),
                timestamp=_whole(e, "timestamp", what),
                md5=_string(e, "md5", what),
                sha1=_string(e, "sha1", what),
                sha256=_string(e, "sha256", what),
                sha512=_string(e, "sha512", what),
                first_seen=_number(e, "first_seen", what),
            )
            for e in history
        ),
        checked_at=_number(obj, "checked_at", what),
        error=_optional_string(obj, "error", what),
    )


def encode_repo_checks(mirrors: Mapping[str, Mapping[str, RepoCheck]], checked_at: float) -> str:
    """Every mirror's verdicts (mirror -> repo directory -> verdict) as one JSON object."""
    return _dumps(
        {
            "v": SCHEMA_VERSION,
            "checked_at": checked_at,
            "mirrors": {
                name: {d: v.value for d, v in sorted(verdicts.items())}
                for name, verdicts in sorted(mirrors.items())
            },
        }
    )


def decode_repo_checks(raw: str | bytes) -> tuple[dict[str, dict[str, RepoCheck]], float]:
    """Parse `encode_repo_checks` output -> (verdicts by mirror, checked_at)."""
    what = "repodata verdicts"
    obj = _load_object(raw, what)
    mirrors = obj.get("mirrors", {})
    if not isinstance(mirrors, dict):
        raise StoreError(f"bad {what}: mirrors must be an object")
    out: dict[str, dict[str, RepoCheck]] = {}
    for name, verdicts in mirrors.items():
        if not isinstance(verdicts, dict):
            raise StoreError(f"bad {what}: verdicts of {name!r} must be an object")
        try:
            out[name] = {str(d): RepoCheck(v) for d, v in verdicts.items()}
        except ValueError as exc:
            raise StoreError(f"bad {what}: unknown verdict for {name!r}") from exc
    return out, _number(obj, "checked_at", what)


# --- the sync tree ------------------------------------------------------------------


@runtime_checkable
class SyncStore(Protocol):
    """Where the sync-tree pass hook keeps what mirrors say about their upstreams."""

    async def put_sync(self, infos: Iterable[SyncInfo]) -> None:
        """Insert or replace these mirrors' sync info (last wins per name)."""
        ...

    async def load_sync(self) -> dict[str, SyncInfo]:
        """Every mirror's sync info, by mirror name."""
        ...


def encode_sync(info: SyncInfo) -> str:
    """`info` as a JSON object with ``"v": 1``; `decode_sync` reverses it exactly."""
    return _dumps(
        {
            "v": SCHEMA_VERSION,
            "name": info.name,
            "checked_at": info.checked_at,
            "upstream": info.upstream,
            "hierarchy": [[e.tracefile, e.mirror, e.host, e.upstream] for e in info.hierarchy],
            "error": info.error,
        }
    )


def decode_sync(raw: str | bytes) -> SyncInfo:
    """Parse `encode_sync` output; unknown keys are ignored, anything else wrong is StoreError."""
    what = "sync info"
    obj = _load_object(raw, what)
    lines = obj.get("hierarchy", [])
    if not isinstance(lines, list) or not all(
        isinstance(x, list) and len(x) == 4 and all(isinstance(f, str) for f in x) for x in lines
    ):
        raise StoreError(f"bad {what}: hierarchy must be a list of four strings each")
    return SyncInfo(
        name=_string(obj, "name", what),
        checked_at=_number(obj, "checked_at", what),
        upstream=_optional_string(obj, "upstream", what),
        hierarchy=tuple(HierarchyEntry(*x) for x in lines),
        error=_optional_string(obj, "error", what),
    )


def _check_ttl(ttl: float) -> None:
    if not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"lease ttl must be a positive number of seconds, got {ttl!r}")


# --- in-process store ----------------------------------------------------------------------


@dataclass(slots=True)
class _Lease:
    owner: str
    expires_at: float


class MemoryStore:
    """State in this process only: for a single redirector, tests, and running without Redis.

    Never fails. Leases expire by `clock` (seconds, monotonic), injectable for tests.
    """

    kind = "memory"

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._states: dict[str, MirrorState] = {}
        self._master: MasterState | None = None
        self._repodata: RepodataState | None = None
        self._generation = 0
        self._leases: dict[str, _Lease] = {}
        self._counts: dict[str, tuple[dict[str, int], float]] = {}  # bucket -> (fields, expiry)
        self._sync: dict[str, SyncInfo] = {}  # how each mirror says it syncs

    async def load(self) -> StoreData:
        return StoreData(
            states=types.MappingProxyType(dict(self._states)),
            master=self._master,
            generation=self._generation,
            repodata=self._repodata,
        )

    async def generation(self) -> int:
        return self._generation

    async def put_states(self, states: Iterable[MirrorState]) -> None:
        new = {s.name: s for s in states}
        if new:
            self._states.update(new)
            self._generation += 1

    async def put_master(self, master: MasterState) -> None:
        self._master = master
        self._generation += 1

    async def put_repodata(self, repodata: RepodataState) -> None:
        self._repodata = repodata
        self._generation += 1

    async def forget(self, names: Iterable[str]) -> None:
        removed = [n for n in set(names) if self._states.pop(n, None) is not None]
        if removed:
            self._generation += 1

    def _live_lease(self, name: str) -> _Lease | None:
        lease = self._leases.get(name)
        if lease is not None and lease.expires_at <= self._clock():
            del self._leases[name]
            return None
        return lease

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        _check_ttl(ttl)
        lease = self._live_lease(name)
        if lease is not None and lease.owner != owner:
            return False
        self._leases[name] = _Lease(owner, self._clock() + ttl)
        return True

    async def release_lease(self, name: str, owner: str) -> None:
        lease = self._live_lease(name)
        if lease is not None and lease.owner == owner:
            del self._leases[name]

    async def lease_holder(self, name: str) -> str | None:
        lease = self._live_lease(name)
        return None if lease is None else lease.owner

    def _live_counts(self, bucket: str) -> dict[str, int] | None:
        entry = self._counts.get(bucket)
        if entry is not None and entry[1] <= self._clock():
            del self._counts[bucket]
            return None
        return None if entry is None else entry[0]

    async def add_counts(self, batches: Iterable[Counts]) -> None:
        for b in batches:
            _check_ttl(b.ttl)
            fields = self._live_counts(b.bucket) or {}
            for f, n in b.fields.items():
                fields[f] = fields.get(f, 0) + n
            self._counts[b.bucket] = (fields, self._clock() + b.ttl)

    async def get_counts(self, buckets: Iterable[str]) -> dict[str, dict[str, int]]:
        return {b: dict(self._live_counts(b) or {}) for b in buckets}

    async def ping(self) -> None:
        return None

    async def put_sync(self, infos: Iterable[SyncInfo]) -> None:
        self._sync.update({i.name: i for i in infos})

    async def load_sync(self) -> dict[str, SyncInfo]:
        return dict(self._sync)

    async def close(self) -> None:
        return None


# --- Redis store ---------------------------------------------------------------------------

# KEYS[1] lease key; ARGV[1] owner, ARGV[2] ttl in ms. Take if free, renew if ours.
_ACQUIRE_LUA = """
local holder = redis.call('GET', KEYS[1])
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
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS[1] states hash, KEYS[2] generation; ARGV[1] generation seed, ARGV[2..] names.
# Bump only if something went away. One HDEL per name: unpack() of a long ARGV would overflow
# the Lua stack.
_FORGET_LUA = """
local removed = 0
for i = 2, #ARGV do
  removed = removed + redis.call('HDEL', KEYS[1], ARGV[i])
end
if removed > 0 then
  redis.call('SET', KEYS[2], ARGV[1], 'NX')
  redis.call('INCR', KEYS[2])
end
return removed
"""


def _text(raw: bytes | str, what: str) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise StoreError(f"bad {what}: not UTF-8") from exc


def _int(raw: bytes | str | None, what: str) -> int:
    if raw is None:
        return 0
    try:
        return int(raw)
    except ValueError as exc:
        raise StoreError(f"bad {what}: {raw!r} is not an integer") from exc


def _generation_seed() -> int:
    """Where a missing generation counter restarts: now in microseconds since the epoch.

    Larger than any count a previous incarnation of the key reached (one write per
    microsecond would be needed to catch up), and below 2**53, so exact as a JSON number.
    """
    return time.time_ns() // 1000


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
    Raises ValueError for a URL redis-py cannot parse.
    """

    kind = "redis"

    def __init__(self, url: str, *, prefix: str = "redirector:", timeout: float = 1.0) -> None:
        self.prefix = prefix
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
        self._acquire = self._client.register_script(_ACQUIRE_LUA)
        self._release = self._client.register_script(_RELEASE_LUA)
        self._forget = self._client.register_script(_FORGET_LUA)

    def _lease_key(self, name: str) -> str:
        return f"{self.prefix}lease:{name}"

    async def load(self) -> StoreData:
        async with _translated("load"), self._client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._states_key)
            pipe.get(self._master_key)
            pipe.get(self._gen_key)
            pipe.hgetall(self._repomd_key)
            pipe.get(self._repodata_key)
            raw_states, raw_master, raw_gen, raw_repomd, raw_checks = await pipe.execute()
        states: dict[str, MirrorState] = {}
        for raw_name, raw in raw_states.items():
            name = _text(raw_name, "states field")
            state = decode_state(raw)
            if state.name != name:
                raise StoreError(f"bad mirror state: {name!r} holds the state of {state.name!r}")
            states[name] = state
        return StoreData(
            states=types.MappingProxyType(states),
            master=None if raw_master is None else decode_master(raw_master),
            generation=_int(raw_gen, "generation"),
            repodata=_repodata(raw_repomd, raw_checks),
        )

    async def generation(self) -> int:
        async with _translated("generation"):
            raw = await self._client.get(self._gen_key)
        return _int(raw, "generation")

    async def put_states(self, states: Iterable[MirrorState]) -> None:
        # annotated with redis-py's own types: Mapping keys are invariant, dict[str, str] fails
        mapping: dict[FieldT, EncodableT] = {s.name: encode_state(s) for s in states}
        if not mapping:
            return
        async with _translated("put_states"), self._client.pipeline(transaction=True) as pipe:
            pipe.hset(self._states_key, mapping=mapping)
            pipe.set(self._gen_key, _generation_seed(), nx=True)
            pipe.incr(self._gen_key)
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
            pipe.set(self._gen_key, _generation_seed(), nx=True)
            pipe.incr(self._gen_key)
            await pipe.execute()

    async def put_master(self, master: MasterState) -> None:
        raw = encode_master(master)
        async with _translated("put_master"), self._client.pipeline(transaction=True) as pipe:
            pipe.set(self._master_key, raw)
            pipe.set(self._gen_key, _generation_seed(), nx=True)
            pipe.incr(self._gen_key)
            await pipe.execute()

    async def forget(self, names: Iterable[str]) -> None:
        args = sorted(set(names))
        if not args:
            return
        async with _translated("forget"):
            await self._forget(
                keys=[self._states_key, self._gen_key], args=[_generation_seed(), *args]
            )

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
            raw = await self._client.get(self._lease_key(name))
        return None if raw is None else _text(raw, "lease holder")

    async def add_counts(self, batches: Iterable[Counts]) -> None:
        todo = list(batches)
        for b in todo:
            _check_ttl(b.ttl)
        if not todo:
            return
        # MULTI/EXEC: all or nothing, so a batch that failed can be retried without counting
        # part of it twice.
        async with _translated("add_counts"), self._client.pipeline(transaction=True) as pipe:
            for b in todo:
                key = f"{self.prefix}stats:{b.bucket}"
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
            raws = await pipe.execute()
        return {
            b: {_text(f, "stats field"): _int(v, "stats count") for f, v in raw.items()}
            for b, raw in zip(names, raws, strict=True)
        }

    async def ping(self) -> None:
        async with _translated("ping"):
            await self._client.ping()

    async def put_sync(self, infos: Iterable[SyncInfo]) -> None:
        mapping: dict[FieldT, EncodableT] = {i.name: encode_sync(i) for i in infos}
        if mapping:
            async with _translated("put_sync"):
                await self._client.hset(f"{self.prefix}sync", mapping=mapping)

    async def load_sync(self) -> dict[str, SyncInfo]:
        async with _translated("load_sync"):
            raw = await self._client.hgetall(f"{self.prefix}sync")
        out: dict[str, SyncInfo] = {}
        for raw_name, value in raw.items():
            name = _text(raw_name, "sync field")
            info = decode_sync(value)
            if info.name != name:
                raise StoreError(f"bad sync info: {name!r} holds the info of {info.name!r}")
            out[name] = info
        return out

    async def close(self) -> None:
        async with _translated("close"):
            await self._client.aclose()


def _repodata(raw_repomd: Mapping[bytes, bytes], raw_checks: bytes | None) -> RepodataState | None:
    """The repodata state from its two keys; None before the first repodata pass wrote them."""
    if raw_checks is None:
        return None
    mirrors, checked_at = decode_repo_checks(raw_checks)
    repos = {_text(d, "repomd field"): decode_repomd_history(raw) for d, raw in raw_repomd.items()}
    return RepodataState(
        repos=types.MappingProxyType(repos),
        mirrors=types.MappingProxyType(mirrors),
        checked_at=checked_at,
    )


def open_store(url: str | None, *, prefix: str = "redirector:", timeout: float = 1.0) -> Store:
    """A RedisStore for `url` (not connected yet), or a MemoryStore when `url` is None."""
    if url is None:
        return MemoryStore()
    return RedisStore(url, prefix=prefix, timeout=timeout)
