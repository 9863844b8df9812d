"""ftpsync as it really is, against the poller: MIRRORNAME, staged syncs, optional own traces.

Mirrors are impersonated by tests/farm.py with the files real ftpsync leaves (see
test_ftpsync_system.py for the real ftpsync); the clock is injected.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from redirector.core.ftpsync import name_from_hierarchy, name_from_traces, usable_name
from redirector.core.judge import STAGE1_MAX, Observation, Rules, before_stage2, judge
from redirector.core.models import MasterVersion, MirrorState, Status
from redirector.core.trace import parse_trace
from redirector.poll.poller import poll_once
from redirector.store.codec import decode_state, encode_state
from redirector.store.memory import MemoryStore
from tests.farm import MASTER_TRACE, Farm, date_u, trace_c
from tests.poll.test_poller import DAY, HOUR, OWN, T0, hits, settings_for
from tests.support.clock import Clock

NAME = "box7.example.net"  # the mirror's MIRRORNAME: `hostname -f`, not its URL's host
TRACE = f"project/trace/{NAME}"
STAGE1 = f"project/trace/{NAME}-stage1"
LOCK = f"Archive-Update-in-Progress-{NAME}"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def hierarchy(tracefile: str = NAME, name: str = NAME) -> bytes:
    """A two-tier `_hierarchy` as ftpsync writes it: the upstream's hop, then the mirror's."""
    return (
        f"ftp.nluug.nl ftp.nluug.nl ftp1.nluug.nl mirror.contribs.org\n"
        f"{tracefile} {name} {name} ftp.nluug.nl\n"
    ).encode()


def ftpsync_mirror(farm: Farm, mirror: str, held: float, own: float, name: str = NAME) -> None:
    """`mirror` after a complete ftpsync run: master copy `held`, own trace `own`, under `name`."""
    farm.set_trace(mirror, held)
    farm.put(mirror, f"project/trace/{name}", trace_c(own, host=name, upstream="ftp.nluug.nl"))
    farm.put(mirror, "project/trace/_hierarchy", hierarchy(name, name))
    listing = f"mirror.contribs.org\nftp.nluug.nl\n{name}\n".encode()
    farm.put(mirror, "project/trace/_traces", listing)


# --- MIRRORNAME ------------------------------------------------------------------------------


def test_name_from_hierarchy() -> None:
    assert name_from_hierarchy(hierarchy()) == NAME
    assert name_from_hierarchy(hierarchy(NAME + "-stage1")) == NAME  # after a stage-1 run
    assert name_from_hierarchy(b"a a a up\nother.example box7 box7 up\n") is None  # not ftpsync's
    assert name_from_hierarchy(b"<html>Not Found</html>") is None
    assert name_from_hierarchy(b"") is None


def test_name_from_traces() -> None:
    listing = f"mirror.contribs.org\nftp.nluug.nl\n{NAME}-stage1\n".encode()
    assert name_from_traces(listing, "mirror.contribs.org") == NAME
    assert name_from_traces(b"ftp.nluug.nl\nmirror.contribs.org\n", "mirror.contribs.org") is None
    assert name_from_traces(b"<!DOCTYPE html>\n", "mirror.contribs.org") is None
    assert name_from_traces(b"a\n../../etc/passwd\n", "m") is None


def test_usable_name() -> None:
    assert usable_name("box7.example.net")
    for bad in ("", "../x", "a/b", "a b", "-x", "a?b", "x" * 300):
        assert not usable_name(bad), bad


async def test_own_trace_and_lock_found_under_mirrorname(
    farm: Farm, session: aiohttp.ClientSession
) -> None:
    # Its own trace says its last sync stopped half-way, and only its MIRRORNAME says so: named
    # after the URL's host, the check found nothing and called it up.
    clock = Clock(T0)
    farm.set_trace("master", T0 - HOUR)
    ftpsync_mirror(farm, "torn", T0 - HOUR, T0 - DAY)
    ftpsync_mirror(farm, "syncing", T0 - HOUR, T0 - DAY)
    farm.put("syncing", LOCK, b"")
    ftpsync_mirror(farm, "good", T0 - HOUR, T0 - HOUR + 600)
    s, store = settings_for(farm, ["torn", "syncing", "good"]), MemoryStore()
    by = {x.name: x for x in (await poll_once(session, s, store, clock)).states}
    assert by["torn"].status is Status.BROKEN
    assert "older than its master trace copy" in (by["torn"].error or "")
    assert by["syncing"].status is Status.SYNCING
    assert (by["good"].status, by["good"].own_date, by["good"].note) == (
        Status.UP,
        T0 - HOUR + 600,
        None,
    )
    assert {x.trace_name for x in by.values()} == {NAME}
    # The name is remembered: the next round asks for it directly.
    before = hits(farm, "good")
    clock.t += 300
    await poll_once(session, s, store, clock)
    assert hits(farm, "good") - before == 3  # master copy, own trace, lock flag
    assert f"good/{TRACE}" in farm.hits[-6:] or f"good/{TRACE}" in farm.hits


async def test_mirrorname_from_traces_when_there_is_no_hierarchy(
    farm: Farm, session: aiohttp.ClientSession
) -> None:
    farm.set_trace("master", T0 - HOUR)
    ftpsync_mirror(farm, "m", T0 - HOUR, T0 - DAY)
    del farm.files["m/project/trace/_hierarchy"]
    s = settings_for(farm, ["m"])
    st = (await poll_once(session, s, MemoryStore(), Clock(T0))).states[0]
    assert (st.status, st.trace_name) == (Status.BROKEN, NAME)
    assert "own trace (2023-11-13 22:13:20 UTC) older" in (st.error or "")


async def test_trace_name_stays_an_override(farm: Farm, session: aiohttp.ClientSession) -> None:
    farm.set_trace("master", T0 - HOUR)
    ftpsync_mirror(farm, "m", T0 - HOUR, T0 - HOUR + 60)
    farm.put("m", "project/trace/other.example", trace_c(T0 - DAY))
    s = settings_for(
        farm, ["m"], mirror={"m": f'http = "{farm.url("m")}"\ntrace_name = "other.example"'}
    )
    st = (await poll_once(session, s, MemoryStore(), Clock(T0))).states[0]
    assert (st.status, st.trace_name) == (Status.BROKEN, "other.example")
    assert not any("_hierarchy" in h for h in farm.hits)


async def test_a_trace_under_the_url_host_needs_no_search(
    farm: Farm, session: aiohttp.ClientSession
) -> None:
    farm.set_trace("master", T0 - HOUR)
    farm.set_trace("m", T0 - HOUR)
    farm.put("m", OWN, trace_c(T0 - HOUR + 60))
    st = (await poll_once(session, settings_for(farm, ["m"]), MemoryStore(), Clock(T0))).states[0]
    assert (st.status, st.trace_name) == (Status.UP, "127.0.0.1")
    assert hits(farm, "m") == 7  # master copy, own trace, flag, four coverage probes


# --- staged syncs ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", [NAME, "127.0.0.1"], ids=["mirrorname", "url-host"])
async def test_staged_push_between_the_stages_is_syncing_not_broken(
    farm: Farm, session: aiohttp.ClientSession, name: str
) -> None:
    clock = Clock(T0)
    farm.set_trace("master", T0 - DAY)
    ftpsync_mirror(farm, "m", T0 - DAY, T0 - DAY + 600, name)
    s, store = settings_for(farm, ["m"], extra='poll_interval = "5m"'), MemoryStore()
    assert (await poll_once(session, s, store, clock)).states[0].status is Status.UP
    # The master moves; runmirrors pushes stage 1 alone: the new master trace copy, the
    # stage-1 trace, `_hierarchy` naming it, and the lock gone.
    clock.t = T0 + 300
    farm.set_trace("master", T0 + 200)
    farm.set_trace("m", T0 + 200)
    stage1 = trace_c(T0 + 250, host=name, upstream="ftp.nluug.nl")
    farm.put("m", f"project/trace/{name}-stage1", stage1)
    farm.put("m", "project/trace/_hierarchy", hierarchy(name + "-stage1", name))
    st = (await poll_once(session, s, store, clock)).states[0]
    assert st.status is Status.SYNCING, st.error
    assert st.master_date == T0 - DAY  # its indexes are still those of its last complete sync
    assert st.behind_since == T0 + 300  # when the master's new state was first seen
    assert "stage 1 finished" in (st.note or "")
    clock.t = T0 + 900  # ten minutes later, still waiting for stage 2
    st = (await poll_once(session, s, store, clock)).states[0]
    assert (st.status, st.master_date, st.lag(clock.t)) == (Status.SYNCING, T0 - DAY, 600.0)
    # Stage 2: the indexes, the deletions, its own trace.
    clock.t = T0 + 1200
    farm.put("m", f"project/trace/{name}", trace_c(T0 + 1100, host=name))
    farm.put("m", "project/trace/_hierarchy", hierarchy(name, name))
    st = (await poll_once(session, s, store, clock)).states[0]
    assert (st.status, st.master_date, st.lag(clock.t), st.note) == (
        Status.UP,
        T0 + 200,
        0.0,
        None,
    )


async def test_a_stage_1_never_followed_by_stage_2_is_broken_after_an_hour(
    farm: Farm, session: aiohttp.ClientSession
) -> None:
    farm.set_trace("master", T0)
    ftpsync_mirror(farm, "m", T0, T0 - DAY)
    farm.put("m", STAGE1, trace_c(T0 + 60, host=NAME))
    s, store = settings_for(farm, ["m"]), MemoryStore()
    clock = Clock(T0 + 120)
    assert (await poll_once(session, s, store, clock)).states[0].status is Status.SYNCING
    clock.t = T0 + 60 + STAGE1_MAX + 600
    st = (await poll_once(session, s, store, clock)).states[0]
    assert "stage 2 has not followed" in (st.error or "")
    clock.t += 300  # past the one failed probe a working mirror is allowed
    st = (await poll_once(session, s, store, clock)).states[0]
    assert st.status is Status.BROKEN
    assert "stage 2 has not followed" in (st.error or "")


async def test_an_old_stage_1_trace_does_not_excuse_a_torn_sync(
    farm: Farm, session: aiohttp.ClientSession
) -> None:
    # ftpsync leaves <name>-stage1 behind after stage 2; one older than the own trace is that.
    farm.set_trace("master", T0)
    ftpsync_mirror(farm, "m", T0, T0 - DAY)
    farm.put("m", STAGE1, trace_c(T0 - DAY - 600, host=NAME))
    st = (await poll_once(session, settings_for(farm, ["m"]), MemoryStore(), Clock(T0))).states[0]
    assert st.status is Status.BROKEN


def test_before_stage2() -> None:
    prev = MirrorState("m", Status.UP, 0.0, master_date=100.0)
    assert before_stage2(prev, copy=500.0, own=400.0) == 100.0  # what it held last round
    caught = MirrorState("m", Status.SYNCING, 0.0, master_date=500.0)  # saw the copy arrive
    assert before_stage2(caught, copy=500.0, own=400.0) == 400.0
    assert before_stage2(None, copy=500.0, own=400.0) == 400.0


def test_judge_stage1_rule() -> None:
    now, history = 10_000.0, (MasterVersion(1000.0, 1000.0), MasterVersion(9000.0, 9100.0))
    copy, own = parse_trace(trace_c(9000.0)), parse_trace(trace_c(1200.0))
    rules = Rules()

    def at(stage1: float | None, when: float = now) -> MirrorState:
        s1 = parse_trace(trace_c(stage1)) if stage1 is not None else None
        obs = Observation(master=copy, own=own, stage1=s1, trace_name=NAME)
        return judge("m", obs, None, history, when, rules)

    assert at(None).status is Status.BROKEN
    st = at(9500.0)
    assert (st.status, st.master_date, st.behind_since) == (Status.SYNCING, 1200.0, 9100.0)
    assert at(1100.0).status is Status.BROKEN  # older than the own trace: a leftover
    assert at(9500.0, when=9500.0 + rules.stage1_max + 1).status is Status.BROKEN


# --- the own trace is optional ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(b"", "empty body", id="touch-without-last-modified"),
        pytest.param(b"<html><body>404</body></html>", "not a trace", id="soft-404"),
        pytest.param(b"08-12-03 13:15:10 UTC\n", "a date in a locale", id="unreadable-locale"),
    ],
)
async def test_an_unreadable_own_trace_costs_only_its_checks(
    farm: Farm, session: aiohttp.ClientSession, body: bytes, reason: str
) -> None:
    farm.set_trace("master", T0 - HOUR)
    farm.set_trace("m", T0 - HOUR)
    farm.put("m", OWN, body)
    st = (await poll_once(session, settings_for(farm, ["m"]), MemoryStore(), Clock(T0))).states[0]
    assert (st.status, st.lag(T0), st.own_date, st.error) == (Status.UP, 0.0, None, None)
    assert reason in (st.note or ""), st.note


async def test_an_own_trace_answering_500_costs_only_its_checks(
    farm: Farm, session: aiohttp.ClientSession
) -> None:
    copy = trace_c(T0 - HOUR)

    async def own_fails(request: web.Request, rest: str) -> web.StreamResponse:
        if rest == MASTER_TRACE:
            return web.Response(body=copy)
        return web.Response(status=500, text="internal error")

    farm.set_trace("master", T0 - HOUR)
    farm.behaviours["m"] = own_fails
    st = (await poll_once(session, settings_for(farm, ["m"]), MemoryStore(), Clock(T0))).states[0]
    assert (st.status, st.lag(T0), st.error) == (Status.UP, 0.0, None)
    assert "HTTP 500" in (st.note or "")
    assert hits(farm, "m") == 2  # it stopped answering: no flag or coverage probes after


async def test_a_2008_own_trace_in_the_crons_locale_is_read(
    farm: Farm, session: aiohttp.ClientSession
) -> None:
    now = float(int(time.time()))
    farm.set_trace("master", now - 2 * DAY)
    farm.set_trace("m", now - 2 * DAY)
    german = {"Mon": "Mo", "Tue": "Di", "Wed": "Mi", "Thu": "Do", "Fri": "Fr", "Sat": "Sa"}
    stamp = time.gmtime(now - DAY)
    months = ["Jan", "Feb", "Mär", "Apr", "Mai", "Jun", "Jul", "Aug", "Sep", "Okt", "Nov", "Dez"]
    line = (
        f"{german.get(date_u(now - DAY)[:3], 'So')} {stamp.tm_mday}. "
        f"{months[stamp.tm_mon - 1]} {time.strftime('%H:%M:%S', stamp)} UTC {stamp.tm_year}"
    )
    farm.put("m", OWN, f"{line}\nUsed ftpsync version: 42\nRunning on host: m.de\n".encode())
    st = (await poll_once(session, settings_for(farm, ["m"]), MemoryStore(), Clock(now))).states[0]
    assert (st.status, st.own_date) == (Status.UP, now - DAY), st.note


def test_state_keeps_name_and_note_through_the_store() -> None:
    st = MirrorState("m", Status.UP, 1.0, trace_name=NAME, note="no own trace")
    assert decode_state(encode_state(st)) == st
