"""Never a 404: confirm a file on the chosen mirror with a HEAD before sending a client there.

For a path the poller has not vouched for (an ISO, a contrib tarball; not yum's repodata, which
the poller and its passes watch), `Verifier.target` asks the ranked mirrors in turn with a HEAD
of at most `verify_timeout` (<= 1 s) and sends the client to the first that has it, or to the
master when none does. Answers are cached per mirror and path, positive and negative, each with
its TTL; a cached answer costs no I/O, and concurrent requests for the same unanswered file
share one HEAD. At most `MAX_LOOKUPS` HEADs are made for one request, so a client waits at most
that many timeouts.

Each HEAD must fit the budgets of `core.budget` (the client's network, the mirror, the whole
process). One that does not is not made and not queued: the request is answered from what is
known, the ranked order minus the mirrors known to lack the file or, since the budget ran out,
a file of its directory.

For a file whose master facts are known (`facts`, the hasher's sizes and hashes), a mirror
answering 2xx with another ``Content-Length`` than the master's size does not have it: that is
a truncated or wrong copy, recorded as a `BadCopy` (`on_bad`) for the status page. A cached
"has it" counts only for the size it was checked against, so a new master version is checked
afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextvars import ContextVar

import aiohttp

from redirector.config.settings import Settings
from redirector.core.budget import Budget, Limits, Refusal, directory
from redirector.core.clientip import network_key
from redirector.core.filefacts import BadCopy, FileFacts
from redirector.core.models import Mirror
from redirector.core.selection import Ranked
from redirector.core.topology import fallback_target
from redirector.core.ttlmap import TTLMap
from redirector.poll.probe import OffHost, ProbeError, Tally, fetch, open_session
from redirector.router import Routed
from redirector.snapshot import Snapshot, SnapshotHolder

log = logging.getLogger(__name__)

MAX_LOOKUPS = 3  # HEADs per client request; past that the master answers
DEPTH = 8  # ranked mirrors looked at per request (cached answers for them cost nothing)
CACHE_SIZE = 65536  # (mirror, path) answers kept per cache; the oldest go first
USER_AGENT = "redirector (SME Server mirror file check)"

Facts = Callable[[str], FileFacts | None]
Voucher = Callable[[Snapshot, Mirror, str], bool]
"""True when the poller (or a pass hook's findings in `snapshot`) vouches that `mirror` holds
`path`: no HEAD is made then. Register more in ``app[keys.VOUCHERS]``."""


# HEADs the current request has waited for. A context variable, not a Verifier field: requests
# interleave on the loop, and each one's task (or its connection's) sees only its own count.
_HEADS: ContextVar[int] = ContextVar("redirector_file_check_heads", default=0)


def start_request() -> int:
    """Call before `Verifier.target`; hand the result to `heads_waited` after it."""
    return _HEADS.get()


def heads_waited(start: int) -> int:
    """HEADs the current request waited for since `start_request` returned `start`."""
    return _HEADS.get() - start


def is_repodata(path: str) -> bool:
    """yum metadata: watched by the poller's passes, never HEAD-checked per request."""
    return (
        "/repodata/" in path
        or path.startswith("repodata/")
        or path.endswith("/repodata")
        or path == "repodata"
    )


def needs_check(path: str) -> bool:
    """Whether a request for `path` (below the tree root) is HEAD-checked at all."""
    return bool(path) and not is_repodata(path)


def open_check_session(settings: Settings) -> aiohttp.ClientSession:
    """The HEAD checks' own session: separate from the poller's, so a long pass never holds
    the connections a waiting client needs."""
    return open_session(
        settings.verify_timeout,
        connect_timeout=settings.verify_timeout,
        headers={"User-Agent": USER_AGENT},
        limit=64,
    )


class Verifier:
    """Picks, among a decision's ranked mirrors, the first that has the file.

    `session` None or `settings.verify_files` false: checks nothing, as before this existed.
    `clock` (monotonic seconds) drives the caches' TTLs and the budgets (`limits`, the
    defaults of `core.budget.Limits` when None); injectable for tests. `current`, when given,
    returns the live settings (a reload may turn checks off, or on again if they were on at
    startup, and move the master); timeouts, TTLs and probe paths are fixed at startup.
    """

    def __init__(
        self,
        settings: Settings,
        session: aiohttp.ClientSession | None,
        holder: SnapshotHolder,
        *,
        vouchers: Sequence[Voucher] = (),
        clock: Callable[[], float] = time.monotonic,
        current: Callable[[], Settings] | None = None,
        limits: Limits | None = None,
        facts: Facts | None = None,
        on_bad: Callable[[BadCopy], None] | None = None,
        vetoed: Callable[[str, str, float], bool] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.session = session
        self.holder = holder
        self.settings = settings
        self.current = current
        self.timeout = settings.verify_timeout
        self.vouchers = vouchers
        self.facts = facts
        self.on_bad = on_bad
        self.vetoed = vetoed
        self.wall = wall
        self.probes = dict(settings.coverage_probes)
        # The (mirror, coverage probe path) pairs the poller found present, in the snapshot
        # last looked at (snapshots are immutable).
        self._seen: Snapshot | None = None
        self._probed: frozenset[tuple[str, str]] = frozenset()
        # -> the master size it was checked against (-1: none known then)
        self.has: TTLMap[tuple[str, str], int] = TTLMap(CACHE_SIZE, settings.verify_ttl)
        self.lacks: TTLMap[tuple[str, str], str] = TTLMap(CACHE_SIZE, settings.verify_negative_ttl)
        # (mirror, directory) -> why a file of it was missing: consulted only past the budget
        self.lacks_dir: TTLMap[tuple[str, str], str] = TTLMap(
            CACHE_SIZE, settings.verify_negative_ttl
        )
        self._inflight: dict[tuple[str, str], asyncio.Task[str | None]] = {}
        self._requests = Tally()  # HEAD requests made, redirects included
        self.clock = clock
        self.budget = Budget(limits)
        self.refused: Counter[Refusal] = Counter()  # HEADs not made, by the budget they missed

    def known(self, routed: Routed) -> str | None:
        """`target`'s answer when it needs no HEAD, from the caches alone; None when a HEAD
        might be needed (then await `target`). The usual case, a file already known on the
        chosen mirror, costs a cache lookup and no task."""
        settings = self.current() if self.current is not None else self.settings
        enabled = settings.verify_files and self.session is not None
        if not enabled or routed.fallback or not needs_check(routed.path):
            return routed.target
        path = routed.path
        now = self.clock()
        size = self._size(path)
        snapshot = self.holder.current
        if self._seen is not snapshot:
            self._look_at(snapshot)
        # What `_vouched` would look at, looked up once: it answers False but for these.
        vouching = size < 0 and (self._probed or self.vouchers)
        has, lacks = self.has, self.lacks
        affordable = True
        where = ""  # the file's directory, once past a budget
        vetoed = self.vetoed
        wall = self.wall() if vetoed is not None else 0.0
        for ranked in routed.top(DEPTH):
            name = ranked.mirror.name
            if vetoed is not None and vetoed(name, path, wall):
                continue  # caught with a wrong copy (`_unvetoed`), looked at one by one here
            key = (name, path)
            if has.get(key, now) == size or (
                vouching and self._vouched(snapshot, ranked.mirror, path, size)
            ):
                return ranked.base + path
            if lacks.holds(key, now):
                continue
            if affordable:
                if key in self._inflight:
                    return None  # a HEAD under way: `target` waits for it
                refusal = self.budget.peek(network_key(routed.client.ip), name, now)
                if refusal is None:
                    return None  # a HEAD is affordable: `target` makes it
                self.refused[refusal] += 1
                affordable = False
                where = directory(path)
            # Past a budget, as in `target`: the ranked order, minus what is known.
            if not self.lacks_dir.holds((name, where), now):
                return ranked.base + path
        return fallback_target(settings.fallback, settings.master, path)

    async def target(self, routed: Routed) -> str:
        """Where to send the client: `routed.target` when the file is there or needs no check,
        else the next ranked mirror that has it, else the master. Never raises."""
        settings = self.current() if self.current is not None else self.settings
        enabled = settings.verify_files and self.session is not None
        if not enabled or routed.fallback or not needs_check(routed.path):
            return routed.target
        path = routed.path
        snapshot = self.holder.current
        network = network_key(routed.client.ip)
        size = self._size(path)
        lookups = 0
        affordable = True
        vetoed, wall = self.vetoed, self.wall()
        for ranked in routed.top(DEPTH):
            name = ranked.mirror.name
            if vetoed is not None and vetoed(name, path, wall):
                continue  # caught with a wrong copy (`_unvetoed`), looked at one by one here
            key = (name, path)
            url = ranked.base + path
            now = self.clock()  # read again each time: a HEAD awaited below takes a while
            if self.has.get(key, now) == size or self._vouched(snapshot, ranked.mirror, path, size):
                return url
            if self.lacks.holds(key, now):
                continue
            if affordable:
                if lookups >= MAX_LOOKUPS:
                    break
                if key not in self._inflight:  # a HEAD already under way costs no budget
                    refusal = self.budget.admit(network, name, now)
                    if refusal is not None:
                        self.refused[refusal] += 1
                        affordable = False
            if not affordable:
                # Past a budget: the ranked order, minus what is known. A mirror found lacking
                # a file of this directory is passed over, as it likely lacks this one too.
                if self.lacks_dir.holds((name, directory(path)), now):
                    continue
                return url
            lookups += 1
            if await self._lookup(key, url, size):
                return url
        return fallback_target(settings.fallback, settings.master, path)

    def checks(self, routed: Routed) -> bool:
        """Whether `target` looks at this decision at all (the same test it makes first)."""
        settings = self.current() if self.current is not None else self.settings
        enabled = settings.verify_files and self.session is not None
        return enabled and not routed.fallback and needs_check(routed.path)

    async def holders(self, routed: Routed, depth: int = DEPTH) -> list[Ranked]:
        """The ranked mirrors (of the first `depth`) that have the file, in rank order: those
        cached or vouched for, and those a HEAD made now confirms (all at once, so a client
        waits one timeout at most). With the check off, every ranked mirror."""
        settings = self.current() if self.current is not None else self.settings
        ranked = list(routed.top(depth))
        if not (settings.verify_files and self.session is not None) or routed.fallback:
            return ranked
        if not needs_check(routed.path):
            return ranked
        path = routed.path
        snapshot = self.holder.current
        size = self._size(path)
        verdicts: list[bool | asyncio.Task[bool]] = []
        ranked = self._unvetoed(ranked, path)
        now = self.clock()
        for r in ranked:
            key = (r.mirror.name, path)
            if self.has.get(key, now) == size or self._vouched(snapshot, r.mirror, path, size):
                verdicts.append(True)
            elif self.lacks.holds(key, now):
                verdicts.append(False)
            else:
                verdicts.append(asyncio.ensure_future(self._lookup(key, r.base + path, size)))
        out = []
        for r, v in zip(ranked, verdicts, strict=True):
            if v is True or (not isinstance(v, bool) and await v):
                out.append(r)
        return out

    def _unvetoed(self, ranked: Sequence[Ranked], path: str) -> list[Ranked]:
        """`ranked` without the mirrors caught serving a wrong copy of `path`."""
        if self.vetoed is None:
            return list(ranked)
        now = self.wall()
        return [r for r in ranked if not self.vetoed(r.mirror.name, path, now)]

    def _size(self, path: str) -> int:
        """The master's size of `path`, -1 when not known."""
        if self.facts is None:
            return -1
        try:
            facts = self.facts(path)
        except Exception:  # a faulty lookup must not fail a redirect
            log.exception("file facts lookup failed")
            return -1
        return -1 if facts is None else facts.size

    def _look_at(self, snapshot: Snapshot) -> None:
        probes = self.probes
        self._seen = snapshot
        self._probed = frozenset(
            (c.mirror.name, probes[sub])
            for c in snapshot.candidates
            if c.state is not None
            for sub in c.state.covered
            if sub in probes
        )

    def _vouched(self, snapshot: Snapshot, mirror: Mirror, path: str, size: int = -1) -> bool:
        if size >= 0:
            return False  # a file whose size we know is only believed after its own HEAD
        # The coverage probe paths the poller found present need no second look.
        if self._seen is not snapshot:
            self._look_at(snapshot)
        if (mirror.name, path) in self._probed:
            return True
        for vouch in self.vouchers:
            try:
                if vouch(snapshot, mirror, path):
                    return True
            except Exception:  # a faulty extension must not fail a redirect
                log.exception("voucher %r failed", vouch)
        return False

    async def _lookup(self, key: tuple[str, str], url: str, size: int = -1) -> bool:
        """The cached or fresh answer for `key`; concurrent askers share one HEAD."""
        _HEADS.set(_HEADS.get() + 1)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._head(url, size, key))
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._settle(key, t, size))
        # shield: a client hanging up must not cancel the HEAD others are waiting on
        missing = await asyncio.shield(task)
        return missing is None

    def _settle(self, key: tuple[str, str], task: asyncio.Task[str | None], size: int) -> None:
        self._inflight.pop(key, None)
        self.budget.release(key[0])
        if task.cancelled():
            return
        missing = task.result()  # _head never raises
        now = self.clock()
        if missing is None:
            self.has.set(key, size, now)
        else:
            self.lacks.set(key, missing, now)
            self.lacks_dir.set((key[0], directory(key[1])), missing, now)
            log.debug("%s does not have %s: %s", key[0], key[1], missing)

    async def _head(
        self, url: str, size: int = -1, key: tuple[str, str] | None = None
    ) -> str | None:
        """None when the mirror has `url`; otherwise why not (status, error, timeout, a size
        other than the master's `size`).

        A redirect within the same host is followed; a redirect to another host is taken as
        the mirror's own way of serving the file (not followed: the redirector does not probe
        hosts a mirror names).
        """
        assert self.session is not None
        try:
            got = await fetch(
                self.session,
                url,
                timeout=self.timeout,
                method="HEAD",
                encoded=True,
                tally=self._requests,
            )
        except OffHost:
            return None
        except ProbeError as e:
            return str(e)
        except Exception as e:  # a bug here must cost a HEAD, never the client's redirect
            log.exception("HEAD %s failed unexpectedly", url)
            return f"{type(e).__name__}: {e}"[:200]
        if not 200 <= got.status < 300:
            return f"HTTP {got.status}"
        length = (got.headers or {}).get("Content-Length", "")
        if size >= 0 and length.isdigit() and int(length) != size:
            reason = f"size {int(length)}, the master's {size}"
            if key is not None and self.on_bad is not None:
                try:
                    self.on_bad(BadCopy(key[0], key[1], reason, self.wall()))
                except Exception:  # recording it must not cost the client its redirect
                    log.exception("recording a bad copy failed")
            return reason
        return None

    @property
    def heads(self) -> int:
        """HEAD requests made so far, for tests and the status views."""
        return self._requests.requests

    async def close(self) -> None:
        """Cancel HEADs still in flight (shutdown)."""
        for task in list(self._inflight.values()):
            task.cancel()
        for task in list(self._inflight.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
