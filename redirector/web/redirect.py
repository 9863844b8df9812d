"""HTTP handlers: thin adapters from aiohttp requests to the router and back."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiohttp import web

from redirector.core.paths import BadPath, split_target
from redirector.core.selection import check
from redirector.views.explain import wants_mirrorlist
from redirector.web import keys, pages
from redirector.web.link import link_header

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


async def redirect(request: web.Request) -> web.StreamResponse:
    """GET/HEAD under the tree -> 302 to the chosen mirror (or the master)."""
    if request.method not in ("GET", "HEAD"):
        pages.refused(request)
        return web.Response(
            status=405, text="405 Method Not Allowed\n", headers={"Allow": "GET, HEAD"}
        )
    raw_path, query = split_target(request.raw_path)
    app = request.app  # a property chain in aiohttp: looked up once per redirect
    router = app[keys.ROUTER]
    path = router.tree_path(raw_path)  # paths.tree_path, remembered for popular files
    if path is None:
        raise web.HTTPNotFound(text="404 Not Found\n")
    headers = request.headers
    started = time.perf_counter()
    # One call: the client, its location and the decision all come from the router's caches.
    routed = router.resolve(
        request.remote,
        headers.get("X-Forwarded-For"),
        headers.get("X-Forwarded-Proto"),
        request.scheme,
        path,
    )
    decision_seconds = time.perf_counter() - started
    request[keys.DECISION_SECONDS] = decision_seconds
    request[keys.ROUTED] = routed  # for the access log
    if query and wants_mirrorlist(query):
        return pages.mirrorlist(request, routed)  # why this client goes there, not a download
    target = await app[keys.VERIFIER].target(routed)  # never a 404 (verify.py)
    request[keys.TARGET] = target  # for the access log: the mirror finally sent to
    pages.record(request, routed, decision_seconds, target)
    out = {"Location": target, "Cache-Control": NO_SHARED_CACHE}
    link = link_header(routed, target)  # RFC 6249: the next best, for clients that retry
    if link is not None:
        out["Link"] = link
    return web.Response(status=302, headers=out)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


async def health(request: web.Request) -> web.Response:
    """Fresh-mirror count, poller age and store status; 503 when there is nowhere to send anyone."""
    app = request.app
    settings = app[keys.LIVE].current  # read per request: a reload replaces it
    holder = app[keys.HOLDER]
    snap = holder.current
    now = time.time()
    fresh = sum(
        1 for c in snap.candidates if check(c, "", "http", False, now, settings.max_lag) is None
    )
    master = snap.master
    master_down = master is not None and master.error is not None
    geo = app[keys.ROUTER].geo  # the live reader: a replaced database is swapped there
    status = "ok"
    if holder.store_error is not None or fresh == 0:
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
            "last_pass": _iso(master.checked_at if master else None),
            "age_seconds": round(now - master.checked_at, 1) if master else None,
            "interval_seconds": settings.poll_interval,
        },
        "master": {
            "url": settings.master,
            "reachable": None if master is None else master.error is None,
            "error": master.error if master else None,
            "current": _iso(master.current.date if master and master.current else None),
        },
        "store": {
            "kind": app[keys.STORE].kind,
            "ok": holder.store_error is None,
            "error": holder.store_error,
        },
        "geoip": {
            "database": geo.describe() if geo is not None else None,
            "warning": app.get(keys.GEO_WARNING)
            if geo is None
            else "; ".join(geo.warnings(now, settings.geoip_max_age)) or None,
        },
    }
    return web.Response(
        status=503 if status == "failing" else 200,
        text=json.dumps(body, indent=2) + "\n",
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", health, allow_head=True)
    for prefix in ("/smeserver", "/pub/smeserver"):
        app.router.add_route("*", prefix, redirect)
        # [\s\S]: a decoded %0a must still reach the handler, to be refused there with a 400.
        app.router.add_route("*", prefix + "/{tail:[\\s\\S]*}", redirect)
