"""The front door's fast path: plain downloads answered without aiohttp's request machinery.

Nearly every request the redirector gets is a GET or HEAD of a file under the tree, with no
body, no query and a handful of headers, answered with a 302 and nothing else. `FrontProtocol`
reads those straight off the connection and answers them through the same `Redirects` the
aiohttp handler uses: the same decision, per-file check, metrics, statistics, headers and
access log line. Everything else (another path or method, a query, a Metalink, a body, an
`Expect`, an `Upgrade`, a header line over the limits, bytes the strict grammar below does not
admit, anything that raises) is handed to aiohttp: the connection, with every byte not yet
answered, becomes an ordinary aiohttp connection from that request on. aiohttp stays the judge
of every request that is not plainly well formed, and answers its 400s, 404s and 405s.

One connection answers in order: pipelined requests are answered in one write, and a request
that must wait (a HEAD of the per-file check) holds the ones behind it. A connection idle, or
sending a request slowly, for longer than the keep-alive timeout is closed, as aiohttp would.

`FrontSite` listens with this protocol for an `AppRunner`; `serve` runs an app with it until
SIGINT or SIGTERM, as `web.run_app` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any, cast

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.web_runner import GracefulExit

from redirector.core.paths import BadPath
from redirector.core.topology import ACCEL_HEADER
from redirector.poll.filecheck import heads_waited, start_request
from redirector.router import Routed
from redirector.web import accesslog, download, keys
from redirector.web.metrics import REDIRECT_HANDLER
from redirector.web.redirect import REDIRECTS, Answer, Redirects

log = logging.getLogger(__name__)

KEEPALIVE_TIMEOUT = 75.0  # as web.run_app's
SWEEP_EVERY = 5.0  # seconds between looks for idle connections
MAX_HEAD = 16384  # a request head longer than this goes to aiohttp (which applies the limits)
MAX_LINE = 8190  # limits.HTTP_LIMITS: longer lines are aiohttp's to refuse
MAX_HEADERS = 64
MAX_BUFFER = 65536  # unanswered bytes held while a request waits, before reading pauses

# The request head the fast path takes: GET or HEAD of a tree path without a query, HTTP/1.x,
# header lines `token ":" value` with visible ASCII, space, tab or non-ASCII in the value.
# Possessive repeats: what each repeat stops at is never part of it, so nothing is given back.
_HEAD = re.compile(
    rb"(GET|HEAD) (/(?:pub/)?smeserver(?:/[!->@-~]*+)?) HTTP/1\.([01])\r\n"
    rb"((?:[!#$%&'*+\-.^_`|~0-9A-Za-z]++:[\t -~\x80-\xff]*+\r\n)*+)\r\n"
)
# The header lines the fast path reads (each follows the LF of the line before it), found in
# one scan: the others are only checked by `_HEAD`, never looked at one by one in Python.
# Content-Length, Transfer-Encoding, Expect and Upgrade make a request more than a plain
# download: aiohttp's to answer.
_FIELDS = re.compile(
    rb"\n(x-forwarded-for|x-forwarded-proto|accept|connection|host|user-agent"
    rb"|content-length|transfer-encoding|expect|upgrade):([^\r]*)\r",
    re.IGNORECASE,
)
_NOT_PLAIN = frozenset((b"content-length", b"transfer-encoding", b"expect", b"upgrade"))
_REASONS = {302: b"Found"}


class _Clock:
    """The Date header, formatted once a second."""

    __slots__ = ("_line", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def date_line(self, now: float) -> bytes:
        second = int(now)
        if second != self._second:
            self._second = second
            self._line = b"Date: " + formatdate(second, usegmt=True).encode() + b"\r\n"
        return self._line


_TAIL = f"Server: {SERVER_SOFTWARE}\r\nX-Content-Type-Options: nosniff\r\n\r\n".encode()


def serialize(
    answer: Answer, version: bytes, date_line: bytes, close: bool, alive10: bool
) -> bytes:
    """The bytes of an answer without a body, as aiohttp would write them."""
    status = answer.status
    reason = answer.reason
    start = _STARTS.get((version, status)) if reason is None else None
    if start is None:
        said = reason.encode() if reason else _REASONS.get(status, b"")
        start = b"HTTP/1.%s %d %s\r\n" % (version, status, said)
    headers = answer.headers
    # Header values are URLs and digests the redirector built; a CR or LF in one would split
    # the answer, so it is refused here whatever its origin (`in` is a memchr: cheap).
    for name, value in headers.items():
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            raise ValueError("a header carries a line break")
    lines = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    end = _ENDS[close, alive10 and not close]
    return b"".join((start, lines.encode("latin-1"), end, date_line, _TAIL))


# What follows the answer's own headers: the length, and the connection's fate when it is not
# the version's default; then the Date line and `_TAIL`.
_ENDS = {
    (False, False): b"Content-Length: 0\r\n",
    (False, True): b"Content-Length: 0\r\nConnection: keep-alive\r\n",
    (True, False): b"Content-Length: 0\r\nConnection: close\r\n",
}
_STARTS = {
    (version, status): b"HTTP/1.%s %d %s\r\n" % (version, status, reason)
    for version in (b"0", b"1")
    for status, reason in _REASONS.items()
}


class _Request:
    """One plain download's request, as the fast path read it."""

    __slots__ = (
        "accept",
        "close",
        "forwarded_for",
        "forwarded_proto",
        "host",
        "method",
        "started",
        "target",
        "user_agent",
        "version",
    )

    def __init__(self, method: str, target: str, version: bytes, started: float) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.started = started
        self.accept: str | None = None
        self.forwarded_for: str | None = None
        self.forwarded_proto: str | None = None
        self.host = ""
        self.user_agent = ""
        self.close = version == b"0"  # HTTP/1.0 closes unless the client asks otherwise


