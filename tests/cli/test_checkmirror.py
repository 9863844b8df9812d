"""check-mirror against loopback mirrors built to pass and to fail each check, and its judges."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from aiohttp import web

from redirector.cli.checkmirror import (
    DEFAULT_REPOMD,
    DEFAULT_SYMLINK,
    Answer,
    CheckOptions,
    CheckResult,
    Verdict,
    check_mirror,
    format_text,
    judge_https,
    judge_ipv6,
    judge_master_trace,
    judge_own_trace,
    judge_range,
    judge_repomd,
    judge_response_time,
    judge_root,
    judge_subtree,
    judge_symlink,
    judge_sync,
    resolve_aaaa,
    to_json,
)
from tests.farm import MASTER_TRACE, Farm, trace_c

PASS, INFO, WARN, FAIL = Verdict.PASS, Verdict.INFO, Verdict.WARN, Verdict.FAIL
HOST = "127.0.0.1"  # the farm's host, so the default own trace name
OWN_TRACE = f"project/trace/{HOST}"
SYMLINK = DEFAULT_SYMLINK.rstrip("/")  # releases/testing/11 -> releases/testing/11.0beta1
LISTING = "<html><body><h1>Index of /smeserver</h1>{}</body></html>"


def listing(*names: str) -> bytes:
    return LISTING.format("".join(f'<a href="{n}">{n}</a>\n' for n in names)).encode()


def repomd(path: str, version: int = 1) -> bytes:
    return f"<repomd><revision>{version}</revision><!-- {path} --></repomd>".encode()


@dataclass
class Tree:
    """One smeserver tree as a mirror would serve it, with its symlinks and server quirks."""

    files: dict[str, bytes]
    links: dict[str, str] = field(default_factory=lambda: {SYMLINK: SYMLINK + ".0beta1"})
    follow_symlinks: bool = True
    ranges: bool = True
    delay: float = 0.0

    async def __call__(self, request: web.Request, rest: str) -> web.StreamResponse:
        if self.delay:
            await asyncio.sleep(self.delay)
        path = rest
        for link, target in self.links.items():
            if path == link or path.startswith(link + "/"):
                if not self.follow_symlinks:
                    # Apache's answer with Options -FollowSymLinks
                    return web.Response(status=403, text="Symbolic link not allowed")
                path = target + path[len(link) :]
        body = self.files.get(path)
        if body is None:
            return web.Response(status=404, text="<html>404 Not Found</html>")
        spec = request.headers.get("Range", "")
        if self.ranges and spec.startswith("bytes="):
            first, _, last = spec.removeprefix("bytes=").partition("-")
            lo, hi = int(first), min(int(last or len(body) - 1), len(body) - 1)
            return web.Response(
                status=206,
                body=body[lo : hi + 1],
                headers={"Content-Range": f"bytes {lo}-{hi}/{len(body)}"},
            )
        return web.Response(body=body, headers={"Accept-Ranges": "none"})


def good_files(held: float, own: float | None = None) -> dict[str, bytes]:
    """A complete tree holding master state `held`, its own trace written at `own`."""
    files = {
        "": listing("releases/", "contribs/", "obsolete/", "project/"),
        "releases/": listing("10/", "testing/"),
        "releases/testing/": listing("11/", "11.0beta1/"),
        SYMLINK + ".0beta1/": listing("smeos/"),
        "contribs/": listing("someone/"),
        "obsolete/": listing("7/"),
        MASTER_TRACE: trace_c(held),
        OWN_TRACE: trace_c(held + 600 if own is None else own, host="mirror.test"),
    }
    for p in DEFAULT_REPOMD:
        files[p] = repomd(p)
    return files


@dataclass
class World:
    farm: Farm
    now: float

    def serve(self, name: str, tree: Tree) -> str:
        self.farm.behaviours[name] = tree
        return self.farm.url(name)

    def options(self, **kw: object) -> CheckOptions:
        return replace(CheckOptions(master=self.farm.url("master"), timeout=5.0), **kw)  # type: ignore[arg-type]  # test shorthand


@pytest.fixture
def world(farm: Farm) -> World:
    now = float(int(time.time()))
    master = good_files(now - 3600)
    del master[OWN_TRACE]
    farm.behaviours["master"] = Tree(master)
    return World(farm, now)


def verdicts(results: list[CheckResult]) -> dict[str, Verdict]:
    out = {r.name: r.verdict for r in results}
    assert len(out) == len(results), "check names are unique"
    return out


def failing(results: list[CheckResult]) -> set[str]:
    return {r.name for r in results if r.verdict is FAIL}


async def test_good_mirror_passes_everything(world: World) -> None:
    url = world.serve("good", Tree(good_files(world.now - 3600)))
    results = await check_mirror(url, world.options())
    got = verdicts(results)
    assert set(got.values()) <= {PASS, INFO}, format_text(results)
    # Every check the issue names is there.
    expected = {
        "root", "master-trace", "own-trace", "sync", "subtree:releases/",
        "subtree:releases/testing/", "subtree:contribs/", "subtree:obsolete/", "symlink",
        "repomd:releases/10/smeos/x86_64", "repomd:releases/10/smeupdates/x86_64",
        "repomd:releases/10/smeextras/x86_64", "https", "ipv6", "range", "response-time",
    }  # fmt: skip
    assert set(got) == expected
    assert got["https"] is INFO  # an http URL
    assert got["ipv6"] is INFO  # 127.0.0.1 is an IPv4 address
    reasons = {r.name: r.reason for r in results}
    assert "current state" in reasons["master-trace"]
    assert "Upstream-mirror: mirror.contribs.org" in reasons["own-trace"]
    assert reasons["range"] == "206 Partial Content for bytes=0-0"


async def test_it_sends_few_small_requests(world: World) -> None:
    url = world.serve("good", Tree(good_files(world.now - 3600)))
    await check_mirror(url, world.options())
    to_mirror = [h for h in world.farm.hits if h.startswith("good/")]
    to_master = [h for h in world.farm.hits if h.startswith("master/")]
    assert len(to_mirror) <= 15
    assert len(to_master) <= 5


def _drop(*paths: str) -> Callable[[Tree], None]:
    def change(t: Tree) -> None:
        for p in paths:
            del t.files[p]

    return change


def _set(path: str, body: bytes) -> Callable[[Tree], None]:
    def change(t: Tree) -> None:
        t.files[path] = body

    return change


def _attr(name: str, value: object) -> Callable[[Tree], None]:
    return lambda t: setattr(t, name, value)


H = 3600.0
BROKEN: dict[str, tuple[Callable[[Tree], None], set[str], dict[str, Verdict]]] = {
    # name: (what breaks, the checks that must FAIL, other verdicts to expect)
    "root-404": (_drop(""), {"root"}, {"sync": PASS}),
    "no-master-trace": (_drop(MASTER_TRACE), {"master-trace"}, {"range": PASS}),
    "html-master-trace": (
        _set(MASTER_TRACE, b"<!DOCTYPE html><html>Not Found</html>"),
        {"master-trace"},
        {},
    ),
    "no-own-trace": (_drop(OWN_TRACE), {"own-trace"}, {}),
    "syncing": (_set("Archive-Update-in-Progress-127.0.0.1", b""), set(), {"sync": WARN}),
    "no-obsolete": (_drop("obsolete/"), set(), {"subtree:obsolete/": WARN}),
    "no-contribs": (_drop("contribs/"), {"subtree:contribs/"}, {}),
    "no-testing": (_drop("releases/testing/"), {"subtree:releases/testing/"}, {}),
    "symlinks-off": (_attr("follow_symlinks", False), {"symlink"}, {}),
    "symlink-not-mirrored": (_attr("links", {}), {"symlink"}, {}),
    "repomd-differs": (
        _set(DEFAULT_REPOMD[0], repomd(DEFAULT_REPOMD[0], 2)),
        {"repomd:releases/10/smeos/x86_64"},
        {},
    ),
    "repomd-missing": (_drop(DEFAULT_REPOMD[2]), {"repomd:releases/10/smeextras/x86_64"}, {}),
    "no-range": (_attr("ranges", False), {"range"}, {}),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
async def test_each_broken_mirror_fails_exactly_its_checks(world: World, case: str) -> None:
    change, must_fail, others = BROKEN[case]
    tree = Tree(good_files(world.now - 3600))
    change(tree)
    results = await check_mirror(world.serve(case, tree), world.options())
    assert failing(results) == must_fail, format_text(results)
    got = verdicts(results)
    for name, verdict in others.items():
        assert got[name] is verdict, format_text(results)
    # What did not break is not reported as broken: at worst a WARN or an INFO.
    expected_warn = {n for n, v in others.items() if v is WARN}
    assert {n for n, v in got.items() if v is WARN} == expected_warn, format_text(results)


async def test_stale_mirror_fails_freshness_only(world: World) -> None:
    # The master moved 10 hours ago; this mirror still holds the state of 30 hours ago. Its
    # repodata happens to match (the master's change touched other files).
    master = world.farm.behaviours["master"]
    assert isinstance(master, Tree)
    master.files[MASTER_TRACE] = trace_c(world.now - 10 * H)
    tree = Tree(good_files(world.now - 30 * H))
    results = await check_mirror(world.serve("stale", tree), world.options(max_lag=8 * H))
    assert failing(results) == {"master-trace"}, format_text(results)
    assert "too far behind" in next(r.reason for r in results if r.name == "master-trace")


async def test_behind_within_limit_warns_on_differing_repodata(world: World) -> None:
    tree = Tree(good_files(world.now - 5 * H))
    tree.files[DEFAULT_REPOMD[0]] = repomd(DEFAULT_REPOMD[0], 0)
    results = await check_mirror(world.serve("behind", tree), world.options())
    got = verdicts(results)
    assert failing(results) == set(), format_text(results)
    assert got["master-trace"] is PASS
    assert got["repomd:releases/10/smeos/x86_64"] is WARN


async def test_own_trace_older_than_its_master_trace(world: World) -> None:
    tree = Tree(good_files(world.now - 3600, own=world.now - 5 * H))
    results = await check_mirror(world.serve("torn", tree), world.options())
    assert failing(results) == {"own-trace"}, format_text(results)
    assert "did not complete" in next(r.reason for r in results if r.name == "own-trace")


async def test_trace_name_option(world: World) -> None:
    tree = Tree(good_files(world.now - 3600))
    tree.files["project/trace/ftp.example.org"] = tree.files.pop(OWN_TRACE)
    tree.files["Archive-Update-in-Progress-ftp.example.org"] = b""
    url = world.serve("named", tree)
    assert failing(await check_mirror(url, world.options())) == {"own-trace"}
    results = await check_mirror(url, world.options(trace_name="ftp.example.org"))
    assert failing(results) == set()
    assert verdicts(results)["sync"] is WARN  # the flag is found by its name, unlisted


MIRRORNAME = "box7.example.net"  # ftpsync's default: `hostname -f`, not the URL's host


def ftpsync_tree(world: World, own: float, *, hierarchy: bool = True) -> Tree:
    """A good tree whose own trace is named after its MIRRORNAME, as ftpsync names it."""
    tree = Tree(good_files(world.now - 3600))
    del tree.files[OWN_TRACE]
    tree.files[f"project/trace/{MIRRORNAME}"] = trace_c(own, host=MIRRORNAME)
    if hierarchy:
        tree.files["project/trace/_hierarchy"] = (
            f"{MIRRORNAME} {MIRRORNAME} {MIRRORNAME} mirror.contribs.org\n".encode()
        )
    tree.files["project/trace/_traces"] = f"mirror.contribs.org\n{MIRRORNAME}\n".encode()
    return tree


@pytest.mark.parametrize("hierarchy", [True, False], ids=["_hierarchy", "_traces"])
async def test_a_correct_ftpsync_mirror_passes_without_trace_name(
    world: World, hierarchy: bool
) -> None:
    tree = ftpsync_tree(world, world.now - 3000, hierarchy=hierarchy)
    results = await check_mirror(world.serve("ftpsync", tree), world.options())
    assert failing(results) == set(), format_text(results)
    own = next(r for r in results if r.name == "own-trace")
    source = "_hierarchy" if hierarchy else "_traces"
    assert (own.verdict, f"MIRRORNAME from {source}" in own.reason) == (PASS, True), own


async def test_the_lock_is_found_under_the_mirrorname(world: World) -> None:
    tree = ftpsync_tree(world, world.now - 3000)
    tree.files[f"Archive-Update-in-Progress-{MIRRORNAME}"] = b""
    results = await check_mirror(world.serve("locked", tree), world.options())
    assert verdicts(results)["sync"] is WARN
    assert MIRRORNAME in next(r.reason for r in results if r.name == "sync")


async def test_between_the_stages_of_a_staged_push_warns(world: World) -> None:
    # Stage 1 brought the new master trace copy and new files; stage 2 (indexes, deletions,
    # the own trace) comes up to ten minutes later. Its repodata is still the old state's.
    tree = ftpsync_tree(world, world.now - 5 * H)
    tree.files[f"project/trace/{MIRRORNAME}-stage1"] = trace_c(world.now - 300, host=MIRRORNAME)
    tree.files["project/trace/_hierarchy"] = (
        f"{MIRRORNAME}-stage1 {MIRRORNAME} {MIRRORNAME} mirror.contribs.org\n".encode()
    )
    tree.files[DEFAULT_REPOMD[0]] = repomd(DEFAULT_REPOMD[0], 0)
    results = await check_mirror(world.serve("staged", tree), world.options())
    assert failing(results) == set(), format_text(results)
    got = verdicts(results)
    assert (got["own-trace"], got["repomd:releases/10/smeos/x86_64"]) == (WARN, WARN)
    assert "stage 1 finished" in next(r.reason for r in results if r.name == "own-trace")


async def test_a_stage_1_never_followed_by_stage_2_fails(world: World) -> None:
    tree = ftpsync_tree(world, world.now - 5 * H)
    tree.files[f"project/trace/{MIRRORNAME}-stage1"] = trace_c(world.now - 3 * H)
    results = await check_mirror(world.serve("stuck", tree), world.options())
    assert failing(results) == {"own-trace"}, format_text(results)
    assert "stage 2 has not followed" in next(r.reason for r in results if r.name == "own-trace")


async def test_an_own_trace_of_2008_in_the_crons_locale_is_read(world: World) -> None:
    tree = Tree(good_files(world.now - 3600))
    months = ["Jan", "Feb", "Mär", "Apr", "Mai", "Jun", "Jul", "Aug", "Sep", "Okt", "Nov", "Dez"]
    t = time.gmtime(world.now - 600)
    line = f"Xx {t.tm_mday}. {months[t.tm_mon - 1]} {time.strftime('%H:%M:%S', t)} UTC {t.tm_year}"
    tree.files[OWN_TRACE] = f"{line}\nUsed ftpsync version: 42\nRunning on host: m.de\n".encode()
    results = await check_mirror(world.serve("de", tree), world.options())
    assert verdicts(results)["own-trace"] is PASS, format_text(results)


async def test_excluded_subtrees_are_info(world: World) -> None:
    tree = Tree(good_files(world.now - 3600))
    for p in ("obsolete/", "releases/testing/", SYMLINK + ".0beta1/"):
        del tree.files[p]
    opts = world.options(exclude=("obsolete/", "releases/testing/"))
    got = verdicts(await check_mirror(world.serve("partial", tree), opts))
    assert got["subtree:obsolete/"] is INFO
    assert got["subtree:releases/testing/"] is INFO
    assert got["symlink"] is INFO
    assert FAIL not in got.values()


async def test_slow_mirror_fails_response_time(world: World) -> None:
    tree = Tree(good_files(world.now - 3600), delay=0.3)
    opts = world.options(slow=0.02, very_slow=0.1)
    results = await check_mirror(world.serve("slow", tree), opts)
    assert failing(results) == {"response-time"}, format_text(results)


async def test_down_mirror_fails_and_says_why(world: World) -> None:
    async def refuse(request: web.Request, rest: str) -> web.StreamResponse:
        return web.Response(status=500, text="internal error")

    world.farm.behaviours["err"] = refuse
    results = await check_mirror(world.farm.url("err"), world.options())
    must = {"root", "master-trace", "own-trace", "subtree:releases/", "symlink"}
    assert must <= failing(results)
    assert verdicts(results)["range"] is WARN
    assert next(r.reason for r in results if r.name == "range") == "no file on the mirror to probe"


async def test_unreachable_master_is_a_warning(world: World) -> None:
    url = world.serve("good", Tree(good_files(world.now - 3600)))
    results = await check_mirror(url, world.options(master=world.farm.url("nomaster")))
    got = verdicts(results)
    assert got["master-trace"] is WARN
    assert got["symlink"] is PASS  # the mirror serves it; the master's view is not needed
    assert {got[n] for n in got if n.startswith("repomd:")} == {INFO}
    assert FAIL not in got.values()


async def test_refuses_a_url_that_is_not_a_tree_root(world: World) -> None:
    with pytest.raises(ValueError, match="not a http or https URL"):
        await check_mirror("ftp://127.0.0.1/smeserver/", world.options())
    with pytest.raises(ValueError, match="at most 3"):
        await check_mirror(world.farm.url("x"), world.options(repomd_paths=("a",) * 4))
    assert world.farm.hits == []  # refused before any request


# --- HTTPS and IPv6: extra loopback listeners in front of the same trees ------------------------


def make_cert(tmp: Path, name: str, san: str) -> tuple[Path, Path]:
    """A self-signed certificate (its own CA) for `san`, valid 90 days."""
    cert, key = tmp / f"{name}.pem", tmp / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "90",
         "-subj", f"/CN={name}", "-addext", f"subjectAltName={san}"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


@dataclass
class Listener:
    base: str
    runner: web.AppRunner


@asynccontextmanager
async def listen(
    farm: Farm, host: str, context: ssl.SSLContext | None = None
) -> AsyncIterator[Listener]:
    """Another loopback listener dispatching to the farm's behaviours by path prefix."""

    async def handle(request: web.Request) -> web.StreamResponse:
        name, _, rest = request.match_info["tail"].partition("/")
        behaviour = farm.behaviours.get(name)
        if behaviour is None:
            return web.Response(status=404)
        return await behaviour(request, rest)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=context)
    await site.start()
    server = site._server  # aiohttp exposes the bound port only through the server
    assert isinstance(server, asyncio.Server)
    port = server.sockets[0].getsockname()[1]
    scheme = "https" if context else "http"
    shown = f"[{host}]" if ":" in host else host
    try:
        yield Listener(f"{scheme}://{shown}:{port}/", runner)
    finally:
        await runner.cleanup()


