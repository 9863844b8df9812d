"""The poller: probes the master and every mirror, judges each (verdict.py), writes the store.

Per mirror and pass it makes a bounded number of requests: its copy of the master trace (a
failure there ends the round: one request for a dead mirror), its own trace, a HEAD for the
``Archive-Update-in-Progress-<name>`` flag, and, about once an hour, one HEAD per subtree for
coverage. `<name>` is the mirror's ftpsync MIRRORNAME (`find_own_trace`): ``trace_name`` when
configured, else the name found last round, else its URL's host; when no trace answers under
that name, ``_hierarchy`` and ``_traces`` are read for the real one (two more GETs, then the
name is remembered). A mirror whose own trace is older than its copy costs one GET more, for
its ``<name>-stage1`` trace (between the stages of a staged sync, see judge.py). A failing
mirror is backed off (verdict.backoff_delay) and skipped until its retry time. Extensions
run after each pass as pass hooks, only in the process that polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import posixpath
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from redirector.config.settings import Settings
from redirector.core.condition import Condition, assess
from redirector.core.ftpsync import (
    STAGE1_SUFFIX,
    FoundName,
    name_from_hierarchy,
    name_from_traces,
)
from redirector.core.judge import (
    FUTURE_SLACK,
    Fault,
    Observation,
    Presence,
    Rules,
    coverage_plan,
    due,
    judge,
    rejudge,
    transition,
)
from redirector.core.models import (
    SERVABLE,
    MasterState,
    MasterVersion,
    Mirror,
    MirrorState,
    Status,
)
from redirector.core.selection import Candidate
from redirector.core.trace import (
    Trace,
    TraceError,
    is_future,
    parse_trace,
    record_master,
)
from redirector.poll.probe import ProbeError, Tally, fetch
from redirector.store.base import Store, StoreError
from redirector.store.history import record_pass
from redirector.store.lease import Lease
from redirector.supervise import Tasks

log = logging.getLogger(__name__)

LEASE_KEEPER = "lease keeper"  # the supervised task name, as /health shows it


async def fetch_trace(
    session: aiohttp.ClientSession,
    url: str,
    timeout: float,
    *,
    missing_ok: bool = False,
    tally: Tally | None = None,
    address: str | None = None,
) -> Trace | None:
    """The trace at `url`; ProbeError when it cannot be had or is not a trace.

    5xx is DOWN; any other status but 200 is BROKEN (it answers, without a trace), except that
    with `missing_ok` a 404 or 410 returns None. `address`: ask that IP address (see
    `probe.fetch`).
    """
    got = await fetch(session, url, timeout=timeout, tally=tally, address=address)
    if got.status >= 500:
        raise ProbeError(f"HTTP {got.status} for {url}")
    if missing_ok and got.status in (404, 410):
        return None
    if got.status != 200:
        raise ProbeError(f"HTTP {got.status} for {url}", Status.BROKEN)
    try:
        return parse_trace(got.body, last_modified=got.last_modified)
    except TraceError as e:
        raise ProbeError(f"not a trace at {url}: {e}", Status.BROKEN) from e


async def probe_master(
    session: aiohttp.ClientSession,
    settings: Settings,
    prev: MasterState | None,
    now: float,
    tally: Tally | None = None,
) -> MasterState:
    """Fetch the master's trace and extend its history; on failure keep what we knew."""
    history = prev.history if prev else ()
    try:
        trace = await fetch_trace(
            session, settings.origin + settings.master_trace, settings.probe_timeout, tally=tally
        )
    except ProbeError as e:
        return MasterState(history, now, str(e))
    assert trace is not None
    if is_future(trace, now, FUTURE_SLACK):
        # Taking it as current would make every real state after it look like going backwards.
        return MasterState(history, now, "master trace dated in the future; ignored")
    return MasterState(record_master(history, trace.date, now), now, None)


def own_name(mirror: Mirror) -> str:
    """The name of a mirror's own trace and sync flag before any is found: `trace_name`, else
    its base URL's host."""
    return mirror.trace_name or urlsplit(mirror.base).hostname or mirror.name


