"""The sync tree: who really syncs from whom, and how lag adds up down the tiers (pure).

Mirrors say where they sync from in two places: `Upstream-mirror:` in their own ftpsync trace
(format C) and the last line of their `project/trace/_hierarchy`, where each sync appends
`<tracefile> <mirror name> <trace host> <upstream>` to its upstream's copy, so the file reads
master first, the mirror itself last. Those names are host names (RSYNC_HOST, MIRRORNAME),
which are matched to configured mirrors by name, trace name, URL hosts and ssh host, and to
the master by its URL host and trace name. A name matching nothing becomes an "external"
node: a hop outside the configured network.
"""

from __future__ import annotations

import posixpath
import re
import statistics
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from urllib.parse import urlsplit

from .models import HierarchyEntry, Mirror, MirrorState, SyncInfo
from .settings import format_bandwidth

MASTER = "master"  # the master's node key, and the `upstream` value naming it
MAX_HIERARCHY_LINES = 200  # a real chain is a handful of lines; the rest is not a _hierarchy
MAX_EXTERNAL = 50  # unconfigured hops drawn at most
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\[\]-]{0,252}")
_NO_UPSTREAM = frozenset({"unknown", "none", "-"})
# Leading labels that name a service rather than a machine: rsync.example.org and
# www.example.org are taken to be the same mirror when nothing matches exactly.
_SERVICE_LABELS = ("www.", "rsync.", "ftp.", "mirror.", "mirrors.")


def parse_hierarchy(body: bytes) -> tuple[HierarchyEntry, ...]:
    """The entries of a `_hierarchy` file, in order; lines that are not four names are skipped.

    An HTML page served with 200 for a missing file yields no entries.
    """
    text = body.decode("utf-8", errors="replace")
    if text.lstrip().startswith("<"):
        return ()
    out: list[HierarchyEntry] = []
    for line in text.splitlines()[:MAX_HIERARCHY_LINES]:
        fields = line.split()
        if len(fields) == 4 and all(_TOKEN.fullmatch(f) for f in fields):
            out.append(HierarchyEntry(*fields))
    return tuple(out)


def _norm(name: str) -> str:
    return name.strip().strip("[]").rstrip(".").lower()


def _loose(name: str) -> str:
    for label in _SERVICE_LABELS:
        if name.startswith(label) and "." in name[len(label) :]:
            return name[len(label) :]
    return name


class Identities:
    """Matches the names mirrors use for each other to node keys (configured name or MASTER)."""

    def __init__(self, mirrors: Sequence[Mirror], master_aliases: Iterable[str]) -> None:
        self.exact: dict[str, str] = {}
        self.loose: dict[str, str] = {}
        groups: list[tuple[str, list[str]]] = [(MASTER, [MASTER, *master_aliases])]
        for m in mirrors:
            hosts = [urlsplit(u).hostname or "" for u in (m.http, m.https) if u]
            groups.append((m.name, [m.name, m.trace_name or "", *hosts, m.ssh_host or ""]))
        for key, names in groups:  # the master first, then config order: first claim wins
            for name in filter(None, map(_norm, names)):
                self.exact.setdefault(name, key)
                self.loose.setdefault(_loose(name), key)

    def resolve(self, name: str | None) -> str | None:
        if not name:
            return None
        n = _norm(name)
        return self.exact.get(n) or self.loose.get(_loose(n))


def master_aliases(master_url: str, master_trace: str) -> tuple[str, ...]:
    """What mirrors call the master: its URL host and its trace file name."""
    return tuple(filter(None, (urlsplit(master_url).hostname, posixpath.basename(master_trace))))


@dataclass(frozen=True, slots=True)
class Node:
    """One mirror (or the master, or an unconfigured hop) in the tree."""

    key: str  # configured name, MASTER, or "ext:<host>"
    label: str
    kind: str  # "master", "mirror" or "external"
    parent: str | None  # None only for the master
    tier: int  # 0 the master, 1 syncs from the master, ...
    lag: float | None  # seconds behind the master (MirrorState.lag); None: unknown
    added: float | None  # lag minus the parent's lag: what this hop adds; None: unknown
    via: str  # how the parent is known: "trace", "hierarchy", "config", "assumed"
    said: str | None = None  # the upstream as the mirror named it, when observed
    configured: str | None = None  # the configured upstream, when stated
    mismatch: str | None = None  # why the drawn upstream is not the configured one
    status: str | None = None  # the poller's last status of a configured mirror
    mirror: Mirror | None = None
    children: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TierSummary:
    tier: int
    count: int
    median_lag: float | None
    worst_lag: float | None
    median_added: float | None


