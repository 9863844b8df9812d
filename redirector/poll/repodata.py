"""Repodata consistency: each mirror's repomd.xml against the master's, per repo and arch.

After each poller pass (in the process holding the poller lease) this pass fetches the master's
``repodata/repomd.xml`` for every checked (version, repo, arch), keeps the history of the
versions it has seen (size, timestamp, md5/sha1/sha256/sha512: what a metalink carries), then
fetches the same file from every mirror eligible for that repo and compares sha256:

- current: the master's current version;
- alternate: an earlier version the master served until less than `alternates_window` ago
  (MirrorManager keeps such alternates for 4 days; librepo accepts any of them);
- mismatched: anything else (a half-synced mirror, an HTML error page served with 200, a
  version older than the window);
- missing: 404/410, the mirror has no metadata there.

Mismatched and missing mirrors are left out of that repo's lists and metalinks and of redirects
for its ``repodata/`` paths; its packages stay servable. A probe that fails otherwise (timeout,
5xx) keeps the previous verdict: a blip is not evidence. The probe count per pass is capped.

The judging functions are pure; `make_repodata_pass` builds the hook the poller calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence

import aiohttp

from redirector.config.settings import Settings
from redirector.core.mirrorlist import repo_path
from redirector.core.models import (
    BAD_REPODATA,
    Mirror,
    MirrorState,
    RepoCheck,
    RepodataState,
    RepomdHistory,
    RepomdVersion,
)
from redirector.core.selection import Candidate, check
from redirector.poll.poller import PassHook, PassResult
from redirector.poll.probe import Fetched, ProbeError, fetch
from redirector.store.base import Store, StoreError

log = logging.getLogger(__name__)

MAX_REPOMD = 1 << 20  # a repomd.xml is a few kB; anything near this is not one
MAX_VERSIONS = 16  # history kept per repo, whatever the window says
REPOMD = "repodata/repomd.xml"


# --- pure: targets, versions, verdicts -----------------------------------------------------


def targets(settings: Settings) -> list[str]:
    """The repo directories to check (``releases/10/smeos/x86_64``), newest version first."""
    versions = sorted(settings.repodata_versions, key=_version_key, reverse=True)
    return [
        f"{repo_path(repo, ver, settings.testing_versions)}/{arch}"
        for ver in versions
        for repo in settings.repos
        for arch in settings.repodata_arches
    ]


def _version_key(v: str) -> tuple[int, str]:
    m = re.match(r"\d+", v)
    return (int(m.group()) if m else -1, v)


_DATA_TIMESTAMP = re.compile(rb"<(?:\w+:)?timestamp>\s*(\d{1,12})\s*</(?:\w+:)?timestamp>")
_REVISION = re.compile(rb"<(?:\w+:)?revision>\s*(\d{1,12})\s*</(?:\w+:)?revision>")


def repomd_timestamp(body: bytes, last_modified: float | None, now: float) -> int:
    """The timestamp a metalink gives this repomd.xml: the newest <data><timestamp>, as yum
    compares it (yum's repoMDObject and MirrorManager both take that maximum; librepo ignores
    it); without any, a numeric <revision>, else the Last-Modified time, else `now`."""
    stamps = [int(m.group(1)) for m in _DATA_TIMESTAMP.finditer(body)]
    if stamps:
        return max(stamps)
    m = _REVISION.search(body)
    if m:
        return int(m.group(1))
    return int(last_modified if last_modified is not None else now)


def version_of(body: bytes, last_modified: float | None, now: float) -> RepomdVersion:
    """What a metalink says of this repomd.xml, first seen at `now`."""
    timestamp = repomd_timestamp(body, last_modified, now)
    return RepomdVersion(
        size=len(body),
        timestamp=timestamp,
        md5=hashlib.md5(body, usedforsecurity=False).hexdigest(),
        sha1=hashlib.sha1(body, usedforsecurity=False).hexdigest(),
        sha256=hashlib.sha256(body).hexdigest(),
        sha512=hashlib.sha512(body).hexdigest(),
        first_seen=now,
    )


def accepted(
    history: Sequence[RepomdVersion], now: float, window: float
) -> tuple[RepomdVersion | None, tuple[RepomdVersion, ...]]:
    """(current, alternates newest first): earlier versions superseded less than `window` ago."""
    if not history:
        return None, ()
    alternates = tuple(
        history[i]
        for i in range(len(history) - 2, -1, -1)
        if history[i + 1].first_seen >= now - window
    )
    return history[-1], alternates


def record(
    history: Sequence[RepomdVersion], seen: RepomdVersion, now: float, window: float
) -> tuple[RepomdVersion, ...]:
    """The history after the master was seen serving `seen`: appended when it is new, an
    earlier copy of it dropped (a rollback makes it current again), versions outside the
    window pruned, at most MAX_VERSIONS kept."""
    hist = list(history)
    if not hist or hist[-1].sha256 != seen.sha256:
        hist = [v for v in hist if v.sha256 != seen.sha256] + [seen]
    current, alternates = accepted(hist, now, window)
    assert current is not None
    keep = {v.sha256 for v in alternates[: MAX_VERSIONS - 1]}
    return (*(v for v in hist[:-1] if v.sha256 in keep), current)


def judge(sha256: str, history: Sequence[RepomdVersion], now: float, window: float) -> RepoCheck:
    """A mirror's repomd.xml (by its sha256) against the master's history."""
    current, alternates = accepted(history, now, window)
    if current is not None and sha256 == current.sha256:
        return RepoCheck.CURRENT
    if any(sha256 == v.sha256 for v in alternates):
        return RepoCheck.ALTERNATE
    return RepoCheck.MISMATCHED


def eligible(
    mirrors: Sequence[Mirror], states: Mapping[str, MirrorState], directory: str, now: float,
    max_lag: float,
) -> list[Mirror]:  # fmt: skip
    """Mirrors worth probing for `directory`: those a redirect there could go to today."""
    path = f"{directory}/{REPOMD}"
    return [
        m
        for m in mirrors
        if check(Candidate(m, states.get(m.name)), path, "http", False, now, max_lag) is None
    ]


# --- I/O -----------------------------------------------------------------------------------


async def get_repomd(session: aiohttp.ClientSession, url: str, timeout: float) -> Fetched:
    """GET `url` as librepo would (no content coding, so the bytes hash as a client sees them),
    with a total timeout, a body cap and redirects only within the same host."""
    # The poller's fetch: the whole body (one read() returns only what has arrived, and a
    # hash of half a file is a false mismatch), capped, and its same-host redirect rule.
    return await fetch(
        session, url, timeout=timeout, max_bytes=MAX_REPOMD, headers={"Accept-Encoding": "identity"}
    )


class _Pass:
    """One repodata pass: the probes it may still make, and what it has seen so far."""

    def __init__(
        self, session: aiohttp.ClientSession, settings: Settings, prev: RepodataState | None,
        now: float,
    ) -> None:  # fmt: skip
        self.session = session
        self.settings = settings
        self.now = now
        self.window = settings.alternates_window
        self.prev_repos = dict(prev.repos) if prev else {}
        self.prev_checks = {n: dict(v) for n, v in prev.mirrors.items()} if prev else {}
        self.gate = asyncio.Semaphore(settings.probe_concurrency)
        self.left = settings.repodata_max_probes
        self.skipped = 0

    def take(self) -> bool:
        """Spend one probe of the pass's budget; False when none is left."""
        if self.left <= 0:
            self.skipped += 1
            return False
        self.left -= 1
        return True

    async def fetch(self, url: str) -> Fetched | ProbeError:
        async with self.gate:
            try:
                return await get_repomd(self.session, url, self.settings.probe_timeout)
            except ProbeError as e:
                return e

    async def look(self, directory: str, hist: tuple[RepomdVersion, ...]) -> RepomdHistory | None:
        """`hist` after one more look at the master's `directory`; None: over budget."""
        if not self.take():
            return None
        got = await self.fetch(f"{self.settings.origin}{directory}/{REPOMD}")
        if isinstance(got, ProbeError):
            return RepomdHistory(hist, self.now, str(got))
        if got.status != 200:
            return RepomdHistory(hist, self.now, f"HTTP {got.status}")
        seen = version_of(got.body, got.last_modified, self.now)
        return RepomdHistory(record(hist, seen, self.now, self.window), self.now, None)

    async def masters(self, dirs: Sequence[str]) -> tuple[dict[str, RepomdHistory], list[str]]:
        """The master's histories for `dirs`, and the directories it served this pass.

        A directory over the probe budget keeps its previous history."""
        prev = self.prev_repos
        looked = await asyncio.gather(
            *(self.look(d, prev[d].history if d in prev else ()) for d in dirs)
        )
        repos = {d: h for d, h in prev.items() if d in dirs}
        repos.update({d: h for d, h in zip(dirs, looked, strict=True) if h is not None})
        live = [d for d, h in zip(dirs, looked, strict=True) if h is not None and h.error is None]
        return repos, live

    async def mirrors(
        self, jobs: Sequence[tuple[str, Mirror]]
    ) -> dict[tuple[str, str], str | None]:
        """(directory, mirror name) -> sha256 of its repomd.xml, None when it is missing.

        Pairs whose probe failed otherwise are left out: they keep their previous verdict.
        """
        answers = await asyncio.gather(*(self.fetch(f"{m.base}{d}/{REPOMD}") for d, m in jobs))
        shas: dict[tuple[str, str], str | None] = {}
        for (d, m), got in zip(jobs, answers, strict=True):
            if isinstance(got, ProbeError):
                continue
            if got.status in (404, 410):
                shas[(d, m.name)] = None
            elif got.status == 200:
                shas[(d, m.name)] = hashlib.sha256(got.body).hexdigest()
        return shas

    async def catch_up(
        self, repos: dict[str, RepomdHistory], shas: Mapping[tuple[str, str], str | None]
    ) -> None:
        """Look at the master again where a mirror holds a version we do not know: it may have
        synced one the master published after our first look."""
        again = sorted(
            {
                d
                for (d, _), sha in shas.items()
                if sha is not None
                and judge(sha, repos[d].history, self.now, self.window) is RepoCheck.MISMATCHED
            }
        )
        rechecked = await asyncio.gather(*(self.look(d, repos[d].history) for d in again))
        for d, h in zip(again, rechecked, strict=True):
            if h is not None and h.error is None:
                repos[d] = h

    def verdicts(
        self, repos: Mapping[str, RepomdHistory], shas: Mapping[tuple[str, str], str | None]
    ) -> dict[str, dict[str, RepoCheck]]:
        """Each configured mirror's verdicts: this pass's, else the previous ones still
        about a checked directory."""
        checks = {
            m.name: {d: v for d, v in self.prev_checks.get(m.name, {}).items() if d in repos}
            for m in self.settings.mirrors
        }
        for (d, name), sha in shas.items():
            checks[name][d] = (
                RepoCheck.MISSING
                if sha is None
                else judge(sha, repos[d].history, self.now, self.window)
            )
        return checks


