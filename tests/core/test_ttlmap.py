"""The file check's answer caches: entries expire `ttl` after they were set, the oldest go first."""

from __future__ import annotations

import pytest

from redirector.core.ttlmap import TTLMap


def test_an_entry_lives_ttl_seconds_from_when_it_was_set() -> None:
    m: TTLMap[str, int] = TTLMap(8, ttl=10.0)
    m.set("a", 1, now=100.0)
    assert m.get("a", 100.0) == 1
    assert m.holds("a", 109.9)
    assert m.get("a", 110.0) is None  # expired at exactly now + ttl
    assert not m.holds("a", 110.0)
    assert m.get("missing", 100.0) is None


def test_setting_again_renews_the_entry_and_makes_it_the_newest() -> None:
    m: TTLMap[str, int] = TTLMap(2, ttl=10.0)
    m.set("a", 1, now=0.0)
    m.set("b", 2, now=1.0)
    m.set("a", 3, now=2.0)  # renewed: "b" is now the oldest
    m.set("c", 4, now=3.0)  # over the bound: "b" goes
    assert m.get("a", 11.0) == 3  # lives from its second set
    assert m.get("b", 3.0) is None
    assert m.get("c", 3.0) == 4
    assert len(m) == 2


def test_a_full_map_drops_the_oldest_and_expired_entries_go_when_one_is_set() -> None:
    m: TTLMap[int, int] = TTLMap(3, ttl=5.0)
    for i in range(5):
        m.set(i, i, now=float(i))
    assert len(m) == 3
    assert [m.get(i, 4.0) for i in range(5)] == [None, None, 2, 3, 4]
    m.set(9, 9, now=8.5)  # 2 and 3 expired by now (at 7 and 8): both dropped
    assert len(m) == 2
    assert m.get(4, 8.5) == 4


def test_a_value_that_is_falsy_is_still_a_value() -> None:
    m: TTLMap[str, int] = TTLMap(4, ttl=1.0)
    m.set("zero", 0, now=0.0)
    assert m.get("zero", 0.5) == 0
    assert m.holds("zero", 0.5)


def test_a_map_must_hold_something() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        TTLMap(0, ttl=1.0)
