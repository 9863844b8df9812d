"""Explain views: ?mirrorlist as HTML and JSON for every rejection reason, the CLI, Link headers."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from redirector.cli import main as cli
from redirector.cli.explain import cli_path
from redirector.config.settings import Settings, parse_settings
from redirector.core.models import (
    MasterState,
    MasterVersion,
    Mirror,
    MirrorState,
    RepoCheck,
    RepodataState,
    Status,
)
from redirector.core.paths import BadPath
from redirector.core.selection import Candidate, Policy, Reason, name_seed
from redirector.geo import GeoReader
from redirector.router import Router
from redirector.snapshot import Snapshot, SnapshotHolder
from redirector.store.base import Store
from redirector.store.memory import MemoryStore
from redirector.store.redis import RedisStore
from redirector.views.explain import (
    explain,
    prefers_json,
    render_text,
    to_json,
    wants_json,
    wants_mirrorlist,
)
from redirector.web.app import create_app
from redirector.web.link import LINK_MAX_BYTES
from tests.farm import Farm, raw_get, status_of
from tests.mmdb_build import CityRecord
from tests.support.world import NL6_CLIENT, NL_CLIENT, REPOMD, STATUS, asn_db, city_db, fill, geo

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]
Client = TestClient[web.Request, web.Application]

REPO_DIR = "releases/10/smeos/x86_64"


def mirror_block(name: str, lat: float = 50.0, lon: float = 5.0, cc: str = "NL", **kw: str) -> str:
    fields = {
        "name": f'"{name}"',
        "http": f'"http://127.0.0.1:9/{name}/"',
        "https": f'"https://127.0.0.1:9/{name}/"',
        "country": f'"{cc}"',
        "latitude": str(lat),
        "longitude": str(lon),
        "ipv6": "true",
        **kw,
    }
    body = "\n".join(f"{k} = {v}" for k, v in fields.items() if v != "")
    return f"\n[[mirror]]\n{body}\n"


def name_of(reason: Reason) -> str:
    return reason.name.lower().replace("_", "-")


# One mirror ruled out by each reason for an https request from an IPv6 client in the
# Netherlands for REPOMD; two eligible ones (near and far).
SPECIAL = {
    Reason.DISABLED: {"enabled": "false"},
    Reason.EXCLUDED: {"exclude": '["releases/"]'},
    Reason.FTP_ONLY: {"http": "", "https": "", "ftp": '"ftp://127.0.0.1:9/ftp-only/"'},
    Reason.NO_HTTPS: {"https": ""},
    Reason.NO_IPV6: {"ipv6": "false"},
    Reason.PRIVATE: {"private": "true", "netblocks": '["192.0.2.0/24"]'},
    Reason.COUNTRY_ONLY: {"country_only": "true"},
    Reason.CONTINENT_ONLY: {"continent_only": "true", "country": '"US"'},
}


def every_reason_text(extra: str) -> str:
    blocks = [mirror_block("near", 52.37, 4.90), mirror_block("far", 35.91, -79.05, "US")]
    for i, reason in enumerate(Reason):
        # Spread over Europe, so each has a distance of its own.
        special = SPECIAL.get(reason, {})
        blocks.append(mirror_block(name_of(reason), 40.0 + i, 10.0, "DE", **special))
    head = f"""
