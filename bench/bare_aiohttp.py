"""The framework's ceiling: an aiohttp handler that only raises a 302, one process per worker.

Run by bench/run.py as `python bench/bare_aiohttp.py PORT` once per worker; every process binds
the port with SO_REUSEPORT, and uses uvloop when the redirector would (same event loop).
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web


def new_event_loop() -> asyncio.AbstractEventLoop:
    """As redirector.app.new_event_loop, without importing the redirector (its memory)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("http://ftp.nluug.nl/os/Linux/distr/smeserver" + request.raw_path)


def main() -> None:
    port = int(sys.argv[1])
    app = web.Application()
    app.router.add_get("/{tail:.*}", redirect)
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        reuse_port=True,
        access_log=None,
        print=None,
        loop=new_event_loop(),
    )


if __name__ == "__main__":
    main()
