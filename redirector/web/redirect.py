"""HTTP handlers: thin adapters from aiohttp requests to the router and back."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace

from aiohttp import web

from redirector.core.clientip import joined
from redirector.core.condition import assess
from redirector.core.humanize import rfc3339
from redirector.core.paths import BadPath, split_target
from redirector.core.selection import LIST
from redirector.core.topology import ACCEL_HEADER, fallback_target, is_local
from redirector.poll.filecheck import Verifier, heads_waited, start_request
from redirector.reload import Reloader
from redirector.router import Routed, Router
from redirector.stats import Tally
from redirector.store.facts import FactsHolder
from redirector.views.explain import wants_mirrorlist
from redirector.web import download, keys, pages
from redirector.web.link import link_header, sent_to
from redirector.web.metrics import REFUSED_METHOD, SILENT_INTERVALS, Metrics

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

NO_SHARED_CACHE = "private, no-store"  # a redirect depends on who asks and when


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Known errors become statuses here, and nothing else ever shows a traceback."""
    try:
        return await handler(request)
    except BadPath as e:
        pages.refused(request)
        return web.Response(status=400, text=f"400 Bad Request: {e}\n")


@dataclass(frozen=True, slots=True)
class Answer:
    """A redirect's answer, for either transport: aiohttp's handler or front.py's."""

    status: int
    headers: dict[str, str]
    reason: str | None = None  # None: the status's own


class Redirects:
    """What a redirect consults, looked up once when the app has started. Both transports
    (`redirect` below, and front.py's fast path for plain downloads) decide, check and
    answer through it, so a redirect means the same whichever way it came in."""

    __slots__ = ("facts", "metrics", "router", "tally", "verifier")

    def __init__(self, app: web.Application) -> None:
        self.router: Router = app[keys.ROUTER]
        self.facts: FactsHolder = app[keys.FACTS]
        self.verifier: Verifier = app[keys.VERIFIER]
        self.metrics: Metrics = app[keys.METRICS]
        self.tally: Tally = app[keys.TALLY]

    def decide(
        self,
        peer: str | None,
        forwarded_for: str | None,
        forwarded_proto: str | None,
        scheme: str,
        path: str,
    ) -> tuple[Routed, float]:
        """The decision and the seconds it took. One call: the client, its location and the
        decision all come from the router's caches."""
        started = time.perf_counter()
        routed = self.router.resolve(peer, forwarded_for, forwarded_proto, scheme, path)
        return routed, time.perf_counter() - started

    def settled(self, routed: Routed) -> tuple[Routed, str] | None:
        """Where the client goes after the per-file check, when the caches alone tell; None
        when a HEAD or a second ranking may be needed: then await `settle`."""
        target = self.verifier.known(routed)
        if target is None or self._last_resort_applies(routed, target):
            return None
        return routed, target

    async def settle(self, routed: Routed) -> tuple[Routed, str]:
        """Where the client goes: the per-file check (never a 404: filecheck.py), then, for a
        plain-http client no http mirror can serve, an ftp-only mirror that can."""
        target = await self.verifier.target(routed)
        if self._last_resort_applies(routed, target):
            return await self._last_resort(routed, target)
        return routed, target

    def _last_resort_applies(self, routed: Routed, target: str) -> bool:
        return (
            self.router.has_ftp_only
            and routed.client.scheme == "http"
            and _fell_back(self.router, routed, target)
        )

    async def _last_resort(self, routed: Routed, target: str) -> tuple[Routed, str]:
        """Ranked as for a mirror list (every URL a mirror has), so that only the ftp-only
        mirrors can be new here: every other was already asked for this request."""
        again = self.router.route(replace(routed.client, scheme=LIST), routed.path)
        if again.fallback:
            return routed, target
        found = await self.verifier.target(again)
        if _fell_back(self.router, again, found):
            return routed, target
        return again, found

    def answer(
        self,
        method: str,
        routed: Routed,
        seconds: float,
        target: str,
        *,
        heads: int = 0,
    ) -> Answer:
        """Count the redirect (metrics, download statistics) and build its answer.

        `heads`: how many HEADs this request waited for."""
        self.record(method, routed, seconds, target, heads)
        if is_local(target):
            return local_answer(target)
        out = {"Location": target, "Cache-Control": NO_SHARED_CACHE}
        link = link_header(routed, target)  # RFC 6249: the next best, for clients that retry
        if link is not None:
            out["Link"] = link
        digests = self.facts.headers(routed.path)  # RFC 3230, RFC 9530: what it hashes to
        if digests is not None:
            out.update(digests)
        return Answer(302, out)

    def record(self, method: str, routed: Routed, seconds: float, target: str, heads: int) -> None:
        """Count one redirect to `target` for /metrics and, for a GET, the download
        statistics."""
        rank = sent_to(routed, target)
        if rank is None:
            name = None
        elif rank == 0 and routed.chosen is not None:
            name = routed.chosen.mirror.name
        else:
            name = routed.top(rank + 1)[rank].mirror.name
        metrics = self.metrics
        metrics.redirected(name, seconds, https=routed.client.scheme == "https")
        outcome = check_outcome(routed, rank, self.verifier.checks(routed), heads)
        if outcome is not None:
            metrics.checked(outcome)
        if method == "GET":
            loc = routed.location
            self.tally.count(name, None if loc is None else loc.country, routed.path)


