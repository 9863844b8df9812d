"""Operator views over HTTP: /mirrors, /mirrors.json, /metrics, /health/ready, ?mirrorlist.

Thin aiohttp adapters over the pure `status`, `explain` and `metrics` modules, plus the
per-request bookkeeping the redirect handler calls (`record`) and the wiring of the metrics,
download statistics and their flusher (`setup`, `stats_ctx`). The status page, its JSON and
the state part of /metrics come from `viewcache.Views`: rendered once per state (snapshot,
live settings, store health, download figures) and at most every `viewcache.MAX_AGE` seconds.
Every view but /health/ready (small, and a load balancer's) is answered only within the
views' budget (`viewbudget.Guard`): past it, a 429 or 503 with Retry-After instead.
"""

from __future__ import annotations

import asyncio
import functools
import html
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from redirector.config.settings import Settings
from redirector.core.clientip import IPAddress, joined
from redirector.core.history import HistoryData
from redirector.core.humanize import duration, rfc3339
from redirector.core.models import SyncInfo
from redirector.core.synctree import build_tree, master_aliases
from redirector.geo import IPV4_ONLY_NOTE
from redirector.poll.poller import PassResult
from redirector.reload import ReloadOutcome
from redirector.router import Routed
from redirector.snapshot import Snapshot
from redirector.stats import DownloadStats, StatsReader, Tally, flush, flush_forever
from redirector.store.base import FactStore, StoreError, SyncStore
from redirector.store.history import HistoryReader
from redirector.views import explain, filefacts, status
from redirector.views import https as https_view
from redirector.views.status import Section
from redirector.views.synctree import render_html
from redirector.web import keys, viewbudget
from redirector.web.metrics import (
    REFUSED_PATH,
    SILENT_INTERVALS,
    Metrics,
    handler_of,
    join_scrape,
    multiprocess_dir,
)
from redirector.web.viewcache import MAX_AGE, Page, Views

log = logging.getLogger(__name__)

FLUSHER = "stats flusher"  # the supervised task name, as /health shows it
POLLER_WATCH = "poller watch"  # logs once when the poller goes quiet
FOLDER = "metrics fold"  # adds the counts of the hot path to prometheus-client's values

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

NO_STORE = "no-store"
JSON_TYPE = "application/json"
JSON_UTF8 = "application/json; charset=utf-8"
HTML_UTF8 = "text/html; charset=utf-8"


def setup(app: web.Application, settings: Settings, *, poll: bool = True) -> None:
    """Metrics, the download tally, status-page sections, the stats flusher and the routes.

    Called last in `create_app`: `stats_ctx` must start after the store and the snapshot.
    `poll` False: no poller series (another process polls and exports them).
    """
    app[keys.METRICS] = Metrics((m.name for m in settings.mirrors), multiprocess_dir(), poller=poll)
    app[keys.TALLY] = Tally()

    async def https() -> Section:
        return https_section(app)

    providers: list[status.SectionProvider] = [https]
    app[keys.STATUS_SECTIONS] = providers
    app[keys.VIEWS] = Views()
    app[keys.VIEW_GUARD] = viewbudget.Guard(app[keys.LIVE].get)
    app.on_cleanup.append(_close_views)
    app.cleanup_ctx.append(stats_ctx)
    add_routes(app)


async def _close_views(app: web.Application) -> None:
    await app[keys.VIEWS].close()


async def stats_ctx(app: web.Application) -> AsyncIterator[None]:
    """Flush download counts every few seconds, once more on shutdown; watch the snapshot.

    Runs after the store and snapshot contexts (it needs both).
    """
    store, tally = app[keys.STORE], app[keys.TALLY]
    # The download figures are read (and so the status page redone for them) at most every
    # MAX_AGE: under traffic they move all the time, and a rendering of a large network is
    # CPU the redirects share. The page is redone at once for what matters more: a new
    # snapshot, a reload, the store failing.
    app[keys.STATS_READER] = StatsReader(store, max_age=MAX_AGE)
    live = app[keys.LIVE]
    app[keys.HISTORY_READER] = HistoryReader(store)
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
    tasks.start(FOLDER, lambda: fold_forever(app[keys.METRICS]))
    speaks = app.get(keys.SPEAKS, True)
    if speaks:
        tasks.start(POLLER_WATCH, lambda: watch_poller(app))
    yield
    if speaks:
        await tasks.stop(POLLER_WATCH)
    await tasks.stop(FLUSHER)
    await tasks.stop(FOLDER)
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
            kind = handler_of(path)
            # A metalink's 404 (no hashes known) is an answer to a client too.
            if kind in ("mirrorlist", "metalink") and (200 <= status < 300 or status == 404):
                metrics.list_client(kind, request.headers.get("User-Agent"))