async def check_repodata(
    session: aiohttp.ClientSession,
    settings: Settings,
    store: Store,
    now: float,
) -> RepodataState | None:
    """One repodata pass; the new state is written to the store and returned.

    None when the store cannot be read: nothing is written then, since verdicts judged
    against a lost history would all be "mismatched".
    """
    try:
        data = await store.load()
    except StoreError as e:
        log.warning("repodata pass cannot read the store: %s", e)
        return None
    run = _Pass(session, settings, data.repodata, now)
    repos, live = await run.masters(targets(settings))
    enabled = [m for m in settings.mirrors if m.enabled]
    jobs = [
        (d, m)
        for d in live
        for m in eligible(enabled, data.states, d, now, settings.max_lag)
        if run.take()
    ]
    shas = await run.mirrors(jobs)
    await run.catch_up(repos, shas)
    checks = run.verdicts(repos, shas)
    if run.skipped:
        log.warning(
            "repodata pass: probe cap %d reached, %d probes skipped (previous verdicts kept)",
            settings.repodata_max_probes,
            run.skipped,
        )
    log_transitions(run.prev_checks, checks)
    state = RepodataState(repos=repos, mirrors=checks, checked_at=now)
    try:
        await store.put_repodata(state)
    except StoreError as e:
        log.warning("repodata pass cannot write the store: %s", e)
    return state


