"""The token bucket and the table of client networks' buckets every budget is built on."""

from __future__ import annotations

import pytest

from redirector.core.budget import Bucket, NetworkBuckets

NET_A, NET_B, NET_C = b"\x91\x64\x01", b"\x91\x64\x02", b"\x91\x64\x03"


def test_a_bucket_gives_its_burst_then_its_rate() -> None:
    b = Bucket(3.0, 0.0)
    assert [b.take(0.0, 2.0, 3.0) for _ in range(4)] == [True, True, True, False]
    assert b.take(0.4, 2.0, 3.0) is False  # 0.8 tokens
    assert b.take(0.5, 2.0, 3.0) is True  # 1.0
    assert b.refill(100.0, 2.0, 3.0) == 3.0  # never more than the burst


def test_a_refused_take_takes_nothing() -> None:
    b = Bucket(0.5, 0.0)
    assert b.take(0.0, 1.0, 5.0) is False
    assert b.tokens == 0.5


def test_a_clock_going_back_adds_nothing() -> None:
    b = Bucket(0.0, 10.0)
    assert b.refill(5.0, 1.0, 5.0) == 0.0
    assert b.stamp == 10.0
    assert b.refill(11.0, 1.0, 5.0) == 1.0


def test_a_smaller_burst_caps_the_tokens_at_once() -> None:
    b = Bucket(20.0, 0.0)
    assert b.refill(0.0, 1.0, 5.0) == 5.0


@pytest.mark.parametrize(
    ("tokens", "rate", "wait"),
    [(0.0, 2.0, 0.5), (0.5, 0.25, 2.0), (1.0, 1.0, 0.0), (3.0, 1.0, 0.0), (-1.0, 1.0, 2.0)],
)
def test_wait_is_the_time_until_one_token(tokens: float, rate: float, wait: float) -> None:
    assert Bucket(tokens, 0.0).wait(rate) == pytest.approx(wait)


def test_networks_are_remembered_least_recently_used_first_forgotten() -> None:
    table = NetworkBuckets(2)
    a = table.get(NET_A, 0.0, 5.0)
    a.tokens = 0.0
    table.get(NET_B, 0.0, 5.0)
    assert table.get(NET_A, 1.0, 5.0) is a  # A used again: B is now the oldest
    table.get(NET_C, 2.0, 5.0)
    assert len(table) == 2
    assert table.get(NET_A, 3.0, 5.0) is a  # kept, still empty
    fresh = table.get(NET_B, 3.0, 5.0)  # forgotten: a full bucket again
    assert (fresh.tokens, fresh.stamp) == (5.0, 3.0)


def test_a_smaller_table_forgets_down_to_its_size() -> None:
    table = NetworkBuckets(3)
    for net in (NET_A, NET_B, NET_C):
        table.get(net, 0.0, 1.0)
    table.size = 1
    table.get(b"\x01\x02\x03", 0.0, 1.0)
    assert len(table) == 1
