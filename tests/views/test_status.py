"""Status views: states, /mirrors as HTML and JSON (checked against its schema), readiness."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from redirector.core.condition import Condition as State
from redirector.core.humanize import when
from redirector.core.models import (
    MasterState,
    MasterVersion,
    Mirror,
    MirrorState,
    RepoCheck,
    RepodataState,
    Status,
)
from redirector.core.selection import Candidate
from redirector.snapshot import Snapshot
from redirector.stats import DownloadStats, Window, summarize
from redirector.store.base import StoreData
from redirector.store.file import FileStore
from redirector.store.history import record_pass
from redirector.store.memory import MemoryStore
from redirector.store.redis import RedisStore
from redirector.views.condition import classify
from redirector.views.status import (
    Section,
    build,
    readiness,
    render_html,
    to_json,
)
from redirector.web import keys
from redirector.web.app import create_app
from tests.conftest import RedisServer
from tests.support import ROOT
from tests.support.world import EXPECTED, STATUS, fill

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]

SCHEMA_FILE = ROOT / "redirector" / "views" / "schema" / "mirrors-v1.json"
NOW = 1_790_000_000.0
MAX_LAG = 8 * 3600.0
M = Mirror("m", "http://m.test/", None, "NL", 52.0, 5.0)


def strict(schema: Any) -> Any:
    """The schema with every object closed: the document must declare each field it emits."""
    out = copy.deepcopy(schema)

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for v in node.values():
                close(v)
        elif isinstance(node, list):
            for v in node:
                close(v)

    close(out)
    return out


def validate(doc: Any) -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(doc)
    jsonschema.Draft202012Validator(strict(schema)).validate(doc)


@pytest.mark.parametrize(
    ("mirror", "state", "expected", "reason_part"),
    [
        (replace(M, enabled=False), None, State.DISABLED, "disabled in the config"),
        (M, None, State.UNCHECKED, "not checked yet"),
        (M, MirrorState("m", Status.UNKNOWN, 0.0), State.UNCHECKED, "not checked yet"),
        (M, MirrorState("m", Status.DOWN, NOW, error="timed out after 10 s"), State.DOWN,
         "timed out"),
        (M, MirrorState("m", Status.BROKEN, NOW, error="not a trace"), State.BROKEN, "not a trace"),
        (M, MirrorState("m", Status.SYNCING, NOW, master_date=NOW), State.SYNCING, "sync"),
        (M, MirrorState("m", Status.UP, NOW, master_date=NOW), State.FRESH, "current"),
        (M, MirrorState("m", Status.UP, NOW, master_date=NOW, behind_since=NOW - 3600),
         State.FRESH, "1h00m behind"),
        (M, MirrorState("m", Status.UP, NOW, master_date=NOW, behind_since=NOW - 9 * 3600),
         State.STALE, "stale by 9h00m"),
        (M, MirrorState("m", Status.UP, NOW), State.STALE, "no readable master trace"),
        (M, MirrorState("m", Status.UP, NOW - 9 * 3600, master_date=NOW), State.STALE,
         "last checked 9h00m ago"),
    ],
)  # fmt: skip
def test_classify(
    mirror: Mirror, state: MirrorState | None, expected: State, reason_part: str
) -> None:
    got, reason = classify(Candidate(mirror, state), NOW, MAX_LAG)
    assert got is expected
    assert reason_part in reason


def snapshot_of(data: StoreData, now: float = NOW) -> Snapshot:
    return Snapshot.build(STATUS.config().mirrors, data, now)


async def known_snapshot(now: float = NOW) -> Snapshot:
    store = MemoryStore()
    await fill(store, now)
    return snapshot_of(await store.load(), now)


def report_json(snap: Snapshot, downloads: DownloadStats | None = None) -> dict[str, Any]:
    rep = build(
        snap,
        downloads or summarize({}, NOW),
        now=NOW,
        max_lag=MAX_LAG,
        poll_interval=300.0,
        master_url="http://127.0.0.1:9/master/",
        store_kind="memory",
        store_error=None,
    )
    return to_json(rep)


async def test_report_has_every_state_and_matches_the_schema() -> None:
    snap = await known_snapshot()
    doc = report_json(snap)
    validate(doc)
    assert {m["name"]: m["state"] for m in doc["mirrors"]} == EXPECTED
    assert doc["summary"]["fresh"] == 3
    assert doc["summary"]["enabled"] == 8
    assert doc["summary"]["states"] == {
        "fresh": 3, "syncing": 1, "stale": 1, "down": 1, "broken": 1, "unchecked": 1,
        "disabled": 1,
    }  # fmt: skip
    by = {m["name"]: m for m in doc["mirrors"]}
    assert by["pialasse"]["lag_seconds"] == 9 * 3600
    assert by["pialasse"]["reason"] == (
        f"stale by 9h00m, behind the master since {when(NOW - 9 * 3600)}"
    )
    assert by["contribs-fr"]["reason"] == "cannot connect: refused"
    assert by["contribs-fr"]["failures"] == 4
    assert by["mirrorservice"]["lacks"] == ["obsolete/"]
    assert by["mirrorservice"]["covered"] == ["releases/", "contribs/"]
    assert by["mirrorservice"]["coverage_note"] == "obsolete/: HTTP 404 at obsolete/"
    assert by["mirrorservice"]["coverage_checked"] == "2026-09-21T14:03:20Z"  # NOW - 600 s
    assert by["contribs-fr"]["next_check"] == "2026-09-21T14:18:20Z"  # NOW + 300 s
    assert by["nluug"]["next_check"] is None
    assert by["nluug"]["last_sync"] == "2026-09-21T12:11:40Z"  # NOW - 7300 s
    assert by["voxteneo"]["last_check"] is None
    assert doc["master"]["state"] == "up"
    assert doc["master"]["changed_at"] == "2026-09-21T12:15:00Z"  # NOW - 7100 s
    assert doc["repodata_checked_at"] is None
    assert all(m["repodata"] is None for m in doc["mirrors"])


async def test_shares_and_downloads_in_the_report() -> None:
    snap = await known_snapshot()
    hour = Window(total=10, master=2, mirrors={"nluug": 6, "ibiblio": 2})
    day = Window(total=40, master=4, mirrors={"nluug": 30, "ibiblio": 6})
    base = summarize({}, NOW)
    doc = report_json(snap, DownloadStats(hour, day, base.days))
    validate(doc)
    by = {m["name"]: m for m in doc["mirrors"]}
    assert by["nluug"]["share"] == {"hour": 0.6, "day": 0.75}
    assert by["nluug"]["redirects"] == {"hour": 6, "day": 30}
    assert by["voxteneo"]["share"] == {"hour": 0.0, "day": 0.0}
    assert doc["downloads"]["hour"] == {"total": 10, "master": 2,
                                        "mirrors": {"nluug": 6, "ibiblio": 2}}  # fmt: skip
    assert len(doc["downloads"]["days"]) == 7


async def test_repodata_verdicts_are_shown() -> None:
    store = MemoryStore()
    await fill(store, NOW)
    await store.put_repodata(
        RepodataState(
            repos={},
            mirrors={
                "nluug": {"releases/10/smeos/x86_64": RepoCheck.CURRENT},
                "ibiblio": {
                    "releases/10/smeos/x86_64": RepoCheck.MISMATCHED,
                    "releases/10/smeupdates/x86_64": RepoCheck.ALTERNATE,
                },
            },
            checked_at=NOW - 30,
        )
    )
    snap = snapshot_of(await store.load())
    doc = report_json(snap)
    validate(doc)
    by = {m["name"]: m for m in doc["mirrors"]}
    assert by["ibiblio"]["repodata"] == {
        "releases/10/smeos/x86_64": "mismatched",
        "releases/10/smeupdates/x86_64": "alternate",
    }
    assert by["voxteneo"]["repodata"] == {}
    page = render_html(
        build(snap, summarize({}, NOW), now=NOW, max_lag=MAX_LAG, poll_interval=300.0,
              master_url="http://m/", store_kind="memory", store_error=None)
    )  # fmt: skip
    assert "1 alternate, 1 mismatched" in page
    assert "<li>releases/10/smeos/x86_64: mismatched</li>" in page


async def test_page_escapes_what_mirrors_say_and_renders_extra_sections() -> None:
    store = MemoryStore()
    now = await fill(store, NOW)
    await store.put_states(
        [MirrorState("pacific", Status.BROKEN, now, error='<script>alert("x")</script>')]
    )
    snap = snapshot_of(await store.load())
    rep = build(
        snap,
        summarize({}, NOW),
        now=NOW,
        max_lag=MAX_LAG,
        poll_interval=300.0,
        master_url="http://m/",
        store_kind="memory",
        store_error="redis: refused <b>",
    )
    page = render_html(rep, [Section("sync-tree", "Sync tree", "<p id='tree'>tree here</p>")])
    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "redis: refused &lt;b&gt;" in page  # the store warning
    assert '<section class="card" id="sync-tree"><h2>Sync tree</h2>' in page
    assert "<p id='tree'>tree here</p>" in page
    # Self-contained: no stylesheet, script, font or image fetched from anywhere.
    assert "src=" not in page
    assert 'rel="stylesheet"' not in page
    assert "@import" not in page
    assert '<meta name="viewport"' in page
    for name, state in EXPECTED.items():
        assert f'<tr id="mirror-{name}" data-state="{state}">' in page


@pytest.mark.parametrize(
    ("master", "store_error", "ready", "status"),
    [
        (MasterState((MasterVersion(NOW - 7200, NOW - 7100),), NOW - 60), None, True, "ready"),
        (MasterState((MasterVersion(NOW - 7200, NOW - 7100),), NOW - 60), "refused", True,
         "degraded"),
        # A silent poller: the node still serves its snapshot, so it stays in the balancer.
        (MasterState((MasterVersion(NOW - 7200, NOW - 7100),), NOW - 901), None, True,
         "degraded"),
        (None, None, False, "not ready"),
    ],
)  # fmt: skip
async def test_readiness(
    master: MasterState | None, store_error: str | None, ready: bool, status: str
) -> None:
    snap = await known_snapshot()
    snap = replace(snap, master=master)
    r = readiness(snap, now=NOW, max_lag=MAX_LAG, poll_interval=300.0, store_error=store_error)
    assert (r.ready, r.status) == (ready, status)
    assert r.checks["store"]["ok"] is (store_error is None)
    assert r.checks["targets"]["fresh"] == 3


async def test_readiness_without_fresh_mirrors_depends_on_the_master() -> None:
    empty = Snapshot.build(STATUS.config().mirrors, None, NOW)
    up = MasterState((MasterVersion(NOW - 7200, NOW - 7100),), NOW - 60)
    r = readiness(replace(empty, master=up), now=NOW, max_lag=MAX_LAG, poll_interval=300.0,
                  store_error=None)  # fmt: skip
    assert r.ready
    assert "clients go to the master" in r.checks["targets"]["reason"]
    down = replace(up, error="HTTP 500")
    r = readiness(replace(empty, master=down), now=NOW, max_lag=MAX_LAG, poll_interval=300.0,
                  store_error=None)  # fmt: skip
    assert not r.ready
    assert "HTTP 500" in r.checks["targets"]["reason"]


# --- over HTTP -------------------------------------------------------------------------------


async def test_mirrors_json_and_content_negotiation(aiohttp_client: ClientFactory) -> None:
    store = MemoryStore()
    await fill(store)
    client = await aiohttp_client(
        create_app(STATUS.config(), poll=False, store=store, use_geo_settings=False)
    )
    resp = await client.get("/mirrors.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    doc = await resp.json()
    validate(doc)
    assert {m["name"]: m["state"] for m in doc["mirrors"]} == EXPECTED

    resp = await client.get("/mirrors", headers={"Accept": "application/json"})
    assert resp.content_type == "application/json"
    assert "Accept" in resp.headers["Vary"]
    validate(await resp.json())

    resp = await client.get("/mirrors", headers={"Accept": "text/html,*/*;q=0.8"})
    assert resp.content_type == "text/html"
    assert "<title>SME Server mirrors: status</title>" in await resp.text()

    resp = await client.get("/schema/mirrors-v1.json")
    assert resp.status == 200
    assert json.loads(await resp.text()) == json.loads(SCHEMA_FILE.read_text())
    assert doc["schema"] == "/schema/mirrors-v1.json"


async def test_status_page_sections_hook(aiohttp_client: ClientFactory) -> None:
    app = create_app(STATUS.config(), poll=False, use_geo_settings=False)

    async def extra() -> Section:
        return Section("extra", "Extra", "<ul><li>master</li></ul>")

    async def nothing() -> None:
        return None

    async def broken() -> Section:
        raise RuntimeError("a bug in a section")

    app[keys.STATUS_SECTIONS].extend([broken, nothing, extra])
    client = await aiohttp_client(app)
    resp = await client.get("/mirrors")
    assert resp.status == 200
    page = await resp.text()
    assert '<section class="card" id="extra"><h2>Extra</h2><ul><li>master</li></ul>' in page
    assert page.index('id="downloads"') < page.index('id="extra"')
    assert "a bug in a section" not in page


async def test_health_ready_over_http(aiohttp_client: ClientFactory) -> None:
    store = MemoryStore()
    client = await aiohttp_client(
        create_app(STATUS.config(), poll=False, store=store, use_geo_settings=False)
    )
    resp = await client.get("/health/ready")
    assert resp.status == 503  # no poller pass recorded yet
    body = await resp.json()
    assert body["status"] == "not ready"
    assert body["checks"]["poller"]["reason"] == "no poller pass recorded yet"

    await fill(store)
    app = client.app
    assert app is not None
    await app[keys.HOLDER].refresh(app[keys.STORE])
    resp = await client.get("/health/ready")
    assert resp.status == 200
    body = await resp.json()
    assert body == {
        "status": "ready",
        "ready": True,
        "checks": {
            "store": {"ok": True, "reason": "reachable"},
            "poller": {"ok": True, "reason": body["checks"]["poller"]["reason"],
                       "age_seconds": body["checks"]["poller"]["age_seconds"]},
            "targets": {"ok": True, "reason": "3 fresh mirrors", "fresh": 3},
        },
    }  # fmt: skip
    # Liveness stays as it was.
    assert (await client.get("/health")).status == 200


async def test_health_ready_degraded_while_redis_is_down(
    aiohttp_client: ClientFactory, redis_server: RedisServer, redis_url: str
) -> None:
    writer = RedisStore(redis_url)
    await fill(writer)
    await writer.close()
    client = await aiohttp_client(
        create_app(
            STATUS.config(extra=f'redis_url = "{redis_url}"'), poll=False, use_geo_settings=False
        )
    )
    assert (await client.get("/health/ready")).status == 200
    with redis_server.stopped():
        resp = await client.get("/health/ready")
        body = await resp.json()
        assert resp.status == 200  # the last snapshot still serves
        assert body["status"] == "degraded"
        assert body["checks"]["store"]["ok"] is False
        assert body["checks"]["store"]["reason"].startswith("unreachable: redis ping")
        # The page says so too, and still shows the last state.
        deadline = time.monotonic() + 10
        while True:
            doc = await (await client.get("/mirrors.json")).json()
            if not doc["store"]["ok"]:
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        validate(doc)
        assert {m["name"]: m["state"] for m in doc["mirrors"]} == EXPECTED


# --- history, order, header and GeoIP on the page ------------------------------------------


async def history_report(**kw: Any) -> Any:
    """The known snapshot with two passes of history in a MemoryStore: contribs-fr went
    down an hour ago after being up, ibiblio came back after 20 minutes."""
    store = MemoryStore()
    await fill(store, NOW)
    data = await store.load()
    master = data.master
    assert master is not None
    up = [replace(s, status=Status.UP, error=None) for s in data.states.values()]
    await record_pass(store, up, None, master, NOW - 3 * 86400)
    await record_pass(store, list(data.states.values()), master, master, NOW - 3600)
    back = replace(data.states["ibiblio"], status=Status.DOWN, error="timed out")
    await record_pass(store, [back], master, master, NOW - 1800)
    await record_pass(store, [data.states["ibiblio"]], master, master, NOW - 600)
    snap = snapshot_of(data)
    defaults: dict[str, Any] = {
        "now": NOW, "max_lag": MAX_LAG, "poll_interval": 300.0,
        "master_url": "http://127.0.0.1:9/master/", "store_kind": "memory",
        "store_error": None, "past": await store.load_history(),
    }  # fmt: skip
    defaults.update(kw)
    return build(snap, summarize({}, NOW), **defaults)


async def test_rows_come_problems_first_config_order_within_a_state() -> None:
    rep = await history_report()
    assert [r.name for r in rep.mirrors] == [
        "contribs-fr", "pacific", "pialasse", "voxteneo", "opencare", "nluug", "mirrorservice",
        "ibiblio", "is-co-za",
    ]  # fmt: skip
    page = render_html(rep)
    assert page.index('id="mirror-contribs-fr"') < page.index('id="mirror-nluug"')
    assert [m["name"] for m in to_json(rep)["mirrors"]][:2] == ["contribs-fr", "pacific"]


async def test_history_in_the_json() -> None:
    doc = to_json(await history_report())
    validate(doc)
    by = {m["name"]: m for m in doc["mirrors"]}
    fr = by["contribs-fr"]
    assert fr["down_since"] == "2026-09-21T13:13:20Z"  # NOW - 3600
    assert len(fr["days"]) == 14
    assert fr["days"][-1]["up"] is not None
    assert fr["days"][0]["up"] is None  # 14 days ago nothing was known
    assert fr["availability"]["24h"] == pytest.approx(1 - 3600 / 86400, abs=1e-4)
    assert by["nluug"]["availability"] == {"24h": 1.0, "7d": 1.0, "30d": 1.0}
    assert by["nluug"]["down_since"] is None
    assert by["voxteneo"]["availability"] == {"24h": None, "7d": None, "30d": None}
    kinds = [(e["kind"], e["subject"]) for e in doc["events"]]
    assert kinds[0] == ("mirror-up", "ibiblio")  # newest first
    assert doc["events"][0]["duration_seconds"] == 1200
    assert ("mirror-down", "contribs-fr") in kinds
    assert ("mirror-down", "pacific") in kinds
    assert doc["history_error"] is None


async def test_history_on_the_page() -> None:
    page = render_html(await history_report())
    row = page[page.index('<tr id="mirror-contribs-fr"') :]
    row = row[: row.index("</tr>")]
    assert 'class="down-since">out of service since <time datetime="2026-09-21T13:13:20Z">' in row
    assert row.count('<rect class="day') == 14
    assert 'data-label="Last 14 days"' in row
    nluug = page[page.index('<tr id="mirror-nluug"') :]
    assert "down-since" not in nluug[: nluug.index("</tr>")]
    events = page[page.index('<section id="events">') :]
    assert '<span class="ev ev-mirror-up">up</span></td><td>ibiblio</td>' in events
    assert "back in service after 20m00s" in events
    assert "cannot connect: refused" in events
    # What a mirror said is text here too, never markup.
    assert "broken: not a trace: &lt;html&gt; &lt;b&gt;404&lt;/b&gt;" in events
    assert "<b>404" not in page


async def test_a_lag_sparkline_from_the_samples() -> None:
    store = MemoryStore()
    await fill(store, NOW)
    data = await store.load()
    assert data.master is not None
    for k in range(5):
        s = replace(data.states["pialasse"], behind_since=NOW - 9 * 3600 - 300 * (4 - k))
        await record_pass(store, [s], data.master, data.master, NOW - 300 * (4 - k))
    rep = build(snapshot_of(data), summarize({}, NOW), now=NOW, max_lag=MAX_LAG,
                poll_interval=300.0, master_url="http://m/", store_kind="memory",
                store_error=None, past=await store.load_history())  # fmt: skip
    page = render_html(rep)
    row = page[page.index('<tr id="mirror-pialasse"') :]
    row = row[: row.index("</tr>")]
    assert '<svg class="spark"' in row
    assert "lag over the last 5 passes" in row


async def test_the_header_names_the_host_served_not_a_fixed_one() -> None:
    page = render_html(await history_report(site="mirrors.example.net"))
    header = page[page.index("<header>") : page.index("</header>")]
    assert "mirrors.example.net" in header
    assert "mirror.contribs.org" not in header


async def test_geo_notes_and_credit_on_the_page_and_in_the_json() -> None:
    credit = "IP Geolocation by DB-IP (https://db-ip.com), CC BY 4.0"
    rep = await history_report(geo_notes=["the GeoIP database <x> is old"], geo_credit=credit)
    page = render_html(rep)
    assert '<p class="warn geo">the GeoIP database &lt;x&gt; is old</p>' in page
    assert f"<span class='geo-credit'>{credit}</span>" in page
    doc = to_json(rep)
    validate(doc)
    assert doc["geoip"] == {"notes": ["the GeoIP database <x> is old"], "credit": credit}


async def test_a_file_store_report_matches_the_schema() -> None:
    validate(to_json(await history_report(store_kind="file")))


async def test_an_unreadable_history_entry_is_dropped_not_a_5xx(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    store = FileStore(tmp_path)
    await fill(store)
    # A damaged history entry, as a bad write or an older incompatible writer would leave.
    path = tmp_path / "state.json"
    head, body = path.read_text().split("\n", 1)
    doc = json.loads(body)
    doc["history"] = {"nluug": json.dumps({"v": 9, "name": "nluug"})}
    path.write_text(head + "\n" + json.dumps(doc))
    client = await aiohttp_client(
        create_app(STATUS.config(), poll=False, store=store, use_geo_settings=False)
    )
    resp = await client.get("/mirrors", headers={"Host": "127.0.0.1:8080"})
    assert resp.status == 200
    page = await resp.text()
    assert "127.0.0.1:8080 · state as of" in page
    got = await (await client.get("/mirrors.json")).json()
    validate(got)
    # The bad entry is dropped alone (and counted as poisoned); the others' history stands.
    assert got["history_error"] is None
    assert (await store.load_history()).mirrors.get("nluug") is None
