"""ftpsync trace parsing and how far a mirror lags behind the master."""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import re
from dataclasses import dataclass
from email.utils import parsedate_tz
from itertools import pairwise

from redirector.core.localedate import LocaleDateError, looks_like_date, parse_locale_date
from redirector.core.models import MasterVersion

__all__ = [
    "MAX_TRACE_BYTES",
    "Trace",
    "TraceError",
    "behind_since",
    "is_future",
    "lag_of",
    "parse_date",
    "parse_http_date",
    "parse_trace",
    "record_master",
]

MAX_TRACE_BYTES = 65536

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAY = "|".join(_DAYS)
_MONTH = "|".join(_MONTHS)

# `date -u` in the POSIX locale: "%a %b %e %H:%M:%S UTC %Y". %e pads a one-digit day with a
# space, so runs of spaces are allowed; a zero-padded day ("Mar 05") is accepted too. Written
# out instead of strptime, whose %a and %b follow the process locale.
_POSIX_DATE = re.compile(
    rf"(?:{_DAY})\s+(?P<mon>{_MONTH})\s+(?P<day>\d{{1,2}})"
    r"\s+(?P<H>\d{2}):(?P<M>\d{2}):(?P<S>\d{2})\s+(?:UTC|GMT)\s+(?P<year>\d{4})"
)
# RFC 2822, as in the `Date:` and `Date-Started:` fields of format C: "Wed, 27 Apr 2016 15:56:37
# +0000". The weekday and the seconds are optional; the zone is a numeric offset or UT/UTC/GMT/Z.
_RFC2822_DATE = re.compile(
    rf"(?:(?:{_DAY}),\s*)?(?P<day>\d{{1,2}})\s+(?P<mon>{_MONTH})\s+(?P<year>\d{{4}})"
    r"\s+(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2}))?"
    r"\s*(?P<zone>[+-]\d{4}|UTC|UT|GMT|Z)"
)
# A `Key: value` line. The key starts with a letter and holds no colon; the colon is followed by
# whitespace or the end of the line, so a URL ("http://...") is not taken for a field.
_FIELD = re.compile(r"(?P<key>[A-Za-z][\w .()/-]*?)\s*:(?:\s+(?P<value>.*))?")

_C_KEYS = frozenset({"date", "archive serial", "date-started", "creator"})
_A_KEYS = frozenset({"used ftpsync version", "running on host"})


class TraceError(ValueError):
    """A body that is not an ftpsync trace; str() is a short human reason."""


@dataclass(frozen=True, slots=True)
class Trace:
    """One parsed ftpsync trace file."""

    date: float  # unix seconds, UTC: line 1, or Last-Modified for an empty file
    format: str  # "A" (2008-2012), "B" (2012-2015, incl. date-only), "C" (2016-), "empty"
    fields: tuple[tuple[str, str], ...]  # the `Key: value` lines, in order
    started: float | None = None  # Date-Started:
    serial: str | None = None  # Archive serial:
    upstream: str | None = None  # Upstream-mirror:
    host: str | None = None  # Running on host:
    version: str | None = None  # Used ftpsync version:

    def get(self, key: str) -> str | None:
        """The value of the first field named `key` (case-insensitive), None when absent."""
        wanted = key.casefold()
        for name, value in self.fields:
            if name.casefold() == wanted:
                return value
        return None


def _timestamp(fields: tuple[int, int, int, int, int, int]) -> float:
    """Unix time of (year, month, day, hour, minute, second) read as UTC."""
    try:
        # datetime validates the ranges (no Feb 30, no hour 25, no leap second).
        moment = dt.datetime(*fields)
    except ValueError as exc:
        raise TraceError(f"impossible date: {exc}") from None
    return float(calendar.timegm(moment.timetuple()))


def _fields(match: re.Match[str]) -> tuple[int, int, int, int, int, int]:
    """The calendar fields of a _POSIX_DATE or _RFC2822_DATE match."""
    return (
        int(match["year"]),
        _MONTHS.index(match["mon"]) + 1,
        int(match["day"]),
        int(match["H"]),
        int(match["M"]),
        int(match["S"] or 0),
    )


def _zone_offset(zone: str) -> int:
    """Seconds east of UTC for an RFC 2822 zone that _RFC2822_DATE accepted."""
    if zone[0] in "+-":
        minutes = int(zone[1:3]) * 60 + int(zone[3:5])
        return minutes * 60 if zone[0] == "+" else -minutes * 60
    return 0


def parse_date(text: str) -> float:
    """Unix time of a trace date: `date -u` output (UTC or GMT) or an RFC 2822 date.

    Raises TraceError when `text` is neither.
    """
    text = text.strip()
    if match := _POSIX_DATE.fullmatch(text):
        return _timestamp(_fields(match))
    if match := _RFC2822_DATE.fullmatch(text):
        return _timestamp(_fields(match)) - _zone_offset(match["zone"])
    raise TraceError(f"not a date: {text[:80]!r}")


def parse_http_date(value: str) -> float | None:
    """Unix time of an HTTP date (a Last-Modified header), None when it cannot be read.

    Accepts the IMF-fixdate form and the obsolete RFC 850 and asctime forms; a missing zone
    means GMT, as HTTP dates always are.
    """
    parts = parsedate_tz(value)
    if parts is None:
        return None
    year, month, day, hour, minute, second = parts[:6]
    try:
        local = _timestamp((year, month, day, hour, minute, second))
    except TraceError:
        return None
    return local - (parts[9] or 0)


