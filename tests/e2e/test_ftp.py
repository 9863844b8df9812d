"""ftp:// mirrors: configurable, probed over real FTP, listed where yum and librepo take them,
and a browser's redirect target only when no http mirror can serve the file."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from redirector.config.settings import ConfigError, Settings, parse_settings
from redirector.core.models import MirrorState, Status
from redirector.poll.poller import poll_once
from redirector.poll.probe import ProbeError, fetch, open_session
from redirector.store.memory import MemoryStore
from redirector.web.app import create_app
from tests.conftest import free_port
from tests.e2e.test_dnf import dnf_makecache
from tests.farm import MASTER_TRACE, Farm, trace_c
from tests.rpmrepo import build_repo, require
from tests.support.ftpserver import FtpServer

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[[web.Application], Awaitable[Client]]

REPO = "releases/10/smeos/x86_64"
ISO = "releases/10/iso/smeserver.iso"


@pytest.fixture
async def ftp() -> AsyncIterator[FtpServer]:
    server = FtpServer()
    await server.start()
    yield server
    await server.stop()


def settings(master: str, ftp_url: str, http_url: str = "http://127.0.0.1:9/web/") -> Settings:
    return parse_settings(
        f"""
[redirector]
master = "{master}"
geoip_db = ""
probe_timeout = "2s"
verify_files = false
repos = ["smeos"]
repodata_versions = ["10"]

[[mirror]]
name = "web"
http = "{http_url}"
country = "NL"
latitude = 52.37
longitude = 4.90

