"""Poller at scale: one pass over 1,000 mirrors, impersonated by one loopback aiohttp server.

The server runs in a child process (the poller and the mirrors do not share a core) and answers
for every mirror by path prefix, ``/m0000/`` to ``/m0999/``: most hold the master's current
trace, some are a version behind, some answer 500 or 404, a few never answer (each costs one
`probe_timeout`, in parallel with the rest), some are syncing. The poller runs its real passes
(`poller.poll_once`, default `probe_concurrency`) into an in-process store; the first pass also
probes coverage (7 requests per working mirror), the next ones only the traces (3).

Prints, per pass, its duration, requests and the process's resident memory, then the peak RSS;
exits 1 if a pass took 30 s or more, or if memory grew by more than 20 MB after the first pass.

    python bench/poll_scale.py [--mirrors 1000] [--passes 5] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/poll_scale.py`: the package from here
    sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402

from redirector.config.settings import parse_settings  # noqa: E402
from redirector.poll.poller import poll_once  # noqa: E402
from redirector.poll.probe import open_session  # noqa: E402
from redirector.store.base import MemoryStore  # noqa: E402

MASTER_TRACE = "project/trace/mirror.contribs.org"
HANGING = 5  # mirrors that accept and never answer (--hanging)
PROBE_TIMEOUT = "5s"


def _trace(ts: float) -> bytes:
    date = time.strftime("%a %b %e %H:%M:%S UTC %Y", time.gmtime(ts))
    rfc = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(ts))
    return (
        f"{date}\nDate: {rfc}\nDate-Started: {rfc}\nArchive serial: 2026010101\n"
        f"Used ftpsync version: 20180513\nRunning on host: mirror.test\n"
    ).encode()


def serve(port_out: multiprocessing.connection.Connection, mirrors: int, hanging: int) -> None:
    """The child process: one aiohttp server standing in for the master and every mirror."""
    now = time.time()
    current, older = _trace(now - 3600), _trace(now - 5 * 86400)
    own = _trace(now - 3000)

    async def handle(request: web.Request) -> web.StreamResponse:
        name, _, rest = request.match_info["tail"].partition("/")
        if name == "master":
            return web.Response(body=current if rest == MASTER_TRACE else b"")
        i = int(name[1:]) if name[1:].isdigit() else -1
        if i < hanging:
            await asyncio.sleep(3600)
        if i % 50 == 7:
            return web.Response(status=500, text="down")
        if i % 50 == 9:
            return web.Response(status=404, text="not here")
        if rest == MASTER_TRACE:
            return web.Response(body=older if i % 10 == 3 else current)
        if rest.startswith("project/trace/"):
            return web.Response(body=own)
        if rest.startswith("Archive-Update-in-Progress-"):
            return web.Response(status=200 if i % 25 == 1 else 404)
        if rest.endswith("/"):
            return web.Response(status=404 if (i % 20 == 2 and rest == "obsolete/") else 200)
        return web.Response(status=404)

    async def main() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only through the server
        assert isinstance(server, asyncio.Server)
        port_out.send(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


def rss_mb(field: str = "VmRSS") -> float:
    """The resident set size now (VmRSS) or its peak so far (VmHWM), from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def config(port: int, mirrors: int, concurrency: int) -> str:
    base = f"http://127.0.0.1:{port}/"
    blocks = "".join(
        f'[[mirror]]\nname = "m{i:04d}"\nhttp = "{base}m{i:04d}/"\ncountry = "NL"\n'
        f"latitude = {(i % 120) - 60}.0\nlongitude = {(i * 7) % 360 - 180}.0\n\n"
        for i in range(mirrors)
    )
    return (
        f'[redirector]\nmaster = "{base}master/"\nprobe_timeout = "{PROBE_TIMEOUT}"\n'
        f'probe_concurrency = {concurrency}\npoll_interval = "5m"\n\n{blocks}'
    )


async def bench(port: int, mirrors: int, passes: int, concurrency: int, hanging: int) -> int:
    settings = parse_settings(config(port, mirrors, concurrency), "poll_scale.toml")
    store = MemoryStore()
    worst, first_rss, last_rss = 0.0, 0.0, 0.0
    print(f"{mirrors} mirrors, probe_concurrency {concurrency}, probe_timeout {PROBE_TIMEOUT}, "
          f"{hanging} of them hanging")  # fmt: skip
    async with open_session(settings.probe_timeout) as session:
        for n in range(1, passes + 1):
            started = time.perf_counter()
            result = await poll_once(session, settings, store)
            took = time.perf_counter() - started
            worst = max(worst, took)
            counts: dict[str, int] = {}
            for s in result.states:
                counts[s.status.value] = counts.get(s.status.value, 0) + 1
            last_rss = rss_mb()
            if n == 1:
                first_rss = last_rss
            print(f"pass {n}: {took:6.2f} s, {result.requests:5d} requests, "
                  f"RSS {last_rss:6.1f} MB, states {dict(sorted(counts.items()))}")  # fmt: skip
    peak = rss_mb("VmHWM")
    growth = last_rss - first_rss
    print(f"slowest pass {worst:.2f} s (limit 30 s); peak RSS {peak:.1f} MB; "
          f"RSS growth after pass 1: {growth:+.1f} MB")  # fmt: skip
    return 0 if worst < 30 and growth < 20 else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mirrors", type=int, default=1000)
    p.add_argument("--passes", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--hanging", type=int, default=HANGING)
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the poller's per-mirror warnings are expected
    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    server = ctx.Process(target=serve, args=(there, args.mirrors, args.hanging), daemon=True)
    server.start()
    try:
        if not here.poll(30):
            print("the mirror server did not start", file=sys.stderr)
            return 1
        port = here.recv()
        return asyncio.run(bench(port, args.mirrors, args.passes, args.concurrency, args.hanging))
    finally:
        server.terminate()
        server.join(5)


if __name__ == "__main__":
    sys.exit(main())
