"""The one outbound HTTP client: every request the redirector makes to a mirror or the master.

The poller, the per-file check, the repodata pass, the sync reader and `check-mirror` all GET or
HEAD through `fetch`, on a session from `open_session`. So there is one redirect rule (a redirect
is followed only to the same scheme, host and port), one error type (`ProbeError`, whose `kind`
says DOWN or BROKEN), one body cap and one total deadline per request.

An ``ftp:`` URL (a mirror published over FTP only) is fetched by a small anonymous passive FTP
client, answered the same way. The master may also be read from this machine's disk
(`master_origin = "file:///srv/..."`): `fetch` answers a ``file:`` URL from the file system
with the same `Fetched` and `ProbeError` (a missing file is a 404, its mtime the
Last-Modified), so every reader of the master works unchanged whichever origin it has.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote, urljoin, urlsplit

import aiohttp
from yarl import URL

from redirector.core.humanize import duration
from redirector.core.judge import Fault
from redirector.core.models import Status
from redirector.core.trace import parse_http_date

MAX_BODY = 65536  # a trace, a _hierarchy or a lock flag is a few hundred bytes
MAX_REDIRECTS = 3
USER_AGENT = "redirector (SME Server mirror poller)"
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class ProbeError(Exception):
    """A fetch that did not give a usable answer; `kind` is DOWN or BROKEN, str() the reason."""

    def __init__(self, reason: str, kind: Status = Status.DOWN) -> None:
        super().__init__(reason)
        self.kind = kind

    @property
    def fault(self) -> Fault:
        return Fault(self.kind, str(self))


class OffHost(ProbeError):
    """A redirect to another origin: the poller refuses it, the per-file check accepts it."""

    @property
    def fault(self) -> Fault:
        return Fault(self.kind, str(self), off_host=True)


@dataclass(frozen=True, slots=True)
class Fetched:
    status: int
    body: bytes
    last_modified: float | None
    headers: Mapping[str, str] | None = None  # the final response's headers


class Tally:
    """Requests made during one pass, to show that a pass stays bounded."""

    __slots__ = ("requests",)

    def __init__(self) -> None:
        self.requests = 0


def open_session(
    timeout: float,
    *,
    connect_timeout: float | None = None,
    headers: Mapping[str, str] | None = None,
    tls: ssl.SSLContext | bool = True,
    limit: int = 100,
) -> aiohttp.ClientSession:
    """A session for outbound probes: connect and read timeouts, no decompression (hashes and
    sizes are of the bytes as stored), cached DNS. `headers` go on every request.

    Each request also runs under its own total deadline (`fetch`), which catches a server
    dribbling one byte a second that a read timeout alone would not.
    """
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(
            total=timeout,
            sock_connect=min(5.0, timeout) if connect_timeout is None else connect_timeout,
            sock_read=timeout,
        ),
        headers={"User-Agent": USER_AGENT, **(headers or {})},
        auto_decompress=False,
        connector=aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300, ssl=tls),
    )


def _host_header(url: URL) -> str:
    """The Host header a request to `url` sends: the host, and the port unless the default."""
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    return host if url.is_default_port() else f"{host}:{url.port}"


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443, "ftp": 21}.get(parts.scheme)
    return parts.scheme, parts.hostname, port


def redirect_target(url: str, location: str) -> str:
    """Where a redirect from `url` to `location` leads, if that is still the same origin.

    Raises OffHost (BROKEN) for another scheme, host or port, ProbeError (BROKEN) for a URL that
    cannot be read. The host is read by urllib and by yarl (what aiohttp connects with): a
    Location the two read differently (a backslash, odd user info) cannot lead a probe
    elsewhere, and a port of the mirror's host that the config does not name is another origin.
    """
    scheme, host, port = _origin(url)
    try:
        target = urljoin(url, location)
        hosts = {urlsplit(target).hostname, URL(target).host}
        got = _origin(target)
    except Exception as e:  # yarl raises IndexError, not ValueError, on some authorities
        reason = f"redirected to an invalid URL: {location[:200]!r}"
        raise ProbeError(reason, Status.BROKEN) from e
    if hosts != {host}:
        raise OffHost(f"redirected to another host: {target[:200]}", Status.BROKEN)
    if got != (scheme, host, port):
        raise OffHost(f"redirected to another port or scheme: {target[:200]}", Status.BROKEN)
    return target


async def _read_capped(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The body up to `max_bytes` + 1 bytes (one more tells it is too long).

    read(n) returns what has arrived so far, not n bytes: loop until the end or the cap.
    """
    buf = bytearray()
    while len(buf) <= max_bytes:
        chunk = await resp.content.read(max_bytes + 1 - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _read_fd(fd: int, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _read_local(url: str, max_bytes: int, head: bool) -> Fetched:
    """A ``file:`` URL as an HTTP answer: 200 with up to `max_bytes` + 1 bytes, or 404."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.netloc not in ("", "localhost") or any(p == ".." for p in path.split("/")):
        raise ProbeError(f"not a local tree path: {url[:200]}", Status.BROKEN)
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer for ever
        # (a thread no timeout can stop); for a regular file it changes nothing.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError):
        return Fetched(404, b"", None, {})
    except PermissionError:
        return Fetched(403, b"", None, {})
    except OSError as e:
        raise ProbeError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # a directory, FIFO or device is no tree file
            return Fetched(404, b"", None, {})
        body = b"" if head else _read_fd(fd, max_bytes + 1)
    except OSError as e:
        raise ProbeError(f"cannot read {path}: {e.strerror or e}") from e
    finally:
        os.close(fd)
    return Fetched(200, body, st.st_mtime, {"Content-Length": str(st.st_size)})


# --- ftp:// mirrors ------------------------------------------------------------------------
# yum and librepo take ftp:// list lines, and some mirrors publish nothing else. An anonymous,
# passive, binary-mode client is all the poller needs: RETR for a trace or a repomd.xml (MDTM
# for its Last-Modified), SIZE for "is this file there", CWD for a directory.

FTP_USER = "anonymous"
FTP_PASSWORD = "redirector@"  # noqa: S105  # anonymous FTP's customary e-mail-like word, no secret
_FTP_LINE_MAX = 8192
_FTP_REPLY_LINES = 200  # a greeting of more lines than this is not a server worth waiting on


class _FtpReply:
    __slots__ = ("code", "text")

    def __init__(self, code: int, text: str) -> None:
        self.code = code
        self.text = text


async def _ftp_reply(reader: asyncio.StreamReader) -> _FtpReply:
    """One reply, multi-line ones ("123-" ... "123 ") included."""
    first = await reader.readuntil(b"\n")
    if len(first) > _FTP_LINE_MAX or len(first) < 4 or not first[:3].isdigit():
        raise ProbeError(f"not an FTP reply: {first[:80]!r}", Status.BROKEN)
    code = int(first[:3])
    text = first[4:].decode("utf-8", "replace").strip()
    if first[3:4] == b"-":
        end = first[:3] + b" "
        for _ in range(_FTP_REPLY_LINES):
            line = await reader.readuntil(b"\n")
            if line.startswith(end):
                break
        else:
            raise ProbeError("FTP reply too long", Status.BROKEN)
    return _FtpReply(code, text)


async def _ftp_command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str
) -> _FtpReply:
    writer.write(line.encode("utf-8") + b"\r\n")
    await writer.drain()
    return await _ftp_reply(reader)


def _ftp_passive_port(reply: _FtpReply) -> int:
    """The data port of a 229 (EPSV) or 227 (PASV) reply. The address a PASV reply names is
    not used: data is only ever fetched from the host the control connection went to."""
    if reply.code == 229:
        m = re.search(r"\(([^\d])\1\1(\d+)\1\)", reply.text)
        if m:
            return int(m.group(2))
    elif reply.code == 227:
        m = re.search(r"(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)", reply.text)
        if m:
            return int(m.group(5)) * 256 + int(m.group(6))
    raise ProbeError(f"FTP passive mode refused: {reply.code} {reply.text[:100]}", Status.BROKEN)


def _mdtm(text: str) -> float | None:
    m = re.fullmatch(r"(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(?:\.\d+)?", text.strip())
    if not m:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups())
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()
    except (ValueError, OverflowError):
        return None


async def _ftp_login(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    greeting = await _ftp_reply(reader)
    if greeting.code != 220:
        raise ProbeError(f"FTP server not ready: {greeting.code} {greeting.text[:100]}")
    reply = await _ftp_command(reader, writer, f"USER {FTP_USER}")
    if reply.code == 331:
        reply = await _ftp_command(reader, writer, f"PASS {FTP_PASSWORD}")
    if reply.code != 230:
        # 4xx (421: too many users) is a busy server, DOWN for now; 5xx a refusal, BROKEN.
        kind = Status.DOWN if 400 <= reply.code < 500 else Status.BROKEN
        raise ProbeError(f"FTP login refused: {reply.code} {reply.text[:100]}", kind)
    await _ftp_command(reader, writer, "TYPE I")


async def _ftp_retrieve(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, path: str, cap: int
) -> bytes | None:
    """The file's bytes (at most `cap`), None when the server says it has none (550)."""
    passive = await _ftp_command(reader, writer, "EPSV")
    if passive.code != 229:
        passive = await _ftp_command(reader, writer, "PASV")
    data_reader, data_writer = await asyncio.open_connection(host, _ftp_passive_port(passive))
    try:
        started = await _ftp_command(reader, writer, f"RETR {path}")
        if started.code == 550:
            return None
        if started.code not in (125, 150):
            raise ProbeError(f"FTP RETR failed: {started.code} {started.text[:100]}")
        buf = bytearray()
        while len(buf) < cap:
            chunk = await data_reader.read(cap - len(buf))
            if not chunk:
                break
            buf += chunk
    finally:
        data_writer.close()
    if len(buf) < cap:  # the whole file: the server confirms the transfer
        done = await _ftp_reply(reader)
        if done.code not in (226, 250):
            raise ProbeError(f"FTP transfer failed: {done.code} {done.text[:100]}")
    return bytes(buf)


async def _ftp_fetch(url: str, max_bytes: int, head: bool) -> Fetched:
    """`url` over anonymous passive FTP, answered as HTTP would: 200, 404 (550) or an error."""
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 21
    path = unquote(parts.path) or "/"
    if not host or any(c in path for c in "\r\n\0"):
        raise ProbeError(f"not an FTP URL: {url[:200]}", Status.BROKEN)
    reader, writer = await asyncio.open_connection(host, port, limit=_FTP_LINE_MAX * 2)
    try:
        await _ftp_login(reader, writer)
        if path.endswith("/"):
            reply = await _ftp_command(reader, writer, f"CWD {path}")
            return Fetched(200 if reply.code == 250 else 404, b"", None, {})
        size = await _ftp_command(reader, writer, f"SIZE {path}")
        if size.code == 550:
            return Fetched(404, b"", None, {})
        modified = await _ftp_command(reader, writer, f"MDTM {path}")
        last_modified = _mdtm(modified.text) if modified.code == 213 else None
        if head:
            if size.code != 213:
                raise ProbeError(f"FTP SIZE failed: {size.code} {size.text[:100]}", Status.BROKEN)
            return Fetched(200, b"", last_modified, {"Content-Length": size.text.strip()})
        body = await _ftp_retrieve(reader, writer, host, path, max_bytes + 1)
        if body is None:
            return Fetched(404, b"", None, {})
        return Fetched(200, body, last_modified, {})
    except asyncio.IncompleteReadError as e:
        raise ProbeError("FTP connection closed by the server") from e
    except asyncio.LimitOverrunError as e:
        raise ProbeError("FTP reply line too long", Status.BROKEN) from e
    finally:
        writer.close()


async def fetch(  # noqa: PLR0915 (one request, its redirects and every failure, in order)
    session: aiohttp.ClientSession,
    url: str,
    *,
    timeout: float,
    max_bytes: int = MAX_BODY,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    tally: Tally | None = None,
    encoded: bool = False,
    address: str | None = None,
) -> Fetched:
    """`method` `url` with a total timeout and a body cap; redirects only within the origin.

    Raises ProbeError for anything that is not an answer we can read: refused, timed out, TLS
    or DNS failure (DOWN); a redirect elsewhere (OffHost) or in a loop, a body over the cap
    (BROKEN). A HEAD reads no body. `encoded`: `url` is sent exactly as written (a client's
    path, percent-escapes and all), not re-quoted. A ``file:`` URL (the master's tree on
    disk, never a mirror: settings allow http and https only there) is read from disk.
    `address`: connect to this IP address instead of resolving the URL's host (to check one
    address family); the Host header and the name TLS checks stay the URL's.
    """
    if url.startswith("ftp:"):
        try:
            async with asyncio.timeout(timeout):
                got = await _ftp_fetch(url, max_bytes, method == "HEAD")
        except TimeoutError as e:
            raise ProbeError(f"timed out after {timeout:g} s") from e
        except OSError as e:
            raise ProbeError(f"cannot connect: {e.strerror or e}") from e
        if tally is not None:
            tally.requests += 1
        if len(got.body) > max_bytes:
            raise ProbeError(f"body exceeds {max_bytes} bytes", Status.BROKEN)
        return got
    if url.startswith("file:"):
        try:
            async with asyncio.timeout(timeout):
                got = await asyncio.to_thread(_read_local, url, max_bytes, method == "HEAD")
        except TimeoutError as e:
            raise ProbeError(f"timed out after {timeout:g} s reading {url[:200]}") from e
        if tally is not None:
            tally.requests += 1
        if len(got.body) > max_bytes:
            raise ProbeError(f"body exceeds {max_bytes} bytes", Status.BROKEN)
        return got
    try:
        async with asyncio.timeout(timeout):
            for _ in range(MAX_REDIRECTS + 1):
                if tally is not None:
                    tally.requests += 1
                target = URL(url, encoded=encoded)
                sent = headers
                tls_name: str | None = None
                if address is not None:
                    sent = {**(headers or {}), "Host": _host_header(target)}
                    tls_name = target.host if target.scheme == "https" else None
                    target = target.with_host(address)
                async with session.request(
                    method,
                    target,
                    allow_redirects=False,
                    headers=sent,
                    server_hostname=tls_name,
                ) as resp:
                    if resp.status in REDIRECTS:
                        url = redirect_target(url, resp.headers.get("Location", ""))
                        continue
                    body = b"" if method == "HEAD" else await _read_capped(resp, max_bytes)
                    if len(body) > max_bytes:
                        raise ProbeError(f"body exceeds {max_bytes} bytes", Status.BROKEN)
                    lm = resp.headers.get("Last-Modified")
                    return Fetched(
                        resp.status, body, parse_http_date(lm) if lm else None, resp.headers
                    )
            raise ProbeError(f"more than {MAX_REDIRECTS} redirects", Status.BROKEN)
    except TimeoutError as e:
        raise ProbeError(f"timed out after {duration(timeout)}") from e
    except aiohttp.ClientSSLError as e:
        raise ProbeError(f"TLS error: {e}") from e
    except aiohttp.ClientConnectorError as e:
        raise ProbeError(f"cannot connect: {e.os_error.strerror or e}") from e
    except (aiohttp.ClientError, OSError, ValueError) as e:
        raise ProbeError(f"{type(e).__name__}: {e}"[:300]) from e
