"""Nothing fails silently: a refused reload in every view, a silent poller degrades, never 503."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from redirector.config.settings import load_settings, parse_settings
from redirector.reload import ReloadOutcome
from redirector.store.redis import RedisStore
from redirector.web import keys
from redirector.web.app import create_app
from tests.farm import Farm
from tests.support.world import FRONT, fresh_store, replace_file
from tests.views.test_status import validate

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]
Client = TestClient[web.Request, web.Application]


async def json_of(client: Client, path: str) -> tuple[int, Any]:
    resp = await client.get(path)
    return resp.status, await resp.json()


async def samples(client: Client, name: str) -> list[tuple[dict[str, str], float]]:
    text = await (await client.get("/metrics")).text()
    return [
        (s.labels, s.value)
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name
    ]


async def test_a_refused_reload_shows_in_all_four_views(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    cfg = tmp_path / "mirrors.toml"
    cfg.write_text(FRONT.config_text(["nl"]))
    store = await fresh_store(["nl"])
    app = create_app(load_settings(cfg), poll=False, store=store, use_geo_settings=False)
    heard: list[ReloadOutcome] = []

    async def hook(outcome: ReloadOutcome) -> None:
        heard.append(outcome)

    app[keys.RELOAD_HOOKS].append(hook)
    client = await aiohttp_client(app)
    status, health = await json_of(client, "/health")
    assert (status, health["status"], health["config"]["ok"]) == (200, "ok", True)
    assert (await samples(client, "redirector_config_reload_success")) == [({}, 1.0)]

    broken = FRONT.config_text(["nl"]).replace("latitude = 52.37", "latitude = 152.37")
    replace_file(cfg, broken)
    reloader = app[keys.RELOADER]
    reloader.check()  # what the watcher does within a second; here at once
    assert reloader.refusal is not None

    # /health: degraded, with file, line and field.
    status, health = await json_of(client, "/health")
    assert (status, health["status"]) == (200, "degraded")
    refused = health["config"]["refused"]
    assert refused["file"] == str(cfg)
    assert broken.splitlines()[refused["line"] - 1].strip().startswith("latitude")
    assert refused["field"] == "mirror 'nl' field 'latitude'"
    assert refused["error"] == "152.37 is out of range -90..90"
    # /health/ready: still ready (the last good config serves), degraded with the reason.
    status, ready = await json_of(client, "/health/ready")
    assert (status, ready["status"], ready["ready"]) == (200, "degraded", True)
    assert ready["checks"]["config"]["ok"] is False
    assert str(cfg) in ready["checks"]["config"]["reason"]
    # /metrics: the gauge an alert fires on, and where the file is wrong.
    assert (await samples(client, "redirector_config_reload_success")) == [({}, 0.0)]
    [(labels, one)] = await samples(client, "redirector_config_refused")
    assert one == 1.0
    assert labels == {
        "file": str(cfg),
        "line": str(refused["line"]),
        "field": "mirror 'nl' field 'latitude'",
    }
    reloads = {s["result"]: v for s, v in await samples(client, "redirector_config_reloads_total")}
    assert reloads == {"applied": 0.0, "refused": 1.0}
    # /mirrors: said at the top of the page, in words.
    page = await (await client.get("/mirrors")).text()
    top = page[: page.index('<table class="mirrors">')]
    assert 'class="warn" role="alert">The config file was refused at its last reload' in top
    assert str(cfg) in top
    # /mirrors.json too, by its schema.
    doc = await (await client.get("/mirrors.json")).json()
    validate(doc)
    assert doc["config"]["ok"] is False
    assert {k: doc["config"]["refused"][k] for k in ("file", "line", "field")} == {
        "file": str(cfg),
        "line": refused["line"],
        "field": "mirror 'nl' field 'latitude'",
    }

    # A good file clears every view.
    replace_file(cfg, FRONT.config_text(["nl", "us"]))
    reloader.check()
    status, health = await json_of(client, "/health")
    assert (health["status"], health["config"]["refused"]) == ("ok", None)
    assert health["config"]["last_reload"]["ok"] is True
    status, ready = await json_of(client, "/health/ready")
    assert (status, ready["status"]) == (200, "ready")
    assert (await samples(client, "redirector_config_reload_success")) == [({}, 1.0)]
    assert (await samples(client, "redirector_config_refused")) == []
    assert 'role="alert"' not in await (await client.get("/mirrors")).text()
    doc = await (await client.get("/mirrors.json")).json()
    validate(doc)
    assert doc["config"] == {"ok": True, "refused": None}

    # The event log's hook heard both, in order.
    deadline = time.monotonic() + 5
    while len(heard) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert [(o.ok, o.field) for o in heard] == [
        (False, "mirror 'nl' field 'latitude'"),
        (True, None),
    ]


async def test_reload_news_is_told_once_per_host(
    aiohttp_client: ClientFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Two workers of one host: only the one that speaks logs the refusal above debug level.
    cfg = tmp_path / "mirrors.toml"
    cfg.write_text(FRONT.config_text(["nl"]))
    caplog.set_level(logging.DEBUG, logger="redirector")
    apps = []
    for speaks in (True, False):
        app = create_app(
            load_settings(cfg),
            poll=False,
            store=await fresh_store(["nl"]),
            use_geo_settings=False,
            speaks=speaks,
        )
        await aiohttp_client(app)
        apps.append(app)
    replace_file(cfg, "[redirector\n")
    for app in apps:
        app[keys.RELOADER].check()
    refusals = [r for r in caplog.records if "refused, keeping" in r.getMessage()]
    assert sorted(r.levelno for r in refusals) == [logging.DEBUG, logging.ERROR]


def poller_config(farm: Farm, redis_url: str) -> str:
    return f"""
