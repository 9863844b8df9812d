"""check-mirror: judging a candidate mirror before it joins, from a handful of small requests.

The judges (`judge_*`) are pure: they read `Answer`s (what one request got) and `now`, and
return a `CheckResult`. `check_mirror` does the fetching: about twenty small requests (HEAD, a
one-byte Range GET, traces and repomd.xml files, the root listing capped at 256 KiB), at most
four at a time, one TLS handshake for an https URL and one AAAA lookup of the candidate's host.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import ipaddress
import posixpath
import re
import socket
import ssl
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp

from redirector.config.settings import normalize_base_url
from redirector.core.ftpsync import STAGE1_SUFFIX, name_from_hierarchy, name_from_traces
from redirector.core.humanize import ago, duration, table, when
from redirector.core.judge import STAGE1_MAX
from redirector.core.trace import Trace, TraceError, is_future, lag_of, parse_trace, record_master
from redirector.poll.probe import ProbeError, fetch, open_session

DEFAULT_MASTER = "http://mirror.contribs.org/smeserver/"
DEFAULT_MASTER_TRACE = "project/trace/mirror.contribs.org"
# The wiki requires FollowSymLinks; release trees under testing/ are reached through a
# `releases/testing/<ver>` link (the wiki's build notes: "check that the link points to the
# correct testing release"). Which version is in testing changes, hence --symlink-path.
DEFAULT_SYMLINK = "releases/testing/11/"
DEFAULT_REPOMD = (
    "releases/10/smeos/x86_64/repodata/repomd.xml",
    "releases/10/smeupdates/x86_64/repodata/repomd.xml",
    "releases/10/smeextras/x86_64/repodata/repomd.xml",
)
MAX_REPOMD = 3  # each costs two small GETs; a few are enough to see metadata out of step
SUBTREES = ("releases/", "releases/testing/", "contribs/", "obsolete/")
OPTIONAL_SUBTREES = frozenset({"obsolete/"})  # the wiki suggests excluding it to save 16 GB
LOCK_PREFIX = "Archive-Update-in-Progress-"
ROOT_MAX_BYTES = 262144  # a tree root listing is a few KiB; a cap keeps a wrong URL cheap
CONCURRENCY = 4  # requests in flight against the candidate at once
CERT_WARN_DAYS = 14
USER_AGENT = "redirector check-mirror (SME Server mirror checker)"
FUTURE_SLACK = 300.0  # as the poller: clocks differ, a trace minutes ahead is not a lie

_LOCK_IN_LISTING = re.compile(re.escape(LOCK_PREFIX) + r"[A-Za-z0-9._-]+")


class Verdict(enum.Enum):
    """One check's outcome. Only FAIL makes the command exit 1."""

    PASS = "PASS"  # noqa: S105  # a verdict, not a password
    INFO = "INFO"  # a fact worth knowing, neither good nor bad (no AAAA, an http URL)
    WARN = "WARN"  # usable, but something to fix or know
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str  # stable identifier, e.g. "root", "subtree:obsolete/", "repomd:releases/10/..."
    verdict: Verdict
    reason: str


@dataclass(frozen=True, slots=True)
class Answer:
    """What one request got; the judges read nothing else."""

    url: str
    status: int | None  # None: no HTTP answer, see `error`
    body: bytes = b""
    last_modified: float | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class CheckOptions:
    """What to check against; every field has the default `redirector check-mirror` uses."""

    master: str = DEFAULT_MASTER
    master_trace: str = DEFAULT_MASTER_TRACE
    max_lag: float = 8 * 3600.0
    timeout: float = 10.0  # per request
    # The mirror's own trace under project/trace/ (its ftpsync MIRRORNAME); None: found from
    # its _hierarchy or _traces when no trace answers under the URL's host.
    trace_name: str | None = None
    exclude: tuple[str, ...] = ()  # subtrees the mirror declares it leaves out
    symlink_path: str = DEFAULT_SYMLINK
    repomd_paths: tuple[str, ...] = DEFAULT_REPOMD
    ca_file: str | None = None  # extra CA certificates to trust for the https check
    slow: float = 1.0  # median response time above this: WARN
    very_slow: float = 5.0  # above this: FAIL


HeldState = Literal["current", "behind", "unknown"]


# --- formatting ------------------------------------------------------------------------------


