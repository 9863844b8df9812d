"""The operator views' budget: how often one client network, and all of them together, may ask.

The status page, its JSON and schema, /metrics and the `?mirrorlist` explanations are rendered
once per state (`web.viewcache`), but every answer is still written out by the event loop that
writes the redirects too: a status page of 1,000 mirrors is 3.8 MB, and a few clients fetching
the views back to back (hundreds of answers a second) held redirects up for eight times their
idle p99. `ViewBudget` answers a view only when two token buckets (`core.budget.Bucket`) allow
it:

- the client's network (/24 for IPv4, /48 for IPv6, as `clientip.network_key` cuts it): a
  bucket of `network_burst` answers refilled at `network_per_second`; the `networks` seen last
  are remembered (`core.budget.NetworkBuckets`: a forgotten one starts again full, which the
  process-wide bucket still bounds);
- the process: a bucket of `total_burst` refilled at `total_per_second`, so that many networks
  together cannot take the loop either.

A client in one of the `exempt` networks (an operator's Prometheus, an office) is answered
without taking from either. A refusal names the bucket it did not fit and the whole seconds
until that bucket holds a token again (what an HTTP Retry-After says); nothing is taken from
the other bucket. Pure: the caller passes the time (monotonic seconds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from redirector.core.budget import Bucket, NetworkBuckets, Refusal
from redirector.core.clientip import IPAddress, IPNetwork, network_key, within

MAX_RETRY_AFTER = 3600  # seconds: a Retry-After never says more, whatever the rate


@dataclass(frozen=True, slots=True)
class ViewLimits:
    """The two buckets and the exempt networks. The defaults give a network 20 views at once
    and then 2 a second (a browser clicking around, a few Prometheus servers scraping every
    few seconds and an operator's curl stay well inside), and the process 60 at once, then 10
    a second."""

    network_burst: float = 20.0
    network_per_second: float = 2.0
    total_burst: float = 60.0
    total_per_second: float = 10.0
    exempt: tuple[IPNetwork, ...] = ()
    networks: int = 4096  # client networks remembered, as the file check's budget


@dataclass(frozen=True, slots=True)
class Refused:
    """A view not answered: the bucket it did not fit (`Refusal.NETWORK` or `Refusal.TOTAL`)
    and the whole seconds, at least 1, until that bucket holds a token again."""

    budget: Refusal
    retry_after: int


class ViewBudget:
    """Admits operator views within `limits`; `configure` applies new limits (a reload) to the
    buckets as they are."""

    def __init__(self, limits: ViewLimits | None = None) -> None:
        self.limits = limits or ViewLimits()
        self._networks = NetworkBuckets(self.limits.networks)
        self._total: Bucket | None = None

    def configure(self, limits: ViewLimits) -> None:
        """New limits from now on: a bucket keeps its tokens, capped at the new burst."""
        self.limits = limits
        self._networks.size = limits.networks

    def exempt(self, ip: IPAddress | None) -> bool:
        """Whether `ip` is in an exempt network (never counted)."""
        return ip is not None and within(ip, self.limits.exempt)

    def admit(self, ip: IPAddress | None, now: float) -> Refused | None:
        """None, and one token taken from both buckets, when both allow a view for the client
        at `ip` (None: not an IP peer, counted as one network of its own) at `now`; otherwise
        the refusal, and nothing taken."""
        lim = self.limits
        if lim.exempt and self.exempt(ip):
            return None
        bucket = self._networks.get(network_key(ip), now, lim.network_burst)
        if bucket.refill(now, lim.network_per_second, lim.network_burst) < 1.0:
            return Refused(Refusal.NETWORK, _seconds(bucket.wait(lim.network_per_second)))
        total = self._total
        if total is None:
            total = self._total = Bucket(lim.total_burst, now)
        if not total.take(now, lim.total_per_second, lim.total_burst):
            return Refused(Refusal.TOTAL, _seconds(total.wait(lim.total_per_second)))
        bucket.tokens -= 1.0
        return None


def _seconds(wait: float) -> int:
    """A wait as Retry-After gives it: whole seconds, rounded up, 1 to MAX_RETRY_AFTER."""
    return max(1, math.ceil(min(wait, MAX_RETRY_AFTER)))