async def fold_forever(metrics: Metrics, every: float = 1.0) -> None:
    """`Metrics.fold` every second: in multiprocess mode a scrape answered by another worker
    reads this one's counts from its files, so they must not wait for this one's scrape."""
    while True:
        await asyncio.sleep(every)
        metrics.fold()


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


def refused(request: web.Request, reason: str = REFUSED_PATH) -> None:
    """Count one refused (4xx) request under the tree: REFUSED_PATH or REFUSED_METHOD."""
    metrics = request.app.get(keys.METRICS)
    if metrics is not None:
        metrics.refused(reason)


def client_ip(request: web.Request) -> IPAddress | None:
    """The client's address as the router makes it out: X-Forwarded-For only from trusted
    proxies, read right to left (`clientip.ProxyTrust.resolve`)."""
    headers = request.headers
    return (
        request.app[keys.ROUTER]
        .client(
            request.remote,
            joined(headers.getall("X-Forwarded-For", ())),
            joined(headers.getall("X-Forwarded-Proto", ())),
            request.scheme,
        )
        .ip
    )


def over_budget(request: web.Request, view: str, ip: IPAddress | None) -> web.Response | None:
    """None when `view` may be answered to the client at `ip`; else the refusal to send
    instead (`viewbudget.refusal`), counted by view and budget."""
    app = request.app
    refused = app[keys.VIEW_GUARD].admit(ip)
    if refused is None:
        return None
    metrics = app.get(keys.METRICS)
    if metrics is not None:
        metrics.view_refused(view, refused.budget.value)
    return viewbudget.refusal(refused)


