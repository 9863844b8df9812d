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

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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


def _check_ttl(ttl: float) -> None:
    if not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"lease ttl must be a positive number of seconds, got {ttl!r}")
