"""The in-process store: one process, no I/O, the default with no Redis configured."""

from __future__ import annotations

import time
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass

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
from redirector.store.base import Counts, StoreData, _check_ttl
from redirector.store.codec import check_keep

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
