"""Request size limits, and malformed requests logged in one line instead of a traceback each.

aiohttp's HTTP parser enforces the limits before any handler runs: a longer request line, a
longer header line or more headers get a `400 Bad Request` and the connection is closed. The
values (documented in README.md and SECURITY.md):

- `max_line_size` 8190 bytes: the request line (method, path and query) and the longest path a
  mirror link may carry. Mirror paths are far shorter; `paths.MAX_PATH` (4096) refuses more
  below the tree.
- `max_field_size` 8190 bytes: one header line, name and value. nginx's default is 8 kB too,
  so nothing nginx forwards is refused here.
- `max_headers` 64: browsers send about 15, a proxy chain adds a few.

aiohttp logs every malformed request (other than a non-HTTP first line) at ERROR with the
parser's traceback. Anyone can send them, as fast as they like: a traceback per request is a
way to flood the journal. `QuietBadRequests` turns those records into one DEBUG line without
the traceback; the access log still has the request and its 400. A client that sends
`Expect: 100-continue` and hangs up before the interim answer is written makes aiohttp log the
failed write the same way (a reset connection, at ERROR, with its traceback): one DEBUG line too.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

HTTP_LIMITS: dict[str, Any] = {
    "max_line_size": 8190,
    "max_field_size": 8190,
    "max_headers": 64,
}

SERVER_LOGGER = "aiohttp.server"


class QuietBadRequests(logging.Filter):
    """A filter for aiohttp's server logger: a client's malformed request is not our error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        malformed = isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 400) < 500
        # A peer gone mid-answer is the client's doing, never a fault of ours.
        if exc is not None and (malformed or isinstance(exc, ConnectionResetError)):
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.msg = f"{record.msg}: %s"
            record.args = (*(record.args if isinstance(record.args, tuple) else ()), _short(exc))
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def _short(exc: BaseException) -> str:
    """The parser's message on one line, cut: it quotes the client's bytes."""
    message = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    text = " ".join(str(message or type(exc).__name__).split())
    return text[:200]


def quiet_bad_requests() -> None:
    """Install `QuietBadRequests` on aiohttp's server logger, once per process."""
    logger = logging.getLogger(SERVER_LOGGER)
    if not any(isinstance(f, QuietBadRequests) for f in logger.filters):
        logger.addFilter(QuietBadRequests())
