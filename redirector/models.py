"""Values shared by every module: configured mirrors, observed state, locations, decisions."""

from __future__ import annotations

import enum
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
    ipv6: bool = False
    enabled: bool = True
    trace_name: str | None = None  # its own ftpsync trace under project/trace/; None: its host name

    @property
    def base(self) -> str:
        """The URL the poller probes: http when there is one (cheaper), else https."""
        url = self.http or self.https
        assert url is not None  # settings refuse a mirror with neither
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
