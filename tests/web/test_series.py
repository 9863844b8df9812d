"""The series an operator needs: whole requests, file checks, yum and dnf lists, build, GeoIP,
repodata verdicts, and the poll process's own /metrics port."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import platform
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from redirector.cli.poll import poll_command
from redirector.config.settings import parse_settings
from redirector.core.models import RepoCheck, RepodataState, RepomdHistory
from redirector.geo import GeoReader
from redirector.store.memory import MemoryStore
from redirector.web.app import create_app
from redirector.web.metrics import VERSION, client_of, handler_of
from tests.conftest import free_port
from tests.farm import Farm, error_500
from tests.support.world import NL_CLIENT, STATUS, fill, near_far

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]
Client = TestClient[web.Request, web.Application]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

ISO = "releases/10/iso/x86_64/smeserver-10.0-x86_64.iso"
REPOMD = "releases/10/smeos/x86_64/repodata/repomd.xml"


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


async def scrape(client: Client) -> Samples:
    return parse(await (await client.get("/metrics")).text())


def get(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_whole_requests_file_checks_build_and_geoip(
    aiohttp_client: ClientFactory, farm: Farm, geo: GeoReader
) -> None:
    now = time.time()
    for name in ("master", "near", "far"):
        farm.set_trace(name, now - 3600)
    settings = parse_settings(near_far(farm), "series.toml")
    client = await aiohttp_client(create_app(settings, geo=geo))
    deadline = time.monotonic() + 10
    while json.loads(await (await client.get("/health")).text())["mirrors"]["fresh"] != 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)

    async def location(path: str) -> str:
        resp = await client.get(
            "/smeserver/" + path, headers={"X-Forwarded-For": NL_CLIENT}, allow_redirects=False
        )
        assert resp.status == 302
        return resp.headers["Location"]

    farm.put("far", ISO, b"iso")
    farm.put("near", "contribs/x.rpm", b"rpm")
    assert await location(ISO) == farm.url("far") + ISO  # near lacks it: the next mirror
    tarball = "contribs/nobody/has-it.tar.gz"
    assert await location(tarball) == farm.url("master") + tarball  # nobody has it
    assert await location("contribs/x.rpm") == farm.url("near") + "contribs/x.rpm"  # one HEAD
    assert await location("contribs/x.rpm") == farm.url("near") + "contribs/x.rpm"  # cached
    assert await location(REPOMD) == farm.url("near") + REPOMD  # repodata: never checked

    s = await scrape(client)
    checks = {o: get(s, "redirector_file_checks_total", outcome=o) for o in
              ("cached", "head", "next_mirror", "master")}  # fmt: skip
    assert checks == {"cached": 1.0, "head": 1.0, "next_mirror": 1.0, "master": 1.0}
    # The whole request, file check included, by handler; and its status class.
    assert get(s, "redirector_request_duration_seconds_count", handler="redirect") == 5
    assert get(s, "redirector_requests_total", handler="redirect", code="3xx") == 5
    assert (get(s, "redirector_request_duration_seconds_count", handler="health") or 0) >= 1
    assert get(s, "redirector_build_info", version=VERSION, python=platform.python_version()) == 1
    assert get(s, "redirector_geoip_build_timestamp_seconds") == geo.build_epoch
    assert get(s, "redirector_poll_interval_seconds") == 1.0
    assert get(s, "redirector_poller_silent") == 0.0
    # This process polls: its pass series are there.
    assert (get(s, "redirector_poller_pass_seconds_count") or 0) >= 1


async def test_yum_and_dnf_lists_and_refusals_counted(aiohttp_client: ClientFactory) -> None:
    store = MemoryStore()
    await fill(store)
    client = await aiohttp_client(
        create_app(STATUS.config(), poll=False, store=store, use_geo_settings=False)
    )
    yum = {"User-Agent": "urlgrabber/3.10 yum/3.4.3"}
    dnf = {"User-Agent": "libdnf (Koozali SME Server 11; generic; Linux.x86_64)"}
    assert (await client.get("/mirrorlist?repo=smeos-10&arch=x86_64", headers=yum)).status == 200
    assert (await client.get("/mirrorlist/smeos-10", headers=yum)).status == 200
    # No master repomd.xml is known here: the metalink is a 404 (never one without hashes).
    assert (await client.get("/metalink?repo=smeos-10&arch=x86_64", headers=dnf)).status == 404
    assert (await client.get("/metalink", headers=dnf)).status == 400  # no repo: not a list
    assert (await client.post("/smeserver/x")).status == 405
    s = await scrape(client)
    assert get(s, "redirector_list_requests_total", kind="mirrorlist", client="yum") == 2
    assert get(s, "redirector_list_requests_total", kind="metalink", client="dnf") == 1
    assert get(s, "redirector_requests_total", handler="metalink", code="4xx") == 2
    assert get(s, "redirector_refused_total", reason="method") == 1
    assert get(s, "redirector_redirects_total", outcome="4xx", mirror="") is None


def test_labels_stay_few() -> None:
    assert handler_of("/smeserver/releases/10/x") == "redirect"
    assert handler_of("/pub/smeserver") == "redirect"
    assert handler_of("/mirrorlists/smeos") == "mirrorlist"
    assert handler_of("/metalink") == "metalink"
    assert handler_of("/mirrors.json") == "status"
    assert handler_of("/health/ready") == "health"
    assert handler_of("/wp-login.php") == "other"
    assert client_of("libdnf (Fedora 39)") == "dnf"
    assert client_of("urlgrabber/3.10 yum/3.4.3") == "yum"
    assert client_of(None) == "other"


async def test_repodata_verdicts_per_mirror_and_repo(aiohttp_client: ClientFactory) -> None:
    store = MemoryStore()
    now = await fill(store)
    d = "releases/10/smeos/x86_64"
    await store.put_repodata(
        RepodataState(
            repos={d: RepomdHistory((), now - 60)},
            mirrors={"nluug": {d: RepoCheck.CURRENT}, "pialasse": {d: RepoCheck.MISMATCHED}},
            checked_at=now - 60,
        )
    )
    client = await aiohttp_client(
        create_app(STATUS.config(), poll=False, store=store, use_geo_settings=False)
    )
    s = await scrape(client)
    verdict = "redirector_repodata_verdict"
    assert get(s, verdict, mirror="nluug", repo=d, verdict="current") == 1
    assert get(s, verdict, mirror="pialasse", repo=d, verdict="mismatched") == 1
    assert get(s, "redirector_repodata_last_check_timestamp_seconds") == now - 60


async def test_the_poll_process_serves_its_own_metrics(farm: Farm, tmp_path: Path) -> None:
    now = time.time()
    farm.set_trace("master", now - 3600)
    farm.set_trace("near", now - 3600)
    farm.behaviours["far"] = error_500
    port = free_port()
    settings = parse_settings(
        near_far(farm, f'poller_metrics_listen = "127.0.0.1:{port}"\ngeoip_db = ""'),
        "poll.toml",
    )
    err = (tmp_path / "err.txt").open("w")
    task = asyncio.create_task(poll_command(settings, once=False, err=err))
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 20
            while True:
                assert not task.done(), task
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url) as resp:
                        s = parse(await resp.text())
                    if (get(s, "redirector_poller_pass_seconds_count") or 0) >= 1:
                        break
                assert time.monotonic() < deadline, "no pass counted on the poller's port"
                await asyncio.sleep(0.1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        err.close()
    assert (get(s, "redirector_poller_errors_total", target="far") or 0) >= 1
    assert get(s, "redirector_poller_errors_total", target="near") is None
    assert get(s, "redirector_mirror_state", mirror="near", state="fresh") == 1
    assert get(s, "redirector_config_reload_success") == 1
    said = (tmp_path / "err.txt").read_text()
    assert f"poller metrics on http://127.0.0.1:{port}/metrics" in said


async def test_a_taken_metrics_port_is_a_clear_error(farm: Farm, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = parse_settings(
            near_far(farm, f'poller_metrics_listen = "127.0.0.1:{port}"\ngeoip_db = ""'),
            "poll.toml",
        )
        err = io.StringIO()
        assert await poll_command(settings, once=False, err=err) == 1
    assert err.getvalue().startswith(f"poller_metrics_listen 127.0.0.1:{port}: cannot listen: ")
