"""The state handlers serve from: an immutable snapshot, swapped whole, refreshed in background."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from redirector.core.models import MasterState, Mirror, MirrorState, RepodataState
from redirector.core.selection import Candidate, name_seed
from redirector.store.base import Poison, Store, StoreData, StoreError

log = logging.getLogger(__name__)

# How often the refresher checks that the store takes writes (`Store.ping`): reads alone say
# nothing of a file store whose directory turned read-only, or full.
PING_INTERVAL = 5.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Configured mirrors joined with their last known state; never mutated once built."""

    candidates: tuple[Candidate, ...]
    master: MasterState | None
    generation: int
    loaded_at: float  # wall-clock time this state was read from the store
    seeds: dict[str, int] = field(default_factory=dict)
    repodata: RepodataState | None = None  # the master's repomd histories, mirrors' verdicts

    @classmethod
    def build(cls, mirrors: Sequence[Mirror], data: StoreData | None, loaded_at: float) -> Snapshot:
        states: dict[str, MirrorState] = dict(data.states) if data else {}
        repodata = data.repodata if data else None
        return cls(
            candidates=tuple(
                Candidate(
                    m,
                    states.get(m.name),
                    repodata.bad_for(m.name) if repodata is not None else frozenset(),
                )
                for m in mirrors
            ),
            master=data.master if data else None,
            generation=data.generation if data else -1,
            loaded_at=loaded_at,
            seeds={m.name: name_seed(m.name) for m in mirrors},
            repodata=repodata,
        )


def lost_data(data: StoreData, current: Snapshot) -> bool:
    """Whether `data` is a store that lost its contents (no mirror state at all) while
    `current` holds some: a flush or a restart without persistence, not news from the poller,
    which writes every enabled mirror's state each pass."""
    return not data.states and any(c.state is not None for c in current.candidates)


class SnapshotHolder:
    """Holds the current snapshot and how the store behaved the last time it was asked."""

    def __init__(self, mirrors: Sequence[Mirror], clock: Callable[[], float] = time.time) -> None:
        self.mirrors = tuple(mirrors)
        self._clock = clock
        self.current = Snapshot.build(self.mirrors, None, clock())
        self.store_error: str | None = None
        self.store_checked_at: float | None = None
        self.write_error: str | None = None  # the last `Store.ping` failed: writes would fail
        self._pinged_at: float | None = None
        # What the last load had to drop as unreadable (the poller's next pass replaces it).
        self.poisoned: tuple[Poison, ...] = ()
        # The whole of the last load, the states of mirrors not configured here included: a
        # reload that adds a mirror finds its state at once (another process polled it).
        self._data: StoreData | None = None
        self._empty = False  # the store answered with no state while we had some

    def set_mirrors(self, mirrors: Sequence[Mirror]) -> None:
        """A reloaded config: rebuild from the same state with the new mirror list."""
        self.mirrors = tuple(mirrors)
        cur = self.current
        data = self._data or StoreData(
            states={c.mirror.name: c.state for c in cur.candidates if c.state is not None},
            master=cur.master,
            generation=cur.generation,
            repodata=cur.repodata,
        )
        self.current = Snapshot.build(self.mirrors, data, cur.loaded_at)

    async def refresh(self, store: Store) -> bool:
        """Reload from the store when its generation moved; True when the snapshot changed.

        On a store failure the last snapshot stays in place: serving slightly old state beats
        serving nothing.
        """
        try:
            gen = await store.generation()
            changed = gen != self.current.generation
            if changed:
                data = await store.load()
                if lost_data(data, self.current):
                    # Redis flushed or restarted empty: until the poller writes again, the
                    # last snapshot beats sending every client to the master. Not marked as
                    # loaded, so the next refresh looks again.
                    if not self._empty:
                        log.warning("store came back empty: serving the last snapshot")
                    self._empty = True
                    changed = False
                else:
                    self._empty = False
                    self._data = data
                    self.current = Snapshot.build(self.mirrors, data, self._clock())
                self.poisoned = data.poisoned
            await self._ping(store)
        except StoreError as e:
            if self.store_error is None:
                log.warning("store unreachable, serving the last snapshot: %s", e)
            self.store_error = str(e)
            self.store_checked_at = self._clock()
            return False
        if self.store_error is not None:
            log.warning("store reachable again")
        self.store_error = None
        self.store_checked_at = self._clock()
        return changed

    async def _ping(self, store: Store) -> None:
        now = self._clock()
        if self._pinged_at is not None and abs(now - self._pinged_at) < PING_INTERVAL:
            return
        self._pinged_at = now
        try:
            await store.ping()
        except StoreError as e:
            if self.write_error is None:
                log.warning("store does not take writes: %s", e)
            self.write_error = str(e)
        else:
            if self.write_error is not None:
                log.warning("store takes writes again")
            self.write_error = None


async def refresh_forever(holder: SnapshotHolder, store: Store, interval: float) -> None:
    """Keep `holder` within `interval` seconds of the store until cancelled."""
    while True:
        await holder.refresh(store)
        await asyncio.sleep(interval)
