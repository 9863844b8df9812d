"""The sync tree: _hierarchy parsing, the tree and its lags, the pass hook, the store, the page."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
import pytest
from pytest_aiohttp import AiohttpClient

from redirector.config.settings import Settings, parse_settings
from redirector.core.humanize import duration
from redirector.core.models import (
    HierarchyEntry,
    MasterState,
    MasterVersion,
    Mirror,
    MirrorState,
    Status,
    SyncInfo,
)
from redirector.core.synctree import MASTER, Identities, build_tree, master_aliases, parse_hierarchy
from redirector.poll.poller import PassResult
from redirector.poll.syncread import own_trace_path, sync_hook
from redirector.store.base import StoreError, SyncStore
from redirector.store.codec import decode_sync
from redirector.store.file import FileStore
from redirector.store.memory import MemoryStore
from redirector.store.redis import RedisStore
from redirector.views.synctree import render_html, shown_email
from redirector.web.app import create_app
from tests.farm import MASTER_TRACE, Farm, date_u, trace_c
from tests.support import ROOT
from tests.support.world import STATUS, fill

FIXTURES = ROOT / "tests" / "fixtures" / "hierarchy"
H = 3600.0
NOW = 1_750_000_000.0
MASTER_URL = "http://mirror.contribs.org/smeserver/"
ALIASES = master_aliases(MASTER_URL, MASTER_TRACE)


def mirror(name: str, **kw: object) -> Mirror:
    base: dict[str, object] = {
        "http": f"http://{name}.test/smeserver/", "https": None, "country": "NL",
        "latitude": 52.0, "longitude": 5.0,
    }  # fmt: skip
    base.update(kw)
    return Mirror(name, **base)  # type: ignore[arg-type]  # test shorthand


def up(name: str, lag: float | None) -> MirrorState:
    """A state `lag` seconds behind at NOW (None: never read a master trace)."""
    if lag is None:
        return MirrorState(name, Status.DOWN, NOW, error="refused")
    since = None if lag == 0 else NOW - lag
    return MirrorState(name, Status.UP, NOW, master_date=NOW - 10 * H, behind_since=since)


# --- parsing -------------------------------------------------------------------------------


def test_parse_hierarchy_three_tier() -> None:
    entries = parse_hierarchy((FIXTURES / "three-tier").read_bytes())
    assert entries == (
        HierarchyEntry("mirror.contribs.org", "mirror.contribs.org", "master1.contribs.org",
                       "unknown"),
        HierarchyEntry("ftp.nluug.nl", "ftp.nluug.nl", "ftp1.nluug.nl", "mirror.contribs.org"),
        HierarchyEntry("mirror.example.net", "mirror.example.net", "box7.example.net",
                       "ftp.nluug.nl"),
    )  # fmt: skip


def test_parse_hierarchy_skips_what_is_not_four_names() -> None:
    entries = parse_hierarchy((FIXTURES / "junk").read_bytes())
    assert [e.mirror for e in entries] == ["mirror.contribs.org", "ftp.nluug.nl"]
    assert parse_hierarchy((FIXTURES / "html-200").read_bytes()) == ()
    assert parse_hierarchy(b"") == ()
    assert parse_hierarchy(b"\xff\xfe a b c d\n") == ()
    assert len(parse_hierarchy(b"a b c d\n" * 10_000)) == 200  # bounded


def test_identities() -> None:
    ms = [
        mirror("nluug", http="http://ftp.nluug.nl/os/smeserver/", trace_name="ftp.nluug.nl"),
        mirror("ms", http="http://www.mirrorservice.org/sites/x/", ssh_host="push.ms.test"),
    ]
    ids = Identities(ms, ALIASES)
    assert ids.resolve("FTP.NLUUG.NL.") == "nluug"
    assert ids.resolve("nluug") == "nluug"
    assert ids.resolve("rsync.mirrorservice.org") == "ms"  # service labels are loose
    assert ids.resolve("push.ms.test") == "ms"
    assert ids.resolve("mirror.contribs.org") == MASTER
    assert ids.resolve("master") == MASTER
    assert ids.resolve("elsewhere.example") is None
    assert ids.resolve(None) is None


def test_identities_know_the_mirrorname_the_poller_found() -> None:
    ms = [mirror("t1"), mirror("named", trace_name="configured.example")]
    found = {"t1": "box7.example.net", "named": "found.example"}
    ids = Identities(ms, ALIASES, found)
    assert ids.resolve("box7.example.net") == "t1"
    assert ids.resolve("configured.example") == "named"  # trace_name stays an override
    assert ids.resolve("found.example") is None


# --- the tree ------------------------------------------------------------------------------


def three_tier() -> tuple[list[Mirror], dict[str, SyncInfo], dict[str, MirrorState]]:
    """master -> nluug -> leaf (from _hierarchy); master -> ms, which the config says is
    under nluug; master -> relay (unconfigured) -> far; down is down and says nothing."""
    ms = [
        mirror("nluug", http="http://ftp.nluug.nl/smeserver/", upstream="master"),
        mirror("ms", upstream="nluug"),
        mirror("leaf", http="http://mirror.example.net/sme/"),
        mirror("far"),
        mirror("down", upstream="nluug"),
    ]
    hier = parse_hierarchy((FIXTURES / "three-tier").read_bytes())
    infos = {
        "nluug": SyncInfo("nluug", NOW, upstream="mirror.contribs.org", hierarchy=hier[:2]),
        "ms": SyncInfo("ms", NOW, upstream="mirror.contribs.org"),
        "leaf": SyncInfo("leaf", NOW, hierarchy=hier),  # no Upstream-mirror: the file tells
        "far": SyncInfo(
            "far", NOW, upstream="relay.example.org",
            hierarchy=(
                HierarchyEntry("relay.example.org", "relay.example.org", "r.example.org",
                               "mirror.contribs.org"),
            ),
        ),
    }  # fmt: skip
    states = {
        "nluug": up("nluug", 1 * H),
        "ms": up("ms", 0),
        "leaf": up("leaf", 4 * H),
        "far": up("far", 2 * H),
        "down": up("down", None),
    }
    return ms, infos, states


def test_build_tree_three_tiers_and_accumulating_lag() -> None:
    ms, infos, states = three_tier()
    tree = build_tree(
        ms, infos, states, master_label="mirror.contribs.org", aliases=ALIASES, now=NOW
    )
    n = tree.nodes
    assert n[MASTER].tier == 0
    assert n[MASTER].lag == 0.0
    assert (n["nluug"].parent, n["nluug"].tier, n["nluug"].via) == (MASTER, 1, "trace")
    assert (n["leaf"].parent, n["leaf"].tier, n["leaf"].via) == ("nluug", 2, "hierarchy")
    assert n["nluug"].lag == 1 * H
    assert n["nluug"].added == 1 * H
    assert n["leaf"].lag == 4 * H
    assert n["leaf"].added == 3 * H  # what the hop from nluug adds
    assert tree.depth == 2
    # Its trace says the master; the config says nluug: drawn where it really is, flagged.
    assert n["ms"].parent == MASTER
    assert n["ms"].mismatch == "configured to sync from nluug, its trace says mirror.contribs.org"
    assert n["nluug"].mismatch is None
    # An unconfigured hop, and where it syncs from per the _hierarchy it appears in.
    relay = n["ext:relay.example.org"]
    assert (relay.kind, relay.parent, relay.tier, relay.lag) == ("external", MASTER, 1, None)
    assert (n["far"].parent, n["far"].tier, n["far"].added) == ("ext:relay.example.org", 2, None)
    # Nothing observed: the config's word, marked as such.
    assert (n["down"].parent, n["down"].via, n["down"].lag) == ("nluug", "config", None)
    assert tree.order[0] == MASTER
    assert tree.order.index("nluug") < tree.order.index("leaf")
    tiers = tree.tiers()
    assert [(t.tier, t.count) for t in tiers] == [(1, 3), (2, 3)]
    assert tiers[0].median_lag == 0.5 * H  # nluug 1h, ms 0
    assert tiers[1].worst_lag == 4 * H


def test_no_info_at_all_hangs_everything_under_the_master() -> None:
    ms = [mirror("a"), mirror("b")]
    tree = build_tree(ms, {}, {}, master_label="m", aliases=ALIASES, now=NOW)
    assert {k: (v.parent, v.via) for k, v in tree.nodes.items() if k != MASTER} == {
        "a": (MASTER, "assumed"),
        "b": (MASTER, "assumed"),
    }


def test_observed_loop_is_cut_and_flagged() -> None:
    ms = [mirror("a"), mirror("b")]
    infos = {
        "a": SyncInfo("a", NOW, upstream="b.test"),
        "b": SyncInfo("b", NOW, upstream="a.test"),
    }
    tree = build_tree(ms, infos, {}, master_label="m", aliases=ALIASES, now=NOW)
    cut = [n for n in tree.nodes.values() if n.mismatch and "loop" in n.mismatch]
    assert len(cut) == 1
    assert cut[0].parent == MASTER
    assert {n.tier for n in tree.nodes.values()} == {0, 1, 2}


def test_unknown_upstream_in_hierarchy_falls_back_to_config() -> None:
    ms = [mirror("a", upstream="b"), mirror("b")]
    info = SyncInfo("a", NOW, hierarchy=(HierarchyEntry("a.test", "a.test", "h", "unknown"),))
    tree = build_tree(ms, {"a": info}, {}, master_label="m", aliases=ALIASES, now=NOW)
    assert (tree.nodes["a"].parent, tree.nodes["a"].via) == ("b", "config")


def test_render_escapes_what_mirrors_say() -> None:
    ms = [mirror("a")]
    infos = {"a": SyncInfo("a", NOW, upstream='<script>alert("x")</script>')}
    html = render_html(build_tree(ms, infos, {}, master_label="m", aliases=ALIASES, now=NOW))
    assert "<script" not in html
    assert "&lt;script&gt;" in html


def test_render_shows_lags_flags_and_record_fields() -> None:
    ms, infos, states = three_tier()
    ms[0] = mirror(
        "nluug", http="http://ftp.nluug.nl/smeserver/", upstream="master", sync="push",
        ssh_host="ftp.nluug.nl", bandwidth=1_000_000_000, contact_name="Jan",
        contact_email="jan@nluug.example",
    )  # fmt: skip
    tree = build_tree(ms, infos, states, master_label="mirror.contribs.org", aliases=ALIASES,
                      now=NOW)  # fmt: skip
    html = render_html(tree)
    assert 'data-name="leaf" data-tier="2" data-lag="14400" data-added="10800"' in html
    assert "lag 4h00m (+3h00m)" in html
    assert 'class="node mirror tier-1 mismatch"' in html
    assert "configured to sync from nluug" in html
    assert "push, 1 Gbit/s, contact Jan &lt;jan at nluug dot example&gt;" in html
    assert "jan@" not in html
    assert "jan@nluug.example" in render_html(tree, email_mode="show")
    assert "Jan" in render_html(tree, email_mode="omit")
    assert "nluug dot example" not in render_html(tree, email_mode="omit")


def test_small_helpers() -> None:
    assert duration(3725) == "1h02m"
    assert duration(-90) == "-1m30s"
    assert duration(2 * 86400 + 3 * H) == "2d03h"
    assert shown_email("a.b@x.example.org", "obfuscate") == "a.b at x dot example dot org"
    assert shown_email("a@x.org", "omit") is None
    assert shown_email(None, "show") is None
    assert own_trace_path(mirror("a"), MASTER_TRACE) == "project/trace/a.test"
    assert own_trace_path(mirror("a", trace_name="t"), "x/y/m") == "x/y/t"


# --- the store: the same contract in both --------------------------------------------------


AnyStore = MemoryStore | RedisStore | FileStore


@pytest.fixture(params=["memory", "redis", "file"])
async def sync_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AnyStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "file":
        yield FileStore(tmp_path)
        return
    url = request.getfixturevalue("redis_url")
    st = RedisStore(url, prefix="t10:")
    yield st
    await st.close()


async def test_store_sync_contract(sync_store: AnyStore) -> None:
    assert isinstance(sync_store, SyncStore)
    assert await sync_store.load_sync() == {}
    hier = (HierarchyEntry("a", "b", "c", "d"), HierarchyEntry("e", "f", "g", "unknown"))
    one = SyncInfo("nl", 1.5, "up.example", hier, None)
    two = SyncInfo("us", 2.0, None, (), "own trace: HTTP 404")
    await sync_store.put_sync([one, two])
    assert await sync_store.load_sync() == {"nl": one, "us": two}
    newer = SyncInfo("nl", 3.0, None, (), None)
    await sync_store.put_sync([newer])  # last wins per name, the others stay
    assert await sync_store.load_sync() == {"nl": newer, "us": two}
    await sync_store.put_sync([])
    assert len(await sync_store.load_sync()) == 2
    # Not part of the generation: no redirect depends on it.
    gen = await sync_store.generation()
    await sync_store.put_sync([one])
    assert await sync_store.generation() == gen


async def test_redis_sync_refuses_junk(redis_url: str) -> None:
    st = RedisStore(redis_url, prefix="t10:")
    try:
        # refused: a junk entry is dropped from the read (and logged), never an error for all
        good = '{"v":1,"name":"us","checked_at":1}'
        await st._client.hset("t10:sync", mapping={"nl": b"{not json", "us": good})
        assert set(await st.load_sync()) == {"us"}
        await st._client.hset("t10:sync", "nl", good)  # filed under another mirror's name
        assert set(await st.load_sync()) == {"us"}
    finally:
        await st.close()
    with pytest.raises(StoreError, match="hierarchy"):
        decode_sync('{"v":1,"name":"x","checked_at":1,"hierarchy":[["a","b"]]}')


# --- the pass hook against loopback mirrors ------------------------------------------------


def farm_config(farm: Farm, names: list[str]) -> str:
    """Mirrors `names` served by the farm, each tracing as `<name>.test`."""
    mirrors = "".join(
        f'[[mirror]]\nname = "{n}"\nhttp = "{farm.url(n)}"\ncountry = "NL"\nlatitude = 52.0\n'
        f'longitude = 5.0\ntrace_name = "{n}.test"\n'
        for n in names
    )
    return (
        f'[redirector]\nmaster = "{farm.url("master")}"\nprobe_timeout = "2s"\n'
        f'poll_interval = "1h"\n{mirrors}'
    )


def farm_settings(farm: Farm, names: list[str]) -> Settings:
    return parse_settings(farm_config(farm, names), "t.toml")


def passed(states: list[MirrorState]) -> PassResult:
    return PassResult(MasterState((), NOW), tuple(states), NOW, 0.1)


async def test_hook_reads_traces_and_hierarchies(farm: Farm) -> None:
    farm.put("a", "project/trace/a.test", trace_c(NOW, host="a", upstream="mirror.contribs.org"))
    farm.put("b", "project/trace/b.test", f"{date_u(NOW)}\n".encode())  # format B, date only
    farm.put("b", "project/trace/_hierarchy", (FIXTURES / "three-tier").read_bytes())
    farm.put("c", "project/trace/_hierarchy", b"<html>404</html>")
    settings = farm_settings(farm, ["a", "b", "c", "gone"])
    store = MemoryStore()
    clock = [NOW]
    hook = sync_hook(settings, store, lambda: clock[0], every=600)
    states = [up("a", 0), up("b", 0), up("c", 0), up("gone", None)]
    async with aiohttp.ClientSession() as session:
        await hook(session, passed(states))
        got = await store.load_sync()
        assert set(got) == {"a", "b", "c"}  # a mirror that did not answer is not asked
        assert got["a"].upstream == "mirror.contribs.org"
        assert got["a"].hierarchy == ()
        assert got["a"].error is None
        assert got["b"].upstream is None
        assert [e.mirror for e in got["b"].hierarchy][-1] == "mirror.example.net"
        assert got["c"].error == "own trace: HTTP 404"
        assert got["c"].hierarchy == ()
        hits = len(farm.hits)
        clock[0] += 60
        await hook(session, passed(states))  # within `every`: nothing asked again
        assert len(farm.hits) == hits
        clock[0] += 600
        await hook(session, passed(states))
        assert len(farm.hits) == hits + 6


# --- the status page in a real browser ------------------------------------------------------


class _Nodes(HTMLParser):
    """Collects the tree's <g class="node ..."> elements and their texts from a DOM dump."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[str, dict[str, str]] = {}
        self._current: str | None = None
        self._text: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "g" and "node" in a.get("class", "").split():
            self._current = a["data-name"]
            self.nodes[self._current] = a
        elif tag == "text" and self._current is not None:
            self._text = a.get("class", "")

    def handle_data(self, data: str) -> None:
        if self._current is not None and self._text:
            self.nodes[self._current]["text:" + self._text] = data

    def handle_endtag(self, tag: str) -> None:
        if tag == "text":
            self._text = None
        elif tag == "g":
            self._current = None