def _what_failed(a: Answer) -> str:
    """'HTTP 404' or the transport error, for reasons."""
    if a.status is None:
        return a.error or "no answer"
    return f"HTTP {a.status}"


def _under(path: str, subtrees: Sequence[str]) -> str | None:
    """The excluded subtree `path` lies in, if any."""
    for sub in subtrees:
        if (path if path.endswith("/") else path + "/").startswith(sub):
            return sub
    return None


# --- pure judges -----------------------------------------------------------------------------


def judge_root(a: Answer) -> CheckResult:
    """The tree root answers: 2xx PASS; 401/403 (listings off) WARN; anything else FAIL."""
    name = "root"
    if a.status is None:
        if a.error and a.error.startswith("body exceeds"):
            return CheckResult(name, Verdict.WARN, f"answers, but the page is over "
                               f"{ROOT_MAX_BYTES // 1024} KiB: is this the tree root?")  # fmt: skip
        return CheckResult(name, Verdict.FAIL, f"no answer: {a.error}")
    if a.ok:
        return CheckResult(name, Verdict.PASS, f"HTTP {a.status} in {duration(a.seconds)}")
    if a.status in (401, 403):
        return CheckResult(
            name, Verdict.WARN, f"HTTP {a.status}: answers, but the root cannot be listed"
        )
    return CheckResult(name, Verdict.FAIL, f"HTTP {a.status} for the tree root {a.url}")


def _trace_of(a: Answer) -> Trace | str:
    """The parsed trace, or why there is none."""
    if not a.ok:
        return _what_failed(a)
    try:
        return parse_trace(a.body, last_modified=a.last_modified)
    except TraceError as e:
        return f"not a trace: {e}"


def held_state(
    copy: Answer,
    master: Answer,
    now: float,
    own: Answer | None = None,
    stage1: Answer | None = None,
) -> HeldState:
    """Whether the mirror's copy of the master trace is the master's current one.

    Between the stages of a staged push (`own` and `stage1` given, see `between_stages`) it is
    "behind" whatever the copy says: stage 2 brings the indexes.
    """
    held, current = _trace_of(copy), _trace_of(master)
    if not isinstance(held, Trace) or not isinstance(current, Trace):
        return "unknown"
    if is_future(held, now, FUTURE_SLACK) or is_future(current, now, FUTURE_SLACK):
        return "unknown"
    if own is not None and between_stages(own, copy, stage1, now):
        return "behind"
    return "current" if held.date >= current.date else "behind"


def judge_master_trace(
    copy: Answer, master: Answer, now: float, max_lag: float, path: str
) -> CheckResult:
    """The mirror's copy of the master trace: present, a trace, and within `max_lag`.

    Lag follows the poller's rule on a cold start: a mirror holding an older master state has
    been behind since the master's current trace date (freshness.lag_of).
    """
    name = "master-trace"
    held = _trace_of(copy)
    if not isinstance(held, Trace):
        hint = " (is this the smeserver tree root?)" if copy.status == 404 else ""
        return CheckResult(name, Verdict.FAIL, f"{path}: {held}{hint}")
    if is_future(held, now, FUTURE_SLACK):
        return CheckResult(
            name, Verdict.FAIL, f"dated {when(held.date)}, in the future: a wrong clock?"
        )
    current = _trace_of(master)
    if not isinstance(current, Trace):
        return CheckResult(
            name, Verdict.WARN,
            f"holds master state {when(held.date)}; the master's own trace could not be read "
            f"({current}), so its freshness is unknown",
        )  # fmt: skip
    lag = lag_of(held.date, record_master((), current.date, now), now)
    if lag is None or lag == 0.0:
        return CheckResult(
            name, Verdict.PASS, f"holds the master's current state ({when(current.date)})"
        )
    detail = (
        f"holds {when(held.date)}, the master has had {when(current.date)} for "
        f"{duration(lag)} (limit {duration(max_lag)})"
    )
    if lag > max_lag:
        return CheckResult(name, Verdict.FAIL, f"too far behind: {detail}")
    return CheckResult(name, Verdict.PASS, f"behind but within the limit: {detail}")


