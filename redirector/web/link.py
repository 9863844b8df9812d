"""The RFC 6249 Link header of a redirect: the next best mirrors, for clients that retry."""

from __future__ import annotations

from redirector.router import Routed

LINK_LIMIT = 5  # alternatives in the Link header
LINK_MAX_BYTES = 360  # the whole "Link: ..." header line, for clients with small header buffers
LINK_DEPTH = 8  # how far down the ranking a redirect's target is looked for


def sent_to(routed: Routed, target: str, depth: int = LINK_DEPTH) -> int | None:
    """The rank (0 first) of the mirror `target` points at; None for the master or unknown.

    The redirect may not go to the chosen mirror: `verify` moves it down the ranking when the
    file is missing there. The usual case (`target` is `routed.target`) costs one comparison.
    """
    if routed.fallback:
        return None
    if target == routed.target:
        return 0
    path = routed.path
    for i, r in enumerate(routed.top(depth)):
        if target == r.base + path:
            return i
    return None


def link_header(routed: Routed, target: str | None = None) -> str | None:
    """RFC 6249 duplicates for the next best mirrors after the one the client is sent to.

    At most `LINK_LIMIT` entries, best first, and the header line ("Link: " + value) stays
    under `LINK_MAX_BYTES`: an entry that would not fit is left off, with all after it. None
    when there is no alternative, or the client goes to the master.
    """
    start = 0 if target is None else sent_to(routed, target)
    if start is None:
        return None
    ranked = routed.top(start + LINK_LIMIT + 1)  # cheap: not the whole decision
    parts: list[str] = []
    size = len("Link: ")
    path = routed.path
    for pri, r in enumerate(ranked[start + 1 :], start=1):
        entry = f"<{r.base}{path}>; rel=duplicate; pri={pri}; geo={r.mirror.country.lower()}"
        add = (len(entry) if entry.isascii() else len(entry.encode())) + (2 if parts else 0)
        if size + add >= LINK_MAX_BYTES:
            break
        parts.append(entry)
        size += add
    return ", ".join(parts) if parts else None
