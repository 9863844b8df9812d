"""Values shared by every module: configured mirrors, observed state, locations, decisions."""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Location:
    """Where an address is, as far as the GeoIP database knows."""

    country: str | None  # ISO 3166-1 alpha-2, upper case
    continent: str | None  # two-letter continent code (EU, NA, ...)
    latitude: float
    longitude: float


@dataclass(frozen=True, slots=True)
class Mirror:
    """A mirror as configured: facts an operator wrote down, never observed state."""

    name: str
    http: str | None  # base URL of the smeserver tree, ends with "/"
    https: str | None
    country: str
    latitude: float
    longitude: float
    weight: int = 100
    exclude: tuple[str, ...] = ()  # subtree prefixes relative to the tree root, each ends with "/"
    # Whether it answers over IPv6: None (unset) leaves it to the poller, which resolves the
    # host's AAAA and checks the tree over IPv6; true or false overrides what it finds.
    ipv6: bool | None = None
    enabled: bool = True
    # Its ftpsync MIRRORNAME (own trace project/trace/<name>, lock); None: the poller finds it
    # in the mirror's _hierarchy or _traces, else takes its URL's host.
    trace_name: str | None = None
    # What the wiki's "become a mirror" request asks for. Facts, never observed.
    contact_name: str | None = None
    contact_email: str | None = None
    bandwidth: int | None = None  # bits per second the operator offers
    ssh_host: str | None = None  # push mirrors: where the upstream triggers ftpsync over ssh
    ssh_port: int = 22
    ssh_user: str | None = None
    upstream: str | None = None  # the configured mirror it syncs from, or "master"; None: unstated
    sync: str | None = None  # "push" or "pull"; None: unstated
    # Base URL over ftp: listed in mirror lists and metalinks (yum and librepo take ftp://);
    # a browser is sent there only when no http mirror can serve it.
    ftp: str | None = None
    # Its networks: clients inside them go to it first. `private` serves no one else;
    # `country_only` and `continent_only` no one outside its country or continent.
    netblocks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    asns: tuple[int, ...] = ()
    private: bool = False
    country_only: bool = False
    continent_only: bool = False

    @property
    def base(self) -> str:
        """The URL the poller probes: http when there is one (cheaper), else https, else ftp."""
        url = self.http or self.https or self.ftp
        assert url is not None  # settings refuse a mirror with none
        return url


class Status(enum.Enum):
    """What the poller last found a mirror to be."""

    UNKNOWN = "unknown"  # not checked yet
    UP = "up"
    SYNCING = "syncing"  # up, an Archive-Update-in-Progress file is present
    BROKEN = "broken"  # answers, but its traces are junk or inconsistent
    DOWN = "down"  # connect error, timeout, HTTP error


SERVABLE = frozenset({Status.UP, Status.SYNCING})


@dataclass(frozen=True, slots=True)
class MirrorState:
    """What the poller observed of one mirror at its last check."""

    name: str
    status: Status
    checked_at: float  # unix time of the last probe
    master_date: float | None = None  # date of the master trace copy the mirror holds
    behind_since: float | None = None  # since when the master has had newer content; None: current
    own_date: float | None = None  # the mirror's own trace: its last complete sync
    error: str | None = None  # why it is down or broken
    failures: int = 0  # consecutive failed probes
    lacks: tuple[str, ...] = ()  # subtrees the poller found missing
    # Coverage as probed: subtrees found present, when last probed, and why any
    # subtree is in `lacks` (e.g. "obsolete/: HTTP 404 at obsolete/"), for the status views.
    covered: tuple[str, ...] = ()
    coverage_at: float | None = None
    coverage_note: str | None = None
    retry_at: float | None = None  # a failing mirror is not probed again before this (backoff)
    # The name its own trace and lock were found under (its ftpsync MIRRORNAME), so the next
    # round asks for it directly; None: not looked up yet.
    trace_name: str | None = None
    note: str | None = None  # a check skipped, or an unusual state explained, for the views
    # Over IPv6, as the poller found: True (its AAAA answers with the master trace), False (no
    # AAAA, or it does not answer there), None (not checked); the note says what was seen.
    ipv6: bool | None = None
    ipv6_note: str | None = None

    def lag(self, now: float) -> float | None:
        """Seconds the mirror is behind the master at `now`: 0 when current, None when unknown."""
        if self.master_date is None:
            return None
        if self.behind_since is None:
            return 0.0
        return max(0.0, now - self.behind_since)


