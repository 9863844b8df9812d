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
    it, if absent (or not an integer: junk reads as `POISONED_GENERATION`), with the writer's
    wall clock in microseconds (`_BUMP_LUA`), so after Redis lost its data the count resumes
    far above any generation a reader still holds instead of climbing back through 1, 2, ...
    where a reader could miss a change.
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
``{prefix}history``
    Hash: mirror name -> its `MirrorHistory` as JSON (see `encode_history`): transitions and
    lag samples, bounded by `core.history`. Written by the poller after each pass
    (`put_history`); not part of ``gen``: no redirect depends on it.
``{prefix}events``
    List: the network's event log, one `encode_event` JSON per item, oldest first; appended
    and trimmed to its bound in one ``MULTI`` (`add_events`), so any process may log.
``{prefix}facts``
    Hash: path below the tree root -> the master's `FileFacts` for it as JSON (see
    `encode_facts`): size, date, hashes, piece hashes. Written by the hasher (`put_facts`),
    read by every process (`load_facts`) when ``{prefix}facts_gen`` moved; not part of ``gen``.
``{prefix}facts_gen``
    String holding an integer, ``INCR``-ed with every change of ``facts`` or ``badcopies``.
``{prefix}badcopies``
    Hash: ``<mirror> <path>`` -> a `BadCopy` as JSON: a mirror caught serving a copy that
    is not the master's (wrong size, a piece that differs), for the status page.
``{prefix}lease:{name}``
    String: the owner id of lease `name` (e.g. ``poller``) with a ``PX`` expiry. Taken,
    renewed and released only by Lua scripts that read the holder first, atomically, so an
    owner whose lease expired and was taken by another cannot renew or release it.

JSON values carry ``"v": 1``. Decoders ignore keys they do not know, so a newer writer may add
fields without a version bump; ``v`` changes only for an incompatible change, and a reader
refuses a version it does not know (`StoreError`).

Bad data: `load` decodes entry by entry. A value it cannot read (junk, a wrong type, a key of
the wrong Redis type, a date outside [`EARLIEST`, now + `FUTURE_SLACK`]) is dropped and listed
in `StoreData.poisoned`, never an error for the whole load: one stray write must not freeze
every reader on the last state it could read. Writers replace what they cannot read: every
write of a key first removes a value of the wrong Redis type, and the generation bump resets a
counter that is not an integer. The poller's next pass therefore repairs every key it owns.

If Redis loses its data (flush, restart without persistence), `RedisStore.load` returns no
states, no master and generation 0; readers then serve from nothing until the poller's next
cycle writes every configured mirror's state and the master again, which it must do each
cycle rather than writing only changes. Leases vanish too; the next `acquire_lease` retakes
them.
"""

from __future__ import annotations

import json
import logging
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
from redis.exceptions import RedisError, ResponseError
from redis.typing import EncodableT, FieldT

from redirector.core.filefacts import ALGORITHMS, BadCopy, FileFacts, valid_hex
from redirector.core.history import (
    MAX_EVENTS,
    Event,
    EventKind,
    HistoryData,
    LagSample,
    MirrorHistory,
    Phase,
    Transition,
)
from redirector.core.judge import FUTURE_SLACK
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

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

# Stored dates are plausible within [0 or EARLIEST, now + FUTURE_SLACK] (see `_date`). An old
# date on a mirror only makes it look behind or unchecked; an old master history would make
# every mirror look current, so the master's dates must be after 2000-01-01T00:00:00Z, which
# no SME master state predates.
EARLIEST = 946684800.0
# A backoff's retry time is in the future by design, but never by more than this (backoff_max
# is an hour by default); a later one would keep a mirror unprobed for good.
RETRY_HORIZON = 31 * 86400.0
# The generation that a counter holding junk reads as: readers load once, then wait for a
# writer to reset it (every write does), instead of failing on it forever.
POISONED_GENERATION = -2
_log = logging.getLogger(__name__)


class StoreError(Exception):
    """The store failed: backend unreachable, too slow, or holding data we cannot read."""


@dataclass(frozen=True, slots=True)
class Poison:
    """One stored value a load could not read, dropped from its result: where, and why."""

    key: str  # the key without prefix ("states", "master", "gen", ...) or a file section
    field: str | None  # the hash field or entry name; None for the key as a whole
    reason: str


@dataclass(frozen=True, slots=True)
class StoreData:
    """A consistent snapshot of the store."""

    states: Mapping[str, MirrorState]  # by mirror name
    master: MasterState | None
    generation: int  # differs after every write; equal generations mean equal data
    repodata: RepodataState | None = None  # the last repodata pass; None before the first
    poisoned: tuple[Poison, ...] = ()  # values dropped because they could not be read

    def poisoned_states(self) -> frozenset[str]:
        """Names of the ``states`` entries that were dropped, for the writer to replace."""
        return frozenset(p.field for p in self.poisoned if p.key == "states" and p.field)


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

    async def load_history(self) -> HistoryData:
        """Every mirror's history and the event log (empty before the first pass)."""
        ...

    async def put_history(self, histories: Iterable[MirrorHistory]) -> None:
        """Insert or replace these mirrors' histories (last wins per name)."""
        ...

    async def add_events(self, events: Iterable[Event], keep: int = MAX_EVENTS) -> None:
        """Append to the event log, then keep only its last `keep` events, atomically."""
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
    # json reads 1e400 as infinity, and an int past float range cannot become a time
    try:
        out = float(value)
    except OverflowError as exc:
        raise StoreError(f"bad {what}: {key} is out of range") from exc
    if not math.isfinite(out):
        raise StoreError(f"bad {what}: {key} is not finite")
    return out


