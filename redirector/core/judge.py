"""What a mirror is, from what one round of probes found: state, backoff, coverage (pure).

The poller (poller.py) does the I/O and hands its findings here as an `Observation`; `judge`
turns them, the mirror's previous state and the master's history into the next `MirrorState`.
No clock, no I/O: `now` is a parameter, so every rule below is tested exactly.

States:
- **up** / **syncing**: the mirror's copy of the master trace was read; syncing when its
  ``Archive-Update-in-Progress-<name>`` file is at the tree root (still served). Fresh or stale
  is not a state but its lag (`MirrorState.lag`) against ``max_lag``: what the views call a
  mirror is its condition (core/condition.py), derived from this state.
- **broken**: it answers, but not with what a mirror must hold: junk or HTML where the master
  trace copy should be, no copy (4xx), a redirect elsewhere or in a loop, a copy dated in the
  future or claiming a state the master never published (`ahead_of_master`), or its own trace
  older than its master trace copy while no sync is in progress and it is not between stages.
- **down**: connect, TLS or DNS error, timeout, 5xx, all for the master trace copy.

The own trace is optional: a mirror may have none (ftpsync's TRACE=none), an empty one without
a Last-Modified time (TRACE=touch), one in a locale that cannot be read exactly, or a server
may answer with an HTML page. Any of these costs only what the own trace feeds (the last
complete sync's date and the "older than its master trace copy" check); the state is judged on
the master trace copy alone and `MirrorState.note` says what was skipped. A redirect to another
host is the exception: it is broken whichever file it is for.

**Staged syncs.** With runmirrors' `staged` and `mhop` pushes, ftpsync runs stage 1 alone (it
brings the new master trace copy, writes ``<name>-stage1`` and removes its lock) and stage 2 up
to PUSHDELAY (ten minutes by default) later, per tier. In between, its own trace is older than
its copy. The rule: a mirror whose ``<name>-stage1`` trace is newer than its own trace, at most
`Rules.stage1_max` (an hour) old, is **syncing** and served, as holding the master state of its
last complete sync (its indexes are still those), not the copy's: the previous round's state
when that was older than the copy, else its own trace's date, the newest state a complete sync
could have brought. Its lag counts from when the master published what it is bringing. A stage
1 older than that with no stage 2 since is judged as any other own trace older than its copy.

A mirror that was working keeps its state through `failures_before_down - 1` failed probes in a
row (one lost packet does not take it out, and a flapping mirror does not flood the log); a
mirror that was not working is down or broken at its first failure. A failing mirror is probed
again after ``interval * 2**(failures - 1)``, capped at ``backoff_max``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from redirector.core.humanize import when
from redirector.core.models import SERVABLE, MasterVersion, Mirror, MirrorState, Status
from redirector.core.trace import Trace, behind_since

# Clocks differ, and ours may jump (an NTP step, a wrong time zone fixed): a trace up to two
# hours ahead of our clock is a clock fault, not a lie. A mirror gains nothing from a date in
# that window: a copy dated after the master's newest state is caught by `judge` once the
# master has been seen since (see `ahead_of_master`).
FUTURE_SLACK = 2 * 3600.0
# The mirror writes its own trace after the master trace copy arrives, with its own clock: a
# few minutes earlier is a clock difference, more is a mirror that stopped half-way.
OWN_TRACE_SLACK = 300.0
# Between ftpsync's stages of a staged push: runmirrors waits PUSHDELAY (600 s) for every
# downstream's stage 1, per tier of an mhop chain, then stage 2 itself runs; an hour covers a
# few tiers and a slow stage 2. Longer, and stage 2 is not coming.
STAGE1_MAX = 3600.0


@dataclass(frozen=True, slots=True)
class Fault:
    """A probe that gave no usable answer: `kind` is DOWN or BROKEN, `reason` is for people.

    `off_host`: it redirected to another origin, which says the mirror does not serve its tree
    itself, whichever file was asked for.
    """

    kind: Status
    reason: str
    off_host: bool = False


@dataclass(frozen=True, slots=True)
class Presence:
    """One coverage probe: True found, False missing (404/410), None could not tell (error)."""

    found: bool | None
    detail: str  # e.g. "HTTP 404 at obsolete/"


@dataclass(frozen=True, slots=True)
class Observation:
    """What one round of probes found on a mirror.

    `master` is its copy of the master trace, or why it could not be had; when that failed the
    other probes were not made. `own` is its own trace, None when it has none (404). `stage1`
    is its ``<name>-stage1`` trace, looked for only when its own trace is older than its copy.
    `trace_name` is the name those were asked for (its MIRRORNAME, as found). `coverage` is
    None when coverage was not probed this round (see `coverage_plan`).
    """

    master: Trace | Fault
    own: Trace | Fault | None = None
    syncing: bool = False
    coverage: Mapping[str, Presence] | None = None
    stage1: Trace | Fault | None = None
    trace_name: str | None = None


@dataclass(frozen=True, slots=True)
class Rules:
    """The knobs of judging, from settings."""

    interval: float = 300.0
    failures_before_down: int = 2
    backoff_max: float = 3600.0
    future_slack: float = FUTURE_SLACK
    own_slack: float = OWN_TRACE_SLACK
    stage1_max: float = STAGE1_MAX


def backoff_delay(failures: int, interval: float, cap: float) -> float:
    """Seconds to wait before probing a mirror that failed `failures` times in a row."""
    if failures <= 0:
        return interval
    return min(cap, interval * 2.0 ** min(failures - 1, 40))


def due(prev: MirrorState | None, now: float, interval: float) -> bool:
    """Whether a pass at `now` should probe the mirror (False while it is backed off).

    Passes come every `interval`, so a retry time within half an interval counts as now.
    """
    if prev is None or prev.retry_at is None:
        return True
    # A clock stepped back before the last check makes the retry time meaningless (it could
    # hold a failing mirror out for as long as the step): probe it now.
    return now >= prev.retry_at - interval / 2 or now < prev.checked_at - interval / 2


def excluded(sub: str, exclude: Iterable[str]) -> bool:
    """Whether the config's `exclude` list covers subtree `sub` (itself or a parent of it)."""
    return any(sub.startswith(ex) for ex in exclude)


