"""Supervision of long-lived background tasks: a crash is logged, restarted and shown.

A background task that raises ends silently in asyncio: nobody awaits it until shutdown, so
the snapshot refresher, the lease keeper or the poller could stop while `/health` said ok.
`Tasks` runs each one as a loop that restarts the coroutine after a crash with exponential
backoff, logs the traceback once per kind of crash (the same bug crashing every minute gets
one traceback and then one line each time), and keeps each task's health for `/health`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

BACKOFF = 1.0  # seconds before the first restart
BACKOFF_MAX = 60.0
# A task that ran this long before it crashed counts as having recovered: its next crash
# waits BACKOFF again, and /health shows it healthy again this long after a restart.
HEALTHY_AFTER = 60.0

Factory = Callable[[], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class TaskHealth:
    """How one supervised task is doing."""

    name: str
    running: bool  # False once it ended by itself or was stopped
    restarts: int  # crashes so far, each followed by a restart
    error: str | None  # the last crash, e.g. "ValueError: too many values to unpack"
    failed_at: float | None  # when it last crashed (the supervisor's clock)
    ok: bool  # running, and no crash within HEALTHY_AFTER


@dataclass(slots=True)
class _Record:
    restarts: int = 0
    error: str | None = None
    failed_at: float | None = None
    ended: bool = False


def _kind(exc: BaseException) -> tuple[str, str]:
    """What makes two crashes the same for logging: the exception type and where it rose."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return type(exc).__qualname__, where


class Tasks:
    """The supervised background tasks of one process, by name.

    `clock` (monotonic seconds) and the backoff bounds are injectable for tests.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        backoff: float = BACKOFF,
        backoff_max: float = BACKOFF_MAX,
        healthy_after: float = HEALTHY_AFTER,
    ) -> None:
        self._clock = clock
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._healthy_after = healthy_after
        self._records: dict[str, _Record] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._logged: set[tuple[str, str]] = set()

    def start(self, name: str, factory: Factory) -> asyncio.Task[None]:
        """Run `factory()` under supervision as task `name` (which must not be running)."""
        if name in self._tasks and not self._tasks[name].done():
            raise ValueError(f"task {name!r} is already running")
        record = self._records[name] = _Record()
        task = asyncio.create_task(self._run(name, factory, record), name=name)
        self._tasks[name] = task
        return task

    async def _run(self, name: str, factory: Factory, record: _Record) -> None:
        streak = 0  # crashes in a row, each within healthy_after of its start
        try:
            while True:
                started = self._clock()
                try:
                    await factory()
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    now = self._clock()
                    streak = streak + 1 if now - started < self._healthy_after else 1
                    delay = min(self._backoff_max, self._backoff * 2.0 ** min(streak - 1, 30))
                    record.restarts += 1
                    record.error = f"{type(e).__name__}: {e}"
                    record.failed_at = now
                    self._log_crash(name, e, record.error, delay)
                    await asyncio.sleep(delay)
                else:
                    log.warning("background task %s ended", name)
                    return
        finally:
            record.ended = True

    def _log_crash(self, name: str, exc: Exception, error: str, delay: float) -> None:
        kind = _kind(exc)
        if kind in self._logged:
            log.error("background task %s crashed again (%s); restart in %g s", name, error, delay)
        else:
            self._logged.add(kind)
            log.error("background task %s crashed; restarting in %g s", name, delay, exc_info=exc)

    async def stop(self, name: str) -> None:
        """Cancel task `name` and wait until it has ended; nothing if it is not running.

        The cancel is repeated every second: one swallowed on its way (by a library under
        the task) must not hang the shutdown.
        """
        task = self._tasks.pop(name, None)
        if task is None:
            return
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)

    async def stop_all(self) -> None:
        for name in list(self._tasks):
            await self.stop(name)

    def health(self) -> dict[str, TaskHealth]:
        """Every task started so far, stopped ones included, by name."""
        now = self._clock()
        out: dict[str, TaskHealth] = {}
        for name, r in self._records.items():
            recent = r.failed_at is not None and now - r.failed_at < self._healthy_after
            out[name] = TaskHealth(
                name=name,
                running=not r.ended,
                restarts=r.restarts,
                error=r.error,
                failed_at=r.failed_at,
                ok=not r.ended and not recent,
            )
        return out
