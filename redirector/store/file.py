"""State shared by the worker processes of one host without Redis: one JSON file, replaced whole.

`redirector serve --workers N` without `redis_url` gives every worker a `FileStore` on the same
private directory. It implements the `store.Store` protocol with the semantics of `MemoryStore`,
so the rest of the app cannot tell it from Redis: the poller lease (`lease.py`) makes one worker
poll, its writes land in the file, and every worker's snapshot refresher sees the generation move
and reloads.

Layout of the directory:

``state.json``
    Line 1: ``{"v": 1, "generation": N}``, so that `generation()` (polled every half second by
    every worker) reads one short line. Line 2: the body, an object with ``states`` (mirror
    name -> the same `encode_state` JSON string Redis holds), ``master``, ``repomd`` and
    ``repodata`` (as in Redis), ``leases`` (name -> [owner, expiry]) and ``counts`` (bucket ->
    [fields, expiry]). Expiries are `time.monotonic()` seconds, one clock for every process of
    the host (CLOCK_MONOTONIC is system-wide on Linux). ``sync``: as in Redis.
``state.prev.json``
    The same as ``state.json``, written after it by every write that bumps the generation:
    while ``state.json``'s body cannot be parsed (truncated, overwritten by hand), readers
    read this copy instead, so a worker starting meanwhile still serves from the mirrors'
    states. Every part of either file of the wrong shape is dropped on reading (listed in
    `StoreData.poisoned`) and the next write replaces it.
``history`` (mirror name -> `encode_history` JSON) and ``events`` (a list of `encode_event`
    JSON, oldest first, trimmed on every append): as in Redis.
``facts.json``
    The master's file facts and the mirrors caught with wrong copies, apart from the state so
    that the piece hashes of every ISO are not re-read with each mirror state change. Line 1:
    ``{"v": 1, "generation": N}`` (N moves with every change of the facts); line 2: ``facts``
    (path -> `encode_facts` JSON) and ``bad`` (field -> `encode_bad_copy` JSON), as in Redis.
``lock``
    `flock`ed exclusively around every read-modify-write, so writers from several processes
    never lose each other's updates.

Every write goes to a temporary file in the same directory and is renamed over ``state.json``:
a reader sees the old file or the new one, never half of one, and needs no lock. The
directory holds no secrets but is private to the user (0700) like any runtime directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import tempfile
import time
import types
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from redirector.core.filefacts import BadCopy, FileFacts
from redirector.core.history import MAX_EVENTS, Event, HistoryData, MirrorHistory
from redirector.core.models import MasterState, MirrorState, RepodataState, SyncInfo
from redirector.store.base import Counts, Poison, StoreData, StoreError
from redirector.store.codec import (
    POISONED_GENERATION,
    SCHEMA_VERSION,
    PoisonLog,
    bad_copy_field,
    check_keep,
    decode_bad_copy,
    decode_each,
    decode_facts,
    decode_histories,
    decode_master_entry,
    decode_repodata,
    decode_states,
    decode_syncs,
    encode_bad_copy,
    encode_event,
    encode_facts,
    encode_history,
    encode_master,
    encode_repo_checks,
    encode_repomd_history,
    encode_state,
    encode_sync,
    facts_by_path,
)

STATE_FILE = "state.json"
PREV_FILE = "state.prev.json"  # a copy of state.json as of its last state change
FACTS_FILE = "facts.json"
LOCK_FILE = "lock"
# Longest a lease or a counter bucket may still have to live when read (see `_sanitize`):
# leases live for seconds (`lease_ttl`), the counters' buckets for days.
_MAX_LEASE = 86400.0
_MAX_BUCKET = 400 * 86400.0

_Doc = dict[str, Any]


def _empty() -> _Doc:
    return {
        "states": {},
        "master": None,
        "repomd": {},
        "repodata": None,
        "leases": {},
        "counts": {},
        "sync": {},
        "history": {},
        "events": [],
    }


def _json_text(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _finite(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _sanitize(doc: Any, now: float, poisoned: list[Poison]) -> _Doc:
    """`doc` with every section and entry of the wrong shape dropped (and listed in
    `poisoned`); the values inside ``states``, ``master``, ``repomd``, ``repodata`` and
    ``sync`` are checked later by the shared decoders.

    Lease and counter expiries are `time.monotonic()` seconds (`now` is that clock): one
    further ahead than any lease or bucket lives was not written on this boot (a reboot
    restarts the clock), and would hold a lease for good.
    """
    full = _empty()
    if not isinstance(doc, dict):
        poisoned.append(Poison("file", "body", "body is not an object"))
        return full
    for key in ("states", "repomd", "sync", "history"):
        value = doc.get(key, {})
        if isinstance(value, dict):
            full[key] = value
        else:
            poisoned.append(Poison(key, None, f"not an object: {type(value).__name__}"))
    for key in ("master", "repodata"):
        value = doc.get(key)
        if _json_text(value):
            full[key] = value
        else:
            poisoned.append(Poison(key, None, f"not a JSON string: {type(value).__name__}"))
    events = doc.get("events", [])
    if isinstance(events, list):
        full["events"] = events
    else:
        poisoned.append(Poison("events", None, f"not a list: {type(events).__name__}"))
    leases = doc.get("leases", {})
    if not isinstance(leases, dict):
        poisoned.append(Poison("leases", None, "not an object"))
        leases = {}
    for name, entry in leases.items():
        if (
            isinstance(entry, list)
            and len(entry) == 2
            and isinstance(entry[0], str)
            and _finite(entry[1])
            and entry[1] <= now + _MAX_LEASE
        ):
            full["leases"][name] = entry
        else:
            poisoned.append(Poison("leases", name, f"bad lease entry {entry!r:.60}"))
    counts = doc.get("counts", {})
    if not isinstance(counts, dict):
        poisoned.append(Poison("counts", None, "not an object"))
        counts = {}
    for bucket, entry in counts.items():
        if not (
            isinstance(entry, list)
            and len(entry) == 2
            and isinstance(entry[0], dict)
            and _finite(entry[1])
            and entry[1] <= now + _MAX_BUCKET
        ):
            poisoned.append(Poison("counts", bucket, f"bad counter entry {entry!r:.60}"))
            continue
        fields = {
            f: n
            for f, n in entry[0].items()
            if not isinstance(n, bool) and isinstance(n, int) and abs(n) < 2**62
        }
        if len(fields) != len(entry[0]):
            poisoned.append(Poison("counts", bucket, "counts that are not integers"))
        full["counts"][bucket] = [fields, entry[1]]
    return full


def _check_ttl(ttl: float) -> None:
    if not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")


class FileStore:
    """The `Store` protocol over one file in `directory`; see the module docstring.

    Blocking file I/O inside the coroutines is deliberate: the file is small, sits in a
    runtime directory (usually tmpfs), and is read at most twice a second and written once per
    poller pass or stats flush; a thread hop would cost more than the read.
    """

    kind = "file"

    def __init__(
        self,
        directory: str | Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        self.directory = Path(directory)
        self._path = self.directory / STATE_FILE
        self._prev_path = self.directory / PREV_FILE
        self._lock_path = self.directory / LOCK_FILE
        self._clock = clock  # lease and counter expiries
        self._wall = wall  # what stored dates are checked against
        self._poison_log = PoisonLog(f"file store {self._path}")

    # --- reading --------------------------------------------------------------------------

    def _read(self) -> tuple[int, _Doc, list[Poison]]:
        """The generation, the document with every part of the wrong shape dropped, and what
        was dropped. Only a failure to read the file at all is a StoreError: a file that
        reads but holds junk (a truncated write by hand, a stray edit) is repaired by the next
        write, never an error for every worker for good. While ``state.json`` cannot be
        parsed at all, the copy of its last state change (``state.prev.json``) is read
        instead, so that a worker starting meanwhile still has the mirrors' states."""
        generation, doc, poisoned = self._read_file(self._path)
        if any(p.key == "file" and p.field == "body" for p in poisoned):
            prev_gen, prev_doc, prev_poisoned = self._read_file(self._prev_path)
            if prev_gen > 0 and not any(p.key == "file" for p in prev_poisoned):
                note = f"; read {PREV_FILE} instead"
                return (
                    prev_gen if generation == POISONED_GENERATION else generation,
                    prev_doc,
                    [Poison(p.key, p.field, p.reason + note) for p in poisoned] + prev_poisoned,
                )
        return generation, doc, poisoned

    def _read_file(self, path: Path) -> tuple[int, _Doc, list[Poison]]:
        try:
            with open(path, "rb") as f:
                head = f.readline()
                body = f.read()
        except FileNotFoundError:
            return 0, _empty(), []
        except OSError as e:
            raise StoreError(f"file store {path}: {e.strerror or e}") from e
        poisoned: list[Poison] = []
        generation = self._generation_of(head, poisoned)
        try:
            doc = json.loads(body)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            poisoned.append(Poison("file", "body", f"bad body: {e}"))
            doc = {}
        return generation, _sanitize(doc, self._clock(), poisoned), poisoned

    def _generation_of(self, head: bytes, poisoned: list[Poison]) -> int:
        try:
            obj = json.loads(head)
        except ValueError as e:
            poisoned.append(Poison("file", "header", f"bad header: {e}"))
            return POISONED_GENERATION
        if not isinstance(obj, dict) or obj.get("v") != SCHEMA_VERSION:
            poisoned.append(Poison("file", "header", f"unknown header {head[:80]!r}"))
            return POISONED_GENERATION
        gen = obj.get("generation")
        if isinstance(gen, bool) or not isinstance(gen, int) or not 0 <= gen < 2**53:
            poisoned.append(Poison("gen", None, f"bad generation {gen!r:.40}"))
            return POISONED_GENERATION
        return gen

    def _read_generation(self) -> int:
        try:
            with open(self._path, "rb") as f:
                head = f.readline()
        except FileNotFoundError:
            return 0
        except OSError as e:
            raise StoreError(f"file store {self._path}: {e.strerror or e}") from e
        return self._generation_of(head, [])

    async def generation(self) -> int:
        return self._read_generation()

    async def load(self) -> StoreData:
        generation, doc, poisoned = self._read()
        now = self._wall()
        data = StoreData(
            states=types.MappingProxyType(decode_states(doc["states"], now, poisoned)),
            master=decode_master_entry(doc["master"], now, poisoned),
            generation=generation,
            repodata=decode_repodata(doc["repomd"], doc["repodata"], now, poisoned),
            poisoned=tuple(poisoned),
        )
        self._poison_log.report("load", data.poisoned)
        return data

    # --- writing --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise StoreError(f"file store {self._lock_path}: {e.strerror or e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _update(self, change: Callable[[_Doc], bool]) -> None:
        """Apply `change` to the document under the lock; it returns whether to bump the
        generation. Writes only when something may have changed (`change` ran)."""
        with self._locked():
            generation, doc, _ = self._read()
            bump = change(doc)
            if generation == POISONED_GENERATION:
                # Restart the count where no reader can still hold it (as RedisStore does).
                generation = time.time_ns() // 1000
            data = self._encode(generation + 1 if bump else generation, doc)
            self._write(self._path, data)
            if bump:  # a state change: keep a copy to read while state.json is damaged
                self._write(self._prev_path, data)

    @staticmethod
    def _encode(generation: int, doc: _Doc) -> bytes:
        head = json.dumps({"v": SCHEMA_VERSION, "generation": generation})
        return (head + "\n" + json.dumps(doc, separators=(",", ":"))).encode()

    def _write(self, path: Path, data: bytes) -> None:
        try:
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".state-", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as e:
            raise StoreError(f"file store {path}: {e.strerror or e}") from e

    async def put_states(self, states: Iterable[MirrorState]) -> None:
        new = {s.name: encode_state(s) for s in states}
        if not new:
            return

        def change(doc: _Doc) -> bool:
            doc["states"].update(new)
            return True

        self._update(change)

    async def put_master(self, master: MasterState) -> None:
        raw = encode_master(master)

        def change(doc: _Doc) -> bool:
            doc["master"] = raw
            return True

        self._update(change)

    async def put_repodata(self, repodata: RepodataState) -> None:
        repos = {d: encode_repomd_history(h) for d, h in repodata.repos.items()}
        checks = encode_repo_checks(repodata.mirrors, repodata.checked_at)

        def change(doc: _Doc) -> bool:
            doc["repomd"] = repos
            doc["repodata"] = checks
            return True

        self._update(change)

    async def forget(self, names: Iterable[str]) -> None:
        gone = set(names)
        if not gone:
            return

        def change(doc: _Doc) -> bool:
            states = doc["states"]
            removed = [n for n in gone if states.pop(n, None) is not None]
            history = doc.get("history") or {}
            for n in gone:
                history.pop(n, None)
            return bool(removed)

        self._update(change)

    # --- leases ---------------------------------------------------------------------------

    def _live_lease(self, doc: _Doc, name: str) -> str | None:
        entry = doc["leases"].get(name)
        if entry is None:
            return None
        owner, expires = entry
        if expires <= self._clock():
            del doc["leases"][name]
            return None
        return str(owner)

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        _check_ttl(ttl)
        got = False

        def change(doc: _Doc) -> bool:
            nonlocal got
            holder = self._live_lease(doc, name)
            if holder is None or holder == owner:
                doc["leases"][name] = [owner, self._clock() + ttl]
                got = True
            return False

        self._update(change)
        return got

    async def release_lease(self, name: str, owner: str) -> None:
        def change(doc: _Doc) -> bool:
            if self._live_lease(doc, name) == owner:
                del doc["leases"][name]
            return False

        self._update(change)

    async def lease_holder(self, name: str) -> str | None:
        _, doc, _ = self._read()
        return self._live_lease(doc, name)

    def drop_leases(self) -> None:
        """Forget every lease, held or not: for a supervisor starting workers on a file a
        previous run left behind, before any of them can hold one."""

        def change(doc: _Doc) -> bool:
            doc["leases"] = {}
            return False

        self._update(change)

    # --- counters -------------------------------------------------------------------------

    def _live_counts(self, doc: _Doc, bucket: str) -> dict[str, int] | None:
        entry = doc["counts"].get(bucket)
        if entry is None:
            return None
        fields, expires = entry
        if expires <= self._clock():
            del doc["counts"][bucket]
            return None
        return dict(fields)

    async def add_counts(self, batches: Iterable[Counts]) -> None:
        todo = list(batches)
        for b in todo:
            _check_ttl(b.ttl)
        if not todo:
            return

        def change(doc: _Doc) -> bool:
            for b in todo:
                fields = self._live_counts(doc, b.bucket) or {}
                for f, n in b.fields.items():
                    fields[f] = fields.get(f, 0) + n
                doc["counts"][b.bucket] = [fields, self._clock() + b.ttl]
            return False  # counters are not mirror state: no snapshot reload for them

        self._update(change)

    async def get_counts(self, buckets: Iterable[str]) -> dict[str, dict[str, int]]:
        _, doc, _ = self._read()
        return {b: self._live_counts(doc, b) or {} for b in buckets}

    # --- the sync tree: what mirrors say of their upstreams, under "sync" ----------

    async def put_sync(self, infos: Iterable[SyncInfo]) -> None:
        new = {i.name: encode_sync(i) for i in infos}
        if not new:
            return

        def change(doc: _Doc) -> bool:
            doc["sync"].update(new)
            return False  # not mirror state: no snapshot reload for it

        self._update(change)

    async def load_sync(self) -> dict[str, SyncInfo]:
        _, doc, poisoned = self._read()
        out = decode_syncs(doc["sync"], self._wall(), poisoned)
        self._poison_log.report("sync", poisoned)
        return out

    # --- history: "history" and "events", as in Redis ---------------------------------------

    async def load_history(self) -> HistoryData:
        _, doc, poisoned = self._read()
        out = decode_histories(doc["history"], doc["events"], self._wall(), poisoned)
        self._poison_log.report("history", poisoned)
        return out

    async def put_history(self, histories: Iterable[MirrorHistory]) -> None:
        new = {h.name: encode_history(h) for h in histories}
        if not new:
            return

        def change(doc: _Doc) -> bool:
            doc.setdefault("history", {}).update(new)
            return False  # not mirror state: no snapshot reload for it

        self._update(change)

    async def add_events(self, events: Iterable[Event], keep: int = MAX_EVENTS) -> None:
        check_keep(keep)
        raws = [encode_event(e) for e in events]
        if not raws:
            return

        def change(doc: _Doc) -> bool:
            doc["events"] = [*(doc.get("events") or []), *raws][-keep:]
            return False

        self._update(change)

    # --- file facts, in facts.json ---------------------------------------------------------

    def _read_facts(self) -> tuple[int, _Doc]:
        path = self.directory / FACTS_FILE
        try:
            with open(path, "rb") as f:
                head = f.readline()
                body = f.read()
        except FileNotFoundError:
            return 0, {"facts": {}, "bad": {}}
        except OSError as e:
            raise StoreError(f"file store {path}: {e.strerror or e}") from e
        generation = max(self._generation_of(head, []), 0)  # a junk header restarts the count
        try:
            doc = json.loads(body)
        except ValueError as e:
            raise StoreError(f"file store {path}: bad body: {e}") from e
        if not isinstance(doc, dict):
            raise StoreError(f"file store {path}: body is not an object")
        for key in ("facts", "bad"):
            if not isinstance(doc.get(key), dict):
                doc[key] = {}  # a wrong-type section is replaced by the next write
        return generation, doc

    def _update_facts(self, change: Callable[[_Doc], bool]) -> None:
        with self._locked():
            generation, doc = self._read_facts()
            bump = change(doc)
            self._write(self.directory / FACTS_FILE, self._encode(generation + bump, doc))

    async def put_facts(self, facts: Iterable[FileFacts]) -> None:
        new = {f.path: encode_facts(f) for f in facts}
        if not new:
            return

        def change(doc: _Doc) -> bool:
            doc["facts"].update(new)
            return True

        self._update_facts(change)

    async def drop_facts(self, paths: Iterable[str]) -> None:
        names = set(paths)
        if not names:
            return

        def change(doc: _Doc) -> bool:
            return bool([p for p in names if doc["facts"].pop(p, None) is not None])

        self._update_facts(change)

    async def load_facts(self) -> dict[str, FileFacts]:
        _, doc = self._read_facts()
        return facts_by_path(decode_each(doc["facts"], decode_facts, "file facts"))

    async def facts_generation(self) -> int:
        return self._read_facts_generation()

    def _read_facts_generation(self) -> int:
        path = self.directory / FACTS_FILE
        try:
            with open(path, "rb") as f:
                head = f.readline()
        except FileNotFoundError:
            return 0
        except OSError as e:
            raise StoreError(f"file store {path}: {e.strerror or e}") from e
        return self._generation_of(head, [])

    async def put_bad_copies(self, copies: Iterable[BadCopy]) -> None:
        new = {bad_copy_field(b): encode_bad_copy(b) for b in copies}
        if not new:
            return

        def change(doc: _Doc) -> bool:
            doc["bad"].update(new)
            return True

        self._update_facts(change)

    async def load_bad_copies(self) -> list[BadCopy]:
        _, doc = self._read_facts()
        copies: list[BadCopy] = [b for _, b in decode_each(doc["bad"], decode_bad_copy, "bad copy")]
        return sorted(copies, key=lambda b: -b.seen_at)

    # --- housekeeping ---------------------------------------------------------------------

    async def ping(self) -> None:
        """Return if a write would work now: a real file made and removed in the directory
        (permission bits say nothing to root, nor of a full or read-only file system), and
        the lock and state files open for writing."""
        try:
            with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".ping-"):
                pass
            for path in (self._lock_path, self._path):
                with contextlib.suppress(FileNotFoundError):
                    os.close(os.open(path, os.O_WRONLY))
        except OSError as e:
            raise StoreError(f"file store {self.directory}: cannot write: {e.strerror or e}") from e

    async def close(self) -> None:
        return None
