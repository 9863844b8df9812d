"""Prometheus metrics: request and poller counters per process, mirror state read at scrape time.

Two kinds of figures, kept apart so both stay right when several worker processes serve one
port:

* Events (redirects, refusals, requests and their duration, file checks, yum and dnf list
  requests, decision latency, poller passes and failed probes, store errors) are
  prometheus-client counters and histograms. With ``PROMETHEUS_MULTIPROC_DIR`` set in the
  environment before the process starts, prometheus-client keeps them in per-process files in
  that directory, and a scrape of any worker adds up every worker's files
  (`MultiProcessCollector`). Without it they live in this process's own registry.
* State (each mirror's state, lag, last check, repodata verdicts; the master; the store; the
  last config reload; the GeoIP database; the build) is not counted but read from what every
  worker holds, when scraped (`StateCollector`): the same in every worker, so whichever worker
  answers the scrape tells the truth, and no gauge files are needed.

Poller series (pass duration, failed probes) exist only in a process that polls: a web node
started with `--no-poll` does not export them at all, rather than zeros that look like a quiet
poller. In the split deployment the `redirector poll` process serves them on its own port
(`poller_metrics_listen`, web/pollermetrics.py); every node says how old the last pass is
(`redirector_master_last_check_timestamp_seconds`, `redirector_poller_silent`).

What a supervisor of several workers must do: create an empty directory, export
``PROMETHEUS_MULTIPROC_DIR`` pointing at it before starting the workers (it must be set before
prometheus_client is imported), empty it on every supervisor start (stale files of dead
processes would otherwise count again), and keep it for the supervisor's lifetime: the files of
a worker that exited still hold its counts, which is what counters need.
"""

from __future__ import annotations

import inspect
import os
import platform
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    values,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from redirector import __version__
from redirector.core.condition import Condition, assess
from redirector.core.models import RepodataState, Status
from redirector.geo import GeoReader
from redirector.poll.poller import PassResult
from redirector.reload import Reloader
from redirector.snapshot import SnapshotHolder
from redirector.store.base import Poison, Store, StoreData, StoreError
from redirector.views.status import readiness

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# No "_created" series: a timestamp per label set doubles the scrape for nothing we alert on.
# (A process-wide switch of prometheus-client; this process exports only our metrics.)
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream

# Decisions take tens of microseconds; the top buckets catch a stalled event loop.
DECISION_BUCKETS = (
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.1,
)  # fmt: skip
LIST_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50)
PASS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
# Whole requests: a redirect from cache is well under a millisecond, one that waits on file
# checks up to three HEAD timeouts (3 s), a status page some tens of milliseconds.
REQUEST_BUCKETS = (
    1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
)  # fmt: skip

OUTCOME_MIRROR, OUTCOME_MASTER = "mirror", "master"
# Why a request under the tree was refused (redirector_refused_total's reason label).
REFUSED_PATH, REFUSED_METHOD = "bad_path", "method"
# Where the never-a-404 check sent a client (redirector_file_checks_total's outcome label).
CHECK_OUTCOMES = ("cached", "head", "next_mirror", "master")
# A poller pass older than this many intervals: the poller went quiet.
SILENT_INTERVALS = 3

VERSION = __version__  # not importlib.metadata: it costs each worker 0.7 MB to import


REDIRECT_HANDLER = "redirect"  # the handler label of every path under the tree


def handler_of(path: str) -> str:
    """The handler label of a request path: few values, whatever the path (no cardinality)."""
    if path.startswith(("/smeserver", "/pub/smeserver")):
        return REDIRECT_HANDLER
    if path.startswith("/mirrorlist"):  # /mirrorlist, /mirrorlist/<name>, /mirrorlists/<repo>
        return "mirrorlist"
    if path == "/metalink":
        return "metalink"
    if path.startswith("/mirrors"):
        return "status"
    if path.startswith("/health"):
        return "health"
    if path == "/metrics":
        return "metrics"
    return "other"