def coverage_plan(
    mirror: Mirror,
    probes: Sequence[tuple[str, str]],
    prev: MirrorState | None,
    now: float,
    every: float,
) -> tuple[tuple[str, str], ...]:
    """The (subtree, path) probes to make this round: none unless due.

    Due on the first round, every `every` seconds, when the mirror was not working (coverage
    may have changed while it was away), and when a subtree is in neither `covered` nor `lacks`
    (a probe path or the config's `exclude` changed). Subtrees the config excludes are never
    probed: they are not served from this mirror anyway.
    """
    wanted = tuple((sub, path) for sub, path in probes if not excluded(sub, mirror.exclude))
    if not wanted:
        return ()
    if prev is None or prev.coverage_at is None or prev.status not in SERVABLE:
        return wanted
    known = set(prev.covered) | set(prev.lacks)
    if now - prev.coverage_at >= every or any(sub not in known for sub, _ in wanted):
        return wanted
    return ()


def _coverage(
    state: MirrorState, prev: MirrorState | None, found: Mapping[str, Presence] | None, now: float
) -> MirrorState:
    """`state` with its coverage fields merged from this round's probes, or carried over."""
    if prev is None:
        prev = MirrorState("", Status.UNKNOWN, now)
    if found is None:
        return dataclasses.replace(
            state,
            covered=prev.covered,
            lacks=prev.lacks,
            coverage_at=prev.coverage_at,
            coverage_note=prev.coverage_note,
        )
    covered, lacks = set(prev.covered), set(prev.lacks)
    notes: dict[str, str] = {}
    for sub, presence in found.items():
        if presence.found is True:
            covered.add(sub)
            lacks.discard(sub)
        elif presence.found is False:
            lacks.add(sub)
            covered.discard(sub)
            notes[sub] = presence.detail
        elif sub in lacks:  # could not tell: keep what we knew
            notes[sub] = f"lacking when last checked ({presence.detail} now)"
    # A subtree no longer probed (excluded by the config now, or its probe removed) is forgotten.
    covered &= set(found)
    lacks &= set(found)
    ordered = sorted(lacks)
    return dataclasses.replace(
        state,
        covered=tuple(sorted(covered)),
        lacks=tuple(ordered),
        coverage_at=now,
        coverage_note="; ".join(f"{s} {notes.get(s, 'missing')}" for s in ordered) or None,
    )


