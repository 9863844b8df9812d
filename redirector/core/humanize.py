"""Times and tables for people: the one duration format, the one timestamp format, one table.

Every view and command formats through here, so a page never says `3 h 20 min` in one place
and `3h20m` in another. Machine fields (JSON, logs) use `rfc3339`.

- durations: `45s`, `1m30s`, `3h20m`, `2d04h`: the two largest units, the second zero-padded
  so columns line up; truncated toward zero (a mirror 7h59m59s behind is not "8h00m" behind).
  A fraction under ten seconds (a timeout, a response time) keeps two decimals: `0.25s`.
- timestamps: `2026-12-03 17:05:09 UTC`, sortable, and with seconds because trace dates (which
  tell master states apart) have them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import overload


def duration(seconds: float) -> str:
    """3725 -> '1h02m', 90 -> '1m30s', 45 -> '45s', 2 days 3 hours -> '2d03h', -90 -> '-1m30s',
    0.25 -> '0.25s'."""
    a = abs(seconds)
    if a < 10 and a != int(a):
        digits = f"{a:.2f}".rstrip("0").rstrip(".")
        return "0s" if digits == "0" else f"{'-' if seconds < 0 else ''}{digits}s"
    s = int(a)
    sign = "-" if seconds < 0 and s else ""
    if s >= 86400:
        return f"{sign}{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{sign}{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{sign}{s // 60}m{s % 60:02d}s"
    return f"{sign}{s}s"


def ago(ts: float | None, now: float) -> str:
    """How long before `now` `ts` was: '3h20m ago', 'in 5m00s' (future), 'just now', 'never'."""
    if ts is None:
        return "never"
    delta = now - ts
    if delta <= -1:
        return f"in {duration(-delta)}"
    return "just now" if delta < 1 else f"{duration(delta)} ago"


def when(ts: float) -> str:
    """Unix time -> '2026-12-03 17:05:09 UTC' (whole seconds, truncated)."""
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def day(ts: float) -> str:
    """Unix time -> its UTC day, '2026-12-03'."""
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%d")


@overload
def rfc3339(ts: float, *, ms: bool = False) -> str: ...
@overload
def rfc3339(ts: None, *, ms: bool = False) -> None: ...
@overload
def rfc3339(ts: float | None, *, ms: bool = False) -> str | None: ...
def rfc3339(ts: float | None, *, ms: bool = False) -> str | None:
    """Unix time -> RFC 3339 UTC with a Z, for machines: whole seconds (rounded), or
    milliseconds (truncated, as a log line's time must not be later than the event)."""
    if ts is None:
        return None
    if not ms:
        return datetime.fromtimestamp(round(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    whole = int(ts // 1)
    millis = int((ts - whole) * 1000)
    return datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows (the first is the header) as fixed-width columns two spaces apart.

    The last column is not padded: it holds free text (a reason, a URL) and trailing blanks
    would only get in the way of grep and copy-paste.
    """
    if not rows:
        return ""
    ncols = max(len(r) for r in rows)
    widths = [max((len(r[i]) for r in rows if i < len(r)), default=0) for i in range(ncols - 1)]
    lines = []
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)]
        lines.append("  ".join([*cells, r[-1]]) if r else "")
    return "\n".join(lines)