@dataclass(frozen=True, slots=True)
class MasterVersion:
    """One state of the master tree: its trace date and when it was first seen."""

    date: float
    first_seen: float


@dataclass(frozen=True, slots=True)
class MasterState:
    """The master's history as the poller has seen it, oldest first; the last is current."""

    history: tuple[MasterVersion, ...]
    checked_at: float
    error: str | None = None  # why the last fetch of the master failed, None when it worked

    @property
    def current(self) -> MasterVersion | None:
        return self.history[-1] if self.history else None


class RepoCheck(enum.Enum):
    """How one mirror's repodata/repomd.xml for one repo compares with the master's."""

    CURRENT = "current"  # the master's current repomd.xml
    ALTERNATE = "alternate"  # an earlier master version still accepted (the alternates window)
    MISMATCHED = "mismatched"  # anything else: metadata a client would reject or choke on
    MISSING = "missing"  # 404: the mirror lacks this repo's metadata


BAD_REPODATA = frozenset({RepoCheck.MISMATCHED, RepoCheck.MISSING})


@dataclass(frozen=True, slots=True)
class RepomdVersion:
    """One repomd.xml the master served: what librepo checks, and when it was first seen."""

    size: int
    timestamp: int  # newest <data><timestamp> (what yum compares), see repodata.py
    md5: str
    sha1: str
    sha256: str
    sha512: str
    first_seen: float


@dataclass(frozen=True, slots=True)
class RepomdHistory:
    """The master's repomd.xml versions for one repo directory, oldest first; last is current."""

    history: tuple[RepomdVersion, ...]
    checked_at: float
    error: str | None = None  # why the last fetch from the master failed

    @property
    def current(self) -> RepomdVersion | None:
        return self.history[-1] if self.history else None


@dataclass(frozen=True, slots=True)
class RepodataState:
    """What the repodata pass found: the master's histories and each mirror's verdicts.

    Keys are repo directories below the tree root, arch included, e.g.
    ``releases/10/smeos/x86_64`` (the directory holding ``repodata/``).
    """

    repos: Mapping[str, RepomdHistory]
    mirrors: Mapping[str, Mapping[str, RepoCheck]]  # mirror name -> repo directory -> verdict
    checked_at: float

    def bad_for(self, mirror: str) -> frozenset[str]:
        """The repo directories whose metadata on `mirror` must not be served."""
        verdicts = self.mirrors.get(mirror, {})
        return frozenset(d for d, v in verdicts.items() if v in BAD_REPODATA)


@dataclass(frozen=True, slots=True)
class HierarchyEntry:
    """One line of an ftpsync `project/trace/_hierarchy`: who synced from where."""

    tracefile: str  # the trace file name it writes under project/trace/
    mirror: str  # its MIRRORNAME
    host: str  # the host ftpsync ran on (TRACEHOST)
    upstream: str  # the host it synced from (RSYNC_HOST), "unknown" when ftpsync had none


@dataclass(frozen=True, slots=True)
class SyncInfo:
    """How one mirror says it syncs, read from its trace and `_hierarchy` by the poller."""

    name: str  # the configured mirror name
    checked_at: float
    upstream: str | None = None  # `Upstream-mirror:` of its own trace
    hierarchy: tuple[HierarchyEntry, ...] = ()  # its `_hierarchy`, master first, itself last
    error: str | None = None  # why its own trace could not be read, if it could not
