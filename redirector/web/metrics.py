"""Prometheus metrics: request and poller counters per process, mirror state read at scrape time.

Two kinds of figures, kept apart so both stay right when several worker processes serve one
port:

* Events (redirects, decision latency, poller passes and failed probes, store errors) are
  prometheus-client counters and histograms. With ``PROMETHEUS_MULTIPROC_DIR`` set in the
  environment before the process starts, prometheus-client keeps them in per-process files in
  that directory, and a scrape of any worker adds up every worker's files
  (`MultiProcessCollector`). Without it they live in this process's own registry.
* State (each mirror's state, lag, last check; the master; the store) is not counted but read
  from the snapshot every worker holds, when scraped (`StateCollector`): the same in every
  worker, so whichever worker answers the scrape tells the truth, and no gauge files are needed.

What a supervisor of several workers must do: create an empty directory, export
``PROMETHEUS_MULTIPROC_DIR`` pointing at it before starting the workers (it must be set before
prometheus_client is imported), empty it on every supervisor start (stale files of dead
processes would otherwise count again), and keep it for the supervisor's lifetime: the files of
a worker that exited still hold its counts, which is what counters need.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from redirector.core.models import Status
from redirector.snapshot import SnapshotHolder
from redirector.store.base import Store, StoreError
from redirector.views.status import State, classify

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# No "_created" series: a timestamp per label set doubles the scrape for nothing we alert on.
# (A process-wide switch of prometheus-client; this process exports only our metrics.)
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream

# Decisions take tens of microseconds; the top buckets catch a stalled event loop.
DECISION_BUCKETS = (
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.1,
)  # fmt: skip
PASS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)

OUTCOME_MIRROR, OUTCOME_MASTER, OUTCOME_4XX = "mirror", "master", "4xx"


def multiprocess_dir() -> str | None:
    """The directory prometheus-client's multiprocess mode uses, from the environment.

    Read once at app build time: prometheus-client itself decides at import time whether
    metric values live in files, from the same variable.
    """
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    """Every metric one redirector process records, and the `/metrics` rendering."""

    def __init__(self, mirrors: Iterable[str] = (), multiproc: str | None = None) -> None:
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
            "Requests under the tree by outcome: to a mirror, to the master, refused (4xx).",
            ["outcome", "mirror"],
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
        self._master = self.redirects.labels(OUTCOME_MASTER, "")
        self._refused = self.redirects.labels(OUTCOME_4XX, "")
        self._by_mirror: dict[str, Counter] = {}
        for name in mirrors:
            self._mirror_counter(name)
        self._state: StateCollector | None = None

    def _mirror_counter(self, name: str) -> Counter:
        child = self._by_mirror.get(name)
        if child is None:
            child = self._by_mirror[name] = self.redirects.labels(OUTCOME_MIRROR, name)
        return child

    # --- recording (hot path: no allocation beyond prometheus-client's own) ---

    def redirected(self, mirror: str | None, seconds: float, *, https: bool = False) -> None:
        """One 302: to `mirror`, or to the master when None; `seconds` the decision took.
        `https`: the request came over https, counted apart too, to show where those go."""
        self.decision_seconds.observe(seconds)
        if mirror is None:
            self._master.inc()
        else:
            self._mirror_counter(mirror).inc()
        if https:
            self.https_redirects.labels(mirror or "").inc()

    def refused(self) -> None:
        """One request under the tree answered with a 4xx (bad path, bad method)."""
        self._refused.inc()

    def observe_pass(
        self, duration: float, master_error: str | None, failed: Iterable[str]
    ) -> None:
        """One poller pass: how long it took, and which probes failed."""
        self.poller_pass_seconds.observe(duration)
        if master_error is not None:
            self.poller_errors.labels("master").inc()
        for name in failed:
            self.poller_errors.labels(name).inc()

    def store_error(self, op: str) -> None:
        self.store_errors.labels(op).inc()

    def instrument(self, store: Store) -> Store:
        """`store`, counting every StoreError it raises by operation."""
        # Forwarding by __getattr__ keeps methods other modules add to the protocol working.
        return cast(Store, _CountingStore(store, self.store_error))

    # --- scraping ---

    def watch(
        self,
        holder: SnapshotHolder,
        max_lag: Callable[[], float],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Report the state in `holder` at every scrape; `max_lag` reads the live setting."""
        self._state = StateCollector(holder, max_lag, clock)
        if self.registry is not None:
            self.registry.register(self._state)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The scrape body and its content type (text format, or OpenMetrics when asked)."""
        registry = self.registry
        if registry is None:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiproc)  # type: ignore[no-untyped-call]  # unannotated upstream
            if self._state is not None:
                registry.register(self._state)
        encoder, content_type = choose_encoder(accept or "")
        return encoder(registry), content_type


class _CountingStore:
    """A store proxy: forwards everything, counts StoreErrors from coroutine methods."""

    def __init__(self, inner: Store, on_error: Callable[[str], None]) -> None:
        self._inner = inner
        self._on_error = on_error
        self.kind = inner.kind

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                return await attr(*args, **kwargs)
            except StoreError:
                self._on_error(name)
                raise

        return counted


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


class StateCollector(Collector):
    """Per-mirror, master and store gauges, computed from the snapshot when scraped."""

    def __init__(
        self, holder: SnapshotHolder, max_lag: Callable[[], float], clock: Callable[[], float]
    ) -> None:
        self._holder = holder
        self._max_lag = max_lag
        self._clock = clock

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
        by_state = dict.fromkeys(State, 0)
        for c in snap.candidates:
            name, s = c.mirror.name, c.state
            current, _ = classify(c, now, max_lag)
            by_state[current] += 1
            for st in State:
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