def _date(
    obj: Mapping[str, Any],
    key: str,
    what: str,
    now: float | None,
    horizon: float = FUTURE_SLACK,
    earliest: float = 0.0,
) -> float:
    """A unix time, within [earliest, now + horizon] when `now` is given.

    The upper bound is what the poller itself accepts from a trace (judge.FUTURE_SLACK): a
    stored date past it was never written by us, and believing it makes every mirror look
    current (a master dated 2100) or breaks date formatting (1e308).
    """
    value = _number(obj, key, what)
    if now is not None and not earliest <= value <= now + horizon:
        raise StoreError(f"bad {what}: {key} {value!r} is not a plausible date")
    return value


def _optional_date(
    obj: Mapping[str, Any], key: str, what: str, now: float | None, horizon: float = FUTURE_SLACK
) -> float | None:
    return None if obj.get(key) is None else _date(obj, key, what, now, horizon)


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
        }
    )


def decode_state(raw: str | bytes, *, now: float | None = None) -> MirrorState:
    """Parse `encode_state` output; unknown keys are ignored, anything else wrong is StoreError.

    Only ``v``, ``name``, ``status`` and ``checked_at`` are required; the rest default as in
    `MirrorState`. With `now`, every date must be plausible at `now` (see `_date`).
    """
    what = "mirror state"
    obj = _load_object(raw, what)
    try:
        status = Status(obj.get("status"))
    except ValueError as exc:
        raise StoreError(f"bad {what}: unknown status {obj.get('status')!r}") from exc
    failures = obj.get("failures", 0)
    if isinstance(failures, bool) or not isinstance(failures, int) or not 0 <= failures <= 10**9:
        raise StoreError(f"bad {what}: failures must be a non-negative integer")
    lacks = obj.get("lacks", [])
    if not isinstance(lacks, list) or not all(isinstance(p, str) for p in lacks):
        raise StoreError(f"bad {what}: lacks must be a list of strings")
    return MirrorState(
        name=_string(obj, "name", what),
        status=status,
        checked_at=_date(obj, "checked_at", what, now),
        master_date=_optional_date(obj, "master_date", what, now),
        behind_since=_optional_date(obj, "behind_since", what, now),
        own_date=_optional_date(obj, "own_date", what, now),
        error=_optional_string(obj, "error", what),
        failures=failures,
        lacks=tuple(lacks),
        covered=_string_tuple(obj, "covered", what),
        coverage_at=_optional_date(obj, "coverage_at", what, now),
        coverage_note=_optional_string(obj, "coverage_note", what),
        retry_at=_optional_date(obj, "retry_at", what, now, RETRY_HORIZON),
        trace_name=_optional_string(obj, "trace_name", what),
        note=_optional_string(obj, "note", what),
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


def decode_master(raw: str | bytes, *, now: float | None = None) -> MasterState:
    """Parse `encode_master` output; unknown keys are ignored, anything else wrong is StoreError.

    The history must be in date order (the poller appends only newer dates). With `now`,
    every date must be plausible at `now` (see `_date`).
    """
    what = "master state"
    obj = _load_object(raw, what)
    history = obj.get("history", [])
    if not isinstance(history, list):
        raise StoreError(f"bad {what}: history must be a list")
    versions: list[MasterVersion] = []
    for entry in history:
        if not isinstance(entry, dict):
            raise StoreError(f"bad {what}: history entries must be objects")
        version = MasterVersion(
            date=_date(entry, "date", what, now, earliest=EARLIEST),
            first_seen=_date(entry, "first_seen", what, now, earliest=EARLIEST),
        )
        if versions and version.date <= versions[-1].date:
            raise StoreError(f"bad {what}: history is not in date order")
        versions.append(version)
    return MasterState(
        history=tuple(versions),
        checked_at=_date(obj, "checked_at", what, now),
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


def decode_repomd_history(raw: str | bytes, *, now: float | None = None) -> RepomdHistory:
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
                first_seen=_date(e, "first_seen", what, now),
            )
            for e in history
        ),
        checked_at=_date(obj, "checked_at", what, now),
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


