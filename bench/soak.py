"""Soak: minutes of mixed load on a real `redirector serve` while its mirrors flap.

    python bench/soak.py                       # the full run: ten minutes
    python bench/soak.py --duration 1m         # what CI runs (tests/e2e/test_soak.py)
    python bench/soak.py --help

What runs, all on loopback (127.0.0.1; nothing leaves the machine, no name is looked up):

* a mirror farm in this process (tests/farm.py): the master and eight mirrors, each with its
  trace files, repomd.xml and a few packages. Four mirrors stay well; four flap: every
  `--flap` seconds each moves to its next mode (up, HTTP 500, hanging, junk for a trace, a
  stale trace, a redirect to another host, slow), so the poller sees them go down, break,
  fall behind and recover, and the never-a-404 HEAD check meets the same faults.
* Redis: `--redis-url`, or a redis-server started here on a free port (no persistence).
* `redirector serve --workers N` with the poller on (poll every 2 s, probe timeout 0.5 s,
  backoff at most 8 s), the per-file HEAD check on, a GeoIP database built here, the repodata
  pass and the sync-tree hook as in production.
* the load: `--concurrency` client loops sharing `--rate` requests per second: redirects (with
  X-Forwarded-For from 400 client networks, some https, some garbage), mirror lists, metalinks,
  the status page and its JSON, /health, /health/ready, ?mirrorlist explanations, /metrics, and
  a few hostile paths that must get their 4xx. Each loop stops by itself at the deadline.

Reported: requests by kind, error responses (a status other than the expected one, a reset,
a timeout: must be 0), tracebacks in the server's log (must be 0), and the RSS of every
redirector process sampled every 2 s: the growth from the end of the warm-up (the first 20 %,
at least 10 s) to the end (must be under 10 %). Exit status 0 when all three hold, 1 otherwise.
`--json FILE` writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/soak.py`: the package and tests/ from here
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from yarl import URL  # noqa: E402

from redirector.config.settings import parse_duration  # noqa: E402
from tests.farm import MASTER_TRACE, Farm, error_500, trace_c  # noqa: E402
from tests.mmdb_build import CityRecord, write_city_mmdb  # noqa: E402

STABLE = ("nl", "de", "us", "au")
FLAPPING = ("fr", "gb", "ca", "za")
PLACES = {
    "nl": ("NL", 52.37, 4.90), "de": ("DE", 50.11, 8.68), "us": ("US", 35.91, -79.05),
    "au": ("AU", -37.81, 144.96), "fr": ("FR", 48.86, 2.35), "gb": ("GB", 51.30, 1.07),
    "ca": ("CA", 45.50, -73.57), "za": ("ZA", -26.20, 28.05),
}  # fmt: skip
MODES = ("up", "error", "hang", "junk", "stale", "elsewhere", "up", "slow")
REPOS = ("smeos", "smeupdates")
FILES = (
    "releases/10/smeos/x86_64/Packages/e2fsprogs-1.42.9-19.el7.x86_64.rpm",
    "releases/10/smeos/x86_64/repodata/primary.xml.gz",
    "releases/10/smeupdates/x86_64/Packages/smeserver-base-10.0-1.el7.sme.noarch.rpm",
    "releases/10/iso/x86_64/smeserver-10.1-x86_64.iso",
    "contribs/someone/10/noarch/smeserver-thing-1.0-1.noarch.rpm",
    "obsolete/7/smeos/i386/CentOS/RPMS/kernel-2.6.9-89.EL.i686.rpm",
)
MISSING = "releases/10/smeos/x86_64/Packages/not-there-1.0-1.noarch.rpm"
REPOMD = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<repomd xmlns="http://linux.duke.edu/metadata/repo">'
    b"<revision>1700000000</revision></repomd>\n"
)
HOSTILE = (  # (path, expected status)
    ("/smeserver/%2e%2e/etc/passwd", 400),
    ("/smeserver/a%00b", 400),
    ("/smeserver/%c0%ae%c0%ae/x", 400),
    ("/smeserver/\\evil.example/", 400),
    ("/mirrorlist/no-such-repo", 404),
    ("/nowhere", 404),
)
TRACEBACK = re.compile(r"Traceback \(most recent call last\)")
RSS_LIMIT = 0.10


# --- the flapping farm -----------------------------------------------------------------------


async def hang(request: web.Request, rest: str) -> web.StreamResponse:
    """Accept and answer nothing for 30 s (the probes give up long before)."""
    await asyncio.sleep(30)
    return web.Response(status=504)


async def junk(request: web.Request, rest: str) -> web.StreamResponse:
    return web.Response(
        text="<html><body>Welcome to nginx!</body></html>", content_type="text/html"
    )


async def elsewhere(request: web.Request, rest: str) -> web.StreamResponse:
    # Another host (and nothing listens there): the poller and the HEAD check must not follow.
    return web.Response(status=302, headers={"Location": "http://127.0.0.2:9/" + rest})


class Flapper:
    """Fills the farm and moves each flapping mirror to its next mode every `period` s."""

    def __init__(self, farm: Farm, period: float) -> None:
        self.farm = farm
        self.period = period
        self.now = time.time()
        self.changes = 0
        master_date = self.now - 6 * 3600
        farm.set_trace("master", master_date)
        for name in STABLE + FLAPPING:
            farm.set_trace(name, master_date)
            for path in FILES:
                farm.put(name, path, b"x" * 64)
        for repo in REPOS:
            path = f"releases/10/{repo}/x86_64/repodata/repomd.xml"
            for name in ("master", *STABLE, *FLAPPING):
                farm.put(name, path, REPOMD)
        self.stale = trace_c(self.now - 3 * 86400)
        self.fresh = trace_c(master_date)

    def set_mode(self, name: str, mode: str) -> None:
        farm = self.farm
        farm.behaviours.pop(name, None)
        farm.put(name, MASTER_TRACE, self.stale if mode == "stale" else self.fresh)
        behaviours = {"error": error_500, "hang": hang, "junk": junk, "elsewhere": elsewhere}
        if mode in behaviours:
            farm.behaviours[name] = behaviours[mode]
        elif mode == "slow":

            async def slow(request: web.Request, rest: str, name: str = name) -> web.StreamResponse:
                # Slow, within reason: a pass must stay well inside the 3 poll intervals after
                # which /health/ready says "not ready" (the soak polls every 2 s, not 5 min).
                await asyncio.sleep(0.15)
                body = farm.files.get(f"{name}/{rest}")
                if body is None:
                    return web.Response(status=404)
                return web.Response(body=body)

            farm.behaviours[name] = slow

    async def run(self, deadline: float) -> None:
        step = 0
        while time.monotonic() < deadline:
            for i, name in enumerate(FLAPPING):
                self.set_mode(name, MODES[(step + 2 * i) % len(MODES)])
            self.changes += 1
            step += 1
            # The farm keeps every request it saw; a soak must not grow its own memory either.
            self.farm.hits.clear()
            self.farm.requests.clear()
            await asyncio.sleep(min(self.period, max(0.0, deadline - time.monotonic())))


# --- clients and the request mix -------------------------------------------------------------


def build_geo(directory: Path) -> tuple[Path, list[str]]:
    """A GeoIP database: 320 IPv4 /24s and 80 IPv6 /48s near the mirrors; one address each."""
    rng = random.Random(8)
    records: dict[str, CityRecord] = {}
    clients: list[str] = []
    places = list(PLACES.values())
    for i in range(320):
        net = f"{100 + i // 250}.{i % 250}.{rng.randint(0, 255)}.0/24"
        cc, lat, lon = rng.choice(places)
        records[net] = CityRecord(cc, "EU", lat + rng.uniform(-3, 3), lon + rng.uniform(-3, 3))
        clients.append(str(ipaddress.ip_network(net).network_address + 9))
    for i in range(80):
        net = f"2001:db8:{i:x}::/48"
        cc, lat, lon = rng.choice(places)
        records[net] = CityRecord(cc, "EU", lat, lon)
        clients.append(str(ipaddress.ip_network(net).network_address + 9))
    db = write_city_mmdb(directory / "soak-city.mmdb", records)
    return db, clients


@dataclass(frozen=True, slots=True)
class Request:
    kind: str
    target: str
    expected: tuple[int, ...]
    headers: tuple[tuple[str, str], ...] = ()


def request_mix(clients: list[str], seed: int = 8) -> list[Request]:
    """A shuffled cycle of requests; the loops walk it over and over."""
    rng = random.Random(seed)
    out: list[Request] = []

    def xff() -> tuple[tuple[str, str], ...]:
        roll = rng.random()
        if roll < 0.03:
            return (("X-Forwarded-For", rng.choice(["garbage", "fe80::1%eth0", ", ,", "1.2.3"])),)
        headers = [("X-Forwarded-For", rng.choice(clients))]
        if roll < 0.25:
            headers.append(("X-Forwarded-Proto", "https"))
        return tuple(headers)

    for _ in range(500):
        path = rng.choice([*FILES, MISSING, "releases/10/smeos/x86_64/repodata/repomd.xml"])
        prefix = "/pub/smeserver/" if rng.random() < 0.1 else "/smeserver/"
        out.append(Request("redirect", prefix + path, (302,), xff()))
    for _ in range(60):
        repo, ver = rng.choice(REPOS), rng.choice(("8", "9", "10", "11"))
        target = rng.choice(
            [f"/mirrorlist/{repo}-{ver}", f"/mirrorlist?repo={repo}-{ver}&arch=x86_64",
             f"/mirrorlists/{repo}"]
        )  # fmt: skip
        out.append(Request("mirrorlist", target, (200,), xff()))
    for _ in range(30):
        # 404 until the repodata pass has read the master's repomd.xml (and again after Redis
        # lost it): a metalink without hashes is never given.
        out.append(Request("metalink", "/metalink?repo=smeos-10&arch=x86_64", (200, 404), xff()))
    out += [Request("status", "/mirrors", (200,))] * 25
    out += [Request("status-json", "/mirrors.json", (200,))] * 25
    out += [Request("health", "/health", (200,))] * 50
    out += [Request("ready", "/health/ready", (200,))] * 25
    out += [Request("metrics", "/metrics", (200,))] * 10
    for _ in range(15):
        path = rng.choice(FILES)
        out.append(Request("explain", f"/smeserver/{path}?mirrorlist&json", (200,), xff()))
    for path, status in HOSTILE:
        out += [Request("hostile", path, (status,))] * 5
    rng.shuffle(out)
    return out


@dataclass
class Tally:
    by_kind: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors[what.split(":", maxsplit=1)[0]] += 1
        if len(self.samples) < 20:
            self.samples.append(what)


async def load(
    base: str, mix: list[Request], deadline: float, rate: float, concurrency: int, tally: Tally
) -> None:
    """`concurrency` loops sharing `rate` requests per second until `deadline`."""
    interval = 1.0 / rate
    slot = [time.monotonic()]
    index = [0]
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def loop() -> None:
            while True:
                slot[0] = max(slot[0] + interval, time.monotonic() - 1.0)  # no catch-up burst
                wait = slot[0] - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if time.monotonic() >= deadline:
                    return
                req = mix[index[0] % len(mix)]
                index[0] += 1
                started = time.monotonic()
                try:
                    async with session.get(
                        URL(base + req.target, encoded=True),  # sent as written, %2e%2e too
                        headers=dict(req.headers),
                        allow_redirects=False,
                    ) as resp:
                        body = await resp.read()
                        if resp.status not in req.expected:
                            said = body[:300].decode(errors="replace").replace("\n", " ")
                            tally.error(f"HTTP {resp.status}: {req.kind} {req.target[:80]} {said}")
                except (aiohttp.ClientError, TimeoutError, OSError) as e:
                    tally.error(f"{type(e).__name__}: {req.kind} {req.target[:80]} {e}"[:200])
                tally.by_kind[req.kind] += 1
                if len(tally.latencies) < 2_000_000:
                    tally.latencies.append(time.monotonic() - started)

        await asyncio.gather(*(loop() for _ in range(concurrency)))


# --- the redirector process and its memory ---------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (the workers of `serve --workers N`)."""
    out = [pid]
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            out += process_tree(int(child))
    return out


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def is_redirector(pid: int) -> bool:
    """A redirector process: the server, or a worker it spawned (not multiprocessing's
    resource tracker, which also runs as its child)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"redirector.cli" in cmd or b"spawn_main" in cmd


Samples = list[tuple[float, dict[int, int]]]  # (monotonic time, pid -> RSS in kB)


async def sample_rss(pid: int, deadline: float, every: float, out: Samples) -> None:
    while time.monotonic() < deadline:
        row = {}
        for p in process_tree(pid):
            kb = rss_kb(p)
            if kb is not None and is_redirector(p):
                row[p] = kb
        out.append((time.monotonic(), row))
        await asyncio.sleep(every)


@contextlib.contextmanager
def redis_server(url: str | None, workdir: Path) -> Iterator[str | None]:
    """`url`, or a redis-server of our own on a free loopback port, or None (no Redis)."""
    if url is not None:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server not found: the state stays in the redirector process")
        yield None
        return
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def config_text(
    port: int, master: str, mirrors: dict[str, str], db: Path, redis: str | None
) -> str:
    head = f"""[redirector]
