"""Chaos: every store key, then the state file, poisoned in turn under load.

Two redirector apps share one store (Redis, then a file store, as two workers would), both
with the poller on, while paced clients ask for redirects. Each step writes junk into one key
(a junk value, a wrong Redis type, an implausible date, a lease nobody can take) and lasts
longer than `max_lag`: a reader that froze on its last readable snapshot would start sending
clients to the master within the step. Every redirect must stay on a mirror, and the store
must read clean again within one poller pass.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient

from redirector.config.settings import Settings, parse_settings
from redirector.store.base import Store, StoreError
from redirector.store.file import STATE_FILE, FileStore
from redirector.store.redis import RedisStore
from redirector.web import keys
from redirector.web.app import create_app
from tests.farm import Farm

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]

MAX_LAG = 3.0  # seconds; each step lasts longer, so a frozen snapshot shows within it
STEP = MAX_LAG + 0.5
REPAIR_WITHIN = 2.5  # one poll interval (1 s) for the pass under way, one more pass, slack
FILE = "/smeserver/releases/10/smeos/x86_64/Packages/a.rpm"
CLIENTS = [f"198.51.{i}.7" for i in range(16)]
P = "redirector:"


def config(farm: Farm, extra: str = "") -> Settings:
    mirrors = "".join(
        f'[[mirror]]\nname = "{n}"\nhttp = "{farm.url(n)}"\ncountry = "NL"\n'
        f"latitude = 52.0\nlongitude = 5.0\n\n"
        for n in ("a", "b")
    )
    return parse_settings(
        f"""
[redirector]
master = "{farm.url("master")}"
poll_interval = "1s"
probe_timeout = "1s"
lease_ttl = "900ms"
max_lag = "{MAX_LAG:g}s"
failures_before_down = 1
trusted_proxies = ["127.0.0.1/32"]
geoip_db = ""
verify_files = false
access_log = "off"
{extra}

