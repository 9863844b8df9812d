"""Writing history to the store: one poller pass's transitions and events, a reload's event.

The bookkeeping is `core.history`'s; this module only reads what the store holds, hands it
over, and writes the result back. Callers decide what a StoreError means to them.
"""

from __future__ import annotations

from collections.abc import Iterable

from redirector.core import history
from redirector.core.models import MasterState, MirrorState
from redirector.store.base import Store


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
