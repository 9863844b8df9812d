"""The master topology: read the master where the tree is, fall back without ever looping.

The config that made the redirector its own master (mirror.contribs.org fronting the tree and
named as `master`) is refused, naming the fields; the layout that works (tree on local disk,
fallbacks served locally) reads traces and repomd.xml from disk and answers fallbacks with
X-Accel-Redirect; lists and metalinks never name the redirector's own names.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from redirector.config.settings import ConfigError, Settings, parse_settings
from redirector.core.models import MirrorState, Status
from redirector.core.topology import (
    LOCAL_PREFIX,
    fallback_target,
    list_fallback,
    listen_names,
    names_url,
    normalize_name,
)
from redirector.poll.poller import poll_once
from redirector.poll.probe import ProbeError, fetch, open_session
from redirector.poll.repodata import check_repodata
from redirector.store.memory import MemoryStore
from redirector.web.app import create_app
from tests.farm import MASTER_TRACE, Farm, trace_c

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[[web.Application], Awaitable[Client]]

FRONT = ("mirror.contribs.org", "mirrorlist.koozali.org", "mirrorlist.contribs.org")
SELF_MASTER = "http://mirror.contribs.org/smeserver/"
MIRROR = """
[[mirror]]
name = "nl"
http = "{url}"
country = "NL"
latitude = 52.37
longitude = 4.90
"""
REPOMD = "releases/10/smeos/x86_64/repodata/repomd.xml"


def config(extra: str, *, master: str = SELF_MASTER, mirror: str = "http://nl.example/sme/") -> str:
    return f'[redirector]\nmaster = "{master}"\n{extra}\n' + MIRROR.format(url=mirror)


def names(*more: str) -> str:
    return "public_names = [" + ", ".join(f'"{n}"' for n in (*FRONT, *more)) + "]"


# --- pure -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expect"),
    [
        ("http://mirror.contribs.org/smeserver/", "mirror.contribs.org"),
        ("https://MIRROR.contribs.org./x", "mirror.contribs.org"),
        ("http://mirror.contribs.org:8081/", "mirror.contribs.org"),  # no port: every port
        ("http://127.0.0.1:8080/", "127.0.0.1:8080"),
        ("http://127.0.0.1:8081/", None),
        ("http://[::1]:8080/sme/", "[::1]:8080"),
        ("http://ftp.nluug.nl/", None),
        ("file:///srv/smeserver/", None),
    ],
)
def test_names_url(url: str, expect: str | None) -> None:
    own = (*FRONT, "127.0.0.1:8080", "[::1]:8080")
    assert names_url(own, url) == expect


def test_normalize_name_and_listen_names() -> None:
    assert normalize_name(" Mirror.Contribs.Org. ") == "mirror.contribs.org"
    assert normalize_name("[::1]:80") == "[::1]:80"
    for bad in ("http://x/", "x/y", "", "a b", "x:99999", "u@x"):
        with pytest.raises(ValueError, match=r"expected a host name|bad port|has no host"):
            normalize_name(bad)
    assert listen_names("127.0.0.1", 8080) == ("127.0.0.1:8080",)
    assert listen_names("::1", 8080) == ("[::1]:8080",)
    assert "localhost:80" in listen_names("0.0.0.0", 80)  # noqa: S104  # a wildcard listen


def test_fallback_target_and_list_fallback() -> None:
    assert fallback_target("redirect", SELF_MASTER, "a/b.iso") == SELF_MASTER + "a/b.iso"
    assert fallback_target("local", SELF_MASTER, "a/b.iso") == LOCAL_PREFIX + "a/b.iso"
    assert list_fallback(SELF_MASTER, FRONT) is None
    assert list_fallback("http://master.example/", FRONT) == "http://master.example/"


# --- check-config ------------------------------------------------------------------------------


def test_the_old_production_config_is_refused_naming_the_fields() -> None:
    # The front door named as its own master: every fallback would redirect to itself.
    with pytest.raises(ConfigError) as e:
        parse_settings(config(names()), "mirrors.toml")
    msg = str(e.value)
    assert "mirrors.toml:2:" in msg
    assert "fields 'master' and 'fallback'" in msg
    assert "redirect to itself" in msg
    assert 'fallback = "local"' in msg


def test_a_master_read_through_the_front_door_is_refused() -> None:
    # Local fallbacks, but the poller would still read the master's trace from the redirector.
    with pytest.raises(ConfigError) as e:
        parse_settings(config(names() + '\nfallback = "local"'))
    assert "field 'master' (master_origin is unset)" in str(e.value)
    assert "file:///srv/smeserver/" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_settings(
            config(
                names() + '\nfallback = "local"\nmaster_origin = "https://mirror.contribs.org/x/"'
            )
        )
    assert "field 'master_origin'" in str(e.value)


def test_the_listen_address_is_an_own_name() -> None:
    with pytest.raises(ConfigError) as e:
        parse_settings(config('listen = "127.0.0.1:8181"', master="http://127.0.0.1:8181/sme/"))
    assert "'127.0.0.1:8181'" in str(e.value)
    # Another port of the same address is another server.
    parse_settings(config('listen = "127.0.0.1:8181"', master="http://127.0.0.1:8182/sme/"))


def test_a_mirror_on_an_own_name_is_refused() -> None:
    with pytest.raises(ConfigError) as e:
        parse_settings(
            config(
                names() + '\nfallback = "local"\nmaster_origin = "file:///srv/smeserver"',
                mirror="http://mirrorlist.koozali.org/sme/",
            )
        )
    assert "mirror 'nl' field 'http'" in str(e.value)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ('fallback = "nginx"', "fallback"),
        ('master_origin = "ftp://x/"', "master_origin"),
        ('master_origin = "file://host/srv/"', "master_origin"),
        ('master_origin = "file:///srv/../etc/"', "master_origin"),
        ('public_names = ["http://x/"]', "public_names"),
        ('public_names = "x"', "public_names"),
    ],
)
def test_bad_topology_values(extra: str, field: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_settings(config(extra, master="http://master.example/"))
    assert f"field '{field}'" in str(e.value)


def test_the_layout_that_works() -> None:
    s = parse_settings(
        config(names() + '\nfallback = "local"\nmaster_origin = "file:///srv/smeserver"')
    )
    assert s.origin == "file:///srv/smeserver/"
    assert s.fallback == "local"
    assert s.own_names == (*FRONT, "127.0.0.1:8080")
    # Unset, the origin is the master, and the fallback a redirect to it.
    plain = parse_settings(config("", master="http://master.example/sme"))
    assert (plain.origin, plain.fallback) == ("http://master.example/sme/", "redirect")


def test_check_config_refuses_a_self_fallback(tmp_path: Path) -> None:
    cfg = tmp_path / "mirrors.toml"
    cfg.write_text(config(names()))
    r = subprocess.run(
        [sys.executable, "-m", "redirector.cli", "check-config", str(cfg)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert "fields 'master' and 'fallback'" in r.stderr
    assert "Traceback" not in r.stderr


# --- the master read from disk -----------------------------------------------------------------


def local_settings(tree: Path, mirror: str, extra: str = "") -> Settings:
    return parse_settings(
        config(
            names()
            + f'\nfallback = "local"\nmaster_origin = "file://{tree}"\nprobe_timeout = "2s"\n'
            + 'geoip_db = ""\nverify_files = false\nrepos = ["smeos"]\nrepodata_versions = ["10"]\n'
            + extra,
            mirror=mirror,
        )
    )


async def test_fetch_reads_a_local_tree(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"x" * 10)
    os.utime(tmp_path / "a" / "f", (1_700_000_000, 1_700_000_000))
    os.mkfifo(tmp_path / "fifo")
    root = f"file://{tmp_path}/"
    async with open_session(2) as session:
        got = await fetch(session, root + "a/f", timeout=2)
        assert (got.status, got.body, got.last_modified) == (200, b"x" * 10, 1_700_000_000)
        assert (await fetch(session, root + "a/f", timeout=2, method="HEAD")).body == b""
        assert (await fetch(session, root + "a/missing", timeout=2)).status == 404
        assert (await fetch(session, root + "a", timeout=2)).status == 404  # a directory
        with pytest.raises(ProbeError, match="exceeds"):
            await fetch(session, root + "a/f", timeout=2, max_bytes=5)
        with pytest.raises(ProbeError, match="not a local tree path"):
            await fetch(session, root + "a/../a/f", timeout=2)
        # A FIFO would block a reader for ever: refused without opening it for reading.
        assert (await fetch(session, root + "fifo", timeout=2)).status in (404, 403)


async def test_the_poller_reads_the_master_from_disk(farm: Farm, tmp_path: Path) -> None:
    tree = tmp_path / "smeserver"
    (tree / "project" / "trace").mkdir(parents=True)
    now = time.time()
    (tree / MASTER_TRACE).write_bytes(trace_c(now - 600))
    farm.set_trace("nl", now - 600)
    farm.put("nl", "releases/", b"index")
    settings = local_settings(tree, farm.url("nl"))
    store = MemoryStore()
    async with open_session(2) as session:
        result = await poll_once(session, settings, store)
        assert result.master.error is None, result.master.error
        assert result.master.current is not None
        assert abs(result.master.current.date - (now - 600)) < 1.5
        assert {s.name: s.status for s in result.states} == {"nl": Status.UP}
        assert result.states[0].behind_since is None  # current: judged against the disk
        # A new master state on disk is seen by the next pass.
        (tree / MASTER_TRACE).write_bytes(trace_c(now - 60))
        result = await poll_once(session, settings, store)
        assert result.master.current is not None
        assert abs(result.master.current.date - (now - 60)) < 1.5
        assert result.states[0].behind_since is not None  # nl still holds the older state
    # Nothing asked the farm for the master: the only master is the disk.
    assert not [h for h in farm.hits if h.startswith("master/")]


async def test_the_repodata_pass_reads_repomd_from_disk(farm: Farm, tmp_path: Path) -> None:
    tree = tmp_path / "smeserver"
    repomd = b"<repomd><data><timestamp>1700000000</timestamp></data></repomd>"
    (tree / REPOMD).parent.mkdir(parents=True)
    (tree / REPOMD).write_bytes(repomd)
    settings = local_settings(tree, farm.url("nl"))
    store = MemoryStore()
    now = time.time()
    await store.put_states(
        [MirrorState("nl", Status.UP, now, master_date=now - 60, behind_since=None)]
    )
    farm.put("nl", REPOMD, repomd)
    async with aiohttp.ClientSession() as session:
        state = await check_repodata(session, settings, store, now)
    assert state is not None
    history = state.repos["releases/10/smeos/x86_64"]
    assert history.error is None
    assert history.current is not None
    assert history.current.size == len(repomd)
    assert state.mirrors["nl"]["releases/10/smeos/x86_64"].value == "current"


# --- fallbacks, lists and metalinks in the local layout -----------------------------------------


async def test_local_fallbacks_never_name_the_front_door(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    settings = local_settings(tmp_path, "http://nl.example/sme/")
    # No state at all: no mirror eligible (the first seconds after a start).
    client = await aiohttp_client(
        create_app(settings, poll=False, store=MemoryStore(), use_geo_settings=False)
    )
    resp = await client.get("/smeserver/releases/10/smeos/x86_64/a.rpm", allow_redirects=False)
    assert resp.status == 503  # for nginx: it serves the file and drops this status
    assert resp.headers["X-Accel-Redirect"] == "/_master/releases/10/smeos/x86_64/a.rpm"
    assert "Location" not in resp.headers
    assert "Content-Type" not in resp.headers  # nginx keeps it: the file's own must win
    resp = await client.head("/pub/smeserver/releases/10/x.iso", allow_redirects=False)
    assert resp.headers["X-Accel-Redirect"] == "/_master/releases/10/x.iso"
    # The mirror list names nothing rather than the redirector itself; the metalink is a 404.
    text = await (await client.get("/mirrorlist/smeos-10")).text()
    assert not [line for line in text.splitlines() if not line.startswith("#")]
    assert "error: no mirror is current" in text
    resp = await client.get("/metalink?repo=smeos-10&arch=x86_64")
    body = await resp.text()
    assert resp.status == 404
    assert "error: the master's repomd.xml has not been read yet" in body
    assert not any(n in body for n in FRONT)
