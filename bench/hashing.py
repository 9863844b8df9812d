"""Redirect latency while the hasher reads a tree of a few GB, against the same server idle.

    python bench/hashing.py                  # a 3 GB tree, 3 rounds of 10 s of wrk per phase
    python bench/hashing.py --gb 6 --duration 20s --connections 32

One process serves redirects (20 fresh synthetic mirrors, the bench's paths) and runs the
hasher in its worker thread, as the polling process does; wrk (one thread) loads it from
outside. Three phases, interleaved over `--rounds` (medians shown): idle, hashing at
`hash_read_rate` (the default 32 MB/s, or `--rate`), and hashing as fast as the machine goes.
Each prints the redirect p50 and p99 and the p99 as a ratio of the idle one. The tree is
sparse files (no disk to wait for), so what is measured is what hashing costs the event
loop: CPU and the GIL, not the disk. In a phase the hasher starts again on a fresh store
whenever it finishes, so it hashes throughout.

Needs wrk (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import common
from aiohttp import web
from common import OUT

from redirector.config.settings import Settings
from redirector.poll.hasher import Hasher
from redirector.store.memory import MemoryStore
from redirector.web.app import create_app

ISO_DIR = "releases/10/iso/x86_64"


def make_tree(root: Path, gb: float, files: int) -> int:
    """`files` sparse ISOs adding up to `gb` GB below `root`; the bytes in all."""
    size = int(gb * 1e9 / files)
    (root / ISO_DIR).mkdir(parents=True, exist_ok=True)
    for i in range(files):
        with open(root / ISO_DIR / f"smeserver-bench-{i}.iso", "wb") as f:
            f.truncate(size)
    return size * files


async def wrk(port: int, lua: Path, duration: str, connections: int) -> tuple[int, float, float]:
    """(requests, p50 ms, p99 ms) from one wrk run against the server on `port`."""
    proc = await asyncio.create_subprocess_exec(
        shutil.which("wrk") or "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}",
        "--timeout",
        "5s",
        "-s",
        str(lua),
        f"http://127.0.0.1:{port}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    for line in out.decode().splitlines():
        if line.startswith("BENCH "):
            fields = line.split()
            return int(fields[1]), int(fields[3]) / 1000, int(fields[4]) / 1000
    raise RuntimeError(f"wrk gave no result:\n{out.decode()}")


async def hash_forever(store: MemoryStore, settings: Settings, tree: Path) -> None:
    """Hash the tree again and again (a fresh store each time: every file is new)."""
    while True:
        hasher = Hasher(MemoryStore(), lambda: settings, tree=tree)
        try:
            await hasher.run_pass()
        finally:
            hasher.stop()


async def phase(
    name: str,
    port: int,
    lua: Path,
    args: argparse.Namespace,
    settings: Settings | None,
    tree: Path,
) -> dict[str, float | str]:
    task = None
    if settings is not None:
        task = asyncio.create_task(hash_forever(MemoryStore(), settings, tree))
        await asyncio.sleep(0.5)  # the first file is being read
    started = time.monotonic()
    cpu = os.times()
    try:
        requests, p50, p99 = await wrk(port, lua, args.duration, args.connections)
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    seconds = time.monotonic() - started
    used = os.times()
    busy = (used.user - cpu.user + used.system - cpu.system) / seconds
    return {
        "phase": name,
        "requests_per_s": requests / seconds,
        "p50_ms": p50,
        "p99_ms": p99,
        "process_cpu": busy,
    }


async def main_async(args: argparse.Namespace) -> list[dict[str, float | str]]:
    now = time.time()
    mirrors = tuple(common.synthetic_mirrors(20))
    store = MemoryStore()
    await store.put_states(common.fresh_states([m.name for m in mirrors], now))
    await store.put_master(common.fresh_master(now))
    base = Settings(
        mirrors=mirrors,
        master="http://mirror.contribs.org/smeserver/",
        verify_files=False,  # the synthetic mirrors do not exist: no HEAD to them
        access_log="off",
    )
    app = create_app(base, poll=False, store=store, use_geo_settings=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server  # aiohttp exposes the bound port only through the server
    assert isinstance(server, asyncio.Server)
    port = server.sockets[0].getsockname()[1]
    OUT.mkdir(parents=True, exist_ok=True)
    lua = OUT / "hashing.lua"
    lua.write_text(common.lua_script(["192.0.2.7", "198.51.100.7", "2001:db8::7"]))
    with tempfile.TemporaryDirectory(prefix="hash-bench-") as tmp:
        tree = Path(tmp)
        total = make_tree(tree, args.gb, args.files)
        print(
            f"tree: {args.files} sparse files, {total / 1e9:.1f} GB; wrk -t1 -c{args.connections}"
        )
        await wrk(port, lua, "2s", args.connections)  # warm-up: the router's caches fill
        bounded = replace(base, hash_tree=tree, hash_read_rate=args.rate)
        fast = replace(bounded, hash_read_rate=100_000)
        plan: list[tuple[str, Settings | None]] = [
            ("idle", None),
            (f"hashing at {args.rate} MB/s", bounded),
            ("hashing unbounded", fast),
        ]
        # Rounds interleave the phases, so load from elsewhere on the machine hits them alike.
        runs: dict[str, list[dict[str, float | str]]] = {name: [] for name, _ in plan}
        for _ in range(args.rounds):
            for name, settings in plan:
                runs[name].append(await phase(name, port, lua, args, settings, tree))
    await runner.cleanup()
    return [_median(name, rs) for name, rs in runs.items()]


def _median(name: str, runs: list[dict[str, float | str]]) -> dict[str, float | str]:
    keys = [k for k in runs[0] if k != "phase"]
    out: dict[str, float | str] = {"phase": name, "rounds": len(runs)}
    for k in keys:
        out[k] = statistics.median(float(r[k]) for r in runs)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gb", type=float, default=3.0, help="tree size in GB (default 3)")
    p.add_argument("--files", type=int, default=6, help="files in the tree (default 6)")
    p.add_argument("--rate", type=int, default=32, help="hash_read_rate in MB/s (default 32)")
    p.add_argument("-d", "--duration", default="10s", help="wrk duration per phase (default 10s)")
    p.add_argument("-c", "--connections", type=int, default=32, help="wrk connections")
    p.add_argument("-r", "--rounds", type=int, default=3, help="rounds; medians (default 3)")
    args = p.parse_args(argv)
    if shutil.which("wrk") is None:
        print("needs wrk: apt-get install wrk", file=sys.stderr)
        return 1
    results = asyncio.run(main_async(args))
    idle = float(results[0]["p99_ms"])
    print(f"{'phase':<24} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'p99/idle':>9} {'cpu':>5}")
    for r in results:
        r["p99_ratio"] = float(r["p99_ms"]) / idle if idle else float("nan")
        print(
            f"{r['phase']:<24} {float(r['requests_per_s']):>8.0f} {float(r['p50_ms']):>8.2f} "
            f"{float(r['p99_ms']):>8.2f} {float(r['p99_ratio']):>9.2f} "
            f"{float(r['process_cpu']):>5.2f}"
        )
    (OUT / "hashing.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
