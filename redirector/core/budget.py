"""File-check budgets: how many HEADs a client network, one mirror and the whole process may cost.

The token bucket (`Bucket`) and the table of client networks' buckets (`NetworkBuckets`) are
written here once: the operator views' budget (`core.viewbudget`) and the views' counter
throttle (`web.viewcache.Throttle`) use them too.

Every HEAD the per-file check makes goes out from the redirector's address on a client's
behalf, so a client asking for random paths could make the redirector flood its best mirrors.
`Budget` admits a HEAD only when all three budgets allow it:

- the client's network (/24 for IPv4, /48 for IPv6, as `clientip.network_key` gives it): a
  token bucket of `network_burst` HEADs refilled at `network_per_minute`; the networks seen
  last are remembered (`networks`, least recently used forgotten first: a forgotten network
  starts with a full bucket, which the total budget still bounds);
- one mirror: at most `mirror_inflight` HEADs in flight to it;
- the process: at most `total_inflight` in flight, below the check session's connection pool,
  so a HEAD never waits for a connection, and a token bucket of `total_burst` refilled at
  `total_per_second`.

Pure: the caller passes the time (monotonic seconds) and says when a HEAD has ended. What is
not admitted is not queued: the caller answers from what it already knows.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True, slots=True)
class Limits:
    """The three budgets; the defaults keep a flood from one network to 30 HEADs, then one
    every 2 seconds, and the process to 20 HEADs a second."""

    network_burst: float = 30.0
    network_per_minute: float = 30.0
    networks: int = 4096
    mirror_inflight: int = 8
    total_inflight: int = 48  # the check session has 64 connections
    total_burst: float = 40.0
    total_per_second: float = 20.0


class Refusal(Enum):
    """Which budget a HEAD did not fit."""

    NETWORK = "network"
    MIRROR = "mirror"
    TOTAL = "total"


class Bucket:
    """A token bucket: `tokens` as of `stamp` (the caller's clock, in seconds); the caller
    passes the rate (tokens a second) and the burst (the most it holds) at each use, so a
    reload that changes them applies to every bucket at once."""

    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp

    def refill(self, now: float, rate: float, burst: float) -> float:
        """The tokens at `now` (a clock that went back adds nothing; a smaller burst than
        before caps them at once)."""
        if now > self.stamp:
            self.tokens += (now - self.stamp) * rate
            self.stamp = now
        self.tokens = min(burst, self.tokens)
        return self.tokens

    def take(self, now: float, rate: float, burst: float) -> bool:
        """Take one token at `now`: False, and nothing taken, when there is less than one."""
        if self.refill(now, rate, burst) < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def wait(self, rate: float) -> float:
        """Seconds from `stamp` until the bucket holds one token again (0: it does now)."""
        return max(0.0, (1.0 - self.tokens) / rate) if rate > 0 else math.inf


class NetworkBuckets:
    """One bucket per client network (`clientip.network_key`), the `size` networks seen last
    remembered: the least recently used is forgotten first, and a forgotten network starts
    again with a full bucket (which a process-wide bucket beside it still bounds)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._buckets: OrderedDict[bytes, Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def get(self, network: bytes, now: float, burst: float) -> Bucket:
        """The bucket of `network`, a full one (`burst` tokens at `now`) when it is new."""
        bucket = self._buckets.get(network)
        if bucket is None:
            bucket = self._buckets[network] = Bucket(burst, now)
            while len(self._buckets) > self.size:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(network)
        return bucket

    def peek(self, network: bytes) -> Bucket | None:
        """The bucket of `network` if it has one, made or reordered for nothing: a look."""
        return self._buckets.get(network)


class Budget:
    """Admits HEADs within the limits; `admit` starts one, `release` ends it."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._networks = NetworkBuckets(self.limits.networks)
        self._total: Bucket | None = None
        self._by_mirror: dict[str, int] = {}
        self.inflight = 0

    def admit(self, network: bytes, mirror: str, now: float) -> Refusal | None:
        """None, and the HEAD counts as started, when every budget allows it; otherwise the
        budget it did not fit, and nothing is taken from the others."""
        lim = self.limits
        if self._by_mirror.get(mirror, 0) >= lim.mirror_inflight:
            return Refusal.MIRROR
        if self.inflight >= lim.total_inflight:
            return Refusal.TOTAL
        bucket = self._networks.get(network, now, lim.network_burst)
        if bucket.refill(now, lim.network_per_minute / 60.0, lim.network_burst) < 1.0:
            return Refusal.NETWORK
        total = self._total
        if total is None:
            total = self._total = Bucket(lim.total_burst, now)
        if total.refill(now, lim.total_per_second, lim.total_burst) < 1.0:
            return Refusal.TOTAL
        bucket.tokens -= 1.0
        total.tokens -= 1.0
        self._by_mirror[mirror] = self._by_mirror.get(mirror, 0) + 1
        self.inflight += 1
        return None

    def peek(self, network: bytes, mirror: str, now: float) -> Refusal | None:
        """What `admit` would answer now, taking nothing from any budget."""
        lim = self.limits
        if self._by_mirror.get(mirror, 0) >= lim.mirror_inflight:
            return Refusal.MIRROR
        if self.inflight >= lim.total_inflight:
            return Refusal.TOTAL
        total = self._total
        if total is not None and total.refill(now, lim.total_per_second, lim.total_burst) < 1.0:
            return Refusal.TOTAL
        # A network not seen yet would start with a full bucket: nothing to make for it here,
        # and no reordering of the remembered ones for a mere look.
        bucket = self._networks.peek(network)
        if (
            bucket is not None
            and bucket.refill(now, lim.network_per_minute / 60.0, lim.network_burst) < 1.0
        ):
            return Refusal.NETWORK
        return None

    def release(self, mirror: str) -> None:
        """A HEAD admitted for `mirror` has ended (answered, failed or cancelled)."""
        left = self._by_mirror.get(mirror, 0) - 1
        if left > 0:
            self._by_mirror[mirror] = left
        else:
            self._by_mirror.pop(mirror, None)
        self.inflight = max(0, self.inflight - 1)


def directory(path: str) -> str:
    """The directory of `path` below the tree ('' at the top): a mirror found lacking one file
    of a directory likely lacks its neighbours too (a release not synced yet, a tree it skips)."""
    cut = path.rfind("/")
    return path[: cut + 1] if cut >= 0 else ""
