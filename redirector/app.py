"""Wiring: builds the aiohttp application and opens and closes every resource in cleanup_ctx."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from . import keys
from . import web as handlers
from .geo import GeoError, GeoReader, find_database
from .poller import run_poller
from .router import Router
from .settings import Settings
from .snapshot import SnapshotHolder, refresh_forever
from .store import Store, open_store

log = logging.getLogger(__name__)

USER_AGENT = "redirector (SME Server mirror poller)"


def open_geo(settings: Settings) -> tuple[GeoReader | None, str | None]:
    """The GeoIP reader the settings ask for, or None with the warning to show for it."""
    path = settings.geoip_db
    if path is None and settings.geoip_search:
        path = find_database()
    if path is None:
        return None, "no GeoIP database found: location-blind, mirrors spread by weight only"
    try:
        return GeoReader.open(path), None
    except GeoError as e:
        return None, f"GeoIP database unusable, location-blind: {e}"


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(
    settings: Settings,
    *,
    poll: bool = True,
    store: Store | None = None,
    geo: GeoReader | None = None,
    use_geo_settings: bool = True,
) -> web.Application:
    """The redirector app. `store` and `geo` may be injected (tests); otherwise settings decide.

    `poll=False` serves from the store alone, for processes where another one polls.
    """
    app = web.Application(middlewares=[handlers.errors])
    app[keys.SETTINGS] = settings

    async def geo_ctx(app: web.Application) -> AsyncIterator[None]:
        reader, warning = (
            (geo, None) if geo is not None or not use_geo_settings else open_geo(settings)
        )
        if reader is None and warning is None:
            warning = "no GeoIP database: location-blind"
        if warning:
            log.warning("%s", warning)
            app[keys.GEO_WARNING] = warning
        else:
            assert reader is not None
            log.info("GeoIP: %s", reader.describe())
        app[keys.GEO] = reader
        yield
        if reader is not None and geo is None:
            reader.close()

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        st = (
            store
            if store is not None
            else open_store(settings.redis_url, prefix=settings.redis_prefix)
        )
        app[keys.STORE] = st
        yield
        if store is None:
            await st.close()

    async def snapshot_ctx(app: web.Application) -> AsyncIterator[None]:
        holder = SnapshotHolder(settings.mirrors)
        app[keys.HOLDER] = holder
        await holder.refresh(app[keys.STORE])
        app[keys.ROUTER] = Router(settings, holder, app[keys.GEO])
        task = asyncio.create_task(
            refresh_forever(holder, app[keys.STORE], settings.snapshot_interval)
        )
        yield
        await _stop(task)

    async def poller_ctx(app: web.Application) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(
            total=settings.probe_timeout, sock_connect=min(5.0, settings.probe_timeout)
        )
        async with aiohttp.ClientSession(
            timeout=timeout, headers={"User-Agent": USER_AGENT}, auto_decompress=False
        ) as session:
            app[keys.SESSION] = session
            holder, st = app[keys.HOLDER], app[keys.STORE]

            async def after_pass(_: object) -> None:
                await holder.refresh(st)  # this process sees its own pass at once

            task = asyncio.create_task(run_poller(session, settings, st, on_pass=after_pass))
            yield
            await _stop(task)

    app.cleanup_ctx.append(geo_ctx)
    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(snapshot_ctx)
    if poll:
        app.cleanup_ctx.append(poller_ctx)
    handlers.add_routes(app)
    return app


def run(settings: Settings, *, poll: bool = True, print_fn: Callable[[str], None] = print) -> None:
    """Serve until interrupted."""
    app = create_app(settings, poll=poll)
    web.run_app(
        app,
        host=settings.listen_host,
        port=settings.listen_port,
        print=lambda msg: print_fn(msg) if msg else None,
        access_log=None,
    )
