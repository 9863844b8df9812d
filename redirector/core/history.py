"""Mirror history: up/down transitions, lag samples, availability and the network's event log.

Pure: the store keeps what this module builds, the poller feeds it one pass at a time, and the
views ask it for availability, a day strip and "down since". Time comes in as `now`.

Sizes are bounded here, so every backend holds the same amount: per mirror at most
`MAX_TRANSITIONS` transitions (and none older than `KEEP_SECONDS`, except the one that says
what the mirror was when that window opened) and the last `MAX_LAG_SAMPLES` lag samples; the
event log keeps its last `MAX_EVENTS` events.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from redirector.core.models import MasterState, MirrorState, Status

DAY = 86400.0
KEEP_SECONDS = 31 * DAY  # a little over the longest availability window (30 d)
MAX_TRANSITIONS = 500  # a mirror flapping every pass for days must not grow without end
MAX_REASON = 160  # characters of a probe error kept with a transition or in an event
MAX_LAG_SAMPLES = 288  # a day of passes at the default five-minute interval
MAX_EVENTS = 500
WINDOWS: tuple[tuple[str, float], ...] = (("24h", DAY), ("7d", 7 * DAY), ("30d", 30 * DAY))
STRIP_DAYS = 14


class Phase(enum.Enum):
    """What a transition records: whether the mirror could serve, not every status change.

    Syncing counts as up (it still serves), so a sync every few hours does not fill the
    bounded list with transitions that change nothing for clients.
    """

    UP = "up"
    DOWN = "down"
    BROKEN = "broken"


def phase_of(status: Status) -> Phase | None:
    """The phase of a poller status; None for a mirror not checked yet (no transition)."""
    if status in (Status.UP, Status.SYNCING):
        return Phase.UP
    if status is Status.DOWN:
        return Phase.DOWN
    if status is Status.BROKEN:
        return Phase.BROKEN
    return None


@dataclass(frozen=True, slots=True)
class Transition:
    """From `at` on, the mirror was in `phase`, for `reason` (the poller's error, if any)."""

    at: float
    phase: Phase
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class LagSample:
    """The mirror's lag behind the master at one pass; None when it was unknown."""

    at: float
    lag: float | None


@dataclass(frozen=True, slots=True)
class MirrorHistory:
    """One mirror's record, oldest first in both tuples."""

    name: str
    transitions: tuple[Transition, ...] = ()
    lags: tuple[LagSample, ...] = ()

    @property
    def phase(self) -> Phase | None:
        return self.transitions[-1].phase if self.transitions else None


class EventKind(enum.Enum):
    MIRROR_DOWN = "mirror-down"
    MIRROR_UP = "mirror-up"
    MASTER_PUBLISHED = "master-published"
    CONFIG_RELOADED = "config-reloaded"
    CONFIG_REFUSED = "config-refused"


@dataclass(frozen=True, slots=True)
class Event:
    """One line of the network's event log.

    `subject`: the mirror, or the config file; None for the master. `duration`: for
    mirror-up, how long it had been out of service.
    """

    at: float
    kind: EventKind
    subject: str | None
    detail: str
    duration: float | None = None


@dataclass(frozen=True, slots=True)
class HistoryData:
    """Everything the store holds of history."""

    mirrors: Mapping[str, MirrorHistory]
    events: tuple[Event, ...]  # oldest first


# --- building ------------------------------------------------------------------------------


def trim(h: MirrorHistory, now: float) -> MirrorHistory:
    """`h` within the size bounds: old transitions dropped but the one in force at the
    window's start, at most `MAX_TRANSITIONS` and `MAX_LAG_SAMPLES`."""
    ts = h.transitions
    cut = now - KEEP_SECONDS
    first = 0
    for i, t in enumerate(ts):
        if t.at <= cut:
            first = i  # the last one at or before the cut is still in force after it
    ts = ts[first:][-MAX_TRANSITIONS:]
    return replace(h, transitions=ts, lags=h.lags[-MAX_LAG_SAMPLES:])


def down_start(h: MirrorHistory) -> float | None:
    """When the current run out of service began (down or broken, either); None when up."""
    start = None
    for t in reversed(h.transitions):
        if t.phase is Phase.UP:
            break
        start = t.at
    return start


def advance(
    prev: MirrorHistory | None, state: MirrorState, now: float
) -> tuple[MirrorHistory, Event | None]:
    """`prev` after one pass that left the mirror in `state`, and the event it makes, if any.

    A transition is added when the phase changes; a lag sample every pass. Going out of
    service is a mirror-down event (also on first sight, so a mirror that is down when the
    poller starts shows in the log); coming back is mirror-up with how long it was out.
    """
    h = prev or MirrorHistory(state.name)
    lags = (*h.lags, LagSample(now, state.lag(now)))
    phase = phase_of(state.status)
    event = None
    transitions = h.transitions
    if phase is not None and phase is not h.phase:
        was_down = down_start(h)
        reason = state.error[:MAX_REASON] if state.error else None
        transitions = (*transitions, Transition(now, phase, reason))
        if phase is Phase.UP and was_down is not None:
            event = Event(now, EventKind.MIRROR_UP, state.name, "back in service", now - was_down)
        elif phase is not Phase.UP and (h.phase is Phase.UP or h.phase is None):
            why = (state.error or phase.value)[:MAX_REASON]
            event = Event(now, EventKind.MIRROR_DOWN, state.name, f"{phase.value}: {why}")
    return trim(replace(h, transitions=transitions, lags=lags), now), event


def master_event(prev: MasterState | None, new: MasterState, now: float) -> Event | None:
    """A master-published event when the master's current content changed since `prev`.

    Nothing on first sight: the poller starting is not a publication.
    """
    old = prev.current if prev is not None else None
    cur = new.current
    if old is None or cur is None or cur.date == old.date:
        return None
    dated = datetime.fromtimestamp(cur.date, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return Event(now, EventKind.MASTER_PUBLISHED, None, f"new master content of {dated}")


def reload_event(*, ok: bool, path: str, detail: str, now: float) -> Event:
    """The event for a config reload that was applied (`ok`) or refused, with why."""
    kind = EventKind.CONFIG_RELOADED if ok else EventKind.CONFIG_REFUSED
    return Event(now, kind, path, detail[: 4 * MAX_REASON])


def record_pass(
    prev: Mapping[str, MirrorHistory],
    states: Iterable[MirrorState],
    prev_master: MasterState | None,
    master: MasterState,
    now: float,
) -> tuple[list[MirrorHistory], list[Event]]:
    """Every mirror's history after one pass, and the pass's events in order."""
    events: list[Event] = []
    published = master_event(prev_master, master, now)
    if published is not None:
        events.append(published)
    out = []
    for s in states:
        h, event = advance(prev.get(s.name), s, now)
        out.append(h)
        if event is not None:
            events.append(event)
    return out, events


# --- reading -------------------------------------------------------------------------------


def _spans(
    transitions: Sequence[Transition], start: float, end: float
) -> Iterable[tuple[float, float, Phase]]:
    """The known part of [start, end) cut into (from, to, phase) by `transitions`."""
    for i, t in enumerate(transitions):
        until = transitions[i + 1].at if i + 1 < len(transitions) else end
        lo, hi = max(t.at, start), min(until, end)
        if hi > lo:
            yield lo, hi, t.phase


def availability(transitions: Sequence[Transition], start: float, end: float) -> float | None:
    """The share of the known time in [start, end) the mirror was up; None if none is known.

    Time before the first transition is unknown, not down: a mirror added yesterday is not
    29 days down in its 30-day figure.
    """
    known = up = 0.0
    for lo, hi, phase in _spans(transitions, start, end):
        known += hi - lo
        if phase is Phase.UP:
            up += hi - lo
    return up / known if known > 0 else None


def windows(h: MirrorHistory, now: float) -> dict[str, float | None]:
    """Availability over each of `WINDOWS` (24h, 7d, 30d) ending at `now`."""
    return {label: availability(h.transitions, now - span, now) for label, span in WINDOWS}


@dataclass(frozen=True, slots=True)
class Day:
    """One UTC day of the strip: its start and the share of its known time spent up."""

    start: float
    up: float | None  # None: nothing known of that day
    down_seconds: float  # time known to be out of service


def strip(h: MirrorHistory, now: float, days: int = STRIP_DAYS) -> tuple[Day, ...]:
    """The last `days` UTC days, oldest first; today ends at `now`."""
    today = now - now % DAY
    out = []
    for k in range(days - 1, -1, -1):
        lo = today - k * DAY
        hi = min(lo + DAY, now)
        down = sum(b - a for a, b, p in _spans(h.transitions, lo, hi) if p is not Phase.UP)
        out.append(Day(lo, availability(h.transitions, lo, hi), down))
    return tuple(out)