def budgeted(view: str, handler: Handler) -> Handler:
    """`handler`, answering only within the views' budget (`over_budget`)."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        refused = over_budget(request, view, client_ip(request))
        return refused if refused is not None else await handler(request)

    return guarded


def _json(body: Mapping[str, Any] | str, status_code: int = 200, **headers: str) -> web.Response:
    text = body if isinstance(body, str) else json.dumps(body, indent=2) + "\n"
    return web.Response(
        status=status_code,
        text=text,
        content_type=JSON_TYPE,
        headers={"Cache-Control": NO_STORE, **headers},
    )


async def mirrorlist(request: web.Request, routed: Routed) -> web.Response:
    """The `?mirrorlist` view of a decision: HTML, or JSON when asked (see `explain`).

    Rendered in the views' thread, and kept per decision and snapshot: a client reloading
    its explanation costs one rendering. Within the views' budget only, as the other views."""
    refused = over_budget(request, viewbudget.EXPLAIN, routed.client.ip)
    if refused is not None:
        return refused
    app = request.app
    router = app[keys.ROUTER]
    views = app[keys.VIEWS]
    reader = router.geo
    note = app.get(keys.GEO_WARNING) if reader is None else None
    ip = routed.client.ip
    if reader is not None and reader.ipv4_only and ip is not None and ip.version == 6:
        note = IPV4_ONLY_NOTE
    credit = reader.attribution if reader is not None else None
    _, query = request.raw_path.split("?", 1)
    as_json = explain.wants_json(query, request.headers.get("Accept"))
    candidates, policy = router.holder.current.candidates, router.policy
    facts = app[keys.FACTS].get(routed.path)

    def render() -> Page:
        expl = explain.explain(
            routed, candidates, policy, now=time.time(), geo_note=note, credit=credit
        )
        if as_json:
            body = explain.to_json(expl)
            body["file"] = filefacts.facts_json(facts)
            return Page.of(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
        page = explain.render_html(expl)
        if facts is not None:  # the file's size, date and hashes after what the client is told
            page = page.replace("</dl><table>", filefacts.facts_html(facts) + "</dl><table>", 1)
        return Page.of(page)

    async def make() -> Page:
        return await views.run(render)

    # One decision: the same client and path, under the same snapshot, policy and location.
    name = ("explain", routed.client, routed.path, as_json)
    key = (router.holder.current, policy, note, credit, routed.location, facts)
    page = await views.get(name, key, make)
    content_type = JSON_UTF8 if as_json else HTML_UTF8
    return _page_response(request, page, content_type, NO_STORE, "Accept, Accept-Encoding")


_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?$")


def site_of(request: web.Request, settings: Settings) -> str:
    """The host the page was asked for, for its header, when it is one of the redirector's own
    names; else the master's host. The Host header is the client's own text: taking any would
    let a client make a new rendering of the page per name it sends."""
    host = request.headers.get("Host", "")
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    if _HOST.match(host) and name.lower() in _own_names(settings):
        return host
    return urlsplit(settings.master).hostname or ""


def _own_names(settings: Settings) -> frozenset[str]:
    names = {urlsplit(settings.master).hostname or "", settings.listen_host}
    names.update(getattr(settings, "public_names", ()))
    return frozenset(n.lower() for n in names)


def geo_notes(app: web.Application, now: float) -> tuple[tuple[str, ...], str | None]:
    """What the pages must say of the GeoIP database: its problems, and its licence credit."""
    reader = app[keys.ROUTER].geo
    if reader is None:
        warning = app.get(keys.GEO_WARNING)
        return ((warning,) if warning else ()), None
    return tuple(reader.warnings(now, app[keys.LIVE].current.geoip_max_age)), reader.attribution


@dataclass(frozen=True, slots=True)
class _Shown:
    """What the status views show; any change in it means a new rendering."""

    snapshot: Snapshot
    settings: Settings
    store_kind: str
    store_error: str | None
    downloads: DownloadStats
    past: HistoryData | None
    history_error: str | None
    site: str
    geo_notes: tuple[str, ...]
    geo_credit: str | None
    watches_config: bool  # this process reloads a config file (the JSON then says its state)
    refusal: ReloadOutcome | None  # the last reload, when it was refused

    @property
    def key(self) -> tuple[object, ...]:
        # Tuples compare members by identity first: the cached snapshot, settings and history
        # objects cost nothing to compare while they are unchanged.
        return (
            self.snapshot, self.settings, self.store_error, self.downloads, self.past,
            self.history_error, self.site, self.geo_notes, self.geo_credit, self.refusal,
        )  # fmt: skip

    def report(self) -> status.Report:
        """The report as of now: pure over immutable values, so it runs in the views' thread."""
        s = self.settings
        return status.build(
            self.snapshot,
            self.downloads,
            now=time.time(),
            max_lag=s.max_lag,
            poll_interval=s.poll_interval,
            master_url=s.master,
            store_kind=self.store_kind,
            store_error=self.store_error,
            past=self.past,
            history_error=self.history_error,
            site=self.site,
            geo_notes=self.geo_notes,
            geo_credit=self.geo_credit,
        )


async def _shown(app: web.Application, request: web.Request) -> _Shown:
    holder = app[keys.HOLDER]
    settings = app[keys.LIVE].current  # read per request: a reload replaces it
    past, history_error = await app[keys.HISTORY_READER].get(holder.current.generation)
    notes, credit = geo_notes(app, time.time())
    reloader = app.get(keys.RELOADER)
    return _Shown(
        holder.current,
        settings,
        app[keys.STORE].kind,
        holder.store_error,
        await app[keys.STATS_READER].get(),
        past,
        history_error,
        site_of(request, settings),
        notes,
        credit,
        reloader is not None and reloader.watches_config,
        reloader.refusal if reloader is not None else None,
    )


def _page_response(
    request: web.Request, page: Page, content_type: str, cache: str, vary: str
) -> web.Response:
    """`page` as it is, or gzipped for a client that takes gzip (done once per rendering).
    `content_type`: the whole header value, charset (and Prometheus' version=) included."""
    headers = {"Content-Type": content_type, "Cache-Control": cache, "Vary": vary}
    if _takes_gzip(request.headers.get("Accept-Encoding", "")):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=page.gzipped, headers=headers)
    return web.Response(body=page.body, headers=headers)


def _takes_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding value takes gzip; a q of 0 (or junk) refuses it."""
    for item in accept_encoding.lower().split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        if coding not in ("gzip", "x-gzip"):
            continue
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


async def _status_json(request: web.Request) -> Page:
    app = request.app
    shown = await _shown(app, request)
    views = app[keys.VIEWS]

    async def make() -> Page:
        return await views.run(lambda: Page.of(status.dumps(_document(shown, shown.report()))))

    return await views.get("status.json", shown.key, make)


def _document(shown: _Shown, report: status.Report) -> dict[str, Any]:
    """The /mirrors.json document, with the config's state when this process reloads one."""
    doc = status.to_json(report)
    if shown.watches_config:
        refused = shown.refusal
        doc["config"] = {
            "ok": refused is None,
            "refused": None
            if refused is None
            else {**refused.to_json(), "at": rfc3339(refused.at)},
        }
    return doc


async def mirrors(request: web.Request) -> web.Response:
    """The status page, or its JSON for clients that ask for application/json."""
    app = request.app
    vary = "Accept, Accept-Encoding"
    if explain.prefers_json(request.headers.get("Accept")):
        return _page_response(request, await _status_json(request), JSON_UTF8, NO_STORE, vary)
    shown = await _shown(app, request)
    views = app[keys.VIEWS]

    async def make() -> Page:
        sections: list[status.Section] = []
        for provider in app[keys.STATUS_SECTIONS]:
            try:
                section = await provider()
            except Exception:  # one broken section must not take the page down
                log.exception("status page section failed")
                continue
            if section is not None:
                sections.append(section)
        # The inline maps make the page large; gzip, done once here, takes it to a third.
        return await views.run(
            lambda: Page.of(status.render_html(shown.report(), sections, _notices(shown)))
        )

    page = await views.get("status.html", shown.key, make)
    return _page_response(request, page, HTML_UTF8, "no-cache", vary)


