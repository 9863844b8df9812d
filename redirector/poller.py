"""The poller: probes the master and every mirror, judges freshness, writes state to the store."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp

from .freshness import (
    Trace,
    TraceError,
    behind_since,
    is_future,
    parse_http_date,
    parse_trace,
    record_master,
)
from .models import MasterState, MasterVersion, Mirror, MirrorState, Status
from .settings import Settings
from .store import Store, StoreError

log = logging.getLogger(__name__)

MAX_BODY = 65536
MAX_REDIRECTS = 3
FUTURE_SLACK = 300.0  # clocks differ; a trace a few minutes ahead is not a lie


class ProbeError(Exception):
    """A fetch that did not give a usable answer; the message is the recorded reason."""


@dataclass(frozen=True, slots=True)
class Fetched:
    status: int
    body: bytes
    last_modified: float | None


async def fetch(
    session: aiohttp.ClientSession, url: str, *, timeout: float, max_bytes: int = MAX_BODY
) -> Fetched:
    """GET `url` with a total timeout and a body cap; redirects only within the same host.

    Raises ProbeError for anything that is not an answer we can read: refused, timed out,
    TLS or DNS failure, a redirect elsewhere or in a loop, a body over the cap.
    """
    host = urlsplit(url).hostname
    try:
        async with asyncio.timeout(timeout):
            for _ in range(MAX_REDIRECTS + 1):
                async with session.get(url, allow_redirects=False) as resp:
                    if resp.status in (301, 302, 303, 307, 308):
                        target = urljoin(url, resp.headers.get("Location", ""))
                        if urlsplit(target).hostname != host:
                            raise ProbeError(f"redirected to another host: {target[:200]}")
                        url = target
                        continue
                    body = await resp.content.read(max_bytes + 1)
                    if len(body) > max_bytes:
                        raise ProbeError(f"body exceeds {max_bytes} bytes")
                    lm = resp.headers.get("Last-Modified")
                    return Fetched(resp.status, body, parse_http_date(lm) if lm else None)
            raise ProbeError(f"more than {MAX_REDIRECTS} redirects")
    except TimeoutError as e:
        raise ProbeError(f"timed out after {timeout:g} s") from e
    except aiohttp.ClientSSLError as e:
        raise ProbeError(f"TLS error: {e}") from e
    except aiohttp.ClientConnectorError as e:
        raise ProbeError(f"cannot connect: {e.os_error.strerror or e}") from e
    except (aiohttp.ClientError, OSError, ValueError) as e:
        raise ProbeError(f"{type(e).__name__}: {e}"[:300]) from e


async def fetch_trace(session: aiohttp.ClientSession, url: str, timeout: float) -> Trace:
    """The trace at `url`; ProbeError when it cannot be had or is not a trace."""
    got = await fetch(session, url, timeout=timeout)
    if got.status != 200:
        raise ProbeError(f"HTTP {got.status} for {url}")
    try:
        trace = parse_trace(got.body, last_modified=got.last_modified)
    except TraceError as e:
        raise ProbeError(f"not a trace: {e}") from e
    return trace


async def probe_master(
    session: aiohttp.ClientSession, settings: Settings, prev: MasterState | None, now: float
) -> MasterState:
    """Fetch the master's trace and extend its history; on failure keep what we knew."""
    history = prev.history if prev else ()
    try:
        trace = await fetch_trace(
            session, settings.master + settings.master_trace, settings.probe_timeout
        )
    except ProbeError as e:
        return MasterState(history, now, str(e))
    if is_future(trace, now, FUTURE_SLACK):
        # Taking it as current would make every real state after it look like going backwards.
        return MasterState(history, now, "master trace dated in the future; ignored")
    return MasterState(record_master(history, trace.date, now), now, None)


