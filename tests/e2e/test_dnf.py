"""Debian's real dnf against the redirector's mirror list and metalink, over loopback mirrors.

A small real repository (RPMs from rpmbuild, metadata from createrepo_c) is published in two
versions. Three mirrors: one current, one still holding the previous metadata, one whose
repomd.xml is corrupt. After the poller and its repodata pass have run, `dnf makecache`
succeeds through `mirrorlist=` and through `metalink=`, and no client ever asks the corrupt
mirror for metadata.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from redirector.config.settings import Settings, parse_settings
from redirector.core.models import RepoCheck
from redirector.store.memory import MemoryStore
from redirector.web.app import create_app
from tests.farm import Farm
from tests.rpmrepo import build_repo, require

pytestmark = pytest.mark.system  # Debian's dnf, rpmbuild and createrepo_c

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[[web.Application], Awaitable[Client]]

DIR = "releases/10/smeos/x86_64"
MIRRORS = ("current", "previous", "corrupt")
NS = {"ml": "http://www.metalinker.org/", "mm0": "http://fedorahosted.org/mirrormanager"}


@dataclass
class AccessLog:
    """What each loopback mirror was asked, and by whom (the poller or a client)."""

    entries: list[tuple[str, str, str]] = field(default_factory=list)  # (mirror, path, agent)

    def clients(self, mirror: str) -> list[str]:
        """Paths `mirror` served to anything but the redirector's own probes."""
        return [p for m, p, ua in self.entries if m == mirror and not ua.startswith("redirector")]


def logged(farm: Farm, log: AccessLog, name: str) -> None:
    """Serve `name`'s files from the farm, logging every request with its User-Agent."""

    async def serve(request: web.Request, rest: str) -> web.StreamResponse:
        log.entries.append((name, rest, request.headers.get("User-Agent", "")))
        body = farm.files.get(f"{name}/{rest}")
        if body is None:
            return web.Response(status=404, text="not found")
        return web.Response(body=body, content_type="application/octet-stream")

    farm.behaviours[name] = serve


def publish(farm: Farm, name: str, files: dict[str, bytes]) -> None:
    """Make `name` hold exactly `files` under DIR (plus its trace and a releases/ index)."""
    for key in [k for k in farm.files if k.startswith(f"{name}/{DIR}/")]:
        del farm.files[key]
    for path, body in files.items():
        farm.put(name, f"{DIR}/{path}", body)


def settings_for(farm: Farm) -> Settings:
    # Weights: the corrupt mirror would be everyone's first choice, the current one the last.
    weights = {"corrupt": 1_000_000, "previous": 1_000, "current": 0}
    mirrors = "".join(
        f'[[mirror]]\nname = "{n}"\nhttp = "{farm.url(n)}"\ncountry = "NL"\n'
        f"latitude = 52.37\nlongitude = 4.90\nweight = {weights[n]}\n\n"
        for n in MIRRORS
    )
    return parse_settings(
        f"""
[redirector]
master = "{farm.url("master")}"
poll_interval = "0.3s"
probe_timeout = "2s"
geoip_db = ""
verify_files = false
repos = ["smeos"]
repodata_versions = ["10"]

{mirrors}""",
        "dnf.toml",
    )


