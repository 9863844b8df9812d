"""Client address and scheme: the socket peer, or what trusted proxies say, read right to left."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Client:
    ip: IPAddress | None  # None when the peer is not an IP socket (unix socket) or unreadable
    scheme: str  # "http" or "https"
    # `str(ip)`, made once per client resolved rather than once per log line; "" when unknown.
    text: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.ip is not None and not self.text:
            object.__setattr__(self, "text", str(self.ip))


def parse_ip(text: str) -> IPAddress | None:
    """An address as proxies write it: plain, [v6], v4:port, [v6]:port; zone ids are dropped."""
    s = text.strip()
    if not s or len(s) > 64:
        return None
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            return None
        s = s[1:end]
    elif s.count(":") == 1:  # v4 with a port; a bare v6 has at least two colons
        s = s.split(":", 1)[0]
    s = s.split("%", 1)[0]  # fe80::1%eth0: the zone means nothing to us
    try:
        ip = ipaddress.ip_address(s)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def within(ip: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    """Whether `ip` lies in one of `networks` (an address of the other family in none)."""
    return any(ip.version == n.version and ip in n for n in networks)


class ProxyTrust:
    """Decides whether an address is one of the configured trusted proxies."""

    def __init__(self, networks: Sequence[IPNetwork]) -> None:
        self._networks = tuple(networks)
        # Few distinct proxies talk to us; remember each answer instead of scanning networks.
        self.trusted = lru_cache(maxsize=4096)(self._trusted)

    def _trusted(self, ip: IPAddress) -> bool:
        return within(ip, self._networks)

    def resolve(
        self,
        peer: str | None,
        forwarded_for: str | None,
        forwarded_proto: str | None,
        scheme: str,
    ) -> Client:
        """The real client: the right-most address in X-Forwarded-For not of a trusted proxy.

        Headers count only when the socket peer is a trusted proxy; anything a client sends
        directly is ignored. A garbage entry ends the walk at the last hop we could trust,
        so a client cannot choose its own address by writing junk after it.
        """
        ip = parse_ip(peer) if peer else None
        if ip is None or not self._networks or not self.trusted(ip):
            return Client(ip, scheme)
        if forwarded_proto:
            proto = forwarded_proto.rsplit(",", 1)[-1].strip().lower()
            if proto in ("http", "https"):
                scheme = proto
        if forwarded_for:
            for item in reversed(forwarded_for.split(",")):
                hop = parse_ip(item)
                if hop is None:
                    break
                ip = hop
                if not self.trusted(hop):
                    break
        return Client(ip, scheme)


def joined(lines: Sequence[str]) -> str | None:
    """Repeated header lines of one name as the one list they mean (RFC 9110, 5.3), in the
    order received: a proxy that adds its own line instead of appending to the client's keeps
    its hop right-most, where `ProxyTrust.resolve` reads first. None when there is no line."""
    if not lines:
        return None
    return lines[0] if len(lines) == 1 else ",".join(lines)


def network_key(ip: IPAddress | None) -> bytes:
    """The client's network for load spreading: /24 for IPv4, /48 for IPv6."""
    if ip is None:
        return b""
    if ip.version == 4:
        return ip.packed[:3]
    return ip.packed[:6]