def _failed(
    name: str,
    fault: Fault,
    prev: MirrorState | None,
    history: tuple[MasterVersion, ...],
    now: float,
    rules: Rules,
    trace_name: str | None = None,
) -> MirrorState:
    failures = (prev.failures if prev else 0) + 1
    graced = prev is not None and prev.status in SERVABLE
    if graced and failures < rules.failures_before_down:
        # Within its grace: still served, the failure noted for the status views.
        assert prev is not None
        status, retry = prev.status, None
    else:
        status = fault.kind
        retry = now + backoff_delay(failures, rules.interval, rules.backoff_max)
    state = MirrorState(
        name,
        status,
        now,
        master_date=prev.master_date if prev else None,
        behind_since=behind_since(prev.master_date, history) if prev else None,
        own_date=prev.own_date if prev else None,
        error=fault.reason,
        failures=failures,
        retry_at=retry,
        trace_name=trace_name if trace_name is not None else prev.trace_name if prev else None,
    )
    return _coverage(state, prev, None, now)


def ahead_of_master(
    held: float,
    prev: MirrorState | None,
    history: tuple[MasterVersion, ...],
    master_seen: float | None,
) -> bool:
    """Whether a mirror holding a master trace copy dated `held` claims a state the master
    never published.

    A copy dated after the master's newest state is honest right after the master changed
    (the mirror synced between our look at the master and our look at it), so the first such
    round is believed, as holding the newest state (lag 0, never "fresher"). It is a lie (or
    a mirror writing the trace itself) when the mirror already claimed a date past the
    master's newest at its previous round and the master has answered since (`master_seen`,
    the time of its last successful check) without having it: an honest master state would
    have shown up there.
    """
    if not history or master_seen is None or prev is None or prev.master_date is None:
        return False
    newest = history[-1].date
    return held > newest and prev.master_date > newest and prev.checked_at < master_seen


