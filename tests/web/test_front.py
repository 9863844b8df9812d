"""The fast path (web/front.py): plain downloads answered off the connection, the rest by aiohttp.

Every test talks to a real listening socket. The same app is served at once by a `FrontSite`
and by aiohttp's own `TCPSite`, so the fast path's answers can be held against aiohttp's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from redirector.config.settings import parse_settings
from redirector.geo import GeoReader
from redirector.web import front
from redirector.web.app import create_app
from tests.farm import Farm
from tests.support.world import (
    FRONT,
    NL6_CLIENT,
    NL_CLIENT,
    REPOMD,
    US_CLIENT,
    fresh_store,
    near_far,
)


@dataclass
class Served:
    fast: int  # the FrontSite's port
    plain: int  # aiohttp's TCPSite's port, same app
    site: front.FrontSite


async def serve(app: web.Application, keepalive: float = front.KEEPALIVE_TIMEOUT) -> Served:
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = front.FrontSite(runner, "127.0.0.1", 0, keepalive_timeout=keepalive)
    await site.start()
    plain = web.TCPSite(runner, "127.0.0.1", 0)
    await plain.start()
    server = plain._server  # aiohttp exposes the bound port only through the server
    assert isinstance(server, asyncio.Server)
    return Served(site.port, server.sockets[0].getsockname()[1], site)


@pytest.fixture
async def served(geo: GeoReader) -> AsyncIterator[Served]:
    settings = FRONT.config()
    app = create_app(settings, poll=False, store=await fresh_store(FRONT.names), geo=geo)
    s = await serve(app)
    yield s
    await s.site._runner.cleanup()


async def exchange(port: int, data: bytes, *, until_close: bool = True) -> bytes:
    """Send `data` as it is; what comes back until the server closes (or 2 s of silence)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        out = b""
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 2 if until_close else 0.5)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        writer.close()