async def read_small(
    session: aiohttp.ClientSession, url: str, timeout: float, tally: Tally | None
) -> bytes | None:
    """The body at `url` when it answers 200, else None (never raises for what it answers)."""
    try:
        got = await fetch(session, url, timeout=timeout, tally=tally)
    except ProbeError:
        return None
    return got.body if got.status == 200 else None


async def discover_name(
    session: aiohttp.ClientSession,
    mirror: Mirror,
    settings: Settings,
    tally: Tally | None = None,
) -> FoundName | None:
    """The mirror's MIRRORNAME as its `_hierarchy`, else its `_traces`, says (ftpsync.py)."""
    trace_dir = posixpath.dirname(settings.master_trace)
    base, timeout = mirror.base, settings.probe_timeout
    body = await read_small(session, base + posixpath.join(trace_dir, "_hierarchy"), timeout, tally)
    if body is not None and (name := name_from_hierarchy(body)) is not None:
        return FoundName(name, "_hierarchy")
    body = await read_small(session, base + posixpath.join(trace_dir, "_traces"), timeout, tally)
    master_name = posixpath.basename(settings.master_trace)
    if body is not None and (name := name_from_traces(body, master_name)) is not None:
        return FoundName(name, "_traces")
    return None


async def fetch_own(
    session: aiohttp.ClientSession,
    mirror: Mirror,
    settings: Settings,
    name: str,
    tally: Tally | None = None,
) -> Trace | Fault | None:
    """The trace `project/trace/<name>` on the mirror: None when missing, a Fault when unusable."""
    path = posixpath.join(posixpath.dirname(settings.master_trace), name)
    try:
        return await fetch_trace(
            session, mirror.base + path, settings.probe_timeout, missing_ok=True, tally=tally
        )
    except ProbeError as e:
        return e.fault


async def find_own_trace(
    session: aiohttp.ClientSession,
    mirror: Mirror,
    settings: Settings,
    prev: MirrorState | None,
    tally: Tally | None = None,
) -> tuple[str, Trace | Fault | None]:
    """(the mirror's MIRRORNAME, its own trace under that name).

    A configured `trace_name` is used as is. Otherwise the name found last round, or the URL's
    host, is tried first; when nothing readable answers under it (404, or a page that is not a
    trace), the name `_hierarchy` or `_traces` gives is tried, and failing those the URL host.
    """
    if mirror.trace_name:
        return mirror.trace_name, await fetch_own(
            session, mirror, settings, mirror.trace_name, tally
        )
    host = urlsplit(mirror.base).hostname or mirror.name
    first = prev.trace_name if prev is not None and prev.trace_name else host
    own = await fetch_own(session, mirror, settings, first, tally)
    if isinstance(own, Trace) or (isinstance(own, Fault) and own.kind is Status.DOWN):
        return first, own
    found = await discover_name(session, mirror, settings, tally)
    name = found.name if found is not None else host
    if name == first:
        return first, own
    return name, await fetch_own(session, mirror, settings, name, tally)


def rules_of(settings: Settings) -> Rules:
    return Rules(
        interval=settings.poll_interval,
        failures_before_down=settings.failures_before_down,
        backoff_max=settings.backoff_max,
    )


