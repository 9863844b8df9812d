"""The repodata pass against loopback mirrors, its pure judging, its store keys and its effect on
selection: mismatched metadata is never served, the packages beside it still are."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
import redis
from aiohttp import web

from redirector.config.settings import ConfigError, Settings, parse_settings
from redirector.core.mirrorlist import repo_path
from redirector.core.models import (
    MasterState,
    Mirror,
    MirrorState,
    RepoCheck,
    RepodataState,
    RepomdHistory,
    RepomdVersion,
    Status,
)
from redirector.core.selection import Candidate, Policy, Reason, Request, select
from redirector.poll.poller import PassResult
from redirector.poll.repodata import (
    MAX_VERSIONS,
    accepted,
    check_repodata,
    judge,
    make_repodata_pass,
    record,
    targets,
    version_of,
)
from redirector.snapshot import Snapshot
from redirector.store.base import Store, StoreData, StoreError
from redirector.store.codec import (
    decode_repo_checks,
    decode_repomd_history,
    encode_repo_checks,
    encode_repomd_history,
)
from redirector.store.file import FileStore
from redirector.store.memory import MemoryStore
from redirector.store.redis import RedisStore
from redirector.views.condition import reason_text
from tests.conftest import RedisServer
from tests.farm import Farm, error_500

T0 = 1_790_000_000.0
DAY = 86400.0
DIR = "releases/10/smeos/x86_64"
REPOMD = f"{DIR}/repodata/repomd.xml"


def repomd(revision: int, extra: str = "") -> bytes:
    """A repomd.xml in createrepo_c's shape; its bytes differ per revision."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<repomd xmlns="http://linux.duke.edu/metadata/repo">\n'
        f"  <revision>{revision}</revision>\n"
        f'  <data type="primary"><location href="repodata/{revision}-primary.xml.gz"/>'
        f"</data>{extra}\n</repomd>\n"
    ).encode()


V1, V2, V3 = repomd(1_789_000_001), repomd(1_789_000_002), repomd(1_789_000_003)


def ver(body: bytes, first_seen: float) -> RepomdVersion:
    return version_of(body, None, first_seen)


# --- pure ------------------------------------------------------------------------------------


def test_version_of_hashes_and_timestamp() -> None:
    v = version_of(V1, 1_000.0, T0)
    assert v.size == len(V1)
    assert v.timestamp == 1_789_000_001  # no <data> timestamps: <revision> beats Last-Modified
    assert len(v.md5) == 32
    assert len(v.sha1) == 40
    assert len(v.sha256) == 64
    assert len(v.sha512) == 128
    assert v.first_seen == T0
    stamped = V1.replace(b"</data>", b"<timestamp>1789000100</timestamp></data>").replace(
        b"</repomd>", b'<data type="other"><timestamp>1789000200</timestamp></data></repomd>'
    )
    assert version_of(stamped, None, T0).timestamp == 1_789_000_200  # the newest data, as yum
    odd = b"<repomd><revision>release-7</revision></repomd>"
    assert version_of(odd, 1_234.5, T0).timestamp == 1_234  # not numeric: Last-Modified
    assert version_of(odd, None, T0).timestamp == int(T0)  # neither: when first seen


def test_record_appends_only_new_versions() -> None:
    h = record((), ver(V1, T0), T0, 4 * DAY)
    assert [v.sha256 for v in h] == [ver(V1, 0).sha256]
    assert record(h, ver(V1, T0 + 60), T0 + 60, 4 * DAY) == h  # same: unchanged, first_seen kept
    h2 = record(h, ver(V2, T0 + 3600), T0 + 3600, 4 * DAY)
    assert [v.first_seen for v in h2] == [T0, T0 + 3600]


