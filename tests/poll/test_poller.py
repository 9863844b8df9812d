"""The poller against real HTTP servers on loopback: every state, exact lag, coverage, backoff.

Mirrors are impersonated by tests/farm.py (one aiohttp server, one path prefix per mirror).
Lag, backoff and coverage timing use an injected clock; trace dates follow that clock.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from redirector.config.settings import ConfigError, Settings, parse_settings
from redirector.core.history import EventKind, Phase
from redirector.core.humanize import duration
from redirector.core.judge import Rules, backoff_delay, judge
from redirector.core.models import MasterState, MasterVersion, MirrorState, Status
from redirector.core.selection import Candidate, Reason, check
from redirector.core.trace import behind_since
from redirector.poll.poller import PassResult, history_from_states, poll_once, run_poller
from redirector.poll.probe import fetch
from redirector.store.memory import MemoryStore
from redirector.store.redis import RedisStore
from redirector.views.condition import state_table
from tests.conftest import free_port
from tests.farm import MASTER_TRACE, Behaviour, Farm, error_500, hang, huge_body, slow_drip, trace_c
from tests.support.clock import Clock
from tests.support.words import describe

T0 = 1_700_000_000.0  # the injected clock's start (2023-11-14)
HOUR, DAY = 3600.0, 86400.0
OWN = "project/trace/127.0.0.1"  # a mirror's own trace: named after its base URL's host
FLAG = "Archive-Update-in-Progress-127.0.0.1"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def settings_for(
    farm: Farm,
    names: list[str],
    *,
    extra: str = "",
    mirror: dict[str, str] | None = None,
    timeout: str = "1s",
) -> Settings:
    """A config for `names`, each at its farm prefix; `mirror[name]` replaces its URL lines."""
    mirror = mirror or {}
    blocks = []
    for n in names:
        url = mirror.get(n, f'http = "{farm.url(n)}"')
        blocks.append(
            f'[[mirror]]\nname = "{n}"\n{url}\ncountry = "NL"\nlatitude = 52.0\nlongitude = 5.0\n'
        )
    return parse_settings(
        f'[redirector]\nmaster = "{farm.url("master")}"\nprobe_timeout = "{timeout}"\n'
        f"probe_concurrency = 16\n{extra}\n" + "\n".join(blocks),
        "t.toml",
    )


def hits(farm: Farm, name: str, method: str | None = None) -> int:
    return sum(
        1 for m, tail in farm.requests if tail.startswith(name + "/") and method in (None, m)
    )


def label(state: MirrorState, now: float, max_lag: float = 8 * HOUR) -> str:
    return describe(state, now, max_lag)[0]


# --- every state, one pass -------------------------------------------------------------------


async def test_every_state_in_one_pass(farm: Farm, session: aiohttp.ClientSession) -> None:
    now = float(int(time.time()))  # trace dates have whole seconds
    master = now - 10 * HOUR
    farm.set_trace("master", master)
    for name in ("fresh", "stale", "syncing", "behind-own", "own-html", "same-target"):
        farm.set_trace(name, master)
        farm.put(name, OWN, trace_c(master + 600))
    farm.set_trace("stale", now - 5 * DAY)
    farm.put("stale", OWN, trace_c(now - 5 * DAY + 600))
    # Mid-sync: the new master trace copy has arrived, its own trace is not written yet.
    farm.put("syncing", OWN, trace_c(master - DAY))
    farm.put("syncing", FLAG, b"")
    farm.put("behind-own", OWN, trace_c(master - DAY))  # the same, with no sync running
    farm.put("own-html", OWN, b"<html><body>404 Not Found</body></html>")
    farm.put("html", MASTER_TRACE, b"<!DOCTYPE html><html><body>Not Found</body></html>")
    farm.put("future", MASTER_TRACE, trace_c(now + 2 * DAY))
    farm.behaviours.update({"err": error_500, "hangs": hang, "slow": slow_drip, "huge": huge_body})

    async def loop(request: web.Request, rest: str) -> web.StreamResponse:
        raise web.HTTPFound(farm.url("loop") + rest)

    async def elsewhere(request: web.Request, rest: str) -> web.StreamResponse:
        raise web.HTTPFound("http://localhost:9/" + rest)  # another host name: never fetched

    async def same_host(request: web.Request, rest: str) -> web.StreamResponse:
        raise web.HTTPFound(farm.url("same-target") + rest)

    farm.behaviours.update({"loop": loop, "elsewhere": elsewhere, "same": same_host})
    port = int(farm.base.rsplit(":", 1)[1].strip("/"))
    urls = {
        "tls": f'https = "https://127.0.0.1:{port}/tls/"',  # TLS to a plain-HTTP port
        "refused": f'http = "http://127.0.0.1:{free_port()}/x/"',
    }
    table: dict[str, tuple[Status, str, str]] = {
        "fresh": (Status.UP, "fresh", ""),
        "stale": (Status.UP, "stale", ""),
        "syncing": (Status.SYNCING, "syncing", ""),
        "behind-own": (Status.BROKEN, "broken", "older than its master trace copy"),
        # The own trace is optional: an HTML page there costs only the checks it feeds.
        "own-html": (Status.UP, "fresh", ""),
        "html": (Status.BROKEN, "broken", "not a trace"),
        "future": (Status.BROKEN, "broken", "dated in the future"),
        "missing": (Status.BROKEN, "broken", "HTTP 404"),
        "huge": (Status.BROKEN, "broken", "body exceeds"),
        "loop": (Status.BROKEN, "broken", "redirects"),
        "elsewhere": (Status.BROKEN, "broken", "another host"),
        "same": (Status.UP, "fresh", ""),
        "err": (Status.DOWN, "down", "HTTP 500"),
        "hangs": (Status.DOWN, "down", "timed out"),
        "slow": (Status.DOWN, "down", "timed out"),
        "tls": (Status.DOWN, "down", "TLS error"),
        "refused": (Status.DOWN, "down", "cannot connect"),
    }
    store = MemoryStore()
    settings = settings_for(farm, list(table), mirror=urls)
    result = await poll_once(session, settings, store)
    by = {s.name: s for s in result.states}
    for name, (status, shown, reason) in table.items():
        s = by[name]
        assert (s.status, label(s, now)) == (status, shown), (name, s)
        assert reason in (s.error or ""), (name, s.error)
        assert reason in describe(s, now, settings.max_lag)[2], name
    assert by["fresh"].lag(now) == 0.0
    assert by["stale"].lag(now) == pytest.approx(10 * HOUR, abs=5)  # cold: the master's date
    assert by["fresh"].own_date == master + 600
    assert by["own-html"].own_date is None
    assert "own trace 127.0.0.1 not read (not a trace" in (by["own-html"].note or "")
    assert "localhost:9" not in "".join(t for _, t in farm.requests)  # loopback port 9: unused
    data = await store.load()
    assert set(data.states) == set(table)
    assert data.master is not None
    assert data.master.error is None
    # The table `redirector poll --once` prints says the same.
    text, _ = state_table([Candidate(m, by.get(m.name)) for m in settings.mirrors], now,
                          settings.max_lag)  # fmt: skip
    assert "behind-own  broken" in text
    assert "HTTP 500" in text


async def test_requests_per_mirror_are_bounded(farm: Farm, session: aiohttp.ClientSession) -> None:
    clock = Clock(T0)
    farm.set_trace("master", T0 - DAY)
    farm.set_trace("up", T0 - DAY)
    farm.put("up", OWN, trace_c(T0 - DAY + 600))  # found under its URL's host: no search
    farm.behaviours["dead"] = error_500
    s = settings_for(farm, ["up", "dead"], extra='poll_interval = "5m"\ncoverage_interval = "1h"')
    store = MemoryStore()
    r = await poll_once(session, s, store, clock)
    # master trace copy, own trace, sync flag, four coverage probes; a dead mirror: one request
    assert (hits(farm, "up"), hits(farm, "up", "HEAD"), hits(farm, "dead")) == (7, 5, 1)
    assert r.requests == 1 + 7 + 1
    assert r.probed == 2
    clock.t += 300
    r = await poll_once(session, s, store, clock)
    assert hits(farm, "up") == 7 + 3  # coverage is not probed again within the hour
    assert r.states[0].covered == ("contribs/", "obsolete/", "releases/", "releases/testing/")
    clock.t += HOUR
    await poll_once(session, s, store, clock)
    assert hits(farm, "up") == 10 + 7


# --- exact lag, with an injected clock -------------------------------------------------------


async def test_master_unchanged_for_three_days_is_fresh(
    farm: Farm, session: aiohttp.ClientSession
) -> None:
    clock = Clock(T0)
    farm.set_trace("master", T0 - 3 * DAY)
    farm.set_trace("m", T0 - 3 * DAY)
    s, store = settings_for(farm, ["m"]), MemoryStore()
    for step in (0.0, DAY, 2 * DAY, 3 * DAY):
        clock.t = T0 + step
        r = await poll_once(session, s, store, clock)
        assert r.states[0].lag(clock.t) == 0.0
        assert label(r.states[0], clock.t) == "fresh"


async def test_master_moves_mirror_fresh_until_max_lag_then_stale(
    farm: Farm, session: aiohttp.ClientSession
) -> None:
    clock = Clock(T0)
    farm.set_trace("master", T0 - DAY)
    farm.set_trace("m", T0 - DAY)
    s, store = settings_for(farm, ["m"]), MemoryStore()
    await poll_once(session, s, store, clock)
    moved = T0 + 2 * HOUR  # the master moves; the mirror does not follow
    clock.t = moved
    farm.set_trace("master", moved - 120)
    await poll_once(session, s, store, clock)
    for after, expected in (
        (0.0, "fresh"),
        (7 * HOUR + 59 * 60, "fresh"),
        (8 * HOUR + 60, "stale"),
    ):
        clock.t = moved + after
        st = (await poll_once(session, s, store, clock)).states[0]
        assert label(st, clock.t) == expected, after
        assert st.lag(clock.t) == pytest.approx(after)
        why = check(Candidate(s.mirrors[0], st), "releases/x", "http", False, clock.t, s.max_lag)
        assert (why is None) == (expected == "fresh")
        if why is not None:
            assert why.reason is Reason.STALE


async def test_a_version_behind_for_a_week_is_stale_however_often_it_syncs(
    farm: Farm, session: aiohttp.ClientSession
) -> None:
    clock = Clock(T0)
    farm.set_trace("master", T0 - DAY)
    farm.set_trace("m", T0 - DAY)
    s, store = settings_for(farm, ["m"]), MemoryStore()
    await poll_once(session, s, store, clock)
    clock.t = T0 + HOUR
    farm.set_trace("master", T0 + HOUR - 60)  # the next version; the mirror never gets it
    await poll_once(session, s, store, clock)
    while clock.t < T0 + 7 * DAY:
        clock.t += 2 * HOUR
        farm.put("m", OWN, trace_c(clock.t - 60))  # it syncs every 2 h, from a stale upstream
        st = (await poll_once(session, s, store, clock)).states[0]
        assert st.status is Status.UP  # its own trace is newer than its master copy: not broken
        assert st.lag(clock.t) == pytest.approx(clock.t - (T0 + HOUR))
        assert label(st, clock.t) == ("stale" if clock.t > T0 + 9 * HOUR else "fresh")
    assert "behind the master since" in describe(st, clock.t, s.max_lag)[2]


async def test_master_unreachable_keeps_history(farm: Farm, session: aiohttp.ClientSession) -> None:
    now = float(int(time.time()))
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
    now = float(int(time.time()))
    farm.behaviours["master"] = error_500
    farm.set_trace("new", now - 12 * HOUR)
    farm.set_trace("old", now - 5 * DAY)
    r = await poll_once(session, settings_for(farm, ["new", "old"]), MemoryStore())
    by = {s.name: s for s in r.states}
    assert by["new"].lag(now) == 0.0
    assert (by["old"].lag(now) or 0.0) > 8 * HOUR


# --- coverage --------------------------------------------------------------------------------


async def test_coverage_found_lacking_is_not_chosen_whatever_the_config_says(
    farm: Farm, session: aiohttp.ClientSession
) -> None:
    now = float(int(time.time()))
    for name in ("master", "noobs", "excl", "locked"):
        farm.set_trace(name, now - HOUR)
    farm.missing.add("noobs/obsolete/")  # the config says nothing: the poller finds out

    async def no_index(request: web.Request, rest: str) -> web.StreamResponse:
        if rest.endswith("/"):
            return web.Response(status=403, text="Forbidden")  # no autoindex: still there
        body = farm.files.get("locked/" + rest)
        return web.Response(body=body) if body is not None else web.Response(status=404)

    farm.behaviours["locked"] = no_index
    excl = f'http = "{farm.url("excl")}"\nexclude = ["obsolete/"]'
    s = settings_for(farm, ["noobs", "excl", "locked"], mirror={"excl": excl})
    by = {st.name: st for st in (await poll_once(session, s, MemoryStore())).states}
    noobs = by["noobs"]
    assert noobs.status is Status.UP
    assert noobs.lacks == ("obsolete/",)
    assert noobs.covered == ("contribs/", "releases/", "releases/testing/")
    assert noobs.coverage_note == "obsolete/ HTTP 404 at obsolete/"
    assert "lacks obsolete/ HTTP 404" in describe(noobs, now, s.max_lag)[2]
    cand = Candidate(s.mirrors[0], noobs)
    why = check(cand, "obsolete/6/smeserver-6.iso", "http", False, now, s.max_lag)
    assert why is not None
    assert why.reason is Reason.LACKS
    assert check(cand, "releases/10/x.iso", "http", False, now, s.max_lag) is None
    # Excluded by the config: never probed. Behind a 403: present.
    assert ("HEAD", "excl/obsolete/") not in farm.requests
    assert by["excl"].covered == ("contribs/", "releases/", "releases/testing/")
    assert by["locked"].lacks == ()
    assert "obsolete/" in by["locked"].covered


def test_coverage_probe_settings() -> None:
    base = '[redirector]\nmaster = "http://127.0.0.1:1/"\n'
    s = parse_settings(base + 'coverage_probes = { obsolete = "", contribs = "contribs/x/" }\n')
    assert s.coverage_probes == (
        ("releases/", "releases/"),
        ("releases/testing/", "releases/testing/"),
        ("contribs/", "contribs/x/"),
    )
    with pytest.raises(ConfigError, match="must lie below"):
        parse_settings(base + 'coverage_probes = { obsolete = "releases/" }\n')
    with pytest.raises(ConfigError, match="relative path"):
        parse_settings(base + 'coverage_probes = { obsolete = "obsolete/../x" }\n')
    with pytest.raises(ConfigError, match="out of range"):
        parse_settings(base + "failures_before_down = 0\n")
    s = parse_settings(base + 'failures_before_down = 4\nbackoff_max = "2h"\nlease_ttl = "10s"\n')
    assert (s.failures_before_down, s.backoff_max, s.lease_ttl) == (4, 7200.0, 10.0)


# --- failures: grace, backoff, logs ----------------------------------------------------------


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_delay(n, 300, 3600) for n in range(1, 7)] == [
        300, 600, 1200, 2400, 3600, 3600,
    ]  # fmt: skip
    assert backoff_delay(10_000, 300, 3600) == 3600  # no overflow
    assert duration(0) == "0s"
    assert duration(7 * HOUR + 720) == "7h12m"
    assert duration(3 * DAY + 4 * HOUR) == "3d04h"


async def test_failing_mirror_is_backed_off(farm: Farm, session: aiohttp.ClientSession) -> None:
    clock = Clock(T0)
    farm.set_trace("master", T0 - HOUR)
    farm.behaviours["dead"] = error_500
    extra = 'poll_interval = "5m"\nbackoff_max = "20m"'
    s, store = settings_for(farm, ["dead"], extra=extra), MemoryStore()
    probed_at = []
    for step in range(12):
        clock.t = T0 + step * 300
        before = hits(farm, "dead")
        r = await poll_once(session, s, store, clock)
        if hits(farm, "dead") > before:
            probed_at.append(step * 300)
        assert r.states[0].status is Status.DOWN
    # retried after 5, 10, 20 minutes, then every 20 (the cap)
    assert probed_at == [0, 300, 900, 2100, 3300]
    assert r.states[0].failures == 5
    assert "next probe" in describe(r.states[0], clock.t, s.max_lag)[2]


async def test_flapping_stays_up_and_logs_only_transitions(
    farm: Farm, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(T0)
    farm.set_trace("master", T0 - HOUR)
    served = {"flap": 0, "dies": 0}
    failing = {"dies": False}

    def flaky(name: str, fails: Callable[[int], bool]) -> Behaviour:
        async def behaviour(request: web.Request, rest: str) -> web.StreamResponse:
            if rest == MASTER_TRACE:
                served[name] += 1
                if fails(served[name]):
                    return web.Response(status=503, text="busy")
                return web.Response(body=trace_c(T0 - HOUR))
            return web.Response(text="index") if rest.endswith("/") else web.Response(status=404)

        return behaviour

    farm.behaviours["flap"] = flaky("flap", lambda n: n % 2 == 0)  # every other probe fails
    farm.behaviours["dies"] = flaky("dies", lambda n: failing["dies"])
    extra = 'poll_interval = "5m"\nbackoff_max = "5m"\nfailures_before_down = 2'
    s, store = settings_for(farm, ["flap", "dies"], extra=extra), MemoryStore()
    caplog.set_level(logging.INFO, logger="redirector")
    seen: list[tuple[Status, Status]] = []
    for step in range(10):
        clock.t = T0 + step * 600
        failing["dies"] = 1 <= step <= 6
        by = {st.name: st for st in (await poll_once(session, s, store, clock)).states}
        seen.append((by["flap"].status, by["dies"].status))
    assert {f for f, _ in seen} == {Status.UP}  # one failure in a row never takes it out
    dies = [d for _, d in seen]
    # step 1: first failure, within its grace; 2-6: down; 7: recovered
    assert dies == [Status.UP, Status.UP, *[Status.DOWN] * 5, Status.UP, Status.UP, Status.UP]
    said = [(r.levelno, r.getMessage()) for r in caplog.records if "mirror " in r.getMessage()]
    assert [lvl for lvl, _ in said] == [logging.WARNING, logging.INFO]
    assert "mirror dies is down: HTTP 503" in said[0][1]
    assert "mirror dies recovered after 6 failed probes" in said[1][1]
    assert not any("flap" in msg for _, msg in said)
    # A failure within the grace shows in the status views, not the log.
    flap = by["flap"]
    assert flap.failures in (0, 1)


def test_judge_grace_and_first_failure() -> None:
    from redirector.core.judge import Fault, Observation
    from redirector.core.trace import parse_trace

    rules = Rules(interval=300, failures_before_down=3, backoff_max=3600)
    fault = Observation(master=Fault(Status.DOWN, "timed out"))
    # Never up: down at once.
    first = judge("m", fault, None, (), T0, rules)
    assert (first.status, first.failures, first.retry_at) == (Status.DOWN, 1, T0 + 300)
    ok = Observation(master=parse_trace(trace_c(T0 - HOUR)))
    up = judge("m", ok, None, (MasterVersion(T0 - HOUR, T0 - HOUR),), T0, rules)
    assert up.status is Status.UP
    hist = (MasterVersion(T0 - HOUR, T0 - HOUR),)
    s1 = judge("m", fault, up, hist, T0 + 300, rules)
    s2 = judge("m", fault, s1, hist, T0 + 600, rules)
    s3 = judge("m", fault, s2, hist, T0 + 900, rules)
    assert [x.status for x in (s1, s2, s3)] == [Status.UP, Status.UP, Status.DOWN]
    assert s2.master_date == T0 - HOUR  # the last good state is kept for the views
    assert s3.retry_at == T0 + 900 + 1200


# --- pass hooks and the command --------------------------------------------------------------


async def test_pass_hooks_run_after_each_pass_and_a_failing_one_is_only_logged(
    farm: Farm, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    farm.set_trace("master", time.time() - HOUR)
    farm.set_trace("m", time.time() - HOUR)
    s = settings_for(farm, ["m"], extra='poll_interval = "20ms"')
    seen: list[PassResult] = []
    late: list[PassResult] = []
    two_seen, two_late = asyncio.Event(), asyncio.Event()

    async def broken(_: aiohttp.ClientSession, result: PassResult) -> None:
        raise RuntimeError("hook bug")

    async def record(sess: aiohttp.ClientSession, result: PassResult) -> None:
        assert sess is session  # hooks get the poller's session
        seen.append(result)
        if len(seen) >= 2:
            two_seen.set()

    async def record_late(_: aiohttp.ClientSession, result: PassResult) -> None:
        late.append(result)
        if len(late) >= 2:
            two_late.set()

    hooks = [broken, record]
    task = asyncio.create_task(run_poller(session, s, MemoryStore(), hooks=hooks))
    try:
        await two_seen.wait()
        hooks.append(record_late)  # registered on the live list while the poller runs
        await two_late.wait()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert seen[0].states[0].status is Status.UP
    failed = [r for r in caplog.records if "pass hook" in r.getMessage()]
    assert failed
    assert all("broken" in r.getMessage() and r.exc_info is not None for r in failed)


async def _run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "redirector.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _config_file(farm: Farm, tmp_path: Path, names: list[str], extra: str = "") -> Path:
    blocks = "".join(
        f'[[mirror]]\nname = "{n}"\nhttp = "{farm.url(n)}"\ncountry = "NL"\n'
        f"latitude = 52.0\nlongitude = 5.0\n\n"
        for n in names
    )
    path = tmp_path / "mirrors.toml"
    path.write_text(
        f'[redirector]\nmaster = "{farm.url("master")}"\nprobe_timeout = "1s"\n'
        f'geoip_db = ""\n{extra}\n\n{blocks}'
    )
    return path


async def test_poll_once_prints_progress_and_a_table(farm: Farm, tmp_path: Path) -> None:
    now = time.time()
    farm.set_trace("master", now - 10 * HOUR)
    farm.set_trace("good", now - 10 * HOUR)
    farm.set_trace("old", now - 3 * DAY)
    farm.behaviours["bad"] = error_500
    cfg = _config_file(farm, tmp_path, ["good", "old", "bad"])
    code, out, err = await _run_cli("poll", "--once", "--config", str(cfg))
    assert code == 0, err
    assert "[3/3]" in err  # progress, one line per mirror when not on a terminal
    rows = {line.split()[0]: line.split(None, 3) for line in out.splitlines() if line.strip()}
    assert rows["NAME"][:3] == ["NAME", "STATE", "LAG"]
    assert rows["NAME"][3].split() == ["CHECKED", "FAILS", "REASON"]
    assert rows["good"][1:3] == ["fresh", "0s"]
    assert rows["old"][1] == "stale"
    assert rows["bad"][1] == "down"
    assert "HTTP 500" in rows["bad"][3]
    assert "1 of 3 mirrors can be served" in out


async def test_poll_once_does_not_write_while_another_process_polls(
    farm: Farm, tmp_path: Path, redis_url: str
) -> None:
    farm.set_trace("master", time.time() - HOUR)
    farm.set_trace("good", time.time() - HOUR)
    store = RedisStore(redis_url)
    try:
        assert await store.acquire_lease("poller", "the-server", 30)
        cfg = _config_file(farm, tmp_path, ["good"], extra=f'redis_url = "{redis_url}"')
        code, out, err = await _run_cli("poll", "--once", "--config", str(cfg))
        assert code == 0, err
        assert "another process polls (the-server)" in err
        assert "good" in out
        assert (await store.load()).states == {}  # shown, not written
        await store.release_lease("poller", "the-server")
        code, _, err = await _run_cli("poll", "--once", "--config", str(cfg))
        assert code == 0, err
        assert set((await store.load()).states) == {"good"}
        assert await store.lease_holder("poller") is None  # released after the pass
    finally:
        await store.close()


def test_a_lost_master_history_is_rebuilt_from_the_mirrors_states() -> None:
    # The master's key unreadable, the mirrors' states intact: each mirror keeps its lag.
    day = 86400.0
    current = T0 - 3600
    states = [
        MirrorState("fresh", Status.UP, T0 - 60, master_date=current),
        MirrorState("days", Status.UP, T0 - 60, T0 - 4 * day, behind_since=T0 - 3 * day),
        MirrorState("hours", Status.DOWN, T0 - 60, T0 - 2 * day, behind_since=T0 - 5 * 3600),
        MirrorState("new", Status.UNKNOWN, T0 - 60),
        # contradicts "days": a newer state first seen earlier; dropped, not believed
        MirrorState("odd", Status.UP, T0 - 60, T0 - 3.5 * day, behind_since=T0 - 6 * day),
    ]
    history = history_from_states(states)
    assert [v.first_seen for v in history] == [T0 - 3 * day, T0 - 5 * 3600, current]
    assert behind_since(current, history) is None
    assert behind_since(T0 - 4 * day, history) == T0 - 3 * day
    assert behind_since(T0 - 2 * day, history) == T0 - 5 * 3600
    assert history_from_states([MirrorState("new", Status.UNKNOWN, T0)]) == ()


async def test_each_pass_records_history_and_events(
    farm: Farm, session: aiohttp.ClientSession, redis_url: str
) -> None:
    clock = Clock(T0)
    farm.set_trace("master", T0 - HOUR)
    farm.set_trace("m", T0 - HOUR)
    s = settings_for(farm, ["m"], extra='failures_before_down = 1\npoll_interval = "5m"')
    store = RedisStore(redis_url, prefix="history-pass:")
    try:
        await poll_once(session, s, store, clock)
        farm.behaviours["m"] = error_500
        clock.t += 300
        await poll_once(session, s, store, clock)
        farm.behaviours.pop("m")
        farm.set_trace("master", T0 + 500)  # the master publishes meanwhile
        farm.set_trace("m", T0 + 500)
        clock.t += 900  # past the backoff
        await poll_once(session, s, store, clock)
        past = await store.load_history()
    finally:
        await store.close()
    h = past.mirrors["m"]
    assert [(t.at, t.phase) for t in h.transitions] == [
        (T0, Phase.UP), (T0 + 300, Phase.DOWN), (T0 + 1200, Phase.UP),
    ]  # fmt: skip
    assert [x.at for x in h.lags] == [T0, T0 + 300, T0 + 1200]
    assert [(e.kind, e.subject) for e in past.events] == [
        (EventKind.MIRROR_DOWN, "m"),
        (EventKind.MASTER_PUBLISHED, None),
        (EventKind.MIRROR_UP, "m"),
    ]
    assert past.events[-1].duration == 900


# --- IPv6: found by the poller, not configured -------------------------------------------------


@pytest.fixture
async def farm6() -> AsyncIterator[Farm]:
    """A second farm, listening on ::1 only: mirrors reachable over IPv6 alone."""
    f = Farm()
    await f.start("::1")
    yield f
    await f.stop()


async def test_the_poller_finds_which_mirrors_answer_over_ipv6(
    farm: Farm, farm6: Farm, session: aiohttp.ClientSession
) -> None:
    clock = Clock(T0)
    farm.set_trace("master", T0 - DAY)
    farm.set_trace("four", T0 - DAY)
    farm6.set_trace("six", T0 - DAY)
    s = settings_for(
        farm,
        ["four", "six", "pinned"],
        mirror={
            "six": f'http = "{farm6.url("six")}"',
            "pinned": f'http = "{farm.url("four")}"\nipv6 = true',
        },
    )
    assert all(m.ipv6 is None for m in s.mirrors[:2])  # nobody marked them
    store = MemoryStore()
    await poll_once(session, s, store, clock)
    by = (await store.load()).states
    assert (by["six"].ipv6, by["six"].ipv6_note) == (True, "answers over IPv6 at ::1")
    assert (by["four"].ipv6, by["four"].ipv6_note) == (False, "no AAAA record for 127.0.0.1")
    assert by["pinned"].ipv6 is None  # the config says: nothing to find out
    six, four, pinned = s.mirrors
    path = "releases/10/smeos/x86_64/repodata/repomd.xml"
    # An IPv6 client reaches the mirror nobody marked, and the configured one.
    assert check(Candidate(six, by["six"]), path, "http", True, clock(), s.max_lag) is None
    assert check(Candidate(pinned, by["pinned"]), path, "http", True, clock(), s.max_lag) is None
    why = check(Candidate(four, by["four"]), path, "http", True, clock(), s.max_lag)
    assert why is not None
    assert why.reason is Reason.NO_IPV6
    assert "no AAAA record for 127.0.0.1" in (why.subject or "")

    # The answer is kept between checks, which come with the coverage probes.
    clock.t += 300
    await poll_once(session, s, store, clock)
    assert (await store.load()).states["six"].ipv6 is True
    assert sum(1 for _, tail in farm6.requests if tail == f"six/{MASTER_TRACE}") == 3


async def test_fetch_can_ask_one_address_keeping_the_host(
    farm6: Farm, session: aiohttp.ClientSession
) -> None:
    seen: list[str | None] = []

    async def echo_host(request: web.Request, rest: str) -> web.StreamResponse:
        seen.append(request.headers.get("Host"))
        return web.Response(text="ok")

    farm6.behaviours["named"] = echo_host
    port = farm6.base.rsplit(":", 1)[1].rstrip("/")
    got = await fetch(session, f"http://mirror.test:{port}/named/x", timeout=2, address="::1")
    assert (got.status, got.body) == (200, b"ok")
    assert seen == [f"mirror.test:{port}"]