def answers(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The answers in `raw`, in order: status, headers (names lower-cased), body."""
    out = []
    while raw:
        head, _, raw = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        size = int(headers.get("content-length", "0"))
        out.append((status, headers, raw[:size]))
        raw = raw[size:]
    return out


def get(path: str, *, close: bool = True, extra: str = "", method: str = "GET") -> bytes:
    conn = "Connection: close\r\n" if close else ""
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n{conn}{extra}\r\n".encode("latin-1")


FAST_REQUESTS = [
    get(f"/smeserver/{REPOMD}", extra=f"X-Forwarded-For: {NL_CLIENT}\r\n"),
    get(f"/smeserver/{REPOMD}", extra=f"X-Forwarded-For: {US_CLIENT}\r\n", method="HEAD"),
    get("/pub/smeserver/contribs/a%20b.rpm", extra=f"X-Forwarded-For: {NL6_CLIENT}\r\n"),
    get("/smeserver", extra=f"X-Forwarded-For: {NL_CLIENT}\r\nX-Forwarded-Proto: https\r\n"),
    # Two header lines: every line counts (the proxy's own comes last).
    get(
        "/smeserver/releases/10/x.iso",
        extra=f"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: {US_CLIENT}\r\n",
    ),
    b"GET /smeserver/a HTTP/1.0\r\n\r\n",
    b"GET /smeserver/a HTTP/1.0\r\nConnection: keep-alive\r\nUser-Agent: wget\r\n\r\n",
]


@pytest.mark.parametrize("request_bytes", FAST_REQUESTS, ids=range(len(FAST_REQUESTS)))
async def test_the_fast_answer_is_aiohttps_answer(served: Served, request_bytes: bytes) -> None:
    fast = answers(await exchange(served.fast, request_bytes, until_close=False))
    plain = answers(await exchange(served.plain, request_bytes, until_close=False))
    assert len(fast) == len(plain) == 1
    (fs, fh, fb), (ps, ph, pb) = fast[0], plain[0]
    assert fs == ps == 302
    assert fb == pb == b""
    for h in (fh, ph):
        h.pop("date")
        h.pop("connection", None)  # aiohttp leaves it out where HTTP implies it
        h.setdefault("content-length", "0")  # aiohttp leaves it out on a closing HTTP/1.0
    assert fh == ph


async def test_pipelined_requests_are_answered_in_order_through_a_hand_over(
    served: Served,
) -> None:
    xff = f"X-Forwarded-For: {NL_CLIENT}\r\n"
    data = (
        get("/smeserver/a", close=False, extra=xff)
        + get("/smeserver/b", close=False, extra=xff)
        + get("/health", close=False)  # aiohttp's from here on
        + get("/smeserver/c", extra=xff)
    )
    got = answers(await exchange(served.fast, data))
    assert [s for s, _, _ in got] == [302, 302, 200, 302]
    assert [h.get("location", "")[-2:] for _, h, _ in got] == ["/a", "/b", "", "/c"]


async def test_a_request_in_single_bytes_is_answered(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.fast)
    for byte in get("/smeserver/a"):
        writer.write(bytes([byte]))
        await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    ((status, headers, _),) = answers(raw)
    assert status == 302
    assert headers["location"].endswith(".example/sme/a")


async def test_http10_closes_unless_asked_to_keep_alive(served: Served) -> None:
    started = time.monotonic()
    raw = await exchange(served.fast, b"GET /smeserver/a HTTP/1.0\r\n\r\n")
    assert time.monotonic() - started < 1.5  # closed by the server, not by the timeout
    assert raw.startswith(b"HTTP/1.0 302 Found\r\n")
    assert b"Connection: close\r\n" in raw
    raw = await exchange(
        served.fast,
        b"GET /smeserver/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        until_close=False,
    )
    assert b"Connection: keep-alive\r\n" in raw


HANDED_OVER = {
    "not under the tree": get("/nothing"),
    "a method": get("/smeserver/a", method="POST"),
    "a bad path": get("/smeserver/%2e%2e/etc"),
    "a query": get("/smeserver/a?mirrorlist"),
    "a body": get("/smeserver/a", extra="Content-Length: 3\r\n") + b"abc",
    "Expect": get("/smeserver/a", extra="Expect: 100-continue\r\n"),
    "bare LF": b"GET /smeserver/a HTTP/1.1\nHost: x\n\n",
    "no colon": get("/smeserver/a", extra="Broken header\r\n"),
    "folded": get("/smeserver/a", extra="X-A: b\r\n c\r\n"),
    "space before colon": get("/smeserver/a", extra="Host : y\r\n"),
    "a long header": get("/smeserver/a", extra="X-Long: " + "a" * 9000 + "\r\n"),
    "many headers": get("/smeserver/a", extra="".join(f"X-{i}: 1\r\n" for i in range(70))),
    "a control byte": get("/smeserver/a\x01"),
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "Upgrade": get("/smeserver/a", extra="Connection: Upgrade\r\nUpgrade: websocket\r\n"),
}


@pytest.mark.parametrize("name", list(HANDED_OVER))
async def test_what_is_not_a_plain_download_is_aiohttps_to_answer(
    served: Served, name: str
) -> None:
    data = HANDED_OVER[name]
    fast = answers(await exchange(served.fast, data))
    plain = answers(await exchange(served.plain, data))
    assert fast, name
    assert [s for s, _, _ in fast] == [s for s, _, _ in plain]
    assert all(s < 500 for s, _, _ in fast)


async def test_an_idle_connection_is_closed_after_the_keepalive_timeout(geo: GeoReader) -> None:
    app = create_app(FRONT.config(), poll=False, store=await fresh_store(FRONT.names), geo=geo)
    s = await serve(app, keepalive=0.3)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.fast)
        writer.write(get("/smeserver/a", close=False))
        await writer.drain()
        started = time.monotonic()
        raw = await asyncio.wait_for(reader.read(), 5)  # the answer, then the close
        assert raw.startswith(b"HTTP/1.1 302")
        assert time.monotonic() - started < 3
        writer.close()
        # One that sends half a request and stops is closed too.
        reader, writer = await asyncio.open_connection("127.0.0.1", s.fast)
        writer.write(b"GET /smeserver/a HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        await s.site._runner.cleanup()


async def test_shutdown_closes_idle_fast_connections(geo: GeoReader) -> None:
    app = create_app(FRONT.config(), poll=False, store=await fresh_store(FRONT.names), geo=geo)
    s = await serve(app)
    reader, writer = await asyncio.open_connection("127.0.0.1", s.fast)
    writer.write(get("/smeserver/a", close=False))
    await writer.drain()
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 302")
    await asyncio.wait_for(s.site._runner.cleanup(), 5)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_a_request_waiting_for_a_head_holds_the_ones_behind_it(
    farm: Farm, geo: GeoReader, tmp_path: Path
) -> None:
    now = time.time()
    for name in ("master", "near", "far"):
        farm.set_trace(name, now - 3600)
    farm.put("near", "releases/10/x.iso", b"iso")
    settings = parse_settings(near_far(farm, verify_timeout="1s"), "front.toml")
    app = create_app(settings, geo=geo)
    s = await serve(app)
    try:
        deadline = time.monotonic() + 10
        while b'"fresh": 2' not in await exchange(s.fast, get("/health")):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        xff = f"X-Forwarded-For: {NL_CLIENT}\r\n"
        heads = sum(1 for m, _ in farm.requests if m == "HEAD")
        data = (
            get("/smeserver/releases/10/x.iso", close=False, extra=xff)  # a HEAD to "near"
            + get("/smeserver/releases/10/smeos/repodata/repomd.xml", close=False, extra=xff)
            + get("/smeserver/releases/10/y.iso", extra=xff)  # on neither: the master
        )
        got = answers(await exchange(s.fast, data))
        assert [h["location"] for _, h, _ in got] == [
            farm.url("near") + "releases/10/x.iso",
            farm.url("near") + "releases/10/smeos/repodata/repomd.xml",
            farm.url("master") + "releases/10/y.iso",
        ]
        assert sum(1 for m, _ in farm.requests if m == "HEAD") > heads
    finally:
        await s.site._runner.cleanup()


def test_serialize_refuses_a_line_break_in_a_header() -> None:
    from redirector.web.redirect import Answer

    with pytest.raises(ValueError, match="line break"):
        front.serialize(
            Answer(302, {"Location": "http://a/\r\nSet-Cookie: x"}), b"1", b"", False, False
        )
