"""Reading how mirrors sync: a poller pass hook into the store, and the status page's tree.

After each poller pass, for every mirror that answered, the hook fetches its own trace (for
`Upstream-mirror:`) and `project/trace/_hierarchy` (two small GETs), at most once per `every`
seconds per mirror since sync trees change rarely, and keeps the result with `put_sync`. The
status-page section builds the tree (synctree.py) from that, the config and the snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp

from redirector.config.settings import Settings
from redirector.core.models import SERVABLE, HierarchyEntry, Mirror, SyncInfo
from redirector.core.synctree import parse_hierarchy
from redirector.core.trace import TraceError, parse_trace
from redirector.poll.poller import PassHook, PassResult
from redirector.poll.probe import ProbeError, fetch
from redirector.store.base import Store, StoreError, SyncStore

log = logging.getLogger(__name__)

HIERARCHY = "_hierarchy"
EVERY = 3600.0


def own_trace_path(mirror: Mirror, master_trace: str, found: str | None = None) -> str:
    """The mirror's own trace, next to the master trace: `trace_name`, else the name the poller
    found it under (`found`, its MIRRORNAME), else its URL's host."""
    name = mirror.trace_name or found or urlsplit(mirror.base).hostname or mirror.name
    return posixpath.join(posixpath.dirname(master_trace), name)


async def read_sync(
    session: aiohttp.ClientSession,
    mirror: Mirror,
    settings: Settings,
    now: float,
    found: str | None = None,
) -> SyncInfo:
    """What one mirror says of its upstream; failures are recorded in `error`, never raised."""
    trace_dir = posixpath.dirname(settings.master_trace)
    timeout = settings.probe_timeout
    upstream, error = None, None
    try:
        own = own_trace_path(mirror, settings.master_trace, found)
        got = await fetch(session, mirror.base + own, timeout=timeout)
        if got.status == 200:
            upstream = parse_trace(got.body, last_modified=got.last_modified).upstream
        else:
            error = f"own trace: HTTP {got.status}"
    except (ProbeError, TraceError) as e:
        error = f"own trace: {e}"
    hierarchy: tuple[HierarchyEntry, ...] = ()
    try:
        got = await fetch(session, mirror.base + posixpath.join(trace_dir, HIERARCHY),
                          timeout=timeout)  # fmt: skip
        if got.status == 200:
            hierarchy = parse_hierarchy(got.body)
    except ProbeError as e:
        error = f"{error}; _hierarchy: {e}" if error else f"_hierarchy: {e}"
    return SyncInfo(mirror.name, now, upstream, hierarchy, error)


def sync_hook(
    settings: Settings | Callable[[], Settings],
    store: Store | Callable[[], Store],
    clock: Callable[[], float] = time.time,
    *,
    every: float = EVERY,
) -> PassHook:
    """A pass hook that reads each answering mirror's sync info into `store`.

    `settings` and `store` may be callables, looked up at each pass (the app's live settings
    and its store exist only once it runs). A store without `put_sync` is skipped.
    """
    last: dict[str, float] = {}
    warned = False

    async def read_hierarchies(session: aiohttp.ClientSession, result: PassResult) -> None:
        nonlocal warned
        s = settings() if callable(settings) else settings
        st = store() if callable(store) else store
        if not isinstance(st, SyncStore):
            return
        now = clock()
        answering = {x.name: x.trace_name for x in result.states if x.status in SERVABLE}
        due = [
            m for m in s.mirrors
            if m.enabled and m.name in answering and now - last.get(m.name, -every) >= every
        ]  # fmt: skip
        if not due:
            return
        gate = asyncio.Semaphore(s.probe_concurrency)

        async def one(m: Mirror) -> SyncInfo:
            async with gate:
                return await read_sync(session, m, s, now, answering[m.name])

        infos = await asyncio.gather(*(one(m) for m in due))
        try:
            await st.put_sync(infos)
        except StoreError as e:
            if not warned:
                log.warning("cannot keep the mirrors' sync info: %s", e)
            warned = True
            return
        warned = False
        last.update((i.name, now) for i in infos)

    return read_hierarchies
