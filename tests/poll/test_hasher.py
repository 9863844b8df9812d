"""The hasher's pieces on a real directory: the walk, the rate bound, stopping, the child."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from redirector.config.settings import Settings
from redirector.poll.hasher import CHUNK, Hasher, Stopped, hash_file, walk
from redirector.store.memory import MemoryStore


def test_the_walk_follows_symlinks_once_and_keeps_only_the_files_worth_it(tmp_path: Path) -> None:
    (tmp_path / "releases/10/iso").mkdir(parents=True)
    (tmp_path / "releases/10/iso/a.iso").write_bytes(b"a")
    (tmp_path / "releases/10/iso/a.iso.sha256").write_text("x")
    (tmp_path / "releases/testing").mkdir()
    (tmp_path / "releases/testing/10").symlink_to(tmp_path / "releases/10")  # as on SME
    (tmp_path / "releases/10/loop").symlink_to(tmp_path / "releases")  # a link loop ends
    (tmp_path / "releases/10/dangling.iso").symlink_to(tmp_path / "nowhere")
    found = walk(tmp_path, ("*.iso",))
    assert set(found) <= {"releases/10/iso/a.iso", "releases/testing/10/iso/a.iso"}
    assert len(found) == 1  # the directory is entered once, by whichever name comes first
    assert next(iter(found.values())).st_size == 1


def test_hashing_keeps_to_the_rate_and_stops_when_asked(tmp_path: Path) -> None:
    data = os.urandom(4 * CHUNK)
    path = tmp_path / "a.iso"
    path.write_bytes(data)
    slept: list[float] = []
    facts, n = hash_file(path, "a.iso", 1e6, threading.Event(), sleep=slept.append)
    assert n == len(data)
    assert facts.sha256 == hashlib.sha256(data).hexdigest()
    # 1 MB/s: each 1 MiB block is about a second ahead of the rate (a sleep is at most 1 s).
    assert slept == [1.0, 1.0, 1.0, 1.0]
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        hash_file(path, "a.iso", 1e9, stop)


async def test_the_child_process_hashes_and_reports_a_file_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "ok.iso").write_bytes(b"ok")
    (tmp_path / "locked.iso").mkdir()  # a directory where a file should be: unreadable
    store = MemoryStore()
    settings = Settings(mirrors=(), master="http://m.example/", hash_tree=tmp_path)
    hasher = Hasher(store, lambda: settings)
    facts, n = await hasher._hash(tmp_path / "ok.iso", "ok.iso", 1e9)
    assert (n, facts.sha256) == (2, hashlib.sha256(b"ok").hexdigest())
    with pytest.raises(OSError, match="IsADirectoryError"):
        await hasher._hash(tmp_path / "locked.iso", "locked.iso", 1e9)
    result = await hasher.run_pass()
    assert (result.seen, result.hashed) == (1, 1)
    assert set(await store.load_facts()) == {"ok.iso"}
