"""Tests for redirector.freshness: trace parsing and lag rules, with an injected clock."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redirector.core.models import MasterVersion
from redirector.core.trace import (
    MAX_TRACE_BYTES,
    Trace,
    TraceError,
    behind_since,
    is_future,
    lag_of,
    parse_date,
    parse_http_date,
    parse_trace,
    record_master,
)
from tests.support import ROOT

TRACES = ROOT / "tests" / "fixtures" / "traces"

HOUR = 3600.0
DAY = 86400.0
FRESH = 8 * HOUR  # SME's promise: current within the last 8 hours


def read(name: str) -> bytes:
    return (TRACES / name).read_bytes()


# --- parse_date --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("Mon Mar  4 08:11:18 UTC 2024", 1709539878.0, id="posix-utc"),
        pytest.param("Thu Mar  5 13:15:10 UTC 2009", 1236258910.0, id="two-space-day"),
        pytest.param("Thu Mar 05 13:15:10 UTC 2009", 1236258910.0, id="zero-padded-day"),
        pytest.param("Tue Nov 15 09:41:02 UTC 2011", 1321350062.0, id="two-digit-day"),
        pytest.param("Sat Feb  2 00:00:01 GMT 2013", 1359763201.0, id="gmt"),
        pytest.param("  Thu Mar  5 13:15:10 UTC 2009 \t", 1236258910.0, id="surrounding-space"),
        pytest.param("Mon, 04 Mar 2024 08:11:18 +0000", 1709539878.0, id="rfc2822"),
        pytest.param("Mon, 04 Mar 2024 09:11:18 +0100", 1709539878.0, id="rfc2822-east"),
        pytest.param("4 Mar 2024 03:11:18 -0500", 1709539878.0, id="rfc2822-west-no-weekday"),
        pytest.param("Mon, 04 Mar 2024 08:11 GMT", 1709539860.0, id="rfc2822-no-seconds"),
        pytest.param("Mon, 04 Mar 2024 08:11:18 -0000", 1709539878.0, id="rfc2822-unknown-zone"),
    ],
)
def test_parse_date(text: str, expected: float) -> None:
    assert parse_date(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("<!DOCTYPE html>", id="html"),
        pytest.param("Used ftpsync version: 20180513", id="field"),
        pytest.param("1709539878", id="epoch"),
        pytest.param("2024-03-04T08:11:18Z", id="iso8601"),
        pytest.param("Thu Mar  5 13:15:10 CET 2009", id="other-zone"),
        pytest.param("Thu Mar  5 13:15:10 2009", id="no-zone"),
        pytest.param("Thu Mar  5 13:15:10 UTC 2009 extra", id="trailing-text"),
        pytest.param("Do Mär  5 13:15:10 UTC 2009", id="german-locale"),
        pytest.param("Sun Feb 30 13:15:10 UTC 2009", id="feb-30"),
        pytest.param("Thu Mar  5 25:15:10 UTC 2009", id="hour-25"),
        pytest.param("Mon, 04 Mar 2024 08:11:18", id="rfc2822-no-zone"),
    ],
)
def test_parse_date_rejects(text: str) -> None:
    with pytest.raises(TraceError):
        parse_date(text)


# --- parse_http_date ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("Sun, 06 Nov 1994 08:49:37 GMT", 784111777.0, id="imf-fixdate"),
        pytest.param("Sunday, 06-Nov-94 08:49:37 GMT", 784111777.0, id="rfc850"),
        pytest.param("Sun Nov  6 08:49:37 1994", 784111777.0, id="asctime"),
        pytest.param("Mon, 04 Mar 2024 08:11:18 GMT", 1709539878.0, id="recent"),
        pytest.param("", None, id="empty"),
        pytest.param("yesterday", None, id="garbage"),
        pytest.param("Sun, 31 Feb 1994 08:49:37 GMT", None, id="feb-31"),
        pytest.param("Sun, 06 Nov 1994 25:49:37 GMT", None, id="hour-25"),
    ],
)
def test_parse_http_date(value: str, expected: float | None) -> None:
    assert parse_http_date(value) == expected


# --- parse_trace on fixtures -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expected:
    date: float
    format: str
    fields: int
    started: float | None = None
    serial: str | None = None
    upstream: str | None = None
    host: str | None = None
    version: str | None = None


FIXTURES = [
    pytest.param(
        "a-2011.trace",
        Expected(1321350062.0, "A", 2, host="mirror.example.org", version="80387"),
        id="format-a",
    ),
    pytest.param(
        "b-full.trace",
        Expected(
            1402560121.0,
            "B",
            9,
            upstream="mirror.contribs.org",
            host="mirror.de.example.net",
            version="20130605",
        ),
        id="format-b-full",
    ),
    pytest.param("b-date-only.trace", Expected(1435724411.0, "B", 0), id="format-b-date-only"),
    pytest.param(
        "c-full.trace",
        Expected(
            1709539878.0,
            "C",
            21,
            started=1709538902.0,
            serial="2024030401",
            upstream="mirror.contribs.org",
            host="mirror1.example.nl",
            version="20180513",
        ),
        id="format-c-full",
    ),
    pytest.param(
        "dak-master.trace",
        Expected(1461772597.0, "C", 3, serial="2016042703", host="master.contribs.org"),
        id="format-c-dak-master",
    ),
    pytest.param(
        "two-space-day.trace",
        Expected(1236258910.0, "A", 2, host="ftp.example.org", version="80387"),
        id="two-space-day",
    ),
    pytest.param(
        "gmt.trace",
        Expected(
            1359763201.0,
            "B",
            3,
            upstream="mirror.contribs.org",
            host="mirror.example.com",
            version="20120521",
        ),
        id="gmt",
    ),
    pytest.param(
        "crlf.trace",
        Expected(
            1571436347.0,
            "C",
            8,
            started=1571435893.0,
            serial="2019101801",
            upstream="mirror.contribs.org",
            host="mirror.example.co.uk",
            version="20180513",
        ),
        id="crlf-trailing-whitespace",
    ),
    pytest.param(
        "bom.trace",
        Expected(
            1378000803.0,
            "B",
            3,
            upstream="mirror.contribs.org",
            host="mirror.example.se",
            version="20120521",
        ),
        id="bom",
    ),
    pytest.param(
        "trailing-junk.trace",
        Expected(
            1739291400.0,
            "C",
            7,
            started=1739290904.0,
            serial="2025021101",
            upstream="mirror.contribs.org",
            host="mirror.example.at",
            version="20180513",
        ),
        id="trailing-junk",
    ),
    pytest.param(
        "latin1.trace",
        Expected(1739291400.0, "C", 5, serial="2025021101", host="mirror.example.ch"),
        id="non-utf8",
    ),
    pytest.param(
        "future.trace",
        Expected(2524608000.0, "A", 2, host="mirror.example.invalid", version="20180513"),
        id="future",
    ),
]


@pytest.mark.parametrize(("name", "expected"), FIXTURES)
def test_parse_trace(name: str, expected: Expected) -> None:
    trace = parse_trace(read(name))
    assert trace.date == expected.date
    assert trace.format == expected.format
    assert len(trace.fields) == expected.fields
    assert trace.started == expected.started
    assert trace.serial == expected.serial
    assert trace.upstream == expected.upstream
    assert trace.host == expected.host
    assert trace.version == expected.version


def test_parse_trace_keeps_fields_in_order() -> None:
    trace = parse_trace(read("c-full.trace"))
    assert trace.fields[:3] == (
        ("Date", "Mon, 04 Mar 2024 08:11:18 +0000"),
        ("Date-Started", "Mon, 04 Mar 2024 07:55:02 +0000"),
        ("Archive serial", "2024030401"),
    )
    assert trace.fields[-1] == ("Average rate", "1137138 B/s")
    assert trace.get("Creator") == "ftpsync 20180513"
    assert trace.get("TRIGGER") == "ssh (push from mirror.contribs.org)"
    assert trace.get("upstream-MIRROR") == "mirror.contribs.org"
    assert trace.get("Architectures") == "GUESSED:{ source all x86_64}"
    assert trace.get("Total time spent in stage1 rsync") == "934"
    assert trace.get("Trace-Version") is None


def test_parse_trace_ignores_junk_lines() -> None:
    trace = parse_trace(read("trailing-junk.trace"))
    keys = [key for key, _ in trace.fields]
    assert keys == [
        "Date",
        "Date-Started",
        "Archive serial",
        "Used ftpsync version",
        "Creator",
        "Running on host",
        "Upstream-mirror",
    ]


def test_parse_trace_replaces_undecodable_bytes() -> None:
    trace = parse_trace(read("latin1.trace"))
    assert trace.get("Location") == "Z\ufffdrich"
    assert trace.get("Sponsor") == "Universit\ufffdt Z\ufffdrich"


def test_parse_trace_empty_uses_last_modified() -> None:
    assert parse_trace(read("empty.trace"), last_modified=1709539878.0) == Trace(
        date=1709539878.0, format="empty", fields=()
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\r\n \n\t\n", id="blank"),
        pytest.param(b"\xef\xbb\xbf", id="bom-only"),
    ],
)
def test_parse_trace_empty_without_last_modified(body: bytes) -> None:
    with pytest.raises(TraceError, match=r"^empty body$"):
        parse_trace(body)
    assert parse_trace(body, last_modified=5.0).format == "empty"


def test_parse_trace_rejects_html_page() -> None:
    with pytest.raises(TraceError) as info:
        parse_trace(read("html-200.html"), last_modified=1709539878.0)
    assert str(info.value) == "first line is not a date: '<!DOCTYPE html>'"


def test_parse_trace_first_non_empty_line_is_the_date() -> None:
    body = b"\n\n  \nThu Mar  5 13:15:10 UTC 2009\nRunning on host: a.example\n"
    assert parse_trace(body).date == 1236258910.0


def test_parse_trace_rejects_ten_megabytes() -> None:
    body = read("c-full.trace") + b"x" * (10 * 1024 * 1024)
    with pytest.raises(TraceError, match=r"^body exceeds 65536 bytes$"):
        parse_trace(body)


def test_parse_trace_max_bytes_is_inclusive() -> None:
    date = b"Thu Mar  5 13:15:10 UTC 2009\n"
    body = date + b" " * (MAX_TRACE_BYTES - len(date))
    assert parse_trace(body).date == 1236258910.0
    with pytest.raises(TraceError, match=r"^body exceeds 64 bytes$"):
        parse_trace(body, max_bytes=64)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param("", "B", id="date-only"),
        pytest.param("Used ftpsync version: 1\nRunning on host: h\n", "A", id="a"),
        pytest.param("Running on host: h\nUsed ftpsync version: 1\n", "A", id="a-reordered"),
        pytest.param("Used ftpsync version: 1\n", "B", id="version-only"),
        pytest.param(
            "Used ftpsync version: 1\nRunning on host: h\nUpstream-mirror: u\n", "B", id="a-plus"
        ),
        pytest.param("Date: Thu, 05 Mar 2009 13:15:10 +0000\n", "C", id="c-date"),
        pytest.param("Archive serial: 2009030501\n", "C", id="c-serial"),
        pytest.param("Date-Started: Thu, 05 Mar 2009 13:10:00 +0000\n", "C", id="c-started"),
        pytest.param("creator: ftpsync 20180513\n", "C", id="c-creator-lower-case"),
    ],
)
def test_format_detection(fields: str, expected: str) -> None:
    body = f"Thu Mar  5 13:15:10 UTC 2009\n{fields}".encode()
    assert parse_trace(body).format == expected


def test_unreadable_date_started_is_none() -> None:
    body = b"Thu Mar  5 13:15:10 UTC 2009\nDate-Started: soon\nArchive serial: 1\n"
    trace = parse_trace(body)
    assert (trace.format, trace.started, trace.serial) == ("C", None, "1")


def test_empty_field_values_are_none() -> None:
    body = b"Thu Mar  5 13:15:10 UTC 2009\nUpstream-mirror:\nRunning on host: \n"
    trace = parse_trace(body)
    assert trace.fields == (("Upstream-mirror", ""), ("Running on host", ""))
    assert (trace.upstream, trace.host) == (None, None)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        pytest.param(2524608000.0, False, id="same-moment"),
        pytest.param(2524608000.0 - 300, False, id="within-slack"),
        pytest.param(2524608000.0 - 301, True, id="beyond-slack"),
        pytest.param(1709539878.0, True, id="years-ahead"),
    ],
)
def test_is_future(now: float, expected: bool) -> None:
    assert is_future(parse_trace(read("future.trace")), now) is expected


# --- record_master, behind_since, lag_of -------------------------------------------------------

T0 = 1709539878.0  # the master's trace date in c-full.trace
V1 = T0 - 3 * DAY  # an older master state


def test_cold_start_uses_the_trace_date() -> None:
    assert record_master((), V1, now=T0) == (MasterVersion(V1, V1),)


def test_cold_start_first_seen_never_later_than_now() -> None:
    assert record_master((), T0 + HOUR, now=T0) == (MasterVersion(T0 + HOUR, T0),)


def test_cold_start_lag_counts_from_the_newer_master_trace_date() -> None:
    # Started at T0 + 3h; the master's current trace is dated T0; a mirror still holds V1.
    history = record_master((), T0, now=T0 + 3 * HOUR)
    assert lag_of(V1, history, now=T0 + 3 * HOUR) == 3 * HOUR


def test_master_unchanged_for_three_days_keeps_mirrors_fresh() -> None:
    history = record_master((), V1, now=V1 + HOUR)
    for hours in range(2, 72, 2):
        now = V1 + hours * HOUR
        assert record_master(history, V1, now) is history
        assert lag_of(V1, history, now) == 0.0
        assert behind_since(V1, history) is None


@pytest.mark.parametrize(
    ("after", "stale"),
    [
        pytest.param(0.0, False, id="at-T"),
        pytest.param(FRESH - 1, False, id="just-before-8h"),
        pytest.param(FRESH, False, id="at-8h"),
        pytest.param(FRESH + 1, True, id="just-after-8h"),
        pytest.param(3 * DAY, True, id="three-days"),
    ],
)
def test_master_moves_at_t(after: float, stale: bool) -> None:
    history = record_master((), V1, now=V1)
    history = record_master(history, T0, now=T0 + 600)  # polled 10 min after the master moved
    moved = T0 + 600
    lag = lag_of(V1, history, now=moved + after)
    assert lag == after
    assert (lag > FRESH) is stale
    assert lag_of(T0, history, now=moved + after) == 0.0


def test_full_version_behind_for_a_week_is_stale_however_often_it_syncs() -> None:
    history = record_master((), V1, now=V1)
    history = record_master(history, T0, now=T0)
    # The mirror syncs every two hours (its own trace is always fresh) but its upstream is
    # stuck, so the master trace copy it holds stays at V1; the master moves again at T0 + 5d.
    for sync in range(1, 85):
        now = T0 + sync * 2 * HOUR
        history = record_master(history, T0 + 5 * DAY if sync >= 60 else T0, now)
        lag = lag_of(V1, history, now)
        assert lag == now - T0  # from the first version it lacks, not the latest
    assert lag is not None
    assert lag > FRESH
    assert lag == 7 * DAY
    # A mirror holding T0 is behind only since the master moved on.
    assert behind_since(T0, history) == T0 + 120 * HOUR


def test_master_going_backwards_keeps_history() -> None:
    history = record_master((), V1, now=V1)
    history = record_master(history, T0, now=T0)
    restored = record_master(history, V1 + HOUR, now=T0 + DAY)
    assert restored is history
    assert lag_of(T0, restored, now=T0 + DAY) == 0.0
    assert lag_of(V1, restored, now=T0 + DAY) == DAY


def test_same_date_is_the_same_tuple() -> None:
    history = record_master((), V1, now=V1)
    history = record_master(history, T0, now=T0)
    assert record_master(history, T0, now=T0 + DAY) is history


@pytest.mark.parametrize(
    ("held", "history", "expected"),
    [
        pytest.param(None, (MasterVersion(10.0, 10.0),), None, id="unknown-held"),
        pytest.param(5.0, (), None, id="no-history"),
        pytest.param(10.0, (MasterVersion(10.0, 10.0),), None, id="current"),
        pytest.param(11.0, (MasterVersion(10.0, 10.0),), None, id="ahead-of-master"),
        pytest.param(
            5.0, (MasterVersion(5.0, 5.0), MasterVersion(10.0, 12.0)), 12.0, id="one-behind"
        ),
        pytest.param(
            5.0,
            (MasterVersion(5.0, 5.0), MasterVersion(10.0, 12.0), MasterVersion(20.0, 21.0)),
            12.0,
            id="two-behind-oldest-lacked",
        ),
        pytest.param(
            7.0,
            (MasterVersion(5.0, 5.0), MasterVersion(10.0, 12.0), MasterVersion(20.0, 21.0)),
            12.0,
            id="between-versions",
        ),
        pytest.param(
            1.0, (MasterVersion(5.0, 6.0), MasterVersion(10.0, 12.0)), 6.0, id="older-than-all"
        ),
    ],
)
def test_behind_since(
    held: float | None, history: tuple[MasterVersion, ...], expected: float | None
) -> None:
    assert behind_since(held, history) == expected


@pytest.mark.parametrize(
    ("held", "history", "now", "expected"),
    [
        pytest.param(None, (MasterVersion(10.0, 10.0),), 50.0, None, id="unknown-held"),
        pytest.param(10.0, (), 50.0, None, id="no-history"),
        pytest.param(10.0, (MasterVersion(10.0, 10.0),), 50.0, 0.0, id="current"),
        pytest.param(
            5.0, (MasterVersion(5.0, 5.0), MasterVersion(10.0, 12.0)), 50.0, 38.0, id="behind"
        ),
        pytest.param(
            5.0, (MasterVersion(5.0, 5.0), MasterVersion(10.0, 12.0)), 11.0, 0.0, id="clock-back"
        ),
    ],
)
def test_lag_of(
    held: float | None, history: tuple[MasterVersion, ...], now: float, expected: float | None
) -> None:
    assert lag_of(held, history, now) == expected


def test_pruning_keeps_what_behind_since_needs() -> None:
    keep = 30 * DAY
    history: tuple[MasterVersion, ...] = ()
    # The master moves daily for 60 days.
    for day in range(60):
        history = record_master(history, V1 + day * DAY, now=V1 + day * DAY + HOUR, keep=keep)
    now = V1 + 59 * DAY + HOUR
    cutoff = now - keep
    assert history[-1] == MasterVersion(V1 + 59 * DAY, now)
    # Only the newest version first seen before the cutoff survives among the old ones.
    assert [v.first_seen < cutoff for v in history].count(True) == 1
    assert history[0].first_seen < cutoff <= history[1].first_seen
    # Exact within the window: a mirror 10 versions behind lags since the 11th-newest appeared.
    held = V1 + 49 * DAY
    assert behind_since(held, history) == V1 + 50 * DAY + HOUR
    assert lag_of(held, history, now) == 9 * DAY
    # Older than everything kept: the answer moved, but the mirror is still beyond `keep`.
    lag = lag_of(V1, history, now)
    assert lag is not None
    assert lag > keep


def test_pruning_never_drops_the_current_version() -> None:
    history = record_master((), V1, now=V1)
    history = record_master(history, T0, now=T0)
    later = T0 + 365 * DAY
    pruned = record_master(history, T0, now=later)
    assert pruned == (MasterVersion(T0, T0),)
    assert lag_of(T0, pruned, later) == 0.0
    assert record_master(pruned, T0, now=later + DAY) is pruned


def test_pruning_keeps_an_old_version_while_its_successor_is_recent() -> None:
    # The first version was first seen long ago, its successor within `keep`. A mirror holding
    # something older than the first version is behind since that first version appeared;
    # dropping it would make such a mirror look behind only since the successor.
    history = record_master((), V1 - 60 * DAY, now=V1 - 60 * DAY)
    history = record_master(history, V1, now=V1 + DAY)
    assert record_master(history, V1, now=V1 + 20 * DAY, keep=30 * DAY) is history


# --- property ----------------------------------------------------------------------------------

observations = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=1e6, allow_nan=False),  # trace date
        st.floats(min_value=1, max_value=1e5, allow_nan=False),  # wait since the last poll
    ),
    min_size=1,
    max_size=20,
)


@settings(database=None)
@given(
    seen=observations,
    held=st.one_of(st.none(), st.floats(min_value=-10, max_value=1.1e6, allow_nan=False)),
    wait=st.floats(min_value=1e-3, max_value=1e7, allow_nan=False),
    keep=st.floats(min_value=1, max_value=1e7, allow_nan=False),
)
def test_lag_is_never_negative_and_zero_iff_current(
    seen: list[tuple[float, float]], held: float | None, wait: float, keep: float
) -> None:
    history: tuple[MasterVersion, ...] = ()
    now = 0.0
    for date, step in seen:
        now += step
        history = record_master(history, date, now, keep=keep)
    now += wait
    current = history[-1]
    # Older dates are ignored and newer ones appended, so the current date is the newest seen.
    assert current.date == max(date for date, _ in seen)
    assert all(a.date < b.date and a.first_seen <= b.first_seen for a, b in pairwise(history))
    lag = lag_of(held, history, now)
    if held is None:
        assert lag is None
        return
    assert lag is not None
    assert lag >= 0.0
    assert (lag == 0.0) == (held >= current.date)
