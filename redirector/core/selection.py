"""Mirror selection: which mirror serves a request, the ranked alternatives, and why not the rest.

Pure: no I/O, no clock, no global randomness. Time comes in as `now`; the spread among equally
close mirrors is a weighted rendezvous hash of the client's network, so the same client gets the
same mirror in every process without any shared state.

"About equally close": a mirror is in the nearest tier when its great-circle distance is at most
`nearest + max(closeness_km, closeness_ratio * nearest)`. With the defaults (500 km, 0.25) a
client in Amsterdam treats Amsterdam, Canterbury (~280 km) and Roubaix (~190 km) alike, while
Chapel Hill (~6,500 km) is a fallback; a client in Sydney (nearest: Melbourne, ~710 km) gets a
tier up to ~1,210 km. The tier is spread by weight; the rest follow by distance.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from redirector.core.models import SERVABLE, Location, Mirror, MirrorState, Status

EARTH_RADIUS_KM = 6371.0088


class Reason(enum.Enum):
    """Why a mirror was not eligible for a request, in the order they are checked.

    The values are identifiers (JSON, HTML attributes), not prose: the views word a rejection
    (`views.condition.reason_text`).
    """

    DISABLED = "disabled"
    EXCLUDED = "excluded"
    LACKS = "lacks"
    REPODATA = "repodata"
    NO_HTTPS = "no_https"
    NO_IPV6 = "no_ipv6"
    UNCHECKED = "unchecked"
    DOWN = "down"
    BROKEN = "broken"
    UNKNOWN_LAG = "unknown_lag"
    STALE = "stale"
    OUTDATED = "outdated"


# The reasons a mirror's own state gives, whatever the request: what `standing` checks.
STANDING = frozenset(
    {Reason.DISABLED, Reason.UNCHECKED, Reason.DOWN, Reason.BROKEN, Reason.UNKNOWN_LAG,
     Reason.STALE, Reason.OUTDATED}
)  # fmt: skip


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
    scheme: str  # "http" or "https"
    ipv6: bool  # the client connected over IPv6
    location: Location | None
    client_key: bytes  # the client's network (/24 or /48), for rendezvous hashing


@dataclass(frozen=True, slots=True)
class Policy:
    """The knobs of selection, from settings."""

    max_lag: float = 8 * 3600.0
    closeness_km: float = 500.0
    closeness_ratio: float = 0.25


@dataclass(frozen=True, slots=True)
class Ranked:
    """An eligible mirror in rank order, with the base URL to use for this request."""

    mirror: Mirror
    base: str
    distance_km: float | None
    tier: bool  # among the nearest, spread by weight


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


def check(
    c: Candidate, req_path: str, scheme: str, ipv6: bool, now: float, max_lag: float
) -> Rejection | None:
    """Why `c` cannot serve this request, or None when it can.

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
    if scheme == "https" and m.https is None:
        return Rejection(m, Reason.NO_HTTPS)
    if ipv6 and not m.ipv6:
        return Rejection(m, Reason.NO_IPV6)
    return _state_test(c, now, max_lag)


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
    """https requests go to https; http requests prefer http and may be upgraded to https."""
    if scheme == "https":
        assert m.https is not None
        return m.https
    return m.http or m.https or ""


def rank(
    eligible: Iterable[Mirror], req: Request, policy: Policy, seeds: dict[str, int] | None = None
) -> tuple[Ranked, ...]:
    """Order eligible mirrors: the nearest tier by weighted rendezvous, then the rest by distance.

    Without a location every eligible mirror is in the tier, spread by weight alone.
    """
    cseed = client_seed(req.client_key)
    loc = req.location

    def score(m: Mirror) -> float:
        seed = seeds[m.name] if seeds is not None and m.name in seeds else name_seed(m.name)
        return rendezvous_score(cseed, seed, m.weight)

    mirrors = list(eligible)
    if loc is None:
        mirrors.sort(key=score, reverse=True)
        return tuple(Ranked(m, base_for(m, req.scheme), None, True) for m in mirrors)
    dist = {
        m.name: distance_km(loc.latitude, loc.longitude, m.latitude, m.longitude) for m in mirrors
    }
    if not mirrors:
        return ()
    nearest = min(dist.values())
    limit = nearest + max(policy.closeness_km, policy.closeness_ratio * nearest)
    tier = [m for m in mirrors if dist[m.name] <= limit]
    rest = [m for m in mirrors if dist[m.name] > limit]
    tier.sort(key=score, reverse=True)
    rest.sort(key=lambda m: dist[m.name])
    return tuple(
        [Ranked(m, base_for(m, req.scheme), dist[m.name], True) for m in tier]
        + [Ranked(m, base_for(m, req.scheme), dist[m.name], False) for m in rest]
    )


def select(
    candidates: Sequence[Candidate],
    req: Request,
    now: float,
    policy: Policy,
    seeds: dict[str, int] | None = None,
) -> Decision:
    """Decide where `req` goes. `seeds` (name -> name_seed(name)) only saves hashing time."""
    eligible: list[Mirror] = []
    rejected: list[Rejection] = []
    for c in candidates:
        why = check(c, req.path, req.scheme, req.ipv6, now, policy.max_lag)
        if why is None:
            eligible.append(c.mirror)
        else:
            rejected.append(why)
    return Decision(rank(eligible, req, policy, seeds), tuple(rejected))
