"""Stored state you can trust: bad values dropped and repaired, failed reads harmless.

Each test is one reproduction from the issue, end to end with the real stores (a real
redis-server, a real state file) and real loopback mirrors: poisoned values that used to freeze
every reader, a read stall that turned into a cold start written back, dates far in the future,
wrong-type JSON that silently killed background tasks, a file store that could not be written
reported as ok.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient

from redirector.config.settings import Settings, parse_settings
from redirector.core.judge import FUTURE_SLACK
from redirector.core.models import MasterState, MasterVersion, MirrorState, Status
from redirector.poll.poller import poll_once
from redirector.poll.probe import open_session
from redirector.store.file import STATE_FILE, FileStore
from redirector.store.redis import RedisStore
from redirector.web import keys
from redirector.web.app import create_app
from tests.farm import MASTER_TRACE, Farm, error_500, trace_c

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]
Client = TestClient[web.Request, web.Application]

FILE = "/smeserver/releases/10/smeos/x86_64/Packages/a.rpm"
CLIENTS = [f"198.51.{i}.7" for i in range(16)]
HOUR, DAY = 3600.0, 86400.0
P = "redirector:"


def config(farm: Farm, extra: str = "", names: tuple[str, ...] = ("a", "b")) -> Settings:
    mirrors = "".join(
        f'[[mirror]]\nname = "{n}"\nhttp = "{farm.url(n)}"\ncountry = "NL"\n'
        f"latitude = 52.0\nlongitude = 5.0\n\n"
        for n in names
    )
    return parse_settings(
        f"""
[redirector]
master = "{farm.url("master")}"
poll_interval = "1s"
probe_timeout = "1s"
failures_before_down = 1
trusted_proxies = ["127.0.0.1/32"]
geoip_db = ""
verify_files = false
access_log = "off"
{extra}