REDIRECTS = web.AppKey("redirects", Redirects)  # set by `redirects_ctx`


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


async def redirect(request: web.Request) -> web.StreamResponse:
    """GET/HEAD under the tree -> 302 to the chosen mirror (or the master)."""
    if request.method not in ("GET", "HEAD"):
        pages.refused(request, REFUSED_METHOD)
        return web.Response(
            status=405, text="405 Method Not Allowed\n", headers={"Allow": "GET, HEAD"}
        )
    raw_path, query = split_target(request.raw_path)
    r = request.app[REDIRECTS]
    path = r.router.tree_path(raw_path)  # paths.tree_path, remembered for popular files
    if path is None:
        raise web.HTTPNotFound(text="404 Not Found\n")
    headers = request.headers
    path, want, by_suffix = download.asked(r.facts, path, query, headers.get("Accept"))
    if want and want not in ("meta4", "metalink"):
        return download.facts_answer(r.facts.get(path), path, want, by_suffix)
    routed, seconds = r.decide(
        request.remote,
        joined(headers.getall("X-Forwarded-For", ())),
        joined(headers.getall("X-Forwarded-Proto", ())),
        request.scheme,
        path,
    )
    request[keys.DECISION_SECONDS] = seconds
    request[keys.ROUTED] = routed  # for the access log
    if query and wants_mirrorlist(query):
        return await pages.mirrorlist(request, routed)  # why this client goes there, not a download
    if want:
        return await download.metalink(request, routed, r.facts.get(path), want)
    heads = start_request()
    settled = r.settled(routed) or await r.settle(routed)
    routed, target = settled
    request[keys.ROUTED] = routed
    request[keys.TARGET] = target  # for the access log: the mirror finally sent to
    answer = r.answer(request.method, routed, seconds, target, heads=heads_waited(heads))
    return web.Response(status=answer.status, reason=answer.reason, headers=answer.headers)


