"""Mirror selection: which mirror serves a request, the ranked alternatives, and why not the rest.

Pure: no I/O, no clock, no global randomness. Time comes in as `now`; the spread among equally
close mirrors is a weighted rendezvous hash of the client's network, so the same client gets the
same mirror in every process without any shared state.

Network first, then distance. A mirror whose declared netblocks or AS numbers hold the client
comes first (MirrorManager's and mirrorz's rule: traffic inside one network is cheaper and
faster than any distance says), spread by weight among such mirrors. Mirrors may refuse clients
outside their country, continent or networks (`country_only`, `continent_only`, `private`);
those are rejections like any other, with the rule in words.

"About equally close": among the rest, a mirror is in the nearest tier when its great-circle
distance is at most `nearest + max(closeness_km, closeness_ratio * nearest)`. The defaults (300
km, 0.5) make that max(1.5 x nearest, nearest + 300 km): mirrorbits' 1.5 x, with a floor so
that mirrors a few hundred km apart count alike for a client next to one of them (1.5 x of 20 km
would leave a single mirror). Our earlier default, nearest + max(500 km, 0.25 x nearest), let a
client in Ohio go to Montreal (977 km) rather than North Carolina (565 km). With the defaults a
client in Amsterdam treats Amsterdam, Roubaix (~190 km) and Canterbury (~280 km) alike, while
Chapel Hill (~6,500 km) is a fallback; a client in Sydney (nearest: Melbourne, ~710 km) gets a
tier up to ~1,065 km. The tier is spread by weight, a mirror in the client's country counting
twice its weight (mirrorbits' country bonus); the rest follow by distance. A mirror of weight 0
is a last resort within its group.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from redirector.core.continent import continent_of
from redirector.core.models import SERVABLE, Location, Mirror, MirrorState, Status

EARTH_RADIUS_KM = 6371.0088
# The request scheme of a mirror list (and of a browser's last resort, yum.py and
# web/redirect.py): any URL a mirror has, ftp included; the client's TLS is not asked for.
LIST = "list"


class Reason(enum.Enum):
    """Why a mirror was not eligible for a request, in the order they are checked.

    The values are identifiers (JSON, HTML attributes), not prose: the views word a rejection
    (`views.condition.reason_text`).
    """

    DISABLED = "disabled"
    EXCLUDED = "excluded"
    LACKS = "lacks"
    REPODATA = "repodata"
    FTP_ONLY = "ftp_only"
    NO_HTTPS = "no_https"
    NO_IPV6 = "no_ipv6"
    UNCHECKED = "unchecked"
    DOWN = "down"
    BROKEN = "broken"
    UNKNOWN_LAG = "unknown_lag"
    STALE = "stale"
    OUTDATED = "outdated"
    # The mirror's own rules against this client, asked last: a mirror that could not serve
    # anyone now says so first, which is what its operator needs to hear.
    PRIVATE = "private"
    COUNTRY_ONLY = "country_only"
    CONTINENT_ONLY = "continent_only"


# The reasons a mirror's own state gives, whatever the request: what `standing` checks.
STANDING = frozenset(
    {Reason.DISABLED, Reason.UNCHECKED, Reason.DOWN, Reason.BROKEN, Reason.UNKNOWN_LAG,
     Reason.STALE, Reason.OUTDATED}
)  # fmt: skip


# The reasons that depend on who asks rather than on the mirror's state or the path.
RULES = frozenset({Reason.PRIVATE, Reason.COUNTRY_ONLY, Reason.CONTINENT_ONLY})


@dataclass(frozen=True, slots=True)
class Candidate:
    """A configured mirror with what the poller last saw of it (None: never checked)."""

    mirror: Mirror
    state: MirrorState | None
    # Repo directories (e.g. "releases/10/smeos/x86_64") whose repodata/ on this mirror does not
    # match the master's: its packages there are safe to serve, its metadata is not.
    bad_repodata: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Request:
    """What selection needs to know of one request."""

    path: str  # below the tree root, no leading slash, e.g. "releases/10/smeos/x86_64/..."
    scheme: str  # "http", "https", or LIST for a mirror list
    ipv6: bool  # the client connected over IPv6
    location: Location | None
    client_key: bytes  # the client's network (/24 or /48), for rendezvous hashing
    asn: int | None = None  # the client's autonomous system, from an ASN database
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None  # for netblocks


@dataclass(frozen=True, slots=True)
class Whom:
    """What the mirrors' own rules ask of a client: where it is and which networks hold it.

    `nets` pairs each mirror whose netblocks or AS numbers hold the client with the rule that
    matched ("netblock 192.0.2.0/24", "same AS 3320"), in candidate order. Built by `whom_of`.
    """

    country: str | None = None
    continent: str | None = None
    nets: tuple[tuple[str, str], ...] = ()

    def net(self, name: str) -> str | None:
        """The network rule that ties the client to mirror `name`, or None."""
        for mirror, rule in self.nets:
            if mirror == name:
                return rule
        return None


@dataclass(frozen=True, slots=True)
class Policy:
    """The knobs of selection, from settings."""

    max_lag: float = 8 * 3600.0
    closeness_km: float = 300.0
    closeness_ratio: float = 0.5
    # https_policy "master": an https request goes to the master over https when fewer than
    # this many https mirrors may serve it, rather than to the few far away; 0: never.
    https_min: int = 0


@dataclass(frozen=True, slots=True)
class Ranked:
    """An eligible mirror in rank order, with the base URL to use for this request."""

    mirror: Mirror
    base: str
    distance_km: float | None
    tier: bool  # among the nearest (or in the client's network), spread by weight
    rule: str | None = None  # what put it ahead: "netblock 192.0.2.0/24", "same country FR"


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one mirror cannot serve a request, as facts: no words, no `now`.

    `subject`: the subtree (EXCLUDED, LACKS), the repo directory (REPODATA) or the poller's
    error (DOWN, BROKEN). `since`: a unix time, STALE: since when the master has had content
    the mirror lacks (the lag is `now - since`); OUTDATED: the mirror's last check (its age is
    `now - since`). A time rather than a number of seconds, so that a rejection stays true as
    the clock moves and the router's cached rejections equal `select`'s at any later `now`.
    """

    mirror: Mirror
    reason: Reason
    subject: str | None = None
    since: float | None = None

    def seconds(self, now: float) -> float | None:
        """The lag (STALE) or the age of the last check (OUTDATED) at `now`; None otherwise."""
        return None if self.since is None else max(0.0, now - self.since)


