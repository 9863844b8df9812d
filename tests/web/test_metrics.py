"""/metrics: a scrape parsed with prometheus-client's parser, and counts summed across workers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from redirector.config.settings import parse_settings
from redirector.store.memory import MemoryStore
from redirector.store.redis import RedisStore
from redirector.web.app import create_app
from redirector.web.metrics import Metrics
from tests.conftest import RedisServer, free_port
from tests.farm import Farm, error_500, raw_get, status_of
from tests.support.world import EXPECTED, NL_CLIENT, REPOMD, STATUS, fill, geo

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]
Client = TestClient[web.Request, web.Application]
Families = dict[str, tuple[str, list[Sample]]]  # name -> (type, samples)


def parse(text: str) -> Families:
    return {f.name: (f.type, list(f.samples)) for f in text_string_to_metric_families(text)}


async def scrape(client: Client, accept: str | None = None) -> Families:
    resp = await client.get("/metrics", headers={"Accept": accept} if accept else {})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    return parse(await resp.text())


def value(fams: Families, name: str, sample: str | None = None, **labels: str) -> float:
    """The one sample of family `name` (sample name `sample`) with these labels."""
    found = [
        s.value
        for s in fams[name][1]
        if (sample is None or s.name == sample)
        and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, fams[name][1])
    return found[0]


async def test_scrape_families_and_labels(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    store = MemoryStore()
    now = await fill(store)
    client = await aiohttp_client(
        create_app(STATUS.config(), poll=False, store=store, geo=geo(tmp_path))
    )
    for _ in range(3):
        resp = await client.get(
            f"/smeserver/{REPOMD}", headers={"X-Forwarded-For": NL_CLIENT}, allow_redirects=False
        )
        assert resp.status == 302
    await client.post("/smeserver/x")  # 405
    assert client.server.port is not None
    assert status_of(await raw_get(client.server.port, "/smeserver/%2e%2e/x")) == 400

    fams = await scrape(client)
    expected_types = {
        "redirector_redirects": "counter",
        "redirector_decision_seconds": "histogram",
        "redirector_store_errors": "counter",
        "redirector_mirror_up": "gauge",
        "redirector_mirror_lag_seconds": "gauge",
        "redirector_mirror_last_check_timestamp_seconds": "gauge",
        "redirector_mirror_last_sync_timestamp_seconds": "gauge",
        "redirector_mirror_failures": "gauge",
        "redirector_mirror_state": "gauge",
        "redirector_mirrors": "gauge",
        "redirector_master_up": "gauge",
        "redirector_master_last_check_timestamp_seconds": "gauge",
        "redirector_master_changed_timestamp_seconds": "gauge",
        "redirector_store_up": "gauge",
    }
    assert {n: fams[n][0] for n in expected_types} == expected_types
    # A web node that does not poll exports no poller series: zeros would read as a poller
    # with no errors (the poll process serves them on its own port: tests/web/test_series.py).
    assert "redirector_poller_pass_seconds" not in fams
    assert "redirector_poller_errors" not in fams

    # Redirects by outcome and mirror: the NL client goes to one of the fresh European mirrors.
    redirects = {(s.labels["outcome"], s.labels["mirror"]): s.value
                 for s in fams["redirector_redirects"][1] if s.name.endswith("_total")}  # fmt: skip
    assert redirects[("master", "")] == 0
    # Refusals are not redirects: they have their own series, by reason.
    assert ("4xx", "") not in redirects
    refused = {s.labels["reason"]: s.value
               for s in fams["redirector_refused"][1] if s.name.endswith("_total")}  # fmt: skip
    assert refused == {"bad_path": 1, "method": 1}
    to_mirrors = {m: v for (o, m), v in redirects.items() if o == "mirror" and v}
    assert sum(to_mirrors.values()) == 3
    assert set(to_mirrors) <= {"nluug", "mirrorservice"}
    # Every configured mirror has its series from the start, at zero.
    assert {m for (o, m) in redirects if o == "mirror"} == set(EXPECTED)
    assert value(fams, "redirector_decision_seconds", "redirector_decision_seconds_count") == 3
    buckets = [s for s in fams["redirector_decision_seconds"][1] if s.name.endswith("_bucket")]
    assert buckets[-1].labels["le"] == "+Inf"

    # Per-mirror state, one-hot, and the gauges the snapshot gives.
    for name, state in EXPECTED.items():
        assert value(fams, "redirector_mirror_state", mirror=name, state=state) == 1.0
        ones = [s for s in fams["redirector_mirror_state"][1]
                if s.labels["mirror"] == name and s.value == 1.0]  # fmt: skip
        assert len(ones) == 1
    assert value(fams, "redirector_mirror_up", mirror="nluug") == 1.0
    assert value(fams, "redirector_mirror_up", mirror="opencare") == 1.0  # syncing answers
    assert value(fams, "redirector_mirror_up", mirror="contribs-fr") == 0.0
    assert value(fams, "redirector_mirror_up", mirror="voxteneo") == 0.0
    assert value(fams, "redirector_mirror_lag_seconds", mirror="nluug") == 0.0
    assert (
        9 * 3600 <= value(fams, "redirector_mirror_lag_seconds", mirror="pialasse") < 9 * 3600 + 60
    )
    assert (
        value(fams, "redirector_mirror_last_check_timestamp_seconds", mirror="nluug") == now - 120
    )
    assert value(fams, "redirector_mirror_failures", mirror="contribs-fr") == 4
    # Never checked: no lag, no last check (absent, not a made-up zero).
    assert not [s for s in fams["redirector_mirror_last_check_timestamp_seconds"][1]
                if s.labels["mirror"] == "voxteneo"]  # fmt: skip
    assert value(fams, "redirector_mirrors", state="fresh") == 3
    assert value(fams, "redirector_master_up") == 1.0
    assert value(fams, "redirector_master_changed_timestamp_seconds") == now - 7100
    assert value(fams, "redirector_store_up") == 1.0


async def test_openmetrics_on_request(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(create_app(STATUS.config(), poll=False, use_geo_settings=False))
    resp = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await resp.text()).endswith("# EOF\n")


async def test_poller_pass_and_probe_failures(aiohttp_client: ClientFactory, farm: Farm) -> None:
    now = time.time()
    farm.set_trace("master", now - 3600)
    farm.set_trace("good", now - 3600)
    farm.behaviours["bad"] = error_500
    settings = parse_settings(
        f"""