[[mirror]]
name = "za"
ftp = "{ftp_url}"
country = "ZA"
latitude = -26.20
longitude = 28.05
""",
        "ftp.toml",
    )


def test_an_ftp_only_mirror_is_configurable() -> None:
    s = settings("http://master.example/", "ftp://ftp.is.co.za/mirror/smeserver")
    za = s.mirror("za")
    assert za is not None
    assert (za.http, za.https, za.ftp) == (None, None, "ftp://ftp.is.co.za/mirror/smeserver/")
    assert za.base == za.ftp
    with pytest.raises(ConfigError, match="field 'ftp'"):
        settings("http://master.example/", "http://ftp.is.co.za/")
    with pytest.raises(ConfigError, match="an http, https or ftp URL is required"):
        parse_settings(
            '[redirector]\nmaster = "http://m.example/"\n[[mirror]]\nname = "x"\n'
            'country = "NL"\nlatitude = 1.0\nlongitude = 1.0\n'
        )


async def test_fetch_over_ftp(ftp: FtpServer) -> None:
    ftp.files["/sme/project/trace/x"] = b"trace body"
    ftp.mtimes["/sme/project/trace/x"] = 1_700_000_123.0
    ftp.files["/sme/releases/10/a"] = b"a"
    async with open_session(2) as session:
        got = await fetch(session, ftp.url() + "project/trace/x", timeout=2)
        assert (got.status, got.body, got.last_modified) == (200, b"trace body", 1_700_000_123.0)
        assert (await fetch(session, ftp.url() + "none", timeout=2)).status == 404
        head = await fetch(session, ftp.url() + "project/trace/x", timeout=2, method="HEAD")
        assert (head.status, head.body) == (200, b"")
        assert (
            await fetch(session, ftp.url() + "releases/", timeout=2, method="HEAD")
        ).status == 200
        assert (
            await fetch(session, ftp.url() + "obsolete/", timeout=2, method="HEAD")
        ).status == 404
        with pytest.raises(ProbeError, match="exceeds"):
            await fetch(session, ftp.url() + "project/trace/x", timeout=2, max_bytes=4)
        # An old server without EPSV: PASV, whose address is ignored (only the control host).
        ftp.epsv = False
        assert (await fetch(session, ftp.url() + "releases/10/a", timeout=2)).body == b"a"
        with pytest.raises(ProbeError, match="cannot connect"):
            await fetch(session, f"ftp://127.0.0.1:{free_port()}/x", timeout=2)
        # A server at its user limit is down for now, not broken.
        ftp.busy = True
        with pytest.raises(ProbeError, match="FTP login refused: 421") as e:
            await fetch(session, ftp.url() + "releases/10/a", timeout=2)
        assert e.value.kind is Status.DOWN
    assert "PASS redirector@" in ftp.commands
    assert "TYPE I" in ftp.commands


async def test_the_poller_judges_an_ftp_mirror(farm: Farm, ftp: FtpServer) -> None:
    now = time.time()
    farm.set_trace("master", now - 600)
    farm.set_trace("web", now - 600)
    farm.put("web", "releases/", b"index")
    ftp.files["/sme/" + MASTER_TRACE] = trace_c(now - 600)
    ftp.files["/sme/releases/index"] = b"x"
    s = settings(farm.url("master"), ftp.url(), farm.url("web"))
    async with open_session(2) as session:
        result = await poll_once(session, s, MemoryStore())
    states = {st.name: st for st in result.states}
    assert states["za"].status is Status.UP, states["za"].error
    assert states["za"].behind_since is None
    assert states["za"].master_date is not None
    assert any(c.startswith("RETR /sme/project/trace/") for c in ftp.commands)


async def started(aiohttp_client: ClientFactory, s: Settings, fresh: tuple[str, ...]) -> Client:
    store = MemoryStore()
    now = time.time()
    await store.put_states(
        MirrorState(n, Status.UP, now - 10, master_date=now - 3600, behind_since=None)
        for n in fresh
    )
    return await aiohttp_client(create_app(s, poll=False, store=store, use_geo_settings=False))


async def test_lists_carry_ftp_and_browsers_get_it_last(aiohttp_client: ClientFactory) -> None:
    s = settings("http://master.example/sme/", "ftp://127.0.0.1:9/za/")
    client = await started(aiohttp_client, s, ("web", "za"))
    text = await (await client.get("/mirrorlist/smeos-10")).text()
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert sorted(lines) == [
        "ftp://127.0.0.1:9/za/releases/10/smeos/$basearch",
        "http://127.0.0.1:9/web/releases/10/smeos/$basearch",
    ]
    # A browser with an http mirror to go to never goes to ftp.
    for i in range(20):
        resp = await client.get(
            f"/smeserver/{ISO}", headers={"X-Forwarded-For": f"10.0.{i}.1"}, allow_redirects=False
        )
        assert resp.headers["Location"] == "http://127.0.0.1:9/web/" + ISO

    # Only the ftp mirror is fresh: a plain-http browser goes there rather than to the master.
    client = await started(aiohttp_client, s, ("za",))
    resp = await client.get(f"/smeserver/{ISO}", allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (302, "ftp://127.0.0.1:9/za/" + ISO)
    # An https client asked for TLS: never downgraded to ftp, the master's https... or master.
    resp = await client.get(
        f"/smeserver/{ISO}", headers={"X-Forwarded-Proto": "https"}, allow_redirects=False
    )
    assert resp.headers["Location"] == "http://master.example/sme/" + ISO


async def test_a_metalink_names_ftp_urls(aiohttp_client: ClientFactory) -> None:
    from redirector.core.models import RepodataState, RepomdHistory, RepomdVersion

    s = settings("http://master.example/sme/", "ftp://127.0.0.1:9/za/")
    store = MemoryStore()
    now = time.time()
    await store.put_states(
        [MirrorState("za", Status.UP, now - 10, master_date=now - 3600, behind_since=None)]
    )
    v = RepomdVersion(10, 1_700_000_000, "a" * 32, "b" * 40, "c" * 64, "d" * 128, now - 60)
    await store.put_repodata(RepodataState({REPO: RepomdHistory((v,), now)}, {}, now))
    client = await aiohttp_client(create_app(s, poll=False, store=store, use_geo_settings=False))
    resp = await client.get("/metalink?repo=smeos-10&arch=x86_64")
    assert resp.status == 200
    root = ET.fromstring(await resp.text())  # noqa: S314  # our own server's output
    urls = list(root.iter("{http://www.metalinker.org/}url"))
    assert [(u.get("protocol"), u.text) for u in urls] == [
        ("ftp", f"ftp://127.0.0.1:9/za/{REPO}/repodata/repomd.xml")
    ]


@pytest.mark.system
async def test_dnf_reads_an_ftp_mirror_from_the_list(
    aiohttp_client: ClientFactory, ftp: FtpServer, tmp_path: Path
) -> None:
    """Real dnf (librepo, libcurl's FTP) through `mirrorlist=`, the only mirror an ftp one."""
    require("rpmbuild", "createrepo_c", "dnf")
    repo = build_repo(tmp_path / "build", tmp_path / "repo", [("smetest-ftp", "1.0")])
    for path, body in repo.items():
        ftp.files[f"/sme/{REPO}/{path}"] = body
    s = settings("http://127.0.0.1:9/master/", ftp.url())
    client = await started(aiohttp_client, s, ("za",))
    listed = await (await client.get("/mirrorlist/smeos-10")).text()
    assert ftp.url() + "releases/10/smeos/$basearch" in listed
    line = f"mirrorlist=http://127.0.0.1:{client.server.port}/mirrorlist/smeos-10"
    rc, out = await dnf_makecache(tmp_path / "dnf", line)
    assert rc == 0, out
    assert "Metadata cache created" in out, out
    # libcurl walks the path with CWD, then fetches repomd.xml and the metadata it names.
    assert "CWD repodata" in ftp.commands
    assert "RETR repomd.xml" in ftp.commands
    assert any(c.startswith("RETR ") and c.endswith("-primary.xml.gz") for c in ftp.commands)
