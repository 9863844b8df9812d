"""What the poller tells the journal: one summary line per pass, a new master state once, and
repodata news in one line per pass, not one per mirror and repo."""

from __future__ import annotations

import logging
import time

import pytest

from redirector.config.settings import parse_settings
from redirector.core.models import MasterState, MasterVersion, RepoCheck
from redirector.poll.poller import poll_once
from redirector.poll.probe import open_session
from redirector.poll.repodata import log_transitions
from redirector.store.memory import MemoryStore
from tests.farm import Farm, error_500

HOUR = 3600.0


def config(farm: Farm, names: list[str]) -> str:
    head = f"""
[redirector]
master = "{farm.url("master")}"
poll_interval = "1s"
probe_timeout = "1s"
max_lag = "8h"
"""
    return head + "".join(
        f"""
[[mirror]]
name = "{n}"
http = "{farm.url(n)}"
country = "{n[:2].upper()}"
latitude = 52.0
longitude = 5.0
"""
        for n in names
    )


def messages(caplog: pytest.LogCaptureFixture, start: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(start)]


async def test_a_summary_per_pass_and_the_master_state_once(
    farm: Farm, caplog: pytest.LogCaptureFixture
) -> None:
    now = float(int(time.time()))  # traces carry whole seconds
    farm.set_trace("master", now - 3 * HOUR)
    for n in ("nl", "de", "fr", "uk", "fr2"):
        farm.set_trace(n, now - 3 * HOUR)
    farm.set_trace("au", now - 30 * HOUR)  # 10 h behind the master's next state: stale
    farm.behaviours["br"] = error_500
    farm.behaviours["br2"] = error_500
    names = ["nl", "de", "fr", "uk", "fr2", "au", "br", "br2"]
    settings = parse_settings(config(farm, names), "p.toml")
    store = MemoryStore()
    history = (MasterVersion(now - 30 * HOUR, now - 30 * HOUR),
               MasterVersion(now - 3 * HOUR, now - 10 * HOUR))  # fmt: skip
    await store.put_master(MasterState(history, now - 60))
    caplog.set_level(logging.INFO, logger="redirector.poll.poller")
    async with open_session(settings.probe_timeout) as session:
        await poll_once(session, settings, store)
        assert messages(caplog, "pass: ") == [
            "pass: 5 fresh, 1 stale (au), 2 down (br x2); master answers"
        ]
        assert messages(caplog, "master ") == []  # the state it already knew: no news

        # A new push: said once, with the gap since the last one.
        farm.set_trace("master", now - 50 * 60)
        await poll_once(session, settings, store)
        await poll_once(session, settings, store)
        published = messages(caplog, "master published a new state: ")
        assert len(published) == 1
        assert published[0].endswith(", 2 h 10 min after the last")
        # The mirrors lack it for seconds only, within max_lag: still fresh.
        assert messages(caplog, "pass: ")[-1] == (
            "pass: 5 fresh, 1 stale (au), 2 down (br x2); master answers"
        )

        farm.behaviours["master"] = error_500
        await poll_once(session, settings, store)
        trace = farm.url("master") + "project/trace/mirror.contribs.org"
        last = messages(caplog, "pass: ")[-1]
        assert last.endswith(f"; master unreachable: HTTP 500 for {trace}")


def test_repodata_news_is_one_line_per_pass(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="redirector.poll.repodata")
    d10, d11 = "releases/10/smeos/x86_64", "releases/11/smeos/x86_64"
    ok = {d10: RepoCheck.CURRENT, d11: RepoCheck.CURRENT}
    prev = {"au": ok, "br": ok, "za": ok, "nl": ok}
    new = {
        "au": {d10: RepoCheck.MISMATCHED, d11: RepoCheck.MISMATCHED},
        "br": {d10: RepoCheck.MISMATCHED, d11: RepoCheck.ALTERNATE},
        "za": {d10: RepoCheck.MISSING, d11: RepoCheck.CURRENT},
        "nl": ok,
    }
    log_transitions(prev, new)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.WARNING,
            "repodata differs from the master's: mismatched: au (releases/10/smeos/x86_64, "
            "releases/11/smeos/x86_64), br (releases/10/smeos/x86_64); missing: za "
            "(releases/10/smeos/x86_64)",
        )
    ]
    caplog.clear()
    log_transitions(new, new)  # nothing changed: nothing said
    assert caplog.records == []
    log_transitions(new, prev)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.INFO,
            "repodata matches the master again: au (releases/10/smeos/x86_64, "
            "releases/11/smeos/x86_64), br (releases/10/smeos/x86_64), za "
            "(releases/10/smeos/x86_64)",
        )
    ]