def decode_repo_checks(
    raw: str | bytes, *, now: float | None = None
) -> tuple[dict[str, dict[str, RepoCheck]], float]:
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
    return out, _date(obj, "checked_at", what, now)


# --- history -------------------------------------------------------------------------------


def encode_history(h: MirrorHistory) -> str:
    """`h` as a JSON object with ``"v": 1``; `decode_history` reverses it exactly."""
    return _dumps(
        {
            "v": SCHEMA_VERSION,
            "name": h.name,
            "transitions": [[t.at, t.phase.value, t.reason] for t in h.transitions],
            "lags": [[x.at, x.lag] for x in h.lags],
        }
    )


def _pair_number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StoreError(f"bad {what}: {value!r} is not a number")
    return float(value)


_MAX_SPAN = 100 * 365 * 86400.0  # a lag or an outage longer than this was not measured by us


def _plausible(value: float, what: str, now: float | None, *, span: bool = False) -> float:
    """`value` as a date within [0, now + FUTURE_SLACK], or (`span`) a duration within
    [0, 100 years]: the views format both, and 1e308 must not reach a formatter."""
    upper = _MAX_SPAN if span else (now + FUTURE_SLACK if now is not None else math.inf)
    if not 0.0 <= value <= upper:
        raise StoreError(f"bad {what}: {value!r} is out of range")
    return value


def decode_history(raw: str | bytes, now: float | None = None) -> MirrorHistory:
    """Parse `encode_history` output; unknown keys are ignored, anything else wrong is
    StoreError. With `now`, dates past now + FUTURE_SLACK are wrong too."""
    what = "mirror history"
    obj = _load_object(raw, what)
    transitions = obj.get("transitions", [])
    lags = obj.get("lags", [])
    if not isinstance(transitions, list) or not isinstance(lags, list):
        raise StoreError(f"bad {what}: transitions and lags must be lists")
    ts = []
    for t in transitions:
        if not isinstance(t, list) or len(t) != 3:
            raise StoreError(f"bad {what}: a transition must be [at, phase, reason]")
        try:
            phase = Phase(t[1])
        except ValueError as exc:
            raise StoreError(f"bad {what}: unknown phase {t[1]!r}") from exc
        if t[2] is not None and not isinstance(t[2], str):
            raise StoreError(f"bad {what}: a transition's reason must be a string or null")
        ts.append(Transition(_plausible(_pair_number(t[0], what), what, now), phase, t[2]))
    samples = []
    for x in lags:
        if not isinstance(x, list) or len(x) != 2:
            raise StoreError(f"bad {what}: a lag sample must be [at, lag]")
        lag = None if x[1] is None else _plausible(_pair_number(x[1], what), what, now, span=True)
        samples.append(LagSample(_plausible(_pair_number(x[0], what), what, now), lag))
    return MirrorHistory(_string(obj, "name", what), tuple(ts), tuple(samples))


