"""What a downloader may ask of a hashed file: its hashes, its facts, a Metalink of mirrors.

``?sha256`` (``?md5``, ``?sha1``, ``?sha512``) answers the hex digest as text, ``<file>.sha256``
the ``sha256sum`` line; ``?fileinfo`` the facts as JSON; ``?meta4``, ``<file>.meta4`` or
``Accept: application/metalink4+xml`` a Metalink 4 document, ``<file>.metalink`` Metalink 3.
A suffix URL is answered only for a file whose facts are known (otherwise it may be a real
file on the mirrors, and is redirected like any other).
"""

from __future__ import annotations

import json
import time

from aiohttp import web

from redirector.core.filefacts import (
    ALGORITHMS,
    META4_TYPE,
    FileFacts,
    accepts_meta4,
    fileinfo,
    hash_text,
    query_request,
    suffix_request,
)
from redirector.core.humanize import rfc3339
from redirector.core.metalink4 import DownloadUrl, metalink3_xml, metalink4_xml
from redirector.router import Routed
from redirector.store.facts import FactsHolder
from redirector.web import keys

METALINK3_TYPE = "application/metalink+xml"
NO_SHARED_CACHE = "private, no-store"  # the mirrors listed depend on who asks


def asked(holder: FactsHolder, path: str, query: str, accept: str | None) -> tuple[str, str, bool]:
    """(the file's path, what is asked, whether by suffix): what is "" for a plain download."""
    if query:
        word = query_request(query)
        if word is not None:
            return path, word, False
    sfx = suffix_request(path)
    if sfx is not None and holder.get(sfx[0]) is not None:
        return sfx[0], sfx[1], True
    if accept is not None and accepts_meta4(accept):
        return path, "meta4", False
    return path, "", False


def _not_known(what: str, path: str) -> web.Response:
    return web.Response(
        status=404,
        text=f"404 Not Found: no {what} is known for /{path}\n",
        headers={"Cache-Control": "no-store"},
    )


def facts_answer(facts: FileFacts | None, path: str, want: str, suffix: bool) -> web.Response:
    """The answer to ``?<algorithm>``, ``.<algorithm>`` and ``?fileinfo``."""
    if want in ALGORITHMS:
        text = None if facts is None else hash_text(facts, want, with_name=suffix)
        if text is None:
            return _not_known(f"{want} hash", path)
        return web.Response(
            text=text, content_type="text/plain", headers={"Cache-Control": "no-cache"}
        )
    if facts is None:
        return _not_known("size or hash", path)
    body = fileinfo(facts, rfc3339(facts.mtime))
    return web.Response(
        text=json.dumps(body, indent=2) + "\n",
        content_type="application/json",
        headers={"Cache-Control": "no-cache"},
    )


async def metalink(
    request: web.Request, routed: Routed, facts: FileFacts | None, want: str
) -> web.Response:
    """A Metalink 4 (`want` "meta4") or 3 document: the mirrors that have the file, best
    first, the master alone when none does."""
    app = request.app
    holders = await app[keys.VERIFIER].holders(routed)
    urls = [DownloadUrl(r.base + routed.path, r.mirror.country) for r in holders]
    if not urls:
        urls = [DownloadUrl(app[keys.LIVE].current.master + routed.path, None)]
    render = metalink4_xml if want == "meta4" else metalink3_xml
    return web.Response(
        text=render(routed.path, facts, urls, time.time()),
        content_type=META4_TYPE if want == "meta4" else METALINK3_TYPE,
        headers={"Cache-Control": NO_SHARED_CACHE, "Vary": "Accept"},
    )