def client_of(user_agent: str | None) -> str:
    """Which package manager asked for a list: dnf (libdnf, librepo), yum (urlgrabber), other."""
    ua = (user_agent or "").lower()
    if "dnf" in ua or "librepo" in ua:
        return "dnf"
    if "yum" in ua or "urlgrabber" in ua:
        return "yum"
    return "other"


def multiprocess_dir() -> str | None:
    """The directory prometheus-client's multiprocess mode uses, from the environment.

    Read once at app build time: prometheus-client itself decides at import time whether
    metric values live in files, from the same variable.
    """
    return os.environ.get(MULTIPROC_ENV) or None


class _Observed:
    """A histogram's observations since the last `fold`: counts per bucket and their sum."""

    __slots__ = ("_bounds", "_child", "_counts", "_sum")

    def __init__(self, child: Histogram) -> None:
        self._child = child
        self._bounds: tuple[float, ...] = tuple(child._upper_bounds)  # +Inf last, as observed
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        # The first bucket whose upper bound is >= value, as Histogram.observe picks it.
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def fold(self) -> None:
        counts, self._counts = self._counts, [0] * len(self._bounds)
        total, self._sum = self._sum, 0.0
        if not any(counts):
            return
        # prometheus-client offers no way to add n observations at once; its buckets and
        # sum are values with `inc`, in memory or in the multiprocess files alike.
        buckets = self._child._buckets
        for i, n in enumerate(counts):
            if n:
                buckets[i].inc(n)
        self._child._sum.inc(total)


