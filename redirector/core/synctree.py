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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from redirector.core.condition import Condition, assess
from redirector.core.models import HierarchyEntry, Mirror, MirrorState, SyncInfo
from redirector.core.selection import Candidate, Policy

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

    def __init__(
        self,
        mirrors: Sequence[Mirror],
        master_aliases: Iterable[str],
        found: Mapping[str, str] | None = None,
    ) -> None:
        """`found`: the MIRRORNAME the poller found each mirror's own trace under, by name."""
        self.exact: dict[str, str] = {}
        self.loose: dict[str, str] = {}
        groups: list[tuple[str, list[str]]] = [(MASTER, [MASTER, *master_aliases])]
        found = found or {}
        for m in mirrors:
            hosts = [urlsplit(u).hostname or "" for u in (m.http, m.https) if u]
            names = [m.name, m.trace_name or found.get(m.name, ""), *hosts, m.ssh_host or ""]
            groups.append((m.name, names))
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
    condition: Condition | None = None  # a configured mirror's (core.condition); None: others
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
                    _median(lags) if lags else None,
                    max(lags) if lags else None,
                    _median(added) if added else None,
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
    max_lag: float = Policy().max_lag,
) -> SyncTree:
    """The real tree from what mirrors say, the config filling in where they say nothing.

    A mirror whose observed upstream differs from its configured one hangs under the observed
    one, flagged. An upstream loop is cut at the mirror that closes it, which hangs under the
    master, flagged. Lags come from `states` (MirrorState.lag at `now`); unconfigured hops have
    none.
    """
    found = {k: s.trace_name for k, s in states.items() if s.trace_name}
    edges = _Edges(Identities(mirrors, aliases, found))
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
        mine = by_name.get(k)
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
            condition=assess(Candidate(mine, st), now, max_lag).condition if mine else None,
            mirror=mine,
            children=tuple(sorted(children.get(k, []), key=label)),
        )
    order: list[str] = []
    stack = [MASTER]
    while stack:
        k = stack.pop()
        order.append(k)
        stack.extend(reversed(nodes[k].children))
    return SyncTree(nodes, tuple(order))


def _median(values: list[float]) -> float:
    """`statistics.median`, without importing `statistics` (and `decimal`, `fractions`) into
    every worker for one summary line."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
