"""Master and clock faults: the master unreachable or going backwards, the clock jumping an hour.

Real HTTP throughout (tests/farm.py impersonates the master and the mirrors on loopback); time
is injected: the poller (`poll_once(clock=)`), the snapshot (`SnapshotHolder(clock=)`) and the
router (`Router(clock=)`) all read the same `Clock`, which the test moves or steps back.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from redirector.config.settings import Settings, parse_settings
from redirector.core.judge import FUTURE_SLACK
from redirector.core.models import MirrorState, Status
from redirector.poll.poller import PassResult, poll_once
from redirector.router import Router
from redirector.snapshot import SnapshotHolder
from redirector.store.memory import MemoryStore
from redirector.web.app import create_app
from tests.farm import Behaviour, Farm, error_500, hang
from tests.support.clock import Clock
from tests.support.words import describe

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]

HOUR = 3600.0
MAX_LAG = 8 * HOUR
PATH = "releases/10/smeos/x86_64/repodata/repomd.xml"
CLIENTS = [f"198.51.{i}.7" for i in range(40)]  # 40 networks: every fresh mirror gets some


def settings_for(farm: Farm, names: list[str], **overrides: str) -> Settings:
    """Mirrors `names` on the farm; `overrides` replace [redirector] values (TOML text)."""
    values = {
        "master": f'"{farm.url("master")}"',
        "probe_timeout": '"500ms"',
        "poll_interval": '"5m"',
        "max_lag": '"8h"',
        "geoip_db": '""',
        "verify_files": "false",
        "trusted_proxies": '["127.0.0.1/32"]',
        **overrides,
    }
    head = "".join(f"{k} = {v}\n" for k, v in values.items())
    blocks = "".join(
        f'[[mirror]]\nname = "{n}"\nhttp = "{farm.url(n)}"\ncountry = "NL"\n'
        f"latitude = 52.0\nlongitude = 5.0\n\n"
        for n in names
    )
    return parse_settings(f"[redirector]\n{head}\n{blocks}", "faults.toml")


class World:
    """One poller, store, snapshot and router, all on `clock`: a redirector without HTTP in."""

    def __init__(self, farm: Farm, settings: Settings, clock: Clock) -> None:
        self.farm = farm
        self.settings = settings
        self.clock = clock
        self.store = MemoryStore()
        self.holder = SnapshotHolder(settings.mirrors, clock=clock)
        self.router = Router(settings, self.holder, None, clock=clock)

    async def poll(self, session: aiohttp.ClientSession) -> PassResult:
        result = await poll_once(session, self.settings, self.store, self.clock)
        await self.holder.refresh(self.store)
        return result

    def targets(self) -> set[str]:
        """Where clients of many networks are sent now: mirror names, or "master"."""
        out = set()
        for ip in CLIENTS:
            routed = self.router.resolve("127.0.0.1", ip, None, "http", PATH)
            out.add("master" if routed.fallback else routed.target.split("/")[3])
        return out

    def label(self, result: PassResult, name: str) -> str:
        state = {s.name: s for s in result.states}[name]
        return describe(state, self.clock(), MAX_LAG)[0]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def states(result: PassResult) -> dict[str, MirrorState]:
    return {s.name: s for s in result.states}


# --- the master unreachable ------------------------------------------------------------------


@pytest.mark.parametrize("fault", [error_500, hang], ids=["http-500", "hangs"])
async def test_master_unreachable_keeps_its_last_state_and_the_mirrors_stay_fresh(
    farm: Farm, session: aiohttp.ClientSession, fault: Behaviour
) -> None:
    t0 = float(int(time.time()))
    clock = Clock(t0)
    current, older = t0 - 10 * HOUR, t0 - 30 * HOUR
    farm.set_trace("master", current)
    for name in ("a", "b"):
        farm.set_trace(name, current)
    farm.set_trace("c", older)  # behind since the master's current state appeared
    w = World(farm, settings_for(farm, ["a", "b", "c"]), clock)
    first = await w.poll(session)
    assert first.master.error is None
    assert [w.label(first, n) for n in "abc"] == ["fresh", "fresh", "stale"]
    assert w.targets() == {"a", "b"}

    farm.behaviours["master"] = fault
    # Hours without the master: what it last said still holds, and the mirrors holding it
    # stay fresh (lag 0), however long the outage; the one behind stays behind.
    for hours in (1, 3, 7.5):
        clock.t = t0 + hours * HOUR
        r = await w.poll(session)
        assert r.master.error is not None
        assert r.master.history == first.master.history
        assert r.master.checked_at == clock.t
        assert [w.label(r, n) for n in "ab"] == ["fresh", "fresh"], hours
        assert states(r)["a"].lag(clock.t) == 0.0
        assert w.targets() == {"a", "b"}  # never everyone to the master
    assert w.label(r, "c") == "stale"

    # Meanwhile the master moved on (we could not see it) and "a" synced: a copy newer than
    # the last known master state is not punished while the master cannot be asked, pass
    # after pass.
    newer = t0 + 7 * HOUR
    farm.set_trace("a", newer)
    for _ in range(3):
        clock.t += 300
        r = await w.poll(session)
        assert states(r)["a"].status is Status.UP
        assert states(r)["a"].lag(clock.t) == 0.0
    assert w.targets() == {"a", "b"}

    # The master answers again: its new state is recorded now, and "b" is behind from now on.
    del farm.behaviours["master"]
    farm.set_trace("master", newer)
    clock.t += 300
    r = await w.poll(session)
    assert r.master.error is None
    assert r.master.current is not None
    assert (r.master.current.date, r.master.current.first_seen) == (newer, clock.t)
    assert states(r)["b"].lag(clock.t) == 0.0  # behind since just now
    clock.t += HOUR
    r = await w.poll(session)
    assert states(r)["b"].lag(clock.t) == HOUR
    assert states(r)["a"].lag(clock.t) == 0.0


async def test_master_never_reached_does_not_make_every_mirror_stale(
    farm: Farm, session: aiohttp.ClientSession
) -> None:
    t0 = float(int(time.time()))
    farm.behaviours["master"] = error_500
    farm.set_trace("a", t0 - 20 * HOUR)
    farm.set_trace("b", t0 - 20 * HOUR)
    farm.set_trace("c", t0 - 3 * 24 * HOUR)
    w = World(farm, settings_for(farm, ["a", "b", "c"]), Clock(t0))
    r = await w.poll(session)
    # Cold start, the master never seen: the newest state any mirror holds stands in for it.
    assert r.master.history == ()
    assert [w.label(r, n) for n in "abc"] == ["fresh", "fresh", "stale"]
    assert w.targets() == {"a", "b"}


async def test_master_unreachable_end_to_end(aiohttp_client: ClientFactory, farm: Farm) -> None:
    now = time.time()
    farm.set_trace("master", now - HOUR)
    farm.set_trace("a", now - HOUR)
    farm.set_trace("b", now - HOUR)
    s = settings_for(farm, ["a", "b"], poll_interval='"200ms"')
    client = await aiohttp_client(create_app(s))

    async def health() -> dict[str, Any]:
        body: dict[str, Any] = json.loads(await (await client.get("/health")).text())
        return body

    deadline = time.monotonic() + 10
    while (await health())["mirrors"] != {"configured": 2, "enabled": 2, "fresh": 2}:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    farm.behaviours["master"] = error_500
    deadline = time.monotonic() + 10
    while (body := await health())["master"]["reachable"] is not False:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert body["status"] == "ok"
    assert body["mirrors"]["fresh"] == 2
    assert "HTTP 500" in body["master"]["error"]
    for ip in CLIENTS[:10]:
        resp = await client.get(
            "/smeserver/" + PATH, headers={"X-Forwarded-For": ip}, allow_redirects=False
        )
        assert resp.status == 302
        assert resp.headers["Location"].startswith((farm.url("a"), farm.url("b")))
    ready = await client.get("/health/ready")
    assert ready.status == 200
    assert (await ready.json())["checks"]["targets"]["fresh"] == 2


# --- a master trace that goes backwards ------------------------------------------------------


async def test_master_trace_going_backwards_rewrites_nothing(
    farm: Farm, session: aiohttp.ClientSession
) -> None:
    t0 = float(int(time.time()))
    clock = Clock(t0)
    restored, newest = t0 - 5 * HOUR, t0 - HOUR
    farm.set_trace("master", newest)
    farm.set_trace("a", newest)
    farm.set_trace("b", newest)
    w = World(farm, settings_for(farm, ["a", "b"]), clock)
    first = await w.poll(session)
    assert [w.label(first, n) for n in "ab"] == ["fresh", "fresh"]

    # The master is restored from an older backup (or a stale front serves it): its trace
    # goes back five hours. Not a new state: the history is kept as it was, nothing is
    # marked as an error, and mirrors holding the newest state stay current.
    farm.set_trace("master", restored)
    for step in (300, 3 * HOUR, 7 * HOUR):
        clock.t = t0 + step
        r = await w.poll(session)
        assert r.master.error is None
        assert r.master.history == first.master.history
        assert states(r)["a"].lag(clock.t) == 0.0
        assert w.targets() == {"a", "b"}

    # "b" follows the master back: it holds an older state than the newest the master
    # published, and is behind since that state appeared, as any mirror holding it.
    farm.set_trace("b", restored)
    clock.t = t0 + 7.5 * HOUR
    r = await w.poll(session)
    current = first.master.current
    assert current is not None
    assert states(r)["b"].behind_since == current.first_seen
    # The master moving forward again is recorded as usual.
    farm.set_trace("master", t0 + 7 * HOUR)
    farm.set_trace("a", t0 + 7 * HOUR)
    farm.set_trace("b", t0 + 7 * HOUR)
    r = await w.poll(session)
    assert r.master.current is not None
    assert r.master.current.date == t0 + 7 * HOUR
    assert len(r.master.history) == 2
    assert [w.label(r, n) for n in "ab"] == ["fresh", "fresh"]


# --- the clock jumping an hour ---------------------------------------------------------------


async def test_clock_jumping_an_hour_forward(farm: Farm, session: aiohttp.ClientSession) -> None:
    t0 = float(int(time.time()))
    clock = Clock(t0)
    farm.set_trace("master", t0 - 600)
    farm.set_trace("a", t0 - 600)
    farm.set_trace("b", t0 - 600)
    w = World(farm, settings_for(farm, ["a", "b"]), clock)
    first = await w.poll(session)
    assert w.targets() == {"a", "b"}

    clock.t = t0 + HOUR  # NTP steps the clock an hour forward between two passes
    # Before the next pass: state checked "an hour ago" still serves.
    assert w.targets() == {"a", "b"}
    r = await w.poll(session)
    assert r.master.history == first.master.history  # the same trace, nothing new
    assert [w.label(r, n) for n in "ab"] == ["fresh", "fresh"]
    assert w.targets() == {"a", "b"}
    # And back again: states checked "in the future" are not a reason to refuse a mirror.
    clock.t = t0 + 60
    assert w.targets() == {"a", "b"}
    r = await w.poll(session)
    assert [w.label(r, n) for n in "ab"] == ["fresh", "fresh"]


async def test_clock_jumping_an_hour_back(farm: Farm, session: aiohttp.ClientSession) -> None:
    real = float(int(time.time()))
    farm.set_trace("master", real - 3 * HOUR)
    farm.set_trace("a", real - 3 * HOUR)
    farm.set_trace("b", real - 3 * HOUR)
    clock = Clock(real)
    w = World(farm, settings_for(farm, ["a", "b"]), clock)
    await w.poll(session)
    assert w.targets() == {"a", "b"}

    # Our clock steps an hour back; the master publishes a state just now (its clock is
    # right), and both mirrors sync it: their traces read 59 minutes in our future.
    clock.t = real - HOUR
    assert FUTURE_SLACK > HOUR
    farm.set_trace("master", real - 60)
    farm.set_trace("a", real - 60)
    farm.set_trace("b", real - 60)
    r = await w.poll(session)
    assert r.master.error is None  # taken, not refused as "in the future"
    assert r.master.current is not None
    assert r.master.current.date == real - 60
    for name in "ab":
        assert states(r)[name].status is Status.UP, states(r)[name].error
        assert states(r)[name].lag(clock.t) == 0.0
    assert w.targets() == {"a", "b"}

    # A trace more than FUTURE_SLACK ahead is still refused: a wrong clock on their side.
    farm.set_trace("b", clock.t + FUTURE_SLACK + HOUR)
    r = await w.poll(session)
    assert "in the future" in (states(r)["b"].error or "")


async def test_clock_stepping_back_does_not_hold_a_failing_mirror_out(
    farm: Farm, session: aiohttp.ClientSession
) -> None:
    t0 = float(int(time.time()))
    clock = Clock(t0)
    farm.set_trace("master", t0 - HOUR)
    farm.set_trace("a", t0 - HOUR)
    farm.behaviours["b"] = error_500
    w = World(farm, settings_for(farm, ["a", "b"], backoff_max='"4h"'), clock)
    for _ in range(4):  # down, backed off: next probe after 5, 10, 20 min ...
        r = await w.poll(session)
        clock.t = max(clock.t + 300, states(r)["b"].retry_at or 0.0)
    assert states(r)["b"].status is Status.DOWN
    del farm.behaviours["b"]
    farm.set_trace("b", t0 - HOUR)
    clock.t = states(r)["b"].checked_at - HOUR  # the clock steps back an hour
    asked = sum(1 for _, tail in farm.requests if tail.startswith("b/"))
    r = await w.poll(session)
    # Probed at once (not an hour plus its backoff later), and back in service.
    assert sum(1 for _, tail in farm.requests if tail.startswith("b/")) > asked
    assert states(r)["b"].status is Status.UP
    assert w.targets() == {"a", "b"}


# --- shutdown ---------------------------------------------------------------------------------


async def test_shutdown_ends_the_poller_even_when_a_cancel_is_swallowed(
    aiohttp_client: ClientFactory, farm: Farm
) -> None:
    """A pass hook (or a library under it) that swallows the shutdown's cancel must not keep
    the process from stopping: seen once in CI as a 60 s hang at teardown."""
    now = time.time()
    farm.set_trace("master", now - HOUR)
    farm.set_trace("a", now - HOUR)
    inside = asyncio.Event()
    swallowed: list[bool] = []

    async def stubborn(_: aiohttp.ClientSession, result: PassResult) -> None:
        if swallowed:
            return
        inside.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            swallowed.append(True)  # the bug being survived: the cancel goes no further

    s = settings_for(farm, ["a"], poll_interval='"100ms"')
    client = await aiohttp_client(create_app(s, pass_hooks=[stubborn]))
    await asyncio.wait_for(inside.wait(), 10)
    closing = asyncio.create_task(client.close())
    done, _ = await asyncio.wait({closing}, timeout=15)  # it hung for ever before the fix
    assert closing in done
    closing.result()
    assert swallowed == [True]