async def wait_for(what: str, check: Callable[[], Awaitable[bool]], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def verdicts(store: MemoryStore) -> dict[str, RepoCheck | None]:
    data = await store.load()
    if data.repodata is None:
        return {}
    return {n: data.repodata.mirrors.get(n, {}).get(DIR) for n in MIRRORS}


async def dnf_makecache(work: Path, repo_line: str) -> tuple[int, str]:
    """Run Debian's dnf in its own installroot against one repo; (exit status, output)."""
    root = work / "root"
    repos = work / "repos.d"
    repos.mkdir(parents=True)
    root.mkdir()
    (repos / "smeos.repo").write_text(
        "[smeos]\nname=SME Server 10 - os\n"
        f"{repo_line}\n"
        "enabled=1\ngpgcheck=0\nrepo_gpgcheck=0\nskip_if_unavailable=0\nmetadata_expire=0\n"
    )
    conf = work / "dnf.conf"
    conf.write_text(
        "[main]\ngpgcheck=0\nfastestmirror=0\ntimeout=10\nretries=1\n"
        "skip_if_unavailable=0\ninstall_weak_deps=0\n"
    )
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(LC_ALL="C.UTF-8", no_proxy="*")
    proc = await asyncio.create_subprocess_exec(
        "dnf", "makecache", "-y", "-v",
        f"--installroot={root}", f"--config={conf}", f"--setopt=reposdir={repos}",
        "--releasever=10", "--forcearch=x86_64", "--noplugins", "--disablerepo=*",
        "--enablerepo=smeos",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 40)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def build_versions(work: Path) -> tuple[dict[str, bytes], dict[str, bytes], dict[str, bytes]]:
    """(v1, v2, v2 with a corrupt repomd.xml) as file maps relative to the arch directory."""
    v1 = build_repo(work / "b1", work / "v1", [("smetest-a", "1.0")])
    v2 = build_repo(work / "b2", work / "v2", [("smetest-a", "1.0"), ("smetest-b", "2.0")])
    corrupt = dict(v2)
    repomd = v2["repodata/repomd.xml"].decode()
    # Same size and shape, one checksum wrong: what a half-synced or tampered copy looks like.
    corrupt["repodata/repomd.xml"] = re.sub(
        r'(<checksum type="sha256">)([0-9a-f]{8})', r"\g<1>00000000", repomd, count=1
    ).encode()
    assert corrupt["repodata/repomd.xml"] != v2["repodata/repomd.xml"]
    assert v1["repodata/repomd.xml"] != v2["repodata/repomd.xml"]
    return v1, v2, corrupt


async def test_dnf_trusts_the_mirrorlist_and_the_metalink(
    aiohttp_client: ClientFactory, farm: Farm, tmp_path: Path
) -> None:
    require("rpmbuild", "createrepo_c", "dnf")
    v1, v2, corrupt = build_versions(tmp_path)
    access = AccessLog()
    now = time.time()
    for name in ("master", *MIRRORS):
        farm.set_trace(name, now - 3600)
        farm.put(name, "releases/", b"index")  # coverage: the poller finds releases/ there
    for name in MIRRORS:
        logged(farm, access, name)
        publish(farm, name, v1)
    publish(farm, "master", v1)

    store = MemoryStore()
    client = await aiohttp_client(
        create_app(settings_for(farm), store=store, use_geo_settings=False)
    )
    port = client.server.port

    # First the poller sees everyone holding v1.
    async def all_current() -> bool:
        return await verdicts(store) == dict.fromkeys(MIRRORS, RepoCheck.CURRENT)

    await wait_for("every mirror current on v1", all_current)

    # The master publishes v2: one mirror follows, one lags, one gets a corrupt repomd.xml.
    publish(farm, "master", v2)
    publish(farm, "current", v2)
    publish(farm, "corrupt", corrupt)
    expected = {
        "current": RepoCheck.CURRENT,
        "previous": RepoCheck.ALTERNATE,
        "corrupt": RepoCheck.MISMATCHED,
    }

    async def judged() -> bool:
        return await verdicts(store) == expected

    await wait_for("the repodata pass to judge v2", judged)

    async def corrupt_left_out() -> bool:
        resp = await client.get("/mirrorlist/smeos-10")
        text = await resp.text()
        return farm.url("corrupt") not in text and farm.url("previous") in text

    await wait_for("the mirror list to leave the corrupt mirror out", corrupt_left_out)
    resp = await client.get("/metalink?repo=smeos-10&arch=x86_64")
    text = await resp.text()
    root = ET.fromstring(text)  # noqa: S314  # our own server's output
    urls = [u.text or "" for u in root.iter("{http://www.metalinker.org/}url")]
    assert [u.split("/")[3] for u in urls] == ["previous", "current"]
    alternates = root.findall("ml:files/ml:file/mm0:alternates/mm0:alternate", NS)
    assert len(alternates) == 1  # v1, which the previous mirror still serves
    for node, body in ((root.find("ml:files/ml:file", NS), v2), (alternates[0], v1)):
        assert node is not None
        stamps = re.findall(rb"<timestamp>(\d+)</timestamp>", body["repodata/repomd.xml"])
        assert node.findtext("mm0:timestamp", namespaces=NS) == str(max(map(int, stamps)))
        assert node.findtext("ml:size", namespaces=NS) == str(len(body["repodata/repomd.xml"]))

    # dnf through the mirror list: SME's own URL shape, the literal $basearch in each line.
    rc, out = await dnf_makecache(
        tmp_path / "ml", f"mirrorlist=http://127.0.0.1:{port}/mirrorlist/smeos-10"
    )
    assert rc == 0, out
    assert "Metadata cache created" in out, out
    assert any("/repodata/" in p for p in access.clients("previous")), access.entries
    assert not any("/repodata/" in p for p in access.clients("corrupt")), access.entries

    # dnf through the metalink: librepo checks repomd.xml against the hashes; the previous
    # mirror, first in the list, passes only because v1 is listed as an alternate.
    before = len(access.entries)
    rc, out = await dnf_makecache(
        tmp_path / "mk", f"metalink=http://127.0.0.1:{port}/metalink?repo=smeos-10&arch=$basearch"
    )
    assert rc == 0, out
    assert "Metadata cache created" in out, out
    fetched = [(m, p) for m, p, ua in access.entries[before:] if not ua.startswith("redirector")]
    assert fetched[0] == ("previous", f"{DIR}/repodata/repomd.xml"), fetched
    wanted = {p for _, p in fetched if "/repodata/" in p and not p.endswith("repomd.xml")}
    assert wanted, fetched
    assert wanted <= {f"{DIR}/{name}" for name in v1}  # it kept v1: accepted as an alternate
    assert not any(m == "corrupt" for m, _ in fetched), fetched
    assert not any("/repodata/" in p for p in access.clients("corrupt")), access.entries
    kept = list((tmp_path / "mk" / "root" / "var" / "cache" / "dnf").glob("smeos-*/metalink.xml"))
    assert len(kept) == 1  # dnf read and kept our metalink
    assert ET.parse(kept[0]).getroot().tag == "{http://www.metalinker.org/}metalink"  # noqa: S314  # our own output, kept by dnf

    # The control: the same metalink without the alternate. librepo really checks the hashes,
    # so it refuses the previous mirror's v1 repomd.xml and goes on to the current mirror.
    strict = re.sub(r"\s*<mm0:alternates>.*</mm0:alternates>", "", text, flags=re.S)
    assert "alternate" not in strict
    farm.put("static", "metalink.xml", strict.encode())
    before = len(access.entries)
    rc, out = await dnf_makecache(tmp_path / "strict", f"metalink={farm.url('static')}metalink.xml")
    assert rc == 0, out
    fetched = [(m, p) for m, p, ua in access.entries[before:] if not ua.startswith("redirector")]
    assert fetched[0] == ("previous", f"{DIR}/repodata/repomd.xml"), fetched
    assert ("current", f"{DIR}/repodata/repomd.xml") in fetched, fetched
    # What it then fetched is v2's metadata (from either mirror: librepo spreads the files).
    wanted = {p for _, p in fetched if "/repodata/" in p and not p.endswith("repomd.xml")}
    assert wanted, fetched
    assert wanted <= {f"{DIR}/{name}" for name in v2}, (wanted, sorted(v2))
    assert not wanted & {f"{DIR}/{name}" for name in v1}

    # A repo the repodata pass does not cover (version 11): no hashes, so no metalink at all.
    # dnf gets a 404 and stops, instead of trusting whatever a mirror serves unverified.
    before = len(access.entries)
    uncovered = f"http://127.0.0.1:{port}/metalink?repo=smeos-11&arch=$basearch"
    rc, out = await dnf_makecache(tmp_path / "uncovered", f"metalink={uncovered}")
    assert rc != 0, out
    assert "404" in out, out
    assert [e for e in access.entries[before:] if not e[2].startswith("redirector")] == []
