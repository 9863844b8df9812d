"""deploy/: nginx -t, systemd-analyze verify, the real nginx front on loopback, the operator CLI.

The nginx test runs Debian's nginx with the shipped site file, rendered only where a test
must differ (loopback ports, a certificate made here, temp paths), in front of a redirector
app; clients connect with curl from other loopback addresses, using the production names.
"""

from __future__ import annotations

import asyncio
import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from redirector.cli.main import build_parser
from redirector.config.settings import load_settings
from redirector.core.models import MirrorState, Status
from redirector.store.redis import RedisStore
from redirector.web import accesslog
from redirector.web.app import create_app
from tests.conftest import RedisServer, free_port
from tests.support import ROOT
from tests.support.world import FRONT, NL_CLIENT, city_db, fresh_store, mirror_url

DEPLOY = ROOT / "deploy"
SITE = DEPLOY / "nginx" / "redirector.conf"
UNITS = DEPLOY / "systemd"
NAMES = ("mirror.contribs.org", "mirrorlist.koozali.org", "mirrorlist.contribs.org")
EXEC = "/opt/redirector/bin/redirector"
GEOIPUPDATE = "/usr/bin/geoipupdate"
CONFIG = "/etc/redirector/mirrors.toml"
PATH = "/smeserver/releases/10/smeos/x86_64/repodata/repomd.xml"