def encode_event(e: Event) -> str:
    """`e` as a JSON object with ``"v": 1``; `decode_event` reverses it exactly."""
    return _dumps(
        {
            "v": SCHEMA_VERSION,
            "at": e.at,
            "kind": e.kind.value,
            "subject": e.subject,
            "detail": e.detail,
            "duration": e.duration,
        }
    )


def decode_event(raw: str | bytes, now: float | None = None) -> Event:
    """Parse `encode_event` output; unknown keys are ignored, anything else wrong is StoreError.
    With `now`, a date past now + FUTURE_SLACK is wrong too."""
    what = "event"
    obj = _load_object(raw, what)
    try:
        kind = EventKind(obj.get("kind"))
    except ValueError as exc:
        raise StoreError(f"bad {what}: unknown kind {obj.get('kind')!r}") from exc
    duration = None if obj.get("duration") is None else _number(obj, "duration", what)
    return Event(
        at=_date(obj, "at", what, now),
        kind=kind,
        subject=_optional_string(obj, "subject", what),
        detail=_string(obj, "detail", what),
        duration=None if duration is None else _plausible(duration, what, now, span=True),
    )


def _named_history(name: object, raw: object, now: float) -> MirrorHistory:
    if not isinstance(name, str) or not isinstance(raw, str | bytes):
        raise StoreError("bad mirror history: not a string")
    h = decode_history(raw, now)
    if h.name != name:
        raise StoreError(f"bad mirror history: {name!r} holds that of {h.name!r}")
    return h


def _event(raw: object, now: float) -> Event:
    if not isinstance(raw, str | bytes):
        raise StoreError("bad event: not a string")
    return decode_event(raw, now)


def decode_histories(
    raw_history: Mapping[Any, Any], raw_events: Iterable[Any], now: float, poisoned: list[Poison]
) -> HistoryData:
    """Every mirror history and event that reads, as of `now`; each one that does not is
    listed in `poisoned` and dropped, so one bad entry costs only itself."""
    mirrors: dict[str, MirrorHistory] = {}
    for raw_name, raw in raw_history.items():
        name = raw_name.decode("utf-8", "replace") if isinstance(raw_name, bytes) else raw_name
        try:
            mirrors[name] = _named_history(name, raw, now)
        except StoreError as e:
            poisoned.append(Poison("history", str(name)[:80], str(e)))
    events = []
    for raw in raw_events:
        try:
            events.append(_event(raw, now))
        except StoreError as e:
            poisoned.append(Poison("events", None, str(e)))
    return HistoryData(types.MappingProxyType(mirrors), tuple(events))


def check_keep(keep: int) -> None:
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be a whole number from 1 up, got {keep!r}")


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


def decode_sync(raw: str | bytes, *, now: float | None = None) -> SyncInfo:
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
        checked_at=_date(obj, "checked_at", what, now),
        upstream=_optional_string(obj, "upstream", what),
        hierarchy=tuple(HierarchyEntry(*x) for x in lines),
        error=_optional_string(obj, "error", what),
    )


# --- file facts: the master's sizes and hashes, and mirrors caught with wrong copies --------

MAX_FILE_SIZE = 2**53  # past this a JSON number is no longer exact
FACT_SOURCES = frozenset({"tree", "sums"})


@runtime_checkable
class FactStore(Protocol):
    """Where the hasher keeps the master's file facts, shared by every process."""

    async def put_facts(self, facts: Iterable[FileFacts]) -> None:
        """Insert or replace these files' facts (last wins per path)."""
        ...

    async def drop_facts(self, paths: Iterable[str]) -> None:
        """Forget the facts of these paths (files gone from the master)."""
        ...

    async def load_facts(self) -> dict[str, FileFacts]:
        """Every file's facts by path; an entry that cannot be read is left out."""
        ...

    async def facts_generation(self) -> int:
        """Moves with every change of the facts; cheap to poll."""
        ...

    async def put_bad_copies(self, copies: Iterable[BadCopy]) -> None:
        """Record mirrors caught with a wrong copy (last wins per mirror and path); moves the
        facts generation, so every process stops sending clients there."""
        ...

    async def load_bad_copies(self) -> list[BadCopy]:
        """Every recorded wrong copy, newest first; unreadable entries left out."""
        ...