@dataclass(frozen=True, slots=True)
class Decision:
    """The chosen mirror (None: send the client to the master), alternatives and rejections."""

    ranked: tuple[Ranked, ...]
    rejected: tuple[Rejection, ...]

    @property
    def chosen(self) -> Ranked | None:
        return self.ranked[0] if self.ranked else None


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance by the haversine formula."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


_MASK64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """splitmix64's finalizer: cheap, well-mixed and identical in every process."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK64
    return x ^ (x >> 31)


def name_seed(name: str) -> int:
    """A stable 64-bit seed per mirror name (Python's hash() differs between processes)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")


def client_seed(client_key: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(client_key, digest_size=8).digest(), "big")


def rendezvous_score(client: int, mirror_seed: int, weight: float) -> float:
    """Weighted rendezvous score: the highest wins, each mirror with probability ∝ weight."""
    if weight <= 0:
        return -math.inf
    u = (_mix64(client ^ mirror_seed) + 0.5) / 18446744073709551616.0  # uniform in (0, 1)
    return weight / -math.log(u)


def network_rule(
    m: Mirror,
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
    asn: int | None,
) -> str | None:
    """The rule of `m` that holds this client, netblocks before AS numbers, or None."""
    if address is not None:
        for net in m.netblocks:
            if address.version == net.version and address in net:
                return f"netblock {net}"
    if asn is not None and asn in m.asns:
        return f"same AS {asn}"
    return None


def whom_of(
    mirrors: Iterable[Mirror],
    location: Location | None,
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
    asn: int | None,
) -> Whom:
    """The client as the mirrors' rules see it (see `Whom`)."""
    nets = []
    for m in mirrors:
        if m.netblocks or m.asns:
            rule = network_rule(m, address, asn)
            if rule is not None:
                nets.append((m.name, rule))
    if location is None:
        return Whom(None, None, tuple(nets))
    return Whom(location.country, location.continent, tuple(nets))


def serves_ipv6(m: Mirror, s: MirrorState | None) -> bool:
    """The config's `ipv6` when set, else what the poller found (an AAAA record that answers)."""
    if m.ipv6 is not None:
        return m.ipv6
    return s is not None and s.ipv6 is True


def _refuses(m: Mirror, whom: Whom) -> Rejection | None:
    """The mirror's own rules against this client: private, country-only, continent-only."""
    # subject: the client's country or continent (None: unknown), for the views to word
    if m.private and whom.net(m.name) is None:
        return Rejection(m, Reason.PRIVATE)
    if m.country_only and whom.country != m.country:
        return Rejection(m, Reason.COUNTRY_ONLY, whom.country)
    if m.continent_only and (whom.continent is None or whom.continent != continent_of(m.country)):
        return Rejection(m, Reason.CONTINENT_ONLY, whom.continent)
    return None


def check(
    c: Candidate,
    req_path: str,
    scheme: str,
    ipv6: bool,
    now: float,
    max_lag: float,
    whom: Whom | None = None,
) -> Rejection | None:
    """Why `c` cannot serve this request, or None when it can.

    `whom` is the client for the mirrors' own rules (private, country-only, continent-only);
    None asks whether the mirror serves at all, as the status views do, and skips them.

    The router caches these answers (router.py): for a path it keys them by the exclude, lacks
    and repodata prefixes the path starts with, and in time it ends each cached answer where
    `router.valid_until` says the lag and last-check tests of `standing` change. A new test
    that reads the path or `now` differently must be taught to those two as well.
    """
    m, s = c.mirror, c.state
    if not m.enabled:
        return Rejection(m, Reason.DISABLED)
    for sub in m.exclude:
        if req_path.startswith(sub):
            return Rejection(m, Reason.EXCLUDED, sub)
    if s is not None:
        for sub in s.lacks:
            if req_path.startswith(sub):
                return Rejection(m, Reason.LACKS, sub)
    for d in c.bad_repodata:
        if req_path.startswith(d + "/repodata/") or req_path == d + "/repodata":
            return Rejection(m, Reason.REPODATA, d)
    if scheme != LIST and m.http is None and m.https is None:
        return Rejection(m, Reason.FTP_ONLY)
    if scheme == "https" and m.https is None:
        return Rejection(m, Reason.NO_HTTPS)
    if ipv6 and not serves_ipv6(m, s):
        # subject: "config" (ipv6 = false), the poller's note, or None (not checked over IPv6)
        subject = None
        if m.ipv6 is False:
            subject = "config"
        elif s is not None and s.ipv6 is False:
            subject = s.ipv6_note or "no answer over IPv6"
        return Rejection(m, Reason.NO_IPV6, subject)
    rejected = _state_test(c, now, max_lag)
    if rejected is None and whom is not None and (m.private or m.country_only or m.continent_only):
        return _refuses(m, whom)
    return rejected


def standing(c: Candidate, now: float, max_lag: float) -> Rejection | None:
    """Why `c` can serve no request at all (a reason in `STANDING`), or None when it serves
    some: `check` without the tests of the request. What a mirror's condition is made of."""
    if not c.mirror.enabled:
        return Rejection(c.mirror, Reason.DISABLED)
    return _state_test(c, now, max_lag)


def _state_test(c: Candidate, now: float, max_lag: float) -> Rejection | None:
    m, s = c.mirror, c.state
    if s is None or s.status is Status.UNKNOWN:
        return Rejection(m, Reason.UNCHECKED)
    if s.status not in SERVABLE:
        reason = Reason.BROKEN if s.status is Status.BROKEN else Reason.DOWN
        return Rejection(m, reason, s.error)
    lag = s.lag(now)
    if lag is None:
        return Rejection(m, Reason.UNKNOWN_LAG)
    if lag > max_lag:
        return Rejection(m, Reason.STALE, since=s.behind_since)
    # It was current when last checked, but nobody has looked since: it may have fallen behind.
    if now - s.checked_at > max_lag:
        return Rejection(m, Reason.OUTDATED, since=s.checked_at)
    return None


def base_for(m: Mirror, scheme: str) -> str:
    """https requests go to https; http requests prefer http and may be upgraded to https;
    `LIST` (a mirror list, or a browser's last resort) takes ftp too."""
    if scheme == "https":
        assert m.https is not None
        return m.https
    if scheme == LIST:
        return m.http or m.https or m.ftp or ""
    return m.http or m.https or ""


# One member of a group that is spread by weight: (ranked, mirror seed, effective weight).
Member = tuple[Ranked, int, float]

# A mirror in the client's country counts this many times its weight in the tier: favoured, as
# mirrorbits favours it, without starving the others equally close (a bonus, not an order).
COUNTRY_BONUS = 2.0


@dataclass(frozen=True, slots=True)
class Layout:
    """A ranking before the spread: groups in order, each spread by weight, then the rest.

    The groups are the mirrors of the client's networks, then the nearest tier; `rest` holds
    every other mirror with its distance, nearest first. `nearest` is the distance the tier is
    measured from (None without a location). The router keeps one per location (router.py).
    """

    groups: tuple[tuple[Member, ...], ...]
    rest: tuple[tuple[Mirror, float], ...]
    nearest: float | None


def tier_limit(nearest: float, policy: Policy) -> float:
    """How far a mirror may be and still count as about as close as the nearest one."""
    return nearest + max(policy.closeness_km, policy.closeness_ratio * nearest)


def _seed_of(m: Mirror, seeds: dict[str, int] | None) -> int:
    seed = seeds.get(m.name) if seeds is not None else None
    return name_seed(m.name) if seed is None else seed


def layout(
    eligible: Sequence[Mirror],
    scheme: str,
    location: Location | None,
    whom: Whom | None,
    policy: Policy,
    seeds: dict[str, int] | None = None,
) -> Layout:
    """Group the eligible mirrors for `rank`: network first, then the nearest tier, then the rest.

    Without a location every mirror outside the client's networks is in the tier, spread by
    weight alone.
    """
    net: list[Member] = []
    others: list[Mirror] = []
    for m in eligible:
        rule = whom.net(m.name) if whom is not None and whom.nets else None
        if rule is None:
            others.append(m)
        else:
            d = None if location is None else _distance_to(location, m)
            ranked = Ranked(m, base_for(m, scheme), d, True, rule)
            net.append((ranked, _seed_of(m, seeds), float(m.weight)))
    tier: list[Member]
    if location is None:
        tier = [
            (Ranked(m, base_for(m, scheme), None, True), _seed_of(m, seeds), float(m.weight))
            for m in others
        ]
        return Layout(tuple(g for g in (tuple(net), tuple(tier)) if g), (), None)
    dist = [_distance_to(location, m) for m in others]
    nearest = min(dist) if dist else None
    tier = []
    rest: list[tuple[Mirror, float]] = []
    if nearest is not None:
        limit = tier_limit(nearest, policy)
        country = location.country
        for m, d in zip(others, dist, strict=True):
            if d > limit:
                rest.append((m, d))
            elif country is not None and m.country == country:
                ranked = Ranked(m, base_for(m, scheme), d, True, f"same country {country}")
                tier.append((ranked, _seed_of(m, seeds), m.weight * COUNTRY_BONUS))
            else:
                plain = Ranked(m, base_for(m, scheme), d, True)
                tier.append((plain, _seed_of(m, seeds), float(m.weight)))
    rest.sort(key=_by_distance)
    return Layout(tuple(g for g in (tuple(net), tuple(tier)) if g), tuple(rest), nearest)


def _distance_to(loc: Location, m: Mirror) -> float:
    return distance_km(loc.latitude, loc.longitude, m.latitude, m.longitude)


def _by_distance(item: tuple[Mirror, float]) -> float:
    return item[1]


def spread(group: Sequence[Member], client: int) -> list[Ranked]:
    """One group in this client's order: by weighted rendezvous score (weight 0 last); ties
    keep the group's order (the sort is stable)."""
    if len(group) == 1:
        return [group[0][0]]
    scored = [(rendezvous_score(client, seed, weight), r) for r, seed, weight in group]
    scored.sort(key=_by_score, reverse=True)
    return [r for _, r in scored]


def _by_score(item: tuple[float, Ranked]) -> float:
    return item[0]


def rank(
    eligible: Iterable[Mirror],
    req: Request,
    policy: Policy,
    seeds: dict[str, int] | None = None,
    whom: Whom | None = None,
) -> tuple[Ranked, ...]:
    """Order eligible mirrors: the client's networks, the nearest tier, the rest by distance.

    Each of the first two groups is spread by weighted rendezvous of the client's network.
    """
    lay = layout(list(eligible), req.scheme, req.location, whom, policy, seeds)
    cseed = client_seed(req.client_key)
    ordered: list[Ranked] = []
    for group in lay.groups:
        ordered.extend(spread(group, cseed))
    ordered.extend(Ranked(m, base_for(m, req.scheme), d, False) for m, d in lay.rest)
    return tuple(ordered)


def select(
    candidates: Sequence[Candidate],
    req: Request,
    now: float,
    policy: Policy,
    seeds: dict[str, int] | None = None,
) -> Decision:
    """Decide where `req` goes. `seeds` (name -> name_seed(name)) only saves hashing time."""
    whom = whom_of((c.mirror for c in candidates), req.location, req.address, req.asn)
    eligible: list[Mirror] = []
    rejected: list[Rejection] = []
    for c in candidates:
        why = check(c, req.path, req.scheme, req.ipv6, now, policy.max_lag, whom)
        if why is None:
            eligible.append(c.mirror)
        else:
            rejected.append(why)
    if req.scheme == "https" and 0 < len(eligible) < policy.https_min:
        rejected.extend(too_few_https(eligible, policy.https_min))
        eligible = []
    return Decision(rank(eligible, req, policy, seeds, whom), tuple(rejected))


def too_few_https(eligible: Sequence[Mirror], needed: int) -> list[Rejection]:
    """The rejections of eligible https mirrors when there are fewer than `needed` of them."""
    # NO_HTTPS: for this request it is as if no mirror had https; the subject, "<n>/<needed>",
    # says why (the views word it).
    subject = f"{len(eligible)}/{needed}"
    return [Rejection(m, Reason.NO_HTTPS, subject) for m in eligible]
