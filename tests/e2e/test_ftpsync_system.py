"""The real ftpsync (Debian's package) in a two-tier chain, staged push included, polled for real.

A loopback rsync daemon exports the master tree and tier 1; ftpsync syncs tier 1 from the
master and tier 2 from tier 1, each with its own MIRRORNAME (which differs from the host the
mirrors are served at over HTTP, 127.0.0.1), writing what real mirrors carry: its own trace,
the stage-1 trace, `_hierarchy`, `_traces`, the lock while it runs. An aiohttp static server
serves the three trees; the poller and check-mirror read them.

ftpsync takes its trace dates from `date`; the first sync is run with a `date` two hours
behind (a shim on PATH that adds an offset to the real clock), as if it had happened then, so
that the master's next state can be dated between that sync and the staged push that brings
it, as on a real mirror, without the test waiting for hours.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from redirector.cli.checkmirror import CheckOptions, CheckResult, Verdict, check_mirror
from redirector.config.settings import parse_settings
from redirector.core.models import MirrorState, Status
from redirector.core.trace import parse_trace
from redirector.poll.poller import poll_once
from redirector.store.memory import MemoryStore
from tests.conftest import free_port

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]

MASTER_TRACE = "project/trace/mirror.contribs.org"
NAMES = {"tier1": "tier1.mirrors.example.net", "tier2": "tier2.mirrors.example.org"}
UPSTREAM = {"tier1": "master", "tier2": "tier1"}  # rsync module each tier syncs from
REPOS = ("smeos", "smeupdates", "smeextras")
DATE_SHIM = """#!/bin/sh
# The real date, FTPSYNC_CLOCK_OFFSET seconds away from now.
exec {date} -d "@$(( $({date} +%s) + ${{FTPSYNC_CLOCK_OFFSET:-0}} ))" "$@"
"""
RSYNCD = """use chroot = false
pid file = {root}/rsyncd.pid
log file = {root}/rsyncd.log
[master]
path = {root}/master
read only = true
uid = {uid}
gid = {gid}
[tier1]
path = {root}/tier1
read only = true
uid = {uid}
gid = {gid}
"""
# Stock ftpsync-smeserver.conf settings; stage 1 leaves the yum metadata for stage 2, as
# Debian's stage 1 leaves Packages and Release.
CONF = """MIRRORNAME="{name}"
TO="{root}/{tier}/"
RSYNC_HOST="127.0.0.1"
RSYNC_PATH="{upstream}"
RSYNC_EXTRA="--port={port}"
RSYNC_OPTIONS1="--exclude=repodata/"
LOGDIR="{root}/home-{tier}/log"
"""


def date_u(ts: float) -> str:
    return time.strftime("%a %b %e %H:%M:%S UTC %Y", time.gmtime(ts))


@dataclass
class Chain:
    root: Path
    port: int  # the rsync daemon
    web: str = ""  # base URL of the HTTP server, "http://127.0.0.1:<port>/"

    def url(self, tree: str) -> str:
        return f"{self.web}{tree}/"

    def master_state(self, ts: float, version: int) -> None:
        """The master publishes a new state: its trace dated `ts`, new metadata and packages."""
        master = self.root / "master"
        for repo in REPOS:
            repo_dir = master / "releases/10" / repo / "x86_64"
            (repo_dir / "repodata").mkdir(parents=True, exist_ok=True)
            (repo_dir / "repodata/repomd.xml").write_text(f"<repomd>{repo} {version}</repomd>\n")
            for old in repo_dir.glob("*.rpm"):
                old.unlink()
            (repo_dir / f"{repo}-{version}.rpm").write_text(f"{repo} {version}\n")
        (master / MASTER_TRACE).write_text(f"{date_u(ts)}\nDate: {ts}\n")

    async def ftpsync(self, tier: str, *stage: str, offset: int = 0) -> None:
        """Run the real ftpsync for `tier` (sync:all, or the stage given), `offset` s off."""
        env = {
            **os.environ,
            "HOME": str(self.root / f"home-{tier}"),
            "PATH": f"{self.root / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "LOGNAME": os.environ.get("LOGNAME", "root"),
            "FTPSYNC_CLOCK_OFFSET": str(offset),
        }
        env.pop("SSH_ORIGINAL_COMMAND", None)
        proc = await asyncio.create_subprocess_exec(
            "ftpsync", "sync:archive:smeserver", *stage, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        logs = sorted((self.root / f"home-{tier}/log").glob("*"))
        said = "\n".join(p.read_text(errors="replace") for p in logs if p.is_file())
        assert proc.returncode == 0, f"ftpsync {tier} {stage}: {out.decode()}\n{said}"

    def trace(self, tier: str, name: str) -> float:
        return parse_trace((self.root / tier / "project/trace" / name).read_bytes()).date


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    for tool in ("ftpsync", "rsync"):
        assert shutil.which(tool), f"{tool} is not installed (dev/test.sh installs it)"
    root = tmp_path
    chain = Chain(root, free_port())
    (root / "bin").mkdir()
    shim = root / "bin/date"
    shim.write_text(DATE_SHIM.format(date=shutil.which("date")))
    shim.chmod(0o755)
    master = root / "master"
    for d in (
        "releases/testing/11.0beta1/smeos",
        "contribs/someone",
        "obsolete/7",
        "project/trace",
    ):
        (master / d).mkdir(parents=True)
    (master / "releases/testing/11").symlink_to("11.0beta1")
    for tier, name in NAMES.items():
        (root / tier).mkdir()
        conf = root / f"home-{tier}/.config/ftpsync/ftpsync-smeserver.conf"
        conf.parent.mkdir(parents=True)
        upstream = UPSTREAM[tier]
        conf.write_text(
            CONF.format(name=name, root=root, tier=tier, upstream=upstream, port=chain.port)
        )
    (root / "rsyncd.conf").write_text(RSYNCD.format(root=root, uid=os.getuid(), gid=os.getgid()))
    daemon = subprocess.Popen(
        ["rsync", "--daemon", "--no-detach", f"--config={root / 'rsyncd.conf'}",
         f"--port={chain.port}", "--address=127.0.0.1"],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(
            ["rsync", f"--port={chain.port}", "127.0.0.1::"], capture_output=True, check=False
        ).returncode:
            assert daemon.poll() is None, "rsync --daemon exited"
            assert time.monotonic() < deadline, "rsync --daemon does not answer"
            time.sleep(0.1)
        yield chain
    finally:
        daemon.terminate()
        daemon.wait(10)


@pytest.fixture
async def served(chain: Chain) -> AsyncIterator[Chain]:
    """The three trees over HTTP on loopback, directory listings and symlinks as on a mirror."""
    app = web.Application()
    for tree in ("master", *NAMES):
        app.router.add_static(f"/{tree}/", chain.root / tree, show_index=True, follow_symlinks=True)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    chain.web = f"http://127.0.0.1:{port}/"
    try:
        yield chain
    finally:
        await runner.cleanup()


async def poll(chain: Chain, store: MemoryStore) -> dict[str, MirrorState]:
    mirrors = "".join(
        f'[[mirror]]\nname = "{t}"\nhttp = "{chain.url(t)}"\ncountry = "NL"\n'
        f"latitude = 52.0\nlongitude = 5.0\n"
        for t in NAMES
    )
    settings = parse_settings(
        f'[redirector]\nmaster = "{chain.url("master")}"\nprobe_timeout = "5s"\n{mirrors}',
        "chain.toml",
    )
    async with aiohttp.ClientSession() as session:
        result = await poll_once(session, settings, store)
    return {s.name: s for s in result.states}


async def check(chain: Chain, tier: str) -> dict[str, CheckResult]:
    """check-mirror with no --trace-name, as an operator runs it."""
    results = await check_mirror(
        chain.url(tier), CheckOptions(master=chain.url("master"), timeout=5.0)
    )
    return {r.name: r for r in results}


def failed(results: dict[str, CheckResult]) -> dict[str, str]:
    return {n: r.reason for n, r in results.items() if r.verdict is Verdict.FAIL}


async def test_two_tiers_and_a_staged_push_with_the_real_ftpsync(served: Chain) -> None:
    chain, store = served, MemoryStore()
    now = time.time()
    v1, v2 = float(int(now - 3 * 3600)), float(int(now - 3600))
    chain.master_state(v1, 1)
    # Two hours ago: both tiers synced the master's state v1 completely (sync:all).
    await chain.ftpsync("tier1", offset=-7200)
    await chain.ftpsync("tier2", offset=-7200)
    hierarchy = (chain.root / "tier2/project/trace/_hierarchy").read_text().splitlines()
    assert [line.split()[1] for line in hierarchy] == [NAMES["tier1"], NAMES["tier2"]]

    states = await poll(chain, store)
    for tier, name in NAMES.items():
        st = states[tier]
        assert (st.status, st.trace_name, st.lag(time.time())) == (Status.UP, name, 0.0), st
        assert st.own_date == chain.trace(tier, name)
        assert st.note is None, st.note
        results = await check(chain, tier)
        assert failed(results) == {}, results
        assert results["own-trace"].verdict is Verdict.PASS
        assert "MIRRORNAME from _hierarchy" in results["own-trace"].reason

    # The master publishes v2 and pushes in stages (runmirrors' `staged`/`mhop`): stage 1
    # down the chain; stage 2 comes after PUSHDELAY.
    chain.master_state(v2, 2)
    await chain.ftpsync("tier1", "sync:stage1")
    await chain.ftpsync("tier2", "sync:stage1")
    for tier, name in NAMES.items():
        trace_dir = chain.root / tier / "project/trace"
        assert chain.trace(tier, MASTER_TRACE.rsplit("/", 1)[1]) == v2  # the copy came in stage 1
        assert chain.trace(tier, name + "-stage1") > chain.trace(tier, name)
        last = (trace_dir / "_hierarchy").read_text().splitlines()[-1].split()
        assert last[:2] == [name + "-stage1", name]
        assert not (chain.root / tier / f"Archive-Update-in-Progress-{name}").exists()
        repomd = chain.root / tier / "releases/10/smeos/x86_64/repodata/repomd.xml"
        assert repomd.read_text() == "<repomd>smeos 1</repomd>\n"  # metadata: stage 2's

    states = await poll(chain, store)
    for tier in NAMES:
        st = states[tier]
        assert st.status is Status.SYNCING, st.error
        assert st.master_date == v1  # its indexes are still those of v1
        assert st.behind_since is not None
        assert "stage 1 finished" in (st.note or "")
        results = await check(chain, tier)
        assert failed(results) == {}, results
        assert results["own-trace"].verdict is Verdict.WARN
        assert "between the stages" in results["own-trace"].reason

    await chain.ftpsync("tier1", "sync:stage2")
    await chain.ftpsync("tier2", "sync:stage2")
    states = await poll(chain, store)
    for tier, name in NAMES.items():
        st = states[tier]
        assert (st.status, st.master_date, st.lag(time.time())) == (Status.UP, v2, 0.0), st
        assert (st.trace_name, st.note) == (name, None)
        results = await check(chain, tier)
        assert failed(results) == {}, results
        assert {r.verdict for r in results.values()} <= {Verdict.PASS, Verdict.INFO}, results
