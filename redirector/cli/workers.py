"""Several worker processes on one port: `redirector serve --workers N` and its supervisor.

One Python process serves one core. The supervisor starts N workers (spawned, not forked: a
fresh interpreter each, so no event loop or open socket leaks across), and each binds the
listening address itself with SO_REUSEPORT, so the kernel spreads connections over them. The
supervisor restarts a worker that dies, forwards SIGHUP (reload) to every worker, and on
SIGTERM or SIGINT stops them all and exits.

How the workers agree on mirror state: through the store, as several hosts do.

* With `redis_url`, through Redis.
* Without it, through a `FileStore` (one JSON file replaced atomically) in `--state-dir`, or
  by default in a directory kept across restarts (`default_state_dir`): a restart is then
  not a cold start, which would forget the master's history and take a mirror days behind
  for one an hour behind. In both cases the poller lease
  (`lease.py`) makes exactly one worker poll, another takes over within one lease ttl if that
  one dies, and every worker's snapshot refresher reloads when the generation moves.

The supervisor also gives the workers a shared prometheus-client multiprocess directory (see
`metrics.py`), so a scrape of any worker counts the redirects of all of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing
import multiprocessing.process
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from redirector.config.settings import Settings
from redirector.core.humanize import duration

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # as metrics.MULTIPROC_ENV, without importing it
STOP_GRACE = 10.0  # seconds workers get to finish after SIGTERM before they are killed
FAST_EXIT = 5.0  # a worker that dies sooner than this after starting counts as crash-looping
MAX_FAST_EXITS = 5  # consecutive fast deaths of one worker before the supervisor gives up
TICK = 0.2  # how often the supervisor looks at its workers


def default_workers() -> int:
    """The number of cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker process is started with (pickled into the spawned interpreter)."""

    settings: Settings
    index: int
    poll: bool
    state_dir: Path | None  # the FileStore directory; None: the settings' store (Redis)
    log_level: int


def default_state_dir(settings: Settings, environ: Mapping[str, str] | None = None) -> Path:
    """Where the workers keep their file store without `--state-dir`: kept across restarts.

    Under systemd's ``StateDirectory=`` (``$STATE_DIRECTORY``), else under
    ``$XDG_STATE_HOME/redirector`` (default ``~/.local/state/redirector``), in a subdirectory
    named after the listening address and the master, so that two redirectors on one host
    never share state, and one whose master changed starts afresh.
    """
    env = os.environ if environ is None else environ
    if env.get("STATE_DIRECTORY"):
        root = Path(env["STATE_DIRECTORY"].split(":")[0])  # several are colon-separated
    else:
        home = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        root = Path(home) / "redirector"
    identity = f"{settings.listen_host}:{settings.listen_port} {settings.master}"
    return root / hashlib.sha256(identity.encode()).hexdigest()[:16]


def check_address(host: str, port: int) -> None:
    """Raise OSError now if the workers could not bind (host, port) with SO_REUSEPORT.

    A worker failing to bind would only die and be restarted forever; saying it once, before
    any worker starts, is kinder.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((host, port))


def _watch_parent(parent: int) -> None:
    """In a worker: stop when the supervisor is gone (killed with SIGKILL, say)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def worker_main(spec: WorkerSpec) -> None:
    """The body of one worker process: the app, on the shared port, until SIGTERM."""
    logging.basicConfig(
        level=spec.log_level,
        format=f"%(asctime)s %(levelname)s [worker {spec.index}] %(name)s: %(message)s",
    )
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    from redirector.store.file import FileStore
    from redirector.web.app import run

    store = FileStore(spec.state_dir) if spec.state_dir is not None else None
    # Worker 0 speaks for the host: reloads and GeoIP swaps are the same news in every worker.
    run(
        spec.settings,
        poll=spec.poll,
        store=store,
        reuse_port=True,
        print_fn=lambda _: None,
        speaks=spec.index == 0,
    )


class _Slot:
    """One worker position: its current process and how its recent starts went."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: multiprocessing.process.BaseProcess | None = None
        self.started = 0.0
        self.fast_exits = 0
        self.restart_at = 0.0


