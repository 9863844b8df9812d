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
from redirector.core.models import MasterState, MirrorState, RepodataState, SyncInfo
from redirector.store.base import (
    SCHEMA_VERSION,
    Counts,
    StoreData,
    StoreError,
    bad_copy_field,
    decode_bad_copy,
    decode_each,
    decode_facts,
    decode_master,
    decode_repo_checks,
    decode_repomd_history,
    decode_state,
    decode_sync,
    encode_bad_copy,
    encode_facts,
    encode_master,
    encode_repo_checks,
    encode_repomd_history,
    encode_state,
    encode_sync,
    facts_by_path,
)

STATE_FILE = "state.json"
FACTS_FILE = "facts.json"
LOCK_FILE = "lock"

_Doc = dict[str, Any]


def _empty() -> _Doc:
    return {
        "states": {},
        "master": None,
        "repomd": {},
        "repodata": None,
        "leases": {},
        "counts": {},
    }


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

    def __init__(self, directory: str | Path, *, clock: Callable[[], float] = time.monotonic):
        self.directory = Path(directory)
        self._path = self.directory / STATE_FILE
        self._lock_path = self.directory / LOCK_FILE
        self._clock = clock

    # --- reading --------------------------------------------------------------------------

    def _read(self) -> tuple[int, _Doc]:
        try:
            with open(self._path, "rb") as f:
                head = f.readline()
                body = f.read()
        except FileNotFoundError:
            return 0, _empty()
        except OSError as e:
            raise StoreError(f"file store {self._path}: {e.strerror or e}") from e
        generation = self._generation_of(head)
        try:
            doc = json.loads(body)
        except ValueError as e:
            raise StoreError(f"file store {self._path}: bad body: {e}") from e
        if not isinstance(doc, dict):
            raise StoreError(f"file store {self._path}: body is not an object")
        full = _empty()
        full.update(doc)
        return generation, full

    def _generation_of(self, head: bytes) -> int:
        try:
            obj = json.loads(head)
        except ValueError as e:
            raise StoreError(f"file store {self._path}: bad header: {e}") from e
        if not isinstance(obj, dict) or obj.get("v") != SCHEMA_VERSION:
            raise StoreError(f"file store {self._path}: unknown header {head[:80]!r}")
        gen = obj.get("generation")
        if isinstance(gen, bool) or not isinstance(gen, int):
            raise StoreError(f"file store {self._path}: bad generation {gen!r}")
        return gen

    def _read_generation(self) -> int:
        try:
            with open(self._path, "rb") as f:
                head = f.readline()
        except FileNotFoundError:
            return 0
        except OSError as e:
            raise StoreError(f"file store {self._path}: {e.strerror or e}") from e
        return self._generation_of(head)

    async def generation(self) -> int:
        return self._read_generation()

    async def load(self) -> StoreData:
        generation, doc = self._read()
        states: dict[str, MirrorState] = {}
        for name, raw in doc["states"].items():
            state = decode_state(raw)
            if state.name != name:
                raise StoreError(f"bad mirror state: {name!r} holds the state of {state.name!r}")
            states[name] = state
        master = doc["master"]
        return StoreData(
            states=types.MappingProxyType(states),
            master=None if master is None else decode_master(master),
            generation=generation,
            repodata=self._repodata(doc),
        )

    @staticmethod
    def _repodata(doc: _Doc) -> RepodataState | None:
        raw_checks = doc["repodata"]
        if raw_checks is None:
            return None
        mirrors, checked_at = decode_repo_checks(raw_checks)
        repos = {d: decode_repomd_history(raw) for d, raw in doc["repomd"].items()}
        return RepodataState(
            repos=types.MappingProxyType(repos),
            mirrors=types.MappingProxyType(mirrors),
            checked_at=checked_at,
        )

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
            generation, doc = self._read()
            bump = change(doc)
            self._write(generation + 1 if bump else generation, doc)

    def _write(self, generation: int, doc: _Doc) -> None:
        head = json.dumps({"v": SCHEMA_VERSION, "generation": generation})
        data = (head + "\n" + json.dumps(doc, separators=(",", ":"))).encode()
        try:
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".state-", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, self._path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as e:
            raise StoreError(f"file store {self._path}: {e.strerror or e}") from e

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
        _, doc = self._read()
        return self._live_lease(doc, name)

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
        _, doc = self._read()
        return {b: self._live_counts(doc, b) or {} for b in buckets}

    # --- the sync tree: what mirrors say of their upstreams, under "sync" ----------

    async def put_sync(self, infos: Iterable[SyncInfo]) -> None:
        new = {i.name: encode_sync(i) for i in infos}
        if not new:
            return

        def change(doc: _Doc) -> bool:
            doc.setdefault("sync", {}).update(new)
            return False  # not mirror state: no snapshot reload for it

        self._update(change)

    async def load_sync(self) -> dict[str, SyncInfo]:
        _, doc = self._read()
        out: dict[str, SyncInfo] = {}
        for name, raw in (doc.get("sync") or {}).items():
            info = decode_sync(raw)
            if info.name != name:
                raise StoreError(f"bad sync info: {name!r} holds the info of {info.name!r}")
            out[name] = info
        return out

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
        generation = self._generation_of(head)
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
            head = json.dumps({"v": SCHEMA_VERSION, "generation": generation + bump})
            data = (head + "\n" + json.dumps(doc, separators=(",", ":"))).encode()
            path = self.directory / FACTS_FILE
            try:
                fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".facts-", suffix=".tmp")
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
        return self._generation_of(head)

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
        if not os.access(self.directory, os.R_OK | os.W_OK | os.X_OK):
            raise StoreError(f"file store {self.directory}: not a writable directory")

    async def close(self) -> None:
        return None
