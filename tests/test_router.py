"""The router's caches never change an answer: every decision equals `selection.select`'s."""

from __future__ import annotations

import ipaddress
import math
import random
from collections.abc import Sequence
from dataclasses import replace

import pytest

from redirector import router as router_module
from redirector.config.settings import Settings
from redirector.core.clientip import Client, network_key, parse_ip
from redirector.core.models import Mirror, MirrorState, Status
from redirector.core.paths import BadPath
from redirector.core.selection import (
    Candidate,
    Policy,
    Ranked,
    Reason,
    Request,
    check,
    name_seed,
    select,
)
from redirector.geo import GeoReader
from redirector.router import Router, valid_until
from redirector.snapshot import Snapshot, SnapshotHolder
from redirector.views.condition import reason_text
from redirector.web.link import LINK_LIMIT, LINK_MAX_BYTES, link_header
from tests.mmdb_build import CityRecord
from tests.support.world import asn_db, city_db

NOW = 1_764_000_000.0  # a fixed "now" near 2025-11-24
HOUR = 3600.0
MAX_LAG = 8 * HOUR
SUBTREES = ("obsolete/", "releases/testing/", "contribs/", "releases/9/")
REPOS = ("releases/10/smeos/x86_64", "releases/10/smeupdates/x86_64")
PATHS = (
    "",
    "releases/10/smeos/x86_64/repodata/repomd.xml",
    "releases/10/smeos/x86_64/repodata",
    "releases/10/smeos/x86_64/repodata/",
    "releases/10/smeos/x86_64/Packages/a.rpm",
    "releases/10/smeupdates/x86_64/repodata/repomd.xml",
    "releases/testing/11/smeos/x86_64/repodata/repomd.xml",
    "releases/9/smeos/i386/b.rpm",
    "obsolete/7/x.iso",
    "obsolete",
    "contribs/someone/c.rpm",
    "project/trace/mirror.contribs.org",
)

# Networks of the test's GeoIP database: a few far apart, several close together.
PLACES = [
    ("81.0.0.0/16", CityRecord("NL", "EU", 52.37, 4.90)),
    ("82.0.0.0/16", CityRecord("GB", "EU", 51.30, 1.07)),
    ("83.0.0.0/16", CityRecord("FR", "EU", 48.86, 2.35)),
    ("84.0.0.0/16", CityRecord("US", "NA", 35.91, -79.05)),
    ("85.0.0.0/16", CityRecord("AU", "OC", -33.87, 151.21)),
    ("86.0.0.0/16", CityRecord("JP", "AS", 35.69, 139.69)),
    ("87.0.0.0/16", CityRecord("BR", "SA", -23.55, -46.63)),
    ("2a01::/16", CityRecord("DE", "EU", 50.11, 8.68)),
    ("2a02::/16", CityRecord("ZA", "AF", -26.20, 28.05)),
]
CLIENTS = [
    "81.0.1.2", "81.0.1.3", "81.0.200.9", "81.0.129.1", "84.0.7.7", "86.1.2.3", "82.0.3.4",
    "83.0.7.7", "84.0.1.1", "85.0.2.2",
    "86.0.9.9", "87.0.4.4", "2a01:1::5", "2a01:1:2::6", "2a02:5::1", "10.1.2.3", "192.0.2.1",
    "8.8.8.8", "2001:db8::1",
]  # fmt: skip


# The ASN file's networks: some inside the city networks, one where no city is known.
AS_NETWORKS = {
    "81.0.0.0/17": 1136, "81.0.128.0/17": 3320, "84.0.0.0/16": 7018, "2a01::/16": 3320,
    "8.8.8.0/24": 15169,
}  # fmt: skip
# Networks the random mirrors may declare as theirs.
NETBLOCKS = ("81.0.1.0/24", "81.0.0.0/16", "86.0.0.0/8", "2a01:1::/32", "2a02::/16", "8.8.8.0/24")


@pytest.fixture(scope="module")
def geo(tmp_path_factory: pytest.TempPathFactory) -> GeoReader:
    folder = tmp_path_factory.mktemp("geo")
    city = city_db(folder / "city.mmdb", dict(PLACES))
    return GeoReader.open_all([city, asn_db(folder / "asn.mmdb", AS_NETWORKS)])