class Supervisor:
    """Starts, watches, restarts and stops the workers; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        workers: int,
        poll: bool = True,
        state_dir: Path | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.settings = settings
        self.workers = workers
        self.poll = poll
        self.state_dir = state_dir
        self._ctx = multiprocessing.get_context("spawn")
        self._slots = [_Slot(i) for i in range(workers)]
        self._stop_signal: int | None = None
        self._reload = False
        self._runtime: Path | None = None

    @property
    def pids(self) -> list[int]:
        return [s.process.pid for s in self._slots if s.process and s.process.pid is not None]

    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        self._stop_signal = signum

    def _on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        self._reload = True

    def _prepare(self) -> Path | None:
        """The runtime directory (metrics), and the FileStore's directory unless Redis."""
        runtime = Path(tempfile.mkdtemp(prefix="redirector-"))  # 0700
        self._runtime = runtime
        store_dir = None
        if self.settings.redis_url is None:
            from redirector.store.base import StoreError
            from redirector.store.file import FileStore

            store_dir = self.state_dir or default_state_dir(self.settings)
            store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            # No worker runs yet: a lease left by the last run is nobody's (and its expiry is
            # on a monotonic clock that a reboot restarted).
            try:
                FileStore(store_dir).drop_leases()
            except StoreError as e:
                raise OSError(str(e)) from e  # reported as an unusable state directory
        if MULTIPROC_ENV not in os.environ:
            metrics = runtime / "metrics"
            metrics.mkdir(mode=0o700)
            os.environ[MULTIPROC_ENV] = str(metrics)  # inherited by the spawned workers
        return store_dir

    def _start(self, slot: _Slot, store_dir: Path | None) -> None:
        spec = WorkerSpec(
            self.settings, slot.index, self.poll, store_dir, logging.getLogger().level
        )
        process = self._ctx.Process(
            target=worker_main, args=(spec,), name=f"redirector-worker-{slot.index}"
        )
        process.start()
        slot.process = process
        slot.started = time.monotonic()
        log.info("worker %d started, pid %s", slot.index, process.pid)

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; 0 on a clean stop, 1 when workers keep dying."""
        s = self.settings
        check_address(s.listen_host, s.listen_port)
        store_dir = self._prepare()
        previous = {
            sig: signal.signal(sig, handler)
            for sig, handler in (
                (signal.SIGTERM, self._on_stop),
                (signal.SIGINT, self._on_stop),
                (signal.SIGHUP, self._on_hup),
            )
        }
        code = 0
        try:
            for slot in self._slots:
                self._start(slot, store_dir)
            where = "Redis" if store_dir is None else f"file store {store_dir}"
            log.info(
                "%d workers on http://%s:%d, sharing state through %s",
                self.workers, s.listen_host, s.listen_port, where,
            )  # fmt: skip
            code = self._watch(store_dir)
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self._runtime is not None:
                shutil.rmtree(self._runtime, ignore_errors=True)
        return code

    def _watch(self, store_dir: Path | None) -> int:
        while self._stop_signal is None:
            if self._reload:
                self._reload = False
                log.info("SIGHUP: workers reload their config")
                self._signal_all(signal.SIGHUP)
            now = time.monotonic()
            for slot in self._slots:
                p = slot.process
                if p is None or p.exitcode is None:
                    continue
                if slot.restart_at == 0.0:
                    lived = now - slot.started
                    slot.fast_exits = slot.fast_exits + 1 if lived < FAST_EXIT else 0
                    if slot.fast_exits >= MAX_FAST_EXITS:
                        log.error(
                            "worker %d died %d times within %s of starting; giving up",
                            slot.index, slot.fast_exits, duration(FAST_EXIT),
                        )  # fmt: skip
                        return 1
                    delay = min(10.0, 0.5 * 2 ** max(0, slot.fast_exits - 1))
                    log.warning(
                        "worker %d (pid %s) exited with %s; restarting in %s",
                        slot.index, p.pid, p.exitcode, duration(delay),
                    )  # fmt: skip
                    slot.restart_at = now + delay
                elif now >= slot.restart_at:
                    slot.restart_at = 0.0
                    p.close()
                    self._start(slot, store_dir)
            time.sleep(TICK)
        log.info("signal %d: stopping %d workers", self._stop_signal, self.workers)
        return 0

    def _signal_all(self, sig: int) -> None:
        for slot in self._slots:
            p = slot.process
            if p is not None and p.exitcode is None and p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, sig)

    def _stop_all(self) -> None:
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for slot in self._slots:
            p = slot.process
            if p is None:
                continue
            p.join(max(0.0, deadline - time.monotonic()))
            if p.exitcode is None:
                log.warning(
                    "worker %d did not stop in %s: killed", slot.index, duration(STOP_GRACE)
                )
                p.kill()
                p.join()


def serve(settings: Settings, *, workers: int, poll: bool, state_dir: Path | None = None) -> int:
    """`redirector serve --workers N`: N > 1 supervised workers, else this process serves."""
    if workers <= 1:
        from redirector.store.file import FileStore
        from redirector.web.app import run

        # One process needs no sharing; a --state-dir is still honoured (and must exist).
        store = None
        if state_dir is not None and settings.redis_url is None:
            if not state_dir.is_dir():
                raise NotADirectoryError(20, "not a directory", str(state_dir))
            store = FileStore(state_dir)
        run(settings, poll=poll, store=store)
        return 0
    return Supervisor(settings, workers=workers, poll=poll, state_dir=state_dir).run()