def between_stages(own: Answer, copy: Answer, stage1: Answer | None, now: float) -> bool:
    """Whether the mirror is between the stages of a staged ftpsync push (see core/judge.py):
    its own trace older than its master trace copy, its stage-1 trace newer than its own trace
    and at most STAGE1_MAX old."""
    trace, held = _trace_of(own), _trace_of(copy)
    first = _trace_of(stage1) if stage1 is not None else None
    if not (isinstance(trace, Trace) and isinstance(held, Trace) and isinstance(first, Trace)):
        return False
    if not trace.date < held.date or first.date <= trace.date:
        return False
    return not is_future(first, now, FUTURE_SLACK) and now - first.date <= STAGE1_MAX


def judge_own_trace(
    own: Answer,
    copy: Answer,
    path: str,
    now: float,
    *,
    stage1: Answer | None = None,
    source: str | None = None,
) -> CheckResult:
    """The mirror's own trace at `path` exists, is a trace, and is not older than its master
    trace (Debian's rule: older means the last sync did not complete), unless the mirror is
    between the stages of a staged push (`stage1`, its ``<name>-stage1`` trace): a WARN then.

    `source` says where the name in `path` came from ("_hierarchy", "_traces", "--trace-name");
    None: the URL's host, nothing naming another.
    """
    name = "own-trace"
    trace = _trace_of(own)
    shown = f"{path} (MIRRORNAME from {source})" if source else path
    if not isinstance(trace, Trace):
        hint = ""
        if own.status == 404 and source is None:
            hint = " (no _hierarchy or _traces names its MIRRORNAME: set --trace-name to it)"
        elif own.status == 404:
            hint = " (set --trace-name to the mirror's MIRRORNAME)"
        return CheckResult(name, Verdict.FAIL, f"{shown}: {trace}{hint}")
    if is_future(trace, now, FUTURE_SLACK):
        return CheckResult(
            name, Verdict.FAIL, f"{shown} dated {when(trace.date)}, in the future: a wrong clock?"
        )
    held = _trace_of(copy)
    if isinstance(held, Trace) and trace.date < held.date:
        first = _trace_of(stage1) if stage1 is not None else None
        if between_stages(own, copy, stage1, now):
            assert isinstance(first, Trace)
            return CheckResult(
                name, Verdict.WARN,
                f"between the stages of a staged sync: stage 1 finished {when(first.date)} "
                f"({ago(first.date, now)}), stage 2 to come; its indexes are those "
                f"of its last complete sync ({when(trace.date)}, {shown})",
            )  # fmt: skip
        late = ""
        if isinstance(first, Trace) and first.date > trace.date:
            late = f"; its stage 1 finished {when(first.date)} and stage 2 has not followed"
        return CheckResult(
            name, Verdict.FAIL,
            f"{shown} ({when(trace.date)}) is older than its copy of the master trace "
            f"({when(held.date)}): the last sync did not complete{late}",
        )  # fmt: skip
    upstream = f"; Upstream-mirror: {trace.upstream}" if trace.upstream else ""
    return CheckResult(
        name, Verdict.PASS,
        f"last complete sync {when(trace.date)} ({ago(trace.date, now)})"
        f"{upstream}{f'; MIRRORNAME from {source}' if source else ''}",
    )  # fmt: skip


def judge_sync(root: Answer, lock: Answer, lock_name: str) -> CheckResult:
    """No Archive-Update-in-Progress-* at the root (WARN when there is: files are in flux)."""
    name = "sync"
    seen: set[str] = set()
    if root.ok:
        seen.update(_LOCK_IN_LISTING.findall(root.body.decode("utf-8", errors="replace")))
    if lock.ok:
        seen.add(lock_name)
    if seen:
        return CheckResult(
            name, Verdict.WARN,
            f"sync in progress: {', '.join(sorted(seen))} (files may be inconsistent until "
            "it ends)",
        )  # fmt: skip
    if root.ok:
        return CheckResult(name, Verdict.PASS, f"no {LOCK_PREFIX}* at the root")
    return CheckResult(
        name, Verdict.PASS, f"no {lock_name} (the root is not listable, other names unseen)"
    )