def settings_for(mirrors: tuple[Mirror, ...], **kw: object) -> Settings:
    return replace(Settings(mirrors=mirrors, master="http://master.test/sme/"), **kw)  # type: ignore[arg-type]


def random_mirror(rng: random.Random, i: int) -> Mirror:
    lat, lon = rng.choice(PLACES)[1].latitude, rng.choice(PLACES)[1].longitude
    if rng.random() < 0.6:  # many mirrors near the clients, so tiers have several members
        place = rng.choice(PLACES)[1]
        lat = place.latitude + rng.uniform(-3, 3)
        lon = place.longitude + rng.uniform(-3, 3)
    has_http = rng.random() < 0.85
    netblocks = tuple(
        ipaddress.ip_network(n) for n in rng.sample(NETBLOCKS, rng.choice((0, 0, 0, 0, 1, 2)))
    )
    asns = tuple(rng.sample(sorted(set(AS_NETWORKS.values())), rng.choice((0, 0, 0, 0, 1))))
    return Mirror(
        name=f"m{i}",
        http=f"http://m{i}.test/sme/" if has_http else None,
        https=f"https://m{i}.test/sme/" if not has_http or rng.random() < 0.5 else None,
        country=rng.choice(("XX", "XX", *(place.country for _, place in PLACES))),
        latitude=max(-90.0, min(90.0, lat)),
        longitude=max(-180.0, min(180.0, lon)),
        weight=rng.choice((0, 1, 50, 100, 100, 100, 200)),
        exclude=tuple(rng.sample(SUBTREES, rng.choice((0, 0, 0, 1, 2)))),
        ipv6=rng.choice((None, None, True, False)),
        enabled=rng.random() < 0.9,
        netblocks=netblocks,
        asns=asns,
        private=bool(netblocks or asns) and rng.random() < 0.3,
        country_only=rng.random() < 0.1,
        continent_only=rng.random() < 0.1,
    )


def random_state(rng: random.Random, m: Mirror) -> MirrorState | None:
    if rng.random() < 0.1:
        return None
    status = rng.choice(
        [Status.UP] * 6 + [Status.SYNCING, Status.DOWN, Status.BROKEN, Status.UNKNOWN]
    )
    checked = NOW - rng.uniform(0, 10 * HOUR)
    master_date = None if rng.random() < 0.05 else NOW - 3 * 86400
    behind = None if rng.random() < 0.5 else NOW - rng.uniform(0, 12 * HOUR)
    return MirrorState(
        m.name,
        status,
        checked,
        master_date=master_date,
        behind_since=behind,
        error="boom" if status in (Status.DOWN, Status.BROKEN) else None,
        lacks=tuple(rng.sample(SUBTREES, rng.choice((0, 0, 0, 1)))),
        ipv6=rng.choice((None, True, False)),
    )


def random_snapshot(rng: random.Random, n: int) -> Snapshot:
    mirrors = tuple(random_mirror(rng, i) for i in range(n))
    candidates = tuple(
        Candidate(
            m,
            random_state(rng, m),
            frozenset(rng.sample(REPOS, rng.choice((0, 0, 0, 1)))),
        )
        for m in mirrors
    )
    return Snapshot(
        candidates=candidates,
        master=None,
        generation=rng.randrange(1000),
        loaded_at=NOW,
        seeds={m.name: name_seed(m.name) for m in mirrors},
    )


def critical_times(snap: Snapshot) -> list[float]:
    """Moments where some check changes its answer or its text, and just around them."""
    times = [NOW]
    for c in snap.candidates:
        s = c.state
        if s is None:
            continue
        edges = [s.checked_at + MAX_LAG]
        if s.behind_since is not None:
            edges.append(s.behind_since + MAX_LAG)
            edges.extend(s.behind_since + (k / 10 + 0.05) * HOUR for k in range(80, 130, 7))
        edges.extend(s.checked_at + (k / 10 + 0.05) * HOUR for k in range(80, 130, 11))
        for e in edges:
            times.extend((e - 0.5, e - 1e-6, e, e + 1e-6, e + 0.5))
    return times


