"""Operator views over HTTP: /mirrors, /mirrors.json, /metrics, /health/ready, ?mirrorlist.

Thin aiohttp adapters over the pure `status`, `explain` and `metrics` modules, plus the
per-request bookkeeping the redirect handler calls (`record`) and the wiring of the metrics,
download statistics and their flusher (`setup`, `stats_ctx`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from redirector.config.settings import Settings
from redirector.core.humanize import duration, rfc3339
from redirector.core.models import SyncInfo
from redirector.core.synctree import build_tree, master_aliases
from redirector.poll.poller import PassResult
from redirector.router import Routed
from redirector.stats import StatsReader, Tally, flush, flush_forever
from redirector.store.base import StoreError, SyncStore
from redirector.views import explain, status
from redirector.views.status import Section
from redirector.views.synctree import render_html
from redirector.web import keys
from redirector.web.link import sent_to
from redirector.web.metrics import (
    REFUSED_PATH,
    SILENT_INTERVALS,
    Metrics,
    handler_of,
    multiprocess_dir,
)

log = logging.getLogger(__name__)

FLUSHER = "stats flusher"  # the supervised task name, as /health shows it
POLLER_WATCH = "poller watch"  # logs once when the poller goes quiet

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

NO_STORE = "no-store"
JSON_TYPE = "application/json"


def setup(app: web.Application, settings: Settings, *, poll: bool = True) -> None:
    """Metrics, the download tally, status-page sections, the stats flusher and the routes.

    Called last in `create_app`: `stats_ctx` must start after the store and the snapshot.
    `poll` False: no poller series (another process polls and exports them).
    """
    app[keys.METRICS] = Metrics((m.name for m in settings.mirrors), multiprocess_dir(), poller=poll)
    app[keys.TALLY] = Tally()
    app[keys.STATUS_SECTIONS] = []
    app.cleanup_ctx.append(stats_ctx)
    add_routes(app)


async def stats_ctx(app: web.Application) -> AsyncIterator[None]:
    """Flush download counts every few seconds, once more on shutdown; watch the snapshot.

    Runs after the store and snapshot contexts (it needs both).
    """
    store, tally = app[keys.STORE], app[keys.TALLY]
    app[keys.STATS_READER] = StatsReader(store)
    live = app[keys.LIVE]
    router = app[keys.ROUTER]
    app[keys.METRICS].watch(
        app[keys.HOLDER],
        lambda: live.current.max_lag,
        poll_interval=lambda: live.current.poll_interval,
        reloader=lambda: app.get(keys.RELOADER),
        geo=lambda: router.geo,  # the live reader: a replaced database is swapped there
    )
    tasks = app[keys.TASKS]
    tasks.start(FLUSHER, lambda: flush_forever(tally, store))
    speaks = app.get(keys.SPEAKS, True)
    if speaks:
        tasks.start(POLLER_WATCH, lambda: watch_poller(app))
    yield
    if speaks:
        await tasks.stop(POLLER_WATCH)
    await tasks.stop(FLUSHER)
    try:
        await flush(tally, store, time.time())
    except StoreError as e:
        log.warning("download statistics lost on shutdown (%d): %s", tally.pending, e)


@web.middleware
async def timed(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request's duration and status for /metrics; yum and dnf lists counted apart."""
    started = time.perf_counter()
    status = 500  # what aiohttp answers for an exception that is not an HTTPException
    try:
        resp = await handler(request)
    except web.HTTPException as e:
        status = e.status
        raise
    else:
        status = resp.status
        return resp
    finally:
        metrics = request.app.get(keys.METRICS)
        if metrics is not None:
            path = request.raw_path.partition("?")[0]
            metrics.answered(path, status, time.perf_counter() - started)
            if 200 <= status < 300:
                kind = handler_of(path)
                if kind in ("mirrorlist", "metalink"):
                    metrics.listed(kind, request.headers.get("User-Agent"))


async def watch_poller(app: web.Application, every: float = 1.0) -> None:
    """Log once when no poller pass has come for 3 intervals, and once when passes resume:
    the web side's word in the journal that the poller went quiet (it keeps serving)."""
    live, holder = app[keys.LIVE], app[keys.HOLDER]
    silent = False
    while True:
        await asyncio.sleep(every)
        master = holder.current.master
        if master is None:
            continue  # never a pass yet: starting up, not gone quiet
        age = time.time() - master.checked_at
        now_silent = age > SILENT_INTERVALS * live.current.poll_interval
        if now_silent and not silent:
            log.warning(
                "no poller pass for %s (3 intervals): serving the last snapshot",
                duration(age),
            )
        elif silent and not now_silent:
            log.info("poller passes again")
        silent = now_silent


