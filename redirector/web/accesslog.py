"""The access log: one line per request, as text or JSON, with where the client was sent and why.

The line carries the client as the redirector resolved it (after trusted proxies), its country,
the request, the chosen mirror ("master" when none was eligible), how long the decision took and
how long the whole request took. `access_log` in the config picks "text", "json" (one JSON object
per line) or "off", and is read per request, so a reload switches it. Lines go to stderr (the
journal, under systemd) or, with `access_log_path`, to a file that logrotate may move away
(it is reopened when it has been moved).

`AccessEntry`, `format_text` and `format_json` are pure; `AccessLogger` adapts aiohttp to them,
and front.py's fast path builds its entries the same way. Lines are written by `Sink`: every
line of one event-loop turn in one write (a redirect must not cost a system call of its own),
to stderr or to the file, which is reopened when logrotate has moved it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from redirector.config.settings import Settings
from redirector.core.clientip import joined
from redirector.core.humanize import rfc3339
from redirector.router import Routed, Router
from redirector.web import keys

log = logging.getLogger(__name__)

LOGGER_NAME = "redirector.access"
FORMATS = ("text", "json", "off")
MAX_FIELD = 1024  # a path or user agent longer than this is cut: a log line is not storage
MAX_RANKED = 16  # how far down the ranking a target moved on by the per-file check is looked for


# Not frozen, as router.Routed: one is made per request. Treat it as immutable all the same.
@dataclass(slots=True)
class AccessEntry:
    """What one request's log line says."""

    time: float  # unix time the response was sent
    client: str | None  # the resolved client address; None when unknown
    country: str | None
    scheme: str  # as the client used it, after trusted proxies
    host: str
    method: str
    path: str  # as sent, percent-encoding kept, query included
    status: int
    mirror: str | None  # the chosen mirror, "master" on fallback, None when nothing was routed
    target: str | None  # where the client was sent (the Location), None when not redirected
    decision_seconds: float | None  # the selection alone
    seconds: float  # the whole request, as aiohttp measured it
    user_agent: str
    # A mirror list or metalink: the mirrors it named, best first (`mirror` is the first).
    listed: tuple[str, ...] | None = None


def _clean(value: str) -> str:
    """A field for the text line: quotes, backslashes and control characters escaped, cut."""
    if _plain(value):
        return value
    if len(value) > MAX_FIELD:
        value = value[:MAX_FIELD] + "..."
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}")
    return "".join(out)