{mirrors}""",
        "chaos.toml",
    )


@dataclass
class Load:
    """Paced redirects against every app until stopped; every Location is kept."""

    bases: Sequence[str]
    locations: list[tuple[float, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def __aenter__(self) -> Load:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._tasks = [
            asyncio.create_task(self._worker(base, w)) for base in self.bases for w in range(2)
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._session.close()

    async def _worker(self, base: str, seed: int) -> None:
        n = seed
        while not self._stop.is_set():
            client = CLIENTS[n % len(CLIENTS)]
            n += 1
            try:
                async with self._session.get(
                    base + FILE, headers={"X-Forwarded-For": client}, allow_redirects=False
                ) as resp:
                    await resp.read()
                    if resp.status != 302:
                        self.failures.append(f"HTTP {resp.status}")
                    self.locations.append((time.monotonic(), resp.headers.get("Location", "")))
            except (aiohttp.ClientError, TimeoutError) as e:
                self.failures.append(f"{type(e).__name__}: {e}")
            await asyncio.sleep(0.02)


async def start_pair(
    aiohttp_client: ClientFactory, settings: Settings, store: Callable[[], Store | None]
) -> tuple[list[web.Application], list[TestClient[web.Request, web.Application]]]:
    apps = [create_app(settings, store=store()), create_app(settings, store=store())]
    clients = [await aiohttp_client(app) for app in apps]
    return apps, clients


async def all_fresh(clients: Sequence[TestClient[web.Request, web.Application]]) -> None:
    deadline = time.monotonic() + 15
    while True:
        bodies = [json.loads(await (await c.get("/health")).text()) for c in clients]
        if all(b["mirrors"]["fresh"] == 2 for b in bodies):
            return
        assert time.monotonic() < deadline, bodies
        await asyncio.sleep(0.05)


async def repaired(
    read: Callable[[], Awaitable[bool]], since: float, what: str, took: dict[str, float]
) -> None:
    """Wait until `read` says the store is clean; how long that took goes to `took`."""
    while True:
        try:
            if await read():
                break
        except StoreError:
            pass  # unreadable as a whole: not repaired (yet)
        assert time.monotonic() - since < REPAIR_WITHIN, f"{what}: not repaired within one pass"
        await asyncio.sleep(0.05)
    took[what] = time.monotonic() - since


async def step(
    what: str,
    start: float,
    clean: Callable[[], Awaitable[bool]],
    load: Load,
    farm: Farm,
    took: dict[str, float],
) -> None:
    """One poisoned step: the answers stay on mirrors throughout, the store is repaired."""
    repair = asyncio.create_task(repaired(clean, start, what, took))
    await asyncio.sleep(max(0.0, start + STEP - time.monotonic()))
    assert not off_mirror(load, farm, start), f"{what}: clients sent off the mirrors"
    await repair


def off_mirror(load: Load, farm: Farm, since: float) -> list[str]:
    mirrors = (farm.url("a"), farm.url("b"))
    return [loc for at, loc in load.locations if at >= since and not loc.startswith(mirrors)]


def history(date: float) -> str:
    return json.dumps(
        {"v": 1, "history": [{"date": date, "first_seen": date}], "checked_at": time.time()}
    )


# (what, poison) for Redis: each gets the raw client; "gen" poisons leave the counter junk.
REDIS_POISONS: Sequence[tuple[str, Callable[[redis.Redis], object]]] = (
    ("states: a junk field", lambda r: r.hset(P + "states", "zz", "junk")),
    ("states: a mirror's entry junk", lambda r: r.hset(P + "states", "a", '{"v": 1}')),
    ("states: a string, not a hash", lambda r: (r.delete(P + "states"), r.set(P + "states", "x"))),
    ("master: junk", lambda r: r.set(P + "master", "{garbage")),
    ("master: dated 1e308", lambda r: r.set(P + "master", history(1e308))),
    ("master: dated 2100", lambda r: r.set(P + "master", history(4_102_444_800.0))),
    ("master: a list", lambda r: (r.delete(P + "master"), r.rpush(P + "master", "x"))),
    ("gen: not an integer", lambda r: r.set(P + "gen", "seven")),
    ("gen: a hash", lambda r: (r.delete(P + "gen"), r.hset(P + "gen", "x", "1"))),
    ("repodata: junk", lambda r: r.set(P + "repodata", "junk")),
    ("repomd: a junk field", lambda r: r.hset(P + "repomd", "releases/10/smeos/x86_64", "{")),
    (
        "lease: a hash",
        lambda r: (r.delete(P + "lease:poller"), r.hset(P + "lease:poller", "x", "y")),
    ),
    ("lease: held for ever by nobody", lambda r: r.set(P + "lease:poller", "stray")),
)


# Two halves, each a test of its own, so that each stays well within the per-test timeout.
HALVES = {"states-master": REDIS_POISONS[:7], "gen-repodata-lease": REDIS_POISONS[7:]}


@pytest.mark.parametrize("half", list(HALVES))
async def test_every_redis_key_poisoned_under_load(
    aiohttp_client: ClientFactory, farm: Farm, redis_url: str, half: str
) -> None:
    poisons = HALVES[half]
    now = time.time()
    for name in ("master", "a", "b"):
        farm.set_trace(name, now - 600)
    settings = config(farm, f'redis_url = "{redis_url}"')
    apps, clients = await start_pair(aiohttp_client, settings, lambda: None)
    await all_fresh(clients)
    raw = redis.Redis.from_url(redis_url)
    reader = RedisStore(redis_url)
    owners = set()
    for app in apps:
        lease = app[keys.LEASE]
        assert lease is not None
        owners.add(lease.owner)
    took: dict[str, float] = {}

    async def clean() -> bool:
        data = await reader.load()
        return not data.poisoned and await reader.lease_holder("poller") in owners

    try:
        async with Load([str(c.make_url("")) for c in clients]) as load:
            for what, poison in poisons:
                start = time.monotonic()
                poison(raw)
                if not what.startswith("gen"):
                    raw.incr(P + "gen")  # readers reload now, not at the next pass
                await step(what, start, clean, load, farm, took)
        assert not load.failures, load.failures[:5]
        assert len(load.locations) > 100 * len(poisons)
    finally:
        raw.close()
        await reader.close()
    print("repaired after (s):", {k: round(v, 2) for k, v in took.items()})


def section(key: str, value: object, entry: str | None = None) -> Callable[[str], str]:
    """A poison: one section of the document (or one `entry` in it) replaced by `value`,
    one generation on."""

    def poison(text: str) -> str:
        head, rest = text.split("\n", 1)
        doc = json.loads(rest)
        if entry is None:
            doc[key] = value
        else:
            doc[key][entry] = value
        generation = json.loads(head)["generation"] + 1
        return json.dumps({"v": 1, "generation": generation}) + "\n" + json.dumps(doc)

    return poison


# (what, new content of state.json given its current text)
FILE_POISONS: Sequence[tuple[str, Callable[[str], str]]] = (
    ("truncated", lambda text: text[: len(text) // 2]),
    ("garbage", lambda _: "\x00\xff garbage"),
    ("states: a list", section("states", [])),
    ("states: a mirror's entry junk", section("states", "junk", "a")),
    ("states: an entry not a string", section("states", {"v": 1}, "b")),
    ("master: dated 1e308", section("master", history(1e308))),
    ("master: 2100", section("master", history(4_102_444_800.0))),
    ("repodata: junk", section("repodata", {"v": 1})),
    ("leases: a malformed entry", section("leases", {"poller": "junk"})),
    ("leases: a list", section("leases", [])),
    ("counts: junk", section("counts", {"d": [{"n": "x"}, "soon"]})),
    ("header: junk", lambda text: "junk\n" + text.split("\n", 1)[1]),
)
FILE_HALVES = {"whole-states-master": FILE_POISONS[:7], "repodata-leases-counts": FILE_POISONS[7:]}


@pytest.mark.parametrize("half", list(FILE_HALVES))
async def test_the_state_file_poisoned_under_load(
    aiohttp_client: ClientFactory, farm: Farm, tmp_path: Path, half: str
) -> None:
    now = time.time()
    for name in ("master", "a", "b"):
        farm.set_trace(name, now - 600)
    apps, clients = await start_pair(aiohttp_client, config(farm), lambda: FileStore(tmp_path))
    await all_fresh(clients)
    reader = FileStore(tmp_path)
    path = tmp_path / STATE_FILE
    owners = set()
    for app in apps:
        lease = app[keys.LEASE]
        assert lease is not None
        owners.add(lease.owner)
    took: dict[str, float] = {}

    async def clean() -> bool:
        data = await reader.load()
        return not data.poisoned and await reader.lease_holder("poller") in owners

    async with Load([str(c.make_url("")) for c in clients]) as load:
        for what, poison in FILE_HALVES[half]:
            start = time.monotonic()
            # as a stray writer would: in place, not through the store's lock and rename
            path.write_text(poison(path.read_text(errors="replace")), errors="surrogateescape")
            await step(what, start, clean, load, farm, took)
            for c in clients:
                health = json.loads(await (await c.get("/health")).text())
                assert all(t["running"] for t in health["tasks"].values()), (what, health)
    assert not load.failures, load.failures[:5]
    print("repaired after (s):", {k: round(v, 2) for k, v in took.items()})