def parse(buf: bytes, start: int, end: int, started: float) -> _Request | None:
    """The request whose head is `buf[start:end]` (the blank line included), or None when it
    is not a plain download the fast path answers."""
    m = _HEAD.match(buf, start, end)
    if m is None or m.end() != end:
        return None
    method, target, version, block = m.groups()
    if len(target) > MAX_LINE - 16:
        return None
    req = _Request(method.decode(), target.decode(), version, started)
    if not block:
        return req
    if len(block) > 4 * MAX_HEADERS and block.count(b"\n") > MAX_HEADERS:  # 4: "a:\r\n"
        return None
    if len(block) > MAX_LINE and max(map(len, block.split(b"\r\n"))) > MAX_LINE:
        return None
    forwarded_for: list[str] = []
    forwarded_proto: list[str] = []
    # From the request line's LF on: every header line the pattern looks for follows an LF.
    for name, value in _FIELDS.findall(buf, m.start(4) - 1, end):
        lower = name.lower()
        if lower in _NOT_PLAIN:
            return None
        text = value.strip(b" \t").decode("utf-8", "surrogateescape")
        if lower == b"x-forwarded-for":
            forwarded_for.append(text)
        elif lower == b"host":
            req.host = text
        elif lower == b"user-agent":
            req.user_agent = text
        elif lower == b"x-forwarded-proto":
            forwarded_proto.append(text)
        elif lower == b"accept":
            req.accept = text if req.accept is None else f"{req.accept}, {text}"
        else:  # connection
            tokens = {t.strip().lower() for t in text.split(",")}
            if "upgrade" in tokens:
                return None
            if "close" in tokens:
                req.close = True
            elif "keep-alive" in tokens and version == b"0":
                req.close = False
    if forwarded_for:
        req.forwarded_for = ", ".join(forwarded_for)
    if forwarded_proto:
        req.forwarded_proto = ", ".join(forwarded_proto)  # every line, as clientip.joined
    return req