[redirector]
master = "{farm.url("master")}"
poll_interval = "1s"
probe_timeout = "2s"

[[mirror]]
name = "good"
http = "{farm.url("good")}"
country = "NL"
latitude = 52.0
longitude = 5.0

[[mirror]]
name = "bad"
http = "{farm.url("bad")}"
country = "NL"
latitude = 52.0
longitude = 5.0
""",
        "poll.toml",
    )
    client = await aiohttp_client(create_app(settings, use_geo_settings=False))
    deadline = time.monotonic() + 20
    while True:
        fams = await scrape(client)
        passes = value(
            fams, "redirector_poller_pass_seconds", "redirector_poller_pass_seconds_count"
        )
        if passes >= 1:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert (
        value(fams, "redirector_poller_errors", "redirector_poller_errors_total", target="bad") >= 1
    )
    assert not [s for s in fams["redirector_poller_errors"][1] if s.labels.get("target") == "good"]
    assert value(fams, "redirector_mirror_state", mirror="good", state="fresh") == 1.0
    assert value(fams, "redirector_mirror_state", mirror="bad", state="down") == 1.0


async def test_store_errors_are_counted(
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
    fams = await scrape(client)
    assert not fams["redirector_store_errors"][1]
    with redis_server.stopped():
        deadline = time.monotonic() + 10
        while True:
            fams = await scrape(client)
            errors = {s.labels["op"]: s.value for s in fams["redirector_store_errors"][1]
                      if s.name.endswith("_total")}  # fmt: skip
            if errors.get("generation", 0) >= 1 and value(fams, "redirector_store_up") == 0:
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    # The state it last read is still reported while the store is away.
    assert value(fams, "redirector_mirror_state", mirror="nluug", state="fresh") == 1.0


def test_multiprocess_mode_needs_the_variable_before_import(tmp_path: Path) -> None:
    # This process imported prometheus_client without PROMETHEUS_MULTIPROC_DIR.
    with pytest.raises(RuntimeError, match="PROMETHEUS_MULTIPROC_DIR"):
        Metrics(multiproc=str(tmp_path))


# --- several worker processes ----------------------------------------------------------------


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})  # noqa: S310  # loopback only
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def start_server(cfg: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "redirector.cli", "serve", "--config", str(cfg),
         "--listen", f"127.0.0.1:{port}", "--no-poll"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            if http_get(f"http://127.0.0.1:{port}/health")[0] in (200, 503):
                return proc
        except OSError:
            pass
        assert proc.poll() is None, "the server exited"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)


@pytest.fixture
def workers(
    tmp_path: Path, redis_url: str
) -> Iterator[tuple[list[int], list[subprocess.Popen[bytes]]]]:
    async def prepare() -> None:
        store = RedisStore(redis_url)
        try:
            await fill(store)
        finally:
            await store.close()

    asyncio.run(prepare())
    cfg = tmp_path / "workers.toml"
    cfg.write_text(STATUS.config_text(extra=f'redis_url = "{redis_url}"\ngeoip_db = ""'))
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    ports = [free_port(), free_port()]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            procs.append(start_server(cfg, port, env))
        yield ports, procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)


def redirect_total(text: str) -> float:
    fams = parse(text)
    return sum(
        s.value for s in fams["redirector_redirects"][1]
        if s.name.endswith("_total") and s.labels["outcome"] == "mirror"
    )  # fmt: skip


def test_counts_add_up_across_worker_processes(
    workers: tuple[list[int], list[subprocess.Popen[bytes]]],
) -> None:
    (a, b), procs = workers
    for port, n in ((a, 3), (b, 5)):
        for _ in range(n):
            status, _ = http_get(
                f"http://127.0.0.1:{port}/smeserver/{REPOMD}", {"X-Forwarded-For": NL_CLIENT}
            )
            assert status == 302
    for port in (a, b):
        # Each worker adds its counts to the shared files within a second (Metrics.fold).
        deadline = time.monotonic() + 5
        while True:
            status, text = http_get(f"http://127.0.0.1:{port}/metrics")
            assert status == 200
            if redirect_total(text) == 8 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert redirect_total(text) == 8  # both workers' redirects, whichever answers
        fams = parse(text)
        assert value(fams, "redirector_decision_seconds", "redirector_decision_seconds_count") == 8
        # State gauges come from the shared snapshot: reported once, not once per worker.
        assert value(fams, "redirector_mirror_state", mirror="nluug", state="fresh") == 1.0
    # A worker that stopped still counts: its counters stay in the directory.
    procs[0].send_signal(signal.SIGINT)
    procs[0].wait(10)
    status, text = http_get(f"http://127.0.0.1:{b}/metrics")
    assert redirect_total(text) == 8


async def test_poisoned_store_values_are_counted_by_key(
    aiohttp_client: ClientFactory, redis_url: str
) -> None:
    writer = RedisStore(redis_url)
    await fill(writer)
    await writer.close()
    client = await aiohttp_client(
        create_app(
            STATUS.config(extra=f'redis_url = "{redis_url}"'), poll=False, use_geo_settings=False
        )
    )
    fams = await scrape(client)
    assert not fams["redirector_store_poisoned"][1]
    raw = redis.Redis.from_url(redis_url)
    try:
        raw.hset("redirector:states", "junk", "{")
        raw.incr("redirector:gen")  # readers load again
    finally:
        raw.close()
    deadline = time.monotonic() + 5
    while not fams["redirector_store_poisoned"][1]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
        fams = await scrape(client)
    assert value(fams, "redirector_store_poisoned", key="states") >= 1
    # the rest of the load was served: the mirror's state is still there
    assert value(fams, "redirector_mirror_state", mirror="nluug", state="fresh") == 1.0