def _tree_path(obj: Mapping[str, Any], key: str, what: str) -> str:
    """A path below the tree root as the hasher writes it: relative, no '.' or '..' part."""
    value = _string(obj, key, what)
    parts = value.split("/")
    if (
        not value
        or len(value) > 4096
        or not value.isprintable()
        or any(p in {"", ".", ".."} for p in parts)
    ):
        raise StoreError(f"bad {what}: {key} {value[:100]!r} is not a path below the tree")
    return value


def _finite(obj: Mapping[str, Any], key: str, what: str) -> float:
    value = _number(obj, key, what)
    if not math.isfinite(value) or not -(2**40) < value < 2**40:
        raise StoreError(f"bad {what}: {key} is out of range")
    return value


def encode_facts(f: FileFacts) -> str:
    """`f` as a JSON object with ``"v": 1``; `decode_facts` reverses it exactly."""
    return _dumps(
        {
            "v": SCHEMA_VERSION,
            "path": f.path,
            "size": f.size,
            "mtime": f.mtime,
            **{a: f.hash(a) for a in ALGORITHMS},
            "piece_length": f.piece_length,
            "pieces": list(f.pieces),
            "source": f.source,
        }
    )


def decode_facts(raw: str | bytes) -> FileFacts:
    """Parse `encode_facts` output. Every hash must be hex of its algorithm's length, and the
    pieces must cover the size exactly: facts that a client would check a download against
    are refused (StoreError) rather than half believed."""
    what = "file facts"
    obj = _load_object(raw, what)
    size = _whole(obj, "size", what)
    if size > MAX_FILE_SIZE:
        raise StoreError(f"bad {what}: size is out of range")
    hashes: dict[str, str | None] = {}
    for a in ALGORITHMS:
        value = obj.get(a)
        if value is not None and not valid_hex(a, value):
            raise StoreError(f"bad {what}: {a} is not a {a} hex digest")
        hashes[a] = value
    piece_length = _whole(obj, "piece_length", what) if "piece_length" in obj else 0
    pieces = _string_tuple(obj, "pieces", what)
    if pieces:
        if piece_length <= 0 or len(pieces) != -(-size // piece_length):
            raise StoreError(f"bad {what}: {len(pieces)} pieces do not cover {size} bytes")
        if not all(valid_hex("sha256", p) for p in pieces):
            raise StoreError(f"bad {what}: pieces must be sha256 hex digests")
    source = obj.get("source", "tree")
    if source not in FACT_SOURCES:
        raise StoreError(f"bad {what}: unknown source {source!r}")
    return FileFacts(
        path=_tree_path(obj, "path", what),
        size=size,
        mtime=_finite(obj, "mtime", what),
        md5=hashes["md5"],
        sha1=hashes["sha1"],
        sha256=hashes["sha256"],
        sha512=hashes["sha512"],
        piece_length=piece_length if pieces else 0,
        pieces=pieces,
        source=source,
    )


def encode_bad_copy(b: BadCopy) -> str:
    return _dumps(
        {
            "v": SCHEMA_VERSION,
            "mirror": b.mirror,
            "path": b.path,
            "reason": b.reason,
            "seen_at": b.seen_at,
        }
    )


def decode_bad_copy(raw: str | bytes) -> BadCopy:
    what = "bad copy"
    obj = _load_object(raw, what)
    return BadCopy(
        mirror=_string(obj, "mirror", what)[:200],
        path=_tree_path(obj, "path", what),
        reason=_string(obj, "reason", what)[:300],
        seen_at=_finite(obj, "seen_at", what),
    )


def bad_copy_field(b: BadCopy) -> str:
    """The field a bad copy is kept under: one per mirror and path (a space is in neither a
    mirror name nor, as the hasher writes them, the path's start)."""
    return f"{b.mirror} {b.path}"


def decode_each(
    raws: Mapping[Any, str | bytes], decode: Callable[[str | bytes], Any], what: str
) -> list[tuple[str, Any]]:
    """(field, value) for every value `decode` accepts; the rest are left out and logged, so
    one damaged entry costs that entry, not every file's facts."""
    out = []
    for field_name, raw in raws.items():
        try:
            name = (
                field_name.decode("utf-8", "surrogateescape")
                if isinstance(field_name, bytes)
                else str(field_name)
            )
            out.append((name, decode(raw)))
        except StoreError as exc:
            _log.warning("%s %r left out: %s", what, field_name, exc)
    return out


def facts_by_path(entries: Iterable[tuple[str, FileFacts]]) -> dict[str, FileFacts]:
    """Decoded facts by path; a value filed under another path than its own is not believed."""
    out: dict[str, FileFacts] = {}
    for field_name, f in entries:
        if f.path == field_name:
            out[f.path] = f
        else:
            _log.warning("file facts %r left out: they are those of %r", field_name, f.path)
    return out


def _check_ttl(ttl: float) -> None:
    if not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"lease ttl must be a positive number of seconds, got {ttl!r}")


