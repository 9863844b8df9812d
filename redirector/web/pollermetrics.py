"""The `redirector poll` process's own /metrics: its passes, failed probes and what it found.

In the split deployment the web nodes run with ``--no-poll`` and export no poller series; this
small app, started by cli/poll.py when `poller_metrics_listen` is set, is where Prometheus
scrapes them. It serves the same families a polling web node would (metrics.py), read from
the poller's own counters and from the state it last wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from redirector.config.live import LiveSettings
from redirector.poll.poller import PassResult
from redirector.reload import Reloader
from redirector.snapshot import SnapshotHolder
from redirector.store.base import Store
from redirector.web.metrics import Metrics

METRICS = web.AppKey("poller_metrics", Metrics)
NO_STORE = "no-store"


class PollerMetrics:
    """The poller's metrics and the snapshot they report: record each pass with `observe`."""

    def __init__(self, live: LiveSettings, store: Store, reloader: Reloader | None) -> None:
        settings = live.current
        self.metrics = Metrics((m.name for m in settings.mirrors), None, poller=True)
        self.store = store
        self.holder = SnapshotHolder(settings.mirrors)
        self.metrics.watch(
            self.holder,
            lambda: live.current.max_lag,
            poll_interval=lambda: live.current.poll_interval,
            reloader=lambda: reloader,
        )

    async def observe(self, result: PassResult) -> None:
        """After a written pass: count it, and read back what it wrote for the state gauges."""
        self.metrics.observe_result(result)
        await self.holder.refresh(self.store)


async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[METRICS].render(request.headers.get("Accept"))
    return web.Response(
        body=body, headers={"Content-Type": content_type, "Cache-Control": NO_STORE}
    )


def make_app(metrics_: Metrics) -> web.Application:
    app = web.Application()
    app[METRICS] = metrics_
    app.router.add_get("/metrics", metrics, allow_head=True)
    return app


@contextlib.asynccontextmanager
async def serving(metrics_: Metrics, host: str, port: int) -> AsyncIterator[int]:
    """Serve `/metrics` on (host, port) while the block runs; yields the bound port (0: any)."""
    runner = web.AppRunner(make_app(metrics_), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = port
        server = site._server  # aiohttp exposes the bound port only through the server
        if isinstance(server, asyncio.Server) and server.sockets:
            bound = server.sockets[0].getsockname()[1]
        yield bound
    finally:
        await runner.cleanup()
