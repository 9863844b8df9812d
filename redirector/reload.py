"""Reloading without a restart: the config on SIGHUP or a file change, the GeoIP file when replaced.

A reload never drops a request. Everything here runs on the event loop between requests, and a
swap is a few plain assignments in one synchronous call, so a handler sees the old config or the
new one, never a mix. A config that does not validate is refused: the running config stays, and
the refusal is kept (`Reloader.last`, with file, line and field) for /health, /health/ready,
/metrics and /mirrors to show until a good file is read. Listeners (`Reloader.listeners`) hear
of every accepted or refused reload: the event log's hook. A replaced GeoIP database is opened
beside the old one, swapped in, and the old reader is closed after a grace period, in case
something still holds it.

Files are watched by polling their (device, inode, size, mtime, ctime) once a second: that sees
an edit in place and a replacement by rename (how geoipupdate and config tools write), needs no
inotify, and costs one stat per file per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from redirector.config.live import LiveSettings
from redirector.config.settings import TOP_KEYS, ConfigError, Settings, load_settings
from redirector.geo import GeoError, GeoReader, geo_paths, open_paths
from redirector.supervise import Tasks

log = logging.getLogger(__name__)

WATCHER = "config watcher"  # the supervised task name, as /health shows it

WATCH_INTERVAL = 1.0  # seconds between two looks at the watched files
GEO_GRACE = 30.0  # seconds a replaced GeoIP reader stays open before it is closed

# Settings that only a restart can change: the listening socket, the store connection, the
# access log's destination, the lease and the file checks' caches are made once at startup.
# (config key, Settings fields), from the keys declared not reloadable.
RESTART_KEYS: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    (key.name, key.fields) for key in TOP_KEYS if not key.reloadable
)


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """One config reload, accepted or refused; for a refusal, where the file is wrong."""

    ok: bool
    at: float  # wall-clock time of the attempt
    reason: str  # what asked for it: "SIGHUP", "file changed"
    path: str | None
    error: str | None = None  # the whole message, as logged
    line: int | None = None
    field: str | None = None  # the key or table at fault, as the message names it
    detail: str | None = None  # the message without its location

    def to_json(self) -> dict[str, object]:
        """For the views: when, why, and where the file is wrong (all None when accepted)."""
        return {
            "at": self.at,
            "reason": self.reason,
            "file": self.path,
            "line": self.line,
            "field": self.field,
            "error": self.detail if self.detail is not None else self.error,
        }


ReloadListener = Callable[[ReloadOutcome], None]
"""Told of every config reload; must not raise, nor block (schedule any I/O as a task)."""


@dataclass(frozen=True, slots=True)
class FileSig:
    """What identifies one version of a file: a rename or a write changes at least one field."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


