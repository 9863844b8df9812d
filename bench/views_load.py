"""Operator views under load: redirect latency idle and while clients loop on /mirrors, /metrics.

    python bench/views_load.py              # 1,000 mirrors, 10 s per phase
    python bench/views_load.py -d 20s --mirrors 2000 --loops 4
    python bench/views_load.py --spread     # each loop from a network of its own

`redirector serve` (one worker, the file store, every feature on as bench/run.py runs it) with
`--mirrors` synthetic ones on its loopback mirror stub, all fresh. wrk loads redirects
(10,000 client addresses in X-Forwarded-For, as bench/run.py) idle, then while `--loops`
clients fetch /mirrors and `--loops` more fetch /metrics back to back (taking gzip, as
browsers and Prometheus do; `--plain`: as curl asks, without); `--rounds` such pairs in turn,
so that a machine busy with something else weighs on both phases alike. The loops all come
from loopback, one client network, so the views' budget (`views_network_burst`,
`views_network_rate`) cuts them to a few answers a second; `--spread`: each loop sends an
X-Forwarded-For of a network of its own (loopback is a trusted proxy here), so only the
process-wide bucket (`views_total_burst`, `views_total_rate`) holds them together. Printed:
each view's size and time when asked alone, p50 and p99 of every phase, per view the answers
the loops got while loaded (200s, then 429s and 503s, the budget's refusals, apart from
errors), and the ratio of the median p99s (loaded / idle). Everything listens on 127.0.0.1
only.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import common
import run
from common import OUT

from redirector.core.clientip import network_key


def fetch(port: int, path: str) -> tuple[int, float]:
    """One GET of `path` on a new connection: (body bytes, seconds)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        body = conn.getresponse().read()
    finally:
        conn.close()
    return len(body), time.perf_counter() - started


REFUSALS = (429, 503)  # the views' budget: the client's network, the whole process