def _optional_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parse_date(value)
    except TraceError:
        # An unreadable optional field does not make the trace junk; line 1 is what counts.
        return None


def _detect_format(fields: tuple[tuple[str, str], ...]) -> str:
    keys = [name.casefold() for name, _ in fields]
    if _C_KEYS.intersection(keys):
        return "C"
    if len(keys) == len(_A_KEYS) and set(keys) == _A_KEYS:
        return "A"
    return "B"


def _locale_date(line: str) -> float:
    """Line 1 in the cron's locale (ftpsync's releases of November 2008), or why it is not."""
    try:
        return parse_locale_date(line)
    except LocaleDateError as e:
        if looks_like_date(line):
            raise TraceError(
                f"first line is a date in a locale that cannot be read exactly ({e}): {line[:80]!r}"
            ) from None
        raise TraceError(f"first line is not a date: {line[:80]!r}") from None


def parse_trace(
    body: bytes, *, last_modified: float | None = None, max_bytes: int = MAX_TRACE_BYTES
) -> Trace:
    """Parse an ftpsync trace file of any format (A, B, C), or an empty one.

    An empty (or blank) body is format "empty" dated `last_modified`, the HTTP Last-Modified
    time; without one it is a TraceError. The first non-empty line must be a date, otherwise
    the body is not a trace (typically an HTML "not found" page served with status 200). Lines
    after it that are not `Key: value` are ignored. A date in the future is returned as is; see
    is_future. A first line in another locale than POSIX (ftpsync of November 2008 ran `date
    -u` in the cron's) is read by localedate.py when it can be read exactly. Raises TraceError
    with a short reason.
    """
    if len(body) > max_bytes:
        raise TraceError(f"body exceeds {max_bytes} bytes")
    # utf-8-sig drops a leading BOM; "replace" keeps a Latin-1 sponsor name from failing it all.
    text = body.decode("utf-8-sig", errors="replace")
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        if last_modified is None:
            raise TraceError("empty body")
        return Trace(date=last_modified, format="empty", fields=())
    first, *rest = lines
    try:
        date = parse_date(first)
    except TraceError:
        date = _locale_date(first)
    fields: list[tuple[str, str]] = []
    for line in rest:
        if match := _FIELD.fullmatch(line):
            fields.append((match["key"], (match["value"] or "").strip()))
    found = tuple(fields)
    trace = Trace(date=date, format=_detect_format(found), fields=found)
    return dataclasses.replace(
        trace,
        started=_optional_date(trace.get("Date-Started")),
        serial=trace.get("Archive serial") or None,
        upstream=trace.get("Upstream-mirror") or None,
        host=trace.get("Running on host") or None,
        version=trace.get("Used ftpsync version") or None,
    )


def is_future(trace: Trace, now: float, slack: float = 300) -> bool:
    """True when the trace is dated more than `slack` seconds after `now` (a wrong clock)."""
    return trace.date > now + slack


def record_master(
    history: tuple[MasterVersion, ...],
    trace_date: float,
    now: float,
    *,
    keep: float = 30 * 86400,
) -> tuple[MasterVersion, ...]:
    """The master's history after observing its trace dated `trace_date` at `now`.

    History is oldest first, the last entry current. The first observation is taken to have
    appeared at its own date (never later than `now`): on a cold start that is the best
    estimate. A newer date is appended as first seen `now`; the same date changes nothing; an
    older date (the master restored from a backup) is ignored, so mirrors are not penalised for
    a master glitch. Versions first seen before `now - keep` are pruned, except the current one
    and any whose successor is still recent, so behind_since stays exact within `keep`.
    Returns `history` itself when nothing changes.
    """
    if not history:
        return (MasterVersion(date=trace_date, first_seen=min(trace_date, now)),)
    if trace_date > history[-1].date:
        history = (*history, MasterVersion(date=trace_date, first_seen=now))
    cutoff = now - keep
    # Entry i answers behind_since for mirrors holding something older than it, until entry
    # i+1 exists; once entry i+1 is itself older than the cutoff, any mirror entry i would
    # answer for is behind by more than `keep` either way.
    if not any(later.first_seen < cutoff for later in history[1:]):
        return history
    return (
        *(version for version, later in pairwise(history) if not later.first_seen < cutoff),
        history[-1],
    )


def behind_since(held: float | None, history: tuple[MasterVersion, ...]) -> float | None:
    """Since when the master has had content a mirror holding master trace `held` lacks.

    None when the mirror is current (`held` is at least the current date) and when it is
    unknown (`held` is None or there is no history); otherwise the first_seen of the oldest
    version newer than `held`.
    """
    if held is None or not history or held >= history[-1].date:
        return None
    for version in history:
        if version.date > held:
            return version.first_seen
    return None  # unreachable: the current version is newer than `held`


def lag_of(held: float | None, history: tuple[MasterVersion, ...], now: float) -> float | None:
    """Seconds a mirror holding master trace `held` is behind at `now`.

    0.0 when current, None when unknown; never negative (a clock stepping back counts as 0).
    """
    if held is None or not history:
        return None
    since = behind_since(held, history)
    if since is None:
        return 0.0
    return max(0.0, now - since)