@dataclass(frozen=True, slots=True)
class SyncTree:
    nodes: Mapping[str, Node]
    order: tuple[str, ...]  # depth first from the master, children by label

    def walk(self) -> Iterator[Node]:
        return (self.nodes[k] for k in self.order)

    @property
    def depth(self) -> int:
        return max((n.tier for n in self.nodes.values()), default=0)

    def tiers(self) -> list[TierSummary]:
        """Per tier below the master: how far behind, and how much each hop adds."""
        out = []
        for t in range(1, self.depth + 1):
            nodes = [n for n in self.nodes.values() if n.tier == t]
            lags = [n.lag for n in nodes if n.lag is not None]
            added = [n.added for n in nodes if n.added is not None]
            out.append(
                TierSummary(
                    t,
                    len(nodes),
                    statistics.median(lags) if lags else None,
                    max(lags) if lags else None,
                    statistics.median(added) if added else None,
                )
            )
        return out


def observed_upstream(
    mirror: Mirror, info: SyncInfo | None, ids: Identities
) -> tuple[str | None, str]:
    """(the upstream the mirror names, where that came from: "trace" or "hierarchy")."""
    if info is None:
        return None, "config"
    if info.upstream and _norm(info.upstream) not in _NO_UPSTREAM:
        return info.upstream, "trace"
    for e in reversed(info.hierarchy):
        if mirror.name in {ids.resolve(e.mirror), ids.resolve(e.tracefile), ids.resolve(e.host)}:
            if _norm(e.upstream) in _NO_UPSTREAM:
                break
            return e.upstream, "hierarchy"
    return None, "config"


@dataclass(slots=True)
class _Hop:
    """One node's upstream while the tree is being built."""

    parent: str
    via: str
    said: str | None = None
    configured: str | None = None
    mismatch: str | None = None


class _Edges:
    """Who syncs from whom: configured mirrors first, then the unconfigured hops they name."""

    def __init__(self, ids: Identities) -> None:
        self.ids = ids
        self.hops: dict[str, _Hop] = {}
        self.external: dict[str, str] = {}  # key -> label, in discovery order

    def key_of(self, name: str) -> str:
        known = self.ids.resolve(name)
        if known is not None:
            return known
        key = "ext:" + _norm(name)
        if key not in self.external and len(self.external) < MAX_EXTERNAL:
            self.external[key] = name
        return key if key in self.external else MASTER

    def add_mirror(self, m: Mirror, info: SyncInfo | None) -> None:
        said, via = observed_upstream(m, info, self.ids)
        configured = m.upstream
        if said is not None:
            up = self.key_of(said)
        elif configured is not None:
            up, via = configured, "config"
        else:
            up, via = MASTER, "assumed"
        mismatch = None
        if said is not None and configured is not None and up != configured:
            mismatch = f"configured to sync from {configured}, its {via} says {said}"
        self.hops[m.name] = _Hop(up, via, said, configured, mismatch)

    def add_externals(self, lines: Sequence[HierarchyEntry]) -> None:
        """Where each unconfigured hop syncs from, as far as anyone's _hierarchy tells."""
        pending = list(self.external)
        while pending:
            key = pending.pop()
            said = None
            for e in reversed(lines):
                if key[4:] in {_norm(e.mirror), _norm(e.tracefile), _norm(e.host)}:
                    said = None if _norm(e.upstream) in _NO_UPSTREAM else e.upstream
                    break
            before = set(self.external)
            up = self.key_of(said) if said else MASTER
            self.hops[key] = _Hop(
                up if up != key else MASTER, "hierarchy" if said else "assumed", said
            )
            pending.extend(k for k in self.external if k not in before)

    def cut_loops(self) -> None:
        """Follow each chain up; the first node seen twice hangs under the master, flagged."""
        for start in list(self.hops):
            seen: list[str] = []
            cur = start
            while cur != MASTER and cur in self.hops:
                if cur in seen:
                    loop = " -> ".join([*seen[seen.index(cur) :], cur])
                    hop = self.hops[cur]
                    hop.parent = MASTER
                    hop.mismatch = f"upstream loop ({loop}): drawn under the master"
                    break
                seen.append(cur)
                cur = self.hops[cur].parent

    def tier(self, key: str) -> int:
        n = 0
        while key != MASTER and key in self.hops:
            key, n = self.hops[key].parent, n + 1
        return n