def file_signature(path: Path) -> FileSig | None:
    """The signature of the file at `path` now, or None when there is no readable file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileSig(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def restart_changes(old: Settings, new: Settings) -> list[str]:
    """The config keys whose change between `old` and `new` only a restart applies."""
    return [
        key
        for key, fields in RESTART_KEYS
        if any(getattr(old, f, None) != getattr(new, f, None) for f in fields)
    ]


def keep_running(running: Settings, new: Settings) -> Settings:
    """`new` with the restart-only fields of `running`: what a reload can actually apply."""
    fields = {f: getattr(running, f) for _, fs in RESTART_KEYS for f in fs if hasattr(running, f)}
    return replace(new, **fields)


class Reloader:
    """Re-reads one process's config and GeoIP database and hands the new ones over.

    `settings` is the process's live holder (or startup settings, then it makes one): every
    accepted config replaces `live.current`, restart-only fields kept at their running values,
    right after `apply(settings)` has been called with it, in the same synchronous step.
    `swap_geo(reader)` (None: GeoIP is not watched here) is called with a newly opened reader,
    or None when the config turns GeoIP off. `speak` False logs reloads and GeoIP swaps at
    debug level only: in `serve --workers N` one worker speaks for the host, so the journal
    gets each line once, not once per worker. `wall` is the clock of `ReloadOutcome.at`.
    Not thread-safe: one event loop.
    """

    def __init__(
        self,
        settings: Settings | LiveSettings,
        apply: Callable[[Settings], None],
        *,
        geo: GeoReader | None = None,
        swap_geo: Callable[[GeoReader | None], None] | None = None,
        grace: float = GEO_GRACE,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        speak: bool = True,
        listeners: Iterable[ReloadListener] = (),
    ) -> None:
        self.live = settings if isinstance(settings, LiveSettings) else LiveSettings(settings)
        startup = self.live.current
        self.geo = geo
        self.reloads = 0  # accepted config reloads
        self.refused = 0  # config reloads refused as invalid
        self.last_error: str | None = None
        self.last: ReloadOutcome | None = None  # the latest attempt; None: none since startup
        self.started_at = wall()
        self.listeners: list[ReloadListener] = list(listeners)
        self.speak = speak
        self._wall = wall
        self._apply = apply
        self._swap_geo = swap_geo
        self._grace = grace
        self._clock = clock
        self._initial_geo = geo
        self._retired: list[tuple[float, GeoReader]] = []
        # Only a file that exists at startup is watched: settings parsed from text name a
        # source that may not exist at all.
        source = startup.source
        self._config_sig = file_signature(source) if source is not None else None
        self._watch_config = self._config_sig is not None
        # The file as it said at startup, before any command-line override, so that --listen
        # is not reported as a change of the file on the first reload.
        self._file = startup
        if self._watch_config:
            assert source is not None
            with contextlib.suppress(ConfigError):
                self._file = load_settings(source)
        # A database that could not be opened at startup is tried again only once it changes.
        self._geo_paths: tuple[Path, ...] = geo.paths if geo is not None else ()
        if geo is None and swap_geo is not None:
            self._geo_paths = geo_paths(startup)
        self._geo_sigs = tuple(file_signature(p) for p in self._geo_paths)

    @property
    def watches_config(self) -> bool:
        """Whether the config comes from a file this reloader watches (reloads can happen)."""
        return self._watch_config

    @property
    def refusal(self) -> ReloadOutcome | None:
        """The last reload when it was refused: the file on disk is not the config in force."""
        last = self.last
        return last if last is not None and not last.ok else None

    @property
    def settings(self) -> Settings:
        """The settings in force now: `live.current`."""
        return self.live.current

    @settings.setter
    def settings(self, settings: Settings) -> None:
        self.live.replace(settings)

    # -- the config

    def reload_config(self, reason: str) -> bool:
        """Read the config file again and apply it; False, with the error logged, if refused."""
        source = self.settings.source
        if source is None or not self._watch_config:
            log.warning("config reload (%s) ignored: the config was not read from a file", reason)
            return False
        # The signature is taken before reading: a write racing the read shows up as one more
        # change on the next look, and the file is read again.
        self._config_sig = file_signature(source)
        try:
            new = load_settings(source)
        except ConfigError as e:
            self.refused += 1
            self.last_error = str(e)
            # The message names file, line and field; a traceback would only hide it.
            self._say(
                logging.ERROR, "config reload (%s) refused, keeping the running config: %s",
                reason, e,
            )  # fmt: skip
            self._tell(
                ReloadOutcome(
                    False, self._wall(), reason, e.path, str(e), e.line, e.where or None,
                    e.message,
                )
            )  # fmt: skip
            return False
        restart = restart_changes(self._file, new)
        if restart:
            self._say(
                logging.WARNING,
                "config reload (%s): %s changed; restart needed to apply (running values kept)",
                reason,
                ", ".join(restart),
            )
        self._file = new
        applied = keep_running(self.settings, new)
        try:
            self._apply(applied)
        except Exception as e:  # a bug, not a bad file: say so and keep serving
            self.last_error = f"applying the new config failed: {e}"
            log.exception("config reload (%s): applying the new config failed", reason)
            self._tell(ReloadOutcome(False, self._wall(), reason, str(source), self.last_error))
            return False
        self.live.replace(applied)
        self.reloads += 1
        self.last_error = None
        self._tell(ReloadOutcome(True, self._wall(), reason, str(source)))
        enabled = sum(1 for m in applied.mirrors if m.enabled)
        self._say(
            logging.INFO,
            "config reloaded (%s) from %s: %d mirrors (%d enabled)",
            reason,
            source,
            len(applied.mirrors),
            enabled,
        )
        self.check_geo()  # the new config may name another GeoIP database
        return True

    def _say(self, level: int, msg: str, *args: object) -> None:
        log.log(level if self.speak else logging.DEBUG, msg, *args)

    def _tell(self, outcome: ReloadOutcome) -> None:
        self.last = outcome
        for listener in list(self.listeners):
            try:
                listener(outcome)
            except Exception:  # a listener's bug must not undo a reload
                log.exception("reload listener %r failed", listener)

    # -- the GeoIP database

    def check_geo(self) -> bool:
        """Open the GeoIP files again if one was replaced; True when a reader was swapped.

        Several files (geoip_databases) are opened and swapped together: a set where one file
        is unusable is logged once and the running reader kept; a missing file keeps the
        running reader too (it stays mapped), until every file is there and usable.
        """
        if self._swap_geo is None:
            return False
        paths = geo_paths(self.settings)
        if not paths:
            if self.geo is None:
                return False
            self._say(logging.WARNING, "GeoIP turned off by the config: location-blind from now on")
            self._swap(None)
            self._geo_paths, self._geo_sigs = (), ()
            return True
        sigs = tuple(file_signature(p) for p in paths)
        if paths == self._geo_paths and sigs == self._geo_sigs:
            return False
        self._geo_paths, self._geo_sigs = paths, sigs
        gone = [p for p, sig in zip(paths, sigs, strict=True) if sig is None]
        if gone:
            if self.geo is not None:
                self._say(
                    logging.WARNING,
                    "GeoIP database %s is gone; keeping the one already open",
                    ", ".join(map(str, gone)),
                )
            return False
        try:
            new = open_paths(self.settings, paths)
        except GeoError as e:
            kept = self.geo.describe() if self.geo is not None else "location-blind"
            self._say(
                logging.ERROR, "GeoIP database changed but cannot be used (%s), keeping %s", e, kept
            )
            return False
        self._swap(new)
        self._say(logging.INFO, "GeoIP database reloaded: %s", new.describe())
        for said in new.warnings(time.time(), self.settings.geoip_max_age):
            self._say(logging.WARNING, "%s", said)
        return True

    def _swap(self, new: GeoReader | None) -> None:
        assert self._swap_geo is not None
        old, self.geo = self.geo, new
        self._swap_geo(new)
        if old is not None:
            self._retired.append((self._clock() + self._grace, old))

    def _close_retired(self, force: bool = False) -> None:
        now = self._clock()
        keep: list[tuple[float, GeoReader]] = []
        for deadline, reader in self._retired:
            if force or now >= deadline:
                reader.close()
            else:
                keep.append((deadline, reader))
        self._retired = keep

    # -- the loop

    def check(self) -> None:
        """One look at the watched files: reload what changed, close what has served its time."""
        if self._watch_config:
            assert self.settings.source is not None
            if file_signature(self.settings.source) != self._config_sig:
                self.reload_config("file changed")
        self.check_geo()
        self._close_retired()

    def on_signal(self) -> None:
        """SIGHUP: re-read the config whether or not the file looks changed."""
        self.reload_config("SIGHUP")
        self._close_retired()

    async def run(self, interval: float = WATCH_INTERVAL) -> None:
        """Look at the files every `interval` seconds until cancelled; a failure never stops it."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.check()
            except Exception:
                log.exception("reload check failed; trying again")

    def close(self) -> None:
        """Close every reader this reloader opened or retired (the first one is its opener's)."""
        self._close_retired(force=True)
        if self.geo is not None and self.geo is not self._initial_geo:
            self.geo.close()
        self.geo = None