[redirector]
master = "http://127.0.0.1:9/master/"
trusted_proxies = ["127.0.0.1/32", "::1/128"]
verify_files = false  # the mirrors are not real: no HEAD checks
{extra}
"""
    return head + "".join(blocks)


def every_reason_config(extra: str = "") -> Settings:
    return parse_settings(every_reason_text(extra), "explain.toml")


async def fill_every_reason(store: Store, now: float) -> None:
    def fresh(name: str, **kw: Any) -> MirrorState:
        s = MirrorState(name, Status.UP, now - 60, master_date=now - 3600)
        return replace(s, **kw)

    await store.put_master(MasterState((MasterVersion(now - 3600, now - 3500),), now - 30))
    states = [fresh("near"), fresh("far")]
    for reason in Reason:
        n = name_of(reason)
        if reason is Reason.UNCHECKED:
            continue
        states.append(
            {
                Reason.LACKS: fresh(n, lacks=("releases/10/",)),
                Reason.DOWN: MirrorState(n, Status.DOWN, now - 60, error="timed out after 10 s"),
                Reason.BROKEN: MirrorState(n, Status.BROKEN, now - 60, error="not a trace"),
                Reason.UNKNOWN_LAG: fresh(n, master_date=None),
                Reason.STALE: fresh(n, behind_since=now - 9 * 3600),
                Reason.OUTDATED: fresh(n, checked_at=now - 9 * 3600),
            }.get(reason, fresh(n))
        )
    await store.put_states(states)
    await store.put_repodata(
        RepodataState(
            repos={},
            mirrors={name_of(Reason.REPODATA): {REPO_DIR: RepoCheck.MISMATCHED}},
            checked_at=now - 30,
        )
    )


@pytest.fixture
async def every_reason(aiohttp_client: ClientFactory, tmp_path: Path) -> Client:
    store = MemoryStore()
    await fill_every_reason(store, time.time())
    return await aiohttp_client(
        # The tier of the earlier defaults, which the limit below is stated in.
        create_app(
            every_reason_config("closeness_km = 500\ncloseness_ratio = 0.25"),
            poll=False,
            store=store,
            geo=geo(tmp_path),
        )
    )


async def explain_json(client: Client, query: str = "mirrorlist&json", **headers: str) -> Any:
    resp = await client.get(
        f"/smeserver/{REPOMD}?{query}",
        headers={"X-Forwarded-For": NL6_CLIENT, "X-Forwarded-Proto": "https", **headers},
        allow_redirects=False,
    )
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    assert resp.headers["Cache-Control"] == "no-store"
    return await resp.json()


async def explain_html(client: Client) -> str:
    resp = await client.get(
        f"/smeserver/{REPOMD}?mirrorlist",
        headers={"X-Forwarded-For": NL6_CLIENT, "X-Forwarded-Proto": "https"},
        allow_redirects=False,
    )
    assert resp.status == 200
    assert resp.content_type == "text/html"
    return await resp.text()


@pytest.mark.parametrize("reason", list(Reason), ids=lambda r: r.name.lower())
async def test_every_rejection_reason_in_json_and_html(
    every_reason: Client, reason: Reason
) -> None:
    doc = await explain_json(every_reason)
    by = {m["name"]: m for m in doc["mirrors"]}
    entry = by[name_of(reason)]
    assert entry["eligible"] is False
    assert entry["rank"] is None
    assert entry["reason"] == reason.name.lower()
    assert entry["why"].startswith("rejected: ")
    assert entry["url"] is None
    assert entry["distance_km"] > 0

    page = await explain_html(every_reason)
    row = re.search(
        rf'<tr class="rejected" data-mirror="{name_of(reason)}" data-reason="([a-z0-9_]+)">', page
    )
    assert row is not None
    assert row.group(1) == reason.name.lower()


async def test_explanation_ranks_and_locates(every_reason: Client) -> None:
    doc = await explain_json(every_reason)
    assert doc["version"] == 1
    assert doc["path"] == REPOMD
    assert doc["client"] == {
        "ip": NL6_CLIENT,
        "scheme": "https",
        "ipv6": True,
        "network": "2001:610:1::/48",
        "location": {"country": "NL", "continent": "EU", "latitude": 52.37, "longitude": 4.9},
        "location_note": "from the GeoIP database",
    }
    assert doc["outcome"] == "mirror"
    assert doc["target"] == f"https://127.0.0.1:9/near/{REPOMD}"
    first, second, *rest = doc["mirrors"]
    assert (first["name"], first["rank"], first["distance_km"], first["tier"]) == (
        "near", 1, 0.0, True,
    )  # fmt: skip
    assert first["why"].startswith("chosen: in the nearest tier")
    assert (second["name"], second["rank"], second["tier"]) == ("far", 2, False)
    assert second["why"].startswith("alternative #1: outside the nearest tier")
    assert 6000 < second["distance_km"] < 7000
    assert doc["nearest_km"] == 0.0
    assert doc["tier_limit_km"] == 500.0
    assert len(rest) == len(Reason)
    # Rejected mirrors nearest first.
    distances = [m["distance_km"] for m in rest]
    assert distances == sorted(distances)


async def test_json_by_accept_header_and_html_by_default(every_reason: Client) -> None:
    doc = await explain_json(every_reason, "mirrorlist", Accept="application/json")
    assert doc["outcome"] == "mirror"
    doc = await explain_json(every_reason, "mirrorlist=json")
    assert doc["outcome"] == "mirror"
    page = await explain_html(every_reason)
    assert "<title>Mirror list for releases/10/smeos/x86_64/repodata/repomd.xml</title>" in page
    assert f'<a id="target" href="https://127.0.0.1:9/near/{REPOMD}">' in page
    assert '<tr class="chosen" data-mirror="near" data-reason="">' in page


async def test_explain_is_not_a_download_and_bad_paths_stay_400(every_reason: Client) -> None:
    await explain_json(every_reason)
    await explain_html(every_reason)
    assert every_reason.server.port is not None
    raw = await raw_get(every_reason.server.port, "/smeserver/a/../b?mirrorlist")
    assert status_of(raw) == 400
    resp = await every_reason.get("/smeserver/x?other=1", allow_redirects=False)
    assert resp.status == 302  # a query that does not ask for the list is just a download
    scrape = await (await every_reason.get("/metrics")).text()
    by_outcome: dict[str, float] = {}
    refused: dict[str, float] = {}
    for family in text_string_to_metric_families(scrape):
        if family.name == "redirector_redirects":
            for s in family.samples:
                out = s.labels["outcome"]
                by_outcome[out] = by_outcome.get(out, 0.0) + s.value
        if family.name == "redirector_refused":
            refused = {s.labels["reason"]: s.value for s in family.samples}
    # The refused one is counted as a refusal, not as a redirect.
    assert by_outcome == {"mirror": 1.0, "master": 0.0}
    assert refused == {"bad_path": 1.0, "method": 0.0}


async def test_master_fallback_explained(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    client = await aiohttp_client(
        create_app(every_reason_config(), poll=False, store=MemoryStore(), geo=geo(tmp_path))
    )
    resp = await client.get(
        f"/smeserver/{REPOMD}?mirrorlist&json", headers={"X-Forwarded-For": "10.1.2.3"}
    )
    doc = await resp.json()
    assert doc["outcome"] == "master"
    assert doc["target"] == f"http://127.0.0.1:9/master/{REPOMD}"
    assert doc["client"]["location"] is None
    assert "not in the GeoIP database" in doc["client"]["location_note"]
    # The rejections a config alone decides, and everyone else not checked yet.
    assert {m["reason"] for m in doc["mirrors"]} == {
        "unchecked", "disabled", "excluded", "ftp_only",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("query", "mirrorlist", "json_"),
    [
        ("mirrorlist", True, False),
        ("mirrorlist=", True, False),
        ("mirrorlist&json", True, True),
        ("json&mirrorlist", True, True),
        ("mirrorlist=json", True, True),
        ("a=1&mirrorlist=1", True, False),
        ("mirrorlists", False, False),
        ("xmirrorlist", False, False),
        ("foo=mirrorlist", False, False),
        ("", False, False),
    ],
)
def test_query_parsing(query: str, mirrorlist: bool, json_: bool) -> None:
    assert wants_mirrorlist(query) is mirrorlist
    assert wants_json(query, None) is json_


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, False),
        ("*/*", False),
        ("application/json", True),
        ("application/json, text/plain", True),
        ("text/html,application/xhtml+xml,application/json;q=0.9", False),
    ],
)
def test_prefers_json(accept: str | None, expected: bool) -> None:
    assert prefers_json(accept) is expected


@pytest.mark.parametrize(
    ("text", "path"),
    [
        (f"/smeserver/{REPOMD}", REPOMD),
        (f"/pub/smeserver/{REPOMD}", REPOMD),
        (f"http://mirror.contribs.org/smeserver/{REPOMD}?mirrorlist", REPOMD),
        (REPOMD, REPOMD),
        ("contribs/a%20b.rpm", "contribs/a%20b.rpm"),
    ],
)
def test_cli_path(text: str, path: str) -> None:
    assert cli_path(text) == path


def test_cli_path_refuses_escapes() -> None:
    with pytest.raises(BadPath):
        cli_path("/smeserver/../etc/passwd")


# --- `redirector explain` --------------------------------------------------------------------


def write_config(tmp_path: Path, extra: str) -> Path:
    db = geo(tmp_path)
    path = tmp_path / "explain.toml"
    path.write_text(every_reason_text(f'geoip_db = "{db.path}"\n{extra}'))
    db.close()
    return path


def test_cli_explain_reads_the_store(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def prepare() -> None:
        store = RedisStore(redis_url)
        try:
            await fill_every_reason(store, time.time())
        finally:
            await store.close()

    asyncio.run(prepare())
    cfg = write_config(tmp_path, f'redis_url = "{redis_url}"')
    code = cli.main(
        ["explain", NL6_CLIENT, f"/smeserver/{REPOMD}", "--config", str(cfg), "--https"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0] == f"path:     {REPOMD}"
    assert lines[1] == f"client:   {NL6_CLIENT} over https, IPv6, network 2001:610:1::/48"
    assert lines[2].startswith("location: NL (EU), 52.37, 4.90")
    assert lines[3] == f"target:   https://127.0.0.1:9/near/{REPOMD}"
    table = {line.split()[1]: line for line in lines if re.match(r"(-|\d+) +\S", line)}
    assert table["near"].split()[0] == "1"
    assert "chosen: in the nearest tier" in table["near"]
    for reason in Reason:
        assert table[name_of(reason)].startswith("-"), reason
    assert "lacks releases/10/ (found by the poller)" in table["lacks"]
    assert "stale by 9h00m" in table["stale"]
    assert "repodata mismatch for releases/10/smeos/x86_64" in table["repodata"]


def test_cli_explain_without_redis_says_not_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, "")
    code = cli.main(["explain", NL_CLIENT, REPOMD, "--config", str(cfg)])
    captured = capsys.readouterr()
    assert code == 1  # nothing known: the master
    assert "no redis_url in the config" in captured.err
    assert "(the master: no mirror is eligible)" in captured.out
    # 2 eligible + one per reason, less the disabled, the excluding and the ftp-only mirror
    assert captured.out.count("rejected: not checked yet") == len(Reason) - 1
    assert cli.main(["explain", "not-an-ip", REPOMD, "--config", str(cfg)]) == 2
    assert cli.main(["explain", NL_CLIENT, "/smeserver/a/../b", "--config", str(cfg)]) == 2


# --- Link headers (RFC 6249) -----------------------------------------------------------------


def link_config(n: int, base: str = "http://127.0.0.1:9/") -> Settings:
    blocks = [
        mirror_block(f"m{i}", 52.0 - i, 5.0 + i * 0.5, "NL", https="", http=f'"{base}m{i}/"')
        for i in range(n)
    ]
    return parse_settings(
        '[redirector]\nmaster = "http://127.0.0.1:9/master/"\nverify_files = false\n'
        'trusted_proxies = ["127.0.0.1/32"]\n' + "".join(blocks),
        "links.toml",
    )


async def link_client(
    aiohttp_client: ClientFactory, tmp_path: Path, settings: Settings, fresh: int
) -> Client:
    store = MemoryStore()
    now = time.time()
    await store.put_master(MasterState((MasterVersion(now - 3600, now - 3500),), now - 30))
    await store.put_states(
        MirrorState(m.name, Status.UP, now - 60, master_date=now - 3600)
        for m in settings.mirrors[:fresh]
    )
    return await aiohttp_client(create_app(settings, poll=False, store=store, geo=geo(tmp_path)))


def parse_links(value: str) -> list[tuple[str, dict[str, str]]]:
    out = []
    for part in value.split(", "):
        m = re.fullmatch(r"<([^>]+)>((?:; [a-z]+=[^;]+)+)", part)
        assert m is not None, part
        params = dict(p.split("=", 1) for p in m.group(2).removeprefix("; ").split("; "))
        out.append((m.group(1), params))
    return out


async def test_link_header_lists_the_next_best_in_order(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    client = await link_client(aiohttp_client, tmp_path, link_config(8), fresh=8)
    headers = {"X-Forwarded-For": NL_CLIENT}
    resp = await client.get("/smeserver/a.rpm", headers=headers, allow_redirects=False)
    assert resp.status == 302
    value = resp.headers["Link"]
    assert len(resp.headers.getall("Link")) == 1
    assert len(f"Link: {value}".encode()) < LINK_MAX_BYTES
    links = parse_links(value)
    assert len(links) == 5
    assert [p["pri"] for _, p in links] == ["1", "2", "3", "4", "5"]
    assert all(p == {"rel": "duplicate", "pri": p["pri"], "geo": "nl"} for _, p in links)
    # The same order as the explain view's ranking, after the chosen mirror.
    doc = await (await client.get("/smeserver/a.rpm?mirrorlist&json", headers=headers)).json()
    ranked = [m["url"] for m in doc["mirrors"] if m["rank"] is not None]
    assert resp.headers["Location"] == ranked[0]
    assert [url for url, _ in links] == ranked[1:6]


async def test_link_header_stays_under_360_bytes_with_long_urls(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    long_base = "http://127.0.0.1:9/" + "a-rather-long-mirror-path/" * 2
    client = await link_client(aiohttp_client, tmp_path, link_config(8, long_base), fresh=8)
    resp = await client.get(
        f"/smeserver/{REPOMD}", headers={"X-Forwarded-For": NL_CLIENT}, allow_redirects=False
    )
    value = resp.headers["Link"]
    assert len(f"Link: {value}".encode()) < LINK_MAX_BYTES
    links = parse_links(value)
    assert 1 <= len(links) < 5  # fewer fit, and the best of them are kept
    assert [p["pri"] for _, p in links] == [str(i) for i in range(1, len(links) + 1)]
    # A path too long for even one alternative gives no header at all.
    resp = await client.get(
        "/smeserver/" + "x" * 400, headers={"X-Forwarded-For": NL_CLIENT}, allow_redirects=False
    )
    assert resp.status == 302
    assert "Link" not in resp.headers


@pytest.mark.parametrize("fresh", [0, 1])
async def test_no_link_header_without_alternatives(
    aiohttp_client: ClientFactory, tmp_path: Path, fresh: int
) -> None:
    client = await link_client(aiohttp_client, tmp_path, link_config(3), fresh=fresh)
    resp = await client.get("/smeserver/a.rpm", allow_redirects=False)
    assert resp.status == 302
    assert "Link" not in resp.headers


async def test_link_and_counts_follow_the_verified_target(
    aiohttp_client: ClientFactory, tmp_path: Path, farm: Farm
) -> None:
    blocks = [
        mirror_block(f"m{i}", 52.0, 5.0 + i * 0.1, "NL", https="", http=f'"{farm.url(f"m{i}")}"')
        for i in range(4)
    ]
    settings = parse_settings(
        f'[redirector]\nmaster = "{farm.url("master")}"\ntrusted_proxies = ["127.0.0.1/32"]\n'
        + "".join(blocks),
        "verified.toml",
    )
    client = await link_client(aiohttp_client, tmp_path, settings, fresh=4)
    headers = {"X-Forwarded-For": NL_CLIENT}
    doc = await (await client.get("/smeserver/a.rpm?mirrorlist&json", headers=headers)).json()
    order = [m["name"] for m in doc["mirrors"] if m["rank"] is not None]
    assert len(order) == 4
    # The first choice lacks the file: verify.py sends the client to the second.
    for name in order[1:]:
        farm.put(name, "a.rpm", b"rpm")
    resp = await client.get("/smeserver/a.rpm", headers=headers, allow_redirects=False)
    assert resp.headers["Location"] == farm.url(order[1]) + "a.rpm"
    links = parse_links(resp.headers["Link"])
    assert [url for url, _ in links] == [farm.url(n) + "a.rpm" for n in order[2:]]
    scrape = await (await client.get("/metrics")).text()
    counts = {
        s.labels["mirror"]: s.value
        for f in text_string_to_metric_families(scrape)
        if f.name == "redirector_redirects"
        for s in f.samples
        if s.labels["outcome"] == "mirror"
    }
    assert counts[order[1]] == 1.0
    assert counts[order[0]] == 0.0
    # Nobody has it: the master, with no Link header, counted as a fallback.
    resp = await client.get("/smeserver/b.rpm", headers=headers, allow_redirects=False)
    assert resp.headers["Location"] == farm.url("master") + "b.rpm"
    assert "Link" not in resp.headers
    scrape = await (await client.get("/metrics")).text()
    assert 'redirector_redirects_total{mirror="",outcome="master"} 1.0' in scrape


# --- what the pages say of the GeoIP database ----------------------------------------------

V4_NETWORKS = {"145.100.0.0/16": CityRecord("NL", "EU", 52.37, 4.90)}
DBIP_CREDIT = "IP Geolocation by DB-IP (https://db-ip.com), CC BY 4.0"


async def served(aiohttp_client: ClientFactory, reader: GeoReader) -> Client:
    store = MemoryStore()
    await fill(store)
    return await aiohttp_client(create_app(STATUS.config(), poll=False, store=store, geo=reader))


async def test_dbip_credit_on_every_page_that_shows_its_results(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    db = city_db(tmp_path / "dbip-city-lite.mmdb", V4_NETWORKS,
                         database_type="DBIP-City-Lite")  # fmt: skip
    client = await served(aiohttp_client, GeoReader.open(db))
    page = await (await client.get("/mirrors")).text()
    assert DBIP_CREDIT in page
    explained = await client.get(
        f"/smeserver/{REPOMD}?mirrorlist", headers={"X-Forwarded-For": NL_CLIENT}
    )
    assert f'<p class="credit"><small>{DBIP_CREDIT}</small></p>' in await explained.text()
    doc = await (await client.get("/mirrors.json")).json()
    assert doc["geoip"]["credit"] == DBIP_CREDIT


async def test_a_geolite_file_carries_no_credit_line(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    client = await served(aiohttp_client, geo(tmp_path))
    assert "db-ip.com" not in await (await client.get("/mirrors")).text()


async def test_an_old_database_is_warned_about(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    built = int(time.time()) - 400 * 86400
    db = city_db(tmp_path / "city.mmdb", V4_NETWORKS, build_epoch=built)
    client = await served(aiohttp_client, GeoReader.open(db))
    page = await (await client.get("/mirrors")).text()
    assert re.search(
        r'<p class="warn geo">the GeoIP database \S+ was built \S+, 400 days ago', page
    )
    notes = (await (await client.get("/mirrors.json")).json())["geoip"]["notes"]
    assert any("400 days ago" in n for n in notes)


async def test_an_ipv4_only_database_says_why_ipv6_clients_have_no_location(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    db = city_db(tmp_path / "city.mmdb", V4_NETWORKS, ip_version=4)
    client = await served(aiohttp_client, GeoReader.open(db))
    assert "IPv4 networks only" in await (await client.get("/mirrors")).text()
    resp = await client.get(
        f"/smeserver/{REPOMD}?mirrorlist&json", headers={"X-Forwarded-For": NL6_CLIENT}
    )
    doc = await resp.json()
    assert doc["client"]["location"] is None
    assert "IPv4 networks only" in doc["client"]["location_note"]
    v4 = await client.get(
        f"/smeserver/{REPOMD}?mirrorlist&json", headers={"X-Forwarded-For": NL_CLIENT}
    )
    assert (await v4.json())["client"]["location"] is not None


async def test_explain_cards_are_labelled_and_urls_wrap(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    client = await served(aiohttp_client, geo(tmp_path))
    resp = await client.get(
        f"/smeserver/{REPOMD}?mirrorlist", headers={"X-Forwarded-For": NL_CLIENT}
    )
    page = await resp.text()
    row = page[page.index('<tr class="chosen"') :]
    row = row[: row.index("</tr>")]
    for label in ("Rank", "Mirror", "Country", "km", "Weight", "Why"):
        assert f'<td data-label="{label}"' in row
    assert "td::before{content:attr(data-label)" in page
    assert "overflow-wrap:anywhere" in page


# --- the mirrors' own rules, in words ---------------------------------------------------------


def test_every_rule_shows_in_explain(tmp_path: Path) -> None:
    now = time.time()
    city = city_db(
        tmp_path / "city.mmdb",
        {"145.100.1.0/24": CityRecord("NL", "EU", 52.37, 4.90),
         "81.2.69.0/24": CityRecord("NL", "EU", 52.37, 4.90)},
    )  # fmt: skip
    asn = asn_db(tmp_path / "asn.mmdb", {"81.2.69.0/24": 3320})
    reader = GeoReader.open_all([city, asn])
    mirrors = (
        Mirror("near", "http://near.test/", None, "NL", 52.37, 4.90),
        Mirror("campus", "http://campus.test/", None, "ZA", -33.9, 18.4,
               netblocks=(ipaddress.ip_network("145.100.1.0/24"),)),
        Mirror("isp", "http://isp.test/", None, "DE", 50.1, 8.7, asns=(3320,)),
        Mirror("kiwi", "http://kiwi.test/", None, "NZ", -41.3, 174.8, country_only=True),
        Mirror("lan", "http://lan.test/", None, "NL", 52.0, 5.0, private=True,
               netblocks=(ipaddress.ip_network("10.0.0.0/8"),)),
    )  # fmt: skip
    holder = SnapshotHolder(mirrors)
    fresh = [MirrorState(m.name, Status.UP, now - 60, master_date=now - 3600) for m in mirrors]
    holder.current = Snapshot(
        candidates=tuple(Candidate(m, s) for m, s in zip(mirrors, fresh, strict=True)),
        master=None,
        generation=1,
        loaded_at=now,
        seeds={m.name: name_seed(m.name) for m in mirrors},
    )
    settings = replace(Settings(mirrors=mirrors, master="http://master.test/"))
    router = Router(settings, holder, reader)

    def why(ip: str) -> dict[str, str]:
        routed = router.resolve(ip, None, None, "http", REPOMD, now)
        e = explain(routed, holder.current.candidates, Policy(), now=now)
        text = render_text(e)
        assert all(x.why in text for x in e.entries)
        return {x.name: x.why for x in e.entries}

    on_campus = why("145.100.1.9")
    assert on_campus["campus"].startswith("chosen: netblock 145.100.1.0/24")
    assert "same country NL" in on_campus["near"]
    assert on_campus["kiwi"] == "rejected: country-only: not your country (NL)"
    assert on_campus["lan"] == "rejected: private: not your network"
    in_isp = why("81.2.69.7")
    assert in_isp["isp"].startswith("chosen: same AS 3320")
    routed = router.resolve("81.2.69.7", None, None, "http", REPOMD, now)
    doc = to_json(explain(routed, holder.current.candidates, Policy(), now=now))
    assert doc["client"]["asn"] == 3320
    assert doc["mirrors"][0]["rule"] == "same AS 3320"
    assert "AS 3320" in render_text(explain(routed, holder.current.candidates, Policy(), now=now))
    reader.close()