async def dump_dom(url: str, profile: Path) -> str:
    chromium = shutil.which("chromium")
    if chromium is None:  # never skip: dev/test.sh installs it
        pytest.fail("chromium is not on PATH: run dev/test.sh (apt-get install chromium)")
    proc = await asyncio.create_subprocess_exec(
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--dump-dom", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 45)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


@pytest.mark.system
async def test_status_page_draws_the_three_tier_tree_in_chromium(
    farm: Farm, aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    now = float(int(time.time()))
    # The master's history: three states, first seen 10 h, 4 h and 1 h ago.
    v1, v2, v3 = now - 30 * H, now - 6 * H, now - 2 * H
    history = (MasterVersion(v1, now - 10 * H), MasterVersion(v2, now - 4 * H),
               MasterVersion(v3, now - 1 * H))  # fmt: skip
    farm.set_trace("master", v3)
    chain = "mirror.contribs.org mirror.contribs.org m1.contribs.org unknown\n"
    tiers = {  # name: (held master state, Upstream-mirror in its trace, _hierarchy)
        "alpha": (v2, "mirror.contribs.org", None),
        "beta": (v1, "alpha.test", None),
        "gamma": (v3, "mirror.contribs.org", None),
        "delta": (v3, None, chain + "gamma.test gamma.test g1 mirror.contribs.org\n"
                  "delta.test delta.test d1 gamma.test\n"),
    }  # fmt: skip
    for name, (held, upstream, hier) in tiers.items():
        farm.set_trace(name, held)
        own = trace_c(held + 600, upstream=upstream) if upstream else date_u(held).encode()
        farm.put(name, f"project/trace/{name}.test", own)
        if hier:
            farm.put(name, "project/trace/_hierarchy", hier.encode())
    # gamma's config says it syncs from alpha; its trace says the master.
    text = farm_config(farm, list(tiers)).replace(
        'trace_name = "gamma.test"\n', 'trace_name = "gamma.test"\nupstream = "alpha"\n'
    )
    settings = parse_settings(text, "t.toml")
    store = MemoryStore()
    await store.put_master(MasterState(history, now))
    app = create_app(settings, store=store, use_geo_settings=False)
    client = await aiohttp_client(app)
    for _ in range(200):  # the first pass and its hooks run at startup
        if len(await store.load_sync()) == 4:
            break
        await asyncio.sleep(0.05)
    assert set(await store.load_sync()) == set(tiers)

    page = await client.get("/mirrors")
    assert page.status == 200
    dom = await dump_dom(str(client.make_url("/mirrors")), tmp_path / "chromium")
    assert 'id="sync-tree"' in dom
    parser = _Nodes()
    parser.feed(dom)
    nodes = parser.nodes
    assert set(nodes) == {MASTER, *tiers}
    assert {k: int(v["data-tier"]) for k, v in nodes.items()} == {
        MASTER: 0, "alpha": 1, "gamma": 1, "beta": 2, "delta": 2,
    }  # fmt: skip
    assert nodes["beta"]["data-parent"] == "alpha"
    assert nodes["delta"]["data-parent"] == "gamma"  # learnt from its _hierarchy

    def lag(name: str) -> float:
        return float(nodes[name]["data-lag"])

    # alpha lacks v3 (first seen 1 h ago); beta lacks v2 too (4 h): lag adds up down the tiers.
    assert abs(lag("alpha") - 1 * H) < 120
    assert abs(lag("beta") - 4 * H) < 120
    assert abs(float(nodes["beta"]["data-added"]) - 3 * H) < 5
    assert lag("gamma") == 0
    assert lag("delta") == 0
    assert re.fullmatch(r"lag 4h0\dm \(\+3h00m\)", nodes["beta"]["text:lag"])
    assert "mismatch" in nodes["gamma"]["class"].split()
    assert "mismatch" not in nodes["alpha"]["class"].split()
    assert "configured to sync from alpha, its trace says mirror.contribs.org" in dom


async def test_status_page_tree_is_coloured_by_state_and_a_stale_mirror_is_not_up(
    aiohttp_client: AiohttpClient,
) -> None:
    store = MemoryStore()
    await fill(store)
    client = await aiohttp_client(
        create_app(STATUS.config(), poll=False, store=store, use_geo_settings=False)
    )
    page = await (await client.get("/mirrors")).text()
    tree = page[page.index('<svg class="synctree"') :]
    tree = tree[: tree.index("</svg>")]
    boxes = dict(
        re.findall(r'<g class="node mirror[^"]*" data-name="([\w-]+)"[^>]*?>(.*?)</g>', tree)
    )
    stale = boxes["pialasse"]  # the poller says up; it is 9 h behind
    assert "state: stale" in stale
    assert "state: up" not in stale
    assert 'fill="#fff3e0"' in stale
    assert '<rect class="state-bar"' in stale
    assert 'fill="#ffebee"' in boxes["contribs-fr"]
    assert "state: fresh" in boxes["nluug"]
    assert re.search(r'data-name="pialasse"[^>]*data-state="stale"', tree)
