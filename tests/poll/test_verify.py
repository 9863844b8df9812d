"""Never a 404: the HEAD check against real mirrors on loopback, end to end and unit by unit."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from redirector.config.settings import ConfigError, Settings, parse_settings
from redirector.core.models import MasterState, MasterVersion, Mirror, MirrorState, Status
from redirector.geo import GeoReader
from redirector.poll.filecheck import Verifier, is_repodata, needs_check, open_check_session
from redirector.router import Routed, Router
from redirector.snapshot import Snapshot, SnapshotHolder
from redirector.store.base import StoreData
from redirector.web import keys
from redirector.web.app import create_app
from tests.farm import Farm, hang
from tests.support.clock import Clock
from tests.support.world import NL_CLIENT, REPOMD, near_far

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]

ISO = "releases/10/iso/x86_64/smeserver-10.0-x86_64.iso"


def heads(farm: Farm, path: str | None = None) -> list[str]:
    return [t for m, t in farm.requests if m == "HEAD" and (path is None or t.endswith(path))]


# --- end to end through the app ----------------------------------------------------------------


def app_config(farm: Farm, extra: str = "") -> Settings:
    # For a client in Amsterdam: "near" first, then "far"; both fresh.
    return parse_settings(near_far(farm, extra), "verify.toml")


async def started(
    aiohttp_client: ClientFactory, farm: Farm, geo: GeoReader, extra: str = ""
) -> TestClient[web.Request, web.Application]:
    now = time.time()
    for name in ("master", "near", "far"):
        farm.set_trace(name, now - 3600)
    client = await aiohttp_client(create_app(app_config(farm, extra), geo=geo))
    deadline = time.monotonic() + 10
    while True:
        body = json.loads(await (await client.get("/health")).text())
        if body["mirrors"]["fresh"] == 2:
            return client
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


async def location(client: TestClient[web.Request, web.Application], path: str) -> str:
    resp = await client.get(
        "/smeserver/" + path, headers={"X-Forwarded-For": NL_CLIENT}, allow_redirects=False
    )
    assert resp.status == 302, await resp.text()
    return resp.headers["Location"]


async def test_a_missing_file_goes_to_the_next_mirror_then_the_master(
    aiohttp_client: ClientFactory, farm: Farm, geo: GeoReader
) -> None:
    client = await started(aiohttp_client, farm, geo)
    farm.put("far", ISO, b"iso")
    farm.requests.clear()  # from here on, only the checks' HEADs count
    # The chosen mirror (near) 404s the ISO: the client goes to the next, which has it.
    assert await location(client, ISO) == farm.url("far") + ISO
    assert heads(farm, ISO) == [f"near/{ISO}", f"far/{ISO}"]
    # Nobody has it: the master.
    tarball = "contribs/someone/smeserver-thing-1.0.tar.gz"
    assert await location(client, tarball) == farm.url("master") + tarball
    assert heads(farm, tarball) == [f"near/{tarball}", f"far/{tarball}"]
    # Asked again: the cached answers, no HEAD at all.
    before = len(farm.requests)
    assert await location(client, ISO) == farm.url("far") + ISO
    assert await location(client, tarball) == farm.url("master") + tarball
    assert len(farm.requests) == before
    # The chosen mirror has it: one HEAD, to it alone.
    farm.put("near", "contribs/x.rpm", b"rpm")
    assert await location(client, "contribs/x.rpm") == farm.url("near") + "contribs/x.rpm"
    assert heads(farm, "contribs/x.rpm") == ["near/contribs/x.rpm"]
    # yum metadata and the paths the poller probed for coverage: no HEAD.
    before = len(farm.requests)
    assert await location(client, REPOMD) == farm.url("near") + REPOMD
    assert await location(client, "releases/") == farm.url("near") + "releases/"
    assert len(farm.requests) == before
    # Percent-encoding reaches the mirror as the client sent it.
    farm.put("far", "contribs/a b/c+d.tar.gz", b"t")
    encoded = "contribs/a%20b/c%2Bd.tar.gz"
    assert await location(client, encoded) == farm.url("far") + encoded
    assert client.app[keys.VERIFIER].heads == len(heads(farm))


async def test_a_hanging_mirror_costs_one_timeout_then_the_next(
    aiohttp_client: ClientFactory, farm: Farm, geo: GeoReader
) -> None:
    client = await started(aiohttp_client, farm, geo)
    farm.put("far", ISO, b"iso")
    files = dict(farm.files)

    async def hangs_on_isos(request: web.Request, rest: str) -> web.StreamResponse:
        if rest.endswith(".iso"):
            return await hang(request, rest)
        body = files.get("near/" + rest)
        return web.Response(body=body) if body is not None else web.Response(status=404)

    farm.behaviours["near"] = hangs_on_isos
    assert await location(client, ISO) == farm.url("far") + ISO
    assert await location(client, ISO) == farm.url("far") + ISO  # the timeout is cached too
    assert heads(farm, ISO) == [f"near/{ISO}", f"far/{ISO}"]


async def test_a_mirror_found_lacking_a_subtree_is_not_chosen_for_it(
    aiohttp_client: ClientFactory, farm: Farm, geo: GeoReader
) -> None:
    farm.missing.add("near/obsolete/")  # its config excludes nothing; the poller finds out
    client = await started(aiohttp_client, farm, geo)
    old = "obsolete/6/iso/smeserver-6.0.iso"
    farm.put("far", old, b"iso")
    farm.put("near", ISO, b"iso")
    assert await location(client, old) == farm.url("far") + old
    assert heads(farm, old) == [f"far/{old}"]  # near was never asked: rejected before any HEAD
    assert await location(client, ISO) == farm.url("near") + ISO  # still first for the rest
    state = client.app[keys.HOLDER].current.candidates[0].state
    assert state is not None
    assert state.lacks == ("obsolete/",)
    assert state.coverage_note == "obsolete/ HTTP 404 at obsolete/"


async def test_checks_can_be_turned_off(
    aiohttp_client: ClientFactory, farm: Farm, geo: GeoReader
) -> None:
    client = await started(aiohttp_client, farm, geo, extra="verify_files = false")
    farm.put("far", ISO, b"iso")
    assert await location(client, ISO) == farm.url("near") + ISO  # as chosen, unchecked
    assert heads(farm, ISO) == []


def test_verify_settings() -> None:
    base = '[redirector]\nmaster = "http://127.0.0.1:1/"\n'
    s = parse_settings(base)
    assert (s.verify_files, s.verify_timeout, s.verify_ttl, s.verify_negative_ttl) == (
        True, 1.0, 3600.0, 300.0,
    )  # fmt: skip
    s = parse_settings(base + 'verify_files = false\nverify_ttl = "2h"\nverify_negative_ttl = "1m"')
    assert (s.verify_files, s.verify_ttl, s.verify_negative_ttl) == (False, 7200.0, 60.0)
    with pytest.raises(ConfigError, match="at most 1s"):
        parse_settings(base + 'verify_timeout = "2s"')
    with pytest.raises(ConfigError, match="verify_files"):
        parse_settings(base + 'verify_files = "yes"')


@pytest.mark.parametrize(
    ("path", "checked"),
    [
        (ISO, True),
        ("contribs/a/b.tar.gz", True),
        ("releases/10/smeos/x86_64/Packages/a.rpm", True),
        (REPOMD, False),
        ("releases/10/smeos/x86_64/repodata/abc-primary.xml.gz", False),
        ("releases/10/smeos/x86_64/repodata", False),
        ("", False),
    ],
)
def test_what_is_checked(path: str, checked: bool) -> None:
    assert needs_check(path) is checked
    assert is_repodata(path) is (not checked and bool(path))


# --- the Verifier alone -------------------------------------------------------------------------


class Rig:
    """Mirrors on the farm, all fresh in a snapshot, a router and a verifier over them."""

    def __init__(self, farm: Farm, names: list[str], clock: Clock) -> None:
        blocks = "".join(
            f'[[mirror]]\nname = "{n}"\nhttp = "{farm.url(n)}"\ncountry = "NL"\n'
            f"latitude = 52.0\nlongitude = 5.0\n\n"
            for n in names
        )
        self.settings = parse_settings(
            f'[redirector]\nmaster = "{farm.url("master")}"\nverify_timeout = "500ms"\n'
            f'verify_ttl = "10m"\nverify_negative_ttl = "1m"\n\n{blocks}',
            "rig.toml",
        )
        now = time.time()
        states = {
            n: MirrorState(n, Status.UP, now, master_date=now - 60, covered=("releases/",))
            for n in names
        }
        master = MasterState((MasterVersion(now - 60, now - 60),), now)
        self.holder = SnapshotHolder(self.settings.mirrors)
        self.holder.current = Snapshot.build(
            self.settings.mirrors, StoreData(states, master, 1), now
        )
        self.router = Router(self.settings, self.holder, None)
        self.clock = clock

    def verifier(
        self,
        session: aiohttp.ClientSession,
        vouchers: list[Callable[[Snapshot, Mirror, str], bool]] | None = None,
    ) -> Verifier:
        return Verifier(
            self.settings, session, self.holder, vouchers=vouchers or [], clock=self.clock
        )

    def route(self, path: str) -> Routed:
        return self.router.resolve("127.0.0.1", None, None, "http", path)

    def order(self, path: str) -> list[str]:
        return [r.mirror.name for r in self.route(path).top(10)]


@pytest.fixture
async def vsession() -> AsyncIterator[aiohttp.ClientSession]:
    settings = parse_settings('[redirector]\nmaster = "http://127.0.0.1:1/"\n')
    async with open_check_session(settings) as s:
        yield s


async def test_answers_are_cached_until_their_ttl(
    farm: Farm, vsession: aiohttp.ClientSession
) -> None:
    clock = Clock(1000.0)
    rig = Rig(farm, ["a", "b"], clock)
    first, second = rig.order(ISO)
    farm.put(second, ISO, b"iso")
    v = rig.verifier(vsession)
    assert await v.target(rig.route(ISO)) == farm.url(second) + ISO
    assert v.heads == 2
    clock.t += 59
    assert await v.target(rig.route(ISO)) == farm.url(second) + ISO
    assert v.heads == 2  # both answers cached
    clock.t += 2  # the negative answer (1 minute) has expired, the positive (10) has not
    farm.put(first, ISO, b"iso")  # meanwhile the first mirror has synced
    assert await v.target(rig.route(ISO)) == farm.url(first) + ISO
    assert v.heads == 3
    clock.t += 600  # the positive answer expires too
    del farm.files[f"{first}/{ISO}"]
    assert await v.target(rig.route(ISO)) == farm.url(second) + ISO
    assert v.heads == 5


async def test_concurrent_requests_share_one_head(
    farm: Farm, vsession: aiohttp.ClientSession
) -> None:
    rig = Rig(farm, ["a"], Clock(0.0))
    gate, arrived = asyncio.Event(), asyncio.Event()

    async def slow_yes(request: web.Request, rest: str) -> web.StreamResponse:
        arrived.set()
        await gate.wait()
        return web.Response(text="yes")

    farm.behaviours["a"] = slow_yes
    v = rig.verifier(vsession)
    waiting = [asyncio.create_task(v.target(rig.route(ISO))) for _ in range(20)]
    await arrived.wait()
    await asyncio.sleep(0.05)  # let every request reach the shared HEAD (none may start its own)
    gate.set()
    assert set(await asyncio.gather(*waiting)) == {farm.url("a") + ISO}
    assert len(heads(farm)) == 1


async def test_redirects_lookups_and_vouchers(farm: Farm, vsession: aiohttp.ClientSession) -> None:
    names = ["a", "b", "c", "d", "e"]
    rig = Rig(farm, names, Clock(0.0))
    order = rig.order(ISO)
    v = rig.verifier(vsession)
    # Nobody has it: three HEADs at most, then the master.
    assert await v.target(rig.route(ISO)) == farm.url("master") + ISO
    assert heads(farm) == [f"{n}/{ISO}" for n in order[:3]]

    # A redirect to another host is the mirror's business; within the host it is followed.
    async def elsewhere(request: web.Request, rest: str) -> web.StreamResponse:
        if rest == "cdn.iso":
            raise web.HTTPFound("http://localhost:9/cdn.iso")  # not contacted
        raise web.HTTPFound(farm.url("nowhere") + rest)  # the same host: followed, a 404 there

    farm.behaviours[order[0]] = elsewhere
    farm.put(order[1], "moved.iso", b"iso")
    assert await v.target(rig.route("cdn.iso")) == farm.url(order[0]) + "cdn.iso"
    assert await v.target(rig.route("moved.iso")) == farm.url(order[1]) + "moved.iso"
    assert ("HEAD", "nowhere/moved.iso") in farm.requests

    # A voucher (a pass hook's findings) spares the HEAD; a faulty one is only logged.
    def faulty(snapshot: Snapshot, mirror: Mirror, path: str) -> bool:
        raise RuntimeError("voucher bug")

    def rpms(snapshot: Snapshot, mirror: Mirror, path: str) -> bool:
        return path.endswith(".rpm")

    v2 = rig.verifier(vsession, vouchers=[faulty, rpms])
    before = len(farm.requests)
    assert await v2.target(rig.route("releases/a.rpm")) == farm.url(order[0]) + "releases/a.rpm"
    assert await v2.target(rig.route("releases/")) == farm.url(order[0]) + "releases/"
    assert len(farm.requests) == before
