"""Where a redirect's time goes, measured on the live server: one worker, parts switched off.

    python bench/attribution.py            # 5 s per variant, 2 rounds
    python bench/attribution.py -d 10s --rounds 3

Runs one redirector worker (the bench's config, state and GeoIP database, as bench/run.py) in
variants that replace one part of the redirect with nothing, and loads each with wrk as
bench/run.py does. CPU time per request is the figure to read (req/s moves with whatever else
the machine does): the difference between two variants is what the part costs in a real
server, caches cold from everything around it, which is several times what a tight loop over
the same function shows. Variants (the `--variants` names):

  full        the redirector as shipped (the fast path of web/front.py)
  no-link     without the RFC 6249 Link header (web.redirect.link_header)
  no-record   without the per-redirect metrics and download statistics (Redirects.record,
              Metrics.answered_as)
  no-log      without the access log line (access_log = "off")
  no-check    without the per-file check (verify_files = false)
  core        without all four: path checks, decision, 302
  route-only  the fast path reduced to the path checks, the decision and a bare 302
  trivial     the fast path answering a fixed 302: the transport alone
  aiohttp     every request handed to aiohttp's handler (the path before the fast path)
  bare-raise  handed to aiohttp, whose handler is the bare aiohttp handler's `raise HTTPFound`

Parts are replaced by patching module attributes before the app is built; a variant whose
attribute no longer exists is reported as such, not measured.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common
import run
from common import OUT

from redirector.config.settings import load_settings
from redirector.store.file import FileStore

VARIANTS = (
    "full",
    "no-link",
    "no-record",
    "no-log",
    "no-check",
    "core",
    "route-only",
    "trivial",
    "aiohttp",
    "bare-raise",
)


def worker(config: str, state: str, variant: str) -> None:
    """The body of the variant's process: patch, then serve like one redirector worker."""
    from aiohttp import web

    from redirector.web import app as app_module
    from redirector.web import front, metrics
    from redirector.web import redirect as handlers

    def patch(owner: object, name: str, value: object) -> None:
        if not hasattr(owner, name):
            sys.exit(f"variant {variant}: {owner!r} has no {name} any more")
        setattr(owner, name, value)

    if variant in ("no-link", "core"):
        patch(handlers, "link_header", lambda *a, **k: None)
    if variant in ("no-record", "core"):
        patch(handlers.Redirects, "record", lambda *a, **k: None)
        patch(metrics.Metrics, "answered_as", lambda *a, **k: None)  # `answered` calls it
    if variant in ("route-only", "trivial"):
        date = front._Clock()

        def bare(target: str, version: bytes) -> bytes:
            return front.serialize(
                handlers.Answer(302, {"Location": target}),
                version,
                date.date_line(time.time()),
                False,
                False,
            )

        if variant == "route-only":

            def finish(self: front.Front, req: Any, routed: Any, *_: object) -> bytes:
                return bare(routed.target, req.version)

            patch(front.Front, "finish", finish)
        else:

            def plan(self: front.Front, req: Any, peer: str | None) -> Any:
                return req, 0.0

            def settled(self: handlers.Redirects, routed: Any) -> Any:
                return routed, ""

            def finish_fixed(self: front.Front, req: Any, *_: object) -> bytes:
                return bare("http://mirror.test/smeserver" + req.target, req.version)

            patch(front.Front, "plan", plan)
            patch(handlers.Redirects, "settled", settled)
            patch(front.Front, "finish", finish_fixed)
    if variant in ("aiohttp", "bare-raise"):
        patch(front, "parse", lambda *a, **k: None)
    if variant == "bare-raise":

        async def raising(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound("http://ftp.nluug.nl/os/Linux/distr/smeserver" + request.raw_path)

        patch(handlers, "redirect", raising)
    settings = load_settings(config)
    if variant in ("no-log", "core"):
        settings = dataclasses.replace(settings, access_log="off")
    if variant in ("no-check", "core"):
        settings = dataclasses.replace(settings, verify_files=False)
    app_module.run(settings, poll=False, store=FileStore(Path(state)), print_fn=lambda _: None)


class Variant(run.Redirector):
    """One worker of the redirector, in a variant, on the bench's config and state."""

    def __init__(self, workdir: Path, db: Path, variant: str, mirrors: int = 8) -> None:
        super().__init__(workdir, 1, db, synthetic=mirrors)
        self.variant = variant
        self.name = f"variant-{variant}"

    def start(self) -> None:
        assert self.stub is not None
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
            [run.PY, __file__, "--worker", str(config), str(state), self.variant],
            stdout=self._log("out"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.procs = [proc]
        run.wait_answering(self.port, "/health", proc)

    def worker_pids(self) -> list[int]:
        return [self.procs[0].pid]


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:5])
        return 0
    p = argparse.ArgumentParser(
        prog="python bench/attribution.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-d", "--duration", default="5s")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("-c", "--connections", type=int, default=64)
    p.add_argument("--mirrors", type=int, default=8, help="synthetic mirrors (default 8)")
    args = p.parse_args(argv)
    args.threads = 1
    args.warmup = args.scale_warmup = "3s"  # every client network once: caches as in service
    run.ensure_tools()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = OUT / f"attribution-{stamp}"
    workdir.mkdir(parents=True)
    world = common.build_world(OUT)
    lua = workdir / "xff.lua"
    lua.write_text(common.lua_script(world.clients))
    print(f"machine: {run.machine()}")
    cpu: dict[str, list[float]] = {}
    rps: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for v in args.variants.split(","):
            variant = Variant(workdir, world.db, v, args.mirrors)
            r = run.measure(variant, lua, world.clients[0], args)
            cpu.setdefault(v, []).append(r.cpu_us)
            rps.setdefault(v, []).append(r.rps)
            print(f"{v:12} {r.rps:8.0f} req/s  CPU {r.cpu_us:6.1f} us/req", flush=True)
    print(f"\nmedians of {args.rounds} round(s), one worker, {args.duration} each")
    full = statistics.median(cpu["full"]) if "full" in cpu else None
    for v, times in cpu.items():
        c = statistics.median(times)
        delta = f"{c - full:+7.1f} vs full" if full is not None else ""
        print(f"{v:12} {statistics.median(rps[v]):8.0f} req/s  CPU {c:6.1f} us/req  {delta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
