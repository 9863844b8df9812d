"""The decision alone, in microseconds: `selection.select` uncached and the router's cached path.

    python bench/decision.py            # 10, 100 and 1,000 fresh mirrors
    python bench/decision.py --mirrors 100 --repeat 9

For each mirror count: `select()` as a handler without caches would call it (eligibility,
distances and rendezvous over every mirror), and `Router.resolve` as the handler calls it
(client from X-Forwarded-For, GeoIP, path class, cached eligibility and cell, rendezvous over
the tier), both over the same 10,000 clients of the bench's GeoIP database and the bench's
paths. "first touch" is the router's first pass over all clients (every cache cold: GeoIP
lookups, cells computed); "warm" the passes after it, what a busy server sees. Medians of
`--repeat` passes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types

import common
from common import OUT

from redirector.config.settings import Settings
from redirector.core.clientip import network_key, parse_ip
from redirector.core.selection import Policy, Request, select
from redirector.geo import GeoReader
from redirector.router import Router
from redirector.snapshot import Snapshot, SnapshotHolder
from redirector.store.base import StoreData


def bench(
    mirror_count: int, geo: GeoReader, clients: tuple[str, ...], repeat: int
) -> dict[str, float]:
    mirrors = tuple(common.synthetic_mirrors(max(mirror_count, 1))[:mirror_count])
    now = time.time()
    data = StoreData(
        states=types.MappingProxyType(
            {s.name: s for s in common.fresh_states([m.name for m in mirrors], now)}
        ),
        master=common.fresh_master(now),
        generation=1,
    )
    holder = SnapshotHolder(mirrors)
    holder.current = Snapshot.build(mirrors, data, now)
    settings = Settings(mirrors=mirrors, master="http://mirror.contribs.org/smeserver/")
    paths = [p.split("/smeserver/", 1)[1] for p in common.PATHS]
    jobs = [(c, paths[i % len(paths)]) for i, c in enumerate(clients)]

    snap = holder.current
    policy = Policy(settings.max_lag, settings.closeness_km, settings.closeness_ratio)
    requests = []
    for c, path in jobs:
        ip = parse_ip(c)
        v6 = ip is not None and ip.version == 6
        requests.append(Request(path, "http", v6, geo.locate(c), network_key(ip)))
    uncached = []
    for _ in range(repeat):
        t = time.perf_counter()
        for req in requests[:2000]:
            select(snap.candidates, req, now, policy, snap.seeds)
        uncached.append((time.perf_counter() - t) / 2000 * 1e6)

    router = Router(settings, holder, GeoReader.open(geo.path), clock=lambda: now)
    t = time.perf_counter()
    for c, path in jobs:
        router.resolve("127.0.0.1", c, None, "http", path)
    first = (time.perf_counter() - t) / len(jobs) * 1e6
    warm = []
    for _ in range(repeat):
        t = time.perf_counter()
        for c, path in jobs:
            router.resolve("127.0.0.1", c, None, "http", path)
        warm.append((time.perf_counter() - t) / len(jobs) * 1e6)
    return {
        "select_us": statistics.median(uncached),
        "router_first_us": first,
        "router_warm_us": statistics.median(warm),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/decision.py", description=__doc__)
    p.add_argument("--mirrors", type=int, nargs="*", default=[10, 100, 1000])
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    world = common.build_world(OUT)
    geo = GeoReader.open(world.db)
    print(f"{'mirrors':>8}{'select() us':>14}{'router first us':>18}{'router warm us':>17}")
    for n in args.mirrors:
        r = bench(n, geo, world.clients, args.repeat)
        print(f"{n:8d}{r['select_us']:14.1f}{r['router_first_us']:18.1f}"
              f"{r['router_warm_us']:17.2f}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