def build_tree(
    mirrors: Sequence[Mirror],
    infos: Mapping[str, SyncInfo],
    states: Mapping[str, MirrorState],
    *,
    master_label: str,
    aliases: Iterable[str],
    now: float,
) -> SyncTree:
    """The real tree from what mirrors say, the config filling in where they say nothing.

    A mirror whose observed upstream differs from its configured one hangs under the observed
    one, flagged. An upstream loop is cut at the mirror that closes it, which hangs under the
    master, flagged. Lags come from `states` (MirrorState.lag at `now`); unconfigured hops have
    none.
    """
    edges = _Edges(Identities(mirrors, aliases))
    for m in mirrors:
        edges.add_mirror(m, infos.get(m.name))
    edges.add_externals([e for info in infos.values() for e in info.hierarchy])
    for hop in list(edges.hops.values()):  # a configured upstream that was not passed in
        if hop.parent != MASTER and hop.parent not in edges.hops:
            edges.hops[hop.parent] = _Hop(MASTER, "assumed")
    edges.cut_loops()

    by_name = {m.name: m for m in mirrors}
    lag: dict[str, float | None] = {MASTER: 0.0}
    children: dict[str, list[str]] = {}
    for k, hop in edges.hops.items():
        st = states.get(k) if k in by_name else None
        lag[k] = st.lag(now) if st is not None else None
        children.setdefault(hop.parent, []).append(k)

    def label(k: str) -> str:
        return master_label if k == MASTER else edges.external.get(k, k)

    nodes = {
        MASTER: Node(
            MASTER, master_label, "master", None, 0, 0.0, None, "",
            children=tuple(sorted(children.get(MASTER, []), key=label)),
        )
    }  # fmt: skip
    for k, hop in edges.hops.items():
        own, up = lag[k], lag.get(hop.parent)
        st = states.get(k) if k in by_name else None
        nodes[k] = Node(
            key=k,
            label=label(k),
            kind="mirror" if k in by_name else "external",
            parent=hop.parent,
            tier=edges.tier(k),
            lag=own,
            added=own - up if own is not None and up is not None else None,
            via=hop.via,
            said=hop.said,
            configured=hop.configured,
            mismatch=hop.mismatch,
            status=st.status.value if st is not None else None,
            mirror=by_name.get(k),
            children=tuple(sorted(children.get(k, []), key=label)),
        )
    order: list[str] = []
    stack = [MASTER]
    while stack:
        k = stack.pop()
        order.append(k)
        stack.extend(reversed(nodes[k].children))
    return SyncTree(nodes, tuple(order))


# --- rendering -------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """3725 -> '1h02m', 90 -> '1m30s', negative -> '-1m30s'."""
    sign, s = ("-" if seconds < 0 else ""), int(abs(seconds))
    if s >= 86400:
        return f"{sign}{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{sign}{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{sign}{s // 60}m{s % 60:02d}s"
    return f"{sign}{s}s"


def shown_email(email: str | None, mode: str) -> str | None:
    """A contact email as the status page shows it: "show", "obfuscate" (name at host dot org)
    or "omit" (None)."""
    if email is None or mode == "omit":
        return None
    if mode == "show":
        return email
    local, _, domain = email.partition("@")
    return f"{local} at {' dot '.join(domain.split('.'))}"


def _lag_text(n: Node) -> str:
    if n.kind == "master":
        return "the master"
    if n.lag is None:
        return "lag unknown"
    hop = f" (+{duration(n.added)})" if n.added is not None and n.added >= 0 else ""
    if n.added is not None and n.added < 0:
        hop = f" ({duration(n.added)})"
    return f"lag {duration(n.lag)}{hop}"


BOX_W, BOX_H, COL, ROW, PAD = 200, 38, 250, 48, 8
_FILL = {"master": "#17324d", "mirror": "#ffffff", "external": "#f1f1f1"}
_TEXT = {"master": "#ffffff", "mirror": "#1d2228", "external": "#555555"}


def _node_svg(n: Node, x: int, y: int) -> str:
    cls = f"node {n.kind} tier-{n.tier}" + (" mismatch" if n.mismatch else "")
    stroke = "#c62828" if n.mismatch else ("#8a8f98" if n.kind == "external" else "#17324d")
    tip = [n.label, _lag_text(n)]
    if n.parent is not None:
        tip.append(f"syncs from {n.parent} ({n.via})")
    if n.mismatch:
        tip.append(n.mismatch)
    if n.status:
        tip.append(f"state: {n.status}")
    lag_attr = "" if n.lag is None else f' data-lag="{n.lag:.0f}"'
    added_attr = "" if n.added is None else f' data-added="{n.added:.0f}"'
    flag = "! " if n.mismatch else ""
    return (
        f'<g class="{cls}" data-name="{escape(n.key)}" data-tier="{n.tier}"{lag_attr}'
        f'{added_attr} data-parent="{escape(n.parent or "")}" transform="translate({x},{y})">'
        f"<title>{escape(' - '.join(tip))}</title>"
        f'<rect width="{BOX_W}" height="{BOX_H}" rx="6" fill="{_FILL[n.kind]}" '
        f'stroke="{stroke}" stroke-width="{2 if n.mismatch else 1}"/>'
        f'<text class="label" x="8" y="15" font-size="12" font-weight="600" '
        f'fill="{_TEXT[n.kind]}">{escape(flag + n.label[:30])}</text>'
        f'<text class="lag" x="8" y="31" font-size="11" fill="{_TEXT[n.kind]}">'
        f"{escape(_lag_text(n))}</text></g>"
    )