def judge_subtree(path: str, a: Answer, excluded: bool) -> CheckResult:
    """A top-level subtree: present PASS; absent FAIL, WARN for obsolete/, INFO if excluded."""
    name = f"subtree:{path}"
    if a.ok:
        note = " (declared excluded, so it will not be used for it)" if excluded else ""
        return CheckResult(name, Verdict.PASS, f"present{note}")
    if a.status in (401, 403):
        return CheckResult(
            name, Verdict.WARN, f"HTTP {a.status}: there, but not listable (listings off?)"
        )
    if a.status == 404:
        if excluded:
            return CheckResult(name, Verdict.INFO, "absent, declared excluded")
        if path in OPTIONAL_SUBTREES:
            return CheckResult(
                name, Verdict.WARN, "absent: clients asking for it go to other mirrors "
                "(declare it with exclude)",
            )  # fmt: skip
        return CheckResult(name, Verdict.FAIL, "absent (HTTP 404)")
    return CheckResult(name, Verdict.FAIL, _what_failed(a))


def judge_symlink(path: str, mirror: Answer, master: Answer, excluded: bool) -> CheckResult:
    """A path that is a symlink in the master tree answers on the mirror too (FollowSymLinks)."""
    name = "symlink"
    if excluded:
        return CheckResult(name, Verdict.INFO, f"{path} not probed: its subtree is excluded")
    if mirror.ok:
        return CheckResult(name, Verdict.PASS, f"{path} answers: symlinks are followed")
    if mirror.status in (401, 403):
        return CheckResult(
            name, Verdict.FAIL,
            f"HTTP {mirror.status} for {path}: symlinks are not followed (enable FollowSymLinks)",
        )  # fmt: skip
    if mirror.status == 404 and master.ok:
        return CheckResult(
            name, Verdict.FAIL,
            f"HTTP 404 for {path}, which the master serves: symlinks not followed or not "
            "mirrored (rsync -a keeps them)",
        )  # fmt: skip
    if mirror.status == 404:
        return CheckResult(
            name, Verdict.WARN,
            f"{path} is not on the master either ({_what_failed(master)}): set --symlink-path "
            "to a symlink of the master tree",
        )  # fmt: skip
    return CheckResult(name, Verdict.FAIL, f"{path}: {_what_failed(mirror)}")


def _sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def judge_repomd(
    path: str, mirror: Answer, master: Answer, held: HeldState, excluded: bool
) -> CheckResult:
    """One repodata/repomd.xml compared with the master's by sha256.

    A difference is a FAIL while the mirror's trace says it holds the master's current state
    (metadata out of step with the trace), a WARN while it is simply behind.
    """
    name = "repomd:" + path.removesuffix("/repodata/repomd.xml")
    if excluded:
        return CheckResult(name, Verdict.INFO, "not compared: its subtree is excluded")
    if master.status is None:
        return CheckResult(name, Verdict.WARN, f"not compared: master {master.error}")
    if master.status != 200:
        return CheckResult(
            name, Verdict.INFO, f"not on the master (HTTP {master.status}): not compared "
            "(see --repomd)",
        )  # fmt: skip
    if mirror.status != 200:
        return CheckResult(name, Verdict.FAIL, f"the master has it, the mirror: "
                           f"{_what_failed(mirror)}")  # fmt: skip
    ours, theirs = _sha256(mirror.body), _sha256(master.body)
    if ours == theirs:
        return CheckResult(name, Verdict.PASS, f"matches the master (sha256 {ours[:12]})")
    detail = f"sha256 {ours[:12]} differs from the master's {theirs[:12]}"
    if held == "behind":
        return CheckResult(name, Verdict.WARN, f"{detail}: the mirror is behind the master")
    return CheckResult(
        name, Verdict.FAIL, f"{detail} although its trace says current: metadata out of step"
    )


def judge_https(scheme: str, error: str | None, not_after: float | None, now: float) -> CheckResult:
    """An https URL: the certificate verifies and does not expire within CERT_WARN_DAYS."""
    name = "https"
    if scheme != "https":
        return CheckResult(
            name, Verdict.INFO, "http URL given: give the https URL to check its certificate"
        )
    if error is not None:
        return CheckResult(name, Verdict.FAIL, error)
    if not_after is None:
        return CheckResult(name, Verdict.PASS, "certificate verified")
    days = (not_after - now) / 86400
    if days < CERT_WARN_DAYS:
        return CheckResult(
            name, Verdict.WARN, f"certificate verified, but expires in {days:.0f} days"
        )
    return CheckResult(name, Verdict.PASS, f"certificate verified, valid until {when(not_after)}")


