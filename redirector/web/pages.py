"""Operator views over HTTP: /mirrors, /mirrors.json, /metrics, /health/ready, ?mirrorlist.

Thin aiohttp adapters over the pure `status`, `explain` and `metrics` modules, plus the
per-request bookkeeping the redirect handler calls (`record`) and the wiring of the metrics,
download statistics and their flusher (`setup`, `stats_ctx`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from redirector.config.settings import Settings
from redirector.core.models import Status, SyncInfo
from redirector.core.synctree import build_tree, master_aliases
from redirector.poll.poller import PassResult
from redirector.router import Routed
from redirector.stats import StatsReader, Tally, flush, flush_forever
from redirector.store.base import StoreError, SyncStore
from redirector.views import explain, status
from redirector.views import https as https_view
from redirector.views.status import Section
from redirector.views.synctree import render_html
from redirector.web import keys
from redirector.web.link import sent_to
from redirector.web.metrics import Metrics, multiprocess_dir

log = logging.getLogger(__name__)

NO_STORE = "no-store"
JSON_TYPE = "application/json"


def setup(app: web.Application, settings: Settings) -> None:
    """Metrics, the download tally, status-page sections, the stats flusher and the routes.

    Called last in `create_app`: `stats_ctx` must start after the store and the snapshot.
    """
    app[keys.METRICS] = Metrics((m.name for m in settings.mirrors), multiprocess_dir())
    app[keys.TALLY] = Tally()

    async def https() -> Section:
        return https_section(app)

    providers: list[status.SectionProvider] = [https]
    app[keys.STATUS_SECTIONS] = providers
    app.cleanup_ctx.append(stats_ctx)
    add_routes(app)


async def stats_ctx(app: web.Application) -> AsyncIterator[None]:
    """Flush download counts every few seconds, once more on shutdown; watch the snapshot.

    Runs after the store and snapshot contexts (it needs both).
    """
    store, tally = app[keys.STORE], app[keys.TALLY]
    app[keys.STATS_READER] = StatsReader(store)
    live = app[keys.LIVE]
    app[keys.METRICS].watch(app[keys.HOLDER], lambda: live.current.max_lag)
    task = asyncio.create_task(flush_forever(tally, store))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    try:
        await flush(tally, store, time.time())
    except StoreError as e:
        log.warning("download statistics lost on shutdown (%d): %s", tally.pending, e)


def record(request: web.Request, routed: Routed, seconds: float, target: str) -> None:
    """Count one redirect to `target` for /metrics and, for a GET, the download statistics."""
    rank = sent_to(routed, target)
    if rank is None:
        name = None
    elif rank == 0 and routed.chosen is not None:
        name = routed.chosen.mirror.name
    else:
        name = routed.top(rank + 1)[rank].mirror.name
    app = request.app
    app[keys.METRICS].redirected(name, seconds, https=routed.client.scheme == "https")
    if request.method == "GET":
        loc = routed.location
        app[keys.TALLY].count(name, None if loc is None else loc.country, routed.path)


def refused(request: web.Request) -> None:
    """Count one refused (4xx) request under the tree."""
    metrics = request.app.get(keys.METRICS)
    if metrics is not None:
        metrics.refused()


def _json(body: Mapping[str, Any] | str, status_code: int = 200, **headers: str) -> web.Response:
    text = body if isinstance(body, str) else json.dumps(body, indent=2) + "\n"
    return web.Response(
        status=status_code,
        text=text,
        content_type=JSON_TYPE,
        headers={"Cache-Control": NO_STORE, **headers},
    )


def mirrorlist(request: web.Request, routed: Routed) -> web.Response:
    """The `?mirrorlist` view of a decision: HTML, or JSON when asked (see `explain`)."""
    app = request.app
    router = app[keys.ROUTER]
    note = app.get(keys.GEO_WARNING) if router.geo is None else None
    expl = explain.explain(routed, router.holder.current.candidates, router.policy, geo_note=note)
    _, query = request.raw_path.split("?", 1)
    if explain.wants_json(query, request.headers.get("Accept")):
        return _json(explain.dumps(expl), Vary="Accept")
    return web.Response(
        text=explain.render_html(expl),
        content_type="text/html",
        headers={"Cache-Control": NO_STORE, "Vary": "Accept"},
    )


async def _report(request: web.Request) -> status.Report:
    app = request.app
    settings = app[keys.LIVE].current  # read per request: a reload replaces it
    holder = app[keys.HOLDER]
    downloads = await app[keys.STATS_READER].get()
    return status.build(
        holder.current,
        downloads,
        now=time.time(),
        max_lag=settings.max_lag,
        poll_interval=settings.poll_interval,
        master_url=settings.master,
        store_kind=app[keys.STORE].kind,
        store_error=holder.store_error,
    )


async def mirrors(request: web.Request) -> web.Response:
    """The status page, or its JSON for clients that ask for application/json."""
    report = await _report(request)
    if explain.prefers_json(request.headers.get("Accept")):
        return _json(status.dumps(status.to_json(report)), Vary="Accept")
    sections: list[status.Section] = []
    for provider in request.app[keys.STATUS_SECTIONS]:
        try:
            section = await provider()
        except Exception:  # one broken section must not take the page down
            log.exception("status page section failed")
            continue
        if section is not None:
            sections.append(section)
    resp = web.Response(
        text=status.render_html(report, sections),
        content_type="text/html",
        headers={"Cache-Control": "no-cache", "Vary": "Accept"},
    )
    resp.enable_compression()  # the inline maps make it ~50 kB; gzip takes it to a third
    return resp


async def mirrors_json(request: web.Request) -> web.Response:
    return _json(status.dumps(status.to_json(await _report(request))))


async def schema(request: web.Request) -> web.Response:
    return web.Response(
        text=status.schema_text(),
        content_type="application/schema+json",
        headers={"Cache-Control": "public, max-age=3600"},
    )


async def ready(request: web.Request) -> web.Response:
    """Readiness for load balancers: 200 (ready or degraded) or 503, with the reasons."""
    app = request.app
    settings = app[keys.LIVE].current
    store_error = None
    try:
        await app[keys.STORE].ping()
    except StoreError as e:
        store_error = str(e)
    r = status.readiness(
        app[keys.HOLDER].current,
        now=time.time(),
        max_lag=settings.max_lag,
        poll_interval=settings.poll_interval,
        store_error=store_error,
    )
    return _json(
        {"status": r.status, "ready": r.ready, "checks": r.checks}, 200 if r.ready else 503
    )


async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[keys.METRICS].render(request.headers.get("Accept"))
    return web.Response(
        body=body, headers={"Content-Type": content_type, "Cache-Control": NO_STORE}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/mirrors", mirrors, allow_head=True)
    app.router.add_get("/mirrors/", mirrors, allow_head=True)
    app.router.add_get("/mirrors.json", mirrors_json, allow_head=True)
    app.router.add_get(status.SCHEMA_PATH, schema, allow_head=True)
    app.router.add_get("/health/ready", ready, allow_head=True)
    app.router.add_get("/metrics", metrics, allow_head=True)


def observe_pass(app: web.Application, result: PassResult) -> None:
    """Poller metrics for one pass: its duration, and the probes that failed in it."""
    failed = (
        s.name
        for s in result.states
        # Backed-off mirrors keep their old state: only count probes made in this pass.
        if s.status in (Status.DOWN, Status.BROKEN) and s.checked_at >= result.started
    )
    app[keys.METRICS].observe_pass(result.duration, result.master.error, failed)


def https_section(app: web.Application) -> Section:
    """The status page's https balance, from the current snapshot and selection policy."""
    router = app[keys.ROUTER]
    balance = https_view.balance(
        app[keys.HOLDER].current.candidates,
        time.time(),
        router.policy,
        app[keys.LIVE].current.https_policy,
    )
    return Section("https", "Where https clients go", https_view.render_html(balance))


async def tree_section(app: web.Application) -> Section:
    """The status page's sync tree, from the store's sync info and the current snapshot."""
    settings = app[keys.LIVE].current
    st = app[keys.STORE]
    infos: dict[str, SyncInfo] = {}
    note = ""
    if isinstance(st, SyncStore):
        try:
            infos = await st.load_sync()
        except StoreError as e:
            note = f"<p><small>Sync info unavailable ({e}); drawn from the config.</small></p>"
    snap = app[keys.HOLDER].current
    states = {c.mirror.name: c.state for c in snap.candidates if c.state is not None}
    tree = build_tree(
        settings.mirrors,
        infos,
        states,
        master_label=urlsplit(settings.master).hostname or "master",
        aliases=master_aliases(settings.master, settings.master_trace),
        now=time.time(),
    )
    return Section(
        "sync-tree", "Sync tree", note + render_html(tree, email_mode=settings.status_email)
    )
