"""A real HTTP server on loopback that impersonates the master and any number of mirrors.

Each mirror lives under its own path prefix (`/<name>/`), so one server stands in for a
thousand hosts. Behaviours (hang, slow, 500, redirect loops, ...) are set per mirror.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

MASTER_TRACE = "project/trace/mirror.contribs.org"

Behaviour = Callable[[web.Request, str], Awaitable[web.StreamResponse]]


def date_u(ts: float) -> str:
    """`date -u` in the POSIX locale, the first line of every ftpsync trace."""
    return time.strftime("%a %b %e %H:%M:%S UTC %Y", time.gmtime(ts))


def trace_c(ts: float, host: str = "mirror.test", upstream: str = "mirror.contribs.org") -> bytes:
    """A format C (2016-) ftpsync trace dated `ts`."""
    rfc = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(ts))
    return (
        f"{date_u(ts)}\nDate: {rfc}\nDate-Started: {rfc}\nArchive serial: 2026112501\n"
        f"Used ftpsync version: 20180513\nCreator: ftpsync 20180513\n"
        f"Running on host: {host}\nUpstream-mirror: {upstream}\n"
    ).encode()


@dataclass
class Farm:
    """Files by '<name>/<path>'; a behaviour per name overrides plain file serving."""

    files: dict[str, bytes] = field(default_factory=dict)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    # (method, '<name>/<path>') of every request, to count HEADs apart from GETs.
    requests: list[tuple[str, str]] = field(default_factory=list)
    # '<name>/<prefix>': everything below answers 404, its directory index included.
    missing: set[str] = field(default_factory=set)
    base: str = ""
    _runner: web.AppRunner | None = None

    def url(self, name: str) -> str:
        return f"{self.base}{name}/"

    def put(self, name: str, path: str, body: bytes) -> None:
        self.files[f"{name}/{path}"] = body

    def set_trace(self, name: str, ts: float) -> None:
        """Make `name` hold the master state dated `ts`."""
        self.put(name, MASTER_TRACE, trace_c(ts))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"]
        self.hits.append(tail)
        self.requests.append((request.method, tail))
        name, _, rest = tail.partition("/")
        behaviour = self.behaviours.get(name)
        if behaviour is not None:
            return await behaviour(request, rest)
        if any(tail.startswith(prefix) for prefix in self.missing):
            return web.Response(status=404, text="not found")
        body = self.files.get(tail)
        if body is None and tail.endswith("/"):
            # Every directory has an index, as on a mirror with autoindex; see `missing`.
            return web.Response(text=f"<html><title>Index of /{tail}</title></html>")
        if body is None:
            return web.Response(status=404, text="not found")
        return web.Response(body=body, content_type="text/plain")

    async def start(self, host: str = "127.0.0.1") -> str:
        """Listen on `host` ("::1" for a mirror only reachable over IPv6); returns the base URL."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, 0)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only through the server
        assert isinstance(server, asyncio.Server)
        port = server.sockets[0].getsockname()[1]
        self.base = f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
        return self.base

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def hang(request: web.Request, rest: str) -> web.StreamResponse:
    """Accept and never answer."""
    await asyncio.sleep(3600)
    raise AssertionError("unreachable")


async def error_500(request: web.Request, rest: str) -> web.StreamResponse:
    return web.Response(status=500, text="internal error")


async def slow_drip(request: web.Request, rest: str) -> web.StreamResponse:
    """Answer 200 at once, then one byte a second for a minute."""
    resp = web.StreamResponse()
    await resp.prepare(request)
    try:
        for _ in range(60):
            await resp.write(b"x")
            await asyncio.sleep(1)
    except ConnectionError:  # the client gave up, as it should
        pass
    return resp


async def huge_body(request: web.Request, rest: str) -> web.StreamResponse:
    """200 with a 10 MB body of junk, streamed."""
    resp = web.StreamResponse()
    resp.content_length = 10 * 1024 * 1024
    await resp.prepare(request)
    chunk = b"Mon Jan  1 00:00:00 UTC 2024\n" + b"j" * 65507
    try:
        for _ in range(160):
            await resp.write(chunk)
    except ConnectionError:  # the client stopped reading at its cap, as it should
        pass
    return resp


async def raw_get(port: int, target: str, headers: str = "", method: str = "GET") -> bytes:
    """Send a request line exactly as written (no client-side normalisation); the raw answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n".encode(
                "latin-1"
            )
        )
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])
