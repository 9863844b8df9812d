"""Selection: nearest first, weight spread among the equally close, stable, every rejection."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from collections import Counter
from dataclasses import replace

import pytest

from redirector.core.models import Location, Mirror, MirrorState, Status
from redirector.core.selection import (
    Candidate,
    Policy,
    Reason,
    Request,
    distance_km,
    select,
)
from redirector.views.condition import reason_text

NOW = 1_700_000_000.0
POLICY = Policy(max_lag=8 * 3600, closeness_km=500, closeness_ratio=0.25)


def mirror(name: str, lat: float, lon: float, **kw: object) -> Mirror:
    m = Mirror(name, f"http://{name}.test/sme/", None, "NL", lat, lon)
    return replace(m, **kw)  # type: ignore[arg-type]  # test helper: fields by keyword


def fresh(name: str, **kw: object) -> MirrorState:
    s = MirrorState(name, Status.UP, NOW - 60, master_date=NOW - 3600, behind_since=None)
    return replace(s, **kw)  # type: ignore[arg-type]  # test helper: fields by keyword


def cands(*mirrors: Mirror) -> list[Candidate]:
    return [Candidate(m, fresh(m.name)) for m in mirrors]


def req(
    loc: Location | None = None,
    key: bytes = b"\x01\x02\x03",
    path: str = "releases/10/smeos/x86_64/repodata/repomd.xml",
    scheme: str = "http",
    ipv6: bool = False,
) -> Request:
    return Request(path, scheme, ipv6, loc, key)


AMSTERDAM = Location("NL", "EU", 52.37, 4.90)


def test_nearest_wins_when_others_are_far() -> None:
    ms = cands(
        mirror("chapelhill", 35.91, -79.05),
        mirror("amsterdam", 52.37, 4.90),
        mirror("melbourne", -37.81, 144.96),
    )
    for i in range(200):
        d = select(ms, req(AMSTERDAM, key=i.to_bytes(3, "big")), NOW, POLICY)
        assert d.chosen is not None
        assert d.chosen.mirror.name == "amsterdam"
        assert [r.mirror.name for r in d.ranked] == ["amsterdam", "chapelhill", "melbourne"]


def test_weight_split_among_equidistant_mirrors() -> None:
    # Three mirrors 111 km from the client in three directions: one tier, split 1:2:3.
    ms = cands(
        mirror("a", 1.0, 0.0, weight=100),
        mirror("b", 0.0, 1.0, weight=200),
        mirror("c", -1.0, 0.0, weight=300),
    )
    here = Location("XX", "AF", 0.0, 0.0)
    counts: Counter[str] = Counter()
    n = 10_000
    for i in range(n):
        key = ((i * 7919 + 11) % (1 << 24)).to_bytes(3, "big")  # 10,000 distinct /24 networks
        chosen = select(ms, req(here, key=key), NOW, POLICY).chosen
        assert chosen is not None
        counts[chosen.mirror.name] += 1
    for name, weight in (("a", 100), ("b", 200), ("c", 300)):
        assert abs(counts[name] / n - weight / 600) < 0.03, counts


def test_no_location_spreads_over_all_by_weight() -> None:
    ms = cands(
        mirror("far", -37.8, 144.9, weight=100),
        mirror("near", 52.3, 4.9, weight=300),
    )
    counts = Counter(
        select(ms, req(None, key=i.to_bytes(3, "big")), NOW, POLICY).ranked[0].mirror.name
        for i in range(4000)
    )
    assert abs(counts["near"] / 4000 - 0.75) < 0.03, counts


def test_choice_is_stable_per_client_network() -> None:
    ms = cands(*(mirror(f"m{i}", 0.0, 0.0, weight=100) for i in range(5)))
    here = Location("XX", "AF", 0.0, 0.0)
    first = select(ms, req(here, key=b"\x0a\x00\x01"), NOW, POLICY).ranked
    for _ in range(20):
        assert select(ms, req(here, key=b"\x0a\x00\x01"), NOW, POLICY).ranked == first
    # Reordering the mirror list does not change the answer.
    assert select(list(reversed(ms)), req(here, key=b"\x0a\x00\x01"), NOW, POLICY).ranked == first


def test_choice_is_the_same_in_another_process() -> None:
    code = (
        "from redirector.core.selection import client_seed, name_seed, rendezvous_score;"
        "print(rendezvous_score(client_seed(b'\\x0a\\x00\\x01'), name_seed('nluug'), 100))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outs) == 1


def test_adding_a_mirror_moves_only_its_share() -> None:
    here = Location("XX", "AF", 0.0, 0.0)
    before = cands(*(mirror(f"m{i}", 0.0, 0.0) for i in range(4)))
    after = [*before, *cands(mirror("new", 0.0, 0.0))]
    moved = 0
    for i in range(2000):
        key = i.to_bytes(3, "big")
        a = select(before, req(here, key=key), NOW, POLICY).ranked[0].mirror.name
        b = select(after, req(here, key=key), NOW, POLICY).ranked[0].mirror.name
        if a != b:
            assert b == "new"  # clients only ever move to the newcomer
            moved += 1
    assert 0.15 < moved / 2000 < 0.25  # about 1/5


@pytest.mark.parametrize(
    ("nearest_km", "second_km", "in_tier"),
    [
        # nearest = 100 km: the tier reaches 100 + max(500, 25) = 600 km (absolute slack).
        (100.0, 599.0, True),
        (100.0, 601.0, False),
        # nearest = 4,000 km: the tier reaches 4,000 + max(500, 1,000) = 5,000 km (relative).
        (4000.0, 4990.0, True),
        (4000.0, 5010.0, False),
    ],
)
def test_closeness_edges(nearest_km: float, second_km: float, in_tier: bool) -> None:
    here = Location("XX", "AF", 0.0, 0.0)
    km_per_deg = distance_km(0, 0, 1, 0)
    ms = cands(
        mirror("near", nearest_km / km_per_deg, 0.0), mirror("other", 0.0, second_km / km_per_deg)
    )
    d = select(ms, req(here), NOW, POLICY)
    other = next(r for r in d.ranked if r.mirror.name == "other")
    assert other.tier is in_tier


OK = mirror("ok", 52.0, 5.0)


@pytest.mark.parametrize(
    ("m", "state", "request_", "reason", "detail"),
    [
        (replace(OK, enabled=False), fresh("ok"), req(), Reason.DISABLED, "disabled"),
        (replace(OK, exclude=("obsolete/",)), fresh("ok"), req(path="obsolete/6/x.iso"),
         Reason.EXCLUDED, "excludes obsolete/"),
        (OK, fresh("ok", lacks=("releases/testing/",)), req(path="releases/testing/11/a"),
         Reason.LACKS, "lacks releases/testing/"),
        (OK, fresh("ok"), req(scheme="https"), Reason.NO_HTTPS, "https"),
        (OK, fresh("ok"), req(ipv6=True), Reason.NO_IPV6, "IPv6"),
        (OK, None, req(), Reason.UNCHECKED, "not checked"),
        (OK, fresh("ok", status=Status.UNKNOWN), req(), Reason.UNCHECKED, "not checked"),
        (OK, fresh("ok", status=Status.DOWN, error="timed out"), req(), Reason.DOWN, "timed out"),
        (OK, fresh("ok", status=Status.BROKEN, error="junk"), req(), Reason.BROKEN, "junk"),
        (OK, fresh("ok", master_date=None), req(), Reason.UNKNOWN_LAG, "master trace"),
        (OK, fresh("ok", behind_since=NOW - 9.25 * 3600), req(), Reason.STALE,
         "stale by 9h15m"),
        (OK, fresh("ok", checked_at=NOW - 9 * 3600), req(), Reason.OUTDATED, "9h00m ago"),
    ],
)  # fmt: skip
def test_each_rejection_reason(
    m: Mirror, state: MirrorState | None, request_: Request, reason: Reason, detail: str
) -> None:
    d = select([Candidate(m, state)], request_, NOW, POLICY)
    assert d.chosen is None
    assert len(d.rejected) == 1
    assert d.rejected[0].reason is reason
    assert detail in reason_text(d.rejected[0], NOW)


def test_edges_of_eligibility() -> None:
    # Exactly max_lag behind is still fresh; syncing mirrors serve; the exclude is a prefix.
    for state in (
        fresh("ok", behind_since=NOW - 8 * 3600),
        fresh("ok", status=Status.SYNCING),
    ):
        assert select([Candidate(OK, state)], req(), NOW, POLICY).chosen is not None
    m = replace(OK, exclude=("releases/testing/",), https="https://ok.test/sme/", ipv6=True)
    d = select([Candidate(m, fresh("ok"))], req(scheme="https", ipv6=True), NOW, POLICY)
    assert d.chosen is not None
    assert d.chosen.base == "https://ok.test/sme/"


def test_http_request_may_go_to_an_https_only_mirror() -> None:
    m = Mirror("tls", None, "https://tls.test/", "FR", 48.8, 2.3)
    d = select([Candidate(m, fresh("tls"))], req(), NOW, POLICY)
    assert d.chosen is not None
    assert d.chosen.base == "https://tls.test/"


def test_nothing_eligible_means_master() -> None:
    d = select([Candidate(OK, fresh("ok", status=Status.DOWN))], req(AMSTERDAM), NOW, POLICY)
    assert d.chosen is None
    assert d.ranked == ()


def test_weight_zero_is_a_last_resort() -> None:
    here = Location("XX", "AF", 0.0, 0.0)
    ms = cands(mirror("backup", 0.0, 0.0, weight=0), mirror("main", 0.0, 0.01))
    for i in range(50):
        d = select(ms, req(here, key=i.to_bytes(3, "big")), NOW, POLICY)
        assert [r.mirror.name for r in d.ranked] == ["main", "backup"]


# --- network first, then distance: the mirrors' own rules --------------------------------

OHIO = Location("US", "NA", 39.96, -83.00)
PARIS = Location("FR", "EU", 48.86, 2.35)


@pytest.mark.parametrize(
    ("client", "near", "far"),
    [
        # The default tier is max(1.5 x nearest, nearest + 300 km): 565 km to North Carolina
        # leaves Montreal (977 km) out, 430 km to Amsterdam leaves Berlin (877 km) out.
        (OHIO, mirror("chapelhill", 35.91, -79.05, country="US"),
         mirror("montreal", 45.50, -73.57, country="CA")),
        (PARIS, mirror("amsterdam", 52.37, 4.90), mirror("berlin", 52.52, 13.40, country="DE")),
    ],
)  # fmt: skip
def test_default_tier_keeps_clients_within_half_again_the_nearest(
    client: Location, near: Mirror, far: Mirror
) -> None:
    nearest = distance_km(client.latitude, client.longitude, near.latitude, near.longitude)
    other = distance_km(client.latitude, client.longitude, far.latitude, far.longitude)
    assert other > max(1.5 * nearest, nearest + 300)
    for i in range(300):
        d = select(cands(near, far), req(client, key=i.to_bytes(3, "big")), NOW, Policy())
        assert d.chosen is not None
        assert d.chosen.mirror.name == near.name, i


def test_default_tier_has_a_floor_for_short_distances() -> None:
    # 20 km to the nearest: 1.5 x alone would leave a mirror 250 km away out of the tier.
    here = Location("XX", "AF", 0.0, 0.0)
    km_per_deg = distance_km(0, 0, 1, 0)
    ms = cands(mirror("near", 20 / km_per_deg, 0.0), mirror("other", 0.0, 310 / km_per_deg))
    d = select(ms, req(here), NOW, Policy())
    assert all(r.tier for r in d.ranked)


NET = ipaddress.ip_address
LOCAL = mirror("local", -33.9, 18.4, netblocks=(ipaddress.ip_network("192.0.2.0/24"),))
ISP = mirror("isp", -26.2, 28.0, asns=(3320,))
NEAR = mirror("near", 52.37, 4.90)


def net_req(
    address: str | None = None,
    asn: int | None = None,
    loc: Location | None = AMSTERDAM,
    **kw: object,
) -> Request:
    r = replace(req(loc), address=None if address is None else NET(address), asn=asn)
    return replace(r, **kw)  # type: ignore[arg-type]  # test helper: fields by keyword


@pytest.mark.parametrize(
    ("mirrors", "request_", "chosen", "rule"),
    [
        # A client in a mirror's netblock gets it, however far it is and whatever its weight.
        ((NEAR, LOCAL), net_req("192.0.2.77"), "local", "netblock 192.0.2.0/24"),
        ((NEAR, replace(LOCAL, weight=1)), net_req("192.0.2.77"), "local",
         "netblock 192.0.2.0/24"),
        ((NEAR, LOCAL), net_req("198.51.100.1"), "near", "same country NL"),
        # The client's AS, from the ASN database.
        ((NEAR, ISP), net_req("198.51.100.1", asn=3320), "isp", "same AS 3320"),
        ((NEAR, ISP), net_req("198.51.100.1", asn=3321), "near", "same country NL"),
        # Without a location the network rule still holds.
        ((NEAR, ISP), net_req("198.51.100.1", asn=3320, loc=None), "isp", "same AS 3320"),
        # IPv6 netblocks match IPv6 clients only.
        ((NEAR, replace(LOCAL, netblocks=(ipaddress.ip_network("2001:db8::/32"),))),
         net_req("2001:db8:5::1"), "local", "netblock 2001:db8::/32"),
    ],
)  # fmt: skip
def test_network_rules_and_tie_breakers(
    mirrors: tuple[Mirror, ...], request_: Request, chosen: str, rule: str
) -> None:
    for i in range(40):
        d = select(cands(*mirrors), replace(request_, client_key=bytes([i, 7])), NOW, Policy())
        assert d.chosen is not None
        assert (d.chosen.mirror.name, d.chosen.rule) == (chosen, rule)


def test_in_the_tier_a_mirror_in_the_clients_country_counts_twice_its_weight() -> None:
    ms = cands(
        mirror("canterbury", 51.30, 1.07, country="GB"),
        mirror("roubaix", 50.69, 3.17, country="FR"),
    )
    chosen: Counter[str] = Counter()
    for i in range(3000):
        d = select(ms, req(PARIS, key=i.to_bytes(3, "big")), NOW, Policy())
        assert d.chosen is not None
        assert all(r.tier for r in d.ranked)
        rules = {r.mirror.name: r.rule for r in d.ranked}
        assert rules == {"roubaix": "same country FR", "canterbury": None}
        chosen[d.chosen.mirror.name] += 1
    assert 0.63 < chosen["roubaix"] / 3000 < 0.70  # 2/3: weight 100 x 2 against 100


def test_a_netblock_mirror_that_is_not_eligible_is_not_chosen() -> None:
    ms = [Candidate(NEAR, fresh("near")), Candidate(LOCAL, fresh("local", status=Status.DOWN))]
    d = select(ms, net_req("192.0.2.77"), NOW, Policy())
    assert d.chosen is not None
    assert d.chosen.mirror.name == "near"


def test_same_country_does_not_beat_a_positive_weight_with_weight_zero() -> None:
    ms = cands(mirror("backup", 52.3, 4.8, weight=0), mirror("main", 51.3, 1.07, country="GB"))
    for i in range(40):
        d = select(ms, req(AMSTERDAM, key=bytes([i])), NOW, Policy())
        assert [r.mirror.name for r in d.ranked] == ["main", "backup"]


BERLIN = Location("DE", "EU", 52.52, 13.40)
NEW_YORK = Location("US", "NA", 40.71, -74.0)


@pytest.mark.parametrize(
    ("m", "request_", "reason", "detail"),
    [
        (replace(LOCAL, private=True), net_req("198.51.100.1"), Reason.PRIVATE,
         "private: not your network"),
        (replace(NEAR, country_only=True), net_req(loc=BERLIN), Reason.COUNTRY_ONLY,
         "country-only: not your country (DE)"),
        (replace(NEAR, country_only=True), net_req(loc=None), Reason.COUNTRY_ONLY,
         "country-only: not your country (unknown)"),
        (replace(NEAR, continent_only=True), net_req(loc=NEW_YORK), Reason.CONTINENT_ONLY,
         "continent-only: not your continent (NA)"),
        (replace(NEAR, continent_only=True), net_req(loc=None), Reason.CONTINENT_ONLY,
         "continent-only: not your continent (unknown)"),
        (replace(NEAR, ipv6=False), net_req(ipv6=True), Reason.NO_IPV6,
         "not reachable over IPv6 (ipv6 = false in the config)"),
    ],
)  # fmt: skip
def test_each_rule_of_a_mirror_rejects_with_its_words(
    m: Mirror, request_: Request, reason: Reason, detail: str
) -> None:
    d = select([Candidate(m, fresh(m.name))], request_, NOW, Policy())
    assert d.chosen is None
    assert [(r.reason, reason_text(r, NOW)) for r in d.rejected] == [(reason, detail)]


@pytest.mark.parametrize(
    ("m", "request_"),
    [
        (replace(LOCAL, private=True), net_req("192.0.2.9")),
        (replace(ISP, private=True), net_req("198.51.100.1", asn=3320)),
        (replace(NEAR, country_only=True), net_req(loc=AMSTERDAM)),
        (replace(NEAR, continent_only=True), net_req(loc=BERLIN)),
    ],
)
def test_each_rule_of_a_mirror_admits_its_own_clients(m: Mirror, request_: Request) -> None:
    assert select([Candidate(m, fresh(m.name))], request_, NOW, Policy()).chosen is not None


@pytest.mark.parametrize(
    ("configured", "found", "serves"),
    [
        (None, None, False),  # not checked over IPv6 yet
        (None, True, True),  # the poller found it answering over IPv6
        (None, False, False),
        (True, None, True),  # the config overrides what the poller found
        (True, False, True),
        (False, True, False),
    ],
)
def test_ipv6_is_found_by_the_poller_unless_configured(
    configured: bool | None, found: bool | None, serves: bool
) -> None:
    m = replace(NEAR, ipv6=configured)
    d = select([Candidate(m, fresh("near", ipv6=found))], req(ipv6=True), NOW, Policy())
    assert (d.chosen is not None) is serves


def test_https_policy_master_sends_https_there_when_too_few_https_mirrors() -> None:
    tls = [mirror(f"tls{i}", 52.0, 5.0 + i, https=f"https://tls{i}.test/") for i in range(3)]
    plain = mirror("plain", 52.0, 4.0)
    few = cands(tls[0], plain)
    enough = cands(*tls, plain)
    strict = Policy(https_min=2)
    d = select(few, req(AMSTERDAM, scheme="https"), NOW, strict)
    assert d.chosen is None  # the master, over https
    assert {(r.mirror.name, r.reason) for r in d.rejected} == {
        ("tls0", Reason.NO_HTTPS),
        ("plain", Reason.NO_HTTPS),
    }
    assert any("fewer than https_min_mirrors = 2" in reason_text(r, NOW) for r in d.rejected)
    # Enough https mirrors, an http request, or the default policy: mirrors as before.
    assert select(enough, req(AMSTERDAM, scheme="https"), NOW, strict).chosen is not None
    assert select(few, req(AMSTERDAM), NOW, strict).chosen is not None
    assert select(few, req(AMSTERDAM, scheme="https"), NOW, Policy()).chosen is not None
