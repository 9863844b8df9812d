"""HTTP handlers for yum mirror lists and dnf metalinks: thin adapters over the router.

URL shapes (all GET/HEAD):

- ``/mirrorlist/<repo>-<ver>``: what SME 8 to 12 ask; lines end in a literal ``$basearch``.
- ``/mirrorlists/<repo>``: SME 7's form, version 7.
- ``/mirrorlist?repo=<repo>-<ver>&arch=<arch>``: the arch filled in (no arch: ``$basearch``).
- ``/metalink?repo=<repo>-<ver>&arch=<arch>``: Metalink 3.0 for ``repodata/repomd.xml``.

Mirrors are chosen exactly as for a redirect of that repo's ``repodata/repomd.xml`` (same
client address, location, eligibility and order), then those whose metadata there does not
match the master's are dropped: for ``$basearch``, a mismatch on any checked arch drops it.

A metalink is complete (the master's repomd.xml timestamp, size and hashes) or a 404 with a
comment saying why, as MirrorManager answers: a repo directory the repodata pass does not
check, one whose master repomd.xml it has not read yet, or no mirror to list. A list or
metalink never names the redirector itself (`topology.list_fallback`). Every answer is
counted (metrics, download statistics) and logged with the client's country and the mirrors
listed.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace

from aiohttp import web

from redirector.core.clientip import joined
from redirector.core.mirrorlist import (
    BASEARCH,
    LEGACY_VERSION,
    MetalinkUrl,
    RepoRef,
    list_line,
    metalink_error,
    metalink_xml,
    mirrorlist_text,
    resolve,
    valid_names,
)
from redirector.core.selection import LIST, Ranked
from redirector.core.topology import list_fallback
from redirector.poll.repodata import REPOMD, accepted, targets
from redirector.router import Routed, Router
from redirector.web import keys

NO_SHARED_CACHE = "private, no-store"  # a list depends on who asks and when
_ARCH = re.compile(r"[A-Za-z0-9_]{1,32}")
METALINK_TYPE = "application/metalink+xml"


def _lookup(request: web.Request, name: str) -> RepoRef:
    """The repo `name` names; a 404 listing the names we serve when it names none."""
    s = request.app[keys.LIVE].current  # read per request: a reload replaces it
    ref = resolve(name, s.repos, s.repo_versions, s.testing_versions)
    if ref is None:
        shown = name if name.isprintable() and len(name) <= 100 else "that name"
        names = "\n".join(valid_names(s.repos, s.repo_versions))
        raise web.HTTPNotFound(
            text=f"404 Not Found: no repository {shown}\nvalid names:\n{names}\n",
            headers={"Cache-Control": "no-store"},
        )
    return ref


def _arch(request: web.Request, required: bool) -> str:
    arch = request.query.get("arch")
    if arch is None or arch == BASEARCH:
        if required:
            raise web.HTTPBadRequest(text="400 Bad Request: arch=<arch> is required\n")
        return BASEARCH
    if not _ARCH.fullmatch(arch):
        raise web.HTTPBadRequest(text="400 Bad Request: arch must be like x86_64\n")
    return arch


def _route(request: web.Request, ref: RepoRef, arch: str) -> tuple[Router, Routed]:
    """Rank mirrors for a list. Unlike a redirect, a list names ftp-only mirrors (yum and
    librepo fetch ftp://), and a list asked for over https still names http-only mirrors:
    SME 10-12 fetch every list over https, yum checks the packages' GPG signatures, and an
    https-only list would shrink to a couple of mirrors. Where a mirror has an https URL, an
    https client gets it (see _base)."""
    router = request.app[keys.ROUTER]
    client = router.client(
        request.remote,
        joined(request.headers.getall("X-Forwarded-For", ())),
        joined(request.headers.getall("X-Forwarded-Proto", ())),
        request.scheme,
    )
    request[_HTTPS] = client.scheme == "https"
    started = time.perf_counter()
    routed = router.route(replace(client, scheme=LIST), f"{ref.arch_dir(arch)}/{REPOMD}")
    request[keys.DECISION_SECONDS] = time.perf_counter() - started
    # The access log's client, country and scheme (the one the client used, not "http").
    request[keys.ROUTED] = replace(routed, client=client)
    return router, routed


_HTTPS = web.RequestKey("list_over_https", bool)


def _base(request: web.Request, r: Ranked) -> str:
    if request.get(_HTTPS) and r.mirror.https:
        return r.mirror.https
    return r.base


def _usable(router: Router, routed: Routed, ref: RepoRef, arch: str) -> list[Ranked]:
    """The ranked mirrors whose metadata may be listed. For a named arch selection has already
    dropped the mismatched ones; for $basearch, drop those mismatched on any arch."""
    if arch != BASEARCH:
        return list(routed.decision.ranked)
    prefix = ref.path + "/"
    bad = {
        c.mirror.name
        for c in router.holder.current.candidates
        if any(d.startswith(prefix) for d in c.bad_repodata)
    }
    return [r for r in routed.decision.ranked if r.mirror.name not in bad]


def _count(
    request: web.Request, kind: str, ref: RepoRef, routed: Routed, listed: list[str], status: int
) -> None:
    """One list or metalink answer: metrics, download statistics, the access log's mirrors."""
    request[keys.LISTED] = tuple(listed)
    country = routed.location.country if routed.location else None
    app = request.app
    app[keys.METRICS].list_answered(kind, ref.repo, ref.version, listed, status)
    if request.method == "GET":
        app[keys.TALLY].count_list(kind, ref.name, country, listed[0] if listed else None)


def _names(ranked: list[Ranked], limit: int) -> list[str]:
    return [r.mirror.name for r in ranked[:limit]]


async def _mirrorlist(request: web.Request, name: str, arch: str) -> web.Response:
    ref = _lookup(request, name)
    router, routed = _route(request, ref, arch)
    s = request.app[keys.LIVE].current
    ranked = [
        r for r in _usable(router, routed, ref, arch) if list_line(_base(request, r), ref, arch)
    ]
    body = mirrorlist_text(
        ref,
        arch,
        [_base(request, r) for r in ranked],
        list_fallback(s.master, s.own_names),
        routed.location.country if routed.location else None,
        s.mirrorlist_length,
    )
    _count(request, "mirrorlist", ref, routed, _names(ranked, s.mirrorlist_length), 200)
    return web.Response(
        text=body, content_type="text/plain", headers={"Cache-Control": NO_SHARED_CACHE}
    )


async def mirrorlist_by_path(request: web.Request) -> web.Response:
    """``/mirrorlist/<repo>-<ver>``."""
    return await _mirrorlist(request, request.match_info["name"], BASEARCH)


async def mirrorlist_legacy(request: web.Request) -> web.Response:
    """``/mirrorlists/<repo>``: SME 7 named no version."""
    return await _mirrorlist(request, f"{request.match_info['repo']}-{LEGACY_VERSION}", BASEARCH)


async def mirrorlist_by_query(request: web.Request) -> web.Response:
    """``/mirrorlist?repo=<repo>-<ver>&arch=<arch>``."""
    name = request.query.get("repo")
    if not name:
        raise web.HTTPBadRequest(text="400 Bad Request: use ?repo=<repo>-<ver>&arch=<arch>\n")
    return await _mirrorlist(request, name, _arch(request, required=False))


async def metalink(request: web.Request) -> web.Response:
    """``/metalink?repo=<repo>-<ver>&arch=<arch>``: the master's repomd.xml hashes, its
    alternates, and the mirrors whose copy matches one of them, best first."""
    name = request.query.get("repo")
    if not name:
        raise web.HTTPBadRequest(text="400 Bad Request: use ?repo=<repo>-<ver>&arch=<arch>\n")
    arch = _arch(request, required=True)
    ref = _lookup(request, name)
    router, routed = _route(request, ref, arch)
    s = request.app[keys.LIVE].current
    now = router.clock()
    directory = ref.arch_dir(arch)
    repodata = router.holder.current.repodata
    history = repodata.repos.get(directory) if repodata is not None else None
    current, alternates = accepted(history.history if history else (), now, s.alternates_window)
    ranked = _usable(router, routed, ref, arch)
    urls = [
        MetalinkUrl(f"{_base(request, r)}{directory}/{REPOMD}", r.mirror.country) for r in ranked
    ]
    master = list_fallback(s.master, s.own_names)
    if not urls and master is not None:
        urls = [MetalinkUrl(f"{master}{directory}/{REPOMD}", None)]
    if directory not in targets(s):
        reason = (
            "no checksums are kept for this repository and arch (repodata_versions, "
            "repodata_arches); use mirrorlist= instead"
        )
    elif current is None:
        reason = "the master's repomd.xml has not been read yet; try again in a few minutes"
    elif not urls:
        reason = "no mirror holds current metadata for this repository right now"
    else:
        reason = ""
    if reason:
        # Never a metalink without hashes: librepo would verify nothing, yum 3 refuses it.
        _count(request, "metalink", ref, routed, [], 404)
        return web.Response(
            status=404,
            text=metalink_error(ref, arch, reason, now),
            content_type=METALINK_TYPE,
            headers={"Cache-Control": "no-store"},
        )
    assert current is not None
    body = metalink_xml(current, alternates, urls, now, s.mirrorlist_length)
    _count(request, "metalink", ref, routed, _names(ranked, s.mirrorlist_length), 200)
    return web.Response(
        text=body,
        content_type=METALINK_TYPE,
        headers={"Cache-Control": NO_SHARED_CACHE},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/mirrorlist", mirrorlist_by_query)
    app.router.add_get("/mirrorlist/{name}", mirrorlist_by_path)
    app.router.add_get("/mirrorlists/{repo}", mirrorlist_legacy)
    app.router.add_get("/metalink", metalink)