def render_svg(tree: SyncTree) -> str:
    """The tree drawn left to right: one column per tier, one row per node, depth first."""
    pos = {k: (PAD + tree.nodes[k].tier * COL, PAD + i * ROW) for i, k in enumerate(tree.order)}
    width = PAD * 2 + tree.depth * COL + BOX_W
    height = PAD * 2 + (len(tree.order) - 1) * ROW + BOX_H
    edges = []
    for n in tree.walk():
        if n.parent is None or n.parent not in pos:
            continue
        (px, py), (x, y) = pos[n.parent], pos[n.key]
        x1, y1, y2 = px + BOX_W, py + BOX_H // 2, y + BOX_H // 2
        mid = (x1 + x) // 2
        dash = ' stroke-dasharray="4 3"' if n.via in ("config", "assumed") else ""
        colour = "#c62828" if n.mismatch else "#6b7a89"
        edges.append(
            f'<path class="edge" data-from="{escape(n.parent)}" data-to="{escape(n.key)}" '
            f'd="M{x1},{y1} C{mid},{y1} {mid},{y2} {x},{y2}" fill="none" stroke="{colour}" '
            f'stroke-width="1.5"{dash}/>'
        )
    boxes = [_node_svg(tree.nodes[k], *pos[k]) for k in tree.order]
    return (
        f'<svg class="synctree" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'aria-label="Sync tree: {len(tree.order) - 1} mirrors in {tree.depth} tiers" '
        f'font-family="system-ui, sans-serif">' + "".join(edges + boxes) + "</svg>"
    )


def _facts(m: Mirror, email_mode: str) -> str:
    parts = []
    if m.sync:
        parts.append(m.sync)
    if m.bandwidth:
        parts.append(format_bandwidth(m.bandwidth))
    contact = m.contact_name or ""
    email = shown_email(m.contact_email, email_mode)
    if email:
        contact = f"{contact} <{email}>" if contact else email
    if contact:
        parts.append(f"contact {contact}")
    return ", ".join(parts)


def render_html(tree: SyncTree, *, email_mode: str = "obfuscate") -> str:
    """The status-page fragment: the drawing, lag per tier, the flags, and a text version."""
    rows = "".join(
        f'<tr data-tier="{t.tier}"><td>tier {t.tier}</td><td class="num">{t.count}</td>'
        f'<td class="num">{duration(t.median_lag) if t.median_lag is not None else "-"}</td>'
        f'<td class="num">{duration(t.worst_lag) if t.worst_lag is not None else "-"}</td>'
        f'<td class="num">'
        f"{'+' + duration(t.median_added) if t.median_added is not None else '-'}</td></tr>"
        for t in tree.tiers()
    )
    table = (
        '<table class="mini synctiers"><tr><th>Tier</th><th>Mirrors</th><th>Median lag</th>'
        f"<th>Worst lag</th><th>Added by the hop (median)</th></tr>{rows}</table>"
    )
    flagged = [n for n in tree.walk() if n.mismatch]
    flags = (
        '<ul class="sync-flags">'
        + "".join(
            f'<li data-name="{escape(n.key)}"><b>{escape(n.label)}</b>: {escape(n.mismatch or "")}'
            "</li>"
            for n in flagged
        )
        + "</ul>"
        if flagged
        else ""
    )
    items = []
    for n in tree.walk():
        if n.kind == "master":
            continue
        up = tree.nodes[n.parent].label if n.parent is not None else "?"
        facts = _facts(n.mirror, email_mode) if n.mirror is not None else "not configured"
        items.append(
            f'<li data-name="{escape(n.key)}" data-tier="{n.tier}">'
            f"{'&nbsp;&nbsp;' * (n.tier - 1)}<b>{escape(n.label)}</b> "
            f"&larr; {escape(up)} <small>({escape(n.via)})</small>: {escape(_lag_text(n))}"
            f"{' <small>' + escape(facts) + '</small>' if facts else ''}</li>"
        )
    legend = (
        "<p><small>Drawn from each mirror's trace (<code>Upstream-mirror:</code>) and "
        "<code>project/trace/_hierarchy</code>; dashed lines are upstreams known only from the "
        "config. Lag is how long the master has had content the mirror lacks; (+x) is what "
        "the hop from its upstream adds. Red: the real upstream differs from the configured "
        "one.</small></p>"
    )
    return (
        f'<div class="synctree-wrap" style="overflow-x:auto">{render_svg(tree)}</div>'
        f"{table}{flags}"
        f'<details><summary>As text</summary><ul class="synctree-list">{"".join(items)}'
        f"</ul></details>{legend}"
    )
