"""Operator views rendered once per state and served from that, rendered off the event loop.

The status page, its JSON and the state part of /metrics are rebuilt only when what they show
changes: a new snapshot (every poller pass makes one), the live settings, the store's health,
the download figures. Within one such state a rendering is served for at most `MAX_AGE`
seconds (the page says "3 min ago", the lag gauges grow): past that the old one is still
served while one fresh rendering is made, so no viewer waits. A viewer that finds the state
changed waits for the new rendering, which all viewers of that moment share.

The counters of /metrics move with every redirect, so they have no state to key on: they are
rendered again when they moved, except that past a burst of `COUNTER_BURST` renderings they
are rendered at most `COUNTER_RATE` times a second (`Throttle`); in between, a scrape gets the
last rendering, at most 1 / `COUNTER_RATE` seconds old. A scrape every few seconds, as
Prometheus makes, always gets them exact.

Renderings run in one worker thread of their own: a loop of /mirrors requests costs that
thread, at most one rendering per view per state or `MAX_AGE`, and never holds up a redirect
for a whole rendering (the event loop and the thread take turns on the interpreter lock). A
rendering of 1,000 mirrors is some 170 ms of Python, made again whenever the download figures
move (every few seconds under traffic): with CPython's default switch interval (5 ms) the
event loop waited up to 5 ms for the lock at each of its system calls meanwhile, and the
redirects' p99 grew tenfold. `Views` sets the interval to `SWITCH_INTERVAL` (0.5 ms), so the
loop gets the lock back ten times sooner; it matters only while two threads want the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from redirector.core.budget import Bucket

log = logging.getLogger(__name__)

MAX_AGE = 30.0  # seconds a rendering is served within one state before it is redone
GZIP_LEVEL = 6  # what nginx and aiohttp use by default
ENTRIES = 256  # views kept (explanations are one per client and path): the oldest go first
COUNTER_BURST = 5.0
COUNTER_RATE = 2.0  # per second
SWITCH_INTERVAL = 0.0005  # seconds a thread holds the interpreter lock when another wants it

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page:
    """One rendered body, and the same gzipped, ready to send."""

    body: bytes
    gzipped: bytes

    @classmethod
    def of(cls, text: str | bytes) -> Page:
        body = text.encode("utf-8") if isinstance(text, str) else text
        return cls(body, gzip.compress(body, GZIP_LEVEL, mtime=0))


@dataclass(slots=True)
class _Entry:
    key: tuple[object, ...]
    at: float
    value: Any


@dataclass(slots=True)
class _Job:
    key: tuple[object, ...]
    task: asyncio.Task[Any]


def _same(a: Sequence[object], b: Sequence[object]) -> bool:
    # Snapshots and settings by identity (comparing them field by field costs a rendering).
    return len(a) == len(b) and all(x is y or x == y for x, y in zip(a, b, strict=True))


class Throttle:
    """A token bucket (`core.budget.Bucket`): `allow(now)` is True at most `burst` times at
    once, then `rate` a second."""

    def __init__(self, burst: float = COUNTER_BURST, rate: float = COUNTER_RATE) -> None:
        self.burst, self.rate = burst, rate
        self._bucket: Bucket | None = None

    def allow(self, now: float) -> bool:
        if self._bucket is None:
            self._bucket = Bucket(self.burst, now)
        return self._bucket.take(now, self.rate, self.burst)


class Views:
    """The cache of rendered views, by name, and the thread they are rendered in."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_age: float = MAX_AGE):
        self.clock = clock
        self.max_age = max_age
        self.renderings = 0  # renderings made, for tests and the benchmark
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._jobs: dict[Hashable, _Job] = {}
        self._throttles: dict[Hashable, Throttle] = {}
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="views")
        # Process-wide, and only ever lowered: see the module's docstring.
        if sys.getswitchinterval() > SWITCH_INTERVAL:
            sys.setswitchinterval(SWITCH_INTERVAL)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in the views' thread: pure work over immutable state only."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def get(
        self,
        name: Hashable,
        key: tuple[object, ...],
        make: Callable[[], Awaitable[T]],
        throttled: bool = False,
    ) -> T:
        """The view `name` for the state `key`: cached, or made by `make` once for everyone
        asking meanwhile. Raises what `make` raises, to those waiting for it. `throttled`: a
        changed `key` is rendered only when the view's `Throttle` allows; until then the last
        rendering is served."""
        entry = self._entries.get(name)
        if entry is not None and throttled and not _same(entry.key, key):
            throttle = self._throttles.setdefault(name, Throttle())
            if name not in self._jobs and not throttle.allow(self.clock()):
                stale: T = entry.value
                return stale
        if entry is not None and _same(entry.key, key):
            self._entries.move_to_end(name)
            if self.clock() - entry.at >= self.max_age:
                self._start(name, key, make)  # the old one serves while a new one is made
            value: T = entry.value
            return value
        job = self._start(name, key, make)
        # shield: a viewer hanging up must not cancel the rendering others wait for
        result: T = await asyncio.shield(job.task)
        return result

    def _start(
        self, name: Hashable, key: tuple[object, ...], make: Callable[[], Awaitable[T]]
    ) -> _Job:
        job = self._jobs.get(name)
        if job is not None and _same(job.key, key):
            return job
        started = self.clock()

        async def render() -> T:
            value = await make()
            self.renderings += 1
            if self._jobs.get(name) is job:  # a job for a newer state may have replaced it
                self._entries[name] = _Entry(key, started, value)
                self._entries.move_to_end(name)
                if len(self._entries) > ENTRIES:
                    self._entries.popitem(last=False)
            return value

        task: asyncio.Task[Any] = asyncio.create_task(render())
        job = self._jobs[name] = _Job(key, task)
        task.add_done_callback(lambda t: self._settle(name, job, t))
        return job

    def _settle(self, name: Hashable, job: _Job, task: asyncio.Task[Any]) -> None:
        if self._jobs.get(name) is job:
            del self._jobs[name]
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("rendering %s failed", name, exc_info=exc)

    async def close(self) -> None:
        """Cancel renderings under way and stop the thread (shutdown)."""
        for job in list(self._jobs.values()):
            job.task.cancel()
        for job in list(self._jobs.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job.task
        self._executor.shutdown(wait=True, cancel_futures=True)