async def probe_mirror(
    session: aiohttp.ClientSession,
    mirror: Mirror,
    settings: Settings,
    history: tuple[MasterVersion, ...],
    prev: MirrorState | None,
    now: float,
) -> MirrorState:
    """Check one mirror: which master state it holds and how far behind that is."""
    failures = prev.failures if prev else 0
    try:
        trace = await fetch_trace(
            session, mirror.base + settings.master_trace, settings.probe_timeout
        )
    except ProbeError as e:
        return MirrorState(
            mirror.name, Status.DOWN, now, error=str(e), failures=failures + 1,
            master_date=prev.master_date if prev else None,
            behind_since=prev.behind_since if prev else None,
        )  # fmt: skip
    held = trace.date
    if is_future(trace, now, FUTURE_SLACK):
        return MirrorState(
            mirror.name, Status.BROKEN, now, error="master trace dated in the future",
            failures=failures + 1,
        )  # fmt: skip
    return MirrorState(
        mirror.name, Status.UP, now, master_date=held, behind_since=behind_since(held, history)
    )


def provisional_history(
    master: MasterState | None, held_dates: Sequence[float]
) -> tuple[MasterVersion, ...]:
    """The master's history, or while it has never answered, the newest state any mirror holds.

    Without this a cold start with the master unreachable would call every mirror current.
    """
    if master is not None and master.history:
        return master.history
    if not held_dates:
        return ()
    newest = max(held_dates)
    return (MasterVersion(newest, newest),)


def log_transitions(prev: Mapping[str, MirrorState], new: Sequence[MirrorState]) -> None:
    """Log a mirror going down and coming back, once each; nothing for a steady state."""
    for s in new:
        p = prev.get(s.name)
        was_ok = p is None or p.status in (Status.UP, Status.SYNCING, Status.UNKNOWN)
        ok = s.status in (Status.UP, Status.SYNCING)
        if was_ok and not ok:
            log.warning("mirror %s is %s: %s", s.name, s.status.value, s.error)
        elif not was_ok and ok and p is not None:
            log.info("mirror %s recovered after %d failed checks", s.name, p.failures)


@dataclass(frozen=True, slots=True)
class PassResult:
    master: MasterState
    states: tuple[MirrorState, ...]
    started: float
    duration: float


async def poll_once(
    session: aiohttp.ClientSession,
    settings: Settings,
    store: Store,
    clock: Callable[[], float] = time.time,
) -> PassResult:
    """One pass over the master and every enabled mirror; results go to the store.

    A store failure is logged and the pass result still returned, so the caller keeps going.
    """
    started = clock()
    try:
        data = await store.load()
        prev_states, prev_master = dict(data.states), data.master
    except StoreError as e:
        log.warning("poller cannot read the store: %s", e)
        prev_states, prev_master = {}, None
    master = await probe_master(session, settings, prev_master, clock())
    if master.error and (prev_master is None or prev_master.error is None):
        log.warning("master unreachable, keeping its last known state: %s", master.error)
    gate = asyncio.Semaphore(settings.probe_concurrency)

    async def one(m: Mirror, hist: tuple[MasterVersion, ...]) -> MirrorState:
        async with gate:
            return await probe_mirror(session, m, settings, hist, prev_states.get(m.name), clock())

    mirrors = [m for m in settings.mirrors if m.enabled]
    states = list(await asyncio.gather(*(one(m, master.history) for m in mirrors)))
    if not master.history:
        hist = provisional_history(master, [s.master_date for s in states if s.master_date])
        states = [s if s.master_date is None else _rejudge(s, hist) for s in states]
    log_transitions(prev_states, states)
    try:
        await store.put_master(master)
        await store.put_states(states)
        gone = set(prev_states) - {m.name for m in settings.mirrors}
        if gone:
            await store.forget(gone)
    except StoreError as e:
        log.warning("poller cannot write the store: %s", e)
    return PassResult(master, tuple(states), started, clock() - started)


def _rejudge(s: MirrorState, history: tuple[MasterVersion, ...]) -> MirrorState:
    assert s.master_date is not None
    return MirrorState(
        s.name, s.status, s.checked_at, s.master_date, behind_since(s.master_date, history),
        s.own_date, s.error, s.failures, s.lacks,
    )  # fmt: skip


async def run_poller(
    session: aiohttp.ClientSession,
    settings: Settings,
    store: Store,
    on_pass: Callable[[PassResult], Awaitable[None]] | None = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """Poll every `poll_interval` until cancelled; one failing pass never stops the loop."""
    while True:
        try:
            result = await poll_once(session, settings, store, clock)
            if on_pass is not None:
                await on_pass(result)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("poller pass failed; trying again next interval")
        await asyncio.sleep(settings.poll_interval)
