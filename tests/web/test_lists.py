"""Mirror lists and metalinks over HTTP: every URL shape, best first for the client, mismatched
metadata left out, never an empty or malformed list, real curl on the wire."""

from __future__ import annotations

import asyncio
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

from redirector.config.settings import SME_REPOS, Settings, parse_settings
from redirector.core.models import (
    MirrorState,
    RepoCheck,
    RepodataState,
    RepomdHistory,
    RepomdVersion,
    Status,
)
from redirector.geo import GeoReader
from redirector.store.memory import MemoryStore
from redirector.web.app import create_app
from tests.farm import raw_get, status_of
from tests.support.world import NL_CLIENT, US_CLIENT

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[[web.Application], Awaitable[Client]]

YUM = re.compile(r"\w+://\S+\s*$")
NS = {"ml": "http://www.metalinker.org/", "mm0": "http://fedorahosted.org/mirrormanager"}
DIR = "releases/10/smeos/x86_64"
MASTER = "http://127.0.0.1:9/master/"


def base(name: str) -> str:
    # Loopback addresses on the discard port: never contacted (no poller), never a real host.
    return f"http://127.0.0.1:9/{name}/"


MIRRORS = {  # name: (country, lat, lon, extra)
    "nl": ("NL", 52.37, 4.90, 'https = "https://127.0.0.1:9/nl-tls/"\n'),
    "gb": ("GB", 51.30, 1.07, ""),
    "us": ("US", 35.91, -79.05, ""),
    "au": ("AU", -37.81, 144.96, 'exclude = ["releases/testing/"]\n'),
}


def config(
    extra: str = "", mirrors: dict[str, tuple[str, float, float, str]] = MIRRORS
) -> Settings:
    blocks = "".join(
        f'[[mirror]]\nname = "{n}"\nhttp = "{base(n)}"\ncountry = "{cc}"\n'
        f"latitude = {lat}\nlongitude = {lon}\n{more}\n"
        for n, (cc, lat, lon, more) in mirrors.items()
    )
    return parse_settings(
        f'[redirector]\nmaster = "{MASTER}"\ngeoip_db = ""\n{extra}\n{blocks}', "lists.toml"
    )


def version(n: int, first_seen: float) -> RepomdVersion:
    return RepomdVersion(
        size=1000 + n,
        timestamp=1_700_000_000 + n,
        md5=f"{n:032x}",
        sha1=f"{n:040x}",
        sha256=f"{n:064x}",
        sha512=f"{n:0128x}",
        first_seen=first_seen,
    )


async def seeded(
    settings: Settings, verdicts: dict[str, dict[str, RepoCheck]] | None = None
) -> MemoryStore:
    """A store where every configured mirror is fresh, with a repomd history for DIR."""
    now = time.time()
    store = MemoryStore()
    await store.put_states(
        MirrorState(m.name, Status.UP, now - 10, master_date=now - 3600, behind_since=None)
        for m in settings.mirrors
    )
    await store.put_repodata(
        RepodataState(
            repos={
                DIR: RepomdHistory(
                    (
                        version(1, now - 10 * 86400),
                        version(2, now - 6 * 86400),
                        version(3, now - 60),
                    ),
                    now,
                )
            },
            mirrors=verdicts or {},
            checked_at=now,
        )
    )
    return store


async def start(
    aiohttp_client: ClientFactory,
    settings: Settings,
    geo: GeoReader | None = None,
    verdicts: dict[str, dict[str, RepoCheck]] | None = None,
) -> Client:
    store = await seeded(settings, verdicts)
    app = create_app(settings, poll=False, store=store, geo=geo, use_geo_settings=False)
    return await aiohttp_client(app)


async def get_list(client: Client, target: str, ip: str | None = None, **headers: str) -> str:
    if ip is not None:
        headers["X-Forwarded-For"] = ip
    resp = await client.get(target, headers=headers)
    text = await resp.text()
    assert resp.status == 200, text
    assert resp.content_type == "text/plain"
    assert resp.headers["Cache-Control"] == "private, no-store"
    return text


def urls_of(text: str) -> list[str]:
    """The URL lines, after checking every line is a comment on top or one yum keeps."""
    lines = text.splitlines()
    comments = [line for line in lines if line.startswith("#")]
    assert lines[: len(comments)] == comments  # comments only on top
    urls = lines[len(comments) :]
    assert urls, "a list is never empty"
    for url in urls:
        assert YUM.match(url), url
        assert not url.startswith("rsync:")
    return urls