class Front:
    """What every fast connection shares: the app's redirects, aiohttp's server for the
    requests handed to it, the open connections and the access log's format."""

    def __init__(self, app: web.Application, server: web.Server) -> None:
        self.app = app
        self.server = server
        self.redirects: Redirects = app[REDIRECTS]
        self.live = app[keys.LIVE]
        self.metrics = app[keys.METRICS]
        self.connections: set[FrontProtocol] = set()
        self.clock = _Clock()
        self.tick = 0  # sweeps so far: a connection idle for too many of them is closed
        self.closing = False

    def protocol(self) -> FrontProtocol:
        return FrontProtocol(self)

    def sweep(self, limit: int) -> None:
        """Close the connections that have not completed a request for `limit` sweeps."""
        self.tick += 1
        for conn in list(self.connections):
            if self.tick - conn.tick > limit and conn.pending is None:
                conn.close()

    def close_idle(self) -> None:
        """On shutdown: close every connection not waiting for an answer; those that are
        close once it is written."""
        self.closing = True
        for conn in list(self.connections):
            if conn.pending is None:
                conn.close()

    def plan(self, req: _Request, peer: str | None) -> tuple[Routed, float] | None:
        """The decision for a plain download, or None when it is not one (aiohttp answers)."""
        r = self.redirects
        raw_path = req.target
        try:
            path = r.router.tree_path(raw_path)
        except BadPath:
            return None  # aiohttp's handler refuses it, with the same words
        if path is None:
            return None
        _, want, _ = download.asked(r.facts, path, "", req.accept)
        if want:
            return None
        return r.decide(peer, req.forwarded_for, req.forwarded_proto, "http", path)

    def finish(
        self, req: _Request, routed: Routed, seconds: float, target: str, heads: int
    ) -> bytes:
        """Count, log and serialize one redirect."""
        answer = self.redirects.answer(req.method, routed, seconds, target, heads=heads)
        now = time.time()
        data = serialize(
            answer,
            req.version,
            self.clock.date_line(now),
            req.close or self.closing,
            req.version == b"0",
        )
        total = time.perf_counter() - req.started
        self.metrics.answered_as(REDIRECT_HANDLER, answer.status, total)  # tree paths only
        fmt = self.live.current.access_log
        if fmt != "off":
            self._log(fmt, req, routed, seconds, answer, target, now, total)
        return data

    def _log(
        self,
        fmt: str,
        req: _Request,
        routed: Routed,
        seconds: float,
        answer: Answer,
        target: str,
        now: float,
        total: float,
    ) -> None:
        try:
            accesslog.AccessLogger.seen_format = fmt
            loc = routed.location
            client = routed.client
            if fmt != "json":
                line = accesslog.text_line(
                    now, client.text or None, None if loc is None else loc.country,
                    client.scheme, req.host, req.method, req.target, answer.status,
                    accesslog.mirror_of(routed, target), seconds, total, req.user_agent,
                )  # fmt: skip
                accesslog.SINK.write(line)
                return
            entry = accesslog.AccessEntry(
                time=now,
                client=client.text or None,
                country=None if loc is None else loc.country,
                scheme=client.scheme,
                host=req.host,
                method=req.method,
                path=req.target,
                status=answer.status,
                mirror=accesslog.mirror_of(routed, target),
                target=target if ACCEL_HEADER not in answer.headers else None,
                decision_seconds=seconds,
                seconds=total,
                user_agent=req.user_agent,
            )
            accesslog.SINK.write(accesslog.format_json(entry))
        except Exception:  # a log line must never turn into a failed request
            log.exception("cannot write the access log line")


