"""Routing a client to a mirror: client address, location and snapshot in, a decision out.

No aiohttp here: the handlers hand in the request's raw parts, so the same path serves the
HTTP handlers, `redirector explain` and the benchmarks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .clientip import Client, ProxyTrust, network_key
from .geo import GeoReader
from .models import Location
from .selection import Decision, Policy, Request, select
from .settings import Settings
from .snapshot import SnapshotHolder


@dataclass(frozen=True, slots=True)
class Routed:
    """A decision with what it was made from, for the response, logs and explain views."""

    client: Client
    location: Location | None
    path: str
    decision: Decision
    target: str  # the URL the client is sent to
    fallback: bool  # no mirror was eligible: the master


class Router:
    """Turns (peer, headers, path) into a Routed decision from the current snapshot."""

    def __init__(
        self,
        settings: Settings,
        holder: SnapshotHolder,
        geo: GeoReader | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.holder = holder
        self.geo = geo
        self.trust = ProxyTrust(settings.trusted_proxies)
        self.policy = Policy(settings.max_lag, settings.closeness_km, settings.closeness_ratio)
        self.clock = clock

    def client(
        self, peer: str | None, forwarded_for: str | None, forwarded_proto: str | None, scheme: str
    ) -> Client:
        return self.trust.resolve(peer, forwarded_for, forwarded_proto, scheme)

    def locate(self, client: Client) -> Location | None:
        if self.geo is None or client.ip is None:
            return None
        return self.geo.locate(client.ip)

    def route(self, client: Client, path: str, now: float | None = None) -> Routed:
        """Decide where `client` goes for `path` (below the tree root, percent-encoded)."""
        loc = self.locate(client)
        snap = self.holder.current
        req = Request(
            path=path,
            scheme=client.scheme,
            ipv6=client.ip is not None and client.ip.version == 6,
            location=loc,
            client_key=network_key(client.ip),
        )
        decision = select(
            snap.candidates, req, self.clock() if now is None else now, self.policy, snap.seeds
        )
        chosen = decision.chosen
        base = chosen.base if chosen is not None else self.settings.master
        return Routed(client, loc, path, decision, base + path, chosen is None)
