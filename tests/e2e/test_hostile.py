"""Hostile requests: property tests (hypothesis) and a fuzz run over paths, queries and headers.

Against the real thing over real sockets: a `redirector serve` process (its runner, request
limits and logging as deployed) with state in Redis, and an in-process app whose per-file HEAD
check reaches loopback mirrors. For every answer: never a 5xx, never a traceback in a body,
never a Location outside a configured mirror's or the master's base URL. Raw request lines go
out through tests/farm.py's `raw_get`; structured ones through aiohttp's test client.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit

import pytest
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from redirector.config.settings import ConfigError, parse_settings
from redirector.core.clientip import ProxyTrust, parse_ip
from redirector.core.models import MasterState, MasterVersion, MirrorState, Status
from redirector.core.paths import BadPath, tree_path
from redirector.store.memory import MemoryStore
from redirector.store.redis import RedisStore
from redirector.web.app import create_app
from redirector.web.limits import HTTP_LIMITS, SERVER_LOGGER, QuietBadRequests, quiet_bad_requests
from tests.conftest import RedisServer, free_port
from tests.farm import Farm, raw_get, status_of
from tests.mmdb_build import CityRecord
from tests.support.world import NETWORKS, city_db, fresh_store

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]

MASTER = "http://master.example/smeserver/"
PLACES = {"nl": ("NL", 52.37, 4.90), "us": ("US", 35.91, -79.05), "au": ("AU", -37.81, 144.96)}
TRACEBACK = re.compile(rb"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+")
EXAMPLES = 150  # per property test: a few seconds each against a real socket


def mirror_bases(name: str) -> tuple[str, str]:
    return f"http://{name}.example/sme/", f"https://{name}.example/sme/"


def config_text(extra: str, bases: dict[str, tuple[str, str]], master: str = MASTER) -> str:
    out = [
        "[redirector]",
        f'master = "{master}"',
        'trusted_proxies = ["127.0.0.1/32", "::1/128"]',
        extra,
        "",
    ]
    for name, (http, https) in bases.items():
        cc, lat, lon = PLACES[name]
        out += [
            "[[mirror]]",
            f'name = "{name}"',
            f'http = "{http}"',
            f'https = "{https}"',
            f'country = "{cc}"',
            f"latitude = {lat}",
            f"longitude = {lon}",
            "ipv6 = true",
            "",
        ]
    return "\n".join(out)


def geo_db(path: Path) -> Path:
    # Link-local too: a located fe80:: address must still not be trusted or echoed.
    return city_db(path, {**NETWORKS, "fe80::/10": CityRecord("US", "NA", 35.91, -79.05)})


# --- what every answer must be ---------------------------------------------------------------


def location_allowed(location: str, bases: Sequence[str]) -> bool:
    """`location` lies under one of `bases`, as a client's own URL parser will read it.

    The same scheme, host and port as the base, the base's path as a prefix, and below it
    nothing that climbs out: no '..' or '.' segment (raw or encoded), no backslash (browsers
    read it as '/'), no leading '/' (which would make '//host' after some bases).
    """
    for base in bases:
        if not location.startswith(base):
            continue
        rest = location[len(base) :]
        if rest.startswith("/") or "\\" in rest or re.search(r"[\x00-\x20\x7f]", rest):
            return False
        segments = unquote(rest.split("?", 1)[0]).split("/")
        if any(s in (".", "..") for s in segments):
            return False
        ours, theirs = urlsplit(location), urlsplit(base)
        if (ours.scheme, ours.netloc) != (theirs.scheme, theirs.netloc):
            return False
        parsed = URL(location, encoded=True)
        return (parsed.scheme, parsed.host, parsed.port) == (
            URL(base).scheme,
            URL(base).host,
            URL(base).port,
        ) and urljoin(location, ".").startswith(base)
    return False


@dataclass(frozen=True, slots=True)
class Raw:
    """One raw HTTP answer, split."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @classmethod
    def parse(cls, raw: bytes) -> Raw:
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = []
        for line in lines[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip().lower(), value.strip()))
        return cls(status_of(raw), headers, body)

    def get(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]


