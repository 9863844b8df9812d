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
    path = routed.path
    size, length = len("Link: "), len(path) if path.isascii() else len(path.encode())
    parts: list[str] = []
    ranked = routed.top(start + LINK_LIMIT + 1)  # cheap: not the whole decision
    for i, r in enumerate(ranked[start + 1 :]):  # rank i + 1 after the target's
        base, country = r.base, r.mirror.country
        entries = _ENTRIES.get(base)
        if entries is None or entries[0] != country:
            entries = _entries(base, country)
        suffix, fixed = entries[1][i]
        add = fixed + length + (2 if parts else 0)
        if size + add >= LINK_MAX_BYTES:
            break
        parts.append(f"<{base}{path}{suffix}")
        size += add
    return ", ".join(parts) if parts else None


# base URL -> its mirror's country, then for each rank from 1 on what surrounds the path in
# that entry and its length in bytes: made once per mirror rather than once per redirect,
# and looked up by a string whose hash Python keeps.
_Entries = tuple[str, tuple[tuple[str, int], ...]]
_ENTRIES: dict[str, _Entries] = {}
ENTRIES = 16384


def _entries(base: str, country: str) -> _Entries:
    suffixes = [f">; rel=duplicate; pri={pri}; geo={country.lower()}" for pri in PRIS]
    found = (country, tuple((s, len(f"<{base}{s}".encode())) for s in suffixes))
    if len(_ENTRIES) >= ENTRIES:
        _ENTRIES.clear()
    _ENTRIES[base] = found
    return found


PRIS = range(1, LINK_LIMIT + 1)  # the ranks an entry can have