def need(tool: str) -> str:
    path = shutil.which(tool) or next(
        (p for p in (f"/usr/sbin/{tool}", f"/sbin/{tool}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        # Never skipped: dev/test.sh installs nginx, openssl, curl and systemd.
        pytest.fail(f"{tool} is not installed: run dev/test.sh, which installs it")
    return path


# --- nginx ---------------------------------------------------------------------------------------


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the three names, as fullchain.pem and privkey.pem."""
    cert, key = directory / "fullchain.pem", directory / "privkey.pem"
    subprocess.run(
        [need("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", f"/CN={NAMES[0]}",
         "-addext", "subjectAltName=" + ",".join(f"DNS:{n}" for n in NAMES),
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def substitute(text: str, replacements: dict[str, str]) -> str:
    """Replace each key, which must occur in the shipped text (so the test follows the file)."""
    for old, new in replacements.items():
        assert old in text, f"the shipped nginx site no longer contains {old!r}"
        text = text.replace(old, new)
    return text


def main_conf(work: Path, site: Path) -> Path:
    """A minimal nginx.conf around the site file, everything under `work`."""
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (work / d).mkdir(exist_ok=True)
    conf = work / "nginx.conf"
    conf.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"""worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log info;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    include {site};
}}
"""
    )
    return conf


def nginx_test(conf: Path, work: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need("nginx"), "-t", "-p", str(work), "-c", str(conf), "-e", str(work / "error.log")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.mark.system
def test_nginx_t_accepts_the_shipped_site(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    # As shipped, ports, IPv6 and all: only the certificate paths point at the test's pair.
    site = tmp_path / "redirector.conf"
    site.write_text(
        substitute(
            SITE.read_text(),
            {
                "/etc/ssl/redirector/fullchain.pem": str(cert),
                "/etc/ssl/redirector/privkey.pem": str(key),
            },
        )
    )
    r = nginx_test(main_conf(tmp_path, site), tmp_path)
    assert r.returncode == 0, r.stderr
    assert "test is successful" in r.stderr
    # And a broken copy is refused, so the check above means something.
    site.write_text(site.read_text().replace("proxy_pass http://redirector;", "proxy_pass ;"))
    assert nginx_test(main_conf(tmp_path, site), tmp_path).returncode != 0


def test_the_site_serves_every_name_and_passes_the_client() -> None:
    text = SITE.read_text()
    server_names = re.findall(r"^\s*server_name\s+([^;]+);", text, re.M)
    assert [set(s.split()) for s in server_names] == [set(NAMES)]
    for listen in ("listen 80 ", "listen [::]:80 ", "listen 443 ssl", "listen [::]:443 ssl"):
        assert listen in text
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in text
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in text
    assert "proxy_redirect off;" in text
    # Plain http must answer: no redirect to https anywhere.
    assert "return 301" not in text
    assert "return 308" not in text


@dataclass
class Front:
    http: int
    https: int
    cert: Path
    log: Path  # the redirector's access log


def text_of(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def _wait_port(port: int, proc: asyncio.subprocess.Process, err: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        assert proc.returncode is None, text_of(err)
        assert time.monotonic() < deadline, text_of(err)
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        w.close()
        await w.wait_closed()
        return


@pytest.fixture
async def front(tmp_path: Path) -> AsyncIterator[Front]:
    """nginx (the shipped site) on loopback before a redirector app with fresh nl and us."""
    db = city_db(tmp_path / "city.mmdb")
    log = tmp_path / "access.log"
    cfg = tmp_path / "mirrors.toml"
    # Trusted: nginx (127.0.0.1) and, as a load balancer in front of it would be, 127.0.0.2.
    cfg.write_text(
        FRONT.config_text(
            ["nl", "us"], extra=f'geoip_db = "{db}"\naccess_log_path = "{log}"'
        ).replace('["127.0.0.1/32", "::1/128"]', '["127.0.0.1/32", "127.0.0.2/32"]')
    )
    settings = load_settings(cfg)
    app = create_app(settings, poll=False, store=await fresh_store(["nl", "us"]))
    runner = web.AppRunner(app, **accesslog.runner_kwargs(settings))
    await runner.setup()
    upstream = free_port()
    await web.TCPSite(runner, "127.0.0.1", upstream).start()

    cert, key = make_certificate(tmp_path)
    acme = tmp_path / "acme"
    (acme / ".well-known" / "acme-challenge").mkdir(parents=True)
    (acme / ".well-known" / "acme-challenge" / "token").write_text("proof\n")
    http, https = free_port(), free_port()
    site = tmp_path / "redirector.conf"
    site.write_text(
        substitute(
            SITE.read_text(),
            {
                "listen 80 default_server;": f"listen 127.0.0.1:{http} default_server;",
                "listen [::]:80 default_server;": "",
                "listen 443 ssl http2 default_server;": (
                    f"listen 127.0.0.1:{https} ssl http2 default_server;"
                ),
                "listen [::]:443 ssl http2 default_server;": "",
                "/etc/ssl/redirector/fullchain.pem": str(cert),
                "/etc/ssl/redirector/privkey.pem": str(key),
                "server 127.0.0.1:8080;": f"server 127.0.0.1:{upstream};",
                "root /var/www/letsencrypt;": f"root {acme};",
            },
        )
    )
    conf = main_conf(tmp_path, site)
    assert nginx_test(conf, tmp_path).returncode == 0
    err = tmp_path / "error.log"
    proc = await asyncio.create_subprocess_exec(
        need("nginx"), "-p", str(tmp_path), "-c", str(conf), "-e", str(err),
        "-g", "daemon off;",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await _wait_port(http, proc, err)
        await _wait_port(https, proc, err)
        yield Front(http, https, cert, log)
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)
        await runner.cleanup()
        accesslog.close()


async def curl(
    front: Front,
    url_path: str,
    *,
    name: str = NAMES[0],
    https: bool = False,
    source: str = "127.0.0.3",
    headers: tuple[str, ...] = (),
) -> tuple[int, str]:
    """curl as a client at `source` asking `name`; (status, Location). No DNS: --resolve."""
    port = front.https if https else front.http
    url = f"{'https' if https else 'http'}://{name}:{port}{url_path}"
    args = [
        need("curl"), "-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
        "--noproxy", "*", "--max-time", "10", "--interface", source,
        "--resolve", f"{name}:{port}:127.0.0.1", "--cacert", str(front.cert),
    ]  # fmt: skip
    for h in headers:
        args += ["-H", h]
    proc = await asyncio.create_subprocess_exec(
        *args, url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, errs = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, f"curl {url}: exit {proc.returncode}: {errs.decode()}"
    status, _, location = out.decode().partition(" ")
    return int(status), location


async def log_lines(log: Path, n: int) -> list[str]:
    deadline = time.monotonic() + 10
    while True:
        lines = text_of(log).splitlines()
        if len(lines) >= n:
            return lines
        assert time.monotonic() < deadline, lines
        await asyncio.sleep(0.02)


@pytest.mark.system
async def test_nginx_front_passes_client_and_scheme(front: Front) -> None:
    tail = PATH.removeprefix("/smeserver/")
    # Through a trusted balancer (127.0.0.2) that says the client is in the Netherlands: over
    # http the NL mirror's http URL, over https (TLS ended by nginx) its https URL.
    lb = (f"X-Forwarded-For: {NL_CLIENT}",)
    assert await curl(front, PATH, source="127.0.0.2", headers=lb) == (
        302,
        mirror_url("nl") + tail,
    )
    assert await curl(front, PATH, source="127.0.0.2", headers=lb, https=True) == (
        302,
        mirror_url("nl", "https") + tail,
    )
    # A client connecting directly cannot pick its address or scheme: nginx appends the real
    # peer, which the redirector does not trust, and replaces X-Forwarded-Proto.
    status, _ = await curl(
        front,
        PATH,
        source="127.0.0.3",
        headers=(f"X-Forwarded-For: {NL_CLIENT}", "X-Forwarded-Proto: https"),
    )
    assert status == 302

    lines = await log_lines(front.log, 3)
    # nginx passes Host without the port ($host).
    assert f' {NL_CLIENT} NL http {NAMES[0]} "GET {PATH}" 302 nl ' in lines[0]
    assert f' {NL_CLIENT} NL https {NAMES[0]} "GET {PATH}" 302 nl ' in lines[1]
    assert f' 127.0.0.3 - http {NAMES[0]} "GET {PATH}" 302 ' in lines[2]


@pytest.mark.system
async def test_nginx_front_answers_every_name_over_http_and_https(front: Front) -> None:
    for name in NAMES:
        for https in (False, True):
            status, location = await curl(front, PATH, name=name, https=https)
            assert status == 302, (name, https)
            scheme = "https" if https else "http"
            assert location.startswith(f"{scheme}://"), (name, https, location)
    # The redirector's other answers pass through unchanged.
    assert (await curl(front, "/nothing-here"))[0] == 404
    assert (await curl(front, "/smeserver/%2e%2e/etc/passwd"))[0] == 400
    # Let's Encrypt's challenge is served by nginx itself.
    assert (await curl(front, "/.well-known/acme-challenge/token"))[0] == 200
    # Header limits: an 10 kB header is refused by nginx, never reaching the redirector.
    status, _ = await curl(front, PATH, headers=("X-Junk: " + "a" * 10_000,))
    assert status in (400, 431, 494)


# --- systemd -------------------------------------------------------------------------------------


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string((UNITS / name).read_text())
    return parser


@pytest.mark.system
def test_units_verify(tmp_path: Path) -> None:
    """systemd-analyze verify on the shipped units, the binaries they start pointed at a stub."""
    stub = tmp_path / "bin" / "stub"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    rendered = []
    for src in sorted(UNITS.iterdir()):
        text = src.read_text()
        assert EXEC in text or GEOIPUPDATE in text or src.suffix == ".timer", src.name
        dst = tmp_path / src.name
        dst.write_text(text.replace(EXEC, str(stub)).replace(GEOIPUPDATE, str(stub)))
        rendered.append(dst)
    assert [p.name for p in rendered] == [
        "geoipupdate.service",
        "geoipupdate.timer",
        "redirector-poller.service",
        "redirector.service",
    ]
    r = subprocess.run(
        [need("systemd-analyze"), "verify", "--man=no", *map(str, rendered)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    # Warnings (an unknown key, say) do not fail verify; about our units, there must be none.
    ours = [line for line in r.stderr.splitlines() if str(tmp_path) in line or ".service" in line]
    assert ours == []
    # A broken copy is caught, so the check above means something.
    bad = tmp_path / "bad" / "redirector.service"
    bad.parent.mkdir()
    bad.write_text(rendered[-1].read_text().replace(str(stub), "/nonexistent/redirector"))
    r = subprocess.run(
        [need("systemd-analyze"), "verify", "--man=no", str(bad)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode != 0
    # And so is a misspelt key, which verify only warns about.
    bad.write_text(rendered[-1].read_text().replace("RestartSec=", "RestartSecs="))
    r = subprocess.run(
        [need("systemd-analyze"), "verify", "--man=no", str(bad)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "Unknown key 'RestartSecs'" in r.stderr


def test_units_run_the_real_commands() -> None:
    """The units' command lines parse with the real CLI, and reload is SIGHUP."""
    web_unit, poller = unit("redirector.service"), unit("redirector-poller.service")
    env = dict(
        line.split("=", 1)
        for line in (DEPLOY / "redirector.default").read_text().splitlines()
        if line and not line.startswith("#")
    )
    opts = shlex.split(env["REDIRECTOR_SERVE_OPTS"])
    assert opts == ["--no-poll"]
    assert web_unit["Service"]["EnvironmentFile"] == "-/etc/default/redirector"
    for u, extra in ((web_unit, opts), (poller, [])):
        s = u["Service"]
        argv = shlex.split(s["ExecStart"].replace("$REDIRECTOR_SERVE_OPTS", ""))
        assert argv[0] == EXEC
        args = build_parser().parse_args(argv[1:] + extra)
        assert args.config == CONFIG
        assert s["ExecReload"] == "/bin/kill -HUP $MAINPID"
        assert s["RestartPreventExitStatus"] == "2"  # a config error: restarting won't help
        assert s["DynamicUser"] == "yes"
        assert u["Install"]["WantedBy"] == "multi-user.target"
    assert shlex.split(web_unit["Service"]["ExecStart"])[1] == "serve"
    assert build_parser().parse_args(["serve", *opts]).no_poll
    assert shlex.split(poller["Service"]["ExecStart"])[1] == "poll"


def test_units_check_the_config_before_every_start(tmp_path: Path) -> None:
    """A broken config refuses the start, with file, line and field on stderr (the journal);
    journald's rate limit is off, so access lines in the journal are not dropped under load."""
    for name in ("redirector.service", "redirector-poller.service"):
        s = unit(name)["Service"]
        assert s["LogRateLimitIntervalSec"] == "0"
        pre = shlex.split(s["ExecStartPre"])
        assert pre == [EXEC, "check-config", CONFIG]
        assert build_parser().parse_args(pre[1:]).file == CONFIG
    bad = tmp_path / "mirrors.toml"
    bad.write_text(FRONT.config_text(["nl"]).replace("latitude = 52.37", "latitude = 152.37"))
    pre[0:1] = [sys.executable, "-m", "redirector.cli"]
    pre[-1] = str(bad)
    r = subprocess.run(pre, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2  # the unit's start fails here: serve never runs on this file
    line = next(i for i, text in enumerate(bad.read_text().splitlines(), 1) if "152.37" in text)
    assert f"{bad}:{line}: mirror 'nl' field 'latitude'" in r.stderr
    good = tmp_path / "good.toml"
    good.write_text(FRONT.config_text(["nl"]))
    pre[-1] = str(good)
    assert subprocess.run(pre, capture_output=True, timeout=60, check=False).returncode == 0


def test_the_container_listens_where_a_port_mapping_reaches() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    cmd = json.loads(re.search(r"^CMD\s+(.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    args = build_parser().parse_args(cmd)
    assert args.listen == "0.0.0.0:8080"
    assert re.search(r"^EXPOSE\s+8080$", text, re.M)


# --- the container and the production config ----------------------------------------------


def test_containerfile_copies_what_exists() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    copies = re.findall(r"^COPY\s+(.+)$", text, re.M)
    assert copies
    for line in copies:
        *sources, _dest = line.split()
        for src in sources:
            assert (ROOT / src).exists(), src
    assert f"COPY deploy/mirrors.toml {CONFIG}" in text
    cmd = json.loads(re.search(r"^CMD\s+(.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    entry = json.loads(re.search(r"^ENTRYPOINT\s+(.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert entry == ["redirector"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "redirector" in pyproject["project"]["scripts"]
    assert build_parser().parse_args(cmd).config == CONFIG
    assert re.search(r"^USER\s+\d+", text, re.M)  # never root


def test_production_config_is_valid_and_lists_the_example_mirrors() -> None:
    prod = load_settings(DEPLOY / "mirrors.toml")
    example = load_settings(ROOT / "examples" / "mirrors.toml")
    assert prod.mirrors == example.mirrors
    assert (prod.listen_host, prod.listen_port) == ("127.0.0.1", 8080)
    assert prod.redis_url == "redis://127.0.0.1:6379/0"
    assert prod.geoip_db == Path("/var/lib/GeoIP/GeoLite2-City.mmdb")
    assert [str(n) for n in prod.trusted_proxies] == ["127.0.0.1/32", "::1/128"]
    # nginx proxies to where the config listens.
    assert f"server {prod.listen_host}:{prod.listen_port};" in SITE.read_text()


def test_readme_walks_through_deploy_only() -> None:
    readme = (ROOT / "docs" / "deploying.md").read_text()
    m = re.search(r"^## Deployment\n(.*?)(?=^## )", readme, re.M | re.S)
    assert m is not None, "docs/deploying.md has no '## Deployment' section"
    section = m.group(1)
    mentioned = set(re.findall(r"\bdeploy/[\w./-]*\w", section))
    assert mentioned >= {
        "deploy/nginx/redirector.conf",
        "deploy/systemd/redirector.service",
        "deploy/systemd/redirector-poller.service",
        "deploy/redirector.default",
        "deploy/mirrors.toml",
    }
    for path in mentioned:
        assert (ROOT / path).exists(), path
    for installed in (CONFIG, "/etc/default/redirector", "/etc/nginx/sites-available/redirector",
                      "/etc/systemd/system/", EXEC.removesuffix("/bin/redirector")):  # fmt: skip
        assert installed in section, installed


# --- `redirector mirrors` ------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redirector.cli", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture
def redis_config(tmp_path: Path, redis_url: str) -> Path:
    cfg = tmp_path / "mirrors.toml"
    cfg.write_text(FRONT.config_text(["nl", "us", "au"], extra=f'redis_url = "{redis_url}"'))
    return cfg


async def test_mirrors_command_prints_the_state_from_redis(
    redis_config: Path, redis_server: RedisServer
) -> None:
    store = RedisStore(redis_server.url)
    try:
        await fresh_store(["nl", "us"], store)
        now = time.time()
        await store.put_states(
            [MirrorState("au", Status.DOWN, now, error="cannot connect: refused", failures=3)]
        )
    finally:
        await store.close()
    r = await asyncio.to_thread(run_cli, "mirrors", "--config", str(redis_config))
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines() if line.strip()}
    assert rows["NAME"][:5] == ["NAME", "STATE", "LAG", "CHECKED", "FAILS"]
    assert rows["nl"][1] == "fresh"
    assert rows["au"][1] == "down"
    assert "cannot connect: refused" in r.stdout
    assert "2 of 3 mirrors fresh" in r.stdout


async def test_mirrors_command_exit_codes(
    redis_config: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    # Nothing known yet (no poller has written): no mirror fresh -> 1.
    r = await asyncio.to_thread(run_cli, "mirrors", "--config", str(redis_config))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "0 of 3 mirrors fresh" in r.stdout
    # Redis unreachable -> 1, with the reason.
    down = tmp_path / "down.toml"
    down.write_text(
        FRONT.config_text(["nl"], extra=f'redis_url = "redis://127.0.0.1:{free_port()}/0"')
    )
    r = await asyncio.to_thread(run_cli, "mirrors", "--config", str(down))
    assert r.returncode == 1
    assert "store unreachable" in r.stderr
    # No Redis in the config: the state is inside the serving process -> 1.
    plain = tmp_path / "plain.toml"
    plain.write_text(FRONT.config_text(["nl"]))
    r = await asyncio.to_thread(run_cli, "mirrors", "--config", str(plain))
    assert r.returncode == 1
    assert "no redis_url" in r.stderr
    # A broken config -> 2, as for every command.
    bad = tmp_path / "bad.toml"
    bad.write_text("[redirector]\n")
    r = await asyncio.to_thread(run_cli, "mirrors", "--config", str(bad))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