def assert_sound(answer: Raw, bases: Sequence[str], what: str) -> None:
    """Never a 5xx, never a traceback, never a Location outside the bases, one of each header."""
    assert answer.status < 500, (what, answer.status, answer.body[:300])
    assert answer.status >= 100, what
    assert not TRACEBACK.search(answer.body), (what, answer.body[:500])
    locations = answer.get("location")
    assert len(locations) <= 1, (what, locations)
    if answer.status in (301, 302, 303, 307, 308):
        assert locations, what
    for loc in locations:
        assert location_allowed(loc, bases), (what, loc)
    assert not answer.get("set-cookie"), what  # no header smuggled through a decoded path


# --- the deployed server: `redirector serve`, state in Redis ---------------------------------


@dataclass
class Served:
    port: int
    bases: tuple[str, ...]
    log: Path
    access_log: Path
    proc: subprocess.Popen[bytes]

    def get(self, target: str, headers: str = "", method: str = "GET") -> Raw:
        return Raw.parse(asyncio.run(raw_get(self.port, target, headers, method)))


@pytest.fixture(scope="module")
def served(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One `redirector serve` for the module: three fresh mirrors in Redis, a GeoIP database,
    loopback trusted as a proxy, the JSON access log in a file, stderr in another."""
    tmp = tmp_path_factory.mktemp("hostile")
    redis_server.start()
    prefix = "hostile:"
    bases = {n: mirror_bases(n) for n in PLACES}

    async def fill() -> None:
        store = RedisStore(redis_server.url, prefix=prefix)
        try:
            await fresh_store(list(PLACES), store)
        finally:
            await store.close()

    asyncio.run(fill())
    port = free_port()
    cfg = tmp / "hostile.toml"
    access = tmp / "access.log"
    cfg.write_text(
        config_text(
            f'listen = "127.0.0.1:{port}"\nredis_url = "{redis_server.url}"\n'
            f'redis_prefix = "{prefix}"\ngeoip_db = "{geo_db(tmp / "city.mmdb")}"\n'
            f'verify_files = false\naccess_log = "json"\naccess_log_path = "{access}"\n'
            # Thousands of hostile requests, views among them: a budget they never exhaust,
            # so every one still goes through it (its refusals are test_viewbudget.py's).
            "views_network_burst = 100000\nviews_total_burst = 1000000\n",
            bases,
        )
    )
    log = tmp / "stderr.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "redirector.cli",
                "serve",
                "--config",
                str(cfg),
                "--no-poll",
                "--workers",
                "1",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    s = Served(port, (*[b for pair in bases.values() for b in pair], MASTER), log, access, proc)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                answer = s.get("/health")
                if answer.status == 200 and b'"fresh": 3' in answer.body:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield s
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


NAMED_PATHS = [
    "//evil.example/",
    "//evil.example/%2e%2e/",
    "///evil.example",
    "/\\evil.example/",
    "/%5cevil.example/",
    "/a\\..\\..\\etc/passwd",
    "/@evil.example/",
    "/a@evil.example/x.iso",
    "/:@evil.example/",
    "/%2e%2e/etc/passwd",
    "/%2E%2E/%2E%2E/",
    "/..%2f..%2fetc/passwd",
    "/.%2e/x",
    "/releases/../../x",
    "/releases/./x",
    "/a%00b",
    "/a%00",
    "/%00/../",
    "/%c0%ae%c0%ae/x",  # overlong UTF-8 for '.'
    "/%e0%80%ae%e0%80%ae/x",
    "/%c0%af",  # overlong '/'
    "/%f0%80%80%af",
    "/%ff%fe",
    "/%ed%a0%80",  # a UTF-16 surrogate, not valid UTF-8
    "/%e2%80%ae/x",  # right-to-left override: valid, passed on encoded
    "/%0d%0aSet-Cookie:%20x=1",
    "/%0aLocation:%20http://evil.example/",
    "/x%23y",
    "/%",
    "/%zz",
    "/%2",
    "/" + "a/" * 2000,
    "/" + "/" * 4000,
    "/" + "a" * 5000,
]
# Ten thousand path segments: past the request-line limit (a 400 from the parser).
HUGE_PATHS = ["/" + "a/" * 10_000, "/" + "/" * 10_000, "/%2e%2e/" * 2_000]


@pytest.mark.parametrize("prefix", ["/smeserver", "/pub/smeserver"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_named_hostile_paths(served: Served, prefix: str, method: str) -> None:
    statuses = {}
    for path in NAMED_PATHS + HUGE_PATHS:
        answer = served.get(prefix + path, method=method)
        assert_sound(answer, served.bases, path[:80])
        statuses[path[:40]] = answer.status
    # The escapes are refused outright; the rest stays below a base.
    for path in ("/%2e%2e/etc/passwd", "/a%00b", "/%c0%ae%c0%ae/x", "/\\evil.example/", "/%ff%fe"):
        assert statuses[path[:40]] == 400, path
    for path in HUGE_PATHS:
        assert statuses[path[:40]] in (400, 414), path
    assert statuses["//evil.example/"] == 302
    assert statuses["/@evil.example/"] == 302


def test_targets_outside_the_tree(served: Served) -> None:
    for target in [
        "//evil.example/smeserver/x",
        "http://evil.example/smeserver/x",
        "https://evil.example/",
        "*",
        "/smeserver@evil.example/",
        "/smeserver%2fx",
        "/smeserverx",
        "/SMESERVER/x",
        "@evil.example",
        "/smeserver/x#frag",
    ]:
        answer = served.get(target)
        assert_sound(answer, served.bases, target)
        assert answer.status in (302, 400, 404), (target, answer.status)


X_FORWARDED_FOR = [
    "garbage",
    ", , ,",
    "1.2.3.4, nonsense, 145.100.1.1",
    "145.100.1.1, garbage",
    "[::1",
    "::1]:80",
    "999.1.1.1",
    "1.2.3.4.5",
    "fe80::1%eth0",
    "fe80::1%25eth0",
    "[fe80::1%eth0]:443",
    "fe80::1%" + "z" * 200,
    "2001:610::1%0, 127.0.0.1",
    "::ffff:145.100.1.1",
    "unknown",
    "_hidden, 145.100.1.1",
    "145.100.1.1:99999",
    "\t145.100.1.1\t",
    "1" * 5000,
    ", ".join(["145.100.1.1"] * 600),
    "145.100.1.1;for=x",
    "0x91.0x64.1.1",
    "2001:610::1/64",
    "%00",
    "\x01\x02",
]


@pytest.mark.parametrize("target", ["/smeserver/releases/10/x.iso", "/mirrorlist/smeos-10"])
def test_x_forwarded_for_garbage_and_zone_ids(served: Served, target: str) -> None:
    for value in X_FORWARDED_FOR:
        answer = served.get(target, f"X-Forwarded-For: {value}\r\n")
        assert_sound(answer, served.bases, value[:60])
        # Control characters are the parser's to refuse; any other garbage is ignored.
        refused = any(ord(c) < 0x20 and c != "\t" for c in value)
        assert answer.status in ((400,) if refused else (200, 302)), (value[:60], answer.status)


def test_huge_and_many_headers(served: Served) -> None:
    field_max = HTTP_LIMITS["max_field_size"]
    cases = {
        "just under the field limit": (f"X-Pad: {'a' * (field_max - 100)}\r\n", (302,)),
        "one huge header": (f"X-Pad: {'a' * 100_000}\r\n", (400, 431)),
        "a huge X-Forwarded-For": (f"X-Forwarded-For: {'1.2.3.4,' * 20_000}\r\n", (400, 431)),
        "many headers": ("".join(f"X-H{i}: v\r\n" for i in range(1_000)), (400, 431)),
        "a huge header name": (f"{'X' * 100_000}: v\r\n", (400, 431)),
        "a header without a colon": ("NoColonHere\r\n", (400,)),
        "a folded header": ("X-A: a\r\n b\r\n", (400,)),
        "a NUL in a header": ("X-A: a\x00b\r\n", (400,)),
        "a bare CR in a header": ("X-A: a\rb\r\n", (400,)),
        "two Host headers": ("Host: evil.example\r\n", (302, 400)),
        "Host of another site": ("X-Forwarded-Host: evil.example\r\n", (302,)),
        "Forwarded, unsupported": ("Forwarded: for=145.100.1.1;host=evil.example\r\n", (302,)),
        "an absurd scheme": ("X-Forwarded-Proto: javascript\r\n", (302,)),
        "Accept junk": ("Accept: " + "application/json;" * 300 + "\r\n", (302,)),
        "Content-Length on a GET": ("Content-Length: 5\r\n\r\nhello", (302, 400)),
        "chunked junk": ("Transfer-Encoding: chunked\r\n\r\nzz\r\n", (302, 400)),
        "two Content-Lengths": ("Content-Length: 1\r\nContent-Length: 2\r\n", (400,)),
    }
    for what, (headers, expected) in cases.items():
        answer = served.get("/smeserver/releases/10/x.iso", headers)
        assert_sound(answer, served.bases, what)
        assert answer.status in expected, (what, answer.status, answer.body[:200])
    # A request line longer than the limit: refused before any handler.
    line_max = HTTP_LIMITS["max_line_size"]
    answer = served.get("/smeserver/" + "a" * line_max)
    assert answer.status in (400, 414)
    answer = served.get("/smeserver/" + "a" * (line_max - 100))
    assert answer.status == 400  # under the parser's limit, over paths.MAX_PATH


def test_other_views_with_hostile_queries(served: Served) -> None:
    for target in [
        "/smeserver/releases/10/x?mirrorlist",
        "/smeserver/releases/10/x?mirrorlist=%ff&json",
        "/smeserver/%2e%2e/x?mirrorlist",
        "/smeserver//evil.example/?mirrorlist&json",
        "/smeserver/x?mirrorlist&" + "&".join(["json"] * 500),
        "/smeserver/x?%00=%00&mirrorlist",
        "/smeserver/x?mirrorlist=<script>alert(1)</script>",
        "/mirrorlist?repo=%00&arch=x86_64",
        "/mirrorlist?repo=smeos-10&arch=%0d%0aX:y",
        "/mirrorlist?repo=smeos-10&repo=smeos-11&arch=../../x",
        "/mirrorlist?" + "a=" * 1000,
        "/mirrorlist/%00",
        "/mirrorlist/smeos-10%0d%0aX:y",
        "/mirrorlist/" + "x" * 3000,
        "/mirrorlists/%ff",
        "/metalink?repo=smeos-10&arch=%ff",
        "/metalink?repo=<x>&arch=x86_64",
        "/metalink?repo=smeos-10",
        "/metalink",
        "/mirrors?%ff=%ff",
        "/mirrors?<script>",
        "/mirrors.json?x=%00",
        "/mirrors/..%2f..%2f",
        "/health?x=%ff",
        "/health/ready?%",
        "/metrics?name[]=x",
        "/schema/mirrors-v1.json?%00",
        "/schema/..%2fmirrors-v1.json",
    ]:
        for accept in ("", "Accept: application/json\r\n", "Accept: text/html\r\n"):
            answer = served.get(target, accept)
            assert_sound(answer, served.bases, target[:80])
            body = answer.body
            assert b"<script>alert(1)</script>" not in body, target  # escaped where echoed


def test_methods(served: Served) -> None:
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PATCH", "FOO"):
        for target in ("/smeserver/x", "/mirrorlist/smeos-10", "/mirrors", "/health"):
            answer = served.get(target, method=method)
            assert_sound(answer, served.bases, f"{method} {target}")
            assert answer.status in (400, 404, 405), (method, target, answer.status)


# Alphabets for the property tests: what a URL can carry, and the pieces of known tricks.
URL_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#")
TRICKS = st.sampled_from(
    [
        "/", "//", "\\", "@", ":", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "%00", "%0a",
        "%0d", "%c0%ae", "%c0%af", "%e0%80%ae", "%ff", "%", "%2", "evil.example", "?", "&",
        "mirrorlist", "json", "=", ";", "%25", "%20", "~", "+",
    ]
)  # fmt: skip
PATHS = st.lists(st.one_of(TRICKS, st.text(URL_CHARS, max_size=6)), max_size=24).map("".join)
HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\r\n\x7f"),
    max_size=200,
)
ZONE = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=",")
ZONED = st.builds(
    lambda ip, zone: f"{ip}%{zone}", st.ip_addresses(v=6), st.text(ZONE, min_size=1, max_size=12)
)
FORWARDED = st.lists(
    st.one_of(
        st.ip_addresses().map(str),
        ZONED,
        st.ip_addresses(v=6).map(lambda ip: f"[{ip}]:443"),
        HEADER_TEXT,
    ),
    max_size=8,
).map(", ".join)
PROPERTY = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY
@given(path=PATHS, method=st.sampled_from(["GET", "HEAD"]))
def test_property_any_path(served: Served, path: str, method: str) -> None:
    for prefix in ("/smeserver/", "/pub/smeserver"):
        answer = served.get(prefix + path, method=method)
        assert_sound(answer, served.bases, prefix + path)


@PROPERTY
@given(
    path=PATHS,
    query=PATHS,
    view=st.sampled_from(
        ["/smeserver/", "/mirrorlist/", "/mirrorlist?", "/metalink?", "/mirrors?"]
    ),
)
def test_property_any_query(served: Served, path: str, query: str, view: str) -> None:
    target = view + path + "?" + query if view.endswith("/") else view + query
    answer = served.get(target, "Accept: application/json\r\n")
    assert_sound(answer, served.bases, target)


@PROPERTY
@given(
    forwarded_for=FORWARDED,
    proto=HEADER_TEXT,
    accept=HEADER_TEXT,
    agent=HEADER_TEXT,
    target=st.sampled_from(
        ["/smeserver/releases/10/x.iso", "/smeserver/x?mirrorlist&json", "/mirrorlist/smeos-10",
         "/metalink?repo=smeos-10&arch=x86_64", "/mirrors", "/health/ready"]
    ),
)  # fmt: skip
def test_property_any_headers(
    served: Served, forwarded_for: str, proto: str, accept: str, agent: str, target: str
) -> None:
    headers = (
        f"X-Forwarded-For: {forwarded_for}\r\nX-Forwarded-Proto: {proto}\r\n"
        f"Accept: {accept}\r\nUser-Agent: {agent}\r\n"
    )
    answer = served.get(target, headers)
    assert_sound(answer, served.bases, headers)
    # 503: /health/ready, no poller; 404: a metalink with no repomd.xml hashes known yet
    allowed = (200, 302, 503, 404) if target.startswith("/metalink") else (200, 302, 503)
    assert answer.status in allowed, answer.status


def test_the_server_logs_no_traceback_and_one_json_line_per_request(served: Served) -> None:
    """After everything above went through this process (file order), and a batch of its own:
    no traceback on stderr, and the access log still one JSON object per line."""
    before = len(served.access_log.read_text(encoding="utf-8").splitlines())
    sent = 0
    for path in NAMED_PATHS:
        for value in ("\xf2\xff", '"quoted"\\', "fe80::1%eth0"):  # undecodable, quotes, zone
            served.get("/smeserver" + path, f"User-Agent: {value}\r\nX-Forwarded-For: {value}\r\n")
            sent += 1
    served.get("/smeserver/%c0%ae", "X-Pad: " + "a" * 100_000 + "\r\n")  # the parser refuses
    served.get("/smeserver/" + "a/" * 10_000)
    sent += 2
    deadline = time.monotonic() + 5  # each line is written after its answer
    while len(served.access_log.read_text(encoding="utf-8").splitlines()) < before + sent:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    err = served.log.read_bytes()
    assert not TRACEBACK.search(err), err[-3000:].decode(errors="replace")
    for line in served.access_log.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)  # a hostile path or header never breaks a line in two
        assert isinstance(entry, dict)
    assert served.proc.poll() is None  # and it is still up


def test_a_malformed_request_logs_one_line_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    quiet_bad_requests()
    quiet_bad_requests()  # idempotent: one filter
    logger = logging.getLogger(SERVER_LOGGER)
    assert sum(isinstance(f, QuietBadRequests) for f in logger.filters) == 1
    with caplog.at_level(logging.DEBUG, logger=SERVER_LOGGER):
        # As aiohttp logs them: the exception passed in, at ERROR.
        parser_error = LineTooLong(b"X-Pad: " + b"a" * 9000, 8190)
        logger.error("Error handling request from %s", "192.0.2.1", exc_info=parser_error)
        bug = RuntimeError("a real bug")
        logger.error("Error handling request from %s", "192.0.2.2", exc_info=bug)
    quiet, loud = caplog.records[-2:]
    assert (quiet.levelno, quiet.exc_info) == (logging.DEBUG, None)
    assert "192.0.2.1" in quiet.getMessage()
    assert len(quiet.getMessage()) < 400  # the client's bytes, cut
    assert loud.levelno == logging.ERROR  # our own errors keep their traceback
    assert loud.exc_info is not None


# --- in process, with the per-file HEAD check against loopback mirrors -----------------------


@pytest.fixture
async def verified(
    aiohttp_client: ClientFactory, farm: Farm, tmp_path: Path
) -> tuple[TestClient[web.Request, web.Application], tuple[str, ...]]:
    # The https bases point at the farm's plain-HTTP port: a HEAD there fails its handshake
    # (the mirror "lacks" the file), and nothing leaves loopback.
    tls = farm.base.replace("http://", "https://")
    bases = {n: (farm.url(n), f"{tls}{n}/") for n in ("nl", "us")}
    farm.put("nl", "releases/10/x.iso", b"iso")
    s = parse_settings(
        config_text(
            f'geoip_db = "{geo_db(tmp_path / "city.mmdb")}"\nverify_timeout = "500ms"\n'
            f'access_log = "off"\n',
            bases,
            master=farm.url("master"),
        ),
        "verified.toml",
    )
    store = await fresh_store(["nl", "us"], MemoryStore())
    client = await aiohttp_client(create_app(s, poll=False, store=store))
    allowed = (*[b for pair in bases.values() for b in pair], farm.url("master"))
    return client, allowed


def fuzz_target(rng: random.Random) -> tuple[str, str, str]:
    """One random (method, target, headers): the named tricks mixed with random bytes."""
    tricks = [p for p in NAMED_PATHS if len(p) < 300]
    prefix = rng.choice(["/smeserver", "/pub/smeserver", "/mirrorlist/", "/metalink", "/mirrors"])
    parts = []
    for _ in range(rng.randint(0, 8)):
        roll = rng.random()
        if roll < 0.4:
            parts.append(rng.choice(tricks))
        elif roll < 0.7:
            parts.append("".join(chr(rng.randint(0x21, 0x7E)) for _ in range(rng.randint(1, 8))))
        else:
            parts.append(quote(bytes(rng.randint(0, 255) for _ in range(3)), safe=""))
    target = prefix + "".join(parts).replace("#", "%23")
    if rng.random() < 0.3:
        target += "?" + rng.choice(
            ["mirrorlist", "mirrorlist&json", "repo=smeos-10&arch=x86_64", "%ff", "a=%00"]
        )
    headers = ""
    if rng.random() < 0.5:
        headers += f"X-Forwarded-For: {rng.choice(X_FORWARDED_FOR)}\r\n"
    if rng.random() < 0.3:
        headers += f"X-Forwarded-Proto: {rng.choice(['https', 'http', 'HTTPS', 'gopher', ''])}\r\n"
    if rng.random() < 0.3:
        headers += f"Accept: {rng.choice(['application/json', 'text/html', '*/*', ''])}\r\n"
    method = rng.choice(["GET", "GET", "GET", "HEAD", "POST", "OPTIONS"])
    return method, target, headers


async def test_fuzz_run_with_file_checks(
    verified: tuple[TestClient[web.Request, web.Application], tuple[str, ...]],
) -> None:
    client, allowed = verified
    port = client.server.port
    assert port is not None
    rng = random.Random(8)  # the number: the same run every time
    requests = [fuzz_target(rng) for _ in range(1500)]
    gate = asyncio.Semaphore(16)

    async def one(method: str, target: str, headers: str) -> tuple[str, Raw]:
        async with gate:
            raw = await raw_get(port, target.encode("utf-8").decode("latin-1"), headers, method)
        return f"{method} {target} {headers!r}", Raw.parse(raw)

    answers = await asyncio.gather(*(one(*r) for r in requests))
    seen = set()
    for what, answer in answers:
        assert_sound(answer, allowed, what)
        seen.add(answer.status)
    assert {302, 400} <= seen


async def test_structured_requests_with_file_checks(
    verified: tuple[TestClient[web.Request, web.Application], tuple[str, ...]],
) -> None:
    client, allowed = verified
    for params in [
        {"repo": "smeos-10", "arch": "x86_64"},
        {"repo": "smeos-10", "arch": "\x00"},
        {"repo": "\u202e01-soems", "arch": "x86_64"},
        {"repo": "smeos-10" * 500, "arch": "x86_64"},
        {"repo": "smeos-10", "arch": "x86_64", "extra": "\ud7ff" * 50},
    ]:
        for view in ("/mirrorlist", "/metalink"):
            resp = await client.get(view, params=params)
            body = await resp.read()
            assert resp.status < 500
            assert not TRACEBACK.search(body)
    for ip in ["fe80::1%eth0", "fe80::1%25eth0", "[fe80::1%eth0]:80", "garbage", "145.100.1.1"]:
        for path in ["/smeserver/releases/10/x.iso", "/smeserver/releases/10/missing.iso"]:
            resp = await client.get(path, headers={"X-Forwarded-For": ip}, allow_redirects=False)
            assert resp.status == 302
            assert location_allowed(resp.headers["Location"], allowed)
        resp = await client.get("/smeserver/x?mirrorlist&json", headers={"X-Forwarded-For": ip})
        assert resp.status == 200
        doc = await resp.json()
        assert isinstance(doc, dict)


async def test_what_the_store_says_cannot_send_clients_outside_the_config(
    aiohttp_client: ClientFactory,
) -> None:
    """Whoever can write the store (Redis) chooses among the configured mirrors and the
    master, no more: every URL comes from the config, the store only carries observations."""
    now = time.time()
    store = MemoryStore()
    await store.put_master(MasterState((MasterVersion(now + 1e9, now),), now))
    await store.put_states(
        [
            MirrorState("evil", Status.UP, now, master_date=now + 1e9),  # not configured
            MirrorState("nl", Status.UP, now, master_date=now + 1e9, lacks=("",)),
            MirrorState("us", Status.UP, now + 1e9, master_date=now + 1e9, covered=("../",)),
            MirrorState("au", Status.SYNCING, now, master_date=-1.0, error="<script>x</script>"),
        ]
    )
    bases = {n: mirror_bases(n) for n in PLACES}
    s = parse_settings(config_text('geoip_db = ""\nverify_files = false', bases), "store.toml")
    client = await aiohttp_client(create_app(s, poll=False, store=store))
    allowed = (*[b for pair in bases.values() for b in pair], MASTER)
    for ip in ("145.100.1.1", "152.2.1.1", "2001:610::1", "garbage"):
        for path in ("releases/10/x.iso", "releases/../x", "obsolete/x", ""):
            resp = await client.get(
                "/smeserver/" + path, headers={"X-Forwarded-For": ip}, allow_redirects=False
            )
            assert resp.status in (302, 400)
            if resp.status == 302:
                assert location_allowed(resp.headers["Location"], allowed)
    page = await client.get("/mirrors")
    assert page.status == 200
    assert "<script>x</script>" not in await page.text()


@pytest.mark.parametrize(
    "url",
    [
        "http://user@mirror.example/sme/",
        "http://mirror.example@evil.example/sme/",
        "http://mirror.example/sme/?next=",
        "http://mirror.example/sme/#",
        "http://mirror.example/sme/?",
        "javascript:alert(1)//",
        "ftp://mirror.example/sme/",
        "//mirror.example/sme/",
        "http:///sme/",
        "http://mirror.example:99999/sme/",
    ],
)
def test_the_config_refuses_base_urls_a_path_could_escape(url: str) -> None:
    """The config is the only source of URLs; a base that a path appended to could turn into
    another host (user info), a query or a fragment is refused when the config is read."""
    text = config_text('geoip_db = ""', {"nl": (url, "https://nl.example/sme/")})
    with pytest.raises(ConfigError, match="field 'http'"):
        parse_settings(text, "bad.toml")


# --- the pure parts, with many more examples -------------------------------------------------


@settings(max_examples=2000, deadline=None)
@given(raw=st.one_of(PATHS, st.text(max_size=60)))
def test_property_tree_path_stays_below_any_base(raw: str) -> None:
    try:
        rest = tree_path("/smeserver/" + raw, "/smeserver")
    except BadPath:
        return
    base = "http://mirror.example/pub/sme/"
    assert location_allowed(base + rest, [base]), rest


ADDRESSES = st.one_of(st.ip_addresses().map(str), ZONED, HEADER_TEXT)


@settings(max_examples=2000, deadline=None)
@given(text=ADDRESSES)
def test_property_parse_ip_never_raises(text: str) -> None:
    ip = parse_ip(text)
    assert ip is None or isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)


TRUST = ProxyTrust([ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8")])


@settings(max_examples=2000, deadline=None)
@given(peer=st.sampled_from(["127.0.0.1", "203.0.113.9", "10.1.2.3"]), header=FORWARDED)
def test_property_the_client_is_the_peer_or_named_by_a_trusted_hop(peer: str, header: str) -> None:
    client = TRUST.resolve(peer, header, "https", "http")
    if peer == "203.0.113.9":  # not a proxy: its headers mean nothing
        assert (str(client.ip), client.scheme) == (peer, "http")
        return
    named = {parse_ip(item) for item in header.split(",")}
    assert client.ip == parse_ip(peer) or client.ip in named
    assert client.scheme == "https"
