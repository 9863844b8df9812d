"""The one human format for durations and timestamps, the machine one, and the CLI table."""

from __future__ import annotations

import pytest

from redirector.core.humanize import ago, day, duration, rfc3339, table, when

T = 1_790_000_000.0  # 2026-09-21 14:13:20 UTC


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.004, "0s"), (0.25, "0.25s"), (0.9, "0.9s"), (1.5, "1.5s"), (9.999, "10s"),
     (10.7, "10s"), (45, "45s"), (59.99, "59s"), (60, "1m00s"), (90, "1m30s"),
     (3599, "59m59s"), (3600, "1h00m"), (3725, "1h02m"), (12_000, "3h20m"),
     (28_799, "7h59m"), (86_399, "23h59m"), (86_400, "1d00h"), (2 * 86_400 + 4 * 3600, "2d04h"),
     (40 * 86_400, "40d00h"), (-90, "-1m30s"), (-0.5, "-0.5s"),
     (-0.001, "0s")],
)  # fmt: skip
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize(
    ("ts", "now", "text"),
    [(None, T, "never"), (T, T, "just now"), (T - 0.5, T, "just now"), (T + 0.5, T, "just now"),
     (T - 12_000, T, "3h20m ago"), (T + 300, T, "in 5m00s"), (T - 86_400, T, "1d00h ago")],
)  # fmt: skip
def test_ago(ts: float | None, now: float, text: str) -> None:
    assert ago(ts, now) == text


@pytest.mark.parametrize(
    ("ts", "human", "machine", "millis", "utc_day"),
    [(T, "2026-09-21 14:13:20 UTC", "2026-09-21T14:13:20Z", "2026-09-21T14:13:20.000Z",
      "2026-09-21"),
     (T + 0.7567, "2026-09-21 14:13:20 UTC", "2026-09-21T14:13:21Z", "2026-09-21T14:13:20.756Z",
      "2026-09-21"),
     (0.0, "1970-01-01 00:00:00 UTC", "1970-01-01T00:00:00Z", "1970-01-01T00:00:00.000Z",
      "1970-01-01")],
)  # fmt: skip
def test_timestamps(ts: float, human: str, machine: str, millis: str, utc_day: str) -> None:
    assert when(ts) == human
    assert rfc3339(ts) == machine
    assert rfc3339(ts, ms=True) == millis
    assert day(ts) == utc_day
    assert rfc3339(None) is None


@pytest.mark.parametrize(
    ("rows", "text"),
    [
        ([], ""),
        ([("A", "B")], "A  B"),
        ([("NAME", "STATE", "REASON"), ("nluug", "fresh", "current"), ("x", "down", "HTTP 500")],
         "NAME   STATE  REASON\nnluug  fresh  current\nx      down   HTTP 500"),
        # The last column is free text: never padded, however long.
        ([("N", "WHY"), ("a", "a long reason"), ("bb", "-")], "N   WHY\na   a long reason\nbb  -"),
    ],
)  # fmt: skip
def test_table(rows: list[tuple[str, ...]], text: str) -> None:
    assert table(rows) == text
