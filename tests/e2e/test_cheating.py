"""Mirrors cannot cheat: no looking fresher than the master, no sending probes elsewhere, no
holding the poller hostage with endless or enormous answers.

Real servers on loopback: tests/farm.py for the master and well-behaved mirrors, `Elsewhere`
(an aiohttp server on 127.0.0.2, another host as far as URLs go) as the target of redirects
that must never be followed, and `Endless` (raw asyncio) for answers that never finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from redirector.config.settings import Settings, parse_settings
from redirector.core.judge import ahead_of_master
from redirector.core.models import MasterVersion, MirrorState, Status
from redirector.poll.filecheck import Verifier, open_check_session
from redirector.poll.poller import PassResult, poll_once
from redirector.poll.probe import MAX_BODY, ProbeError, fetch, open_session
from redirector.poll.repodata import MAX_REPOMD, get_repomd
from redirector.router import Router
from redirector.snapshot import SnapshotHolder
from redirector.store.memory import MemoryStore
from tests.farm import MASTER_TRACE, Farm, trace_c
from tests.support.clock import Clock
from tests.support.words import describe

HOUR = 3600.0
OWN = "project/trace/127.0.0.1"
FLAG = "Archive-Update-in-Progress-127.0.0.1"


def settings_for(
    master: str, mirrors: dict[str, str], timeout: str = "1s", extra: str = ""
) -> Settings:
    """A config with `mirrors` (name -> base URL) and the given master."""
    blocks = "".join(
        f'[[mirror]]\nname = "{n}"\nhttp = "{url}"\ncountry = "NL"\n'
        f"latitude = 52.0\nlongitude = 5.0\n\n"
        for n, url in mirrors.items()
    )
    return parse_settings(
        f'[redirector]\nmaster = "{master}"\nprobe_timeout = "{timeout}"\n'
        f'poll_interval = "5m"\ngeoip_db = ""\n{extra}\n{blocks}',
        "cheat.toml",
    )


def by_name(result: PassResult) -> dict[str, MirrorState]:
    return {s.name: s for s in result.states}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


# --- no looking fresher than the master ------------------------------------------------------


def _state(master_date: float | None, checked_at: float) -> MirrorState:
    return MirrorState("m", Status.UP, checked_at, master_date=master_date)


@pytest.mark.parametrize(
    ("held", "prev", "master_seen", "ahead"),
    [
        # The master's newest state is dated 1000 (see `history` below).
        (1000.0, _state(1000.0, 50.0), 100.0, False),  # holds the newest: honest
        (900.0, _state(900.0, 50.0), 100.0, False),  # behind: honest, lags
        (1500.0, None, 100.0, False),  # first look, past the newest: the master may have moved
        (1500.0, _state(1000.0, 50.0), 100.0, False),  # synced a state newer than we know of
        (1500.0, _state(1500.0, 50.0), 100.0, True),  # claimed it before, master seen since
        (1600.0, _state(1500.0, 50.0), 100.0, True),  # a trace rewritten each pass: the same
        (1500.0, _state(1500.0, 150.0), 100.0, False),  # the master not seen since the claim
        (1500.0, _state(1500.0, 50.0), None, False),  # the master unreachable this pass
        (1000.0, _state(1500.0, 50.0), 100.0, False),  # back to the master's state: honest
    ],
)
def test_ahead_of_master(
    held: float, prev: MirrorState | None, master_seen: float | None, ahead: bool
) -> None:
    history = (MasterVersion(500.0, 500.0), MasterVersion(1000.0, 20.0))
    assert ahead_of_master(held, prev, history, master_seen) is ahead


async def test_a_copy_dated_after_the_master_is_not_fresher(
    farm: Farm, session: aiohttp.ClientSession
) -> None:
    t0 = float(int(time.time()))
    clock = Clock(t0)
    newest = t0 - 10 * HOUR  # the master has not changed for ten hours
    farm.set_trace("master", newest)
    farm.set_trace("honest", newest)
    # "liar" writes a master trace copy of its own, dated minutes ago, hoping to look fresher
    # (a forged file, or a mirror that writes the trace itself instead of copying it).
    farm.set_trace("liar", t0 - 300)
    s = settings_for(farm.url("master"), {"honest": farm.url("honest"), "liar": farm.url("liar")})
    store = MemoryStore()
    r = await poll_once(session, s, store, clock)
    states = by_name(r)
    # First look: a copy newer than the master's newest may be a master change we have not
    # seen yet; it counts as holding the newest state, no better: lag 0, as the honest one.
    assert states["liar"].lag(clock.t) == states["honest"].lag(clock.t) == 0.0
    assert r.master.current is not None
    assert r.master.current.date == newest  # the liar's date did not become the master's

    # The master answers again and still has not that state: it was never published.
    for _ in range(s.failures_before_down):
        clock.t += 300
        farm.set_trace("liar", clock.t - 60)  # rewritten each pass, always "minutes ago"
        r = await poll_once(session, s, store, clock)
    liar = by_name(r)["liar"]
    assert liar.status is Status.BROKEN
    assert liar.error is not None
    assert "not a state the master published" in liar.error
    assert describe(liar, clock.t, s.max_lag)[0] == "broken"
    assert by_name(r)["honest"].status is Status.UP
    holder = SnapshotHolder(s.mirrors, clock=clock)
    await holder.refresh(store)
    router = Router(s, holder, None, clock=clock)
    for i in range(30):
        routed = router.resolve("127.0.0.1", None, None, "http", f"releases/{i}/x.iso")
        assert routed.target.startswith(farm.url("honest"))

    # Copying the master's real trace makes it a mirror like the others again.
    farm.set_trace("liar", newest)
    clock.t = liar.retry_at or clock.t
    r = await poll_once(session, s, store, clock)
    assert by_name(r)["liar"].status is Status.UP
    assert by_name(r)["liar"].error is None


async def test_an_empty_trace_with_a_fresh_last_modified_cannot_cheat(
    farm: Farm, session: aiohttp.ClientSession
) -> None:
    t0 = float(int(time.time()))
    clock = Clock(t0)
    farm.set_trace("master", t0 - 10 * HOUR)

    async def empty_now(request: web.Request, rest: str) -> web.StreamResponse:
        # An empty trace is dated by Last-Modified: this one always says "just now".
        if rest == MASTER_TRACE:
            modified = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(clock.t - 30))
            return web.Response(body=b"", headers={"Last-Modified": modified})
        return web.Response(status=404)

    farm.behaviours["empty"] = empty_now
    s = settings_for(farm.url("master"), {"empty": farm.url("empty")})
    store = MemoryStore()
    for _ in range(1 + s.failures_before_down):
        r = await poll_once(session, s, store, clock)
        clock.t += 300
    state = by_name(r)["empty"]
    assert state.status is Status.BROKEN
    assert "not a state the master published" in (state.error or "")


async def test_a_copy_dated_far_in_the_future_is_broken_at_once(
    farm: Farm, session: aiohttp.ClientSession
) -> None:
    t0 = float(int(time.time()))
    farm.set_trace("master", t0 - HOUR)
    farm.set_trace("future", t0 + 365 * 24 * HOUR)
    farm.set_trace("honest", t0 - HOUR)
    s = settings_for(
        farm.url("master"), {"future": farm.url("future"), "honest": farm.url("honest")}
    )
    r = await poll_once(session, s, MemoryStore(), Clock(t0))
    future = by_name(r)["future"]
    assert future.status is Status.BROKEN
    assert "dated in the future" in (future.error or "")
    assert r.master.current is not None
    assert r.master.current.date == t0 - HOUR


async def test_an_honest_mirror_quicker_than_our_look_at_the_master(
    farm: Farm, session: aiohttp.ClientSession
) -> None:
    t0 = float(int(time.time()))
    clock = Clock(t0)
    farm.set_trace("master", t0 - 10 * HOUR)
    farm.set_trace("quick", t0 - 10 * HOUR)
    s = settings_for(farm.url("master"), {"quick": farm.url("quick")})
    store = MemoryStore()
    await poll_once(session, s, store, clock)
    # The master publishes a new state; "quick" syncs it before our next look at the master
    # (here: the master's answer is still the old one during that pass).
    farm.set_trace("quick", t0 + 200)
    clock.t = t0 + 300
    r = await poll_once(session, s, store, clock)
    assert by_name(r)["quick"].status is Status.UP
    farm.set_trace("master", t0 + 200)  # the next pass sees it on the master too
    clock.t = t0 + 600
    r = await poll_once(session, s, store, clock)
    quick = by_name(r)["quick"]
    assert (quick.status, quick.error, quick.lag(clock.t)) == (Status.UP, None, 0.0)


# --- probe redirects never leave the mirror's host -------------------------------------------


@dataclass
class Elsewhere:
    """An HTTP server on 127.0.0.2: another host. Every request it gets is a failure."""

    hits: list[str] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def record(request: web.Request) -> web.Response:
            self.hits.append(request.raw_path)
            return web.Response(text=trace_c(time.time()).decode())

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.2", 0)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only through the server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def elsewhere() -> AsyncIterator[Elsewhere]:
    e = Elsewhere()
    await e.start()
    yield e
    await e.stop()


def redirector_to(
    location: str, status: int = 302, only: str | None = None
) -> Callable[[web.Request, str], Awaitable[web.StreamResponse]]:
    """A farm behaviour: redirect (every path, or only `only`) to `location`."""

    async def behave(request: web.Request, rest: str) -> web.StreamResponse:
        if only is None or rest == only:
            return web.Response(status=status, headers={"Location": location})
        if rest == MASTER_TRACE:
            return web.Response(body=trace_c(time.time() - HOUR))
        if rest.endswith("/"):
            return web.Response(text="<html>index</html>")
        return web.Response(status=404)

    return behave


async def test_probe_redirects_never_follow_to_another_host(
    farm: Farm, elsewhere: Elsewhere, session: aiohttp.ClientSession
) -> None:
    other = f"127.0.0.2:{elsewhere.port}"
    me = farm.base.split("/")[2]  # 127.0.0.1:<port>
    farm.set_trace("master", time.time() - HOUR)
    tricks = {
        "plain": (f"http://{other}/x", 302),
        "permanent": (f"http://{other}/x", 301),
        "see-other": (f"http://{other}/x", 303),
        "temporary": (f"http://{other}/x", 307),
        "permanent-308": (f"http://{other}/x", 308),
        "scheme-relative": (f"//{other}/x", 302),
        "userinfo": (f"http://{me}@{other}/x", 302),
        "backslash": (f"http://{other}\\@{me}/x", 302),
        "upper-case": (f"HTTP://{other}/x", 302),
        "localhost-by-name": (f"http://localhost:{elsewhere.port}/x", 302),
    }
    mirrors = {}
    for name, (location, status) in tricks.items():
        farm.behaviours[name] = redirector_to(location, status)
        mirrors[name] = farm.url(name)
    # The first request is fine, a later one of the round redirects away: none is followed.
    for name, path in (("own-away", OWN), ("flag-away", FLAG), ("index-away", "releases/")):
        farm.behaviours[name] = redirector_to(f"http://{other}/x", only=path)
        mirrors[name] = farm.url(name)
    # Redirects within the mirror's own host are followed, a few times.
    farm.set_trace("real", time.time() - HOUR)
    farm.behaviours["moved"] = redirector_to(farm.url("real") + MASTER_TRACE, only=MASTER_TRACE)
    farm.behaviours["loop"] = redirector_to(farm.url("loop") + MASTER_TRACE)
    mirrors |= {"moved": farm.url("moved"), "loop": farm.url("loop")}

    s = settings_for(farm.url("master"), mirrors, extra="failures_before_down = 1")
    r = await poll_once(session, s, MemoryStore())
    states = by_name(r)
    assert elsewhere.hits == []  # the other host never heard from the poller
    for name in tricks:
        assert states[name].status is Status.BROKEN, (name, states[name])
    assert "redirected to another host" in (states["plain"].error or "")
    assert "redirected to another host" in (states["userinfo"].error or "")
    assert states["own-away"].status is Status.BROKEN  # its own trace went elsewhere
    assert states["flag-away"].status is Status.UP  # the sync flag is a hint: no answer, no flag
    assert states["index-away"].status is Status.UP  # coverage unknown, not followed either
    assert states["index-away"].covered == ()
    assert states["moved"].status is Status.UP
    assert states["loop"].status is Status.BROKEN
    assert "redirects" in (states["loop"].error or "")


async def test_file_check_redirects_are_not_followed_to_another_host(
    farm: Farm, elsewhere: Elsewhere
) -> None:
    """The never-a-404 HEAD: a redirect elsewhere counts as the mirror's way of serving the
    file, and the redirector does not go and ask the other host."""
    now = time.time()
    farm.behaviours["m"] = redirector_to(f"http://127.0.0.2:{elsewhere.port}/iso")
    s = settings_for(farm.url("master"), {"m": farm.url("m")})
    store = MemoryStore()
    await store.put_states([MirrorState("m", Status.UP, now, master_date=now - HOUR)])
    holder = SnapshotHolder(s.mirrors)
    await holder.refresh(store)
    router = Router(s, holder, None)
    async with open_check_session(s) as vs:
        verifier = Verifier(s, vs, holder)
        routed = router.resolve("127.0.0.1", None, None, "http", "releases/10/x.iso")
        assert await verifier.target(routed) == farm.url("m") + "releases/10/x.iso"
        await verifier.close()
    assert verifier.heads == 1
    assert elsewhere.hits == []


# --- endless and enormous answers cost at most the timeout and the body cap ------------------


ZEROS = gzip.compress(b"\0" * (8 << 20), compresslevel=9)  # one member: 8 MiB of zeros
TRACE_LINE = b"Mon Jan  1 00:00:00 UTC 2024\n"
LIMIT_BYTES = 1 << 30  # a loop that would still be writing after 1 GiB stops by itself
LIMIT_SECONDS = 60.0


@dataclass
class Served:
    """What one connection of `Endless` did: bytes written, and when the client hung up."""

    started: float
    sent: int = 0
    hung_up: float | None = None


class Endless:
    """A loopback HTTP server whose answers never finish, chosen by the path's first segment.

    stream: 200, no length, junk as fast as the client takes it. gigabytes: the same with a
    Content-Length of 10 GiB. chunked: endless chunks. gzip: Content-Encoding gzip, a bomb of
    gzip members (8 MiB of zeros each). trickle: one byte every 50 ms. headers: header lines
    every 50 ms, never the blank line. longline: one header line that never ends. silent:
    reads the request, answers nothing. Each loop also ends by itself after 1 GiB or 60 s.
    """

    def __init__(self) -> None:
        self.served: dict[str, list[Served]] = {}
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def url(self, kind: str) -> str:
        return f"http://127.0.0.1:{self.port}/{kind}/"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            line = await reader.readline()
            while (await reader.readline()).strip():
                pass
            kind = line.split(b" ")[1].decode().strip("/").split("/")[0]
            record = Served(time.monotonic())
            self.served.setdefault(kind, []).append(record)
            watcher = asyncio.create_task(self._watch_eof(reader, record))
            try:
                await self._answer(kind, writer, record)
            except (ConnectionError, OSError):
                if record.hung_up is None:
                    record.hung_up = time.monotonic()
            finally:
                watcher.cancel()
        finally:
            writer.close()
            self._tasks.discard(task)

    @staticmethod
    async def _watch_eof(reader: asyncio.StreamReader, record: Served) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while await reader.read(4096):
                pass
        if record.hung_up is None:
            record.hung_up = time.monotonic()

    async def _answer(self, kind: str, writer: asyncio.StreamWriter, record: Served) -> None:
        async def send(data: bytes) -> None:
            writer.write(data)
            await writer.drain()
            record.sent += len(data)

        ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
        junk = TRACE_LINE + b"j" * 65536
        deadline = record.started + LIMIT_SECONDS
        if kind == "stream":
            await send(ok + b"Connection: close\r\n\r\n")
        elif kind == "gigabytes":
            await send(ok + b"Content-Length: 10737418240\r\n\r\n")
        elif kind == "chunked":
            await send(ok + b"Transfer-Encoding: chunked\r\n\r\n")
            junk = b"%x\r\n%s\r\n" % (len(junk), junk)
        elif kind == "gzip":
            await send(ok + b"Content-Encoding: gzip\r\nConnection: close\r\n\r\n")
            junk = ZEROS
        elif kind in ("trickle", "headers", "longline", "silent"):
            if kind == "trickle":
                await send(ok + b"Content-Length: 1000000\r\n\r\n" + TRACE_LINE)
            elif kind in ("headers", "longline"):
                await send(b"HTTP/1.1 200 OK\r\n" + (b"X-Pad: " if kind == "longline" else b""))
            step = {"trickle": b"x", "headers": b"X-Pad: x\r\n", "longline": b"x" * 1024}
            while record.hung_up is None and time.monotonic() < deadline:
                if kind != "silent":
                    await send(step[kind])
                await asyncio.sleep(0.05)
            return
        while record.sent < LIMIT_BYTES and time.monotonic() < deadline:
            await send(junk)


@pytest.fixture
async def endless() -> AsyncIterator[Endless]:
    e = Endless()
    await e.start()
    yield e
    await e.stop()


ENDLESS = ("stream", "gigabytes", "chunked", "gzip", "trickle", "headers", "longline", "silent")
TIMEOUT = 1.0
# Socket buffers on both ends of a loopback connection hold a few MiB the poller never reads.
IN_FLIGHT = 16 << 20


@pytest.mark.parametrize("kind", ENDLESS)
async def test_an_endless_answer_costs_at_most_the_timeout_and_the_body_cap(
    endless: Endless, kind: str
) -> None:
    s = settings_for("http://127.0.0.1:9/master/", {}, timeout=f"{TIMEOUT:g}s")
    started = time.monotonic()
    async with open_session(s.probe_timeout) as session:
        with pytest.raises(ProbeError) as caught:
            await fetch(session, endless.url(kind) + MASTER_TRACE, timeout=TIMEOUT)
    took = time.monotonic() - started
    # A bound, not a benchmark: the poller gave up by its deadline (plus scheduling on a
    # busy machine), where the server would have gone on for 60 s or a gigabyte.
    assert took < TIMEOUT + 2.0, took
    if kind in ("stream", "gigabytes", "chunked", "gzip"):
        assert caught.value.kind is Status.BROKEN
        assert f"exceeds {MAX_BODY} bytes" in str(caught.value)
    elif kind == "longline":
        assert caught.value.kind is Status.DOWN  # the client refuses the header line
    else:
        assert caught.value.kind is Status.DOWN
        assert "timed out" in str(caught.value)
    (record,) = endless.served[kind]
    assert record.sent < IN_FLIGHT, record.sent
    # The poller hung up: the server noticed within moments of the deadline.
    deadline = time.monotonic() + 5
    while record.hung_up is None:
        assert time.monotonic() < deadline, f"{kind}: the poller kept the connection open"
        await asyncio.sleep(0.02)
    assert record.hung_up - record.started < TIMEOUT + 2.0


async def test_a_pass_with_endless_mirrors_is_bounded(
    farm: Farm, endless: Endless, session: aiohttp.ClientSession
) -> None:
    now = time.time()
    farm.set_trace("master", now - HOUR)
    farm.set_trace("honest", now - HOUR)
    farm.put("honest", OWN, trace_c(now - HOUR + 60))  # found under its URL's host: no search
    mirrors = {"honest": farm.url("honest")} | {kind: endless.url(kind) for kind in ENDLESS}
    s = settings_for(farm.url("master"), mirrors, timeout=f"{TIMEOUT:g}s")
    async with open_session(s.probe_timeout) as probe:
        started = time.monotonic()
        r = await poll_once(probe, s, MemoryStore())
        took = time.monotonic() - started
    states = by_name(r)
    # Probed side by side, each costing one request and at most one timeout.
    assert took < TIMEOUT + 3.0, took
    assert states["honest"].status is Status.UP
    for kind in ENDLESS:
        assert states[kind].status in (Status.DOWN, Status.BROKEN), kind
        assert len(endless.served[kind]) == 1, kind
        assert endless.served[kind][0].sent < IN_FLIGHT
    assert r.requests == 1 + 7 + len(ENDLESS)  # the honest one: trace, own, flag, 4 subtrees


async def test_the_repodata_pass_reads_a_trickled_repomd_whole_and_caps_a_huge_one(
    farm: Farm, endless: Endless, session: aiohttp.ClientSession
) -> None:
    """A repomd.xml that arrives in pieces is hashed whole (a hash of the first piece would be
    a false mismatch); one that never ends is cut at the cap, within the timeout."""
    body = b"<repomd>" + b"r" * 16000 + b"</repomd>\n"

    async def pieces(request: web.Request, rest: str) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = len(body)
        await resp.prepare(request)
        for i in range(0, len(body), 4000):
            await resp.write(body[i : i + 4000])
            await asyncio.sleep(0.05)
        return resp

    farm.behaviours["slow"] = pieces
    got = await get_repomd(session, farm.url("slow") + "repodata/repomd.xml", TIMEOUT * 5)
    assert got.body == body
    started = time.monotonic()
    with pytest.raises(ProbeError, match=f"exceeds {MAX_REPOMD} bytes"):
        await get_repomd(session, endless.url("gigabytes") + "repodata/repomd.xml", TIMEOUT * 5)
    assert time.monotonic() - started < TIMEOUT * 5 + 2.0
    farm.behaviours["away"] = redirector_to("http://127.0.0.2:9/repomd.xml")
    with pytest.raises(ProbeError, match="another host"):
        await get_repomd(session, farm.url("away") + "repodata/repomd.xml", TIMEOUT)