def _notices(shown: _Shown) -> list[str]:
    """What an operator must know at a glance: a config file refused on reload."""
    refused = shown.refusal
    if refused is None:
        return []
    return [
        f"The config file was refused at its last reload ({rfc3339(refused.at)}); the last "
        f"good config keeps running. {refused.error}"
    ]


async def mirrors_json(request: web.Request) -> web.Response:
    page = await _status_json(request)
    return _page_response(request, page, JSON_UTF8, NO_STORE, "Accept-Encoding")


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
    """The counters, re-rendered when they moved (throttled under a scrape loop), and the
    state gauges as rendered for the current state; both in the views' thread."""
    app = request.app
    m, holder, views = app[keys.METRICS], app[keys.HOLDER], app[keys.VIEWS]
    m.fold()  # here, in the loop's thread, where the counting happens
    content_type = m.content_type(request.headers.get("Accept"))

    async def make_events() -> bytes:
        return (await views.run(m.render_events, content_type))[0]

    async def make_state() -> bytes:
        return await views.run(m.render_state, content_type)

    events = await views.get(("events", content_type), m.events_key(), make_events, True)
    reloader = app.get(keys.RELOADER)
    # Everything the state gauges read: the snapshot, the live settings, the store's health,
    # the last config reload and the live GeoIP reader.
    state_key = (
        holder.current,
        app[keys.LIVE].current,
        holder.store_error,
        reloader.last if reloader is not None else None,
        app[keys.ROUTER].geo,
    )
    state = await views.get(("state", content_type), state_key, make_state)

    async def make_scrape() -> Page:  # joined and gzipped once per pair of parts
        return await views.run(lambda: Page.of(join_scrape(events, state, content_type)))

    page = await views.get(("scrape", content_type), (events, state), make_scrape)
    return _page_response(request, page, content_type, NO_STORE, "Accept, Accept-Encoding")


def add_routes(app: web.Application) -> None:
    """The views' routes; all but /health/ready within the views' budget (`budgeted`)."""
    page = budgeted(viewbudget.MIRRORS, mirrors)
    app.router.add_get("/mirrors", page, allow_head=True)
    app.router.add_get("/mirrors/", page, allow_head=True)
    app.router.add_get(
        "/mirrors.json", budgeted(viewbudget.MIRRORS_JSON, mirrors_json), allow_head=True
    )
    app.router.add_get(status.SCHEMA_PATH, budgeted(viewbudget.SCHEMA, schema), allow_head=True)
    # Not budgeted: a small answer, and a 429 would take the node out of a load balancer.
    app.router.add_get("/health/ready", ready, allow_head=True)
    app.router.add_get("/metrics", budgeted(viewbudget.METRICS, metrics), allow_head=True)


def observe_pass(app: web.Application, result: PassResult) -> None:
    """Poller metrics for one pass: its duration, and the probes that failed in it."""
    app[keys.METRICS].observe_result(result)


BAD_COPY_DAYS = 7  # a wrong copy not seen again for this long is no longer shown


async def bad_copies_section(app: web.Application) -> Section | None:
    """Mirrors caught serving a copy of a hashed file that is not the master's; None when the
    store keeps no file facts."""
    st = app[keys.STORE]
    if not isinstance(st, FactStore):
        return None
    try:
        copies = await st.load_bad_copies()
    except StoreError as e:
        return Section("bad-copies", "Wrong copies", f"<p>Unavailable: {html.escape(str(e))}</p>")
    names = {m.name for m in app[keys.LIVE].current.mirrors}
    since = time.time() - BAD_COPY_DAYS * 86400
    shown = [b for b in copies if b.mirror in names and b.seen_at >= since]
    return Section("bad-copies", "Wrong copies", filefacts.bad_copies_html(shown))


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
            # The error quotes what the store holds, which whoever can write the store chose.
            note = (
                f"<p><small>Sync info unavailable ({html.escape(str(e))}); drawn from the "
                "config.</small></p>"
            )
    snap = app[keys.HOLDER].current

    def draw() -> str:  # pure over immutable values: in the views' thread, off the event loop
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
        return render_html(tree, email_mode=settings.status_email)

    return Section("sync-tree", "Sync tree", note + await app[keys.VIEWS].run(draw))