class Metrics:
    """Every metric one redirector process records, and the `/metrics` rendering."""

    def __init__(
        self, mirrors: Iterable[str] = (), multiproc: str | None = None, *, poller: bool = True
    ) -> None:
        if multiproc is not None and values.ValueClass is values.MutexValue:
            raise RuntimeError(
                f"{MULTIPROC_ENV} must be set before prometheus_client is first imported"
            )
        self.multiproc = multiproc
        # In multiprocess mode the values go to files whatever the registry; scrapes build a
        # fresh registry reading them all. Otherwise each app has its own registry, so several
        # apps in one process (tests) never collide.
        self.registry: CollectorRegistry | None = None if multiproc else CollectorRegistry()
        reg = self.registry
        self.redirects = Counter(
            "redirector_redirects",
            "302s under the tree by outcome: to a mirror, or to the master.",
            ["outcome", "mirror"],
            registry=reg,
        )
        self.refusals = Counter(
            "redirector_refused",
            "Requests under the tree refused with a 4xx, by reason: bad_path (400), method (405).",
            ["reason"],
            registry=reg,
        )
        self.view_refusals = Counter(
            "redirector_view_refusals",
            "Operator views refused past their budget, by view and by the bucket found empty:"
            " network (429), total (503).",
            ["view", "reason"],
            registry=reg,
        )
        self.request_seconds = Histogram(
            "redirector_request_duration_seconds",
            "Whole requests, from the first middleware to the response, by handler.",
            ["handler"],
            buckets=REQUEST_BUCKETS,
            registry=reg,
        )
        self.requests = Counter(
            "redirector_requests",
            "Requests answered, by handler and status class (2xx, 3xx, 4xx, 5xx).",
            ["handler", "code"],
            registry=reg,
        )
        self.file_checks = Counter(
            "redirector_file_checks",
            "Redirects that needed the never-a-404 check, by where it sent the client: the "
            "chosen mirror known to have the file (cached), confirmed by a HEAD (head), a later "
            "mirror (next_mirror), the master (master).",
            ["outcome"],
            registry=reg,
        )
        self.list_requests = Counter(
            "redirector_list_requests",
            "yum mirror lists and dnf metalinks answered (2xx), by kind and client.",
            ["kind", "client"],
            registry=reg,
        )
        self.https_redirects = Counter(
            "redirector_https_redirects",
            "Redirects of https requests by where they went: a mirror, or the master ('').",
            ["mirror"],
            registry=reg,
        )
        self.decision_seconds = Histogram(
            "redirector_decision_seconds",
            "Time to choose a mirror for one request (location, selection).",
            buckets=DECISION_BUCKETS,
            registry=reg,
        )
        # Only where a poller runs: a web node's zeros would read as a poller with no errors.
        self.poller_pass_seconds: Histogram | None = None
        self.poller_errors: Counter | None = None
        if poller:
            self.poller_pass_seconds = Histogram(
                "redirector_poller_pass_seconds",
                "Duration of one poller pass over the master and every mirror.",
                buckets=PASS_BUCKETS,
                registry=reg,
            )
            self.poller_errors = Counter(
                "redirector_poller_errors",
                "Failed probes: the master or a mirror down or broken at a pass.",
                ["target"],
                registry=reg,
            )
        self.store_errors = Counter(
            "redirector_store_errors",
            "Failed calls to the state store, by operation.",
            ["op"],
            registry=reg,
        )
        self.store_poisoned = Counter(
            "redirector_store_poisoned",
            "Stored values a load dropped as unreadable (junk, wrong type, implausible date), "
            "by key; the poller's next pass replaces them.",
            ["key"],
            registry=reg,
        )
        # yum and dnf: lists by kind, repo, version and status (200, or a metalink's 404);
        # repo and version are the configured ones (others get a 404 before counting).
        self.lists = Counter(
            "redirector_mirror_lists",
            "Mirror lists (yum) and metalinks (dnf) answered, by kind, repo, version, status.",
            ["kind", "repo", "version", "status"],
            registry=reg,
        )
        self.listed = Counter(
            "redirector_mirror_list_first",
            "Mirror lists and metalinks by the mirror named first (none: no mirror was named).",
            ["kind", "mirror"],
            registry=reg,
        )
        self.list_length = Histogram(
            "redirector_mirror_list_mirrors",
            "How many mirrors one mirror list or metalink named.",
            buckets=LIST_BUCKETS,
            registry=reg,
        )
        self._master = self.redirects.labels(OUTCOME_MASTER, "")
        self._refused = {r: self.refusals.labels(r) for r in (REFUSED_PATH, REFUSED_METHOD)}
        self._checks = {o: self.file_checks.labels(o) for o in CHECK_OUTCOMES}
        # (handler, status class) -> (durations, counter child): labels() costs a lock and a
        # dict lookup per call; the children are kept once made.
        self._by_handler: dict[tuple[str, int], tuple[_Observed, Counter]] = {}
        self._durations: dict[str, _Observed] = {}
        self._counts: dict[Counter, int] = {}  # counted, not folded yet (see `fold`)
        self._decision = _Observed(self.decision_seconds)
        self._by_mirror: dict[str, Counter] = {}
        for name in mirrors:
            self._mirror_counter(name)
        self._state: StateCollector | None = None
        # Moves whenever a counter or histogram here does: what a cached scrape is keyed on.
        self.changes = 0
        self._state_registry = CollectorRegistry(auto_describe=False)

    def _mirror_counter(self, name: str) -> Counter:
        child = self._by_mirror.get(name)
        if child is None:
            child = self._by_mirror[name] = self.redirects.labels(OUTCOME_MIRROR, name)
        return child

    # --- recording ---
    # The per-request series (redirects, file checks, requests and their durations) are
    # counted in plain dicts and lists here, and folded into prometheus-client's values by
    # `fold`: before every scrape, and every second (other workers' scrapes read the files).
    # A lock and a file write per request and series cost more than the redirect itself.

    def redirected(self, mirror: str | None, seconds: float, *, https: bool = False) -> None:
        """One 302: to `mirror`, or to the master when None; `seconds` the decision took.
        `https`: the request came over https, counted apart too, to show where those go."""
        self.changes += 1
        self._decision.observe(seconds)
        child = self._master if mirror is None else self._mirror_counter(mirror)
        counts = self._counts
        counts[child] = counts.get(child, 0) + 1
        if https:
            child = self.https_redirects.labels(mirror or "")
            counts[child] = counts.get(child, 0) + 1

    def list_answered(
        self, kind: str, repo: str, version: str, mirrors: Sequence[str], status: int
    ) -> None:
        """One mirror list or metalink: what it named (best first) and its status."""
        self.changes += 1
        self.lists.labels(kind, repo, version, str(status)).inc()
        if status == 200:
            self.listed.labels(kind, mirrors[0] if mirrors else "none").inc()
            self.list_length.observe(len(mirrors))

    def refused(self, reason: str = REFUSED_PATH) -> None:
        """One request under the tree answered with a 4xx: `reason` REFUSED_PATH or _METHOD."""
        self.changes += 1
        child = self._refused.get(reason)
        if child is None:
            child = self._refused[reason] = self.refusals.labels(reason)
        child.inc()

    def view_refused(self, view: str, reason: str) -> None:
        """One operator view refused: `reason` the budget found empty (network, total)."""
        self.changes += 1
        self.view_refusals.labels(view, reason).inc()

    def checked(self, outcome: str) -> None:
        """One redirect that went through the file check; `outcome` one of CHECK_OUTCOMES."""
        self.changes += 1
        child = self._checks[outcome]
        counts = self._counts
        counts[child] = counts.get(child, 0) + 1

    def answered(self, path: str, status: int, seconds: float) -> None:
        """One whole request: its path (for the handler label), status and duration."""
        self.answered_as(handler_of(path), status, seconds)

    def answered_as(self, handler: str, status: int, seconds: float) -> None:
        """`answered`, for a caller that knows the handler label (`handler_of`) already."""
        # No `changes` bump: every request lands here, views included, and a scrape may show
        # these a second late rather than re-render the counters for every request.
        key = (handler, status // 100)
        children = self._by_handler.get(key)
        if children is None:
            children = self._by_handler[key] = (
                self._durations.get(handler)
                or self._durations.setdefault(
                    handler, _Observed(self.request_seconds.labels(handler))
                ),
                self.requests.labels(handler, f"{status // 100}xx"),
            )
        children[0].observe(seconds)
        counts = self._counts
        child = children[1]
        counts[child] = counts.get(child, 0) + 1

    def fold(self) -> None:
        """Add what was counted since the last fold to prometheus-client's values. In the
        event loop's thread: the counting happens there."""
        counts, self._counts = self._counts, {}
        for child, n in counts.items():
            child.inc(n)
        self._decision.fold()
        for observed in self._durations.values():
            observed.fold()

    def list_client(self, kind: str, user_agent: str | None) -> None:
        """One mirror list (`kind` "mirrorlist") or metalink ("metalink") served, by client."""
        self.changes += 1
        self.list_requests.labels(kind, client_of(user_agent)).inc()

    def observe_pass(
        self, duration: float, master_error: str | None, failed: Iterable[str]
    ) -> None:
        """One poller pass: how long it took, and which probes failed."""
        self.changes += 1
        if self.poller_pass_seconds is None or self.poller_errors is None:
            return  # not a polling process (see __init__)
        self.poller_pass_seconds.observe(duration)
        if master_error is not None:
            self.poller_errors.labels("master").inc()
        for name in failed:
            self.poller_errors.labels(name).inc()

    def observe_result(self, result: PassResult) -> None:
        """`observe_pass` for one pass's result."""
        failed = (
            s.name
            for s in result.states
            # Backed-off mirrors keep their old state: only count probes made in this pass.
            if s.status in (Status.DOWN, Status.BROKEN) and s.checked_at >= result.started
        )
        self.observe_pass(result.duration, result.master.error, failed)

    def store_error(self, op: str) -> None:
        self.changes += 1
        self.store_errors.labels(op).inc()

    def poisoned(self, found: Iterable[Poison]) -> None:
        for p in found:
            self.store_poisoned.labels(p.key).inc()

    def instrument(self, store: Store) -> Store:
        """`store`, counting every StoreError it raises by operation, and every value its
        loads drop as unreadable by key."""
        # Forwarding by __getattr__ keeps methods other modules add to the protocol working.
        return cast(Store, _CountingStore(store, self.store_error, self.poisoned))

    # --- scraping ---

    def watch(
        self,
        holder: SnapshotHolder,
        max_lag: Callable[[], float],
        clock: Callable[[], float] = time.time,
        *,
        poll_interval: Callable[[], float] | None = None,
        reloader: Callable[[], Reloader | None] | None = None,
        geo: Callable[[], GeoReader | None] | None = None,
    ) -> None:
        """Report the state in `holder` at every scrape; `max_lag` reads the live setting, and
        so do `poll_interval`, `reloader` (the last config reload) and `geo` (the live GeoIP
        reader), each left out of the scrape when not given."""
        self._state = StateCollector(
            holder, max_lag, clock, poll_interval=poll_interval, reloader=reloader, geo=geo
        )
        self._state_registry.register(self._state)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The scrape body and its content type (text format, or OpenMetrics when asked)."""
        self.fold()
        events, content_type = self.render_events(accept)
        return join_scrape(events, self.render_state(content_type), content_type), content_type

    def content_type(self, accept: str | None) -> str:
        """The scrape's content type for an Accept header (OpenMetrics when asked for)."""
        return choose_encoder(accept or "")[1]

    def events_key(self, clock: Callable[[], float] = time.monotonic) -> tuple[int, float]:
        """What a rendering of the counters is valid for: until one moves, and a second at
        most (other workers' counters, in multiprocess mode, move unseen here)."""
        return self.changes, float(int(clock()))

    def render_events(self, accept: str | None) -> tuple[bytes, str]:
        """The counters and histograms alone, and the content type `accept` chooses (a
        content type from `content_type` chooses itself). Safe in another thread; what was
        counted since the last `fold` is not in it."""
        registry = self.registry
        if registry is None:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiproc)  # type: ignore[no-untyped-call]  # unannotated upstream
        encoder, content_type = choose_encoder(accept or "")
        return encoder(registry), content_type

    def render_state(self, content_type: str) -> bytes:
        """The state gauges alone, in `content_type` (as `render_events` chose it); empty
        before `watch`. Reads only the immutable snapshot: safe in another thread."""
        if self._state is None:
            return b""
        encoder, _ = choose_encoder(content_type)
        return encoder(self._state_registry)