POLICY = Policy(MAX_LAG)


def expected(  # type: ignore[no-untyped-def]
    snap: Snapshot,
    geo: GeoReader | None,
    ip: str,
    scheme: str,
    path: str,
    now: float,
    policy: Policy = POLICY,
):
    addr = parse_ip(ip)
    loc = geo.locate(addr) if geo is not None and addr is not None else None
    asn = geo.asn(addr) if geo is not None and addr is not None else None
    req = Request(
        path, scheme, addr is not None and addr.version == 6, loc, network_key(addr), asn, addr
    )
    return select(snap.candidates, req, now, policy, snap.seeds)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("located", [True, False])
def test_route_equals_select_across_states_paths_and_time(
    geo: GeoReader, seed: int, located: bool
) -> None:
    rng = random.Random(seed)
    snap = random_snapshot(rng, rng.choice((3, 12, 40)))
    holder = SnapshotHolder(tuple(c.mirror for c in snap.candidates))
    holder.current = snap
    # Every third seed with https_policy "master": too few https mirrors send https there.
    https_min = (0, 0, 3)[seed % 3]
    policy = Policy(MAX_LAG, https_min=https_min)
    settings = settings_for(holder.mirrors)
    if https_min:
        settings = replace(settings, https_policy="master", https_min_mirrors=https_min)
    reader = geo if located else None
    router = Router(settings, holder, reader)
    times = critical_times(snap)
    times.sort()
    # Mostly forwards as a clock goes, with a few steps back, which must not reuse a window.
    times += rng.sample(times, min(30, len(times)))
    checked = 0
    for now in times:
        for _ in range(4):
            ip, scheme, path = rng.choice(CLIENTS), rng.choice(("http", "https")), rng.choice(PATHS)
            want = expected(snap, reader, ip, scheme, path, now, policy)
            got = router.resolve("127.0.0.1", ip, scheme, "http", path, now)
            assert got.decision == want, (now, ip, scheme, path)
            chosen = want.chosen
            assert got.chosen == chosen
            assert got.fallback is (chosen is None)
            assert got.target == (chosen.base if chosen else settings.master) + path
            n = rng.choice((1, 2, 3, 6, 12, 50))
            assert got.top(n) == want.ranked[:n]
            if chosen is not None:  # the Link header, kept per ranking, as built from scratch
                assert link_header(got, got.target) == reference_link(want.ranked, path, 0)
                if len(want.ranked) > 1:
                    second = want.ranked[1].base + path
                    assert link_header(got, second) == reference_link(want.ranked, path, 1)
            checked += 1
    assert checked == 4 * len(times)


def reference_link(ranked: Sequence[Ranked], path: str, start: int) -> str | None:
    """RFC 6249 entries after rank `start`, at most LINK_LIMIT, within LINK_MAX_BYTES."""
    parts: list[str] = []
    size = len("Link: ")
    for pri, r in enumerate(ranked[start + 1 : start + 1 + LINK_LIMIT], start=1):
        entry = f"<{r.base}{path}>; rel=duplicate; pri={pri}; geo={r.mirror.country.lower()}"
        add = len(entry.encode()) + (2 if parts else 0)
        if size + add >= LINK_MAX_BYTES:
            break
        parts.append(entry)
        size += add
    return ", ".join(parts) or None


def test_route_takes_a_client_as_well(geo: GeoReader) -> None:
    snap = random_snapshot(random.Random(99), 20)
    holder = SnapshotHolder(tuple(c.mirror for c in snap.candidates))
    holder.current = snap
    router = Router(settings_for(holder.mirrors), holder, geo)
    for ip in CLIENTS:
        addr = parse_ip(ip)
        for path in PATHS:
            got = router.route(Client(addr, "http"), path, NOW)
            assert got.decision == expected(snap, geo, ip, "http", path, NOW)


def fresh(name: str, behind_since: float | None = None) -> MirrorState:
    return MirrorState(
        name, Status.UP, NOW - 60, master_date=NOW - 86400, behind_since=behind_since
    )


