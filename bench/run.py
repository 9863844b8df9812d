"""Load-test the redirector against its ceilings in one run: nginx `return 302`, bare aiohttp.

    python bench/run.py                 # 5 s per server, one round
    python bench/run.py --runs 3 -d 10s # medians of 3 rounds, as the README's figures
    python bench/run.py --help

Needs Debian's nginx and wrk (`apt-get install nginx wrk`; installed here when missing and
running as root) and the package's test extras (tests/mmdb_build.py builds the GeoIP
database): `pip install -e '.[test,speed]'`.

Each round starts, in turn: (a) nginx answering every request with a 302 (the ceiling for a
302 on this machine), (b) an aiohttp handler that only raises a 302, one process per worker
with SO_REUSEPORT (the framework's ceiling), (c) `redirector serve --workers N` with 8
synthetic mirrors (`--mirrors`), all marked fresh in its file store, a GeoIP database of 10,000
networks built here, loopback trusted as a proxy, and every feature on as shipped: metrics,
download statistics, the Link header, the per-file check (its HEADs go to a loopback nginx
standing in for every mirror) and the text access log (to the bench's log file); (d) the same
at scale (`redirector-scale`): 1,000 mirrors, 100,000 client networks, 10,000 paths. Each is
warmed up (3 s; 45 s for the scale run, so that each worker has seen its 100,000 clients more
than once), then loaded by wrk (one thread, 64 connections by default) with a Lua script that
sends each request with the next of the client addresses in X-Forwarded-For and the next of
the paths (10,000 and 2,000 but at scale).
Printed: req/s, p50 and p99 latency, server CPU per request, RSS, PSS and private memory per
worker, and the ratios redirector/bare aiohttp, redirector/nginx and scale/redirector; medians
over the rounds. Results also go to bench/out/results-*.json.

Everything listens on 127.0.0.1 only; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import common
from common import OUT, ROOT

from redirector.config.settings import Settings, load_settings
from redirector.store.file import FileStore

PY = sys.executable
BIG_FILLER = 4_800_000  # random /24s: a 63 MB GeoIP file, near GeoLite2-City's 70 MB


@dataclass
class Result:
    server: str
    workers: int
    requests: int
    seconds: float
    p50_us: int
    p99_us: int
    errors: dict[str, int]
    rss_mb: list[float] = field(default_factory=list)
    pss_mb: list[float] = field(default_factory=list)
    anon_mb: list[float] = field(default_factory=list)
    cpu_us: float = 0.0  # server CPU time (all workers) per request: steadier than req/s

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ensure_tools() -> None:
    missing = [t for t in ("nginx", "wrk") if shutil.which(t) is None and not _sbin(t)]
    if not missing:
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing {' '.join(missing)} with apt-get ...", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            check=True,
            env=env,
        )
        return
    sys.exit(f"missing {' '.join(missing)}: apt-get install {' '.join(missing)}")


def _sbin(tool: str) -> str | None:
    path = Path("/usr/sbin") / tool
    return str(path) if path.exists() else None


def tool(name: str) -> str:
    found = shutil.which(name) or _sbin(name)
    assert found is not None
    return found


def get(port: int, path: str, xff: str | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"X-Forwarded-For": xff} if xff else {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def wait_answering(
    port: int, path: str, proc: subprocess.Popen[bytes], timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering")
        with contextlib.suppress(OSError, http.client.HTTPException):
            get(port, path)
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing answered on port {port} within {timeout} s")


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def memory_mb(pid: int) -> tuple[float, float, float]:
    """(RSS, PSS, anonymous RSS) of a process in MB. The mapped GeoIP file counts in RSS only
    as far as lookups touched it, and is shared: PSS divides it among the workers."""
    rss = pss = anon = 0.0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("RssAnon:"):
                anon = int(line.split()[1]) / 1024
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) / 1024
    return round(rss, 1), round(pss, 1), round(anon, 1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Server:
    """One contender: started, asked for its worker pids, stopped."""

    name = ""

    def __init__(self, workdir: Path, workers: int) -> None:
        self.workdir = workdir
        self.workers = workers
        self.port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        raise NotImplementedError

    def worker_pids(self) -> list[int]:
        raise NotImplementedError

    def check(self, client: str) -> None:
        status, headers, _ = get(self.port, common.PATHS[0], client)
        if status != 302 or "Location" not in headers:
            raise RuntimeError(f"{self.name}: expected a 302 with a Location, got {status}")

    def stop(self) -> None:
        for p in self.procs:
            stop(p)

    @contextlib.contextmanager
    def running(self) -> Iterator[Server]:
        try:
            self.start()
            yield self
        finally:
            self.stop()

    def _log(self, what: str) -> BinaryIO:
        return (self.workdir / f"{self.name}-{what}.log").open("ab")


class Nginx(Server):
    name = "nginx"

    def start(self) -> None:
        conf = self.workdir / "nginx.conf"
        conf.write_text(common.nginx_conf(self.workdir, self.port, self.workers))
        proc = subprocess.Popen(
            [tool("nginx"), "-c", str(conf), "-p", str(self.workdir)],
            stdout=self._log("out"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.procs = [proc]
        wait_answering(self.port, "/", proc)

    def worker_pids(self) -> list[int]:
        return children(self.procs[0].pid)

    def stop(self) -> None:
        for p in self.procs:
            stop(p, signal.SIGQUIT)  # nginx's graceful stop


class BareAiohttp(Server):
    name = "aiohttp-bare"

    def start(self) -> None:
        script = ROOT / "bench" / "bare_aiohttp.py"
        self.procs = [
            subprocess.Popen(
                [PY, str(script), str(self.port)], stdout=self._log("out"), stderr=subprocess.STDOUT
            )
            for _ in range(self.workers)
        ]
        for p in self.procs:
            wait_answering(self.port, "/", p)
        time.sleep(0.5)  # the last ones to bind

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.procs]


class MirrorStub(Nginx):
    """Every mirror at once, on loopback, for the per-file check's HEADs (200 for any file)."""

    name = "mirror-stub"

    def start(self) -> None:
        conf = self.workdir / "mirror-stub.conf"
        conf.write_text(common.mirror_stub_conf(self.workdir / "stub", self.port))
        (self.workdir / "stub").mkdir(exist_ok=True)
        proc = subprocess.Popen(
            [tool("nginx"), "-c", str(conf), "-p", str(self.workdir / "stub")],
            stdout=self._log("out"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.procs = [proc]
        wait_answering(self.port, "/", proc)


class Redirector(Server):
    name = "redirector"

    def __init__(
        self, workdir: Path, workers: int, db: Path, synthetic: int = 200, *, features: bool = True
    ) -> None:
        super().__init__(workdir, workers)
        self.db = db
        self.synthetic = synthetic
        # Every feature on, as shipped (common.config_text): the per-file check against the
        # mirror stub, the text access log. Off: the example mirrors, no check, no log.
        self.stub = MirrorStub(workdir, 1) if features else None

    def config(self) -> str:
        mirrors = common.synthetic_mirrors(self.synthetic)
        stub = None if self.stub is None else self.stub.port
        return common.config_text(f"127.0.0.1:{self.port}", self.db, mirrors, stub=stub)

    def start(self) -> None:
        if self.stub is not None:
            self.stub.start()
        config = self.workdir / "redirector.toml"
        config.write_text(self.config())
        settings = load_settings(config)
        state = self.workdir / "state"
        shutil.rmtree(state, ignore_errors=True)
        state.mkdir()
        now = time.time()
        store = FileStore(state)
        asyncio.run(store.put_master(common.fresh_master(now)))
        asyncio.run(store.put_states(common.fresh_states([m.name for m in settings.mirrors], now)))
        proc = subprocess.Popen(
            [PY, "-m", "redirector.cli", "serve", "--config", str(config), "--no-poll",
             "--workers", str(self.workers), "--state-dir", str(state)],
            cwd=ROOT, stdout=self._log("out"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.procs = [proc]
        wait_answering(self.port, "/health", proc)
        self.wait_workers(settings)

    def stop(self) -> None:
        super().stop()
        if self.stub is not None:
            self.stub.stop()

    def wait_workers(self, settings: Settings) -> None:
        """Every worker up: connections land on workers by hash, so ask until all answered."""
        seen: set[int] = set()
        expected = sum(1 for m in settings.mirrors if m.enabled and m.http)  # fresh for http
        deadline = time.monotonic() + 60
        while len(seen) < self.workers and time.monotonic() < deadline:
            _, _, body = get(self.port, "/health")
            health = json.loads(body)
            seen.add(health.get("pid", 0))
            if health["mirrors"]["fresh"] < expected:
                raise RuntimeError(f"redirector sees {health['mirrors']}, not {expected} fresh")
        if len(seen) < self.workers:
            raise RuntimeError(f"only {len(seen)} of {self.workers} workers answered")

    def worker_pids(self) -> list[int]:
        if self.workers == 1:
            return [self.procs[0].pid]
        # The supervisor's children are the workers, and multiprocessing's resource tracker.
        return [pid for pid in children(self.procs[0].pid) if b"spawn_main" in cmdline(pid)]


def run_wrk(
    port: int, lua: Path, duration: str, connections: int, threads: int
) -> tuple[int, float, int, int, dict[str, int]]:
    url = f"http://127.0.0.1:{port}/"
    out = subprocess.run(
        [tool("wrk"), f"-t{threads}", f"-c{connections}", f"-d{duration}", "--timeout", "5s",
         "-s", str(lua), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    line = next(ln for ln in out.splitlines() if ln.startswith("BENCH "))
    f = line.split()
    kinds = ("connect", "read", "write", "timeout", "status")
    errors = dict(zip(kinds, map(int, f[5:10]), strict=True))
    return int(f[1]), float(f[2]), int(f[3]), int(f[4]), errors


def measure(server: Server, lua: Path, client: str, args: argparse.Namespace) -> Result:
    with server.running():
        server.check(client)
        # Warm-up: long enough for every client network to come once and fill the caches, as
        # on a server that has run a while (the bare handler has none to fill).
        warm = args.scale_warmup if server.name == "redirector-scale" else args.warmup
        run_wrk(server.port, lua, warm, args.connections, args.threads)
        pids = server.worker_pids()
        cpu = sum(cpu_seconds(pid) for pid in pids)
        requests, seconds, p50, p99, errors = run_wrk(
            server.port, lua, args.duration, args.connections, args.threads
        )
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu
        mem = [memory_mb(pid) for pid in pids]
    return Result(
        server.name, server.workers, requests, seconds, p50, p99, errors,
        [m[0] for m in mem], [m[1] for m in mem], [m[2] for m in mem],
        cpu / max(1, requests) * 1e6,
    )  # fmt: skip


def median_result(results: list[Result]) -> dict[str, float]:
    return {
        "rps": statistics.median(r.rps for r in results),
        "p50_ms": statistics.median(r.p50_us for r in results) / 1000,
        "p99_ms": statistics.median(r.p99_us for r in results) / 1000,
        "rss_mb": statistics.median(max(r.rss_mb, default=0.0) for r in results),
        "pss_mb": statistics.median(max(r.pss_mb, default=0.0) for r in results),
        "anon_mb": statistics.median(max(r.anon_mb, default=0.0) for r in results),
        "errors": sum(sum(r.errors.values()) for r in results),
        "cpu_us": statistics.median(r.cpu_us for r in results),
    }


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return f"{os.cpu_count()} cores, {cpu}, load {load[0]:.2f} at start"


CONTENDERS = ("nginx", "aiohttp-bare", "redirector", "redirector-scale")
SCALE = (1000, 100_000, 10_000)  # redirector-scale: mirrors, client networks, paths


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python bench/run.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Needs nginx and wrk (apt-get install nginx wrk) and the test extras.",
    )
    p.add_argument("-d", "--duration", default="5s", help="wrk duration per server (default 5s)")
    p.add_argument("--runs", type=int, default=1, help="rounds; medians are printed (use 3)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="default: cores")
    p.add_argument("-c", "--connections", type=int, default=64)
    p.add_argument("-t", "--threads", type=int, default=1)
    p.add_argument("--only", default=",".join(CONTENDERS), help="comma-separated contenders")
    p.add_argument("--mirrors", type=int, default=8, help="synthetic mirrors (default 8)")
    p.add_argument("--warmup", default="3s", help="wrk warm-up per server (default 3s)")
    p.add_argument("--scale-warmup", default="45s", help="the same for redirector-scale")
    p.add_argument("--no-decision", action="store_true", help="skip bench/decision.py")
    p.add_argument(
        "--big-geoip",
        action="store_true",
        help="a 63 MB GeoIP file, near GeoLite2-City (built once, about 4 min, 3 GB RAM)",
    )
    args = p.parse_args(argv)
    for name in args.only.split(","):
        if name not in CONTENDERS:
            p.error(f"unknown contender {name!r}; known: {', '.join(CONTENDERS)}")
    return args


def contender(name: str, workdir: Path, args: argparse.Namespace, db: Path) -> Server:
    if name == "nginx":
        return Nginx(workdir, args.workers)
    if name == "aiohttp-bare":
        return BareAiohttp(workdir, args.workers)
    if name == "redirector-scale":
        r = Redirector(workdir, args.workers, db, synthetic=SCALE[0])
        r.name = name
        return r
    return Redirector(workdir, args.workers, db, synthetic=args.mirrors)


def report(args: argparse.Namespace, results: dict[str, list[Result]], stamp: str) -> None:
    med = {name: median_result(rs) for name, rs in results.items()}
    print()
    print(f"medians of {args.runs} round(s), {args.duration} each, wrk -t{args.threads} "
          f"-c{args.connections}, {args.workers} workers")  # fmt: skip
    print(f"{'server':17}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/req':>12}"
          f"{'RSS MB':>9}{'PSS MB':>9}{'errors':>8}")  # fmt: skip
    for name, m in med.items():
        print(f"{name:17}{m['rps']:10.0f}{m['p50_ms']:9.2f}{m['p99_ms']:9.2f}{m['cpu_us']:12.1f}"
              f"{m['rss_mb']:9.1f}{m['pss_mb']:9.1f}{m['errors']:8.0f}")  # fmt: skip
    ratios = {}
    if "redirector" in med:
        for base in ("aiohttp-bare", "nginx"):
            if base in med and med[base]["rps"]:
                rps = med["redirector"]["rps"] / med[base]["rps"]
                cpu = med[base]["cpu_us"] / med["redirector"]["cpu_us"]
                ratios[f"redirector/{base}"] = rps
                ratios[f"redirector/{base} by CPU per request"] = cpu
                print(f"redirector/{base}: {rps:.2f} by req/s, {cpu:.2f} by CPU per request")
    if "redirector" in med and "redirector-scale" in med and med["redirector"]["rps"]:
        kept = med["redirector-scale"]["rps"] / med["redirector"]["rps"]
        ratios["redirector-scale/redirector"] = kept
        m, n, k = SCALE
        print(
            f"redirector-scale/redirector: {kept:.2f} by req/s ({m:,} mirrors, {n:,} client "
            f"networks, {k:,} paths against {args.mirrors} mirrors)"
        )
    doc = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "args": vars(args),
        "medians": med,
        "ratios": ratios,
        "rounds": {name: [asdict(r) | {"rps": r.rps} for r in rs] for name, rs in results.items()},
    }
    out = OUT / f"results-{stamp}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwritten: {out.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_tools()
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = OUT / f"run-{stamp}"
    workdir.mkdir()
    print(f"machine: {machine()}")
    print("building the GeoIP database and the client list ...", flush=True)
    world = common.build_world(OUT, filler=BIG_FILLER if args.big_geoip else 0)
    print(f"GeoIP database: {world.db.name}, {world.db.stat().st_size / 1e6:.1f} MB")
    lua = workdir / "xff.lua"
    lua.write_text(common.lua_script(world.clients))
    wanted = args.only.split(",")
    worlds = dict.fromkeys(wanted, (world, lua))
    if "redirector-scale" in wanted:
        _, networks, paths = SCALE
        big = common.build_world(OUT, clients=networks)
        scale_lua = workdir / "xff-scale.lua"
        scale_lua.write_text(common.lua_script(big.clients, common.tree_paths(paths)))
        worlds["redirector-scale"] = (big, scale_lua)
    results: dict[str, list[Result]] = {name: [] for name in wanted}
    for round_ in range(args.runs):
        for name in wanted:
            w, script = worlds[name]
            r = measure(contender(name, workdir, args, w.db), script, w.clients[0], args)
            results[name].append(r)
            print(
                f"round {round_ + 1}/{args.runs} {name:13} {r.rps:10.0f} req/s  "
                f"p50 {r.p50_us / 1000:6.2f} ms  p99 {r.p99_us / 1000:6.2f} ms  "
                f"CPU {r.cpu_us:5.1f} us/req  "
                f"RSS {'/'.join(f'{m:.0f}' for m in r.rss_mb)} MB  "
                f"errors {sum(r.errors.values())}",
                flush=True,
            )
    report(args, results, stamp)
    if not args.no_decision:
        print("\ndecision alone (bench/decision.py):", flush=True)
        subprocess.run([PY, str(ROOT / "bench" / "decision.py")], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