def check_outcome(routed: Routed, rank: int | None, checked: bool, heads: int) -> str | None:
    """Where the never-a-404 check sent a client (metrics.CHECK_OUTCOMES), None when the
    request was not checked. `rank`: the ranked mirror sent to (None: the master); `heads`:
    HEADs this request waited for."""
    if not checked:
        return None
    if rank is None:
        return "master"
    if rank > 0:
        return "next_mirror"
    return "head" if heads else "cached"


def record(
    request: web.Request,
    routed: Routed,
    seconds: float,
    target: str,
    *,
    checked: bool = False,
    heads: int = 0,
) -> None:
    """Count one redirect to `target` for /metrics and, for a GET, the download statistics.

    `checked`: the file check looked at this request; `heads`: how many HEADs it waited for."""
    rank = sent_to(routed, target)
    if rank is None:
        name = None
    elif rank == 0 and routed.chosen is not None:
        name = routed.chosen.mirror.name
    else:
        name = routed.top(rank + 1)[rank].mirror.name
    app = request.app
    app[keys.METRICS].redirected(name, seconds)
    outcome = check_outcome(routed, rank, checked, heads)
    if outcome is not None:
        app[keys.METRICS].checked(outcome)
    if request.method == "GET":
        loc = routed.location
        app[keys.TALLY].count(name, None if loc is None else loc.country, routed.path)


def refused(request: web.Request, reason: str = REFUSED_PATH) -> None:
    """Count one refused (4xx) request under the tree: REFUSED_PATH or REFUSED_METHOD."""
    metrics = request.app.get(keys.METRICS)
    if metrics is not None:
        metrics.refused(reason)


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
    expl = explain.explain(
        routed, router.holder.current.candidates, router.policy, now=time.time(), geo_note=note
    )
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


def _document(app: web.Application, report: status.Report) -> dict[str, Any]:
    """The /mirrors.json document, with the config's state when this process reloads one."""
    doc = status.to_json(report)
    reloader = app.get(keys.RELOADER)
    if reloader is not None and reloader.watches_config:
        refused = reloader.refusal
        doc["config"] = {
            "ok": refused is None,
            "refused": None
            if refused is None
            else {**refused.to_json(), "at": rfc3339(refused.at)},
        }
    return doc


async def mirrors(request: web.Request) -> web.Response:
    """The status page, or its JSON for clients that ask for application/json."""
    report = await _report(request)
    if explain.prefers_json(request.headers.get("Accept")):
        return _json(status.dumps(_document(request.app, report)), Vary="Accept")
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
        text=status.render_html(report, sections, _notices(request.app)),
        content_type="text/html",
        headers={"Cache-Control": "no-cache", "Vary": "Accept"},
    )
    resp.enable_compression()  # the inline maps make it ~50 kB; gzip takes it to a third
    return resp


def _notices(app: web.Application) -> list[str]:
    """What an operator must know at a glance: a config file refused on reload."""
    reloader = app.get(keys.RELOADER)
    refused = reloader.refusal if reloader is not None else None
    if refused is None:
        return []
    return [
        f"The config file was refused at its last reload ({rfc3339(refused.at)}); the last "
        f"good config keeps running. {refused.error}"
    ]


async def mirrors_json(request: web.Request) -> web.Response:
    return _json(status.dumps(_document(request.app, await _report(request))))


async def schema(request: web.Request) -> web.Response:
    return web.Response(
        text=status.schema_text(),
        content_type="application/schema+json",
        headers={"Cache-Control": "public, max-age=3600"},
    )


async def ready(request: web.Request) -> web.Response:
    """Readiness for load balancers: 200 (ready or degraded) or 503, with the reasons.

    This node can serve (a fresh mirror, or a master that answers): 200, "ready", or
    "degraded" with the reason when the poller is silent, the store unreachable or a config
    reload refused. Those are shared by every node, and each still serves its last snapshot:
    a 503 for them would pull the whole fleet out of the load balancer at once. 503 only when
    there is nowhere to send a client (`status.readiness` states the rule).
    """
    app = request.app
    settings = app[keys.LIVE].current
    store_error = None
    try:
        await app[keys.STORE].ping()
    except StoreError as e:
        store_error = str(e)
    reloader = app.get(keys.RELOADER)
    refused = reloader.last if reloader is not None else None
    r = status.readiness(
        app[keys.HOLDER].current,
        now=time.time(),
        max_lag=settings.max_lag,
        poll_interval=settings.poll_interval,
        store_error=store_error,
        config_error=refused.error if refused is not None and not refused.ok else None,
        config_watched=reloader is not None and reloader.watches_config,
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
    app[keys.METRICS].observe_result(result)


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
        max_lag=settings.max_lag,
    )
    return Section(
        "sync-tree", "Sync tree", note + render_html(tree, email_mode=settings.status_email)
    )