NL = Mirror("nl", "http://nl.test/", None, "NL", 52.37, 4.90, exclude=("obsolete/",))
US = Mirror("us", "http://us.test/", None, "US", 35.91, -79.05)


def two_mirror_router(
    geo: GeoReader | None, **states: MirrorState
) -> tuple[Router, SnapshotHolder]:
    holder = SnapshotHolder((NL, US))
    holder.current = Snapshot(
        candidates=(Candidate(NL, states.get("nl")), Candidate(US, states.get("us"))),
        master=None,
        generation=1,
        loaded_at=NOW,
        seeds={"nl": name_seed("nl"), "us": name_seed("us")},
    )
    return Router(settings_for((NL, US)), holder, geo), holder


def test_a_swapped_snapshot_is_used_at_once(geo: GeoReader) -> None:
    router, holder = two_mirror_router(geo, nl=fresh("nl"), us=fresh("us"))
    path = "releases/10/x.rpm"
    assert router.resolve("127.0.0.1", "81.0.1.2", None, "http", path, NOW).target == (
        "http://nl.test/" + path
    )
    holder.current = Snapshot(
        candidates=(
            Candidate(NL, replace(fresh("nl"), status=Status.DOWN, error="gone")),
            Candidate(US, fresh("us")),
        ),
        master=None,
        generation=2,
        loaded_at=NOW,
        seeds=holder.current.seeds,
    )
    routed = router.resolve("127.0.0.1", "81.0.1.2", None, "http", path, NOW)
    assert routed.target == "http://us.test/" + path
    assert [r.reason for r in routed.decision.rejected] == [Reason.DOWN]


def test_a_mirror_crossing_max_lag_is_dropped_without_a_new_snapshot(geo: GeoReader) -> None:
    behind = NOW - 7 * HOUR
    router, _ = two_mirror_router(geo, nl=fresh("nl", behind_since=behind), us=fresh("us"))
    path = "releases/10/x.rpm"
    edge = behind + MAX_LAG
    before = router.resolve("127.0.0.1", "81.0.1.2", None, "http", path, edge - 1)
    assert before.chosen is not None
    assert before.chosen.mirror is NL
    after = router.resolve("127.0.0.1", "81.0.1.2", None, "http", path, edge + 1)
    assert after.chosen is not None
    assert after.chosen.mirror is US
    assert reason_text(after.decision.rejected[0], edge + 1).startswith("stale by 8h00m")
    # Checked 60 s before NOW: after max_lag without a new check it is "state too old".
    late = router.resolve("127.0.0.1", "84.0.1.1", None, "http", path, NOW - 60 + MAX_LAG + 1)
    assert late.fallback
    assert late.target == "http://master.test/sme/" + path


def test_a_stale_rejection_holds_no_words_and_never_expires() -> None:
    behind = NOW - 9 * HOUR
    c = Candidate(US, fresh("us", behind_since=behind))
    why = check(c, "", "http", False, NOW, MAX_LAG)
    assert why is not None
    assert reason_text(why, NOW).startswith("stale by 9h00m")
    assert valid_until(c, why, NOW, MAX_LAG) == math.inf
    later = check(c, "", "http", False, NOW + 360, MAX_LAG)
    assert later == why  # the same facts: a cached one equals select's at any later time
    assert later is not None
    assert reason_text(later, NOW + 360).startswith("stale by 9h06m")


def test_excluded_subtree_uses_another_class(geo: GeoReader) -> None:
    router, _ = two_mirror_router(geo, nl=fresh("nl"), us=fresh("us"))
    ok = router.resolve("127.0.0.1", "81.0.1.2", None, "http", "releases/a", NOW)
    assert ok.chosen is not None
    assert ok.chosen.mirror is NL
    excluded = router.resolve("127.0.0.1", "81.0.1.2", None, "http", "obsolete/a", NOW)
    assert excluded.chosen is not None
    assert excluded.chosen.mirror is US
    assert excluded.decision.rejected[0].reason is Reason.EXCLUDED
    # "obsolete" without the slash is not below the excluded subtree.
    bare = router.resolve("127.0.0.1", "81.0.1.2", None, "http", "obsoletex/a", NOW)
    assert bare.chosen is not None
    assert bare.chosen.mirror is NL


