"""A mirror's condition and a rejection in words: the one place the views and commands get them.

Pure. `core.condition` says what a mirror is and `core.selection` why it was rejected, both as
facts; this words them, with `now`, so that no decision or cache holds a sentence. The status
page, ``/mirrors.json``, the explain views, ``redirector mirrors`` and ``poll --once`` all
word through here.
"""

from __future__ import annotations

from collections.abc import Iterable

from redirector.core.condition import Assessment, Condition, assess
from redirector.core.humanize import ago, duration, table, when
from redirector.core.models import SERVABLE, Status
from redirector.core.selection import Candidate, Reason, Rejection


def reason_text(rej: Rejection, now: float) -> str:
    """Why a mirror was rejected, in words, as of `now` (the lag and ages grow with it)."""
    r, subject = rej.reason, rej.subject
    if r is Reason.DISABLED:
        return "disabled in the config"
    if r is Reason.EXCLUDED:
        return f"excludes {subject} (config)"
    if r is Reason.LACKS:
        return f"lacks {subject} (found by the poller)"
    if r is Reason.REPODATA:
        return f"repodata mismatch for {subject}"
    if r is Reason.FTP_ONLY:
        return "ftp only: in mirror lists, not for this request"
    if r is Reason.NO_HTTPS:
        if subject:  # the https policy: "<eligible>/<needed>"
            n, _, needed = subject.partition("/")
            return (
                f"https_policy master: only {n} https mirror{'s' if n != '1' else ''} may serve"
                f" this, fewer than https_min_mirrors = {needed}"
            )
        return "has no https URL"
    if r is Reason.NO_IPV6:
        if subject == "config":
            return "not reachable over IPv6 (ipv6 = false in the config)"
        if subject is None:
            return "not reachable over IPv6 as far as known: not checked over IPv6 yet"
        return f"not reachable over IPv6: {subject or 'no answer over IPv6'}"
    if r is Reason.PRIVATE:
        return "private: not your network"
    if r is Reason.COUNTRY_ONLY:
        return f"country-only: not your country ({subject or 'unknown'})"
    if r is Reason.CONTINENT_ONLY:
        return f"continent-only: not your continent ({subject or 'unknown'})"
    if r is Reason.UNCHECKED:
        return "not checked yet"
    if r in (Reason.DOWN, Reason.BROKEN):
        return f"{r.value}: {subject or 'no reason given'}"
    if r is Reason.UNKNOWN_LAG:
        return "holds no readable master trace"
    if r is Reason.STALE and rej.since is not None:
        lag = rej.seconds(now) or 0.0
        return f"stale by {duration(lag)}, behind the master since {when(rej.since)}"
    if r is Reason.OUTDATED and rej.since is not None:
        return f"last checked {ago(rej.since, now)}"
    return str(r.value)  # a reason without its facts: only a hand-built Rejection has none


def lag_text(lag: float | None) -> str:
    """A lag for a table cell: '0s' (current), '3h20m', or 'unknown'."""
    return "unknown" if lag is None else duration(lag)


def condition_text(c: Candidate, a: Assessment, now: float) -> str:
    """Why `c` is in condition `a`, in words, with what else the poller noted.

    The condition's own word is not repeated (it is shown beside this); a down or broken
    mirror's text is the poller's error.
    """
    s = c.state
    if a.condition in (Condition.DOWN, Condition.BROKEN):
        return (s.error if s is not None else None) or "no reason given"
    if a.rejection is not None:
        main = reason_text(a.rejection, now)
        if a.condition is Condition.STALE and s is not None and s.status is Status.SYNCING:
            main += ", syncing now"
    elif a.condition is Condition.SYNCING:
        main = "sync in progress, still served"
    else:
        main = "current" if not a.lag else f"{duration(a.lag)} behind, within the limit"
    notes = [main]
    if s is not None and s.status in SERVABLE:
        if s.error:
            notes.append(f"last probe failed ({s.failures} in a row): {s.error}")
        if s.lacks:
            notes.append(f"lacks {s.coverage_note or ', '.join(s.lacks)}")
    return "; ".join(notes)


def classify(c: Candidate, now: float, max_lag: float) -> tuple[Condition, str]:
    """The condition of one mirror and why, in words: what the status views show."""
    a = assess(c, now, max_lag)
    return a.condition, condition_text(c, a, now)


def failure_note(failures: int, retry_at: float | None, condition: Condition, now: float) -> str:
    """'(4 failed checks); next probe in 5m00s' for a failing mirror, else ''."""
    parts = [f"({failures} failed checks)"] if failures > 1 else []
    failing = condition in (Condition.DOWN, Condition.BROKEN)
    if failing and retry_at is not None and retry_at > now:
        parts.append(f"next probe {ago(retry_at, now)}")
    return "; ".join(parts)


def state_table(
    candidates: Iterable[Candidate], now: float, max_lag: float
) -> tuple[str, list[Condition]]:
    """The mirrors as `redirector mirrors` and `poll --once` print them, and their conditions
    in the same order."""
    rows = [("NAME", "STATE", "LAG", "CHECKED", "FAILS", "REASON")]
    conditions = []
    for c in candidates:
        a = assess(c, now, max_lag)
        conditions.append(a.condition)
        s = c.state
        checked = s is not None and s.status is not Status.UNKNOWN
        reason = condition_text(c, a, now)
        note = failure_note(s.failures, s.retry_at, a.condition, now) if s is not None else ""
        rows.append(
            (
                c.mirror.name,
                a.condition.value,
                "-" if a.lag is None else lag_text(a.lag),
                ago(s.checked_at, now) if s is not None and checked else "never",
                str(s.failures) if s is not None else "0",
                f"{reason} {note}" if note else reason,
            )
        )
    return table(rows), conditions
