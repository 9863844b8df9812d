"""Client address: the socket peer unless a trusted proxy speaks, read right to left."""

from __future__ import annotations

import ipaddress

import pytest

from redirector.core.clientip import ProxyTrust, network_key, parse_ip

TRUST = ProxyTrust([ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"),
                    ipaddress.ip_network("::1/128")])  # fmt: skip


@pytest.mark.parametrize(
    ("peer", "xff", "xfp", "ip", "scheme"),
    [
        # Untrusted peer: headers are ignored entirely.
        ("203.0.113.9", "198.51.100.1", "https", "203.0.113.9", "http"),
        # Trusted peer: the right-most untrusted hop is the client.
        ("127.0.0.1", "198.51.100.1", "https", "198.51.100.1", "https"),
        ("127.0.0.1", "6.6.6.6, 198.51.100.1", None, "198.51.100.1", "http"),
        ("127.0.0.1", "6.6.6.6, 198.51.100.1, 10.1.1.1", None, "198.51.100.1", "http"),
        # Every hop trusted: the left-most one.
        ("127.0.0.1", "10.0.0.5, 10.0.0.6", None, "10.0.0.5", "http"),
        # Garbage stops the walk at the last good hop; a client cannot hide behind junk.
        ("127.0.0.1", "198.51.100.1, garbage", None, "127.0.0.1", "http"),
        ("127.0.0.1", "garbage, 198.51.100.1", None, "198.51.100.1", "http"),
        ("127.0.0.1", "", None, "127.0.0.1", "http"),
        # Ports, brackets, zone ids and mapped addresses.
        ("::1", "[2001:db8::1]:443", "HTTPS", "2001:db8::1", "https"),
        ("::1", "198.51.100.7:5555", None, "198.51.100.7", "http"),
        ("::1", "fe80::1%eth0", None, "fe80::1", "http"),
        ("::ffff:127.0.0.1", "198.51.100.1", None, "198.51.100.1", "http"),
        # X-Forwarded-Proto: the last value, and only http or https.
        ("127.0.0.1", None, "http, https", "127.0.0.1", "https"),
        ("127.0.0.1", None, "gopher", "127.0.0.1", "http"),
        (None, "198.51.100.1", None, None, "http"),
    ],
)
def test_resolve(peer: str | None, xff: str | None, xfp: str | None, ip: str | None,
                 scheme: str) -> None:  # fmt: skip
    c = TRUST.resolve(peer, xff, xfp, "http")
    assert c.ip == (ipaddress.ip_address(ip) if ip else None)
    assert c.scheme == scheme


def test_no_trusted_proxies_means_peer_only() -> None:
    c = ProxyTrust([]).resolve("127.0.0.1", "198.51.100.1", "https", "http")
    assert str(c.ip) == "127.0.0.1"
    assert c.scheme == "http"


@pytest.mark.parametrize("text", ["", "x", "1.2.3.4.5", "[::1", "::1]", "a" * 100, "999.1.1.1"])
def test_parse_ip_refuses_garbage(text: str) -> None:
    assert parse_ip(text) is None


def test_network_key() -> None:
    assert network_key(ipaddress.ip_address("198.51.100.7")) == bytes([198, 51, 100])
    assert network_key(ipaddress.ip_address("198.51.100.200")) == bytes([198, 51, 100])
    assert network_key(ipaddress.ip_address("2001:db8:1:2::1")) == bytes.fromhex("20010db80001")
    assert network_key(None) == b""