def judge_ipv6(host: str, addresses: Sequence[str] | None, error: str | None) -> CheckResult:
    """An AAAA record or not: PASS or INFO, WARN when the lookup itself failed; never FAIL."""
    name = "ipv6"
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        if literal.version == 6:
            return CheckResult(name, Verdict.PASS, f"an IPv6 address: {literal}")
        return CheckResult(name, Verdict.INFO, "an IPv4 address: IPv6 clients go elsewhere")
    if error is not None:
        return CheckResult(name, Verdict.WARN, f"AAAA lookup of {host} failed: {error}")
    if addresses:
        return CheckResult(name, Verdict.PASS, f"AAAA {', '.join(addresses[:3])}")
    return CheckResult(
        name, Verdict.INFO, f"no AAAA record for {host}: IPv6 clients go elsewhere (ipv6 = false)"
    )


def judge_range(a: Answer | None) -> CheckResult:
    """A Range: bytes=0-0 GET on a file gets 206 and one byte."""
    name = "range"
    if a is None:
        return CheckResult(name, Verdict.WARN, "no file on the mirror to probe")
    if a.status == 206 and len(a.body) == 1:
        return CheckResult(name, Verdict.PASS, "206 Partial Content for bytes=0-0")
    if a.status == 200:
        return CheckResult(
            name, Verdict.FAIL, "Range ignored (200 with the whole file): resumed downloads "
            "start over",
        )  # fmt: skip
    if a.status == 206:
        return CheckResult(name, Verdict.FAIL, f"206 with {len(a.body)} bytes for bytes=0-0")
    return CheckResult(name, Verdict.FAIL, f"bytes=0-0: {_what_failed(a)}")


def judge_response_time(seconds: Sequence[float], slow: float, very_slow: float) -> CheckResult:
    """Median time of the mirror's answers: PASS up to `slow`, WARN up to `very_slow`."""
    name = "response-time"
    if not seconds:
        return CheckResult(name, Verdict.FAIL, "no request was answered")
    median, worst = statistics.median(seconds), max(seconds)
    detail = f"median {duration(median)}, slowest {duration(worst)} over {len(seconds)} requests"
    if median > very_slow:
        return CheckResult(name, Verdict.FAIL, f"{detail} (limit {duration(very_slow)})")
    if median > slow:
        return CheckResult(name, Verdict.WARN, f"{detail} (over {duration(slow)})")
    return CheckResult(name, Verdict.PASS, detail)


def failed(results: Sequence[CheckResult]) -> bool:
    return any(r.verdict is Verdict.FAIL for r in results)


def counts(results: Sequence[CheckResult]) -> dict[str, int]:
    return {v.value: sum(1 for r in results if r.verdict is v) for v in Verdict}


def format_text(results: Sequence[CheckResult]) -> str:
    """One line per check, `VERDICT  name  reason`, then a summary line."""
    lines = [table([(r.verdict.value, r.name, r.reason) for r in results])] if results else []
    c = counts(results)
    lines.append(f"{len(results)} checks: " + ", ".join(f"{c[v.value]} {v.value}" for v in Verdict))
    return "\n".join(lines)


def to_json(url: str, master: str, results: Sequence[CheckResult]) -> dict[str, Any]:
    return {
        "url": url,
        "master": master,
        "ok": not failed(results),
        "counts": counts(results),
        "checks": [
            {"name": r.name, "verdict": r.verdict.value, "reason": r.reason} for r in results
        ],
    }


# --- fetching --------------------------------------------------------------------------------

Resolver = Callable[[str], Awaitable[tuple[str, ...]]]


class LookupFailed(Exception):
    """A DNS lookup that failed for another reason than 'no such record'."""


_NO_RECORD = {
    getattr(socket, n) for n in ("EAI_NONAME", "EAI_NODATA", "EAI_ADDRFAMILY") if hasattr(socket, n)
}


async def resolve_aaaa(host: str) -> tuple[str, ...]:
    """The host's IPv6 addresses through the system resolver; () when it has none."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(5.0):
            infos = await loop.getaddrinfo(host, None, family=socket.AF_INET6,
                                           type=socket.SOCK_STREAM)  # fmt: skip
    except socket.gaierror as e:
        if e.errno in _NO_RECORD:
            return ()
        raise LookupFailed(str(e)) from e
    except TimeoutError as e:
        raise LookupFailed("timed out") from e
    return tuple(dict.fromkeys(str(info[4][0]) for info in infos))


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """The system's trust store, plus `ca_file` when given."""
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx


async def tls_probe(
    host: str, port: int, ctx: ssl.SSLContext, timeout: float
) -> tuple[str | None, float | None]:
    """One TLS handshake: (error, notAfter as unix time); error None when it verified."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host)
    except ssl.SSLCertVerificationError as e:
        return f"certificate not valid: {e.verify_message or e}", None
    except ssl.SSLError as e:
        return f"TLS handshake failed: {e.reason or e}", None
    except TimeoutError:
        return f"TLS handshake timed out after {duration(timeout)}", None
    except OSError as e:
        return f"cannot connect: {e.strerror or e}", None
    try:
        cert = writer.get_extra_info("peercert") or {}
        not_after = cert.get("notAfter")
        return None, ssl.cert_time_to_seconds(not_after) if isinstance(not_after, str) else None
    finally:
        writer.close()
        # A peer that drops the connection at close changes nothing about the check.
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def _ask(
    session: aiohttp.ClientSession,
    gate: asyncio.Semaphore,
    url: str,
    *,
    timeout: float,
    timer: Callable[[], float],
    method: str = "GET",
    max_bytes: int = 65536,
) -> Answer:
    async with gate:
        started = timer()
        try:
            got = await fetch(session, url, timeout=timeout, max_bytes=max_bytes, method=method)
        except ProbeError as e:
            return Answer(url, None, error=str(e), seconds=timer() - started)
        return Answer(url, got.status, got.body, got.last_modified, None, timer() - started)


def _session(
    timeout: float, verify: ssl.SSLContext | bool, extra: Mapping[str, str] | None = None
) -> aiohttp.ClientSession:
    """A session for the checks; `extra` headers go on every request (the Range probe's own)."""
    # identity: hashes and the one-byte Range answer are of the file as stored
    return open_session(
        timeout, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(extra or {})},
        tls=verify,
    )  # fmt: skip


def _older(own: Answer, copy: Answer) -> bool:
    """Whether both traces were read and the own one is older than the master trace copy."""
    trace, held = _trace_of(own), _trace_of(copy)
    return isinstance(trace, Trace) and isinstance(held, Trace) and trace.date < held.date


async def _discover(
    ask: Callable[..., Awaitable[Answer]], base: str, master_trace: str
) -> tuple[str, str] | None:
    """(MIRRORNAME, "_hierarchy" or "_traces") from the mirror at `base`, or None."""
    trace_dir = base + posixpath.dirname(master_trace) + "/"
    hierarchy, traces = await asyncio.gather(
        ask(trace_dir + "_hierarchy"), ask(trace_dir + "_traces")
    )
    if hierarchy.status == 200 and (name := name_from_hierarchy(hierarchy.body)) is not None:
        return name, "_hierarchy"
    master_name = posixpath.basename(master_trace)
    if traces.status == 200 and (name := name_from_traces(traces.body, master_name)) is not None:
        return name, "_traces"
    return None


async def _under_mirrorname(
    ask: Callable[..., Awaitable[Answer]],
    base: str,
    master_trace: str,
    tried: str,
    own: Answer,
    lock: Answer,
) -> tuple[str, str | None, Answer, Answer]:
    """(name, source, own trace, lock) under the MIRRORNAME the mirror's _hierarchy or _traces
    give, when they name another than `tried` (the URL's host); else `tried` and what it got.

    ftpsync names the own trace and the lock after MIRRORNAME, `hostname -f` by default.
    """
    found = await _discover(ask, base, master_trace)
    if found is None or found[0] == tried:
        return tried, None, own, lock
    name, source = found
    own, lock = await asyncio.gather(
        ask(base + posixpath.join(posixpath.dirname(master_trace), name)),
        ask(base + LOCK_PREFIX + name, method="HEAD"),
    )
    return name, source, own, lock