def test_record_prunes_outside_the_window_and_caps() -> None:
    h = record((), ver(V1, T0), T0, 4 * DAY)
    h = record(h, ver(V2, T0 + DAY), T0 + DAY, 4 * DAY)
    # V1 was superseded at T0 + 1 d: still acceptable until T0 + 5 d
    h = record(h, ver(V3, T0 + 4 * DAY), T0 + 4 * DAY, 4 * DAY)
    assert len(h) == 3
    h = record(h, ver(V3, T0 + 5.5 * DAY), T0 + 5.5 * DAY, 4 * DAY)
    assert [v.sha256 for v in h] == [ver(V2, 0).sha256, ver(V3, 0).sha256]
    many: tuple[RepomdVersion, ...] = ()
    for i in range(40):
        many = record(many, ver(repomd(i), T0 + i), T0 + i, 4 * DAY)
    assert len(many) == MAX_VERSIONS
    assert many[-1].sha256 == ver(repomd(39), 0).sha256


def test_record_a_rollback_makes_the_old_version_current_again() -> None:
    h = record((), ver(V1, T0), T0, 4 * DAY)
    h = record(h, ver(V2, T0 + 10), T0 + 10, 4 * DAY)
    h = record(h, ver(V1, T0 + 20), T0 + 20, 4 * DAY)
    assert [v.sha256 for v in h] == [ver(V2, 0).sha256, ver(V1, 0).sha256]
    assert h[-1].first_seen == T0 + 20


def test_accepted_and_judge() -> None:
    h = (ver(V1, T0), ver(V2, T0 + DAY), ver(V3, T0 + 2 * DAY))
    current, alternates = accepted(h, T0 + 3 * DAY, 4 * DAY)
    assert current == h[2]
    assert alternates == (h[1], h[0])  # newest first
    assert accepted(h, T0 + 5.5 * DAY, 4 * DAY)[1] == (h[1],)
    assert accepted((), T0, DAY) == (None, ())
    sha = {b: ver(b, 0).sha256 for b in (V1, V2, V3)}
    assert judge(sha[V3], h, T0 + 3 * DAY, 4 * DAY) is RepoCheck.CURRENT
    assert judge(sha[V1], h, T0 + 3 * DAY, 4 * DAY) is RepoCheck.ALTERNATE
    assert judge(sha[V1], h, T0 + 6 * DAY, 4 * DAY) is RepoCheck.MISMATCHED  # too old now
    assert judge("0" * 64, h, T0, 4 * DAY) is RepoCheck.MISMATCHED
    assert judge(sha[V1], (), T0, 4 * DAY) is RepoCheck.MISMATCHED


def test_targets_newest_version_first_and_testing_versions_mapped() -> None:
    s = parse_settings(
        '[redirector]\nmaster = "http://m/"\nrepos = ["smeos", "smeupdates-testing"]\n'
        'repodata_versions = [10, 12, 11]\ntesting_versions = ["12"]\n'
        'repodata_arches = ["x86_64", "aarch64"]\n'
    )
    assert targets(s) == [
        "releases/testing/12/smeos/x86_64",
        "releases/testing/12/smeos/aarch64",
        "releases/testing/12/smeupdates-testing/x86_64",
        "releases/testing/12/smeupdates-testing/aarch64",
        "releases/11/smeos/x86_64",
        "releases/11/smeos/aarch64",
        "releases/11/smeupdates-testing/x86_64",
        "releases/11/smeupdates-testing/aarch64",
        "releases/10/smeos/x86_64",
        "releases/10/smeos/aarch64",
        "releases/10/smeupdates-testing/x86_64",
        "releases/10/smeupdates-testing/aarch64",
    ]
    assert repo_path("smeos", "12", s.testing_versions) == "releases/testing/12/smeos"


# --- settings ----------------------------------------------------------------------------------


def test_settings_defaults() -> None:
    s = parse_settings('[redirector]\nmaster = "http://m/"\n')
    assert s.repos[0] == "smeos"
    assert "smecontribs-testing" in s.repos
    assert len(s.repos) == 9
    assert s.repo_versions == ("7", "8", "9", "10", "11", "12")
    assert s.testing_versions == ()
    assert s.mirrorlist_length == 10
    assert s.repodata_versions == ("10", "11", "12")
    assert s.repodata_arches == ("x86_64",)
    assert s.alternates_window == 4 * DAY
    assert s.repodata_max_probes == 2000