# SIGHUP goes to every reloader of the process: tests may run several apps in one.
_sighup_listeners: set[Reloader] = set()


def _on_sighup() -> None:
    for reloader in tuple(_sighup_listeners):
        try:
            reloader.on_signal()
        except Exception:
            log.exception("SIGHUP reload failed")


def hold_sighup() -> None:
    """Ignore SIGHUP until a reloader listens: its default action would end the process, and
    `systemctl reload` may come while a worker is still starting. Main thread only."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def listen_sighup(reloader: Reloader) -> bool:
    """Reload `reloader` on SIGHUP; False when signals cannot be handled here (not main thread)."""
    if not _sighup_listeners:
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, _on_sighup)
        except (RuntimeError, ValueError, NotImplementedError) as e:
            log.debug("no SIGHUP reload in this thread: %s", e)
            return False
    _sighup_listeners.add(reloader)
    return True


def unlisten_sighup(reloader: Reloader) -> None:
    _sighup_listeners.discard(reloader)
    if not _sighup_listeners:
        with contextlib.suppress(RuntimeError, ValueError, NotImplementedError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)


@contextlib.asynccontextmanager
async def watching(
    settings: Settings | LiveSettings,
    apply: Callable[[Settings], None] | None = None,
    *,
    geo: GeoReader | None = None,
    swap_geo: Callable[[GeoReader | None], None] | None = None,
    interval: float = WATCH_INTERVAL,
    grace: float = GEO_GRACE,
    tasks: Tasks | None = None,
    speak: bool = True,
) -> AsyncIterator[Reloader]:
    """A Reloader watching its files and listening for SIGHUP while the block runs.

    Outside an app (the `redirector poll` process) `reloader.live` holds the live config.
    The watcher runs supervised in `tasks` (the app's, so /health shows it), or its own.
    """
    reloader = Reloader(
        settings, apply or (lambda _: None), geo=geo, swap_geo=swap_geo, grace=grace, speak=speak
    )
    listen_sighup(reloader)
    tasks = tasks if tasks is not None else Tasks()
    tasks.start(WATCHER, lambda: reloader.run(interval))
    try:
        yield reloader
    finally:
        unlisten_sighup(reloader)
        await tasks.stop(WATCHER)
        reloader.close()