listen = "127.0.0.1:{port}"
master = "{master}"
trusted_proxies = ["127.0.0.1/32", "::1/128"]
geoip_db = "{db}"
{f'redis_url = "{redis}"' if redis else ""}
redis_prefix = "soak:"
poll_interval = "2s"
probe_timeout = "500ms"
backoff_max = "8s"
coverage_interval = "20s"
lease_ttl = "3s"
verify_timeout = "300ms"
verify_ttl = "30s"
verify_negative_ttl = "5s"
repos = ["smeos", "smeupdates"]
repo_versions = ["7", "8", "9", "10", "11"]
repodata_versions = ["10"]
access_log = "off"
# The loops ask for the status views from loopback some 16 times a second, past the views'
# budget on purpose: loopback stands for the operator's exempt monitoring here. The clients'
# explanations (from X-Forwarded-For networks) stay within the budget.
views_exempt = ["127.0.0.0/8", "::1/128"]
"""
    blocks = []
    for name, url in mirrors.items():
        cc, lat, lon = PLACES[name]
        blocks.append(
            f'[[mirror]]\nname = "{name}"\nhttp = "{url}"\ncountry = "{cc}"\n'
            f"latitude = {lat}\nlongitude = {lon}\nipv6 = true\n"
        )
    return head + "\n" + "\n".join(blocks)


async def wait_ready(base: str, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    """Until 20 answers in a row, each on a new connection (so that every worker of `serve
    --workers N` is asked), are ready with the stable mirrors fresh: a worker that has just
    started and not yet loaded the state says "not ready", rightly, and that is not the
    soak's business."""
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        streak = 0
        while streak < 20:
            if proc.poll() is not None:
                raise RuntimeError(f"the redirector exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("the redirector was not ready within a minute")
            streak += 1
            try:
                async with session.get(base + "/health") as resp:
                    fresh = (await resp.json())["mirrors"]["fresh"]
                async with session.get(base + "/health/ready") as resp:
                    ready = resp.status == 200
            except (aiohttp.ClientError, OSError):
                fresh, ready = 0, False
            if fresh < len(STABLE) or not ready:
                streak = 0
                await asyncio.sleep(0.2)


async def poller_passes(base: str) -> int | None:
    """How many poller passes the redirector has counted (from /metrics)."""
    with contextlib.suppress(aiohttp.ClientError, OSError):
        async with aiohttp.ClientSession() as s, s.get(base + "/metrics") as resp:
            for line in (await resp.text()).splitlines():
                if line.startswith("redirector_poller_pass_seconds_count"):
                    return int(float(line.split()[-1]))
    return None


@dataclass
class Report:
    duration_s: float
    warmup_s: float
    rate: float
    workers: int
    requests: int
    by_kind: dict[str, int]
    errors: int
    error_kinds: dict[str, int]
    error_samples: list[str]
    p50_ms: float
    p99_ms: float
    tracebacks: int
    flaps: int
    poller_passes: int | None
    mirror_transitions: int
    rss_mb: dict[str, dict[str, float]]  # pid -> baseline, end, peak (MB), growth (fraction)
    rss_growth: float  # the largest of the processes'
    ok: bool


def rss_summary(
    samples: Samples, warm_end: float, window: float
) -> tuple[dict[str, dict[str, float]], float]:
    """Per process: the mean RSS over `window` s after the warm-up, over the last `window` s,
    the peak after the warm-up, and the growth between the two means."""
    end = samples[-1][0]
    pids = sorted({p for _, row in samples for p in row})
    out: dict[str, dict[str, float]] = {}
    worst = 0.0
    for pid in pids:
        base = [row[pid] for t, row in samples if warm_end <= t < warm_end + window and pid in row]
        last = [row[pid] for t, row in samples if t >= end - window and pid in row]
        after = [row[pid] for t, row in samples if t >= warm_end and pid in row]
        if not base or not last:
            continue
        b, e = statistics.mean(base), statistics.mean(last)
        growth = (e - b) / b
        worst = max(worst, growth)
        out[str(pid)] = {
            "baseline_mb": round(b / 1024, 1),
            "end_mb": round(e / 1024, 1),
            "peak_mb": round(max(after) / 1024, 1),
            "growth": round(growth, 4),
        }
    return out, worst


async def soak(args: argparse.Namespace) -> Report:
    workdir = Path(tempfile.mkdtemp(prefix="redirector-soak-"))
    farm = Farm()
    await farm.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        flapper = Flapper(farm, args.flap)
        db, clients = build_geo(workdir)
        mirrors = {name: farm.url(name) for name in STABLE + FLAPPING}
        with redis_server(args.redis_url, workdir) as redis:
            port = free_port()
            cfg = workdir / "soak.toml"
            cfg.write_text(config_text(port, farm.url("master"), mirrors, db, redis))
            log = workdir / "redirector.log"
            with log.open("wb") as err:
                proc = subprocess.Popen(  # noqa: ASYNC220  # started once, before any load
                    [sys.executable, "-m", "redirector.cli", "serve", "--config", str(cfg),
                     "--workers", str(args.workers)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                )  # fmt: skip
            base = f"http://127.0.0.1:{port}"
            await wait_ready(base, proc)
            print(f"redirector pid {proc.pid} on {base}; state in {redis or 'the process'}")
            started = time.monotonic()
            deadline = started + args.duration
            warm_end = started + args.warmup
            tally = Tally()
            samples: Samples = []
            progress = asyncio.create_task(report_progress(tally, started, deadline))
            await asyncio.gather(
                flapper.run(deadline),
                load(base, request_mix(clients), deadline, args.rate, args.concurrency, tally),
                sample_rss(proc.pid, deadline, 2.0, samples),
            )
            progress.cancel()
            passes = await poller_passes(base)
            if proc.poll() is not None:
                tally.error(f"exited: the redirector exited with {proc.returncode}")
            stop(proc)
        text = log.read_text(errors="replace")
        tracebacks = len(TRACEBACK.findall(text))
        transitions = (
            text.count(" is down: ") + text.count(" is broken: ") + text.count(" recovered ")
        )
        window = min(10.0, args.duration / 6)
        rss, growth = rss_summary(samples, warm_end, window)
        lat = sorted(tally.latencies) or [0.0]
        errors = sum(tally.errors.values())
        ok = errors == 0 and tracebacks == 0 and bool(rss) and growth < RSS_LIMIT
        if tracebacks and args.keep_log:
            print(text[-5000:])
        return Report(
            duration_s=args.duration,
            warmup_s=args.warmup,
            rate=args.rate,
            workers=args.workers,
            requests=sum(tally.by_kind.values()),
            by_kind=dict(tally.by_kind),
            errors=errors,
            error_kinds=dict(tally.errors),
            error_samples=tally.samples,
            p50_ms=round(lat[len(lat) // 2] * 1000, 2),
            p99_ms=round(lat[int(len(lat) * 0.99)] * 1000, 2),
            tracebacks=tracebacks,
            flaps=flapper.changes,
            poller_passes=passes,
            mirror_transitions=transitions,
            rss_mb=rss,
            rss_growth=round(growth, 4),
            ok=ok,
        )
    finally:
        if proc is not None:
            stop(proc)
        await farm.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def report_progress(tally: Tally, started: float, deadline: float) -> None:
    while True:
        await asyncio.sleep(30)
        done = time.monotonic() - started
        print(
            f"  {done:5.0f} s of {deadline - started:.0f}: {sum(tally.by_kind.values())} requests, "
            f"{sum(tally.errors.values())} errors",
            flush=True,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Soak the redirector: mixed load, flapping mirrors, errors and RSS growth."
    )
    p.add_argument("--duration", type=parse_duration, default=600.0, help="e.g. 10m (default), 60s")
    p.add_argument(
        "--warmup",
        type=parse_duration,
        default=None,
        help="left out of the RSS baseline (default: 20%% of the run, at least 10 s)",
    )
    p.add_argument("--rate", type=float, default=150.0, help="requests per second (default 150)")
    p.add_argument("--concurrency", type=int, default=8, help="client loops (default 8)")
    p.add_argument("--workers", type=int, default=1, help="redirector worker processes")
    p.add_argument("--flap", type=parse_duration, default=4.0, help="mirror mode change period")
    p.add_argument("--redis-url", default=None, help="use this Redis (default: start one)")
    p.add_argument("--json", type=Path, default=None, help="write the report here as JSON")
    p.add_argument("--keep-log", action="store_true", help="print the server log's tail on error")
    args = p.parse_args(argv)
    if args.warmup is None:
        args.warmup = max(10.0, args.duration * 0.2)
    if args.duration <= args.warmup + 10:
        p.error("--duration must exceed the warm-up by more than 10 s")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"soak: {args.duration:g} s at {args.rate:g} req/s, {args.workers} worker(s), mirrors "
        f"flapping every {args.flap:g} s; RSS baseline after {args.warmup:g} s"
    )
    report = asyncio.run(soak(args))
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(report.by_kind.items()))
    print(f"requests: {report.requests} ({kinds})")
    print(f"latency: p50 {report.p50_ms} ms, p99 {report.p99_ms} ms")
    print(f"errors: {report.errors} {report.error_kinds or ''}")
    for sample in report.error_samples:
        print(f"  {sample}")
    print(f"tracebacks in the server log: {report.tracebacks}")
    print(f"mirror mode changes: {report.flaps}, poller passes: {report.poller_passes}, "
          f"mirror down/broken/recovered log lines: {report.mirror_transitions}")  # fmt: skip
    for pid, m in report.rss_mb.items():
        print(f"RSS pid {pid}: {m['baseline_mb']} MB after warm-up -> {m['end_mb']} MB at the end "
              f"(peak {m['peak_mb']} MB): {m['growth'] * 100:+.1f} %")  # fmt: skip
    print(f"verdict: {'PASS' if report.ok else 'FAIL'}: {report.errors} errors (want 0), "
          f"{report.tracebacks} tracebacks (want 0), RSS growth {report.rss_growth * 100:+.1f} % "
          f"(want < {RSS_LIMIT * 100:.0f} %)")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
