"""Trace dates in the cron's locale (ftpsync of November 2008): read exactly, or refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from redirector.core.localedate import LocaleDateError, parse_locale_date
from redirector.core.trace import TraceError, parse_trace

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "traces"


def real_dates() -> list[tuple[str, float, str]]:
    """(locale, unix time, line) as glibc's `date -u` printed them, one per month and locale.

    Made with `localedef -i <locale> -f UTF-8` and `LC_ALL=<locale>.UTF-8 date -u -d @<time>`.
    """
    rows = []
    for line in (FIXTURES / "locale-dates.tsv").read_text(encoding="utf-8").splitlines():
        locale, ts, text = line.split("\t")
        rows.append((locale, float(ts), text))
    return rows


@pytest.mark.parametrize(("locale", "ts", "text"), real_dates())
def test_every_month_in_every_locale(locale: str, ts: float, text: str) -> None:
    assert parse_locale_date(text) == ts, (locale, text)


def test_ftpsync_2008_trace_in_german() -> None:
    trace = parse_trace((FIXTURES / "a-2008-de.trace").read_bytes())
    assert trace.date == 1228310110.0  # Wed Dec  3 13:15:10 UTC 2008
    assert (trace.format, trace.version, trace.host) == ("A", "42", "ftp.example.de")


def test_a_weekday_spelt_like_a_month_is_not_the_month() -> None:
    # Spanish "mar" is Tuesday and March; the weekday comes first.
    assert parse_locale_date("mar 03 mar 2009 10:00:00 UTC") == 1236074400.0


@pytest.mark.parametrize(
    ("text", "why"),
    [
        pytest.param("08-12-03 13:15:10 UTC", "four-digit year", id="two-digit-year"),
        pytest.param("Mi 3. Dez 13:15:10 CET 2008", "no UTC zone", id="local-time"),
        pytest.param("Mi 3. Foo 13:15:10 UTC 2008", "no month name", id="unknown-month"),
        pytest.param("3 4 Dez 13:15:10 UTC 2008", "single day", id="two-days"),
        pytest.param("Mi 31. Feb 13:15:10 UTC 2008", "impossible date", id="feb-31"),
        pytest.param("<html><body>Not Found</body></html>", "no time", id="html"),
    ],
)
def test_refused_with_a_reason(text: str, why: str) -> None:
    with pytest.raises(LocaleDateError, match=why):
        parse_locale_date(text)


def test_a_trace_says_which_kind_of_line_it_could_not_read() -> None:
    with pytest.raises(TraceError, match=r"^first line is a date in a locale .*four-digit year"):
        parse_trace(b"08-12-03 13:15:10 UTC\nUsed ftpsync version: 42\n")
    with pytest.raises(TraceError, match=r"^first line is not a date: '<!DOCTYPE html>'$"):
        parse_trace(b"<!DOCTYPE html>\n<p>12:00:00 2008</p>\n")
