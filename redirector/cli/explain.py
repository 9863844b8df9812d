"""`redirector explain IP PATH`: the decision for one client and path, as the server makes it."""

from __future__ import annotations

import time
from typing import TextIO
from urllib.parse import urlsplit

from redirector.config.settings import Settings
from redirector.core.clientip import Client, parse_ip
from redirector.core.paths import BadPath, tree_path, tree_prefix
from redirector.geo import open_geo
from redirector.router import Router
from redirector.snapshot import SnapshotHolder
from redirector.store.base import open_store
from redirector.views.explain import explain, render_text


def cli_path(text: str) -> str:
    """A path as a user types it -> the path below the tree root (BadPath when refused).

    Takes a whole URL, a path with its tree prefix (``/smeserver/...``, ``/pub/smeserver/...``)
    or a path below the tree root (``releases/10/...``).
    """
    raw = urlsplit(text).path if "://" in text else text.partition("?")[0]
    raw = "/" + raw.lstrip("/")
    prefix = tree_prefix(raw)
    if prefix is None:
        return tree_path("/smeserver" + raw, "/smeserver")
    return tree_path(raw, prefix)


async def explain_command(
    settings: Settings, ip_text: str, path_text: str, scheme: str, out: TextIO, err: TextIO
) -> int:
    """`redirector explain`: the decision for a client and path, from the store's state.

    With Redis the state is the one every serving process uses. Without `redis_url` the state
    lives only inside the serving process, so this command sees every mirror as not checked
    yet (and says so): ask the server instead, with ``?mirrorlist`` on the URL.
    Exit status 0 when a mirror would be chosen, 1 for the master or an unreachable store,
    2 for a bad address or path.
    """
    ip = parse_ip(ip_text)
    if ip is None:
        print(f"not an IP address: {ip_text!r}", file=err)
        return 2
    try:
        path = cli_path(path_text)
    except BadPath as e:
        print(f"refused path {path_text!r}: {e}", file=err)
        return 2
    holder = SnapshotHolder(settings.mirrors)
    if settings.redis_url is None:
        print("no redis_url in the config: the state lives inside the serving process, so "
              "every mirror shows as not checked yet here; ask the server instead: "
              "append ?mirrorlist to the URL", file=err)  # fmt: skip
    else:
        store = open_store(settings.redis_url, prefix=settings.redis_prefix)
        try:
            await holder.refresh(store)
        finally:
            await store.close()
        if holder.store_error is not None:
            print(f"store unreachable: {holder.store_error}", file=err)
            return 1
    reader, warning = open_geo(settings)
    try:
        router = Router(settings, holder, reader)
        routed = router.route(Client(ip, scheme), path)
        expl = explain(
            routed, holder.current.candidates, router.policy, now=time.time(), geo_note=warning
        )
    finally:
        if reader is not None:
            reader.close()
    out.write(render_text(expl))
    return 1 if expl.fallback else 0
