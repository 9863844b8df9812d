"""`redirector poll`: the poller alone, or one pass shown as a table (`--once`)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TextIO

import aiohttp

from redirector.cli.workers import check_address
from redirector.config.settings import Settings
from redirector.core.condition import assess
from redirector.core.humanize import duration, when
from redirector.core.models import MasterState, MirrorState
from redirector.core.selection import Candidate
from redirector.poll.poller import PassResult, poll_once, run_poller, stop_task
from redirector.poll.probe import open_session
from redirector.poll.repodata import make_repodata_pass
from redirector.reload import Reloader, watching
from redirector.store import open_store
from redirector.store.base import Store, StoreData, StoreError
from redirector.store.lease import Lease, let_go
from redirector.store.memory import MemoryStore
from redirector.views.condition import state_table
from redirector.web.pollermetrics import PollerMetrics, serving


async def poll_command(
    settings: Settings, *, once: bool, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """`redirector poll`: the poller alone (with the lease when Redis is configured).

    `once`: one pass with progress on `err`, then the table on `out`. Its results are written
    to the store only when no other process holds the poller lease. Exit status 0 when at
    least one mirror can be served, 1 when none can.
    """
    if not once and settings.poller_metrics_listen is not None:
        host, port = settings.poller_metrics_listen
        try:
            check_address(host, port)
        except OSError as e:
            # Said once, before any work: a poller without its port would run unwatched.
            print(f"poller_metrics_listen {host}:{port}: cannot listen: {e}", file=err)
            return 1
    store = open_store(settings.redis_url, prefix=settings.redis_prefix)
    try:
        async with open_session(settings.probe_timeout) as session:
            if not once:
                # A shared store (Redis, or a file shared by workers): only the holder polls.
                lease = Lease(store, ttl=settings.lease_ttl) if store.kind != "memory" else None
                # SIGTERM (systemd stop) ends it like ^C: the lease is released on the way out.
                stopping = asyncio.Event()
                asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
                with contextlib.suppress(asyncio.CancelledError):
                    async with (
                        watching(settings) as reloader,
                        _metrics(settings, reloader, store, err) as observe,
                    ):
                        poller = asyncio.create_task(
                            run_poller(
                                session,
                                settings,
                                store,
                                on_pass=observe,
                                lease=lease,
                                current=reloader.live.get,
                                hooks=[
                                    make_repodata_pass(settings, store, current=reloader.live.get)
                                ],
                            )
                        )
                        signalled = asyncio.create_task(stopping.wait())
                        try:
                            await asyncio.wait(
                                {poller, signalled}, return_when=asyncio.FIRST_COMPLETED
                            )
                        finally:
                            signalled.cancel()
                            # Not one cancel: a hook (or a library under it) that swallows it
                            # would keep the process, and the lease, for ever.
                            await stop_task(poller)
                return 0
            return await _poll_once_command(session, settings, store, out, err)
    finally:
        with contextlib.suppress(StoreError):
            await store.close()


@contextlib.asynccontextmanager
async def _metrics(
    settings: Settings, reloader: Reloader, store: Store, err: TextIO
) -> AsyncIterator[Callable[[PassResult], Awaitable[None]] | None]:
    """The poller's own /metrics on `poller_metrics_listen` while the block runs; yields the
    pass observer for `run_poller` (None when no port is configured)."""
    where = settings.poller_metrics_listen
    if where is None:
        yield None
        return
    pm = PollerMetrics(reloader.live, store, reloader)
    async with serving(pm.metrics, *where) as port:
        print(f"poller metrics on http://{where[0]}:{port}/metrics", file=err, flush=True)
        yield pm.observe


async def _poll_once_command(
    session: aiohttp.ClientSession, settings: Settings, store: Store, out: TextIO, err: TextIO
) -> int:
    lease: Lease | None = None
    keeper: asyncio.Task[None] | None = None
    if store.kind != "memory":
        lease = Lease(store, ttl=settings.lease_ttl)
        if await lease.confirm():
            keeper = asyncio.create_task(lease.keep())  # held through a pass of any length
        else:
            holder = await _holder(store)
            print(f"another process polls ({holder}): this pass is shown, not written", file=err)
            store = _ReadOnly(store)
            lease = None
    enabled = [m for m in settings.mirrors if m.enabled]
    by_name = {m.name: m for m in enabled}
    done = 0
    tty = err.isatty()

    def progress(state: MirrorState) -> None:
        nonlocal done
        done += 1
        if tty:
            print(f"\rprobed {done}/{len(enabled)}", end="", file=err, flush=True)
        else:
            # The word the table will use, not the poller's raw status: one name per state.
            m = by_name.get(state.name)
            word = state.status.value
            if m is not None:
                word = assess(Candidate(m, state), time.time(), settings.max_lag).condition.value
            print(f"[{done}/{len(enabled)}] {state.name}: {word}", file=err)

    print(f"probing the master and {len(enabled)} mirrors ...", file=err, flush=True)
    try:
        guard = lease.confirm if lease is not None else None
        result = await poll_once(session, settings, store, progress=progress, guard=guard)
    finally:
        await let_go(lease, keeper)
    if tty:
        print(file=err)
    now = time.time()
    m = result.master
    master_line = f"master {settings.origin}: " + (
        f"error: {m.error}" if m.error else "ok, current state " + describe_master(m)
    )
    print(master_line, file=out)
    states = {s.name: s for s in result.states}
    candidates = [Candidate(m, states.get(m.name)) for m in settings.mirrors]
    table, conditions = state_table(candidates, now, settings.max_lag)
    servable = sum(1 for c in conditions if c.served)
    print(table, file=out)
    print(
        f"\n{servable} of {len(enabled)} mirrors can be served; pass took "
        f"{duration(result.duration)}, {result.requests} requests",
        file=out,
    )
    return 0 if servable else 1


def describe_master(master: MasterState) -> str:
    cur = master.current
    if cur is None:
        return "unknown"
    return when(cur.date)


async def _holder(store: Store) -> str:
    try:
        return await store.lease_holder("poller") or "nobody now"
    except StoreError as e:
        return f"store error: {e}"


class _ReadOnly(MemoryStore):
    """Reads another store once, keeps writes to itself: a pass shown, not written."""

    def __init__(self, inner: Store) -> None:
        super().__init__()
        self._inner = inner

    async def load(self) -> StoreData:
        return await self._inner.load()
