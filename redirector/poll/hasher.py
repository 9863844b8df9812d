"""The hasher: the master's file facts (size, date, hashes) for the files worth it, in the store.

Sources, in order: the master tree on this machine's disk (`hash_tree`), walked every
`hash_interval`; only a file whose size or mtime changed since its facts were written (or that
has none) is read again, at most `hash_read_rate` MB/s, in a child process at a lower CPU
priority (``python -m redirector.poll.hasher``): hashing in a thread of the server would take
the GIL back after each block and the event loop would wait for it, which showed as a p99
half as long again under load (bench/hashing.py). Each file's facts are written as soon as it
is hashed, so a new file has its hash within the pass that first sees it. Without a local tree,
the checksum files the master publishes (`hash_sums`) are read over http and the sizes and
dates taken from a HEAD of each file they name. Without either, no facts: nothing claims a hash.

Only the process holding the poller lease hashes (the others read the facts from the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from redirector.config.settings import Settings
from redirector.core.filefacts import (
    Digester,
    FileFacts,
    changed,
    gone,
    parse_sums,
    sums_algorithm,
    worth_hashing,
)
from redirector.core.humanize import duration
from redirector.poll.probe import ProbeError, fetch
from redirector.store.base import FactStore, StoreError
from redirector.store.codec import decode_facts, encode_facts
from redirector.store.lease import Lease

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes read at a time
NICE = 10  # the child's CPU priority below the server's
MAX_SUMS = 1 << 20  # a checksum file is a few kB; a MB is not one
PROGRESS_EVERY = 10.0  # seconds between progress lines during a long pass


@dataclass(frozen=True, slots=True)
class HashPass:
    """What one pass did."""

    seen: int  # files worth hashing found
    hashed: int  # files (re)hashed this pass
    dropped: int  # facts dropped for files gone
    bytes_read: int
    seconds: float
    error: str | None = None


class Stopped(Exception):
    """The pass was asked to stop (shutdown, lease lost) in the middle of a file."""


def walk(root: Path, patterns: tuple[str, ...]) -> dict[str, os.stat_result]:
    """Every regular file below `root` matching `patterns`, by path relative to `root`.

    Symlinks are followed (the SME tree uses them), each directory entered once, so a link
    loop ends; unreadable directories are skipped.
    """
    out: dict[str, os.stat_result] = {}
    seen: set[tuple[int, int]] = set()
    stack = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            st = os.stat(directory)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            rel = prefix + entry.name
            try:
                est = entry.stat()  # follows symlinks
            except OSError:
                continue
            if stat.S_ISDIR(est.st_mode):
                stack.append((Path(entry.path), rel + "/"))
            elif stat.S_ISREG(est.st_mode) and worth_hashing(rel, patterns):
                out[rel] = est
    return out


def hash_file(
    path: Path,
    rel: str,
    rate: float,
    stop: threading.Event,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[FileFacts, int]:
    """The facts of one file, read at most `rate` bytes a second; (facts, bytes read).

    Raises Stopped when `stop` is set, OSError when the file cannot be read, and ValueError
    when it changed while being read (its facts would be of no version of it).
    """
    before = os.stat(path)
    digester = Digester(before.st_size)
    started = time.monotonic()
    with open(path, "rb") as f:
        while True:
            if stop.is_set():
                raise Stopped
            chunk = f.read(CHUNK)
            if not chunk:
                break
            digester.update(chunk)
            # Keep to the rate: sleep off what the reading ran ahead of it.
            ahead = digester.fed / rate - (time.monotonic() - started)
            if ahead > 0:
                sleep(min(ahead, 1.0))
    after = os.stat(path)
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise ValueError("changed while being hashed")
    if digester.fed != before.st_size:
        raise ValueError("size differs from what was read")
    return digester.facts(rel, before.st_mtime), digester.fed


class Hasher:
    """One pass at a time over the configured source; see the module docstring.

    `current` gives the live settings (patterns, interval and rate follow a reload; the tree
    is fixed at startup). `session` is used for checksum files when there is no tree.
    """

    def __init__(
        self,
        store: FactStore,
        current: Callable[[], Settings],
        *,
        session: aiohttp.ClientSession | None = None,
        tree: Path | None = None,
    ) -> None:
        self.store = store
        self.current = current
        self.session = session
        self.tree = tree if tree is not None else current().local_tree
        self._stop = threading.Event()
        self._child: asyncio.subprocess.Process | None = None
        self.passes = 0

    def stop(self) -> None:
        """End the file being hashed now (its child process is killed)."""
        self._stop.set()
        child = self._child
        if child is not None and child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.kill()

    async def _hash(self, path: Path, rel: str, rate: float) -> tuple[FileFacts, int]:
        """`hash_file` in a child process; the same errors (Stopped once `stop` was called)."""
        if self._stop.is_set():
            raise Stopped
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            str(path),
            rel,
            str(rate),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._child = child
        try:
            out, err = await child.communicate()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
            raise
        finally:
            self._child = None
        if self._stop.is_set():
            raise Stopped
        if child.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines()
            raise OSError(lines[-1] if lines else f"hasher exited with {child.returncode}")
        try:
            facts = decode_facts(out)
        except StoreError as e:
            raise ValueError(f"the hasher's answer: {e}") from e
        if facts.path != rel:
            raise ValueError(f"the hasher answered for {facts.path!r}")
        return facts, facts.size

    async def run_pass(self, *, held: Callable[[], bool] = lambda: True) -> HashPass:
        """One pass; `held` False stops it between files (the lease was lost)."""
        started = time.monotonic()
        try:
            if self.tree is not None:
                result = await self._tree_pass(self.tree, started, held)
            else:
                result = await self._sums_pass(started)
        except StoreError as e:
            log.warning("hash pass stopped: %s", e)
            result = HashPass(0, 0, 0, 0, time.monotonic() - started, str(e))
        self.passes += 1
        return result

    async def _tree_pass(self, root: Path, started: float, held: Callable[[], bool]) -> HashPass:
        settings = self.current()
        known = await self.store.load_facts()
        files = await asyncio.to_thread(walk, root, settings.hash_patterns)
        todo = sorted(
            rel for rel, st in files.items() if changed(known, rel, st.st_size, st.st_mtime)
        )
        total = sum(files[rel].st_size for rel in todo)
        if todo:
            log.info(
                "hashing %d of %d files (%s MB) under %s",
                len(todo),
                len(files),
                f"{total / 1e6:.0f}",
                root,
            )
        rate = settings.hash_read_rate * 1e6
        hashed = read = 0
        last_note = time.monotonic()
        for rel in todo:
            if not held():
                break
            try:
                facts, n = await self._hash(root / rel, rel, rate)
            except Stopped:
                break
            except (OSError, ValueError) as e:
                log.warning("not hashed: %s: %s", rel, e)
                continue
            await self.store.put_facts([facts])
            hashed += 1
            read += n
            if time.monotonic() - last_note >= PROGRESS_EVERY:
                last_note = time.monotonic()
                log.info(
                    "hashed %d of %d files, %s of %s MB",
                    hashed,
                    len(todo),
                    f"{read / 1e6:.0f}",
                    f"{total / 1e6:.0f}",
                )
        drop = [p for p in gone(known, set(files)) if known[p].source == "tree"]
        if drop and held():
            await self.store.drop_facts(drop)
        seconds = time.monotonic() - started
        if todo or drop:
            log.info(
                "hash pass: %d hashed, %d dropped, %d files known, %s",
                hashed,
                len(drop),
                len(files),
                duration(seconds),
            )
        return HashPass(len(files), hashed, len(drop), read, seconds)

    async def _sums_pass(self, started: float) -> HashPass:
        settings = self.current()
        if not settings.hash_sums or self.session is None:
            return HashPass(0, 0, 0, 0, 0.0)
        known = await self.store.load_facts()
        found: dict[str, dict[str, str]] = {}
        complete = True
        for sums in settings.hash_sums:
            try:
                got = await fetch(
                    self.session,
                    settings.origin + sums,
                    timeout=settings.probe_timeout,
                    max_bytes=MAX_SUMS,
                )
            except ProbeError as e:
                log.warning("checksum file %s: %s", sums, e)
                complete = False
                continue
            if got.status != 200:
                log.warning("checksum file %s: HTTP %d", sums, got.status)
                complete = False
                continue
            directory = sums.rpartition("/")[0]
            prefix = directory + "/" if directory else ""
            text = got.body.decode("utf-8", "replace")
            for name, hashes in parse_sums(text, sums_algorithm(sums.rsplit("/", 1)[-1])).items():
                if worth_hashing(prefix + name, settings.hash_patterns):
                    found.setdefault(prefix + name, {}).update(hashes)
        new: list[FileFacts] = []
        for path, hashes in sorted(found.items()):
            facts = await self._head_facts(settings, path, hashes)
            if facts is not None and facts != known.get(path):
                new.append(facts)
        if new:
            await self.store.put_facts(new)
        drop = [p for p in gone(known, set(found)) if known[p].source == "sums"]
        if drop and complete:
            await self.store.drop_facts(drop)
        return HashPass(
            len(found), len(new), len(drop) if complete else 0, 0, time.monotonic() - started
        )

    async def _head_facts(
        self, settings: Settings, path: str, hashes: dict[str, str]
    ) -> FileFacts | None:
        """Facts for `path` from its checksum lines and the master's HEAD (size, date)."""
        assert self.session is not None
        try:
            got = await fetch(
                self.session, settings.origin + path, timeout=settings.probe_timeout, method="HEAD"
            )
        except ProbeError as e:
            log.warning("%s: no size from the master: %s", path, e)
            return None
        length = (got.headers or {}).get("Content-Length", "")
        if got.status != 200 or not length.isdigit():
            return None
        return FileFacts(
            path=path,
            size=int(length),
            mtime=got.last_modified or 0.0,
            md5=hashes.get("md5"),
            sha1=hashes.get("sha1"),
            sha256=hashes.get("sha256"),
            sha512=hashes.get("sha512"),
            source="sums",
        )

    async def run(
        self,
        lease: Lease | None = None,
        on_pass: Callable[[HashPass], Awaitable[None]] | None = None,
    ) -> None:
        """A pass every `hash_interval` until cancelled; with a `lease`, only while held.
        `on_pass` runs after each pass."""
        try:
            while True:
                if lease is not None:
                    await lease.wait_held()
                held = (lambda: lease.held) if lease is not None else (lambda: True)
                result = await self.run_pass(held=held)
                if on_pass is not None:
                    await on_pass(result)
                await asyncio.sleep(self.current().hash_interval)
        finally:
            self.stop()  # a file being hashed in the thread ends at its next chunk


def _child_main(argv: list[str]) -> int:
    """``python -m redirector.poll.hasher <file> <path below the tree> <bytes per second>``:
    the file's facts as `encode_facts` JSON on stdout; a one-line reason on stderr, exit 1."""
    with contextlib.suppress(OSError):
        os.nice(NICE)
    try:
        file, rel, rate = argv
        facts, _ = hash_file(Path(file), rel, float(rate), threading.Event())
    except (OSError, ValueError) as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(encode_facts(facts))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