_EOF = b"# EOF\n"


def join_scrape(events: bytes, state: bytes, content_type: str) -> bytes:
    """One scrape body of the two parts: OpenMetrics ends once, with its EOF line."""
    if content_type.startswith("application/openmetrics-text"):
        return events.removesuffix(_EOF) + state.removesuffix(_EOF) + _EOF
    return events + state


class _CountingStore:
    """A store proxy: forwards everything, counts StoreErrors from coroutine methods and the
    values each load dropped as unreadable."""

    def __init__(
        self,
        inner: Store,
        on_error: Callable[[str], None],
        on_poison: Callable[[Iterable[Poison]], None],
    ) -> None:
        self._inner = inner
        self._on_error = on_error
        self._on_poison = on_poison
        self.kind = inner.kind

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                out = await attr(*args, **kwargs)
            except StoreError:
                self._on_error(name)
                raise
            if isinstance(out, StoreData) and out.poisoned:
                self._on_poison(out.poisoned)
            return out

        return counted


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


class StateCollector(Collector):
    """Per-mirror, master and store gauges, computed from the snapshot when scraped."""

    def __init__(
        self,
        holder: SnapshotHolder,
        max_lag: Callable[[], float],
        clock: Callable[[], float],
        *,
        poll_interval: Callable[[], float] | None = None,
        reloader: Callable[[], Reloader | None] | None = None,
        geo: Callable[[], GeoReader | None] | None = None,
    ) -> None:
        self._holder = holder
        self._max_lag = max_lag
        self._clock = clock
        self._poll_interval = poll_interval
        self._reloader = reloader
        self._geo = geo

    def describe(self) -> Iterable[Metric]:
        return []  # dynamic: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        holder = self._holder
        snap = holder.current
        now = self._clock()
        max_lag = self._max_lag()
        up = _gauge(
            "redirector_mirror_up", "1 when the mirror answered its last probe.", ["mirror"]
        )
        lag = _gauge(
            "redirector_mirror_lag_seconds",
            "How long the master has had content the mirror lacks (0: current).",
            ["mirror"],
        )
        checked = _gauge(
            "redirector_mirror_last_check_timestamp_seconds",
            "Unix time of the mirror's last probe.",
            ["mirror"],
        )
        synced = _gauge(
            "redirector_mirror_last_sync_timestamp_seconds",
            "Unix time of the mirror's last complete sync (its own trace).",
            ["mirror"],
        )
        failures = _gauge(
            "redirector_mirror_failures", "Consecutive failed probes of the mirror.", ["mirror"]
        )
        state = _gauge(
            "redirector_mirror_state",
            "1 for the mirror's current state (fresh, syncing, stale, down, broken, unchecked, "
            "disabled), 0 for the others.",
            ["mirror", "state"],
        )
        counts = _gauge("redirector_mirrors", "Configured mirrors by state.", ["state"])
        by_state = dict.fromkeys(Condition, 0)
        for c in snap.candidates:
            name, s = c.mirror.name, c.state
            current = assess(c, now, max_lag).condition
            by_state[current] += 1
            for st in Condition:
                state.add_metric([name, st.value], 1.0 if st is current else 0.0)
            up.add_metric(
                [name], 1.0 if s is not None and s.status in (Status.UP, Status.SYNCING) else 0.0
            )
            if s is None or s.status is Status.UNKNOWN:
                continue
            checked.add_metric([name], s.checked_at)
            failures.add_metric([name], float(s.failures))
            behind = s.lag(now)
            if behind is not None:
                lag.add_metric([name], behind)
            if s.own_date is not None:
                synced.add_metric([name], s.own_date)
        for st, n in by_state.items():
            counts.add_metric([st.value], float(n))
        yield from (up, lag, checked, synced, failures, state, counts)

        master = snap.master
        m_up = _gauge("redirector_master_up", "1 when the master answered its last probe.")
        m_checked = _gauge(
            "redirector_master_last_check_timestamp_seconds",
            "Unix time of the master's last probe: the poller's last pass.",
        )
        m_changed = _gauge(
            "redirector_master_changed_timestamp_seconds",
            "Unix time the master's current content was first seen.",
        )
        m_up.add_metric([], 1.0 if master is not None and master.error is None else 0.0)
        if master is not None:
            m_checked.add_metric([], master.checked_at)
            if master.current is not None:
                m_changed.add_metric([], master.current.first_seen)
        store_up = _gauge(
            "redirector_store_up", "1 when the state store answered this process's last read."
        )
        store_up.add_metric([], 1.0 if holder.store_error is None else 0.0)
        yield from (m_up, m_checked, m_changed, store_up)
        yield from self._repodata(snap.repodata)
        yield from self._poller(master.checked_at if master is not None else None, now)
        yield from self._reload()
        yield from self._geoip()
        info = InfoMetricFamily("redirector_build", "The running build.", labels=[])
        info.add_metric([], {"version": VERSION, "python": platform.python_version()})
        yield info

    def _repodata(self, repodata: RepodataState | None) -> Iterator[Metric]:
        verdict = _gauge(
            "redirector_repodata_verdict",
            "1 for each mirror's repodata verdict per repo directory (current, alternate, "
            "mismatched, missing).",
            ["mirror", "repo", "verdict"],
        )
        checked = _gauge(
            "redirector_repodata_last_check_timestamp_seconds",
            "Unix time of the last repodata pass.",
        )
        if repodata is not None:
            checked.add_metric([], repodata.checked_at)
            for name, verdicts in sorted(repodata.mirrors.items()):
                for repo, v in sorted(verdicts.items()):
                    verdict.add_metric([name, repo, v.value], 1.0)
        yield from (verdict, checked)

    def _poller(self, last_pass: float | None, now: float) -> Iterator[Metric]:
        if self._poll_interval is None:
            return
        interval = self._poll_interval()
        every = _gauge(
            "redirector_poll_interval_seconds", "The configured time between poller passes."
        )
        every.add_metric([], interval)
        silent = _gauge(
            "redirector_poller_silent",
            f"1 when no poller pass was recorded in {SILENT_INTERVALS} poll intervals (or "
            "ever): this node serves its last snapshot.",
        )
        quiet = last_pass is None or now - last_pass > SILENT_INTERVALS * interval
        silent.add_metric([], 1.0 if quiet else 0.0)
        reloader = self._reloader() if self._reloader is not None else None
        refusal = reloader.refusal if reloader is not None else None
        r = readiness(
            self._holder.current,
            now=now,
            max_lag=self._max_lag(),
            poll_interval=interval,
            store_error=self._holder.store_error,
            config_error=refusal.error if refusal is not None else None,
            config_watched=reloader is not None and reloader.watches_config,
        )
        ready = _gauge(
            "redirector_ready",
            "1 when this node can serve (/health/ready answers 200: ready or degraded).",
        )
        ready.add_metric([], 1.0 if r.ready else 0.0)
        degraded = _gauge(
            "redirector_degraded",
            "1 when this node serves with a problem (/health/ready says degraded).",
        )
        degraded.add_metric([], 1.0 if r.ready and r.status == "degraded" else 0.0)
        yield from (every, silent, ready, degraded)

    def _reload(self) -> Iterator[Metric]:
        reloader = self._reloader() if self._reloader is not None else None
        if reloader is None:
            return
        last = reloader.last
        ok = _gauge(
            "redirector_config_reload_success",
            "1 when the last config reload was applied (or none was tried since startup), 0 "
            "when it was refused and an older config still runs.",
        )
        ok.add_metric([], 1.0 if last is None or last.ok else 0.0)
        at = _gauge(
            "redirector_config_reload_timestamp_seconds",
            "Unix time of the last config reload attempt (startup when none).",
        )
        at.add_metric([], last.at if last is not None else reloader.started_at)
        count = CounterMetricFamily(
            "redirector_config_reloads",
            "Config reloads since this process started, applied or refused.",
            labels=["result"],
        )
        count.add_metric(["applied"], float(reloader.reloads))
        count.add_metric(["refused"], float(reloader.refused))
        refused = _gauge(
            "redirector_config_refused",
            "1 while the config file on disk is refused: where it is wrong.",
            ["file", "line", "field"],
        )
        if last is not None and not last.ok:
            line = "" if last.line is None else str(last.line)
            refused.add_metric([last.path or "", line, last.field or ""], 1.0)
        yield from (ok, at, count, refused)

    def _geoip(self) -> Iterator[Metric]:
        if self._geo is None:
            return
        reader = self._geo()
        built = _gauge(
            "redirector_geoip_build_timestamp_seconds",
            "Unix time the GeoIP database in use was built (absent: location-blind).",
        )
        if reader is not None:
            built.add_metric([], float(reader.build_epoch))
        yield built
