"""Test helpers for the deployed front door: configs on disk, a store of fresh mirrors, load.

Shared by test_reload, test_accesslog and test_deploy. Mirror URLs name hosts under .example:
nothing ever connects to them (the apps run with poll=False), they only appear in Locations.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from redirector.core.models import MasterState, MasterVersion, MirrorState, Status
from redirector.store.base import MemoryStore, Store

# name -> (country, latitude, longitude)
PLACES: Mapping[str, tuple[str, float, float]] = {
    "nl": ("NL", 52.37, 4.90),
    "us": ("US", 35.91, -79.05),
    "au": ("AU", -37.81, 144.96),
}
MASTER = "http://master.example/smeserver/"
NL_CLIENT = "145.100.1.7"  # placed by the tests' own GeoIP databases
US_CLIENT = "152.2.10.20"


def mirror_url(name: str, scheme: str = "http") -> str:
    return f"{scheme}://{name}.example/sme/"


def config_text(
    mirrors: Sequence[str], *, master: str = MASTER, extra: str = "", https: bool = True
) -> str:
    """A complete config with the named mirrors of PLACES; `extra` goes into [redirector]."""
    out = [
        "[redirector]",
        f'master = "{master}"',
        'trusted_proxies = ["127.0.0.1/32", "::1/128"]',
        # The per-file HEAD check would contact the .example hosts: tests stay on loopback.
        "verify_files = false",
        extra,
        "",
    ]
    for name in mirrors:
        cc, lat, lon = PLACES[name]
        out += [
            "[[mirror]]",
            f'name = "{name}"',
            f'http = "{mirror_url(name)}"',
            *([f'https = "{mirror_url(name, "https")}"'] if https else []),
            f'country = "{cc}"',
            f"latitude = {lat}",
            f"longitude = {lon}",
            "",
        ]
    return "\n".join(out)


def replace_file(path: Path, text: str | bytes) -> None:
    """Write a new version of `path` the way config tools and geoipupdate do: temp + rename."""
    tmp = path.with_name(f".{path.name}.new")
    if isinstance(text, str):
        tmp.write_text(text, encoding="utf-8")
    else:
        tmp.write_bytes(text)
    os.replace(tmp, path)


async def fresh_store(names: Sequence[str], store: Store | None = None) -> Store:
    """A store in which the master was checked just now and every named mirror is current."""
    st = store if store is not None else MemoryStore()
    now = time.time()
    date = now - 3600
    await st.put_master(MasterState((MasterVersion(date, date),), now))
    await st.put_states(
        MirrorState(n, Status.UP, now, master_date=date, behind_since=None) for n in names
    )
    return st


@dataclass
class Hammer:
    """Concurrent clients sending GETs in a loop until stopped; every answer is kept.

    A failure is anything but the expected status: another status, a reset connection, a
    timeout. Used to show that a reload drops no request.
    """

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    expect: int = 302
    workers: int = 8
    answers: list[tuple[float, str]] = field(default_factory=list)  # (time, Location)
    failures: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Hammer:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        assert self._session is not None
        await self._session.close()

    async def _worker(self) -> None:
        assert self._session is not None
        while not self._stop.is_set():
            try:
                async with self._session.get(
                    self.url, headers=self.headers, allow_redirects=False
                ) as resp:
                    await resp.read()
                    if resp.status != self.expect:
                        self.failures.append(f"HTTP {resp.status}")
                    else:
                        self.answers.append((time.monotonic(), resp.headers.get("Location", "")))
            except (aiohttp.ClientError, TimeoutError) as e:
                self.failures.append(f"{type(e).__name__}: {e}")
            await asyncio.sleep(0)

    def seen_since(self, t: float) -> set[str]:
        return {loc for at, loc in self.answers if at >= t}

    async def wait_for(self, predicate: str, timeout: float = 15.0) -> float:
        """Wait until an answer's Location starts with `predicate`; the time it was first seen."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for at, loc in self.answers[seen:]:
                if loc.startswith(predicate):
                    return at
            seen = len(self.answers)
            await asyncio.sleep(0.02)
        got = {loc for _, loc in self.answers[-50:]}
        raise AssertionError(f"no answer went to {predicate} within {timeout} s; last: {got}")