async def observe(
    session: aiohttp.ClientSession,
    mirror: Mirror,
    settings: Settings,
    prev: MirrorState | None,
    now: float,
    tally: Tally | None = None,
) -> Observation:
    """Make this round's probes of one mirror; never raises for anything the mirror does."""
    base, timeout = mirror.base, settings.probe_timeout
    try:
        held = await fetch_trace(session, base + settings.master_trace, timeout, tally=tally)
    except ProbeError as e:
        return Observation(master=e.fault)
    assert held is not None
    name, own = await find_own_trace(session, mirror, settings, prev, tally)
    if isinstance(own, Fault) and own.kind is Status.DOWN:
        # It stopped answering: the flag and coverage probes would only cost more timeouts.
        return Observation(master=held, own=own, trace_name=name)
    syncing = False
    with contextlib.suppress(ProbeError):  # the flag is a hint; no answer means no sync shown
        got = await fetch(
            session,
            base + f"Archive-Update-in-Progress-{name}",
            timeout=timeout,
            method="HEAD",
            tally=tally,
        )
        syncing = 200 <= got.status < 300
    stage1: Trace | Fault | None = None
    if (
        isinstance(own, Trace)
        and not syncing
        and own.date < held.date - rules_of(settings).own_slack
    ):
        # Torn, or between the stages of a staged sync: its stage-1 trace tells (judge.py).
        stage1 = await fetch_own(session, mirror, settings, name + STAGE1_SUFFIX, tally)
    plan = coverage_plan(mirror, settings.coverage_probes, prev, now, settings.coverage_interval)
    coverage: dict[str, Presence] | None = None
    if plan:
        coverage = {}
        for sub, path in plan:
            coverage[sub] = await probe_presence(session, base, path, timeout, tally)
            if coverage[sub].found is None:
                break  # it stopped answering: the rest would only cost more timeouts
    return Observation(
        master=held, own=own, syncing=syncing, coverage=coverage, stage1=stage1, trace_name=name
    )


async def probe_presence(
    session: aiohttp.ClientSession, base: str, path: str, timeout: float, tally: Tally | None
) -> Presence:
    """HEAD one coverage path (a directory index by default).

    2xx: there. 401/403: there but not listable (servers refuse an index they will not show; a
    missing directory is a 404). 404/410: missing. Anything else: cannot tell.
    """
    try:
        got = await fetch(session, base + path, timeout=timeout, method="HEAD", tally=tally)
    except ProbeError as e:
        return Presence(None, str(e))
    detail = f"HTTP {got.status} at {path}"
    if 200 <= got.status < 300 or got.status in (401, 403):
        return Presence(True, detail)
    if got.status in (404, 410):
        return Presence(False, detail)
    return Presence(None, detail)


async def probe_mirror(
    session: aiohttp.ClientSession,
    mirror: Mirror,
    settings: Settings,
    history: tuple[MasterVersion, ...],
    prev: MirrorState | None,
    now: float,
    tally: Tally | None = None,
    master_seen: float | None = None,
) -> MirrorState:
    """Probe one mirror and judge it: which master state it holds, how far behind, what else.

    `master_seen`: when the master last answered (see `verdict.ahead_of_master`).
    """
    obs = await observe(session, mirror, settings, prev, now, tally)
    state = judge(mirror.name, obs, prev, history, now, rules_of(settings), master_seen)
    if mirror.ipv6 is not None:
        return state  # the config says; nothing to find out
    if state.status in SERVABLE and (obs.coverage is not None or prev is None or prev.ipv6 is None):
        # Checked with coverage (about once an hour) and until known: AAAA records and
        # IPv6 routes change about as rarely as the subtrees a mirror carries.
        found, note = await probe_ipv6(session, mirror, settings, tally)
        return dataclasses.replace(state, ipv6=found, ipv6_note=note)
    if prev is not None:
        return dataclasses.replace(state, ipv6=prev.ipv6, ipv6_note=prev.ipv6_note)
    return state


async def resolve_ipv6(host: str, port: int) -> list[str]:
    """The IPv6 addresses of `host` (its AAAA records, as the system resolver gives them).

    A literal IPv6 address is its own; a literal IPv4 address has none. Empty when the name
    has no AAAA record or cannot be resolved.
    """
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [str(literal)] if literal.version == 6 else []
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, family=socket.AF_INET6, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        return []
    seen: list[str] = []
    for *_, sockaddr in infos:
        address = str(sockaddr[0]).split("%", 1)[0]
        # A resolver may map an A record into ::ffff:0:0/96 when asked for IPv6 (AI_V4MAPPED):
        # that is IPv4, not an AAAA.
        if address not in seen and ipaddress.IPv6Address(address).ipv4_mapped is None:
            seen.append(address)
    return seen


