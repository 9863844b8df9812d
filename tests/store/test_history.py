"""core.history (transitions, availability, strip, events) and its keeping in every store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from redirector.core import history as h
from redirector.core.history import (
    Event,
    EventKind,
    HistoryData,
    MirrorHistory,
    Phase,
    Transition,
)
from redirector.core.models import MasterState, MasterVersion, MirrorState, Status
from redirector.store.base import Store, StoreError
from redirector.store.codec import decode_event, decode_history, encode_event, encode_history
from redirector.store.file import FileStore
from redirector.store.history import HistoryReader, record_pass, record_reload
from redirector.store.memory import MemoryStore
from redirector.store.redis import RedisStore

DAY = 86400.0
T0 = 1_750_000_000.0 - 1_750_000_000.0 % DAY  # a UTC midnight


def st(name: str, status: Status, at: float, error: str | None = None) -> MirrorState:
    return MirrorState(name, status, at, master_date=at - 60, error=error)


def run(states: list[tuple[float, Status]], name: str = "a") -> tuple[MirrorHistory, list[Event]]:
    hist: MirrorHistory | None = None
    events = []
    for at, status in states:
        hist, ev = h.advance(
            hist, st(name, status, at, "HTTP 503" if status is Status.DOWN else None), at
        )
        if ev is not None:
            events.append(ev)
    assert hist is not None
    return hist, events


# --- the pure core -------------------------------------------------------------------------


def test_transitions_only_on_a_phase_change_and_syncing_counts_as_up() -> None:
    hist, _ = run([(T0, Status.UP), (T0 + 300, Status.SYNCING), (T0 + 600, Status.UP)])
    assert hist.transitions == (Transition(T0, Phase.UP, None),)
    assert [x.at for x in hist.lags] == [T0, T0 + 300, T0 + 600]


def test_down_then_up_says_for_how_long() -> None:
    hist, events = run([(T0, Status.UP), (T0 + 300, Status.DOWN), (T0 + 600, Status.BROKEN),
                        (T0 + 4500, Status.UP)])  # fmt: skip
    assert [e.kind for e in events] == [EventKind.MIRROR_DOWN, EventKind.MIRROR_UP]
    assert events[0].detail == "down: HTTP 503"
    assert events[1].duration == 4200
    assert h.down_start(hist) is None
    hist2, _ = run([(T0, Status.UP), (T0 + 300, Status.DOWN), (T0 + 600, Status.BROKEN)])
    assert h.down_start(hist2) == T0 + 300  # down then broken: one run out of service


def test_a_mirror_down_at_first_sight_is_logged_an_up_one_is_not() -> None:
    _, down = run([(T0, Status.DOWN)])
    _, up = run([(T0, Status.UP)])
    assert [e.kind for e in down] == [EventKind.MIRROR_DOWN]
    assert up == []


def test_an_unchecked_mirror_makes_no_transition() -> None:
    hist, events = run([(T0, Status.UNKNOWN)])
    assert hist.transitions == ()
    assert events == []
    assert h.windows(hist, T0 + 10) == {"24h": None, "7d": None, "30d": None}


def test_availability_counts_only_known_time() -> None:
    # up 18 h, down 6 h, within the last day; before it nothing is known
    ts = (Transition(T0, Phase.UP), Transition(T0 + 18 * 3600, Phase.DOWN))
    hist = MirrorHistory("a", ts)
    got = h.windows(hist, T0 + DAY)
    assert got == {"24h": 0.75, "7d": 0.75, "30d": 0.75}
    assert h.availability(ts, T0 + DAY, T0 + 2 * DAY) == 0.0


def test_the_strip_is_fourteen_utc_days_today_ending_now() -> None:
    ts = (Transition(T0 - 3 * DAY, Phase.UP), Transition(T0 - DAY + 6 * 3600, Phase.DOWN),
          Transition(T0 - DAY + 12 * 3600, Phase.UP))  # fmt: skip
    days = h.strip(MirrorHistory("a", ts), T0 + 3600)
    assert len(days) == 14
    assert days[-1].start == T0
    assert days[-1].up == 1.0
    assert days[-2].up == 0.75
    assert days[-2].down_seconds == 6 * 3600
    assert days[-4].up == 1.0
    assert days[-5].up is None


def test_history_stays_bounded() -> None:
    hist: MirrorHistory | None = None
    at = T0
    for i in range(3000):  # flapping every pass for ~10 days
        hist, _ = h.advance(hist, st("a", Status.UP if i % 2 else Status.DOWN, at), at)
        at += 300
    assert hist is not None
    assert len(hist.transitions) == h.MAX_TRANSITIONS
    assert len(hist.lags) == h.MAX_LAG_SAMPLES
    # old transitions go, but the one in force when the 31-day window opened stays
    old = MirrorHistory("a", (Transition(T0, Phase.UP), Transition(T0 + 1, Phase.DOWN),
                              Transition(T0 + 40 * DAY, Phase.UP)))  # fmt: skip
    kept = h.trim(old, T0 + 41 * DAY)
    assert [t.at for t in kept.transitions] == [T0 + 1, T0 + 40 * DAY]
    assert h.windows(kept, T0 + 41 * DAY)["30d"] == pytest.approx(1 / 30)


def test_master_published_only_when_its_content_changes() -> None:
    one = MasterState((MasterVersion(T0, T0),), T0)
    two = MasterState((MasterVersion(T0, T0), MasterVersion(T0 + 900, T0 + 1000)), T0 + 1000)
    assert h.master_event(None, one, T0) is None
    assert h.master_event(one, one, T0 + 300) is None
    ev = h.master_event(one, two, T0 + 1000)
    assert ev is not None
    assert ev.kind is EventKind.MASTER_PUBLISHED
    assert "2025-06-1" in ev.detail


# --- the codec -----------------------------------------------------------------------------


def test_history_and_events_round_trip() -> None:
    hist, events = run([(T0, Status.UP), (T0 + 300, Status.DOWN), (T0 + 600, Status.UP)])
    assert decode_history(encode_history(hist)) == hist
    for e in events:
        assert decode_event(encode_event(e)) == e


@pytest.mark.parametrize(
    "raw",
    [
        '{"v": 1, "name": "a", "transitions": [[1, "sideways", null]]}',
        '{"v": 1, "name": "a", "transitions": [["x", "up", null]]}',
        '{"v": 1, "name": "a", "transitions": [[1, "up"]]}',
        '{"v": 1, "name": "a", "lags": [[1, true]]}',
        '{"v": 2, "name": "a"}',
        '{"v": 1, "transitions": []}',
        "[]",
    ],
)
def test_decode_history_rejects_garbage(raw: str) -> None:
    with pytest.raises(StoreError):
        decode_history(raw)


@pytest.mark.parametrize(
    "raw",
    [
        '{"v": 1, "at": 1, "kind": "exploded", "detail": "x"}',
        '{"v": 1, "at": "now", "kind": "mirror-up", "detail": "x"}',
        '{"v": 1, "at": 1, "kind": "mirror-up"}',
    ],
)
def test_decode_event_rejects_garbage(raw: str) -> None:
    with pytest.raises(StoreError):
        decode_event(raw)


# --- every store ---------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis", "file"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s: Store
    if request.param == "memory":
        s = MemoryStore()
    elif request.param == "redis":
        s = RedisStore(request.getfixturevalue("redis_url"), prefix="hist:")
    else:
        s = FileStore(tmp_path)
    yield s
    await s.close()


async def test_every_store_keeps_history_and_a_bounded_event_log(store: Store) -> None:
    empty = await store.load_history()
    assert dict(empty.mirrors) == {}
    assert empty.events == ()
    master = MasterState((MasterVersion(T0, T0),), T0)
    await record_pass(store, [st("a", Status.UP, T0), st("b", Status.DOWN, T0)], None, master, T0)
    await record_pass(
        store,
        [st("a", Status.UP, T0 + 300), st("b", Status.UP, T0 + 300)],
        master,
        master,
        T0 + 300,
    )
    got = await store.load_history()
    assert set(got.mirrors) == {"a", "b"}
    assert [t.phase for t in got.mirrors["b"].transitions] == [Phase.DOWN, Phase.UP]
    assert [e.kind for e in got.events] == [EventKind.MIRROR_DOWN, EventKind.MIRROR_UP]
    assert got.events[1].duration == 300
    await record_reload(store, ok=False, path="/etc/x.toml", detail="line 3: bad", now=T0 + 400)
    await store.add_events(
        [Event(T0 + 500 + i, EventKind.MIRROR_UP, "a", str(i)) for i in range(7)], keep=5
    )
    events = (await store.load_history()).events
    assert [e.detail for e in events] == ["2", "3", "4", "5", "6"]
    await store.forget(["b"])
    assert set((await store.load_history()).mirrors) == {"a"}
    with pytest.raises(ValueError, match="keep"):
        await store.add_events([], keep=0)


async def test_a_second_file_store_sees_the_history(tmp_path: Path) -> None:
    one, two = FileStore(tmp_path), FileStore(tmp_path)
    await record_reload(one, ok=True, path="/etc/x.toml", detail="2 mirrors changed", now=T0)
    assert [e.kind for e in (await two.load_history()).events] == [EventKind.CONFIG_RELOADED]


async def test_the_reader_caches_for_pages_and_rereads_on_a_new_generation(
    tmp_path: Path,
) -> None:
    clock = [100.0]
    store = FileStore(tmp_path)
    reader = HistoryReader(store, clock=lambda: clock[0], max_age=5.0)
    assert await reader.get(1) == (HistoryData({}, ()), None)
    await record_reload(store, ok=True, path="/etc/x.toml", detail="one", now=T0)
    assert (await reader.get(1))[0] == HistoryData({}, ())  # cached
    got, error = await reader.get(2)  # a poller pass wrote: read again
    assert error is None
    assert got is not None
    assert [e.detail for e in got.events] == ["one"]
    await record_reload(store, ok=True, path="/etc/x.toml", detail="two", now=T0)
    clock[0] += 6  # too old
    got, _ = await reader.get(2)
    assert got is not None
    assert [e.detail for e in got.events] == ["one", "two"]
    (tmp_path / "state.json").write_text('{"v": 1, "generation": 3}\n{"events": ["junk"]}')
    got, error = await reader.get(3)
    assert got is not None  # a junk event is dropped alone (the next write repairs the file)
    assert [e.detail for e in got.events] == []
    assert error is None
