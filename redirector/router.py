"""Routing a client to a mirror: client address, location and snapshot in, a cached decision out.

No aiohttp here: the handlers hand in the request's raw parts, so the same path serves the
HTTP handlers, `redirector explain` and the benchmarks.

Why caches, and why they never change an answer. `selection.select` is O(mirrors) per request:
every mirror checked, every distance computed, the rendezvous hash of every tier member. Most of
that depends on far less than the whole request, so each layer is computed once and kept:

1. *Who* (per header tuple: peer, X-Forwarded-For, X-Forwarded-Proto, scheme): the resolved
   client, its GeoIP location and its rendezvous seed. Pure functions of those strings, the
   trusted proxies and the GeoIP reader; dropped when either changes.
2. *Eligibility* (per path class, scheme, IPv6 and the client as the mirrors' own rules see it:
   which of their netblocks and AS numbers hold it, and its country or continent only when
   some mirror is country- or continent-only): which mirrors pass `selection.check` and the
   rejections of the others. A request path matters to `check` only through which configured or
   observed subtree prefixes it starts with (exclude, lacks, repodata directories), so paths
   with the same matches share one entry. An entry holds for one snapshot (a swap starts
   afresh) and for a window of time computed from the states: it ends before the first moment a
   mirror's lag or last check crosses `max_lag`. Rejections hold times and facts, never words
   or seconds (the views word them), so inside the window `check` gives the same answers by
   construction and the cached decision equals `select`'s exactly.
3. *Cell* (per eligibility entry and location): `selection.layout`'s groups (the client's
   networks, the nearest tier with its same-country weight bonus) and the distances. It
   depends on the eligible mirrors, the networks and the location (coordinates, country)
   only, so it survives a new snapshot or window whose eligible mirrors are the same ones.
4. Per request what is left is the weighted rendezvous among the tier (usually a handful of
   mirrors, often one) and the Location string.

The full `Decision` (every ranked mirror, every rejection) is built only when asked for
(`Routed.decision`); a redirect needs only the chosen mirror, Link headers only `Routed.top(n)`.
Every cache is bounded and simply emptied when full: refilling is cheap, and no LRU
bookkeeping is paid per hit.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from redirector.config.settings import Settings
from redirector.core.clientip import Client, ProxyTrust, network_key
from redirector.core.models import Location, Mirror, MirrorState
from redirector.core.paths import tree_path, tree_prefix
from redirector.core.selection import (
    RULES,
    Candidate,
    Decision,
    Policy,
    Ranked,
    Reason,
    Rejection,
    Whom,
    base_for,
    check,
    client_seed,
    layout,
    spread,
    too_few_https,
    whom_of,
)
from redirector.core.topology import fallback_target
from redirector.geo import GeoReader
from redirector.snapshot import Snapshot, SnapshotHolder

# Cache bounds. A full cache is emptied, not trimmed: see the module docstring.
WHO_CACHE = 131072  # distinct (peer, forwarded headers, scheme) tuples: about 0.5 kB each
WHO_KEY_MAX = 160  # longer X-Forwarded-For values (long proxy chains, junk) are not cached
PATH_CACHE = 16384  # request paths -> path class, and raw paths -> checked tree paths
PATH_KEY_MAX = 256
CELL_CACHE = 4096  # locations per eligibility entry
ORDER_CACHE = 131072  # tier orders kept per client network, over all cells
ELIGIBILITY_CACHE = 1024  # (path class, scheme, IPv6) entries
HEAD = 8  # ranked mirrors after the tier kept per cell, for Link headers; more are rebuilt

# Validity windows end this much before the exact crossing: `now - t > max_lag` and
# `now > t + max_lag` can differ by a rounding, and ending a window early only costs a refill.
_EARLY = 1e-3


# Not frozen, on purpose: one is made per redirect, and a frozen dataclass's __init__ (an
# object.__setattr__ per field) costs a microsecond more. Treat it as immutable all the same.
@dataclass(slots=True)
class Routed:
    """A decision with what it was made from, for the response, logs and explain views.

    `chosen` and `target` are what a redirect needs, `top(n)` what Link headers and the
    per-file check need. `decision` (every ranked mirror and every rejection, equal to
    `selection.select`'s) is assembled on demand from the router's caches.
    """

    client: Client
    location: Location | None
    path: str
    target: str  # the URL the client is sent to (a fallback may be topology.LOCAL_PREFIX...)
    fallback: bool  # no mirror was eligible: the master
    chosen: Ranked | None = None
    _cell: _Cell | None = field(default=None, repr=False, compare=False)
    _order: tuple[Ranked, ...] = field(default=(), repr=False, compare=False)  # the tier
    _rejected: tuple[Rejection, ...] = field(default=(), repr=False, compare=False)
    asn: int | None = None  # the client's autonomous system, when an ASN database knows it

    @property
    def decision(self) -> Decision:
        """Every eligible mirror in rank order and every rejection, as `select` gives them."""
        if self._cell is None:
            return Decision((), self._rejected)
        return Decision(self._cell.ranked(self._order), self._rejected)

    def top(self, n: int) -> tuple[Ranked, ...]:
        """The first `n` ranked mirrors (`decision.ranked[:n]`), cheaply for small `n`."""
        if n <= len(self._order):
            return self._order[: max(0, n)]
        if self._cell is None:
            return self._order
        return self._cell.top(self._order, n)


@dataclass(frozen=True, slots=True)
class _Who:
    """One client as resolved from a request's peer and headers, with what routing needs."""

    client: Client
    location: Location | None
    cell: int | None  # the cell key: the id of the coordinates and country
    seed: int  # rendezvous seed of the client's network
    ipv6: bool
    asn: int | None  # from the ASN database, for the mirrors' AS rules


class _Cell:
    """The ranking of one eligibility entry at one location, minus the per-client spread.

    `groups` are `selection.layout`'s (the client's networks, then the nearest tier, each in
    candidate order with seeds and weights); `head` the first of the rest by distance.
    """

    __slots__ = ("_from", "_scheme", "groups", "head", "orders", "rest_count", "single")

    def __init__(
        self,
        eligible: tuple[Mirror, ...],
        location: Location | None,
        scheme: str,
        policy: Policy,
        seeds: dict[str, int],
        whom: Whom,
    ) -> None:
        lay = layout(eligible, scheme, location, whom, policy, seeds)
        self._scheme = scheme
        # What the layout was made from, not the rest itself: beyond the head, the rest is
        # only read by explain views and deep file checks, and held in every cell it was
        # most of the router's memory (a mirror and a distance per mirror per location).
        self._from = (eligible, location, whom, policy, seeds)
        self.groups = lay.groups
        # Only as many Ranked values as Link headers ask for are made up front.
        self.head: tuple[Ranked, ...] = tuple(
            Ranked(m, base_for(m, scheme), d, False) for m, d in lay.rest[:HEAD]
        )
        self.rest_count = len(lay.rest)
        members = [r for group in lay.groups for r, _, _ in group]
        self.single: tuple[Ranked, ...] = tuple(members) if len(members) <= 1 else ()
        # The groups' order per client seed: the rendezvous hashes are the costly part of a
        # decision, and clients come back. Bounded by the router (ORDER_CACHE).
        self.orders: dict[int, tuple[Ranked, ...]] = {}

    @property
    def spread_size(self) -> int:
        """How many mirrors the per-client spread orders (the groups' members)."""
        return sum(len(g) for g in self.groups)

    def order(self, seed: int) -> tuple[Ranked, ...]:
        """The groups as ranked for a client with rendezvous seed `seed` (`selection.spread`)."""
        if len(self.groups) == 1:
            return tuple(spread(self.groups[0], seed))
        out: list[Ranked] = []
        for group in self.groups:
            out.extend(spread(group, seed))
        return tuple(out)

    def top(self, order: tuple[Ranked, ...], n: int) -> tuple[Ranked, ...]:
        """`ranked(order)[:n]`, from the kept head of the rest when it reaches that far."""
        if n - len(order) <= len(self.head) or self.rest_count <= len(self.head):
            return (order + self.head)[:n]
        return self.ranked(order)[:n]

    def ranked(self, order: tuple[Ranked, ...]) -> tuple[Ranked, ...]:
        """Everything `select` ranks: the groups in this client's `order`, the rest by distance."""
        if self.rest_count <= len(self.head):
            return order + self.head
        scheme = self._scheme
        eligible, location, whom, policy, seeds = self._from
        rest = layout(eligible, scheme, location, whom, policy, seeds).rest
        more = tuple(Ranked(m, base_for(m, scheme), d, False) for m, d in rest[HEAD:])
        return order + self.head + more


@dataclass(frozen=True, slots=True)
class _Rules:
    """What of the mirrors' own rules a client's answer depends on (see `Router._whom`)."""

    networked: tuple[Mirror, ...]  # mirrors with netblocks or AS numbers
    country: bool  # some mirror is country-only
    continent: bool  # some mirror is continent-only

    @classmethod
    def of(cls, candidates: Sequence[Candidate]) -> _Rules:
        mirrors = [c.mirror for c in candidates]
        return cls(
            tuple(m for m in mirrors if m.netblocks or m.asns),
            any(m.country_only for m in mirrors),
            any(m.continent_only for m in mirrors),
        )

    @property
    def none(self) -> bool:
        return not (self.networked or self.country or self.continent)


_NOBODY = Whom()
WHOM_CACHE = 32768  # clients' network matches, per (address, AS)


# (path class, scheme, IPv6, the client as the mirrors' rules see it: None when none have any)
_EntryKey = tuple[int, str, bool, Whom | None]  # (path class id, scheme, IPv6, whom)


class _Eligibility:
    """Which mirrors may serve one (path class, scheme, IPv6, client as the mirrors' rules see
    it) during [valid_from, valid_until)."""

    __slots__ = ("cells", "eligible", "rejected", "valid_from", "valid_until")

    def __init__(
        self,
        eligible: tuple[Mirror, ...],
        rejected: tuple[Rejection, ...],
        valid_from: float,
        valid_until: float,
    ) -> None:
        self.eligible = eligible
        self.rejected = rejected
        self.valid_from = valid_from
        self.valid_until = valid_until
        self.cells: dict[int | None, _Cell] = {}


def policy_of(settings: Settings) -> Policy:
    """Selection's knobs from the settings."""
    https_min = settings.https_min_mirrors if settings.https_policy == "master" else 0
    return Policy(settings.max_lag, settings.closeness_km, settings.closeness_ratio, https_min)


def valid_until(c: Candidate, why: Rejection | None, now: float, max_lag: float) -> float:
    """Until when `check(c, ...)` keeps giving `why` (None: eligible) for the same request.

    Mirrors `selection.check`: only the lag test and the last-check test depend on time; every
    earlier test depends on the request alone. A rejection holds times, not seconds or words,
    so it stays equal to `check`'s as long as its reason does. A new time-dependent test in
    `check` must be added here (tests/test_router.py compares the router with `select` across
    time to catch exactly that).
    """
    s: MirrorState | None = c.state
    if s is None:
        return math.inf
    # A mirror refused by its own rules passed every other test: it goes stale like one that
    # serves, and then says so instead.
    if why is None or why.reason in RULES:
        until = s.checked_at + max_lag
        if s.behind_since is not None:
            until = min(until, s.behind_since + max_lag)
        return until
    # STALE stays STALE: the lag only grows while the state is the same.
    if why.reason is Reason.OUTDATED and s.behind_since is not None:
        return s.behind_since + max_lag  # it turns STALE once the lag crosses too
    return math.inf


@dataclass(frozen=True, slots=True)
class _PathTests:
    """What of a request path `check` looks at: the subtree prefixes it starts with."""

    slashed: frozenset[str]  # prefixes ending in "/"
    loose: tuple[str, ...]  # any other prefix (none today; kept correct if one appears)
    exact: frozenset[str]  # whole paths with a rule of their own (".../repodata")

    @classmethod
    def of(cls, candidates: Sequence[Candidate]) -> _PathTests:
        prefixes: set[str] = set()
        exact: set[str] = set()
        for c in candidates:
            prefixes.update(c.mirror.exclude)
            if c.state is not None:
                prefixes.update(c.state.lacks)
            for d in c.bad_repodata:
                prefixes.add(d + "/repodata/")
                exact.add(d + "/repodata")
        return cls(
            frozenset(p for p in prefixes if p.endswith("/")),
            tuple(sorted(p for p in prefixes if not p.endswith("/"))),
            frozenset(exact),
        )

    def classify(self, path: str) -> tuple[str, ...]:
        """The prefixes (and whole-path matches, marked "=") `path` is subject to, in order.

        A prefix ending in "/" matches exactly when it is the path up to one of the path's
        slashes: one set lookup per slash instead of one startswith per prefix.
        """
        matched: list[str] = []
        slashed = self.slashed
        if slashed:
            i = path.find("/")
            while i >= 0:
                head = path[: i + 1]
                if head in slashed:
                    matched.append(head)
                i = path.find("/", i + 1)
        for p in self.loose:
            if path.startswith(p):
                matched.append(p)
        if path in self.exact:
            matched.append("=" + path)
        return tuple(matched)


class Router:
    """Turns (peer, headers, path) into a Routed decision from the current snapshot."""

    def __init__(
        self,
        settings: Settings,
        holder: SnapshotHolder,
        geo: GeoReader | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.holder = holder
        self.clock = clock
        self.geo = geo
        self.reconfigure(settings)

    # --- configuration -----------------------------------------------------------------

    def reconfigure(self, settings: Settings) -> None:
        """Use new settings (a reloaded config) from the next request on; caches start afresh."""
        self.settings = settings
        self.trust = ProxyTrust(settings.trusted_proxies)
        self.policy = policy_of(settings)
        # A fallback's target: the master's public URL, or the local tree's nginx location.
        self._master = fallback_target(settings.fallback, settings.master, "")
        # ftp-only mirrors are a browser's last resort (web/redirect.py): asked only if any.
        self.has_ftp_only = any(m.http is None and m.https is None for m in settings.mirrors)
        self._who: dict[tuple[str | None, str | None, str | None, str], _Who] = {}
        self._raw_paths: dict[str, str] = {}
        self._snap: Snapshot | None = None
        self._tests = _PathTests(frozenset(), (), frozenset())
        # Path classes and cells are keyed by small ints: dict keys hashed on every request,
        # and a tuple's hash is computed anew each time. Ids are never reused.
        self._classes: dict[str, int] = {}
        self._class_ids: dict[tuple[str, ...], int] = {}
        self._ids = itertools.count()
        self._entries: dict[_EntryKey, _Eligibility] = {}
        self._stale: dict[_EntryKey, _Eligibility] = {}
        self._orders = 0  # tier orders kept in the cells, for the ORDER_CACHE bound
        self._rules = _Rules((), False, False)
        self._no_rules = True  # no mirror has rules about clients: every client is _NOBODY
        self._nets: dict[tuple[object, int | None], tuple[tuple[str, str], ...]] = {}
        self._cell_keys: dict[tuple[float, float, str | None], int] = {}

    def swap_geo(self, geo: GeoReader | None) -> None:
        """Use another GeoIP reader (None: location-blind) from the next request on."""
        self.geo = geo
        self._who = {}

    def _swap(self, snap: Snapshot) -> None:
        """A new snapshot: eligibility starts afresh; path classes stay if the rules did."""
        self._snap = snap
        tests = _PathTests.of(snap.candidates)
        if tests != self._tests:
            self._tests = tests
            self._classes = {}
        rules = _Rules.of(snap.candidates)
        if rules != self._rules:
            self._rules = rules
            self._no_rules = rules.none
            self._nets = {}
        # The previous snapshot's entries, kept only so that their cells can be carried over.
        self._stale = self._entries
        self._entries = {}

    # --- the request path --------------------------------------------------------------

    def tree_path(self, raw_path: str) -> str | None:
        """`paths.tree_path` of a raw request path, None when it is not under the tree.

        Raises `paths.BadPath` for a path to refuse. Checked paths are remembered: the checks
        are pure, popular files are asked for over and over, and a dict lookup is cheaper than
        the regular expressions. Refusals are not remembered.
        """
        path = self._raw_paths.get(raw_path)
        if path is None:
            prefix = tree_prefix(raw_path)
            if prefix is None:
                return None
            path = tree_path(raw_path, prefix)
            if len(raw_path) <= PATH_KEY_MAX:
                if len(self._raw_paths) >= PATH_CACHE:
                    self._raw_paths = {}
                self._raw_paths[raw_path] = path
        return path

    def client(
        self, peer: str | None, forwarded_for: str | None, forwarded_proto: str | None, scheme: str
    ) -> Client:
        """The client a request comes from (see `clientip.ProxyTrust.resolve`)."""
        return self._who_of(peer, forwarded_for, forwarded_proto, scheme).client

    def locate(self, client: Client) -> Location | None:
        if self.geo is None or client.ip is None:
            return None
        return self.geo.locate(client.ip)

    def resolve(
        self,
        peer: str | None,
        forwarded_for: str | None,
        forwarded_proto: str | None,
        scheme: str,
        path: str,
        now: float | None = None,
    ) -> Routed:
        """The hot path: the request's raw parts in, a decision out (see `route`)."""
        who = self._who_of(peer, forwarded_for, forwarded_proto, scheme)
        return self._route(who, path, self.clock() if now is None else now)

    def route(self, client: Client, path: str, now: float | None = None) -> Routed:
        """Decide where `client` goes for `path` (below the tree root, percent-encoded).

        Equal to `selection.select` for the current snapshot at `now` (default: the clock).
        """
        return self._route(self._make_who(client), path, self.clock() if now is None else now)

    def _who_of(
        self, peer: str | None, forwarded_for: str | None, forwarded_proto: str | None, scheme: str
    ) -> _Who:
        key = (peer, forwarded_for, forwarded_proto, scheme)
        who = self._who.get(key)
        if who is None:
            who = self._make_who(self.trust.resolve(peer, forwarded_for, forwarded_proto, scheme))
            if forwarded_for is None or len(forwarded_for) <= WHO_KEY_MAX:
                if len(self._who) >= WHO_CACHE:
                    self._who = {}
                self._who[key] = who
        return who

    def asn(self, client: Client) -> int | None:
        """The client's autonomous system, when an ASN database knows it."""
        if self.geo is None or client.ip is None:
            return None
        return self.geo.asn(client.ip)

    def _make_who(self, client: Client) -> _Who:
        loc = self.locate(client)
        ip = client.ip
        return _Who(
            client=client,
            location=loc,
            cell=None if loc is None else self._cell_key(loc),
            seed=client_seed(network_key(ip)),
            ipv6=ip is not None and ip.version == 6,
            asn=self.asn(client),
        )

    def _cell_key(self, loc: Location) -> int:
        """The cell key of `loc`: one id per place (coordinates and country)."""
        key = (loc.latitude, loc.longitude, loc.country)
        found = self._cell_keys.get(key)
        if found is None:
            if len(self._cell_keys) >= WHO_CACHE:
                self._cell_keys = {}
            found = self._cell_keys[key] = next(self._ids)
        return found

    def _class_id(self, cls: tuple[str, ...]) -> int:
        """The id of a path class (`_PathTests.classify`)."""
        found = self._class_ids.get(cls)
        if found is None:
            if len(self._class_ids) >= PATH_CACHE:
                self._class_ids = {}
            found = self._class_ids[cls] = next(self._ids)
        return found

    def _whom(self, who: _Who) -> Whom:
        """The client as the mirrors' rules see it, reduced to what they look at.

        Country and continent count only when some mirror is country- or continent-only, so
        that without such rules every client shares its eligibility entries; the networks
        that hold the client are looked up once per (address, AS).
        """
        rules = self._rules
        nets: tuple[tuple[str, str], ...] = ()
        if rules.networked:
            key = (who.client.ip, who.asn)
            found = self._nets.get(key)
            if found is None:
                found = whom_of(rules.networked, None, who.client.ip, who.asn).nets
                if len(self._nets) >= WHOM_CACHE:
                    self._nets = {}
                self._nets[key] = found
            nets = found
        loc = who.location
        country = loc.country if rules.country and loc is not None else None
        continent = loc.continent if rules.continent and loc is not None else None
        return Whom(country, continent, nets)

    def _route(self, who: _Who, path: str, now: float) -> Routed:
        snap = self.holder.current
        if snap is not self._snap:
            self._swap(snap)
        cls = self._classes.get(path)
        if cls is None:
            cls = self._class_id(self._tests.classify(path))
            if len(path) <= PATH_KEY_MAX:
                if len(self._classes) >= PATH_CACHE:
                    self._classes = {}
                self._classes[path] = cls
        scheme = who.client.scheme
        # None, not _NOBODY, when no mirror has rules about clients: a dataclass hashes in
        # Python, and this key is hashed on every request.
        whom = None if self._no_rules else self._whom(who)
        key = (cls, scheme, who.ipv6, whom)
        entry = self._entries.get(key)
        if entry is None or not entry.valid_from <= now < entry.valid_until:
            entry = self._fill(snap, key, path, scheme, who.ipv6, now, entry)
        cell = entry.cells.get(who.cell)
        if cell is None:
            if len(entry.cells) >= CELL_CACHE:
                entry.cells = {}
            cell = _Cell(
                entry.eligible, who.location, scheme, self.policy, snap.seeds, whom or _NOBODY
            )
            entry.cells[who.cell] = cell
        if cell.single or not cell.groups:
            order = cell.single
        else:
            memo = cell.orders.get(who.seed)
            if memo is None:
                memo = cell.order(who.seed)
                if self._orders >= ORDER_CACHE:
                    self._forget_orders()
                cell.orders[who.seed] = memo
                self._orders += 1
            order = memo
        if not order:
            return Routed(
                who.client, who.location, path, self._master + path, True, None, cell, order,
                entry.rejected, who.asn,
            )  # fmt: skip
        chosen = order[0]
        return Routed(
            who.client, who.location, path, chosen.base + path, False, chosen, cell, order,
            entry.rejected, who.asn,
        )  # fmt: skip

    def _forget_orders(self) -> None:
        """Empty every cell's order memo: the bound of ORDER_CACHE orders in all is reached."""
        for entries in (self._entries, self._stale):
            for entry in entries.values():
                for cell in entry.cells.values():
                    cell.orders.clear()
        self._orders = 0

    def _fill(
        self,
        snap: Snapshot,
        key: _EntryKey,
        path: str,
        scheme: str,
        ipv6: bool,
        now: float,
        expired: _Eligibility | None,
    ) -> _Eligibility:
        max_lag = self.policy.max_lag
        eligible: list[Mirror] = []
        rejected: list[Rejection] = []
        until = math.inf
        whom = key[3] or _NOBODY
        for c in snap.candidates:
            why = check(c, path, scheme, ipv6, now, max_lag, whom)
            if why is None:
                eligible.append(c.mirror)
            else:
                rejected.append(why)
            until = min(until, valid_until(c, why, now, max_lag))
        if scheme == "https" and 0 < len(eligible) < self.policy.https_min:
            rejected.extend(too_few_https(eligible, self.policy.https_min))
            eligible = []
        entry = _Eligibility(tuple(eligible), tuple(rejected), now, until - _EARLY)
        # Cells depend on the eligible mirrors alone: keep them when those did not change.
        previous = expired if expired is not None else self._stale.get(key)
        if previous is not None and previous.eligible == entry.eligible:
            entry.cells = previous.cells
        if len(self._entries) >= ELIGIBILITY_CACHE:
            self._entries = {}
        self._entries[key] = entry
        return entry