class Loop(threading.Thread):
    """A client fetching one view back to back, on one kept-alive connection, until stopped.

    `count`: answers of any status; `refused`: the 429s and 503s among them, by status, which
    are the views' budget at work, not `errors` (another status, or no answer). `xff`: the
    client address to send in X-Forwarded-For (None: the loop is the socket's peer)."""

    def __init__(
        self,
        port: int,
        path: str,
        stop: threading.Event,
        gzip: bool = True,
        xff: str | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.port, self.path, self.stop = port, path, stop
        self.headers = {"Accept-Encoding": "gzip"} if gzip else {}
        if xff is not None:
            self.headers["X-Forwarded-For"] = xff
        self.count = 0
        self.errors = 0
        self.refused: Counter[int] = Counter()

    @property
    def answered(self) -> int:
        """The views served (200)."""
        return self.count - self.errors - sum(self.refused.values())

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.stop.is_set():
            try:
                conn.request("GET", self.path, headers=self.headers)
                resp = conn.getresponse()
                resp.read()
                if resp.status in REFUSALS:
                    self.refused[resp.status] += 1
                elif resp.status != 200:
                    self.errors += 1
                self.count += 1
            except (OSError, http.client.HTTPException):
                self.errors += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.close()


def spread_clients(clients: Sequence[str], count: int) -> list[str]:
    """`count` of `clients`, each in a network of its own (/24, /48: `clientip.network_key`)."""
    out: list[str] = []
    seen: set[bytes] = set()
    for ip in clients:
        net = network_key(ipaddress.ip_address(ip))
        if net not in seen:
            seen.add(net)
            out.append(ip)
            if len(out) == count:
                return out
    raise ValueError(f"fewer than {count} client networks")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python bench/views_load.py", description=__doc__)
    p.add_argument("-d", "--duration", default="10s", help="wrk duration per phase")
    p.add_argument("--mirrors", type=int, default=1000, help="synthetic mirrors (default 1000)")
    p.add_argument("--loops", type=int, default=4, help="clients per view (default 4)")
    p.add_argument("--rounds", type=int, default=2, help="idle/loaded pairs (default 2)")
    p.add_argument("--plain", action="store_true", help="the loops do not take gzip")
    p.add_argument(
        "--paths", default="/mirrors,/metrics", help="what the loops fetch, comma-separated"
    )
    p.add_argument(
        "--spread",
        action="store_true",
        help="each loop sends X-Forwarded-For from a network of its own (default: all loopback)",
    )
    p.add_argument("-c", "--connections", type=int, default=64)
    p.add_argument("-t", "--threads", type=int, default=1)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run.ensure_tools()
    OUT.mkdir(parents=True, exist_ok=True)
    workdir = OUT / f"views-{time.strftime('%Y%m%d-%H%M%S')}"
    workdir.mkdir()
    world = common.build_world(OUT)
    lua = workdir / "xff.lua"
    lua.write_text(common.lua_script(world.clients))
    server = run.Redirector(workdir, 1, world.db, synthetic=args.mirrors)
    views = tuple(args.paths.split(","))
    # One client of the world per loop: each in a network (/24) of its own.
    spread = spread_clients(world.clients, len(views) * args.loops) if args.spread else []
    with server.running():
        server.check(world.clients[0])
        for view in dict.fromkeys((*views, "/mirrors.json")):
            fetch(server.port, view)  # the first rendering
            size, seconds = fetch(server.port, view)
            print(f"{view:14} {size / 1e6:6.2f} MB  {seconds * 1000:7.1f} ms alone", flush=True)
        run.run_wrk(server.port, lua, "2s", args.connections, args.threads)  # warm-up
        phases: list[tuple[str, tuple[int, float, int, int, dict[str, int]]]] = []
        loops: list[Loop] = []
        for _ in range(args.rounds):
            idle = run.run_wrk(server.port, lua, args.duration, args.connections, args.threads)
            phases.append(("idle", idle))
            stop = threading.Event()
            started = [
                Loop(server.port, v, stop, gzip=not args.plain, xff=spread[i] if spread else None)
                for i, v in enumerate(v for v in views for _ in range(args.loops))
            ]
            for loop in started:
                loop.start()
            try:
                loaded = run.run_wrk(
                    server.port, lua, args.duration, args.connections, args.threads
                )
            finally:
                stop.set()
                for loop in started:
                    loop.join(60)
            phases.append(("loaded", loaded))
            loops += started
    for name, (requests, seconds, p50, p99, errors) in phases:
        print(
            f"{name:7} {requests / seconds:9.0f} req/s  p50 {p50 / 1000:7.2f} ms  "
            f"p99 {p99 / 1000:7.2f} ms  errors {sum(errors.values())}"
        )
    loaded_seconds = sum(r[1] for n, r in phases if n == "loaded")
    for view in views:
        got = [lp for lp in loops if lp.path == view]
        answered = sum(lp.answered for lp in got)
        refused = sum((lp.refused for lp in got), Counter[int]())
        print(
            f"{view:14} asked {sum(lp.count for lp in got)} times by {args.loops} loops in "
            f"{args.rounds} loaded phases: {answered} answered "
            f"({answered / max(1.0, loaded_seconds):.1f}/s), refused {refused[429]} x 429 "
            f"(network) and {refused[503]} x 503 (process), {sum(lp.errors for lp in got)} "
            f"errors ({'no gzip' if args.plain else 'gzip'}, "
            f"{'a network per loop' if args.spread else 'all from loopback'})"
        )
    idle_p99 = statistics.median(r[3] for n, r in phases if n == "idle")
    loaded_p99 = statistics.median(r[3] for n, r in phases if n == "loaded")
    print(
        f"p99 loaded/idle: {loaded_p99 / max(1, idle_p99):.2f}  (medians of {args.rounds}; "
        f"{args.mirrors} synthetic mirrors, {args.duration} per phase)"
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
