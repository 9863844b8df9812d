"""Hashes for downloaders end to end: a master tree on disk, mirrors on loopback, real clients.

The hasher reads the tree, the app answers ?sha256 and friends, puts Digest headers on the 302,
serves Metalinks of the mirrors that have the file, and never sends a client to a mirror whose
copy has another size than the master's.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from redirector.config.settings import Settings, parse_settings
from redirector.geo import GeoReader
from redirector.web import keys
from redirector.web.app import create_app
from tests.farm import Farm
from tests.mmdb_build import CityRecord
from tests.support.world import city_db, near_far

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]
Client = TestClient[web.Request, web.Application]

NL_CLIENT = "145.100.1.7"
ISO_DIR = "releases/10/iso/x86_64"
ISO = f"{ISO_DIR}/smeserver-10.0-x86_64.iso"
NS4 = {"m": "urn:ietf:params:xml:ns:metalink"}
NS3 = {"m": "http://www.metalinker.org/"}


def parse_xml(text: str) -> ET.Element:
    return ET.fromstring(text)  # noqa: S314  # our own server's output


@pytest.fixture
def geo(tmp_path: Path) -> GeoReader:
    db = city_db(tmp_path / "city.mmdb", {"145.100.0.0/16": CityRecord("NL", "EU", 52.37, 4.90)})
    return GeoReader.open(db)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / ISO_DIR).mkdir(parents=True)
    (root / ISO).write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (root / ISO_DIR / "README").write_text("not worth hashing\n")
    return root


def config(farm: Farm, extra: str) -> Settings:
    # For a client in Amsterdam: "near" first, then "far"; both fresh.
    text = near_far(farm, 'hash_interval = "1h"\n' + extra, verify_timeout="500ms")
    return parse_settings(text, "hashes.toml")


async def started(
    aiohttp_client: ClientFactory, farm: Farm, geo: GeoReader, extra: str, known: str
) -> Client:
    """The app, once both mirrors are fresh and the facts of `known` are served."""
    now = time.time()
    for name in ("master", "near", "far"):
        farm.set_trace(name, now - 3600)
    client = await aiohttp_client(create_app(config(farm, extra), geo=geo))
    deadline = time.monotonic() + 15
    while True:
        health = json.loads(await (await client.get("/health")).text())
        facts = await client.get(f"/smeserver/{known}?sha256")
        if health["mirrors"]["fresh"] == 2 and facts.status == 200:
            return client
        assert time.monotonic() < deadline, (health, facts.status)
        await asyncio.sleep(0.05)


async def get(client: Client, path: str, **headers: str) -> tuple[int, str, dict[str, str]]:
    resp = await client.get(
        "/smeserver/" + path,
        headers={"X-Forwarded-For": NL_CLIENT, **headers},
        allow_redirects=False,
    )
    return resp.status, await resp.text(), dict(resp.headers)


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:  # never skip: dev/test.sh installs it
        pytest.fail(f"{name} is not on PATH: run dev/test.sh, which installs it")
    return found


def run_sum(program: str, directory: Path, name: str) -> str:
    got = subprocess.run(  # a fixed tool on a file the test made
        [tool(program), name], cwd=directory, capture_output=True, text=True, check=True
    )
    return got.stdout


async def test_every_hash_of_a_file_in_the_local_tree_equals_the_coreutils_one(
    aiohttp_client: ClientFactory, farm: Farm, geo: GeoReader, tree: Path
) -> None:
    client = await started(aiohttp_client, farm, geo, f'hash_tree = "{tree}"', ISO)
    name = ISO.rsplit("/", 1)[1]
    for algorithm in ("md5", "sha1", "sha256", "sha512"):
        line = run_sum(f"{algorithm}sum", tree / ISO_DIR, name)
        status, body, headers = await get(client, f"{ISO}?{algorithm}")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain")
        assert body == line.split()[0] + "\n"
        # The suffix form is what `sha256sum -c` reads.
        status, body, _ = await get(client, f"{ISO}.{algorithm}")
        assert (status, body) == (200, line)
    status, body, _ = await get(client, f"{ISO}?fileinfo")
    info = json.loads(body)
    assert status == 200
    assert info["size"] == (tree / ISO).stat().st_size
    assert info["sha256"] == hashlib.sha256((tree / ISO).read_bytes()).hexdigest()
    # A file nobody hashed: a clear 404 for its hash, a plain redirect for a suffix URL.
    status, body, _ = await get(client, f"{ISO_DIR}/README?sha256")
    assert status == 404
    assert "no sha256 hash is known" in body
    farm.put("near", f"{ISO_DIR}/README.sha256", b"a real file")
    status, _, headers = await get(client, f"{ISO_DIR}/README.sha256")
    assert status == 302
    assert headers["Location"] == farm.url("near") + f"{ISO_DIR}/README.sha256"


async def test_the_302_carries_digest_headers_and_curl_sees_them(
    aiohttp_client: ClientFactory, farm: Farm, geo: GeoReader, tree: Path
) -> None:
    data = (tree / ISO).read_bytes()
    for name in ("near", "far"):
        farm.put(name, ISO, data)
    client = await started(aiohttp_client, farm, geo, f'hash_tree = "{tree}"', ISO)
    status, _, headers = await get(client, ISO)
    assert status == 302
    assert headers["Location"] == farm.url("near") + ISO
    sha256 = base64.b64encode(hashlib.sha256(data).digest()).decode()
    sha512 = base64.b64encode(hashlib.sha512(data).digest()).decode()
    assert f"SHA-256={sha256}" in headers["Digest"].split(",")
    assert headers["Repr-Digest"] == f"sha-512=:{sha512}:, sha-256=:{sha256}:"
    assert headers["Link"].startswith(f"<{farm.url('far')}{ISO}>; rel=duplicate")
    url = str(client.make_url(f"/smeserver/{ISO}"))
    # curl runs beside the loop that serves it: a blocking subprocess.run would starve the app.
    proc = await asyncio.create_subprocess_exec(
        tool("curl"), "-sS", "-o", "/dev/null", "-D", "-", "-H", f"X-Forwarded-For: {NL_CLIENT}",
        url, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    stdout = out.decode()
    lines = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in stdout.splitlines())}
    assert stdout.startswith("HTTP/1.1 302")
    assert f"SHA-256={sha256}" in lines["digest"].split(",")
    assert lines["repr-digest"] == headers["Repr-Digest"]


async def test_a_mirror_with_a_copy_of_the_wrong_size_is_never_the_target(
    aiohttp_client: ClientFactory, farm: Farm, geo: GeoReader, tree: Path
) -> None:
    data = (tree / ISO).read_bytes()
    farm.put("near", ISO, data[:-1000])  # truncated: answers 200 to a HEAD all the same
    farm.put("far", ISO, data)
    client = await started(aiohttp_client, farm, geo, f'hash_tree = "{tree}"', ISO)
    for _ in range(3):
        status, _, headers = await get(client, ISO)
        assert status == 302
        assert headers["Location"] == farm.url("far") + ISO
    doc = parse_xml((await get(client, f"{ISO}.meta4"))[1])
    assert [u.text for u in doc.findall("m:file/m:url", NS4)] == [farm.url("far") + ISO]
    # The status page names the mirror and the file (the record is written in the background).
    deadline = time.monotonic() + 5
    while True:
        page = await (await client.get("/mirrors")).text()
        if 'id="bad-copies"' in page and 'data-mirror="near"' in page:
            break
        assert time.monotonic() < deadline, page[-3000:]
        await asyncio.sleep(0.05)
    section = page[page.index('id="bad-copies"') :]
    assert ISO in section
    assert f"size {len(data) - 1000}, the master&#x27;s {len(data)}" in section


async def test_a_file_added_to_the_tree_is_hashed_within_one_pass(
    aiohttp_client: ClientFactory, farm: Farm, geo: GeoReader, tree: Path
) -> None:
    client = await started(aiohttp_client, farm, geo, f'hash_tree = "{tree}"', ISO)
    hasher = client.app[keys.HASHER]
    new = f"{ISO_DIR}/smeserver-10.1-x86_64.iso"
    (tree / new).write_bytes(os.urandom(1024 * 1024))
    status, _, _ = await get(client, f"{new}?sha256")
    assert status == 404
    result = await hasher.run_pass()
    assert (result.seen, result.hashed) == (2, 1)  # only the new one is read
    await client.app[keys.FACTS].refresh(client.app[keys.STORE])
    status, body, _ = await get(client, f"{new}?sha256")
    assert (status, body) == (200, hashlib.sha256((tree / new).read_bytes()).hexdigest() + "\n")
    # Unchanged files are not read again; a changed one is, a removed one is forgotten.
    assert (await hasher.run_pass()).hashed == 0
    (tree / new).write_bytes(b"replaced")
    (tree / ISO).unlink()
    result = await hasher.run_pass()
    assert (result.hashed, result.dropped) == (1, 1)
    await client.app[keys.FACTS].refresh(client.app[keys.STORE])
    assert (await get(client, f"{new}?sha256"))[1] == hashlib.sha256(b"replaced").hexdigest() + "\n"
    assert (await get(client, f"{ISO}?sha256"))[0] == 404


async def test_metalinks_list_the_mirrors_that_have_the_file_in_rank_order(
    aiohttp_client: ClientFactory, farm: Farm, geo: GeoReader, tree: Path
) -> None:
    data = (tree / ISO).read_bytes()
    for name in ("near", "far"):
        farm.put(name, ISO, data)
    client = await started(aiohttp_client, farm, geo, f'hash_tree = "{tree}"', ISO)
    want = [(farm.url("near") + ISO, "nl", "1"), (farm.url("far") + ISO, "us", "2")]
    for path, headers in (
        (f"{ISO}?meta4", {}),
        (f"{ISO}.meta4", {}),
        (ISO, {"Accept": "application/metalink4+xml"}),
    ):
        status, body, got = await get(client, path, **headers)
        assert status == 200, path
        assert got["Content-Type"].startswith("application/metalink4+xml"), path
        f = parse_xml(body).find("m:file", NS4)
        assert f is not None
        assert f.get("name") == ISO.rsplit("/", 1)[1]
        assert f.findtext("m:size", namespaces=NS4) == str(len(data))
        assert f.findtext("m:hash[@type='sha-256']", namespaces=NS4) == (
            hashlib.sha256(data).hexdigest()
        )
        urls = [(u.text, u.get("location"), u.get("priority")) for u in f.findall("m:url", NS4)]
        assert urls == want, path
    status, body, got = await get(client, f"{ISO}.metalink")
    assert status == 200
    assert got["Content-Type"].startswith("application/metalink+xml")
    f3 = parse_xml(body).find("m:files/m:file", NS3)
    assert f3 is not None
    assert [u.text for u in f3.findall("m:resources/m:url", NS3)] == [u for u, _, _ in want]
    # ?mirrorlist shows the file's size, date and hashes.
    status, body, _ = await get(client, f"{ISO}?mirrorlist&json")
    assert status == 200
    assert json.loads(body)["file"]["size"] == len(data)
    assert json.loads(body)["file"]["hashes"]["sha256"] == hashlib.sha256(data).hexdigest()
    status, body, _ = await get(client, f"{ISO}?mirrorlist")
    assert hashlib.sha512(data).hexdigest() in body


async def test_without_a_tree_the_masters_checksum_files_give_the_hashes(
    aiohttp_client: ClientFactory, farm: Farm, geo: GeoReader
) -> None:
    data = os.urandom(200_000)
    sha256 = hashlib.sha256(data).hexdigest()
    farm.put("master", ISO, data)
    farm.put("master", f"{ISO_DIR}/SHA256SUMS", f"{sha256}  {ISO.rsplit('/', 1)[1]}\n".encode())
    farm.put("near", ISO, data)
    extra = f'hash_sums = ["{ISO_DIR}/SHA256SUMS", "{ISO_DIR}/MISSING-SUMS"]'
    client = await started(aiohttp_client, farm, geo, extra, ISO)
    assert (await get(client, f"{ISO}?sha256"))[1] == sha256 + "\n"
    # Only what the master published is claimed.
    status, body, _ = await get(client, f"{ISO}?md5")
    assert status == 404
    assert "no md5 hash is known" in body
    status, _, headers = await get(client, ISO)
    assert status == 302
    assert headers["Location"] == farm.url("near") + ISO
    assert headers["Digest"] == "SHA-256=" + base64.b64encode(bytes.fromhex(sha256)).decode()
    info = json.loads((await get(client, f"{ISO}?fileinfo"))[1])
    assert info["size"] == len(data)
    assert info["source"] == "sums"