{mirrors}""",
        "poison.toml",
    )


async def health(client: Client) -> dict[str, Any]:
    resp = await client.get("/health")
    body: dict[str, Any] = json.loads(await resp.text())
    return body


async def until(what: str, check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"not within {seconds:g} s: {what}"
        await asyncio.sleep(0.05)


async def fresh(client: Client, n: int) -> bool:
    return bool((await health(client))["mirrors"]["fresh"] == n)


async def locations(client: Client) -> set[str]:
    out = set()
    for ip in CLIENTS:
        resp = await client.get(FILE, headers={"X-Forwarded-For": ip}, allow_redirects=False)
        assert resp.status == 302, await resp.text()
        out.add(resp.headers["Location"])
    return out


def traces(farm: Farm, dates: dict[str, float]) -> None:
    for name, ts in dates.items():
        farm.set_trace(name, ts)


def history(*versions: tuple[float, float]) -> str:
    return json.dumps(
        {
            "v": 1,
            "history": [{"date": d, "first_seen": s} for d, s in versions],
            "checked_at": time.time(),
        }
    )


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


# --- a failed read is not a cold start -------------------------------------------------------


async def test_a_redis_stall_during_the_read_writes_nothing(
    farm: Farm, redis_url: str, raw: redis.Redis
) -> None:
    # A mirror 48.8 h behind, a failing mirror backed off; then one 1.9 s stall of Redis
    # while the poller reads. The pass used to run as a first start and write it: the mirror
    # became "58 min behind" and fresh, the failing one lost its failures and backoff.
    now = time.time()
    current = now - 58 * 60
    master = MasterState(
        (
            MasterVersion(now - 60 * HOUR, now - 60 * HOUR),
            MasterVersion(now - 48.8 * HOUR, now - 48.8 * HOUR),
            MasterVersion(current, current),
        ),
        now - 60,
    )
    behind = MirrorState("a", Status.UP, now - 60, now - 60 * HOUR, now - 48.8 * HOUR)
    failing = MirrorState("b", Status.DOWN, now - 60, error="HTTP 500", failures=5)
    failing_retry = now + 1800
    store = RedisStore(redis_url, timeout=1.0)
    await store.put_master(master)
    await store.put_states([behind, dataclasses.replace(failing, retry_at=failing_retry)])
    traces(farm, {"a": now - 60 * HOUR})
    farm.behaviours["b"] = error_500

    async def slow_master(request: web.Request, rest: str) -> web.StreamResponse:
        await asyncio.sleep(0.9)  # the pass reaches its write after the stall is over
        if rest == MASTER_TRACE:
            return web.Response(body=trace_c(current))
        return web.Response(status=404)

    farm.behaviours["master"] = slow_master
    settings = config(farm)
    raw.client_pause(1900, all=True)  # every client's commands wait, ours included
    try:
        async with open_session(settings.probe_timeout) as session:
            result = await poll_once(session, settings, store)
        data = await store.load()
        assert data.states["a"].behind_since == behind.behind_since  # still 48.8 h behind
        assert data.states["b"].failures == 5
        assert data.states["b"].retry_at == failing_retry
        assert data.master == master
        assert not result.written
    finally:
        await store.close()


# --- stored dates are range-checked ----------------------------------------------------------


async def test_a_master_dated_1e308_is_dropped_not_a_500(
    aiohttp_client: ClientFactory, farm: Farm, redis_url: str, raw: redis.Redis
) -> None:
    # /health, /mirrors and /mirrors.json answered 500 (OverflowError), and the poller wrote
    # the history back every pass.
    now = time.time()
    traces(farm, {"master": now - 600, "a": now - 600, "b": now - 600})
    # Ten views a second from loopback, past the views' budget: exempt, as monitoring.
    extra = f'redis_url = "{redis_url}"\nviews_exempt = ["127.0.0.1/32"]'
    client = await aiohttp_client(create_app(config(farm, extra)))
    await until("two fresh mirrors", lambda: fresh(client, 2))
    raw.set(P + "master", history((1e308, 1e308)))
    raw.incr(P + "gen")
    deadline = time.monotonic() + 3.0  # three passes
    while time.monotonic() < deadline:
        for path in ("/health", "/mirrors", "/mirrors.json"):
            resp = await client.get(path)
            assert resp.status == 200, (path, await resp.text())
        await asyncio.sleep(0.1)
    written = json.loads(raw.get(P + "master") or b"{}")
    assert all(v["first_seen"] <= time.time() + FUTURE_SLACK for v in written["history"])
    assert (await health(client))["poisoned"] == []


async def test_a_master_dated_2100_does_not_make_every_mirror_current(
    aiohttp_client: ClientFactory, farm: Farm, redis_url: str, raw: redis.Redis
) -> None:
    # Every mirror used to become "current", one 3 days behind included.
    now = time.time()
    current = now - HOUR
    seed = RedisStore(redis_url)
    await seed.put_master(
        MasterState(
            (
                MasterVersion(now - 4 * DAY, now - 4 * DAY),
                MasterVersion(now - 3 * DAY, now - 3 * DAY),
                MasterVersion(current, current),
            ),
            now - 60,
        )
    )
    await seed.close()
    traces(farm, {"master": current, "a": current, "b": now - 4 * DAY})
    client = await aiohttp_client(create_app(config(farm, f'redis_url = "{redis_url}"')))

    async def b_three_days_behind() -> bool:
        rows = {m["name"]: m for m in (await (await client.get("/mirrors.json")).json())["mirrors"]}
        lag = rows["b"]["lag_seconds"]
        return rows["a"]["state"] == "fresh" and lag is not None and lag > 2.9 * DAY

    await until("b three days behind", b_three_days_behind)
    raw.set(P + "master", history((4_102_444_800.0, 4_102_444_800.0)))
    raw.incr(P + "gen")
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        assert await b_three_days_behind()
        assert await locations(client) == {farm.url("a") + FILE.removeprefix("/smeserver/")}
        await asyncio.sleep(0.2)


# --- the file store: wrong-type JSON, a damaged file, a directory that takes no writes -------


async def test_wrong_type_states_in_the_file_stop_no_refresher(
    aiohttp_client: ClientFactory, farm: Farm, tmp_path: Path
) -> None:
    # `states: []` stopped a worker's snapshot refresher with no log line while /health said
    # ok: the worker served its last snapshot for ever.
    now = time.time()
    traces(farm, {"master": now - 600, "a": now - 600, "b": now - 600})
    settings = config(farm, 'lease_ttl = "900ms"')
    poller = await aiohttp_client(create_app(settings, store=FileStore(tmp_path)))
    reader = await aiohttp_client(create_app(settings, store=FileStore(tmp_path), poll=False))
    await until("two fresh mirrors", lambda: fresh(reader, 2))
    path = tmp_path / STATE_FILE
    head, body = path.read_text().split("\n", 1)
    doc = json.loads(body)
    doc["states"] = []
    gen = json.loads(head)["generation"] + 1
    path.write_text(json.dumps({"v": 1, "generation": gen}) + "\n" + json.dumps(doc))
    await asyncio.sleep(1.0)
    farm.behaviours["b"] = error_500
    await until("the reader sees b down", lambda: fresh(reader, 1))
    tasks = (await health(reader))["tasks"]
    assert all(t["ok"] and t["restarts"] == 0 for t in tasks.values()), tasks
    assert await fresh(poller, 1)


async def test_a_malformed_lease_entry_stops_no_lease_keeper(
    aiohttp_client: ClientFactory, farm: Farm, tmp_path: Path
) -> None:
    # A malformed lease entry stopped the lease keeper in both workers: nobody polled.
    now = time.time()
    traces(farm, {"master": now - 600, "a": now - 600, "b": now - 600})
    settings = config(farm, 'lease_ttl = "900ms"')
    clients = [
        await aiohttp_client(create_app(settings, store=FileStore(tmp_path))) for _ in range(2)
    ]
    await until("two fresh mirrors", lambda: fresh(clients[1], 2))
    path = tmp_path / STATE_FILE
    head, body = path.read_text().split("\n", 1)
    doc = json.loads(body)
    doc["leases"] = {"poller": "junk"}
    path.write_text(head + "\n" + json.dumps(doc))
    await asyncio.sleep(1.0)
    farm.behaviours["b"] = error_500
    for c in clients:
        await until("b seen down: somebody polls", lambda c=c: fresh(c, 1))  # type: ignore[misc]


async def test_a_worker_started_while_the_file_is_truncated_serves_mirrors(
    aiohttp_client: ClientFactory, farm: Farm, tmp_path: Path
) -> None:
    # A worker restarted while state.json was damaged had no state and served the master.
    now = time.time()
    traces(farm, {"master": now - 600, "a": now - 600, "b": now - 600})
    settings = config(farm)
    first = await aiohttp_client(create_app(settings, store=FileStore(tmp_path)))
    await until("two fresh mirrors", lambda: fresh(first, 2))
    await first.close()  # nobody left to repair the file
    path = tmp_path / STATE_FILE
    text = path.read_bytes()
    path.write_bytes(text[: len(text) // 2])
    late = await aiohttp_client(create_app(settings, store=FileStore(tmp_path), poll=False))
    mirrors = (farm.url("a"), farm.url("b"))
    assert all(loc.startswith(mirrors) for loc in await locations(late))
    assert (await health(late))["poisoned"] == ["file:body"]


async def test_a_file_store_that_takes_no_writes_is_not_ok(
    aiohttp_client: ClientFactory, farm: Farm, tmp_path: Path
) -> None:
    # /health reported a file store it could not write as ok (reads still worked).
    now = time.time()
    traces(farm, {"master": now - 600, "a": now - 600, "b": now - 600})
    directory = tmp_path / "state"
    directory.mkdir()
    client = await aiohttp_client(create_app(config(farm), store=FileStore(directory)))
    await until("two fresh mirrors", lambda: fresh(client, 2))
    assert (await health(client))["store"]["ok"]
    # Immutable: nothing can be created in it, by root either (permission bits would not do).
    chattr("+i", directory)
    try:

        async def not_ok() -> bool:
            body = await health(client)
            return not body["store"]["ok"] and body["status"] == "degraded"

        await until("the store reported unwritable", not_ok, seconds=8.0)
        assert "cannot write" in (await health(client))["store"]["error"]
    finally:
        chattr("-i", directory)
    await until("the store writable again", lambda: _store_ok(client), seconds=8.0)


def chattr(flag: str, path: Path) -> None:
    subprocess.run(["chattr", flag, str(path)], check=True)


async def _store_ok(client: Client) -> bool:
    return bool((await health(client))["store"]["ok"])


# --- background tasks are supervised ---------------------------------------------------------


async def test_a_crashing_background_task_is_restarted_and_shown(
    aiohttp_client: ClientFactory, farm: Farm
) -> None:
    now = time.time()
    traces(farm, {"master": now - 600, "a": now - 600, "b": now - 600})
    app = create_app(config(farm))
    client = await aiohttp_client(app)
    await until("two fresh mirrors", lambda: fresh(client, 2))
    runs = 0

    async def crashes() -> None:
        nonlocal runs
        runs += 1
        raise ValueError("too many values to unpack")

    app[keys.TASKS].start("extension", crashes)
    await until("restarted", lambda: _ran_twice(lambda: runs), seconds=5.0)
    body = await health(client)
    assert body["status"] == "degraded"
    task = body["tasks"]["extension"]
    assert task["ok"] is False
    assert task["restarts"] >= 1
    assert task["error"] == "ValueError: too many values to unpack"
    assert body["tasks"]["snapshot refresher"]["ok"] is True
    assert body["tasks"]["poller"]["ok"] is True
    await app[keys.TASKS].stop("extension")


async def _ran_twice(count: Callable[[], int]) -> bool:
    return count() >= 2