# --- reading a whole store, entry by entry ----------------------------------------------


def field_name(raw: bytes | str) -> str:
    """A hash field or entry name as text; bytes that are not UTF-8 keep their value through
    surrogate escapes, so a writer can still name (and delete) them."""
    return raw if isinstance(raw, str) else raw.decode("utf-8", "surrogateescape")


def _json_value(raw_name: bytes | str, value: Any, what: str) -> str | bytes:
    """The stored JSON text of one entry, after checking its name is UTF-8."""
    if isinstance(raw_name, bytes):
        try:
            raw_name.decode()
        except UnicodeDecodeError as exc:
            raise StoreError(f"bad {what}: name is not UTF-8") from exc
    if not isinstance(value, str | bytes):
        raise StoreError(f"bad {what}: not a JSON string")
    return value


def _named_state(name: str, raw: str | bytes, now: float) -> MirrorState:
    state = decode_state(raw, now=now)
    if state.name != name:
        raise StoreError(f"bad mirror state: {name!r} holds the state of {state.name!r}")
    return state


def decode_states(
    raw: Mapping[Any, Any], now: float, poisoned: list[Poison]
) -> dict[str, MirrorState]:
    """Every readable state of a ``states`` hash; each unreadable one goes to `poisoned`."""
    out: dict[str, MirrorState] = {}
    for raw_name, value in raw.items():
        name = field_name(raw_name)
        try:
            out[name] = _named_state(name, _json_value(raw_name, value, "mirror state"), now)
        except StoreError as e:
            poisoned.append(Poison("states", name, str(e)))
    return out


def decode_master_entry(
    raw: str | bytes | None, now: float, poisoned: list[Poison]
) -> MasterState | None:
    """The master state, or None when absent or unreadable (then listed in `poisoned`)."""
    if raw is None:
        return None
    try:
        return decode_master(raw, now=now)
    except StoreError as e:
        poisoned.append(Poison("master", None, str(e)))
        return None


def decode_repodata(
    raw_repomd: Mapping[Any, Any],
    raw_checks: str | bytes | None,
    now: float,
    poisoned: list[Poison],
) -> RepodataState | None:
    """The repodata state from its two keys; None before the first repodata pass wrote them.

    An unreadable history drops that repo only; unreadable verdicts drop every verdict but
    keep the histories, which the next repodata pass needs to judge the mirrors again.
    """
    repos: dict[str, RepomdHistory] = {}
    for raw_dir, value in raw_repomd.items():
        d = field_name(raw_dir)
        try:
            repos[d] = decode_repomd_history(_json_value(raw_dir, value, "repomd history"), now=now)
        except StoreError as e:
            poisoned.append(Poison("repomd", d, str(e)))
    if raw_checks is None:
        return None
    try:
        mirrors, checked_at = decode_repo_checks(raw_checks, now=now)
    except StoreError as e:
        poisoned.append(Poison("repodata", None, str(e)))
        if not repos:
            return None
        mirrors, checked_at = {}, max(h.checked_at for h in repos.values())
    return RepodataState(
        repos=types.MappingProxyType(repos),
        mirrors=types.MappingProxyType(mirrors),
        checked_at=checked_at,
    )