def test_settings_read() -> None:
    s = parse_settings(
        '[redirector]\nmaster = "http://m/"\nrepos = ["smeos"]\nrepo_versions = [10, "11"]\n'
        'mirrorlist_length = 3\nalternates_window = "2d"\nrepodata_max_probes = 50\n'
    )
    assert s.repos == ("smeos",)
    assert s.repo_versions == ("10", "11")
    assert s.mirrorlist_length == 3
    assert s.alternates_window == 2 * DAY
    assert s.repodata_max_probes == 50


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('repo_versions = ["10-1"]', "repo_versions"),
        ('repo_versions = ["10", "10"]', "repo_versions"),
        ('repos = ["sme os"]', "repos"),
        ('repos = "smeos"', "repos"),
        ('repodata_arches = ["x86/64"]', "repodata_arches"),
        ("mirrorlist_length = 0", "mirrorlist_length"),
        ('alternates_window = "soon"', "alternates_window"),
        ("repodata_max_probes = -1", "repodata_max_probes"),
        ("testing_versions = [true]", "testing_versions"),
    ],
)
def test_settings_refused(line: str, field: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_settings(f'[redirector]\nmaster = "http://m/"\n{line}\n', "r.toml")
    assert f"field '{field}'" in str(e.value)
    assert "r.toml:3" in str(e.value)


# --- selection and snapshot ------------------------------------------------------------------


def _mirror(name: str) -> Mirror:
    return Mirror(name, f"http://{name}.test/sme/", None, "NL", 52.37, 4.90)


def _fresh(name: str, now: float = T0) -> MirrorState:
    return MirrorState(name, Status.UP, now - 60, master_date=now - 3600, behind_since=None)


def test_a_mismatched_mirror_serves_packages_but_not_that_repos_metadata() -> None:
    bad = Candidate(_mirror("bad"), _fresh("bad"), frozenset({DIR}))
    good = Candidate(_mirror("good"), _fresh("good"))
    policy = Policy()

    def chosen(path: str) -> list[str]:
        d = select([bad, good], Request(path, "http", False, None, b"\x01\x02\x03"), T0, policy)
        return [r.mirror.name for r in d.ranked]

    meta = select([bad, good], Request(REPOMD, "http", False, None, b"\x01"), T0, policy)
    assert [r.mirror.name for r in meta.ranked] == ["good"]
    assert [(r.mirror.name, r.reason) for r in meta.rejected] == [("bad", Reason.REPODATA)]
    assert reason_text(meta.rejected[0], T0) == f"repodata mismatch for {DIR}"
    assert chosen(f"{DIR}/repodata") == ["good"]
    assert chosen(f"{DIR}/repodata/abc-primary.xml.gz") == ["good"]
    assert sorted(chosen(f"{DIR}/Packages/smeos-release-10-1.noarch.rpm")) == ["bad", "good"]
    assert sorted(chosen("releases/10/smeos/aarch64/repodata/repomd.xml")) == ["bad", "good"]
    assert sorted(chosen(f"{DIR}/repodata2/x")) == ["bad", "good"]
    assert sorted(chosen("releases/10/smeupdates/x86_64/repodata/repomd.xml")) == ["bad", "good"]


def test_snapshot_carries_the_verdicts_into_candidates() -> None:
    state = RepodataState(
        repos={DIR: RepomdHistory((ver(V1, T0),), T0)},
        mirrors={
            "a": {DIR: RepoCheck.CURRENT, "releases/11/smeos/x86_64": RepoCheck.MISSING},
            "b": {DIR: RepoCheck.MISMATCHED},
            "c": {DIR: RepoCheck.ALTERNATE},
        },
        checked_at=T0,
    )
    snap = Snapshot.build(
        [_mirror("a"), _mirror("b"), _mirror("c"), _mirror("d")],
        StoreData(states={}, master=None, generation=3, repodata=state),
        T0,
    )
    assert snap.repodata is state
    assert [c.bad_repodata for c in snap.candidates] == [
        frozenset({"releases/11/smeos/x86_64"}),
        frozenset({DIR}),
        frozenset(),
        frozenset(),
    ]


# --- store -------------------------------------------------------------------------------------


STATE = RepodataState(
    repos={
        DIR: RepomdHistory((ver(V1, T0), ver(V2, T0 + 60)), T0 + 120, None),
        "releases/11/smeos/x86_64": RepomdHistory((), T0 + 120, "HTTP 404"),
    },
    mirrors={"nl": {DIR: RepoCheck.CURRENT}, "us": {DIR: RepoCheck.MISMATCHED}, "au": {}},
    checked_at=T0 + 120,
)


@pytest.fixture(params=["memory", "redis", "file"])
async def store(
    request: pytest.FixtureRequest, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "file":
        yield FileStore(tmp_path)
        return
    redis_server.flush()
    s = RedisStore(redis_server.url, timeout=2.0)
    try:
        yield s
    finally:
        await s.close()


def _plain(state: RepodataState | None) -> object:
    assert state is not None
    return (
        dict(state.repos),
        {n: dict(v) for n, v in state.mirrors.items()},
        state.checked_at,
    )


async def test_store_contract_repodata_round_trip(store: Store) -> None:
    assert (await store.load()).repodata is None
    g0 = await store.generation()
    await store.put_repodata(STATE)
    data = await store.load()
    assert data.generation != g0
    assert _plain(data.repodata) == _plain(STATE)
    # replaced whole: a directory no longer present goes
    smaller = RepodataState({DIR: STATE.repos[DIR]}, {"nl": {}}, T0 + 300)
    await store.put_repodata(smaller)
    data2 = await store.load()
    assert data2.generation != data.generation
    assert _plain(data2.repodata) == _plain(smaller)
    empty = RepodataState({}, {}, T0 + 400)
    await store.put_repodata(empty)
    assert _plain((await store.load()).repodata) == _plain(empty)


async def test_redis_keys_and_refusals(redis_url: str) -> None:
    s = RedisStore(redis_url, prefix="t:", timeout=2.0)
    raw = redis.Redis.from_url(redis_url)
    try:
        await s.put_repodata(STATE)
        assert set(raw.hkeys("t:repomd")) == {DIR.encode(), b"releases/11/smeos/x86_64"}
        checks = json.loads(raw.get("t:repodata") or b"")
        assert checks["v"] == 1
        assert checks["mirrors"]["us"] == {DIR: "mismatched"}
        raw.hset("t:repomd", DIR, b'{"v": 1, "history": [{"size": -1}], "checked_at": 0}')
        # refused: that history is dropped from the load (and listed), the rest still loads
        data = await s.load()
        assert data.repodata is not None
        assert set(data.repodata.repos) == {"releases/11/smeos/x86_64"}
        assert [(p.key, p.field) for p in data.poisoned] == [("repomd", DIR)]
        assert "repomd history" in data.poisoned[0].reason
    finally:
        raw.close()
        await s.close()


def test_serialization_round_trips_and_refuses_junk() -> None:
    h = STATE.repos[DIR]
    assert decode_repomd_history(encode_repomd_history(h)) == h
    mirrors, at = decode_repo_checks(encode_repo_checks(STATE.mirrors, 5.0))
    assert mirrors == {n: dict(v) for n, v in STATE.mirrors.items()}
    assert at == 5.0
    for junk in (
        b"[]",
        b'{"v": 2}',
        b'{"v": 1, "checked_at": 1, "history": [{"size": 1}]}',
        b'{"v": 1, "checked_at": 1, "history": "x"}',
    ):
        with pytest.raises(StoreError):
            decode_repomd_history(junk)
    for junk in (
        b'{"v": 1, "checked_at": 1, "mirrors": {"a": {"d": "sideways"}}}',
        b'{"v": 1, "checked_at": 1, "mirrors": []}',
        b'{"v": 1, "checked_at": 1, "mirrors": {"a": 3}}',
        b'{"v": 1, "mirrors": {}}',
    ):
        with pytest.raises(StoreError):
            decode_repo_checks(junk)


# --- the pass against loopback mirrors -------------------------------------------------------


def config(farm: Farm, names: list[str], extra: str = "") -> Settings:
    mirrors = "".join(
        f'[[mirror]]\nname = "{n}"\nhttp = "{farm.url(n)}"\ncountry = "NL"\n'
        f"latitude = 52.0\nlongitude = 5.0\n"
        + ('exclude = ["releases/"]\n' if n == "excluder" else "")
        for n in names
    )
    return parse_settings(
        f'[redirector]\nmaster = "{farm.url("master")}"\nprobe_timeout = "2s"\n'
        f'repos = ["smeos"]\nrepodata_versions = ["10"]\n{extra}\n{mirrors}',
        "test.toml",
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def fresh_states(store: Store, names: list[str], now: float) -> None:
    await store.put_states([_fresh(n, now) for n in names])


async def gzip_if_asked(request: web.Request, rest: str) -> web.StreamResponse:
    """A server that compresses when the client allows it, as many do for XML."""
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        return web.Response(body=gzip.compress(V2), headers={"Content-Encoding": "gzip"})
    return web.Response(body=V2)


async def test_pass_judges_each_mirror(farm: Farm, session: aiohttp.ClientSession) -> None:
    names = ["cur", "alt", "html", "gone", "flaky", "down", "excluder", "zipper"]
    s = config(farm, names)
    store = MemoryStore()
    farm.put("master", REPOMD, V1)
    for n in ("cur", "alt", "flaky", "down", "excluder"):
        farm.put(n, REPOMD, V1)
    farm.put("html", REPOMD, b"<html><body>Not Found</body></html>")
    farm.behaviours["zipper"] = gzip_if_asked
    await fresh_states(store, [n for n in names if n != "down"], T0)
    await store.put_states([MirrorState("down", Status.DOWN, T0, error="refused")])

    first = await check_repodata(session, s, store, T0)
    assert first is not None
    assert first.mirrors["cur"][DIR] is RepoCheck.CURRENT
    assert first.mirrors["html"][DIR] is RepoCheck.MISMATCHED
    assert first.mirrors["gone"][DIR] is RepoCheck.MISSING
    assert first.mirrors["zipper"][DIR] is RepoCheck.MISMATCHED  # holds V2, unknown yet
    assert first.mirrors["down"] == {}  # not eligible: not probed
    assert first.mirrors["excluder"] == {}
    assert not any(h.startswith(("down/", "excluder/")) for h in farm.hits)
    assert set(first.repos) == {DIR}

    # The master publishes V2; "cur" syncs, "alt" does not yet, "flaky" starts failing.
    farm.put("master", REPOMD, V2)
    farm.put("cur", REPOMD, V2)
    farm.behaviours["flaky"] = error_500
    await fresh_states(store, [n for n in names if n != "down"], T0 + 3600)
    second = await check_repodata(session, s, store, T0 + 3600)
    assert second is not None
    verdicts = {n: second.mirrors[n].get(DIR) for n in names}
    assert verdicts == {
        "cur": RepoCheck.CURRENT,
        "alt": RepoCheck.ALTERNATE,
        "html": RepoCheck.MISMATCHED,
        "gone": RepoCheck.MISSING,
        "flaky": RepoCheck.CURRENT,  # a 500 is no evidence: the previous verdict stays
        "down": None,
        "excluder": None,
        "zipper": RepoCheck.CURRENT,  # asked for identity bytes, hashed what clients get
    }
    hist = second.repos[DIR]
    assert [v.sha256 for v in hist.history] == [ver(V1, 0).sha256, ver(V2, 0).sha256]
    assert hist.error is None

    # Five days on V1 is out of the window: "alt" is now mismatched, the history pruned.
    await fresh_states(store, [n for n in names if n != "down"], T0 + 5 * DAY)
    third = await check_repodata(session, s, store, T0 + 5 * DAY)
    assert third is not None
    assert third.mirrors["alt"][DIR] is RepoCheck.MISMATCHED
    assert [v.sha256 for v in third.repos[DIR].history] == [ver(V2, 0).sha256]
    stored = (await store.load()).repodata
    assert stored is not None
    assert stored.mirrors["alt"][DIR] is RepoCheck.MISMATCHED


async def test_master_failure_keeps_history_and_verdicts(
    farm: Farm, session: aiohttp.ClientSession
) -> None:
    s = config(farm, ["a", "b"])
    store = MemoryStore()
    farm.put("master", REPOMD, V1)
    farm.put("a", REPOMD, V1)
    farm.put("b", REPOMD, V2)
    await fresh_states(store, ["a", "b"], T0)
    await check_repodata(session, s, store, T0)
    farm.behaviours["master"] = error_500
    farm.hits.clear()
    after = await check_repodata(session, s, store, T0 + 60)
    assert after is not None
    assert after.repos[DIR].error == "HTTP 500"
    assert [v.sha256 for v in after.repos[DIR].history] == [ver(V1, 0).sha256]
    assert after.mirrors["a"][DIR] is RepoCheck.CURRENT
    assert after.mirrors["b"][DIR] is RepoCheck.MISMATCHED
    assert not [h for h in farm.hits if not h.startswith("master/")]  # mirrors not judged


async def test_a_mirror_ahead_of_our_first_look_is_rechecked(
    farm: Farm, session: aiohttp.ClientSession
) -> None:
    """The master publishes V2 between our look at it and our look at a mirror."""
    s = config(farm, ["fast"])
    store = MemoryStore()
    served = [V1]

    async def master(request: web.Request, rest: str) -> web.StreamResponse:
        body = served[0]
        served[0] = V2  # every later look sees V2
        return web.Response(body=body)

    farm.behaviours["master"] = master
    farm.put("fast", REPOMD, V2)
    await fresh_states(store, ["fast"], T0)
    state = await check_repodata(session, s, store, T0)
    assert state is not None
    assert state.mirrors["fast"][DIR] is RepoCheck.CURRENT
    assert state.repos[DIR].current == ver(V2, T0)


async def test_probe_cap_keeps_previous_verdicts(
    farm: Farm, session: aiohttp.ClientSession
) -> None:
    s = config(farm, ["a", "b"])
    store = MemoryStore()
    farm.put("master", REPOMD, V1)
    farm.put("a", REPOMD, V1)
    farm.put("b", REPOMD, V3)
    await fresh_states(store, ["a", "b"], T0)
    await check_repodata(session, s, store, T0)
    capped = replace(s, repodata_max_probes=1)  # the master only
    farm.hits.clear()
    farm.put("a", REPOMD, V3)
    state = await check_repodata(session, capped, store, T0 + 60)
    assert state is not None
    assert farm.hits == [f"master/{REPOMD}"]
    assert state.mirrors["a"][DIR] is RepoCheck.CURRENT  # not probed again: kept
    assert state.mirrors["b"][DIR] is RepoCheck.MISMATCHED


async def test_hook_over_redis(farm: Farm, session: aiohttp.ClientSession, redis_url: str) -> None:
    """The hook the poller calls, writing through Redis where other processes read it."""
    s = config(farm, ["a", "b"])
    farm.put("master", REPOMD, V1)
    farm.put("a", REPOMD, V1)
    farm.put("b", REPOMD, b"garbage")
    writer, reader = RedisStore(redis_url), RedisStore(redis_url)
    try:
        await fresh_states(writer, ["a", "b"], T0)
        hook = make_repodata_pass(s, writer, clock=lambda: T0)
        await hook(session, PassResult(MasterState((), T0), (), T0, 0.0))
        data = await reader.load()
        assert data.repodata is not None
        assert dict(data.repodata.mirrors["a"]) == {DIR: RepoCheck.CURRENT}
        assert dict(data.repodata.mirrors["b"]) == {DIR: RepoCheck.MISMATCHED}
        snap = Snapshot.build(s.mirrors, data, T0)
        assert [c.bad_repodata for c in snap.candidates] == [frozenset(), frozenset({DIR})]
    finally:
        await writer.close()
        await reader.close()


async def test_unreadable_store_writes_nothing(
    farm: Farm, session: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    s = config(farm, ["a"])
    store = RedisStore(redis_server.url, timeout=0.5)
    try:
        with redis_server.stopped():
            assert await check_repodata(session, s, store, T0) is None
        assert farm.hits == []
    finally:
        await store.close()