class FrontProtocol(asyncio.Protocol):
    """One connection: plain downloads answered here, the rest handed to aiohttp."""

    __slots__ = (
        "buf",
        "closed",
        "front",
        "paused",
        "peer",
        "pending",
        "tick",
        "transport",
    )

    def __init__(self, front: Front) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.peer: str | None = None
        self.pending: asyncio.Future[None] | None = None
        self.tick = front.tick
        self.closed = False
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) and peer else None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.front.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.front.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        if self.pending is not None:
            if len(self.buf) > MAX_BUFFER and not self.paused:
                self.paused = True
                self.transport.pause_reading()  # type: ignore[union-attr]
            return
        self._answer()

    def eof_received(self) -> bool | None:
        return True if self.pending is not None else None  # close once the answer is out

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def _answer(self) -> None:
        """Answer every complete request in the buffer, in order, in one write."""
        buf, front = self.buf, self.front
        out: list[bytes] = []
        start = 0
        try:
            while True:
                end = buf.find(b"\r\n\r\n", start)
                if end < 0:
                    if len(buf) - start > MAX_HEAD or buf.find(b"\n\n", start) >= 0:
                        self._hand_over(out, buf[start:])
                        return
                    break
                end += 4
                req = parse(buf, start, end, time.perf_counter())
                planned = None if req is None else front.plan(req, self.peer)
                if req is None or planned is None:
                    self._hand_over(out, buf[start:])
                    return
                routed, seconds = planned
                settled = front.redirects.settled(routed)
                if settled is None:  # a HEAD may be needed: this request waits, and the rest
                    self._write(out)
                    self.buf = buf[end:]
                    self._wait(req, routed, seconds, buf[start:end])
                    return
                out.append(front.finish(req, settled[0], seconds, settled[1], 0))
                start = end
                self.tick = front.tick
                if req.close or front.closing:
                    self._write(out)
                    self.buf = b""
                    self.close()
                    return
        except Exception:  # never a traceback for the client: aiohttp answers it instead
            log.debug("fast path declined a request", exc_info=True)
            self._hand_over(out, buf[start:])
            return
        self._write(out)
        self.buf = buf[start:] if start < len(buf) else b""

    def _write(self, out: list[bytes]) -> None:
        if out and not self.closed:
            assert self.transport is not None
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def _wait(self, req: _Request, routed: Routed, seconds: float, head: bytes) -> None:
        """Answer `req` (whose bytes are `head`) after the per-file check's HEADs; what
        follows it waits in the buffer until then."""
        front = self.front

        async def settle() -> None:
            heads = start_request()
            try:
                settled = await front.redirects.settle(routed)
                data = front.finish(req, settled[0], seconds, settled[1], heads_waited(heads))
            except Exception:
                log.debug("fast path declined a request", exc_info=True)
                self.pending = None
                rest, self.buf = self.buf, b""
                self._hand_over([], head + rest)
                return
            self.pending = None
            if self.closed:
                return
            assert self.transport is not None
            self.transport.write(data)
            self.tick = front.tick
            if req.close or front.closing:
                self.close()
                return
            if self.paused:
                self.paused = False
                self.transport.resume_reading()
            if self.buf:
                self._answer()

        self.pending = asyncio.ensure_future(settle())

    def _hand_over(self, out: list[bytes], rest: bytes) -> None:
        """The connection becomes aiohttp's, starting with `rest`, what is not answered."""
        self._write(out)
        self.buf = b""
        if self.closed:
            return
        transport = self.transport
        assert transport is not None
        self.front.connections.discard(self)
        self.closed = True
        handler = self.front.server()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self.paused:
            transport.resume_reading()
        if rest:
            handler.data_received(rest)


class FrontSite(web.BaseSite):
    """A TCP site of an `AppRunner` whose connections start on the fast path."""

    __slots__ = ("_front", "_host", "_keepalive", "_port", "_reuse_port", "_sweeper")

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        reuse_port: bool = False,
        backlog: int = 1024,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._reuse_port = host, port, reuse_port
        self._keepalive = keepalive_timeout
        self._front: Front | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def front(self) -> Front:
        assert self._front is not None, "not started"
        return self._front

    async def start(self) -> None:
        await super().start()
        runner = self._runner
        assert isinstance(runner, web.AppRunner)
        assert runner.server is not None
        self._front = Front(runner.app, runner.server)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._front.protocol,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
            reuse_port=self._reuse_port or None,
        )
        self._sweeper = asyncio.create_task(self._sweep())

    async def _sweep(self) -> None:
        every = min(SWEEP_EVERY, self._keepalive / 2)
        limit = max(1, round(self._keepalive / every))
        while True:
            await asyncio.sleep(every)
            if self._front is not None:
                self._front.sweep(limit)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await super().stop()
        if self._front is not None:
            self._front.close_idle()

    @property
    def port(self) -> int:
        """The port listened on (the one the OS chose for port 0)."""
        server = self._server
        if isinstance(server, asyncio.Server) and server.sockets:
            port: int = server.sockets[0].getsockname()[1]
            return port
        return self._port


def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    reuse_port: bool,
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
    print_fn: Callable[[str], None],
    runner_kwargs: dict[str, Any],
) -> None:
    """Run `app` on a `FrontSite` until SIGINT or SIGTERM, then shut it down as
    `web.run_app` does (the app's cleanup contexts run)."""

    async def main() -> None:
        runner = web.AppRunner(
            app, handle_signals=True, keepalive_timeout=KEEPALIVE_TIMEOUT, **runner_kwargs
        )
        await runner.setup()
        try:
            site = FrontSite(runner, host, port, reuse_port=reuse_port)
            await site.start()
            print_fn(f"======== Running on {site.name} ========\n(Press CTRL+C to quit)")
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with (
        asyncio.Runner(loop_factory=loop_factory) as runner,
        contextlib.suppress(GracefulExit, KeyboardInterrupt),
    ):
        try:
            runner.run(main())
        finally:
            accesslog.close()  # the lines of the last loop turn
