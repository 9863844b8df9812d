"""Reloads under load: a changed config file, SIGHUP and a replaced GeoIP database drop nothing."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from redirector.config.settings import Settings, load_settings, parse_settings
from redirector.geo import GeoReader
from redirector.reload import Reloader, file_signature, keep_running, restart_changes
from redirector.store.redis import RedisStore
from redirector.web import keys
from redirector.web.app import create_app
from tests.conftest import free_port
from tests.farm import Farm
from tests.mmdb_build import CityRecord
from tests.support.clock import Clock
from tests.support.hammer import Hammer
from tests.support.world import (
    FRONT,
    NL_CLIENT,
    asn_db,
    city_db,
    flat_db,
    fresh_store,
    mirror_url,
    replace_file,
)

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]

PATH = "/smeserver/releases/10/smeos/x86_64/repodata/repomd.xml"


def url_of(client: TestClient[web.Request, web.Application], path: str = PATH) -> str:
    return str(client.make_url(path))


# --- the pure parts -------------------------------------------------------------------------


def test_restart_keys_are_detected_and_kept() -> None:
    old = parse_settings(FRONT.config_text(["nl"], extra='listen = "127.0.0.1:8080"'))
    new = parse_settings(
        FRONT.config_text(
            ["nl", "us"],
            extra='listen = "127.0.0.1:9090"\nredis_url = "redis://127.0.0.1:1/0"\nmax_lag = "2h"',
        )
    )
    assert restart_changes(old, new) == ["listen", "redis_url"]
    assert restart_changes(old, old) == []
    applied = keep_running(old, new)
    # What can change does; what needs a restart keeps its running value.
    assert [m.name for m in applied.mirrors] == ["nl", "us"]
    assert applied.max_lag == 7200
    assert (applied.listen_port, applied.redis_url) == (8080, None)


def test_file_signature_sees_rename_and_edit(tmp_path: Path) -> None:
    p = tmp_path / "f.toml"
    assert file_signature(p) is None
    p.write_text("a")
    first = file_signature(p)
    replace_file(p, "a")  # same content, new inode
    second = file_signature(p)
    assert first is not None
    assert second is not None
    assert second != first
    with p.open("a") as f:  # in place: same inode, new size
        f.write("b")
    assert file_signature(p) not in (first, second)


def test_replaced_geo_reader_is_closed_after_the_grace_period(tmp_path: Path) -> None:
    db = tmp_path / "city.mmdb"
    city_db(db)
    settings = parse_settings(FRONT.config_text(["nl"], extra=f'geoip_db = "{db}"'))
    first = GeoReader.open(db)
    swapped: list[GeoReader | None] = []
    clock = Clock()
    r = Reloader(
        settings, lambda s: None, geo=first, swap_geo=swapped.append, grace=30, clock=clock
    )
    assert not r.check_geo()  # unchanged: nothing to do

    city_db(tmp_path / "new.mmdb", {"145.100.0.0/16": CityRecord("US", "NA", 35.9, -79.0)})
    os.replace(tmp_path / "new.mmdb", db)
    assert r.check_geo()
    second = swapped[-1]
    assert second is not None
    assert second is r.geo
    loc = second.locate(NL_CLIENT)
    assert loc is not None
    assert loc.country == "US"
    # The old reader still answers during the grace period, for anything that holds it.
    clock.t += 29
    r.check()
    assert first.locate(NL_CLIENT) is not None
    clock.t += 2
    r.check()
    with pytest.raises(ValueError, match="closed"):
        first.locate("145.100.9.9")

    # A damaged replacement is refused; the running reader stays.
    (tmp_path / "junk").write_bytes(b"not an mmdb file" * 100)
    os.replace(tmp_path / "junk", db)
    assert not r.check_geo()
    assert r.geo is second
    assert second.locate("145.100.2.2") is not None
    assert not r.check_geo()  # refused once, not retried until the file changes again

    # A config that turns GeoIP off makes the process location-blind.
    r.settings = parse_settings(FRONT.config_text(["nl"], extra='geoip_db = ""'))
    assert r.check_geo()
    assert swapped[-1] is None
    r.close()
    first.close()


def test_several_geoip_files_are_swapped_together(tmp_path: Path) -> None:
    v4, v6, asn = tmp_path / "city-ipv4.mmdb", tmp_path / "city-ipv6.mmdb", tmp_path / "asn.mmdb"
    nl = CityRecord("NL", "EU", 52.37, 4.90)
    flat_db(v4, {"145.100.0.0/16": nl}, ip_version=4)
    flat_db(v6, {"2001:610::/32": nl}, ip_version=6)
    asn_db(asn, {"145.100.0.0/16": 1103})
    files = f'geoip_databases = ["{v4}", "{v6}", "{asn}"]'
    settings = parse_settings(FRONT.config_text(["nl"], extra=files))
    swapped: list[GeoReader | None] = []
    first = GeoReader.open_all(settings.geoip_databases)
    r = Reloader(
        settings, lambda s: None, geo=first, swap_geo=swapped.append, grace=0, clock=Clock()
    )
    assert first.asn(NL_CLIENT) == 1103
    assert first.locate("2001:610:1::5") is not None
    assert not r.check_geo()

    # The IPv6 half is replaced: the whole set is opened again and swapped in.
    flat_db(tmp_path / "new.mmdb", {"2001:610::/32": CityRecord("US", "NA", 35.9, -79.0)},
                    ip_version=6)  # fmt: skip
    os.replace(tmp_path / "new.mmdb", v6)
    assert r.check_geo()
    second = swapped[-1]
    assert second is not None
    assert second is not first
    loc = second.locate("2001:610:1::5")
    assert loc is not None
    assert loc.country == "US"
    assert second.asn(NL_CLIENT) == 1103

    # One file of the set gone: the running set stays.
    asn.unlink()
    assert not r.check_geo()
    assert r.geo is second
    r.close()
    first.close()


def test_sighup_reload_without_a_file_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    settings = parse_settings(FRONT.config_text(["nl"]), "does-not-exist.toml")
    applied: list[Settings] = []
    r = Reloader(settings, applied.append)
    with caplog.at_level(logging.WARNING, logger="redirector.reload"):
        assert not r.reload_config("SIGHUP")
    assert applied == []
    assert "not read from a file" in caplog.text


# --- a changed config file, under load --------------------------------------------------------


async def test_config_change_under_load_drops_nothing(
    aiohttp_client: ClientFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tmp_path / "mirrors.toml"
    cfg.write_text(FRONT.config_text(["nl"]))
    store = await fresh_store(["nl", "us"])
    app = create_app(load_settings(cfg), poll=False, store=store, use_geo_settings=False)
    client = await aiohttp_client(app)
    caplog.set_level(logging.INFO, logger="redirector.reload")

    async with Hammer(url_of(client)) as load:
        await load.wait_for(mirror_url("nl"))
        # The us mirror joins and nl is switched off, by renaming a new file into place.
        replace_file(
            cfg,
            FRONT.config_text(["nl", "us"]).replace('name = "nl"', 'name = "nl"\nenabled = false'),
        )
        switched = await load.wait_for(mirror_url("us"))
        await asyncio.sleep(0.3)  # keep the load on after the swap
    assert load.failures == []
    assert len(load.answers) > 50
    assert {loc.split("releases/")[0] for _, loc in load.answers} <= {
        mirror_url("nl"),
        mirror_url("us"),
    }
    # Once the new config is in, nobody is sent to the disabled mirror any more.
    assert load.seen_since(switched + 0.05) == {mirror_url("us") + PATH.removeprefix("/smeserver/")}
    assert "config reloaded (file changed)" in caplog.text
    router = app[keys.ROUTER]
    assert [m.name for m in router.settings.mirrors] == ["nl", "us"]
    # /health follows the live config.
    body = await (await client.get("/health")).json()
    assert body["mirrors"]["configured"] == 2


async def test_invalid_config_is_refused_and_the_old_one_kept(
    aiohttp_client: ClientFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tmp_path / "mirrors.toml"
    cfg.write_text(FRONT.config_text(["nl"]))
    store = await fresh_store(["nl", "us"])
    app = create_app(load_settings(cfg), poll=False, store=store, use_geo_settings=False)
    client = await aiohttp_client(app)
    caplog.set_level(logging.INFO, logger="redirector.reload")

    async with Hammer(url_of(client)) as load:
        await load.wait_for(mirror_url("nl"))
        # A latitude out of range: refused with file, line and field; nl keeps serving.
        replace_file(
            cfg, FRONT.config_text(["us"]).replace("latitude = 35.91", "latitude = 135.91")
        )

        def refusals() -> list[logging.LogRecord]:
            return [r for r in caplog.records if "refused, keeping" in r.getMessage()]

        deadline = time.monotonic() + 10
        while not refusals():
            assert time.monotonic() < deadline, caplog.text
            await asyncio.sleep(0.05)
        refused_at = time.monotonic()
        await asyncio.sleep(0.5)
        assert load.seen_since(refused_at) == {mirror_url("nl") + PATH.removeprefix("/smeserver/")}
        # Not valid TOML at all: refused too.
        replace_file(cfg, "[redirector\nmaster = ")
        while len(refusals()) < 2:
            assert time.monotonic() < deadline + 10, caplog.text
            await asyncio.sleep(0.05)
        # The next good version is taken.
        replace_file(cfg, FRONT.config_text(["us"]))
        await load.wait_for(mirror_url("us"))
    assert load.failures == []
    first, second = refusals()
    assert first.levelno == logging.ERROR
    where = rf"{re.escape(str(cfg))}:\d+: mirror 'us' field 'latitude'"
    assert re.search(where, first.getMessage())
    assert "not valid TOML" in second.getMessage()


async def test_restart_only_keys_are_reported_not_applied(
    aiohttp_client: ClientFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tmp_path / "mirrors.toml"
    cfg.write_text(FRONT.config_text(["nl"], extra='listen = "127.0.0.1:8080"'))
    store = await fresh_store(["nl"])
    app = create_app(load_settings(cfg), poll=False, store=store, use_geo_settings=False)
    client = await aiohttp_client(app)
    caplog.set_level(logging.INFO, logger="redirector.reload")
    new_master = "http://other-master.example/smeserver/"
    replace_file(
        cfg,
        FRONT.config_text(
            ["nl"], master=new_master, extra='listen = "127.0.0.1:9999"\nmax_lag = "1h"'
        ),
    )
    deadline = time.monotonic() + 10
    while app[keys.ROUTER].settings.master != new_master:
        assert time.monotonic() < deadline, caplog.text
        await asyncio.sleep(0.05)
    live = app[keys.ROUTER].settings
    assert (live.listen_port, live.max_lag) == (8080, 3600)
    assert "listen changed; restart needed" in caplog.text
    assert (await client.get("/health")).status == 200


async def test_a_reloaded_mirror_is_polled_on_the_next_pass(
    aiohttp_client: ClientFactory, farm: Farm, tmp_path: Path
) -> None:
    now = time.time()
    for name in ("master", "nl", "us"):
        farm.set_trace(name, now - 60)

    def text(names: list[str]) -> str:
        out = [
            "[redirector]",
            f'master = "{farm.url("master")}"',
            'poll_interval = "200ms"',
            'probe_timeout = "2s"',
        ]
        for n in names:
            out += ["[[mirror]]", f'name = "{n}"', f'http = "{farm.url(n)}"', 'country = "NL"',
                    "latitude = 52.0", "longitude = 4.9"]  # fmt: skip
        return "\n".join(out) + "\n"

    cfg = tmp_path / "mirrors.toml"
    cfg.write_text(text(["nl"]))
    client = await aiohttp_client(create_app(load_settings(cfg), use_geo_settings=False))

    async def fresh() -> int:
        body = await (await client.get("/health")).json()
        n: int = body["mirrors"]["fresh"]
        return n

    deadline = time.monotonic() + 15
    while await fresh() != 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert not any(h.startswith("us/") for h in farm.hits)
    replace_file(cfg, text(["nl", "us"]))
    while await fresh() != 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert any(h.startswith("us/") for h in farm.hits)


async def test_handlers_read_the_live_settings_holder(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    cfg = tmp_path / "mirrors.toml"
    cfg.write_text(FRONT.config_text(["nl", "us"]))
    store = await fresh_store(["nl", "us"])
    app = create_app(load_settings(cfg), poll=False, store=store, use_geo_settings=False)
    client = await aiohttp_client(app)
    live = app[keys.LIVE]

    async def listed(name: str = "smeos-10") -> tuple[int, int]:
        """The status of a mirror list and how many mirrors it names."""
        resp = await client.get(f"/mirrorlist/{name}")
        text = await resp.text()
        return resp.status, sum(1 for line in text.splitlines() if line.startswith("http"))

    async def master_shown() -> str:
        body = await (await client.get("/mirrors.json")).json()
        url: str = body["master"]["url"]
        return url

    assert await listed() == (200, 2)
    assert await master_shown() == FRONT.master
    # A reload of the file replaces the holder's settings; the handlers answer from them.
    other = "http://other-master.example/smeserver/"
    replace_file(
        cfg,
        FRONT.config_text(
            ["nl", "us"], master=other, extra='mirrorlist_length = 1\nrepos = ["smeos"]'
        ),
    )
    deadline = time.monotonic() + 10
    while live.replaced == 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert live.current is app[keys.ROUTER].settings  # one reload, one set of settings
    assert app[keys.SETTINGS].mirrorlist_length == 10  # the startup config, as it was
    assert await listed() == (200, 1)
    assert (await listed("smeupdates-10"))[0] == 404
    assert await master_shown() == other
    # The holder is where handlers look: replacing it alone, the router untouched, is enough.
    live.replace(
        replace(live.current, repos=("smeupdates",), mirrorlist_length=2, master=FRONT.master)
    )
    assert app[keys.ROUTER].settings.master == other
    assert (await listed())[0] == 404
    assert await listed("smeupdates-10") == (200, 2)
    assert await master_shown() == FRONT.master
    assert (await client.get("/health")).status == 200


# --- SIGHUP to a real `redirector serve`, under load ------------------------------------------


def text_of(log: Path) -> str:
    return log.read_text()


async def wait_listening(url: str, proc: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as session:
        while True:
            assert proc.returncode is None, text_of(log)
            assert time.monotonic() < deadline, text_of(log)
            try:
                async with session.get(url, allow_redirects=False) as resp:
                    if resp.status == 302:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)


async def test_sighup_to_serve_reloads_under_load(tmp_path: Path) -> None:
    cfg = tmp_path / "mirrors.toml"
    cfg.write_text(FRONT.config_text(["nl"], extra='geoip_db = ""'))
    port = free_port()
    log_path = tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}{PATH}"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "redirector.cli", "serve", "--config", str(cfg),
            "--listen", f"127.0.0.1:{port}", "--no-poll",
            stdout=log_file, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    try:
        await wait_listening(url, proc, log_path)
        async with Hammer(url, workers=4) as load:
            # No mirror state in this process (--no-poll, no Redis): everyone goes to the master.
            await load.wait_for(FRONT.master)
            other = "http://new-master.example/smeserver/"
            cfg.write_text(FRONT.config_text(["nl"], master=other, extra='geoip_db = ""'))
            proc.send_signal(signal.SIGHUP)
            await load.wait_for(other)
            # Either worker may have answered first; the one that speaks logs its reload.
            deadline = time.monotonic() + 10
            while "config reloaded (SIGHUP)" not in log_path.read_text(errors="replace"):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert proc.returncode is None  # SIGHUP reloads; it does not end the process
        assert load.failures == []
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
    out = log_path.read_text()
    assert "config reloaded (SIGHUP)" in out
    assert proc.returncode == 0, out
    # The access log was on, one line per request, naming where the client was sent.
    assert " 127.0.0.1 - http " in out
    assert f'"GET {PATH}" 302 master' in out


# --- a replaced GeoIP database, under load -----------------------------------------------------


async def test_geoip_replaced_under_load(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    db = tmp_path / "GeoLite2-City.mmdb"
    city_db(db, build_epoch=86400 * 365)
    cfg = tmp_path / "mirrors.toml"
    cfg.write_text(FRONT.config_text(["nl", "us"], extra=f'geoip_db = "{db}"'))
    store = await fresh_store(["nl", "us"])
    app = create_app(load_settings(cfg), poll=False, store=store)
    client = await aiohttp_client(app)
    first = app[keys.ROUTER].geo
    assert first is not None

    async with Hammer(url_of(client), headers={"X-Forwarded-For": NL_CLIENT}) as load:
        await load.wait_for(mirror_url("nl"))
        # The network moves to North Carolina in the new edition, written beside and renamed
        # over the old file as geoipupdate does.
        new = tmp_path / "GeoLite2-City.mmdb.tmp"
        city_db(
            new,
            {"145.100.0.0/16": CityRecord("US", "NA", 35.9, -79.0)},
            build_epoch=2 * 86400 * 365,
        )
        os.replace(new, db)
        swapped = await load.wait_for(mirror_url("us"))
        await asyncio.sleep(0.3)
    assert load.failures == []
    assert load.seen_since(swapped + 0.05) == {mirror_url("us") + PATH.removeprefix("/smeserver/")}
    live = app[keys.ROUTER].geo
    assert live is not None
    assert live is not first
    body = await (await client.get("/health")).json()
    assert "built 1972-01-01" in body["geoip"]["database"]


# --- the poller run apart (`redirector poll`) follows a reload too -----------------------------


async def test_poll_process_picks_up_new_mirrors(
    farm: Farm, tmp_path: Path, redis_url: str
) -> None:
    now = time.time()
    for name in ("master", "alpha-mirror", "bravo-mirror"):
        farm.set_trace(name, now - 60)

    def text(names: list[str]) -> str:
        out = [
            "[redirector]",
            f'master = "{farm.url("master")}"',
            'poll_interval = "200ms"',
            'probe_timeout = "2s"',
            f'redis_url = "{redis_url}"',
        ]
        for n in names:
            out += ["[[mirror]]", f'name = "{n}"', f'http = "{farm.url(n)}"', 'country = "NL"',
                    "latitude = 52.0", "longitude = 4.9"]  # fmt: skip
        return "\n".join(out) + "\n"

    cfg = tmp_path / "mirrors.toml"
    cfg.write_text(text(["alpha-mirror"]))
    log_path = tmp_path / "poll.log"
    store = RedisStore(redis_url)

    async def polled() -> set[str]:
        return set((await store.load()).states)

    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "redirector.cli", "poll", "--config", str(cfg),
            stdout=log_file, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while await polled() != {"alpha-mirror"}:
            assert proc.returncode is None, text_of(log_path)
            assert time.monotonic() < deadline, text_of(log_path)
            await asyncio.sleep(0.05)
        replace_file(cfg, text(["alpha-mirror", "bravo-mirror"]))
        proc.send_signal(signal.SIGHUP)  # as `systemctl reload redirector-poller` does
        while await polled() != {"alpha-mirror", "bravo-mirror"}:
            assert proc.returncode is None, text_of(log_path)
            assert time.monotonic() < deadline, text_of(log_path)
            await asyncio.sleep(0.05)
        assert proc.returncode is None
    finally:
        await store.close()
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)
    assert "config reloaded" in text_of(log_path)
