"""The one outbound HTTP client: every request the redirector makes to a mirror or the master.

The poller, the per-file check, the repodata pass, the sync reader and `check-mirror` all GET or
HEAD through `fetch`, on a session from `open_session`. So there is one redirect rule (a redirect
is followed only to the same scheme, host and port), one error type (`ProbeError`, whose `kind`
says DOWN or BROKEN), one body cap and one total deadline per request.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp
from yarl import URL

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


async def fetch(
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
    path, percent-escapes and all), not re-quoted. `address`: connect to this IP address
    instead of resolving the URL's host (to check one address family); the Host header and the
    name TLS checks stay the URL's.
    """
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
        raise ProbeError(f"timed out after {timeout:g} s") from e
    except aiohttp.ClientSSLError as e:
        raise ProbeError(f"TLS error: {e}") from e
    except aiohttp.ClientConnectorError as e:
        raise ProbeError(f"cannot connect: {e.os_error.strerror or e}") from e
    except (aiohttp.ClientError, OSError, ValueError) as e:
        raise ProbeError(f"{type(e).__name__}: {e}"[:300]) from e
