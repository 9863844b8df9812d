"""Writing history to the store: one poller pass's transitions and events, a reload's event.

The bookkeeping is `core.history`'s; this module only reads what the store holds, hands it
over, and writes the result back. Callers decide what a StoreError means to them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from redirector.core import history
from redirector.core.models import MasterState, MirrorState
from redirector.store.base import Store, StoreError


async def record_pass(
    store: Store,
    states: Iterable[MirrorState],
    prev_master: MasterState | None,
    master: MasterState,
    now: float,
) -> list[history.Event]:
    """Extend every mirror's history by one pass and log its events; returns the events.

    Only the polling process calls this (it holds the lease), so the read-modify-write of the
    histories races nobody; events are appended atomically and may come from anyone.
    """
    prev = await store.load_history()
    histories, events = history.record_pass(prev.mirrors, states, prev_master, master, now)
    await store.put_history(histories)
    await store.add_events(events)
    return events


async def record_reload(store: Store, *, ok: bool, path: str, detail: str, now: float) -> None:
    """Log a config reload in the event log: applied (`ok`) or refused, with why.

    `detail` says what changed, or for a refusal the file, line and field that failed.
    """
    await store.add_events([history.reload_event(ok=ok, path=path, detail=detail, now=now)])


READ_MAX_AGE = 5.0  # seconds a process reuses the history it read for its status pages


class HistoryReader:
    """Reads the history for status pages at most every `max_age` seconds per process.

    Decoding a month of transitions and a day of lag samples per mirror takes tens of
    milliseconds, on the event loop that also serves redirects: a page refreshed by many
    browsers must not pay that once per view. A new snapshot generation (a poller pass
    wrote) reads again at once, so a page never shows a mirror back up while its history
    still says down for long. On a store failure the last history read is served with the
    error; before any success, None with it.
    """

    def __init__(
        self,
        store: Store,
        clock: Callable[[], float] = time.monotonic,
        max_age: float = READ_MAX_AGE,
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_age = max_age
        self._last: history.HistoryData | None = None
        self._read_at = -float("inf")
        self._generation: int | None = None

    async def get(
        self, generation: int | None = None
    ) -> tuple[history.HistoryData | None, str | None]:
        """The history and, when the store could not be read this time, why.

        `generation`: the snapshot's, to read again when it moved since the last read.
        """
        now = self._clock()
        fresh = now - self._read_at < self._max_age and generation == self._generation
        if self._last is not None and fresh:
            return self._last, None
        try:
            self._last = await self._store.load_history()
        except StoreError as e:
            return self._last, str(e)
        self._read_at = now
        self._generation = generation
        return self._last, None