async def probe_ipv6(
    session: aiohttp.ClientSession,
    mirror: Mirror,
    settings: Settings,
    tally: Tally | None = None,
) -> tuple[bool, str]:
    """Whether the mirror serves its tree over IPv6: an AAAA record, and its copy of the
    master trace fetched from that address. (answer, what was seen, for the views)."""
    parts = urlsplit(mirror.base)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = await resolve_ipv6(host, port)
    if not addresses:
        return False, f"no AAAA record for {host}"
    address = addresses[0]
    try:
        await fetch_trace(
            session,
            mirror.base + settings.master_trace,
            settings.probe_timeout,
            tally=tally,
            address=address,
        )
    except ProbeError as e:
        return False, f"AAAA {address}, but over IPv6: {e}"
    return True, f"answers over IPv6 at {address}"


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
    """Log a mirror going out of service and coming back, once each; nothing for a steady state."""
    for s in new:
        said = transition(prev.get(s.name), s)
        if said is not None:
            log.log(said[0], "%s", said[1])


def pass_summary(
    master: MasterState,
    mirrors: Sequence[Mirror],
    states: Sequence[MirrorState],
    now: float,
    max_lag: float,
) -> str:
    """One line for a pass: "4 fresh, 1 stale (au), 1 down (br); master answers".

    Conditions in their own order (served first, then worst news last); every one but fresh
    says where its mirrors are, by country code: the line is the network's picture at a
    glance, once per pass. The mirrors' names are logged when each one changes state
    (`log_transitions`); naming them again every pass would repeat that line for as long as
    a mirror stays down. `mirrors`: the enabled mirrors the pass covered.
    """
    by_name = {s.name: s for s in states}
    by: dict[Condition, list[str]] = {}
    for m in mirrors:
        condition = assess(Candidate(m, by_name.get(m.name)), now, max_lag).condition
        by.setdefault(condition, []).append(m.country.lower())
    parts = []
    for condition in (c for c in Condition if c in by):
        ccs = by[condition]
        part = f"{len(ccs)} {condition.value}"
        if condition is not Condition.FRESH:
            counted = {cc: ccs.count(cc) for cc in sorted(set(ccs))}
            part += " (" + ", ".join(cc if n == 1 else f"{cc} x{n}" for cc, n in counted.items())
            part += ")"
        parts.append(part)
    said = ", ".join(parts) if parts else "nothing enabled"
    if master.error is not None:
        return f"{said}; master unreachable: {master.error}"
    return f"{said}; master answers"


def log_master_change(prev: MasterState | None, new: MasterState) -> None:
    """Log a new master state (a push published) once, when the poller first sees it."""
    cur = new.current
    if cur is None or new.error is not None:
        return
    before = prev.current if prev is not None else None
    if before is not None and before.date == cur.date:
        return
    dated = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(cur.date))
    if before is None:
        log.info("master state %s (first seen by this poller)", dated)
    elif cur.date > before.date:
        log.info("master published a new state: %s, %s after the last", dated,
                 _span(cur.date - before.date))  # fmt: skip