def _named_sync(name: str, raw: str | bytes, now: float) -> SyncInfo:
    info = decode_sync(raw, now=now)
    if info.name != name:
        raise StoreError(f"bad sync info: {name!r} holds the info of {info.name!r}")
    return info


def decode_syncs(raw: Mapping[Any, Any], now: float, poisoned: list[Poison]) -> dict[str, SyncInfo]:
    """Every readable entry of the ``sync`` hash; each unreadable one goes to `poisoned`."""
    out: dict[str, SyncInfo] = {}
    for raw_name, value in raw.items():
        name = field_name(raw_name)
        try:
            out[name] = _named_sync(name, _json_value(raw_name, value, "sync info"), now)
        except StoreError as e:
            poisoned.append(Poison("sync", name, str(e)))
    return out


class PoisonLog:
    """Logs each unreadable value once while it stays unreadable, and again if it comes back
    after a repair: a reader loads twice a second, a line per load would flood the log."""

    def __init__(self, where: str) -> None:
        self._where = where
        self._seen: dict[str, frozenset[tuple[str, str | None]]] = {}

    def report(self, scope: str, poisoned: Iterable[Poison]) -> None:
        """`poisoned`: everything unreadable in `scope` (e.g. "load") at this read."""
        now = {(p.key, p.field): p for p in poisoned}
        before = self._seen.get(scope, frozenset())
        for where, p in now.items():
            if where not in before:
                entry = p.key if p.field is None else f"{p.key}[{p.field!r}]"
                log.warning(
                    "%s: dropped unreadable %s (the next write replaces it): %s",
                    self._where, entry, p.reason,
                )  # fmt: skip
        self._seen[scope] = frozenset(now)


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
        self._history: dict[str, MirrorHistory] = {}
        self._events: list[Event] = []
        self._facts: dict[str, FileFacts] = {}  # the master's file facts, by path
        self._facts_gen = 0
        self._bad_copies: dict[tuple[str, str], BadCopy] = {}

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
        gone = set(names)
        removed = [n for n in gone if self._states.pop(n, None) is not None]
        for n in gone:
            self._history.pop(n, None)
        if removed:
            self._generation += 1

    async def load_history(self) -> HistoryData:
        return HistoryData(types.MappingProxyType(dict(self._history)), tuple(self._events))

    async def put_history(self, histories: Iterable[MirrorHistory]) -> None:
        self._history.update({h.name: h for h in histories})

    async def add_events(self, events: Iterable[Event], keep: int = MAX_EVENTS) -> None:
        check_keep(keep)
        self._events.extend(events)
        del self._events[:-keep]

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

    async def put_facts(self, facts: Iterable[FileFacts]) -> None:
        new = {f.path: f for f in facts}
        if new:
            self._facts.update(new)
            self._facts_gen += 1

    async def drop_facts(self, paths: Iterable[str]) -> None:
        if [p for p in set(paths) if self._facts.pop(p, None) is not None]:
            self._facts_gen += 1

    async def load_facts(self) -> dict[str, FileFacts]:
        return dict(self._facts)

    async def facts_generation(self) -> int:
        return self._facts_gen

    async def put_bad_copies(self, copies: Iterable[BadCopy]) -> None:
        new = {(b.mirror, b.path): b for b in copies}
        if new:
            self._bad_copies.update(new)
            self._facts_gen += 1

    async def load_bad_copies(self) -> list[BadCopy]:
        return sorted(self._bad_copies.values(), key=lambda b: -b.seen_at)

    async def close(self) -> None:
        return None


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


def open_store(url: str | None, *, prefix: str = "redirector:", timeout: float = 1.0) -> Store:
    """A RedisStore for `url` (not connected yet), or a MemoryStore when `url` is None."""
    if url is None:
        return MemoryStore()
    return RedisStore(url, prefix=prefix, timeout=timeout)
