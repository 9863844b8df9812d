"""Where a redirect's time goes, measured on the live server: one worker, parts switched off.

    python bench/attribution.py            # 5 s per variant, 2 rounds
    python bench/attribution.py -d 10s --rounds 3

Runs one redirector worker (the bench's config, state and GeoIP database, as bench/run.py) in
variants that replace one part of the redirect with nothing, and loads each with wrk as
bench/run.py does. CPU time per request is the figure to read (req/s moves with whatever else
the machine does): the difference between two variants is what the part costs in a real
server, caches cold from everything around it, which is several times what a tight loop over
the same function shows. Variants (the `--variants` names):

  full        the redirector as shipped
  no-link     without the RFC 6249 Link header (web.link.link_header)
  no-record   without the per-redirect metrics and download statistics (pages.record)
  core        without both: path checks, decision, per-file check, 302
  route-only  the handler reduced to the path checks, the decision and the 302
  path-only   the handler reduced to the path checks and a fixed 302
  trivial     the handler replaced by `return web.Response(302)`: the app around it
  bare-raise  the handler replaced by the bare aiohttp handler's `raise HTTPFound`

Parts are replaced by patching module attributes before the app is built; a variant whose
attribute no longer exists is reported as such, not measured.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import common
import run
from common import OUT

from redirector.config.settings import load_settings
from redirector.store.file import FileStore

VARIANTS = (
    "full",
    "no-link",
    "no-record",
    "core",
    "route-only",
    "path-only",
    "trivial",
    "bare-raise",
)


def worker(config: str, state: str, variant: str) -> None:
    """The body of the variant's process: patch, then serve like one redirector worker."""
    from aiohttp import web

    from redirector.core.paths import split_target
    from redirector.web import app as app_module
    from redirector.web import keys, pages
    from redirector.web import redirect as handlers

    def patch(module: object, name: str, value: object) -> None:
        if not hasattr(module, name):
            sys.exit(f"variant {variant}: {module!r} has no {name} any more")
        setattr(module, name, value)

    if variant in ("no-link", "core"):
        patch(handlers, "link_header", lambda *a, **k: None)
    if variant in ("no-record", "core"):
        patch(pages, "record", lambda *a, **k: None)
    if variant in ("route-only", "path-only"):
        only_path = variant == "path-only"

        async def reduced(request: web.Request) -> web.StreamResponse:
            raw_path, _ = split_target(request.raw_path)
            path = request.app[keys.ROUTER].tree_path(raw_path)  # as the handler checks it
            assert path is not None
            if only_path:
                target = "http://mirror.test/smeserver/" + path
            else:
                h = request.headers
                routed = request.app[keys.ROUTER].resolve(
                    request.remote,
                    h.get("X-Forwarded-For"),
                    h.get("X-Forwarded-Proto"),
                    request.scheme,
                    path,
                )
                target = routed.target
            return web.Response(
                status=302, headers={"Location": target, "Cache-Control": "private, no-store"}
            )

        patch(handlers, "redirect", reduced)
    if variant == "trivial":

        async def trivial(request: web.Request) -> web.StreamResponse:
            return web.Response(
                status=302,
                headers={
                    "Location": "http://mirror.test/smeserver" + request.raw_path,
                    "Cache-Control": "private, no-store",
                },
            )

        patch(handlers, "redirect", trivial)
    if variant == "bare-raise":

        async def raising(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound("http://ftp.nluug.nl/os/Linux/distr/smeserver" + request.raw_path)

        patch(handlers, "redirect", raising)
    settings = load_settings(config)
    app_module.run(settings, poll=False, store=FileStore(Path(state)), print_fn=lambda _: None)


class Variant(run.Redirector):
    """One worker of the redirector, in a variant, on the bench's config and state."""

    def __init__(self, workdir: Path, db: Path, variant: str) -> None:
        super().__init__(workdir, 1, db)
        self.variant = variant
        self.name = f"variant-{variant}"

    def start(self) -> None:
        config = self.workdir / "redirector.toml"
        text = common.config_text(f"127.0.0.1:{self.port}", self.db, common.synthetic_mirrors())
        config.write_text(text.replace("[redirector]\n", "[redirector]\nverify_files = false\n", 1))
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
    args = p.parse_args(argv)
    args.threads = 1
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
            r = run.measure(Variant(workdir, world.db, v), lua, world.clients[0], args)
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
