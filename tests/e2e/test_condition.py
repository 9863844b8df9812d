"""One word per mirror: every view and command names each mirror's condition the same way.

One world (a real master and mirrors on loopback, a real Redis) with a mirror in each
condition; `redirector poll --once` polls it into the store, then `redirector mirrors`, the
status page, ``/mirrors.json``, the explain view, ``/metrics`` and the sync tree read it.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

from redirector.config.settings import parse_settings
from redirector.core.models import MasterState, MasterVersion, Mirror, MirrorState, Status
from redirector.core.selection import Candidate, Policy, Request, select
from redirector.snapshot import Snapshot
from redirector.stats import summarize
from redirector.store.redis import RedisStore
from redirector.views.status import build, to_json
from redirector.web.app import create_app
from tests.farm import MASTER_TRACE, Farm, error_500, trace_c

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]

HOUR, DAY = 3600.0, 86400.0
OWN = "project/trace/127.0.0.1"  # a mirror's own trace: named after its base URL's host
FLAG = "Archive-Update-in-Progress-127.0.0.1"

# The word each mirror must be called by, everywhere.
WORLD = {
    "fresh": "fresh",
    "syncing": "syncing",
    "stale": "stale",
    "syncing-stale": "stale",  # mid-sync, but too far behind: not served, so not "syncing"
    "lagless": "stale",  # up, but with no readable master trace copy: its lag is unknown
    "down": "down",
    "broken": "broken",
    "off": "disabled",
}
SERVED = {"fresh", "syncing"}


def build_world(farm: Farm, now: float) -> None:
    master = now - 10 * HOUR  # older than max_lag: a mirror holding less is stale at once
    farm.set_trace("master", master)
    for name in ("fresh", "syncing"):
        farm.set_trace(name, master)
        farm.put(name, OWN, trace_c(master + 60))
    for name in ("stale", "syncing-stale"):
        farm.set_trace(name, master - 5 * DAY)
        farm.put(name, OWN, trace_c(master - 5 * DAY + 60))
    for name in ("syncing", "syncing-stale"):
        farm.put(name, FLAG, b"")
    farm.put("broken", MASTER_TRACE, b"<!DOCTYPE html><html><body>Not Found</body></html>")
    # Within its grace (one failure of two): still up, with the state it had, which held no
    # master trace copy.
    farm.behaviours.update({"down": error_500, "lagless": error_500})
    farm.set_trace("off", master)


def config_text(farm: Farm, redis_url: str, names: Iterable[str] = WORLD) -> str:
    blocks = []
    for name in names:
        blocks.append(
            f'[[mirror]]\nname = "{name}"\nhttp = "{farm.url(name)}"\ncountry = "NL"\n'
            f"latitude = 52.0\nlongitude = 5.0\nenabled = {'false' if name == 'off' else 'true'}\n"
        )
    return (
        f'[redirector]\nmaster = "{farm.url("master")}"\nredis_url = "{redis_url}"\n'
        'probe_timeout = "2s"\nverify_files = false\n\n' + "\n".join(blocks)
    )


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "redirector.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    assert proc.returncode in (0, 1), err.decode()
    return proc.returncode, out.decode(), err.decode()


def table_words(text: str) -> dict[str, str]:
    """{name: state} from a CLI table: the rows under the header, up to the first blank line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"(NAME|MIRROR) +STATE ", line))
    out = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        name, state = line.split()[:2]
        out[name] = state
    return out