async def test_every_sme_repo_and_version_gives_a_well_formed_list(
    aiohttp_client: ClientFactory,
) -> None:
    client = await start(aiohttp_client, config())
    for version in ("10", "11", "12"):
        for repo in SME_REPOS:
            text = await get_list(client, f"/mirrorlist/{repo}-{version}")
            urls = urls_of(text)
            assert f"repo={repo} version={version}" in text
            for url in urls:
                assert url.endswith(f"/releases/{version}/{repo}/$basearch"), url
            assert sorted(u.split("/")[3] for u in urls) == ["au", "gb", "nl", "us"]


async def test_curl_gets_each_list(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    """Real curl, one process, URL globbing over every SME repo and versions 10 to 12."""
    client = await start(aiohttp_client, config())
    port = client.server.port
    assert port is not None
    repos = ",".join(SME_REPOS)
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--fail", "--noproxy", "*", "--output-dir", str(tmp_path),
        "-o", "#1-#2.txt", f"http://127.0.0.1:{port}/mirrorlist/{{{repos}}}-{{10,11,12}}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    got = read_all(tmp_path)
    assert sorted(got) == sorted(f"{r}-{v}" for r in SME_REPOS for v in ("10", "11", "12"))
    for name, text in got.items():
        repo, _, version = name.rpartition("-")
        for url in urls_of(text):
            assert url.endswith(f"/releases/{version}/{repo}/$basearch")


def read_all(directory: Path) -> dict[str, str]:
    return {p.stem: p.read_text() for p in directory.glob("*.txt")}


async def test_best_first_for_the_client(aiohttp_client: ClientFactory, geo: GeoReader) -> None:
    client = await start(aiohttp_client, config(), geo)
    nl = urls_of(await get_list(client, "/mirrorlist/smeos-10", NL_CLIENT))
    us = urls_of(await get_list(client, "/mirrorlist/smeos-10", US_CLIENT))
    assert {nl[0], nl[1]} == {base(n) + "releases/10/smeos/$basearch" for n in ("nl", "gb")}
    assert nl[2:] == [base(n) + "releases/10/smeos/$basearch" for n in ("us", "au")]
    assert us[0] == base("us") + "releases/10/smeos/$basearch"
    text = await get_list(client, "/mirrorlist/smeos-10", NL_CLIENT)
    assert "country=NL" in text
    # The same client gets the same list every time.
    assert urls_of(await get_list(client, "/mirrorlist/smeos-10", NL_CLIENT)) == nl
    # The query form, with the same order and the arch filled in.
    q = urls_of(await get_list(client, "/mirrorlist?repo=smeos-10&arch=x86_64", NL_CLIENT))
    assert q == [u.replace("$basearch", "x86_64") for u in nl]


async def test_unknown_names_get_404_listing_valid_ones(aiohttp_client: ClientFactory) -> None:
    client = await start(aiohttp_client, config('repo_versions = ["10", "11"]'))
    for target in (
        "/mirrorlist/smeos-12",
        "/mirrorlist/nope-10",
        "/mirrorlist/smeos",
        "/mirrorlist?repo=smeos-9",
        "/metalink?repo=smefoo-10&arch=x86_64",
        "/mirrorlists/smeos",  # version 7 is not served by this config
        "/mirrorlist/%00",
        "/mirrorlist/smeos-10%0a",
    ):
        resp = await client.get(target)
        body = await resp.text()
        assert resp.status == 404, (target, body)
        assert "smeos-10\n" in body
        assert "smecontribs-testing-11\n" in body
        assert "smeos-12" not in body.split("valid names:")[1]


async def test_bad_requests_are_4xx(aiohttp_client: ClientFactory) -> None:
    client = await start(aiohttp_client, config())
    for target in (
        "/mirrorlist",
        "/mirrorlist?arch=x86_64",
        "/mirrorlist?repo=smeos-10&arch=x86/64",
        "/mirrorlist?repo=smeos-10&arch=" + "a" * 40,
        "/metalink?repo=smeos-10",
        "/metalink?arch=x86_64",
        "/metalink?repo=smeos-10&arch=%24basearch",
        "/metalink?repo=smeos-10&arch=%0a",
    ):
        resp = await client.get(target)
        assert resp.status == 400, target
    port = client.server.port
    assert port is not None
    for target in (
        "/metalink?repo=%ff%fe&arch=x86_64",
        "/mirrorlist/%ff%fe",
        "/mirrorlist?repo=smeos-10%00&arch=x86_64",
        "/mirrorlists/..%2f..",
    ):
        assert 400 <= status_of(await raw_get(port, target)) < 500, target
    # A parameter we do not know is ignored, as MirrorManager does.
    assert status_of(await raw_get(port, "/mirrorlist/smeos-10?x=%zz")) == 200
    resp = await client.post("/mirrorlist/smeos-10")
    assert resp.status == 405
    resp = await client.head("/mirrorlist/smeos-10")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")


async def test_legacy_and_query_forms(aiohttp_client: ClientFactory) -> None:
    client = await start(aiohttp_client, config())
    legacy = urls_of(await get_list(client, "/mirrorlists/smeupdates"))
    assert all(u.endswith("/releases/7/smeupdates/$basearch") for u in legacy)
    plain = urls_of(await get_list(client, "/mirrorlist?repo=smeextras-11"))
    assert all(u.endswith("/releases/11/smeextras/$basearch") for u in plain)
    arch = urls_of(await get_list(client, "/mirrorlist?repo=smeextras-11&arch=aarch64"))
    assert all(u.endswith("/releases/11/smeextras/aarch64") for u in arch)


async def test_testing_versions_and_excludes(aiohttp_client: ClientFactory) -> None:
    client = await start(aiohttp_client, config('testing_versions = ["12"]'))
    urls = urls_of(await get_list(client, "/mirrorlist/smeos-12"))
    assert all("/releases/testing/12/smeos/$basearch" in u for u in urls)
    assert not any(u.startswith(base("au")) for u in urls)  # excludes releases/testing/
    released = urls_of(await get_list(client, "/mirrorlist/smeos-11"))
    assert any(u.startswith(base("au")) for u in released)


async def test_length_limit(aiohttp_client: ClientFactory) -> None:
    many = {f"m{i:02d}": ("DE", 50.0, 8.0 + i / 100, "") for i in range(14)}
    client = await start(aiohttp_client, config(mirrors=many))
    assert len(urls_of(await get_list(client, "/mirrorlist/smeos-10"))) == 10
    client3 = await start(aiohttp_client, config("mirrorlist_length = 3", mirrors=many))
    assert len(urls_of(await get_list(client3, "/mirrorlist/smeos-10"))) == 3


async def test_nothing_eligible_lists_the_master(aiohttp_client: ClientFactory) -> None:
    settings = config()
    app = create_app(settings, poll=False, store=MemoryStore(), use_geo_settings=False)
    client = await aiohttp_client(app)  # no state at all: no mirror was ever checked
    assert urls_of(await get_list(client, "/mirrorlist/smeos-10")) == [
        MASTER + "releases/10/smeos/$basearch"
    ]
    # A metalink without the master's hashes would make librepo verify nothing: a 404 that
    # says why, never a metalink without verification.
    resp = await client.get("/metalink?repo=smeos-10&arch=x86_64")
    text = await resp.text()
    assert resp.status == 404, text
    root = ET.fromstring(text)  # noqa: S314  # our own server's output
    assert list(root.iter("{http://www.metalinker.org/}url")) == []
    assert "error: the master's repomd.xml has not been read yet" in text


async def test_https_list_prefers_https_urls_and_keeps_http_mirrors(
    aiohttp_client: ClientFactory,
) -> None:
    client = await start(aiohttp_client, config())
    tls = urls_of(
        await get_list(
            client, "/mirrorlist/smeos-10", "127.0.0.1", **{"X-Forwarded-Proto": "https"}
        )
    )
    plain = urls_of(await get_list(client, "/mirrorlist/smeos-10", "127.0.0.1"))
    # The same mirrors either way; over https a mirror's https URL where it has one.
    assert len(tls) == len(plain) > 1
    assert "https://127.0.0.1:9/nl-tls/releases/10/smeos/$basearch" in tls
    assert not any("nl-tls" in u and u.startswith("http:") for u in tls)
    assert any(u.startswith("http://") for u in tls)


VERDICTS = {
    "nl": {DIR: RepoCheck.CURRENT},
    "gb": {DIR: RepoCheck.MISMATCHED},  # bad on x86_64 only
    "us": {DIR: RepoCheck.ALTERNATE},
    "au": {DIR: RepoCheck.MISSING},
}


async def test_mismatched_mirrors_are_left_out(
    aiohttp_client: ClientFactory, geo: GeoReader
) -> None:
    # verify_files off: the mirrors here are addresses nobody answers at, for a HEAD to fail on
    client = await start(aiohttp_client, config("verify_files = false"), geo, VERDICTS)

    def names(urls: list[str]) -> set[str]:
        return {u.split("/")[3] for u in urls}

    assert names(urls_of(await get_list(client, "/mirrorlist/smeos-10", NL_CLIENT))) == {"nl", "us"}
    x86 = "/mirrorlist?repo=smeos-10&arch=x86_64"
    assert names(urls_of(await get_list(client, x86, NL_CLIENT))) == {"nl", "us"}
    # Other arches and other repos are untouched.
    arm = "/mirrorlist?repo=smeos-10&arch=aarch64"
    assert names(urls_of(await get_list(client, arm, NL_CLIENT))) == {"nl", "gb", "us", "au"}
    other = "/mirrorlist/smeupdates-10"
    assert names(urls_of(await get_list(client, other, NL_CLIENT))) == {"nl", "gb", "us", "au"}

    # Redirects: never gb's metadata for that repo, its packages still.
    seen_meta: set[str] = set()
    seen_pkg: set[str] = set()
    paths = ((f"{DIR}/repodata/repomd.xml", seen_meta), (f"{DIR}/Packages/a.rpm", seen_pkg))
    for i in range(64):
        ip = f"145.100.{i}.9"
        for path, seen in paths:
            resp = await client.get(
                "/smeserver/" + path, headers={"X-Forwarded-For": ip}, allow_redirects=False
            )
            assert resp.status == 302
            seen.add(resp.headers["Location"].split("/")[3])
    assert seen_meta == {"nl"}  # gb is as close, but its metadata there is mismatched
    assert seen_pkg == {"nl", "gb"}


async def test_metalink(aiohttp_client: ClientFactory, geo: GeoReader) -> None:
    client = await start(aiohttp_client, config(), geo, VERDICTS)
    resp = await client.get(
        "/metalink?repo=smeos-10&arch=x86_64", headers={"X-Forwarded-For": US_CLIENT}
    )
    text = await resp.text()
    assert resp.status == 200, text
    assert resp.content_type == "application/metalink+xml"
    assert resp.headers["Cache-Control"] == "private, no-store"
    root = ET.fromstring(text)  # noqa: S314  # our own server's output
    f = root.find("ml:files/ml:file", NS)
    assert f is not None
    assert f.get("name") == "repomd.xml"
    assert f.findtext("mm0:timestamp", namespaces=NS) == "1700000003"
    assert f.findtext("ml:size", namespaces=NS) == "1003"
    hashes = {h.get("type"): h.text for h in f.findall("ml:verification/ml:hash", NS)}
    assert set(hashes) == {"md5", "sha1", "sha256", "sha512"}
    assert hashes["sha256"] == f"{3:064x}"
    # Version 2 was replaced a minute ago: an alternate. Version 1 six days ago: gone.
    alts = f.findall("mm0:alternates/mm0:alternate", NS)
    assert [a.findtext("ml:verification/ml:hash[@type='sha256']", namespaces=NS) for a in alts] == [
        f"{2:064x}"
    ]
    urls = f.findall("ml:resources/ml:url", NS)
    assert [u.text for u in urls] == [
        base("us") + DIR + "/repodata/repomd.xml",
        base("nl") + DIR + "/repodata/repomd.xml",
    ]
    assert [(u.get("location"), u.get("preference")) for u in urls] == [("US", "100"), ("NL", "99")]
    assert [u.get("protocol") for u in urls] == ["http", "http"]
    # An arch nobody checked: no hashes to give, so no metalink (a 404 saying why), while the
    # mirror list for it still names every mirror.
    resp = await client.get("/metalink?repo=smeos-10&arch=aarch64")
    text = await resp.text()
    assert resp.status == 404, text
    assert resp.content_type == "application/metalink+xml"
    root = ET.fromstring(text)  # noqa: S314  # our own server's output
    assert root.find("ml:files", NS) is None
    assert "repo=smeos-10 arch=aarch64 error: no checksums are kept" in text
    assert "use mirrorlist= instead" in text
    arm = "/mirrorlist?repo=smeos-10&arch=aarch64"
    assert len(urls_of(await get_list(client, arm, US_CLIENT))) == 4