def log_transitions(
    prev: Mapping[str, Mapping[str, RepoCheck]], new: Mapping[str, Mapping[str, RepoCheck]]
) -> None:
    """Log mirrors' metadata going bad and coming back, once each, in one line each per pass:
    a new master push makes many mirrors and repos mismatch at once, and one line per mirror
    and repo would bury everything else in the journal."""
    bad, good = transitions(prev, new)
    if bad:
        log.warning("repodata differs from the master's: %s", bad)
    if good:
        log.info("repodata matches the master again: %s", good)


def transitions(
    prev: Mapping[str, Mapping[str, RepoCheck]], new: Mapping[str, Mapping[str, RepoCheck]]
) -> tuple[str, str]:
    """(what went bad, what came back) in words, "" when nothing did: mirrors grouped under
    each verdict, each with its repo directories, e.g. "mismatched: au (releases/10/smeos/
    x86_64, releases/10/smeupdates/x86_64), br (...); missing: za (...)"."""
    went: dict[str, dict[str, list[str]]] = {}
    back: dict[str, list[str]] = {}
    for name, verdicts in new.items():
        before = prev.get(name, {})
        for d, v in verdicts.items():
            was_bad = before.get(d) in BAD_REPODATA
            if v in BAD_REPODATA and not was_bad:
                went.setdefault(v.value, {}).setdefault(name, []).append(d)
            elif was_bad and v not in BAD_REPODATA:
                back.setdefault(name, []).append(d)

    def listing(by_mirror: Mapping[str, list[str]]) -> str:
        return ", ".join(f"{n} ({', '.join(sorted(ds))})" for n, ds in sorted(by_mirror.items()))

    bad = "; ".join(f"{verdict}: {listing(went[verdict])}" for verdict in sorted(went))
    return bad, listing(back)


def make_repodata_pass(
    settings: Settings,
    store: Store | Callable[[], Store],
    clock: Callable[[], float] = time.time,
    current: Callable[[], Settings] | None = None,
) -> PassHook:
    """The hook the poller runs after each pass (only where it holds the lease).

    `current`, when given, returns the live settings (a reloaded config); `store` may be a
    callable, looked up at each pass (an app's store exists only once it runs). The pass result is
    not needed: the mirrors' states are read back from the store the poller has just
    written, together with the previous repodata state.
    """

    async def repodata_pass(session: aiohttp.ClientSession, _result: PassResult) -> None:
        st = store() if callable(store) else store
        await check_repodata(session, current() if current else settings, st, clock())

    return repodata_pass