async def nosniff(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer (an `on_response_prepare` hook): a text error that quotes the client's
    path or name must never be read as HTML by a browser that sniffs content types."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


def _fell_back(router: Router, routed: Routed, target: str) -> bool:
    s = router.settings
    return routed.fallback or target == fallback_target(s.fallback, s.master, routed.path)


def local_answer(target: str) -> Answer:
    """A fallback served from the local tree: nginx sees X-Accel-Redirect and serves the file
    from its internal location instead of this answer (deploy/nginx). No Location: the
    redirector never sends a client to one of its own names.

    The status is for a client that reaches the redirector without nginx in front (a
    misconfiguration): a 503 saying so in its reason, never an empty 200 that would pass for
    the file. No body, Content-Type or Cache-Control: nginx keeps those headers of the
    upstream's answer, and the file's own must win.
    """
    return Answer(503, {ACCEL_HEADER: target}, "Served By The Front Server (X-Accel-Redirect)")


async def health(request: web.Request) -> web.Response:
    """Fresh-mirror count, poller age and store status; 503 when there is nowhere to send anyone.

    "degraded" also when the config file on disk was refused at its last reload: `config`
    then names the file, line and field, while the last good config keeps running.
    """
    app = request.app
    settings = app[keys.LIVE].current  # read per request: a reload replaces it
    holder = app[keys.HOLDER]
    snap = holder.current
    now = time.time()
    fresh = sum(1 for c in snap.candidates if assess(c, now, settings.max_lag).condition.served)
    master = snap.master
    master_down = master is not None and master.error is not None
    geo = app[keys.ROUTER].geo  # the live reader: a replaced database is swapped there
    tasks = app[keys.TASKS].health()
    store_ok = holder.store_error is None and holder.write_error is None
    reloader = app.get(keys.RELOADER)
    refused = reloader.refusal if reloader is not None else None
    silent = master is None or now - master.checked_at > SILENT_INTERVALS * settings.poll_interval
    status = "ok"
    if not store_ok or fresh == 0 or not all(t.ok for t in tasks.values()) or refused is not None:
        status = "degraded"
    if fresh == 0 and master_down:
        status = "failing"
    body = {
        "status": status,
        "pid": os.getpid(),  # which worker of `serve --workers N` answered
        "mirrors": {
            "configured": len(snap.candidates),
            "enabled": sum(1 for c in snap.candidates if c.mirror.enabled),
            "fresh": fresh,
        },
        "poller": {
            "last_pass": rfc3339(master.checked_at if master else None, ms=True),
            "age_seconds": round(now - master.checked_at, 1) if master else None,
            "interval_seconds": settings.poll_interval,
            # No pass in 3 intervals: this node serves its last snapshot (the web side's
            # word that the poller went quiet; see /health/ready).
            "silent": silent,
        },
        "master": {
            "url": settings.master,
            "origin": settings.origin,
            "fallback": settings.fallback,
            "reachable": None if master is None else master.error is None,
            "error": master.error if master else None,
            "current": rfc3339(master.current.date if master and master.current else None, ms=True),
        },
        "store": {
            "kind": app[keys.STORE].kind,
            "ok": store_ok,
            "error": holder.store_error or holder.write_error,  # a read or a write test
        },
        # values the last load dropped as unreadable; the poller's next pass replaces them
        "poisoned": [p.key + (f":{p.field}" if p.field else "") for p in holder.poisoned],
        # long-lived tasks (supervise.py): a crashed one is restarted, and not ok for a while
        "tasks": {
            t.name: {"ok": t.ok, "running": t.running, "restarts": t.restarts, "error": t.error}
            for t in tasks.values()
        },
        "geoip": {
            "database": geo.describe() if geo is not None else None,
            "warning": app.get(keys.GEO_WARNING)
            if geo is None
            else "; ".join(geo.warnings(now, settings.geoip_max_age)) or None,
        },
        "config": _config_health(reloader),
    }
    return web.Response(
        status=503 if status == "failing" else 200,
        text=json.dumps(body, indent=2) + "\n",
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _config_health(reloader: Reloader | None) -> dict[str, object]:
    """The config in force and, when the file on disk was refused, where it is wrong."""
    if reloader is None:
        return {"ok": True, "file": None, "last_reload": None, "refused": None}
    last, refused = reloader.last, reloader.refusal
    source = reloader.settings.source
    return {
        "ok": refused is None,
        "file": str(source) if source is not None else None,
        "last_reload": None if last is None else {"ok": last.ok, "at": rfc3339(last.at)},
        "refused": None if refused is None else {**refused.to_json(), "at": rfc3339(refused.at)},
    }


async def redirects_ctx(app: web.Application) -> AsyncIterator[None]:
    """keys.REDIRECTS, once the router, facts, checker and metrics exist (a context after
    theirs)."""
    app[REDIRECTS] = Redirects(app)
    yield


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", health, allow_head=True)
    for prefix in ("/smeserver", "/pub/smeserver"):
        app.router.add_route("*", prefix, redirect)
        # [\s\S]: a decoded %0a must still reach the handler, to be refused there with a 400.
        app.router.add_route("*", prefix + "/{tail:[\\s\\S]*}", redirect)
