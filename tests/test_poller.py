"""The poller against real HTTP servers on loopback: fresh, stale, down, junk, master faults."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from redirector.models import MasterState, MasterVersion, Status
from redirector.poller import poll_once
from redirector.settings import Settings, parse_settings
from redirector.store import MemoryStore
from tests.farm import MASTER_TRACE, Farm, error_500, hang


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def settings_for(farm: Farm, names: list[str], timeout: str = "1s") -> Settings:
    mirrors = "\n".join(
        f'[[mirror]]\nname = "{n}"\nhttp = "{farm.url(n)}"\ncountry = "NL"\n'
        f"latitude = 52.0\nlongitude = 5.0\n"
        for n in names
    )
    return parse_settings(
        f'[redirector]\nmaster = "{farm.url("master")}"\nprobe_timeout = "{timeout}"\n'
        f"probe_concurrency = 4\n{mirrors}",
        "t.toml",
    )


async def test_fresh_stale_down_and_junk(farm: Farm, session: aiohttp.ClientSession) -> None:
    now = float(int(time.time()))  # trace dates have whole seconds
    farm.set_trace("master", now - 10 * 3600)
    farm.set_trace("fresh", now - 10 * 3600)
    farm.set_trace("stale", now - 5 * 86400)
    farm.put("html", MASTER_TRACE, b"<!DOCTYPE html><html><body>Not Found</body></html>")
    farm.behaviours["err"] = error_500
    farm.behaviours["hangs"] = hang
    store = MemoryStore()
    names = ["fresh", "stale", "html", "err", "hangs", "missing"]
    started = time.monotonic()
    result = await poll_once(session, settings_for(farm, names), store)
    assert time.monotonic() - started < 5  # the hanging mirror costs its timeout, no more
    by = {s.name: s for s in result.states}
    assert by["fresh"].status is Status.UP
    assert by["fresh"].lag(now) == 0.0
    assert by["stale"].status is Status.UP
    stale_lag = by["stale"].lag(now)
    assert stale_lag is not None
    assert abs(stale_lag - 10 * 3600) < 5  # cold start: the master's own date
    assert by["html"].status is Status.DOWN
    assert "not a trace" in (by["html"].error or "")
    assert by["err"].status is Status.DOWN
    assert "HTTP 500" in (by["err"].error or "")
    assert by["hangs"].status is Status.DOWN
    assert "timed out" in (by["hangs"].error or "")
    assert by["missing"].status is Status.DOWN
    assert "HTTP 404" in (by["missing"].error or "")
    data = await store.load()
    assert set(data.states) == set(names)
    assert data.master is not None
    assert data.master.error is None


async def test_master_moves_then_mirror_is_stale_after_max_lag(
    farm: Farm, session: aiohttp.ClientSession
) -> None:
    t0 = time.time() - 3 * 86400
    farm.set_trace("master", t0)
    farm.set_trace("m", t0)
    store = MemoryStore()
    s = settings_for(farm, ["m"])
    clock_now = [time.time()]
    r = await poll_once(session, s, store, clock=lambda: clock_now[0])
    assert r.states[0].lag(clock_now[0]) == 0.0  # master unchanged for 3 days: still fresh
    # The master moves; the mirror does not follow.
    farm.set_trace("master", clock_now[0])
    r = await poll_once(session, s, store, clock=lambda: clock_now[0])
    moved_at = clock_now[0]
    st = r.states[0]
    assert st.lag(moved_at + 7 * 3600) == pytest.approx(7 * 3600)
    assert st.lag(moved_at + 9 * 3600) == pytest.approx(9 * 3600)


async def test_master_unreachable_keeps_history(farm: Farm, session: aiohttp.ClientSession) -> None:
    now = float(int(time.time()))  # trace dates have whole seconds
    store = MemoryStore()
    known = MasterState((MasterVersion(now - 7200, now - 7000),), now - 300)
    await store.put_master(known)
    farm.behaviours["master"] = error_500
    farm.set_trace("m", now - 7200)
    r = await poll_once(session, settings_for(farm, ["m"]), store)
    assert r.master.history == known.history
    assert "HTTP 500" in (r.master.error or "")
    assert r.states[0].lag(now) == 0.0  # judged against the last known master state


async def test_master_never_reached_judges_against_newest_mirror(
    farm: Farm, session: aiohttp.ClientSession
) -> None:
    now = float(int(time.time()))  # trace dates have whole seconds
    farm.behaviours["master"] = error_500
    farm.set_trace("new", now - 12 * 3600)
    farm.set_trace("old", now - 5 * 86400)
    r = await poll_once(session, settings_for(farm, ["new", "old"]), MemoryStore())
    by = {s.name: s for s in r.states}
    assert by["new"].lag(now) == 0.0
    old_lag = by["old"].lag(now)
    assert old_lag is not None
    assert old_lag > 8 * 3600


async def test_redirects_only_within_the_host(farm: Farm, session: aiohttp.ClientSession) -> None:
    now = float(int(time.time()))  # trace dates have whole seconds
    farm.set_trace("master", now)
    farm.set_trace("target", now)

    async def same_host(request: web.Request, rest: str) -> web.StreamResponse:
        raise web.HTTPFound(farm.url("target") + rest)

    async def other_host(request: web.Request, rest: str) -> web.StreamResponse:
        raise web.HTTPFound("http://localhost:9/" + rest)

    async def loop(request: web.Request, rest: str) -> web.StreamResponse:
        raise web.HTTPFound(farm.url("loop") + rest)

    farm.behaviours.update({"same": same_host, "other": other_host, "loop": loop})
    r = await poll_once(session, settings_for(farm, ["same", "other", "loop"]), MemoryStore())
    by = {s.name: s for s in r.states}
    assert by["same"].status is Status.UP
    assert by["other"].status is Status.DOWN
    assert "another host" in (by["other"].error or "")
    assert by["loop"].status is Status.DOWN
    assert "redirects" in (by["loop"].error or "")