async def test_every_view_names_each_mirror_the_same_way(
    farm: Farm, redis_url: str, tmp_path: Path, aiohttp_client: ClientFactory
) -> None:
    now = float(int(time.time()))
    build_world(farm, now)
    cfg = tmp_path / "world.toml"
    cfg.write_text(config_text(farm, redis_url))
    store = RedisStore(redis_url)
    try:
        await store.put_states([MirrorState("lagless", Status.UP, now - 60)])
    finally:
        await store.close()

    code, text, progress = await cli("poll", "--once", "--config", str(cfg))
    assert table_words(text) == WORLD, text
    assert code == 0
    probed = dict(re.findall(r"^\[\d+/\d+\] ([\w.-]+): (\w+)$", progress, re.M))
    assert probed == {n: w for n, w in WORLD.items() if w != "disabled"}, progress
    # A mirror configured since that pass: never checked.
    cfg.write_text(config_text(farm, redis_url, [*WORLD, "new"]))
    world = {**WORLD, "new": "unchecked"}
    _, text, _ = await cli("mirrors", "--config", str(cfg))
    assert table_words(text) == world, text

    settings = parse_settings(cfg.read_text(), str(cfg))
    client = await aiohttp_client(create_app(settings, poll=False, use_geo_settings=False))
    doc = await (await client.get("/mirrors.json")).json()
    assert {m["name"]: m["state"] for m in doc["mirrors"]} == world
    page = await (await client.get("/mirrors")).text()
    assert dict(re.findall(r'<tr id="mirror-([\w.-]+)" data-state="(\w+)">', page)) == world
    dots = re.findall(r'<circle class="dot s-(\w+)"[^>]*><title>([\w.-]+) \(NL\): (\w+):', page)
    assert {name: cls for cls, name, _ in dots} == world
    assert all(cls == word for cls, _, word in dots)
    tips = dict(re.findall(r'data-name="([\w.-]+)"[^>]*><title>[^<]* - state: (\w+)</title>', page))
    assert tips == world

    expl = await (await client.get("/smeserver/releases/10/x.rpm?mirrorlist&json")).json()
    entries = {m["name"]: m for m in expl["mirrors"]}
    assert {n: m["condition"] for n, m in entries.items()} == world
    # Called served exactly when selection serves it.
    assert {n for n, m in entries.items() if m["eligible"]} == SERVED

    metrics = await (await client.get("/metrics")).text()
    on = re.findall(r'redirector_mirror_state\{mirror="([\w.-]+)",state="(\w+)"\} 1\.0', metrics)
    assert dict(on) == world


# --- the two disagreements, each on its own ---------------------------------------------------

NOW = 1_790_000_000.0
MAX_LAG = 8 * HOUR
M = Mirror("m", "http://m.test/", None, "NL", 52.0, 5.0)


def state_word(state: MirrorState) -> str:
    snap = Snapshot(
        candidates=(Candidate(M, state),),
        master=MasterState((MasterVersion(NOW - DAY, NOW - DAY),), checked_at=NOW - 60),
        generation=1,
        loaded_at=NOW,
    )
    report = build(
        snap, summarize({}, NOW), now=NOW, max_lag=MAX_LAG, poll_interval=300.0,
        master_url="http://127.0.0.1:9/", store_kind="memory", store_error=None,
    )  # fmt: skip
    word: str = to_json(report)["mirrors"][0]["state"]
    return word


def test_a_syncing_mirror_too_far_behind_is_stale_not_syncing() -> None:
    state = MirrorState(
        "m", Status.SYNCING, NOW - 60, master_date=NOW - DAY, behind_since=NOW - 9 * HOUR
    )
    served = select([Candidate(M, state)], Request("x.rpm", "http", False, None, b"k"), NOW,
                    Policy(MAX_LAG)).chosen  # fmt: skip
    assert served is None
    assert state_word(state) == "stale"


async def test_no_readable_master_trace_is_stale_in_poll_once_too(
    farm: Farm, redis_url: str, tmp_path: Path
) -> None:
    now = float(int(time.time()))
    farm.set_trace("master", now - HOUR)
    farm.behaviours["lagless"] = error_500
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[redirector]\nmaster = "{farm.url("master")}"\nredis_url = "{redis_url}"\n'
        f'[[mirror]]\nname = "lagless"\nhttp = "{farm.url("lagless")}"\ncountry = "NL"\n'
        "latitude = 52.0\nlongitude = 5.0\n"
    )
    lagless = MirrorState("lagless", Status.UP, now - 60)
    store = RedisStore(redis_url)
    try:
        await store.put_states([lagless])
    finally:
        await store.close()
    assert state_word(lagless) == "stale"
    _, text, _ = await cli("poll", "--once", "--config", str(cfg))
    assert table_words(text) == {"lagless": "stale"}, text
