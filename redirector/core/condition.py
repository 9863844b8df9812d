"""A mirror's condition: the one vocabulary every view, table and metric names a mirror by.

The condition is derived from `selection.standing`, the part of `selection.check` that does not
depend on the request, so a mirror shown as served is one selection serves (for the paths it
carries) and a mirror shown as not served is one selection rejects for every request.

Why not (mirror, state, master): the master's history is already in the state (its
`behind_since`, kept by the poller against that history); reading the master again here
would be a second opinion that could disagree with selection.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from redirector.core.models import Status
from redirector.core.selection import Candidate, Reason, Rejection, standing


class Condition(enum.Enum):
    """What a mirror is, in one word. In order: served first, then worst news last.

    The values are those of ``/mirrors.json``'s ``state`` (schema mirrors-v1).
    """

    FRESH = "fresh"
    """Served: up and at most ``max_lag`` behind the master, checked within ``max_lag``."""
    SYNCING = "syncing"
    """Served: as fresh, with an ftpsync run in progress (stage 1 leaves the old indexes
    consistent, so it is still served)."""
    STALE = "stale"
    """Not served: it answers, but cannot be shown current: more than ``max_lag`` behind the
    master (syncing or not), no readable master trace copy (its lag is unknown), or not
    checked for longer than ``max_lag``."""
    DOWN = "down"
    """Not served: no usable answer (connect, TLS or DNS error, timeout, 5xx)."""
    BROKEN = "broken"
    """Not served: answers with junk or inconsistent traces."""
    UNCHECKED = "unchecked"
    """Not served: configured, not probed yet."""
    DISABLED = "disabled"
    """Not served: switched off in the config."""

    @property
    def served(self) -> bool:
        return self in SERVED


SERVED = frozenset({Condition.FRESH, Condition.SYNCING})

_OF_REASON = {
    Reason.DISABLED: Condition.DISABLED,
    Reason.UNCHECKED: Condition.UNCHECKED,
    Reason.DOWN: Condition.DOWN,
    Reason.BROKEN: Condition.BROKEN,
    Reason.UNKNOWN_LAG: Condition.STALE,
    Reason.STALE: Condition.STALE,
    Reason.OUTDATED: Condition.STALE,
}


@dataclass(frozen=True, slots=True)
class Assessment:
    """A mirror's condition at one moment, with the facts behind it.

    `rejection`: why it is not served (None when it is). `lag`: seconds behind the master,
    None when unknown or never checked.
    """

    condition: Condition
    rejection: Rejection | None
    lag: float | None


def of_reason(reason: Reason) -> Condition | None:
    """The condition a rejection for `reason` puts a mirror in; None for a reason of the
    request (a subtree, https, IPv6), which says nothing of the mirror as a whole."""
    return _OF_REASON.get(reason)


def assess(c: Candidate, now: float, max_lag: float) -> Assessment:
    """The condition of `c` at `now`, consistent with `selection.check` (see the module doc)."""
    s = c.state
    lag = s.lag(now) if s is not None and s.status is not Status.UNKNOWN else None
    why = standing(c, now, max_lag)
    if why is not None:
        condition = _OF_REASON[why.reason]
    elif s is not None and s.status is Status.SYNCING:
        condition = Condition.SYNCING
    else:
        condition = Condition.FRESH
    return Assessment(condition, why, lag)
