"""Load for the reload tests: concurrent clients that keep every answer, to show none is dropped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp


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