def judge(
    name: str,
    obs: Observation,
    prev: MirrorState | None,
    history: tuple[MasterVersion, ...],
    now: float,
    rules: Rules,
    master_seen: float | None = None,
) -> MirrorState:
    """The mirror's next state from this round's observation. See the module docstring.

    `master_seen`: when the master last answered with its trace (None: not this pass), for
    `ahead_of_master`.
    """
    held = obs.master
    if isinstance(held, Fault):
        return _failed(name, held, prev, history, now, rules)
    if held.date > now + rules.future_slack:
        fault = Fault(Status.BROKEN, f"master trace copy dated in the future ({when(held.date)})")
        return _failed(name, fault, prev, history, now, rules)
    if ahead_of_master(held.date, prev, history, master_seen):
        fault = Fault(
            Status.BROKEN,
            f"master trace copy dated {when(held.date)}, after the master's newest state "
            f"({when(history[-1].date)}): not a state the master published",
        )
        return _failed(name, fault, prev, history, now, rules)
    own, called = obs.own, obs.trace_name or "under its own name"
    notes: list[str] = []
    if isinstance(own, Fault) and own.off_host:
        fault = Fault(Status.BROKEN, f"own trace: {own.reason}")
        return _failed(name, fault, prev, history, now, rules, obs.trace_name)
    if isinstance(own, Fault):
        notes.append(f"own trace {called} not read ({own.reason}): last complete sync unknown")
        own = None
    elif own is None:
        notes.append(f"no own trace {called}: last complete sync unknown")
    if own is not None and own.date > now + rules.future_slack:
        fault = Fault(Status.BROKEN, f"own trace dated in the future ({when(own.date)})")
        return _failed(name, fault, prev, history, now, rules, obs.trace_name)
    status = Status.SYNCING if obs.syncing else Status.UP
    holds = held.date
    if own is not None and not obs.syncing and own.date < held.date - rules.own_slack:
        torn = (
            f"own trace ({when(own.date)}) older than its master trace copy "
            f"({when(held.date)}) with no sync in progress"
        )
        stage1 = obs.stage1 if isinstance(obs.stage1, Trace) else None
        if stage1 is None or stage1.date <= own.date:
            fault = Fault(Status.BROKEN, torn)
            return _failed(name, fault, prev, history, now, rules, obs.trace_name)
        if stage1.date > now + rules.future_slack:
            fault = Fault(Status.BROKEN, f"{torn}; its stage-1 trace is dated in the future")
            return _failed(name, fault, prev, history, now, rules, obs.trace_name)
        if now - stage1.date > rules.stage1_max:
            fault = Fault(
                Status.BROKEN,
                f"{torn}: stage 1 finished {when(stage1.date)} and stage 2 has not followed",
            )
            return _failed(name, fault, prev, history, now, rules, obs.trace_name)
        status = Status.SYNCING
        holds = before_stage2(prev, held.date, own.date)
        notes.append(
            f"between the stages of a staged sync: stage 1 finished {when(stage1.date)}, its "
            f"indexes are still those of its last complete sync ({when(own.date)})"
        )
    state = MirrorState(
        name,
        status,
        now,
        master_date=holds,
        behind_since=behind_since(holds, history),
        own_date=own.date if own is not None else None,
        trace_name=obs.trace_name,
        note="; ".join(notes) or None,
    )
    return _coverage(state, prev, obs.coverage, now)


def before_stage2(prev: MirrorState | None, copy: float, own: float) -> float:
    """The master state a mirror between ftpsync's stages holds: that of its last complete sync.

    Its master trace copy (`copy`) is what stage 1 brought; its indexes come in stage 2. The
    previous round's state is that, when it was older than the copy; otherwise (a first look,
    or the previous round saw the copy arrive mid-sync) its own trace's date `own`, the newest
    state its last complete sync could have brought.
    """
    if prev is not None and prev.master_date is not None and prev.master_date < copy:
        return prev.master_date
    return min(own, copy)


def rejudge(state: MirrorState, history: tuple[MasterVersion, ...]) -> MirrorState:
    """`state` with its lag recomputed against a newer master history (no probe made)."""
    if state.master_date is None:
        return state
    return dataclasses.replace(state, behind_since=behind_since(state.master_date, history))


def transition(prev: MirrorState | None, new: MirrorState) -> tuple[int, str] | None:
    """The log line for a change worth telling, as (level, message); None for everything else.

    Only going out of service (down or broken, once) and coming back (once) are told; syncing,
    lag and failures within the grace are for the status views, not the log.
    """
    was_ok = prev is None or prev.status in SERVABLE or prev.status is Status.UNKNOWN
    ok = new.status in SERVABLE
    if was_ok and not ok:
        return logging.WARNING, f"mirror {new.name} is {new.status.value}: {new.error}"
    if not was_ok and ok and prev is not None:
        return logging.INFO, (
            f"mirror {new.name} recovered after {prev.failures} failed probes "
            f"({prev.status.value}: {prev.error})"
        )
    return None
