"""Small levers an attacker had: each reproduced against a real server on loopback first.

A reset `Expect: 100-continue` request, store text in the status page, a redirect to another
port of a mirror's host, repeated X-Forwarded-* lines, and a text error read as HTML.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient

from redirector.config.settings import parse_settings
from redirector.core.models import MirrorState, Status, SyncInfo
from redirector.poll.filecheck import Verifier, open_check_session
from redirector.poll.poller import poll_once
from redirector.poll.probe import open_session
from redirector.router import Router
from redirector.snapshot import SnapshotHolder
from redirector.store.codec import encode_sync
from redirector.store.memory import MemoryStore
from redirector.store.redis import RedisStore
from redirector.web.app import create_app
from redirector.web.limits import SERVER_LOGGER, quiet_bad_requests
from tests.farm import Farm, raw_get, status_of
from tests.mmdb_build import CityRecord
from tests.support.world import FRONT, NL_CLIENT, US_CLIENT, city_db, fresh_store, mirror_url

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]
Client = TestClient[web.Request, web.Application]


def geo_db(path: Path) -> Path:
    return city_db(
        path,
        {
            "145.100.0.0/16": CityRecord("NL", "EU", 52.37, 4.90),
            "152.2.0.0/16": CityRecord("US", "NA", 35.91, -79.05),
        },
    )


async def front(
    aiohttp_client: ClientFactory, tmp_path: Path, store: MemoryStore | RedisStore | None = None
) -> Client:
    """The app as deployed behind a proxy on loopback, serving fresh nl and us mirrors."""
    extra = f'geoip_db = "{geo_db(tmp_path / "city.mmdb")}"\naccess_log = "off"'
    settings = parse_settings(FRONT.config_text(["nl", "us"], extra=extra), "levers.toml")
    st = await fresh_store(["nl", "us"], store if store is not None else MemoryStore())
    return await aiohttp_client(create_app(settings, poll=False, store=st))


# --- Expect: 100-continue and a hang-up -------------------------------------------------------


async def reset_after_expect(port: int) -> None:
    """Ask for a 100 Continue, then hang up at once with a reset (SO_LINGER 0)."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"PUT /smeserver/releases/10/x.iso HTTP/1.1\r\nHost: x\r\n"
        b"Expect: 100-continue\r\nContent-Length: 1000\r\n\r\n"
    )
    await writer.drain()
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


