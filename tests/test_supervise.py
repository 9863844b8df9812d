"""Supervised background tasks: restarted with backoff, logged once per kind, shown healthy."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable

import pytest

from redirector.supervise import Tasks
from tests.support.clock import Clock


async def until(check: Callable[[], bool], seconds: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.005)


async def test_a_crash_is_restarted_and_its_traceback_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = Tasks(backoff=0.01, backoff_max=0.02)
    runs = 0

    async def crashes() -> None:
        nonlocal runs
        runs += 1
        raise KeyError("states")

    with caplog.at_level(logging.ERROR, logger="redirector.supervise"):
        tasks.start("refresher", crashes)
        await until(lambda: runs >= 4)
        await tasks.stop("refresher")
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == 1
    assert "refresher crashed" in tracebacks[0].getMessage()
    again = [r for r in caplog.records if "crashed again" in r.getMessage()]
    assert len(again) >= 2
    assert all(r.exc_info is None for r in again)
    h = tasks.health()["refresher"]
    assert h.restarts >= 3
    assert h.error == "KeyError: 'states'"
    assert not h.ok


async def test_backoff_doubles_while_crashing_and_health_recovers() -> None:
    clock = Clock(100.0)
    tasks = Tasks(clock=clock, backoff=0.01, backoff_max=0.04, healthy_after=60.0)
    starts: list[float] = []
    loop = asyncio.get_running_loop()

    async def crashes_three_times() -> None:
        starts.append(loop.time())
        if len(starts) <= 3:
            raise RuntimeError("boom")
        await asyncio.Event().wait()  # then runs for good

    tasks.start("poller", crashes_three_times)
    await until(lambda: len(starts) == 4)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[0] >= 0.01
    assert gaps[1] >= 0.02
    assert gaps[2] >= 0.04  # capped at backoff_max
    h = tasks.health()["poller"]
    assert h.running
    assert h.restarts == 3
    assert not h.ok  # crashed within healthy_after
    clock.t += 61
    assert tasks.health()["poller"].ok  # ran a minute since: healthy again
    await tasks.stop_all()
    assert not tasks.health()["poller"].running


async def test_a_task_that_ends_is_not_restarted_and_shows() -> None:
    tasks = Tasks(backoff=0.01)
    runs = 0

    async def ends() -> None:
        nonlocal runs
        runs += 1

    task = tasks.start("once", ends)
    await task
    await asyncio.sleep(0.03)
    assert runs == 1
    h = tasks.health()["once"]
    assert not h.running
    assert not h.ok
    assert h.restarts == 0


async def test_stop_ends_the_task_even_if_it_swallows_one_cancel() -> None:
    tasks = Tasks()
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()  # a library under the task swallowing the first cancel
        await asyncio.Event().wait()

    tasks.start("stubborn", stubborn)
    await asyncio.sleep(0)
    await asyncio.wait_for(tasks.stop("stubborn"), 5)
    assert swallowed.is_set()


async def test_a_name_runs_once_at_a_time() -> None:
    tasks = Tasks()

    async def waits() -> None:
        await asyncio.Event().wait()

    tasks.start("x", waits)
    with pytest.raises(ValueError, match="already running"):
        tasks.start("x", waits)
    await tasks.stop_all()