[redirector]
master = "{farm.url("master")}"
poll_interval = "1s"
probe_timeout = "1s"
verify_files = false
geoip_db = ""
redis_url = "{redis_url}"
lease_ttl = "3s"

[[mirror]]
name = "a"
http = "{farm.url("a")}"
country = "NL"
latitude = 52.0
longitude = 5.0
"""


async def test_a_stopped_poller_leaves_every_web_node_ready(
    aiohttp_client: ClientFactory, farm: Farm, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="redirector.web.pages")
    now = time.time()
    farm.set_trace("master", now - 600)
    farm.set_trace("a", now - 600)
    settings = parse_settings(poller_config(farm, redis_url), "split.toml")
    poller = await aiohttp_client(create_app(settings, use_geo_settings=False))
    webs = [await aiohttp_client(create_app(settings, poll=False)) for _ in range(2)]

    async def fresh_everywhere() -> bool:
        for c in webs:
            status, body = await json_of(c, "/health/ready")
            if (status, body["status"]) != (200, "ready"):
                return False
        return True

    deadline = time.monotonic() + 15
    while not await fresh_everywhere():
        assert time.monotonic() < deadline, "the poller's state never reached the web nodes"
        await asyncio.sleep(0.1)

    await poller.close()  # the one poller stops
    stopped = time.monotonic()
    store = RedisStore(redis_url)
    try:
        last = (await store.load()).master
    finally:
        await store.close()
    assert last is not None
    # Past 3 poll intervals without a pass, every node says so and stays in the balancer.
    await asyncio.sleep(max(0.0, last.checked_at + 3 * 1.0 + 0.5 - time.time()))
    for c in webs:
        status, body = await json_of(c, "/health/ready")
        assert (status, body["status"], body["ready"]) == (200, "degraded", True), body
        poller_check = body["checks"]["poller"]
        assert poller_check["ok"] is False
        assert "the poller is silent, serving the last snapshot" in poller_check["reason"]
        assert body["checks"]["targets"] == {"ok": True, "reason": "1 fresh mirror", "fresh": 1}
        status, health = await json_of(c, "/health")
        assert health["poller"]["silent"] is True
        assert (await samples(c, "redirector_poller_silent")) == [({}, 1.0)]
        assert (await samples(c, "redirector_ready")) == [({}, 1.0)]
        assert (await samples(c, "redirector_degraded")) == [({}, 1.0)]
        # The web nodes export no poller series of their own to be mistaken for a quiet one.
        assert (await samples(c, "redirector_poller_pass_seconds_count")) == []
        resp = await c.get("/smeserver/releases/x", allow_redirects=False)
        assert resp.status == 302
        assert resp.headers["Location"].startswith(farm.url("a"))
    assert time.monotonic() - stopped < 15
    # And the journal hears it once from each node, not once a second.
    deadline = time.monotonic() + 5
    while True:
        quiet = [r for r in caplog.records if "no poller pass for" in r.getMessage()]
        if len(quiet) >= 2:
            break
        assert time.monotonic() < deadline, caplog.text
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.5)
    quiet = [r for r in caplog.records if "no poller pass for" in r.getMessage()]
    assert len(quiet) == 2
    assert all(r.levelno == logging.WARNING for r in quiet)
