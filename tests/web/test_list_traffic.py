"""yum and dnf traffic is seen: lists and metalinks in /metrics, the download statistics,
/mirrors and /mirrors.json, and the access log with the client's country and the mirrors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from redirector.geo import GeoReader
from redirector.stats import Tally, batches, flush, summarize
from redirector.store.base import StoreError
from redirector.store.redis import RedisStore
from redirector.web import accesslog, keys
from redirector.web.app import create_app
from tests.conftest import free_port
from tests.support.world import NL_CLIENT, US_CLIENT
from tests.web.test_lists import config, seeded


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name
    }


async def test_lists_are_counted_and_logged(geo: GeoReader, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    settings = config(f'verify_files = false\naccess_log = "json"\naccess_log_path = "{log}"')
    store = await seeded(settings)
    app = create_app(settings, poll=False, store=store, geo=geo, use_geo_settings=False)
    runner = web.AppRunner(app, **accesslog.runner_kwargs(settings))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    nl = {"X-Forwarded-For": NL_CLIENT}
    try:
        async with aiohttp.ClientSession() as http:
            for target, headers, status in (
                ("/mirrorlist/smeos-10", nl, 200),
                ("/mirrorlist/smeos-10", nl, 200),
                ("/mirrorlist?repo=smeupdates-11&arch=x86_64", {"X-Forwarded-For": US_CLIENT}, 200),
                ("/metalink?repo=smeos-10&arch=x86_64", nl, 200),
                ("/metalink?repo=smeos-11&arch=x86_64", nl, 404),  # not covered: no hashes
            ):
                async with http.get(base + target, headers=headers) as resp:
                    assert resp.status == status, (target, await resp.text())
            async with http.head(base + "/mirrorlist/smeos-10", headers=nl) as resp:
                assert resp.status == 200  # a HEAD is no list a client will use: not a download
            async with http.get(base + "/metrics") as resp:
                metrics = await resp.text()
            await flush(app[keys.TALLY], app[keys.STORE], time.time())
            app[keys.STATS_READER].invalidate()
            async with http.get(base + "/mirrors.json") as resp:
                doc = await resp.json()
            async with http.get(base + "/mirrors") as resp:
                page = await resp.text()
    finally:
        await runner.cleanup()
        accesslog.close()

    lists = samples(metrics, "redirector_mirror_lists_total")
    key = (("kind", "mirrorlist"), ("repo", "smeos"), ("status", "200"), ("version", "10"))
    assert lists[key] == 3  # two GETs and the HEAD
    assert lists[(("kind", "metalink"), ("repo", "smeos"), ("status", "200"), ("version", "10"))]
    assert lists[(("kind", "metalink"), ("repo", "smeos"), ("status", "404"), ("version", "11"))]
    first = samples(metrics, "redirector_mirror_list_first_total")
    assert first[(("kind", "mirrorlist"), ("mirror", "nl"))] == 3
    assert samples(metrics, "redirector_mirror_list_mirrors_count")[()] == 5

    day = doc["lists"]["days"][0]
    assert doc["lists"]["hour"]["total"] == 5  # four GETs answered 200, one 404
    assert day["kinds"] == {"mirrorlist": 3, "metalink": 2}
    assert day["repos"] == {"smeos-10": 3, "smeupdates-11": 1, "smeos-11": 1}
    assert day["countries"] == {"NL": 4, "US": 1}
    assert day["first"]["nl"] == 3
    assert day["first"]["us"] == 1
    assert day["first"]["-"] == 1  # the 404 named nobody
    assert doc["downloads"]["day"]["total"] == 0  # lists are no downloads
    assert 'id="lists"' in page
    assert '<strong id="ml-hour">5</strong>' in page

    lines = [json.loads(line) for line in log.read_text().splitlines()]
    listed = [e for e in lines if e["path"].startswith(("/mirrorlist", "/metalink"))]
    assert len(listed) == 6
    assert listed[0]["country"] == "NL"
    assert listed[0]["client"] == NL_CLIENT
    assert listed[0]["mirror"] == "nl"
    assert listed[0]["listed"][0] == "nl"
    assert len(listed[0]["listed"]) == 4
    assert listed[0]["decision_us"] is not None
    assert listed[2]["country"] == "US"
    assert listed[4]["status"] == 404
    assert listed[4]["listed"] == []
    assert listed[4]["mirror"] is None


async def test_list_text_log_line(geo: GeoReader, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    settings = config(f'verify_files = false\naccess_log_path = "{log}"')
    app = create_app(
        settings, poll=False, store=await seeded(settings), geo=geo, use_geo_settings=False
    )
    runner = web.AppRunner(app, **accesslog.runner_kwargs(settings))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"http://127.0.0.1:{port}/mirrorlist/smeos-10",
                headers={"X-Forwarded-For": NL_CLIENT, "X-Forwarded-Proto": "https"},
            ) as resp,
        ):
            assert resp.status == 200
    finally:
        await runner.cleanup()
        accesslog.close()
    line = log.read_text().splitlines()[-1]
    # Like a redirect's: client, country, the scheme the client used, the mirror named first.
    assert f' {NL_CLIENT} NL https 127.0.0.1:{port} "GET /mirrorlist/smeos-10" 200 nl ' in line


def test_list_counts_in_the_buckets() -> None:
    tally = Tally()
    tally.count_list("mirrorlist", "smeos-10", "NL", "nl")
    tally.count_list("mirrorlist", "smeos-10", "NL", "nl")
    tally.count_list("metalink", "smeos-11", None, None)
    tally.count("nl", "NL", "releases/10/x.iso")
    assert tally.pending == 4
    now = 1_764_720_000.0
    raw = {c.bucket: dict(c.fields) for c in batches(tally.take(), now, tally.take_lists())}
    got = summarize(raw, now)
    assert (got.hour.total, got.hour.lists) == (1, 3)
    assert got.hour.listed_first == {"nl": 2, "-": 1}
    day = got.days[0]
    assert day.list_kinds == {"mirrorlist": 2, "metalink": 1}
    assert day.list_repos == {"smeos-10": 2, "smeos-11": 1}
    assert day.list_countries == {"NL": 2, "--": 1}
    assert day.countries == {"NL": 1}  # downloads' countries stay the downloads'


async def test_a_failed_flush_keeps_the_lists() -> None:
    # A Redis nobody listens at: the real failure of a real store.
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    tally = Tally()
    tally.count_list("mirrorlist", "smeos-10", "NL", "nl")
    try:
        with pytest.raises(StoreError):
            await flush(tally, store, time.time())
    finally:
        await store.close()
    assert tally.pending == 1
    assert tally.take_lists() == {("mirrorlist", "smeos-10", "NL", "nl"): 1}
