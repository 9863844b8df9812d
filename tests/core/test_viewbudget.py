"""The operator views' budget, pure: per client network, for the process, exempt networks."""

from __future__ import annotations

import ipaddress

import pytest

from redirector.core.budget import Refusal
from redirector.core.clientip import IPAddress
from redirector.core.viewbudget import MAX_RETRY_AFTER, Refused, ViewBudget, ViewLimits


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


A, A2, B = ip("145.100.1.7"), ip("145.100.1.200"), ip("152.2.10.20")
V6, V6_SAME, V6_OTHER = ip("2001:610:1:2::5"), ip("2001:610:1:ffff::1"), ip("2001:610:2::1")

LOOSE = 1_000_000.0  # a bucket that never runs dry in these tests


def test_a_network_gets_its_burst_then_its_rate() -> None:
    b = ViewBudget(ViewLimits(network_burst=3, network_per_second=0.5, total_burst=LOOSE))
    got = [b.admit(A, 0.0) for _ in range(4)]
    assert got == [None, None, None, Refused(Refusal.NETWORK, 2)]
    assert b.admit(A2, 0.0) == Refused(Refusal.NETWORK, 2)  # the same /24
    assert b.admit(B, 0.0) is None  # another network has its own bucket
    assert b.admit(A, 1.0) == Refused(Refusal.NETWORK, 1)  # half a token: 1 s to go
    assert b.admit(A, 2.0) is None
    assert b.admit(A, 1.5) == Refused(Refusal.NETWORK, 2)  # a clock going back adds nothing


def test_ipv6_networks_are_48s() -> None:
    b = ViewBudget(ViewLimits(network_burst=1, total_burst=LOOSE))
    assert b.admit(V6, 0.0) is None
    assert b.admit(V6_SAME, 0.0) is not None
    assert b.admit(V6_OTHER, 0.0) is None


def test_a_peer_without_an_address_is_one_network_of_its_own() -> None:
    b = ViewBudget(ViewLimits(network_burst=1, total_burst=LOOSE))
    assert b.admit(None, 0.0) is None
    assert b.admit(None, 0.0) == Refused(Refusal.NETWORK, 1)
    assert b.admit(A, 0.0) is None


def test_many_networks_together_empty_the_process_bucket() -> None:
    b = ViewBudget(ViewLimits(network_burst=5, total_burst=4, total_per_second=0.25))
    nets = [ip(f"198.51.{i}.1") for i in range(6)]
    got = [b.admit(n, 0.0) for n in nets]
    assert got == [None] * 4 + [Refused(Refusal.TOTAL, 4)] * 2
    assert b.admit(nets[5], 4.0) is None  # a token every 4 s, for whoever asks


def test_a_refusal_takes_nothing_from_the_other_bucket() -> None:
    # Refused by the process's bucket: the network's keeps its tokens.
    b = ViewBudget(ViewLimits(network_burst=2, network_per_second=0.01, total_burst=1))
    assert b.admit(A, 0.0) is None
    assert [b.admit(B, 0.0) for _ in range(5)] == [Refused(Refusal.TOTAL, 1)] * 5
    # The process's bucket refills at 10 a second; B still has both its tokens.
    got = [b.admit(B, t) for t in (0.1, 0.2, 0.3)]
    assert got == [None, None, Refused(Refusal.NETWORK, 100)]
    # Refused by the network's bucket: the process's keeps its tokens.
    b = ViewBudget(ViewLimits(network_burst=1, total_burst=2, total_per_second=0.01))
    assert [b.admit(A, 0.0) for _ in range(10)][1:] == [Refused(Refusal.NETWORK, 1)] * 9
    assert b.admit(B, 0.0) is None


def test_exempt_networks_are_never_counted_nor_refused() -> None:
    exempt = (ipaddress.ip_network("145.100.0.0/16"), ipaddress.ip_network("2001:610::/32"))
    b = ViewBudget(ViewLimits(network_burst=1, total_burst=1, exempt=exempt))
    assert all(b.admit(x, 0.0) is None for x in (A, A2, V6, V6_OTHER) * 50)
    assert [b.exempt(x) for x in (A, B, None)] == [True, False, False]
    assert b.admit(B, 0.0) is None  # the process's one token was still there
    assert b.admit(ip("1.120.5.5"), 0.0) == Refused(Refusal.TOTAL, 1)


def test_configure_applies_new_limits_to_the_buckets_as_they_are() -> None:
    b = ViewBudget(ViewLimits(network_burst=10, total_burst=LOOSE))
    assert b.admit(A, 0.0) is None  # 9 left
    b.configure(ViewLimits(network_burst=2, network_per_second=0.1, total_burst=LOOSE))
    assert [b.admit(A, 0.0) for _ in range(3)] == [None, None, Refused(Refusal.NETWORK, 10)]
    b.configure(ViewLimits(exempt=(ipaddress.ip_network("145.100.1.0/24"),)))
    assert b.admit(A, 0.0) is None


def test_networks_past_the_table_start_again_full() -> None:
    b = ViewBudget(ViewLimits(network_burst=1, total_burst=LOOSE, networks=2))
    assert b.admit(A, 0.0) is None
    assert b.admit(A, 0.0) is not None
    b.admit(B, 0.0)
    b.admit(V6, 0.0)  # A is forgotten
    assert b.admit(A, 0.0) is None


@pytest.mark.parametrize(
    ("rate", "retry_after"),
    [(1000.0, 1), (2.0, 1), (1 / 3, 3), (0.01, 100), (1e-6, MAX_RETRY_AFTER)],
)
def test_retry_after_is_whole_seconds_rounded_up(rate: float, retry_after: int) -> None:
    b = ViewBudget(ViewLimits(network_burst=1, network_per_second=rate, total_burst=LOOSE))
    assert b.admit(A, 0.0) is None
    refused = b.admit(A, 0.0)
    assert refused is not None
    assert refused.retry_after == retry_after