@pytest.fixture
async def tls(world: World, tmp_path: Path) -> AsyncIterator[tuple[Listener, Path, Path]]:
    cert, key = make_cert(tmp_path, "loopback", f"IP:{HOST},DNS:localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    world.serve("good", Tree(good_files(world.now - 3600)))
    async with listen(world.farm, HOST, ctx) as lst:
        yield lst, cert, tmp_path


async def test_https_self_signed_fails_only_https(
    world: World, tls: tuple[Listener, Path, Path]
) -> None:
    lst, _, _ = tls
    results = await check_mirror(lst.base + "good/", world.options())
    assert failing(results) == {"https"}, format_text(results)
    reason = next(r.reason for r in results if r.name == "https")
    assert "certificate not valid" in reason
    assert "the other checks ran without verifying it" in reason


async def test_https_good_with_ca_file(world: World, tls: tuple[Listener, Path, Path]) -> None:
    lst, cert, _ = tls
    results = await check_mirror(lst.base + "good/", world.options(ca_file=str(cert)))
    got = verdicts(results)
    assert set(got.values()) <= {PASS, INFO}, format_text(results)
    assert got["https"] is PASS
    assert "valid until" in next(r.reason for r in results if r.name == "https")


async def test_https_wrong_name_fails(world: World, tls: tuple[Listener, Path, Path]) -> None:
    _, _, tmp = tls
    other, key = make_cert(tmp, "other", "DNS:other.test")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(other, key)
    async with listen(world.farm, HOST, ctx) as wrong:
        results = await check_mirror(wrong.base + "good/", world.options(ca_file=str(other)))
        assert failing(results) == {"https"}, format_text(results)
        assert "certificate not valid" in next(r.reason for r in results if r.name == "https")


async def test_ipv6_loopback_mirror(world: World) -> None:
    world.serve("good", Tree(good_files(world.now - 3600)))
    async with listen(world.farm, "::1") as v6:
        # The own trace is named after the host by default; this tree names it 127.0.0.1.
        results = await check_mirror(v6.base + "good/", world.options(trace_name=HOST))
        got = verdicts(results)
        assert got["ipv6"] is PASS, format_text(results)
        assert set(got.values()) <= {PASS, INFO}


async def test_resolve_aaaa_of_loopback_names() -> None:
    assert await resolve_aaaa("::1") == ("::1",)
    # Whether /etc/hosts gives localhost an AAAA differs between machines; either way the
    # answer is loopback only and the check never fails on it.
    for addr in await resolve_aaaa("localhost"):
        assert addr == "::1"
    assert judge_ipv6("localhost", await resolve_aaaa("localhost"), None).verdict in {PASS, INFO}


# --- the command ---------------------------------------------------------------------------


async def cli(*args: str) -> tuple[int, str, str]:
    """`redirector check-mirror ...` as a subprocess, without blocking the farm's loop."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "redirector.cli", "check-mirror", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 50)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def check_lines(out: str) -> dict[str, str]:
    """name -> verdict, from the lines that start with a verdict."""
    rows = [line.split(None, 2) for line in out.splitlines()]
    return {r[1]: r[0] for r in rows if r and r[0] in {v.value for v in Verdict}}


async def test_cli_good_mirror_exit_0(world: World) -> None:
    url = world.serve("good", Tree(good_files(world.now - 3600)))
    code, out, err = await cli(url, "--master", world.farm.url("master"))
    assert code == 0, out + err
    lines = check_lines(out)
    assert len(lines) == 16
    assert set(lines.values()) <= {"PASS", "INFO"}, out
    assert "16 checks: " in out.splitlines()[-1]


async def test_cli_broken_mirror_exit_1_and_json(world: World) -> None:
    tree = Tree(good_files(world.now - 3600), ranges=False)
    del tree.files["contribs/"]
    url = world.serve("broken", tree)
    code, out, _ = await cli(url, "--master", world.farm.url("master"))
    assert code == 1
    assert {n for n, v in check_lines(out).items() if v == "FAIL"} == {
        "subtree:contribs/",
        "range",
    }
    code, out, _ = await cli(url, "--master", world.farm.url("master"), "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False
    assert doc["url"] == url
    assert doc["counts"]["FAIL"] == 2
    assert {c["name"] for c in doc["checks"] if c["verdict"] == "FAIL"} == {
        "subtree:contribs/",
        "range",
    }


async def test_cli_options(world: World, tmp_path: Path) -> None:
    tree = Tree(good_files(world.now - 3600))
    tree.files["releases/11/smeos/x86_64/repodata/repomd.xml"] = b"<repomd>11</repomd>"
    tree.links = {"releases/latest": "releases/10"}
    tree.files["releases/10/"] = listing("smeos/")
    world.farm.behaviours["master"] = tree
    url = world.serve("good", tree)
    code, out, err = await cli(
        url, "--master", world.farm.url("master"), "--symlink-path", "/releases/latest/",
        "--repomd", "releases/11/smeos/x86_64", "--exclude", "obsolete", "--timeout", "5s",
    )  # fmt: skip
    assert code == 0, out + err
    lines = check_lines(out)
    assert lines["symlink"] == "PASS"
    assert lines["repomd:releases/11/smeos/x86_64"] == "PASS"
    assert not any(n.startswith("repomd:releases/10") for n in lines)


async def test_cli_with_config_and_mirror(world: World, tmp_path: Path) -> None:
    tree = Tree(good_files(world.now - 3600))
    tree.files["project/trace/ftp.example.org"] = tree.files.pop(OWN_TRACE)
    del tree.files["obsolete/"]
    url = world.serve("cfg", tree)
    config = tmp_path / "m.toml"
    config.write_text(
        f'[redirector]\nmaster = "{world.farm.url("master")}"\nprobe_timeout = "5s"\n'
        f'[[mirror]]\nname = "cand"\nhttp = "{url}"\ncountry = "NL"\nlatitude = 52.0\n'
        f'longitude = 5.0\ntrace_name = "ftp.example.org"\nexclude = ["obsolete/"]\n'
    )
    code, out, err = await cli(url, "--config", str(config), "--mirror", "cand")
    assert code == 0, out + err
    assert check_lines(out)["subtree:obsolete/"] == "INFO"
    assert check_lines(out)["own-trace"] == "PASS"


@pytest.mark.parametrize(
    "args",
    [
        ["ftp://127.0.0.1/smeserver/"],
        ["http://127.0.0.1:1/", "--repomd", "a", "--repomd", "b", "--repomd", "c", "--repomd", "d"],
        ["http://127.0.0.1:1/", "--ca-file", "/nonexistent/ca.pem"],
        ["http://127.0.0.1:1/", "--symlink-path", "../etc/"],
        ["http://127.0.0.1:1/", "--timeout", "soon"],
        ["http://127.0.0.1:1/", "--mirror", "x"],
        [],
    ],
)
async def test_cli_usage_errors_exit_2(args: list[str]) -> None:
    code, out, err = await cli(*args)
    assert code == 2, out + err
    assert "Traceback" not in err


# --- the pure judges -------------------------------------------------------------------------

NOW = 1_750_000_000.0


def ans(status: int | None, body: bytes = b"", error: str | None = None) -> Answer:
    return Answer("http://m.test/x", status, body, None, error, 0.01)


def test_judge_root() -> None:
    assert judge_root(ans(200)).verdict is PASS
    assert judge_root(ans(403)).verdict is WARN
    assert judge_root(ans(404)).verdict is FAIL
    assert judge_root(ans(None, error="cannot connect: refused")).verdict is FAIL
    assert judge_root(ans(None, error="body exceeds 262144 bytes")).verdict is WARN


@pytest.mark.parametrize(
    ("held", "master", "verdict", "words"),
    [
        (NOW - 3 * H, NOW - 3 * H, PASS, "current state"),
        (NOW - 1 * H, NOW - 3 * H, PASS, "current state"),  # newer than our master view
        (NOW - 9 * H, NOW - 2 * H, PASS, "within the limit"),
        (NOW - 30 * H, NOW - 9 * H, FAIL, "too far behind"),
        (NOW + 2 * H, NOW - 2 * H, FAIL, "in the future"),
    ],
)
def test_judge_master_trace(held: float, master: float, verdict: Verdict, words: str) -> None:
    r = judge_master_trace(ans(200, trace_c(held)), ans(200, trace_c(master)), NOW, 8 * H, "t")
    assert r.verdict is verdict
    assert words in r.reason


def test_judge_master_trace_faults() -> None:
    good = ans(200, trace_c(NOW))
    assert judge_master_trace(ans(404), good, NOW, 8 * H, "t").verdict is FAIL
    assert "tree root" in judge_master_trace(ans(404), good, NOW, 8 * H, "t").reason
    html = ans(200, b"<html>nope</html>")
    assert "not a trace" in judge_master_trace(html, good, NOW, 8 * H, "t").reason
    assert judge_master_trace(good, ans(None, error="x"), NOW, 8 * H, "t").verdict is WARN


def test_judge_own_trace() -> None:
    copy = ans(200, trace_c(NOW - 2 * H))
    ok = judge_own_trace(ans(200, trace_c(NOW - H, upstream="up.test")), copy, "p/t/m", NOW)
    assert ok.verdict is PASS
    assert "1h00m ago" in ok.reason
    assert "Upstream-mirror: up.test" in ok.reason
    assert judge_own_trace(ans(200, trace_c(NOW - 3 * H)), copy, "p", NOW).verdict is FAIL
    assert "--trace-name" in judge_own_trace(ans(404), copy, "p", NOW).reason
    # No readable master copy: nothing to compare with, the own trace alone decides.
    assert judge_own_trace(ans(200, trace_c(NOW - 3 * H)), ans(404), "p", NOW).verdict is PASS


def test_judge_sync() -> None:
    lock = "Archive-Update-in-Progress-m.test"
    assert judge_sync(ans(200, listing("releases/")), ans(404), lock).verdict is PASS
    listed = ans(200, listing("Archive-Update-in-Progress-other.test"))
    r = judge_sync(listed, ans(404), lock)
    assert r.verdict is WARN
    assert "other.test" in r.reason
    assert judge_sync(ans(403), ans(200), lock).verdict is WARN
    assert "not listable" in judge_sync(ans(403), ans(404), lock).reason


def test_judge_subtree() -> None:
    assert judge_subtree("contribs/", ans(200), False).verdict is PASS
    assert judge_subtree("contribs/", ans(404), False).verdict is FAIL
    assert judge_subtree("obsolete/", ans(404), False).verdict is WARN
    assert judge_subtree("contribs/", ans(404), True).verdict is INFO
    assert judge_subtree("contribs/", ans(403), False).verdict is WARN
    assert judge_subtree("contribs/", ans(None, error="timed out"), False).verdict is FAIL


def test_judge_symlink() -> None:
    p = "releases/testing/11/"
    assert judge_symlink(p, ans(200), ans(200), False).verdict is PASS
    assert judge_symlink(p, ans(403), ans(200), False).verdict is FAIL
    assert judge_symlink(p, ans(404), ans(200), False).verdict is FAIL
    r = judge_symlink(p, ans(404), ans(404), False)
    assert r.verdict is WARN
    assert "--symlink-path" in r.reason
    assert judge_symlink(p, ans(404), ans(200), True).verdict is INFO


def test_judge_repomd() -> None:
    p = "releases/10/smeos/x86_64/repodata/repomd.xml"
    a, b = ans(200, b"<repomd>1</repomd>"), ans(200, b"<repomd>2</repomd>")
    assert judge_repomd(p, a, a, "current", False).verdict is PASS
    assert judge_repomd(p, a, a, "current", False).name == "repomd:releases/10/smeos/x86_64"
    assert judge_repomd(p, a, b, "current", False).verdict is FAIL
    assert judge_repomd(p, a, b, "unknown", False).verdict is FAIL
    assert judge_repomd(p, a, b, "behind", False).verdict is WARN
    assert judge_repomd(p, ans(404), b, "current", False).verdict is FAIL
    assert judge_repomd(p, a, ans(404), "current", False).verdict is INFO
    assert judge_repomd(p, a, ans(None, error="down"), "current", False).verdict is WARN
    assert judge_repomd(p, ans(404), b, "current", True).verdict is INFO


def test_judge_https() -> None:
    assert judge_https("http", None, None, NOW).verdict is INFO
    assert judge_https("https", "certificate not valid: self-signed", None, NOW).verdict is FAIL
    assert judge_https("https", None, NOW + 90 * 86400, NOW).verdict is PASS
    assert judge_https("https", None, NOW + 3 * 86400, NOW).verdict is WARN


def test_judge_ipv6_never_fails() -> None:
    assert judge_ipv6("::1", None, None).verdict is PASS
    assert judge_ipv6("127.0.0.1", None, None).verdict is INFO
    assert judge_ipv6("m.test", ("2001:db8::1",), None).verdict is PASS
    assert judge_ipv6("m.test", (), None).verdict is INFO
    assert judge_ipv6("m.test", None, "timed out").verdict is WARN


def test_judge_range() -> None:
    assert judge_range(ans(206, b"x")).verdict is PASS
    assert judge_range(ans(200, b"whole file")).verdict is FAIL
    assert judge_range(ans(206, b"xyz")).verdict is FAIL
    assert judge_range(ans(416)).verdict is FAIL
    assert judge_range(None).verdict is WARN


def test_judge_response_time() -> None:
    assert judge_response_time([0.1, 0.2, 0.3], 1.0, 5.0).verdict is PASS
    assert judge_response_time([1.5, 2.0, 0.1], 1.0, 5.0).verdict is WARN
    assert judge_response_time([6.0, 7.0], 1.0, 5.0).verdict is FAIL
    assert judge_response_time([], 1.0, 5.0).verdict is FAIL


def test_output_formats() -> None:
    results = [CheckResult("root", PASS, "HTTP 200"), CheckResult("range", FAIL, "ignored")]
    text = format_text(results)
    assert text.splitlines()[0] == "PASS  root   HTTP 200"
    assert text.splitlines()[-1] == "2 checks: 1 PASS, 0 INFO, 0 WARN, 1 FAIL"
    doc: Mapping[str, object] = to_json("http://m/", "http://master/", results)
    assert doc["ok"] is False
    assert doc["checks"] == [
        {"name": "root", "verdict": "PASS", "reason": "HTTP 200"},
        {"name": "range", "verdict": "FAIL", "reason": "ignored"},
    ]