def test_untrusted_peer_headers_are_ignored_and_cached_apart(geo: GeoReader) -> None:
    router, _ = two_mirror_router(geo, nl=fresh("nl"), us=fresh("us"))
    spoof = router.resolve("84.0.1.1", "81.0.1.2", "https", "http", "a", NOW)
    assert spoof.client == Client(ipaddress.ip_address("84.0.1.1"), "http")
    assert spoof.chosen is not None
    assert spoof.chosen.mirror is US
    proxied = router.resolve("127.0.0.1", "81.0.1.2", None, "http", "a", NOW)
    assert proxied.client == Client(ipaddress.ip_address("81.0.1.2"), "http")


def test_swap_geo_and_reconfigure_drop_the_client_cache(geo: GeoReader) -> None:
    router, _ = two_mirror_router(geo, nl=fresh("nl"), us=fresh("us"))
    first = router.resolve("127.0.0.1", "81.0.1.2", None, "http", "a", NOW)
    assert first.location is not None
    assert first.location.country == "NL"
    router.swap_geo(None)
    blind = router.resolve("127.0.0.1", "81.0.1.2", None, "http", "a", NOW)
    assert blind.location is None
    assert blind.decision.ranked[0].distance_km is None
    router.reconfigure(replace(router.settings, trusted_proxies=()))
    direct = router.resolve("127.0.0.1", "81.0.1.2", None, "http", "a", NOW)
    assert direct.client.ip == ipaddress.ip_address("127.0.0.1")


def test_full_caches_are_emptied_not_grown(geo: GeoReader, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(router_module, "WHO_CACHE", 3)
    monkeypatch.setattr(router_module, "PATH_CACHE", 3)
    monkeypatch.setattr(router_module, "CELL_CACHE", 2)
    monkeypatch.setattr(router_module, "ORDER_CACHE", 2)
    router, holder = two_mirror_router(geo, nl=fresh("nl"), us=fresh("us"))
    holder.current = random_snapshot(random.Random(5), 30)  # tiers of several mirrors
    snap = holder.current
    most = 0
    for i, ip in enumerate(CLIENTS * 3):
        path = f"releases/{i % 7}/x.rpm"
        got = router.resolve("127.0.0.1", ip, None, "http", path, NOW)
        assert got.decision == expected(snap, geo, ip, "http", path, NOW)
        assert len(router._who) <= 3
        assert len(router._classes) <= 3
        cells = [c for e in router._entries.values() for c in e.cells.values()]
        assert len(cells) <= 2 * len(router._entries)
        kept = sum(len(c.orders) for c in cells)
        assert kept <= 2
        most = max(most, kept)
    assert most == 2  # tiers of several mirrors were met, and their orders kept
    # A long X-Forwarded-For is answered but not kept.
    chain = ", ".join(["81.0.1.2"] * 40)
    router._who.clear()
    assert router.resolve("127.0.0.1", chain, None, "http", "a", NOW).client.ip is not None
    assert not router._who


def test_tree_path_is_remembered_only_when_accepted(
    geo: GeoReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(router_module, "PATH_CACHE", 2)
    router, _ = two_mirror_router(geo, nl=fresh("nl"), us=fresh("us"))
    assert router.tree_path("/smeserver//releases/10/a.rpm") == "releases/10/a.rpm"
    assert router.tree_path("/smeserver//releases/10/a.rpm") == "releases/10/a.rpm"
    assert router.tree_path("/pub/smeserver/x%20y") == "x%20y"
    assert router.tree_path("/smeserver") == ""
    assert router.tree_path("/elsewhere/a") is None
    for bad in ("/smeserver/../etc/passwd", "/smeserver/a/%2e%2e/b", "/smeserver/a%2fb"):
        with pytest.raises(BadPath):
            router.tree_path(bad)
        with pytest.raises(BadPath):  # refused again, not remembered as something else
            router.tree_path(bad)
    assert len(router._raw_paths) <= 2
    assert "/smeserver/../etc/passwd" not in router._raw_paths