def _span(seconds: float) -> str:
    s = round(seconds)
    if s < 3600:
        return f"{s // 60} min"
    h, m = divmod(s // 60, 60)
    return f"{h} h {m} min" if h < 48 else f"{h // 24} d {h % 24} h"


@dataclass(frozen=True, slots=True)
class PassResult:
    """What one pass found. `states` covers every enabled mirror, probed or backed off."""

    master: MasterState
    states: tuple[MirrorState, ...]
    started: float
    duration: float
    probed: int = 0  # mirrors probed this pass (the rest were backed off)
    requests: int = 0  # HTTP requests made, master included
    written: bool = True  # False: lease lost or store unreadable; nothing was written


@dataclass(frozen=True, slots=True)
class Previous:
    """What the store held before a pass, as the pass may use it."""

    states: dict[str, MirrorState]
    master: MasterState | None
    unreadable: frozenset[str] = frozenset()  # states entries the store could not read
    failed: bool = False  # the read failed: nothing is known, so nothing may be written


async def read_previous(store: Store, now: float, settings: Settings) -> Previous:
    """The store's states and master before a pass.

    A read that failed is not an empty store: judged as a first start, the pass would reset
    every mirror's failures and backoff and the master's history, and writing it would make
    that permanent. So a failed read is marked, and such a pass is made but not written.
    """
    try:
        data = await store.load()
    except StoreError as e:
        log.warning("poller cannot read the store, this pass will not be written: %s", e)
        return Previous({}, None, failed=True)
    states = {n: _sane_backoff(s, now, settings) for n, s in data.states.items()}
    master = data.master
    if master is None and states:
        # The master's key is gone or was unreadable while the mirrors' states survived: they
        # say since when each mirror has lacked something, which a history rebuilt from
        # scratch would forget (a mirror three days behind would look an hour behind).
        rebuilt = history_from_states(states.values())
        if rebuilt:
            log.warning("no readable master history in the store: rebuilt from mirror states")
            master = MasterState(rebuilt, max(s.checked_at for s in states.values()))
    return Previous(states, master, data.poisoned_states())


# A rebuilt history places the master state a behind mirror lacked just after what it holds:
# its true date is unknown, only that it is newer and when it was first seen.
_JUST_AFTER = 1e-3


def history_from_states(states: Iterable[MirrorState]) -> tuple[MasterVersion, ...]:
    """A master history consistent with what the mirrors' states say, oldest first.

    A mirror current at its check held a master state (its date, first seen no later than
    that check); a mirror behind since B holding D means a state newer than D was first seen
    at B. Points that contradict an earlier one (first seen before an older state) are
    dropped. The result gives each mirror back its own lag, so a lost master key costs no
    mirror its history.
    """
    points: dict[float, float] = {}
    for s in states:
        if s.master_date is None:
            continue
        if s.behind_since is None:
            date, seen = s.master_date, min(s.master_date, s.checked_at)
        else:
            date, seen = s.master_date + _JUST_AFTER, s.behind_since
        points[date] = min(seen, points.get(date, seen))
    out: list[MasterVersion] = []
    for date in sorted(points):
        if out and points[date] < out[-1].first_seen:
            continue
        out.append(MasterVersion(date, points[date]))
    return tuple(out)


PassHook = Callable[[aiohttp.ClientSession, PassResult], Awaitable[None]]
"""Called after each written pass, in the polling process only; see `run_poller`."""


async def poll_once(
    session: aiohttp.ClientSession,
    settings: Settings,
    store: Store,
    clock: Callable[[], float] = time.time,
    *,
    guard: Callable[[], Awaitable[bool]] | None = None,
    progress: Callable[[MirrorState], None] | None = None,
) -> PassResult:
    """One pass over the master and every enabled mirror; results go to the store.

    `guard`, when given, is asked right before writing (the lease); False discards the
    results. `progress` is called with each mirror's state as it is judged. A store failure
    is logged and the pass result still returned, so the caller keeps going.
    """
    started = clock()
    tally = Tally()
    before = await read_previous(store, clock(), settings)
    prev_states, prev_master = before.states, before.master
    master = await probe_master(session, settings, prev_master, clock(), tally)
    if master.error and (prev_master is None or prev_master.error is None):
        log.warning("master unreachable, keeping its last known state: %s", master.error)
    elif master.error is None and prev_master is not None and prev_master.error is not None:
        log.info("master reachable again")
    gate = asyncio.Semaphore(settings.probe_concurrency)
    history = master.history
    # A mirror claiming a master state past the newest is caught only against a master that
    # answered this pass (verdict.ahead_of_master).
    seen = master.checked_at if master.error is None else None
    probed = 0

    async def one(m: Mirror) -> MirrorState:
        nonlocal probed
        prev = prev_states.get(m.name)
        if not due(prev, clock(), settings.poll_interval):
            assert prev is not None
            state = rejudge(prev, history)  # backed off: not probed, lag still moves
        else:
            probed += 1
            async with gate:
                state = await probe_mirror(
                    session, m, settings, history, prev, clock(), tally, master_seen=seen
                )
        if progress is not None:
            progress(state)
        return state

    mirrors = [m for m in settings.mirrors if m.enabled]
    states = list(await asyncio.gather(*(one(m) for m in mirrors)))
    if not history:
        hist = provisional_history(master, [s.master_date for s in states if s.master_date])
        states = [rejudge(s, hist) for s in states]
    result = PassResult(
        master, tuple(states), started, clock() - started, probed, tally.requests, True
    )
    if before.failed:
        return dataclasses.replace(result, written=False)
    if guard is not None and not await guard():
        log.warning("lost the poller lease during a pass; its results are discarded")
        return dataclasses.replace(result, written=False)
    log_transitions(prev_states, states)
    log_master_change(prev_master, master)
    log.info("pass: %s", pass_summary(master, mirrors, states, clock(), settings.max_lag))
    try:
        await store.put_master(master)
        await store.put_states(states)
        # Mirrors no longer configured, and entries nobody could read that this pass did not
        # just replace (a junk field, a state filed under another name).
        gone = (set(prev_states) - {m.name for m in settings.mirrors}) | (
            before.unreadable - {s.name for s in states}
        )
        if gone:
            await store.forget(gone)
    except StoreError as e:
        log.warning("poller cannot write the store: %s", e)
    await _record_history(store, states, prev_master, master, clock())
    return result


def _sane_backoff(state: MirrorState, now: float, settings: Settings) -> MirrorState:
    """`state`, without a retry time later than any backoff our rules set (a stray write
    could hold a mirror out of probing, and so in its last state, for as long as it says)."""
    if (
        state.retry_at is None
        or state.retry_at <= now + settings.backoff_max + settings.poll_interval
    ):
        return state
    return dataclasses.replace(state, retry_at=None)


async def _record_history(
    store: Store,
    states: Sequence[MirrorState],
    prev_master: MasterState | None,
    master: MasterState,
    now: float,
) -> None:
    try:
        await record_pass(store, states, prev_master, master, now)
    except StoreError as e:
        # History is for the operators' views; a pass that served its purpose is not undone.
        log.warning("poller cannot record history: %s", e)


async def run_hooks(
    hooks: Sequence[PassHook], session: aiohttp.ClientSession, result: PassResult
) -> None:
    """Each hook in turn; one hook's exception is logged and never stops the others."""
    for hook in list(hooks):  # a copy: a hook may be appended while we run
        try:
            await hook(session, result)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pass hook %s failed", getattr(hook, "__qualname__", repr(hook)))


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancel `task` (the poller's) and wait until it has ended. The cancel is repeated every
    second: one swallowed on its way (by a hook or a library under it) must not hang the
    shutdown, and a cancel of the shutdown itself still goes through."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("background task %s failed", task.get_name(), exc_info=exc)


async def run_poller(
    session: aiohttp.ClientSession,
    settings: Settings,
    store: Store,
    on_pass: Callable[[PassResult], Awaitable[None]] | None = None,
    clock: Callable[[], float] = time.time,
    *,
    hooks: Sequence[PassHook] = (),
    lease: Lease | None = None,
    current: Callable[[], Settings] | None = None,
    tasks: Tasks | None = None,
) -> None:
    """Poll every `poll_interval` until cancelled; one failing pass never stops the loop.

    `current`, when given, returns the live settings (a reloaded config, reload.py): each pass
    takes them afresh, so mirrors a reload adds or removes are probed from the next pass on.

    With a `lease` (Redis) the lease is kept in the background and a pass runs only while this
    process holds it: the others wait, reading. Without one (in-process store) it always polls.
    After each written pass `on_pass` runs, then every hook in `hooks`, which is read afresh
    each pass, so hooks appended to a live list later are called too. The lease keeper runs
    supervised in `tasks` (the app's, so /health shows it), restarted if it crashes.
    """
    tasks = tasks if tasks is not None else Tasks()
    if lease is not None:
        tasks.start(LEASE_KEEPER, lease.keep)
    try:
        while True:
            if lease is not None:
                await lease.wait_held()
            if current is not None:
                settings = current()
            try:
                result = await poll_once(
                    session, settings, store, clock, guard=lease.confirm if lease else None
                )
                if result.written:
                    if on_pass is not None:
                        await on_pass(result)
                    await run_hooks(hooks, session, result)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("poller pass failed; trying again next interval")
            await asyncio.sleep(settings.poll_interval)
    finally:
        if lease is not None:
            await tasks.stop(LEASE_KEEPER)
            await lease.release()