async def check_mirror(
    url: str,
    options: CheckOptions | None = None,
    *,
    clock: Callable[[], float] = time.time,
    timer: Callable[[], float] = time.monotonic,
    resolve: Resolver = resolve_aaaa,
) -> list[CheckResult]:
    """Run every check against the tree root `url`; ValueError when `url` is not one."""
    opts = options or CheckOptions()
    base = normalize_base_url(url, ("http", "https"))
    master = normalize_base_url(opts.master, ("http", "https"))
    if len(opts.repomd_paths) > MAX_REPOMD:
        raise ValueError(f"at most {MAX_REPOMD} repomd.xml paths")
    parts = urlsplit(base)
    host = parts.hostname or ""
    trace_name = opts.trace_name or host
    source = "--trace-name" if opts.trace_name else None
    ctx = ssl_context(opts.ca_file)

    https_error: str | None = None
    not_after: float | None = None
    verify: ssl.SSLContext | bool = ctx
    if parts.scheme == "https":
        https_error, not_after = await tls_probe(host, parts.port or 443, ctx, opts.timeout)
        if https_error is not None and https_error.startswith("certificate"):
            # Judge the rest anyway: the operator learns every problem in one run.
            verify = False
            https_error += "; the other checks ran without verifying it"

    async def lookup() -> tuple[tuple[str, ...] | None, str | None]:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return None, None  # a literal: no lookup
        try:
            return await resolve(host), None
        except LookupFailed as e:
            return None, str(e)

    gate = asyncio.Semaphore(CONCURRENCY)
    async with (
        _session(opts.timeout, verify) as session,
        _session(opts.timeout, verify, {"Range": "bytes=0-0"}) as ranging,
    ):

        def ask(target: str, **kw: Any) -> Awaitable[Answer]:
            return _ask(session, gate, target, timeout=opts.timeout, timer=timer, **kw)

        lock_name = LOCK_PREFIX + trace_name
        own_path = posixpath.join(posixpath.dirname(opts.master_trace), trace_name)
        dns = asyncio.create_task(lookup())
        root, copy, own, lock, master_trace, sym, sym_master, *rest = await asyncio.gather(
            ask(base, max_bytes=ROOT_MAX_BYTES),
            ask(base + opts.master_trace),
            ask(base + own_path),
            ask(base + lock_name, method="HEAD"),
            ask(master + opts.master_trace),
            ask(base + opts.symlink_path, method="HEAD"),
            ask(master + opts.symlink_path, method="HEAD"),
            *(ask(base + sub, method="HEAD") for sub in SUBTREES),
            *(ask(base + p) for p in opts.repomd_paths),
            *(ask(master + p) for p in opts.repomd_paths),
        )
        n, k = len(SUBTREES), len(opts.repomd_paths)
        subs, repo_mirror, repo_master = rest[:n], rest[n : n + k], rest[n + k :]
        if source is None and not isinstance(_trace_of(own), Trace):
            trace_name, source, own, lock = await _under_mirrorname(
                ask, base, opts.master_trace, trace_name, own, lock
            )
            lock_name = LOCK_PREFIX + trace_name
            own_path = posixpath.join(posixpath.dirname(opts.master_trace), trace_name)
        stage1 = await ask(base + own_path + STAGE1_SUFFIX) if _older(own, copy) else None
        # Range on a small file the mirror is known to have; never on anything large.
        small = next((a for a in (copy, own, *repo_mirror) if a.status == 200), None)
        ranged = (
            await _ask(ranging, gate, small.url, timeout=opts.timeout, timer=timer)
            if small is not None
            else None
        )
        addresses, dns_error = await dns

    now = clock()
    held = held_state(copy, master_trace, now, own, stage1)
    mirror_answers = [root, copy, own, lock, sym, *subs, *repo_mirror]
    if ranged is not None:
        mirror_answers.append(ranged)
    return [
        judge_root(root),
        judge_master_trace(copy, master_trace, now, opts.max_lag, opts.master_trace),
        judge_own_trace(own, copy, own_path, now, stage1=stage1, source=source),
        judge_sync(root, lock, lock_name),
        *(
            judge_subtree(sub, a, _under(sub, opts.exclude) is not None)
            for sub, a in zip(SUBTREES, subs, strict=True)
        ),
        judge_symlink(
            opts.symlink_path, sym, sym_master, _under(opts.symlink_path, opts.exclude) is not None
        ),
        *(
            judge_repomd(p, m, mm, held, _under(p, opts.exclude) is not None)
            for p, m, mm in zip(opts.repomd_paths, repo_mirror, repo_master, strict=True)
        ),
        judge_https(parts.scheme, https_error, not_after, now),
        judge_ipv6(host, addresses, dns_error),
        judge_range(ranged),
        judge_response_time(
            [a.seconds for a in mirror_answers if a.status is not None],
            opts.slow,
            opts.very_slow,
        ),
    ]