async def test_a_reset_expect_continue_request_logs_no_traceback(
    aiohttp_client: ClientFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    quiet_bad_requests()
    client = await front(aiohttp_client, tmp_path)
    port = client.server.port
    assert port is not None
    with caplog.at_level(logging.DEBUG, logger=SERVER_LOGGER):
        for _ in range(20):
            await reset_after_expect(port)
        # The server is still fine, and has handled (and logged) every hang-up by now.
        await asyncio.sleep(0.3)
        assert status_of(await raw_get(port, "/smeserver/releases/10/x.iso")) == 302
    mine = [r for r in caplog.records if r.name == SERVER_LOGGER]
    assert mine, "the hang-ups were not seen: the reproduction did not reproduce"
    assert all(r.levelno == logging.DEBUG and r.exc_info is None for r in mine), [
        (r.levelname, r.getMessage()) for r in mine
    ]
    assert "Traceback" not in caplog.text
    assert all(len(r.getMessage()) < 400 for r in mine)


# --- store text in the status page --------------------------------------------------------------


async def test_store_text_in_the_sync_tree_note_is_escaped(
    aiohttp_client: ClientFactory, tmp_path: Path, redis_url: str
) -> None:
    store = RedisStore(redis_url, prefix="lever:")
    client = await front(aiohttp_client, tmp_path, store)
    # Whoever writes the store chooses a field name. The entry is dropped as unreadable (and the
    # next pass repairs it); where any text of it reaches the page, it must be escaped.
    hostile = "<img src=x onerror=alert(1)>"
    raw = aioredis.Redis.from_url(redis_url)
    try:
        await raw.hset("lever:sync", hostile, encode_sync(SyncInfo("nl", time.time(), None)))
    finally:
        await raw.aclose()
    resp = await client.get("/mirrors")
    body = await resp.text()
    assert resp.status == 200
    assert "Sync tree" in body
    assert hostile not in body
    assert "onerror=alert(1)>" not in body
    await store.close()


# --- a redirect to another port of the mirror's host -------------------------------------------


@pytest.fixture
async def other_port() -> AsyncIterator[Farm]:
    """A second server on 127.0.0.1, another port: what a mirror could aim probes at."""
    other = Farm()
    await other.start()
    yield other
    await other.stop()


async def test_a_redirect_to_another_port_is_refused_by_the_poller_and_not_followed_by_the_check(
    farm: Farm, other_port: Farm
) -> None:
    now = time.time()
    farm.set_trace("master", now - 600)
    other_port.set_trace("hop", now - 600)  # a good trace there: following would mark it UP
    other_port.put("hop", "releases/x.iso", b"iso")

    async def hop(request: web.Request, rest: str) -> web.StreamResponse:
        raise web.HTTPFound(other_port.url("hop") + rest)  # 127.0.0.1 still, another port

    farm.behaviours["hop"] = hop
    assert farm.base.split(":")[:2] == other_port.base.split(":")[:2]  # the same host
    settings = parse_settings(
        f'[redirector]\nmaster = "{farm.url("master")}"\nprobe_timeout = "1s"\n'
        f'verify_timeout = "500ms"\n\n[[mirror]]\nname = "hop"\nhttp = "{farm.url("hop")}"\n'
        'country = "NL"\nlatitude = 52.0\nlongitude = 5.0\n',
        "hop.toml",
    )
    async with open_session(settings.probe_timeout) as session:
        result = await poll_once(session, settings, MemoryStore())
    (state,) = result.states
    assert state.status is Status.BROKEN
    assert "another port" in (state.error or "")
    assert other_port.requests == []  # the poller never went there

    # The file check takes the redirect as the mirror's own way of serving (the client is sent
    # to the mirror's URL), and does not follow it either.
    holder = SnapshotHolder(settings.mirrors)
    store = MemoryStore()
    await store.put_master(result.master)
    await store.put_states(
        [MirrorState("hop", Status.UP, now, master_date=now - 600, behind_since=None)]
    )
    await holder.refresh(store)
    router = Router(settings, holder, None)
    async with open_check_session(settings) as vsession:
        verifier = Verifier(settings, vsession, holder)
        routed = router.resolve("127.0.0.1", None, None, "http", "releases/x.iso")
        assert await verifier.target(routed) == farm.url("hop") + "releases/x.iso"
        assert verifier.heads == 1
    assert ("HEAD", "hop/releases/x.iso") in farm.requests
    assert other_port.requests == []


# --- repeated X-Forwarded-For / X-Forwarded-Proto lines -----------------------------------------


async def test_a_client_cannot_pick_its_address_with_a_line_before_the_proxys(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    client = await front(aiohttp_client, tmp_path)
    port = client.server.port
    assert port is not None
    # The client (in the Netherlands) sends its own line claiming a US address; the trusted
    # proxy adds a line of its own with the real peer instead of appending to the client's.
    spoofed = f"X-Forwarded-For: {US_CLIENT}\r\nX-Forwarded-For: {NL_CLIENT}\r\n"
    answer = await raw_get(port, "/smeserver/releases/10/x.iso", spoofed)
    assert status_of(answer) == 302
    assert f"Location: {mirror_url('nl')}releases/10/x.iso".encode() in answer
    # The same for the scheme: the proxy's (last) line says http.
    protos = "X-Forwarded-Proto: https\r\nX-Forwarded-Proto: http\r\n"
    answer = await raw_get(port, "/smeserver/releases/10/x.iso", f"{spoofed}{protos}")
    assert f"Location: {mirror_url('nl')}releases/10/x.iso".encode() in answer
    # The mirror list and its JSON explanation read the same client.
    answer = await raw_get(port, "/smeserver/releases/10/x.iso?mirrorlist&json", spoofed)
    assert f'"{NL_CLIENT}"'.encode() in answer
    assert f'"{US_CLIENT}"'.encode() not in answer


# --- a text error is never read as HTML ----------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/mirrorlist/%3Cscript%3Ealert(1)%3C%2Fscript%3E",  # quotes the name it did not find
        "/smeserver/%3Cb%3E/../x",  # a 400 that says why
        "/nothing-here/<b>",  # aiohttp's own 404
        "/smeserver/releases/10/x.iso",  # and every other answer
    ],
)
async def test_every_answer_says_nosniff(
    aiohttp_client: ClientFactory, tmp_path: Path, target: str
) -> None:
    client = await front(aiohttp_client, tmp_path)
    port = client.server.port
    assert port is not None
    answer = await raw_get(port, target)
    assert b"\r\nX-Content-Type-Options: nosniff\r\n" in answer, answer[:500]