class _Stamps:
    """`rfc3339(t, ms=True)`, with the part before the milliseconds made once a second and
    the whole stamp once a millisecond (a busy worker logs many lines in each)."""

    __slots__ = ("_ms", "_second", "_stamp", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""
        self._ms = -1
        self._stamp = ""

    def __call__(self, ts: float) -> str:
        ms = int(ts * 1000)
        if ms == self._ms:
            return self._stamp
        whole, frac = divmod(ms, 1000)
        if whole != self._second:
            self._second, self._text = whole, rfc3339(float(whole), ms=True)[:-5]
        self._ms, self._stamp = ms, f"{self._text}.{frac:03d}Z"
        return self._stamp


_stamp = _Stamps()


def format_text(e: AccessEntry) -> str:
    """One line, space separated, quoted where a client chose the text:

    `TIME CLIENT COUNTRY SCHEME HOST "METHOD PATH" STATUS MIRROR DECISION TOTAL "USER-AGENT"`
    with `-` for what is unknown.
    """
    return text_line(
        e.time, e.client, e.country, e.scheme, e.host, e.method, e.path, e.status, e.mirror,
        e.decision_seconds, e.seconds, e.user_agent,
    )  # fmt: skip


def text_line(
    time: float,
    client: str | None,
    country: str | None,
    scheme: str,
    host: str,
    method: str,
    path: str,
    status: int,
    mirror: str | None,
    decision: float | None,
    seconds: float,
    agent: str,
) -> str:
    """`format_text` of an entry with these fields, without making the entry: the fast path
    (web.front) logs every redirect this way."""
    # `_plain` before `_clean`: the values nearly always need no escaping, and the smaller
    # call costs measurably less here (5 % of a redirect's instructions, under callgrind).
    return (
        f"{_stamp(time)} {client or '-'} {country or '-'} {scheme} "
        f"{(host if _plain(host) else _clean(host)) or '-'}"
        f' "{method if _plain(method) else _clean(method)}'
        f' {path if _plain(path) else _clean(path)}" {status} {mirror or "-"}'
        f" {'-' if decision is None else f'{round(decision * 1e6)}us'}"
        f' {seconds * 1000:.2f}ms "{agent if _plain(agent) else _clean(agent)}"'
    )


def _plain(value: str) -> bool:
    """Whether `_clean` leaves `value` as it is."""
    return (
        len(value) <= MAX_FIELD and value.isprintable() and '"' not in value and "\\" not in value
    )


def format_json(e: AccessEntry) -> str:
    """One JSON object on one line; keys as in AccessEntry, times in ISO 8601 and microseconds."""
    doc: dict[str, Any] = {
        "time": _stamp(e.time),
        "client": e.client,
        "country": e.country,
        "scheme": e.scheme,
        "host": e.host[:MAX_FIELD],
        "method": e.method[:MAX_FIELD],
        "path": e.path[:MAX_FIELD],
        "status": e.status,
        "mirror": e.mirror,
        "target": None if e.target is None else e.target[:MAX_FIELD],
        "decision_us": None if e.decision_seconds is None else round(e.decision_seconds * 1e6, 1),
        "duration_ms": round(e.seconds * 1000, 3),
        "user_agent": e.user_agent[:MAX_FIELD],
    }
    if e.listed is not None:
        doc["listed"] = list(e.listed)
    line = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    # Undecodable bytes in a header arrive as lone surrogates (surrogateescape), which a UTF-8
    # file refuses: written as JSON's own \udcXX escapes instead, the line stays valid JSON.
    return line.encode("utf-8", "backslashreplace").decode("utf-8")


def entry_for(
    request: web.BaseRequest, response: web.StreamResponse, seconds: float
) -> AccessEntry:
    """What the handlers left on the request, or what the router says of the peer."""
    routed: Routed | None = request.get(keys.ROUTED)
    target: str | None = request.get(keys.TARGET)
    router = router_of(request)
    client_ip: str | None = None
    scheme = request.scheme
    country: str | None = None
    mirror: str | None = None
    if routed is not None:
        client_ip = routed.client.text or None
        scheme = routed.client.scheme
        country = routed.location.country if routed.location is not None else None
        mirror = mirror_of(routed, target)
    elif router is not None:
        client = router.client(
            request.remote,
            joined(request.headers.getall("X-Forwarded-For", ())),
            joined(request.headers.getall("X-Forwarded-Proto", ())),
            request.scheme,
        )
        client_ip = None if client.ip is None else str(client.ip)
        scheme = client.scheme
    else:
        client_ip = request.remote
    listed: tuple[str, ...] | None = request.get(keys.LISTED)
    if listed is not None:  # a list names mirrors, it sends nobody: the first named, if any
        mirror = listed[0] if listed else None
    return AccessEntry(
        time=time.time(),
        client=client_ip,
        country=country,
        scheme=scheme,
        host=request.headers.get("Host", ""),
        method=request.method,
        path=request.raw_path,
        status=response.status,
        mirror=mirror,
        target=target,
        decision_seconds=request.get(keys.DECISION_SECONDS),
        seconds=seconds,
        user_agent=request.headers.get("User-Agent", ""),
        listed=listed,
    )


def mirror_of(routed: Routed, target: str | None) -> str:
    """The name of the mirror `target` points into: the chosen one unless the per-file check
    moved the client on to the next (or to the master). Cheap: no full ranking is built."""
    chosen = routed.chosen
    if target is None or target == routed.target:
        return "master" if chosen is None else chosen.mirror.name
    for ranked in routed.top(MAX_RANKED):
        if target == ranked.base + routed.path:
            return ranked.mirror.name
    return "master"


def app_of(request: web.BaseRequest) -> web.Application | None:
    """The request's app; None for a request aiohttp refused before routing (a malformed one),
    which has no app to give: its `app` asserts, or fails under -O."""
    if not isinstance(request, web.Request):
        return None
    try:
        return request.app
    except (AssertionError, AttributeError):
        return None


def router_of(request: web.BaseRequest) -> Router | None:
    """The app's router, or None (see `app_of`)."""
    app = app_of(request)
    return None if app is None else app.get(keys.ROUTER)


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access-log hook: builds the entry and writes it in the configured format."""

    # The live config's access_log as of the last routed request, for the requests aiohttp
    # refuses before routing (no app to ask). Shared: aiohttp makes one logger per connection.
    seen_format = "text"

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        app = app_of(request)
        live = None if app is None else app.get(keys.LIVE)
        if live is not None:
            AccessLogger.seen_format = live.current.access_log
        fmt = AccessLogger.seen_format
        if fmt == "off":
            return
        try:
            entry = entry_for(request, response, time)
            SINK.write(format_json(entry) if fmt == "json" else format_text(entry))
        except Exception:  # a log line must never turn into a failed request
            log.exception("cannot write the access log line")


class Sink:
    """Where the lines go: stderr, or a file reopened once it has been moved (logrotate).

    `write` queues a line; the queue is written in one go when the event loop next gets to
    it (or at once outside a loop, and at `close`). A write that fails is logged once per
    minute, and the lines are dropped: a full disk must not stop the redirects."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self._fd: int | None = None
        self._lines: list[str] = []
        self._scheduled = False
        self._complained = 0.0

    def open(self, path: Path | None) -> None:
        self.close()
        self.path = path

    def write(self, line: str) -> None:
        self._lines.append(line)
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        lines, self._lines = self._lines, []
        if not lines:
            return
        data = ("\n".join(lines) + "\n").encode("utf-8", "backslashreplace")
        try:
            fd = self._target()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as e:
            now = time.monotonic()
            if now - self._complained > 60:
                self._complained = now
                log.warning("access log lines lost: %s", e)
            self._drop()

    def _target(self) -> int:
        if self.path is None:
            return 2  # stderr: the journal under systemd
        fd = self._fd
        if fd is not None:
            try:
                st, now = os.fstat(fd), os.stat(self.path)
                if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                    return fd
            except FileNotFoundError:
                pass
            self._drop()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return self._fd

    def _drop(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        self.flush()
        self._drop()


SINK = Sink()  # one per process: every transport and every connection writes here


def close() -> None:
    """Write what is queued and close the access log's file, if any."""
    SINK.close()


def setup(settings: Settings) -> logging.Logger:
    """The access log as configured (`Sink`); idempotent. The logger returned is what
    aiohttp needs to call `AccessLogger` at all: the lines go to `SINK`, not through it."""
    AccessLogger.seen_format = settings.access_log
    SINK.open(settings.access_log_path)
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def runner_kwargs(settings: Settings) -> dict[str, Any]:
    """What web.run_app or web.AppRunner needs to write this access log."""
    return {"access_log": setup(settings), "access_log_class": AccessLogger}
