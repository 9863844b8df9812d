"""A mirror's state as the views word it, for tests that hold a state but no configured mirror."""

from __future__ import annotations

from redirector.core.condition import assess
from redirector.core.models import Mirror, MirrorState
from redirector.core.selection import Candidate
from redirector.views.condition import condition_text, failure_note


def describe(
    state: MirrorState | None, now: float, max_lag: float
) -> tuple[str, float | None, str]:
    """(condition, lag, words) of an enabled mirror in `state` at `now`."""
    name = state.name if state is not None else "m"
    c = Candidate(Mirror(name, "http://m.test/", None, "NL", 52.0, 5.0), state)
    a = assess(c, now, max_lag)
    note = failure_note(state.failures, state.retry_at, a.condition, now) if state else ""
    return a.condition.value, a.lag, "; ".join(filter(None, [condition_text(c, a, now), note]))
