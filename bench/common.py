"""What the benchmarks share: synthetic mirrors and clients, the GeoIP database, wrk's Lua script.

Everything is generated from a fixed seed, so two runs (and two machines) load the same world:
200 synthetic mirrors and 10,000 client networks placed over 1,000 random places between 45 S and
65 N, written into a real MMDB file with tests/mmdb_build.py. Every synthetic mirror is marked
fresh in the store, so each decision is a real one over all of them.
"""

from __future__ import annotations

import ipaddress
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/x.py`: the package and tests/ from here
    sys.path.insert(0, str(ROOT))

from redirector.core.models import MasterState, MasterVersion, Mirror, MirrorState, Status  # noqa: E402
from tests.mmdb_build import sample_networks  # noqa: E402

EXAMPLE = ROOT / "examples" / "mirrors.toml"
OUT = ROOT / "bench" / "out"  # generated files and results; ignored by git
SEED = 7


def _paths(count: int = 2000, seed: int = SEED) -> tuple[str, ...]:
    """What the load generator asks for, in turn: yum metadata and packages of the live
    releases, some of obsolete/ (excluded by some mirrors) and contribs/, and /pub/ links.
    Many distinct files, as real traffic has, so no per-path cache holds just a handful."""
    rng = random.Random(seed + 3)
    repos = [
        f"releases/{v}/{r}/{a}"
        for v in (9, 10, 11)
        for r in ("smeos", "smeupdates", "smeextras", "smeaddons")
        for a in ("x86_64", "i386")
    ]
    meta = ("repomd.xml", "primary.xml.gz", "filelists.xml.gz", "other.xml.gz", "comps.xml")
    out = [f"/smeserver/{repo}/repodata/{m}" for repo in repos for m in meta]
    while len(out) < count:
        roll = rng.random()
        n = rng.randrange(100000)
        if roll < 0.75:
            out.append(f"/smeserver/{rng.choice(repos)}/Packages/pkg{n}-1.0-1.el7.x86_64.rpm")
        elif roll < 0.85:
            out.append(f"/smeserver/obsolete/7/smeos/i386/CentOS/RPMS/old{n}-1.0-1.i386.rpm")
        elif roll < 0.95:
            out.append(f"/smeserver/contribs/someone{n % 50}/10/noarch/contrib{n}-1.noarch.rpm")
        else:
            out.append(f"/pub/smeserver/{rng.choice(repos)}/repodata/repomd.xml")
    rng.shuffle(out)
    return tuple(out[:count])


PATHS = _paths()


def tree_paths(count: int) -> tuple[str, ...]:
    """`count` paths as `PATHS` are made (the first 2,000 of them are not `PATHS` itself)."""
    return PATHS if count == len(PATHS) else _paths(count)


def places(count: int = 1000, seed: int = SEED) -> list[tuple[float, float]]:
    """Random (latitude, longitude) pairs where people live, roughly: 45 S to 65 N."""
    rng = random.Random(seed)
    return [
        (round(rng.uniform(-45, 65), 4), round(rng.uniform(-180, 180), 4)) for _ in range(count)
    ]


def synthetic_mirrors(count: int = 200, seed: int = SEED) -> list[Mirror]:
    """`count` mirrors at random places; some https, some IPv6, some without obsolete/."""
    rng = random.Random(seed + 1)
    out = []
    for i in range(count):
        lat, lon = rng.uniform(-45, 65), rng.uniform(-180, 180)
        host = f"synth-{i:04d}.mirror.test"  # .test: reserved, never resolves
        https = rng.random() < 0.5
        out.append(
            Mirror(
                name=f"synth-{i:04d}",
                http=f"http://{host}/smeserver/",
                https=f"https://{host}/smeserver/" if https else None,
                country="XX",
                latitude=round(lat, 4),
                longitude=round(lon, 4),
                weight=rng.choice((50, 100, 100, 200)),
                exclude=("obsolete/",) if rng.random() < 0.3 else (),
                ipv6=rng.random() < 0.5,
            )
        )
    return out


def mirror_toml(m: Mirror) -> str:
    lines = ["[[mirror]]", f'name = "{m.name}"']
    if m.http:
        lines.append(f'http = "{m.http}"')
    if m.https:
        lines.append(f'https = "{m.https}"')
    lines += [
        f'country = "{m.country}"',
        f"latitude = {m.latitude}",
        f"longitude = {m.longitude}",
        f"weight = {m.weight}",
        f"ipv6 = {'true' if m.ipv6 else 'false'}",
    ]
    if m.exclude:
        lines.append("exclude = [" + ", ".join(f'"{e}"' for e in m.exclude) + "]")
    return "\n".join(lines) + "\n"


def config_text(
    listen: str, geoip_db: Path, synthetic: Sequence[Mirror], *, stub: int | None = None
) -> str:
    """The example config with its [redirector] table replaced, plus the synthetic mirrors.

    `stub`: the port of a loopback mirror stub answering every HEAD (`mirror_stub_conf`).
    Then every feature is on, as shipped: the per-file check (its HEADs go to the stub, the
    only host every mirror names) and the text access log (to stderr, the bench's log file);
    the example mirrors are left out, as their hosts must not be contacted. Without it, the
    check and the access log are off and the example mirrors are in."""
    if stub is not None:
        synthetic = [on_stub(m, stub) for m in synthetic]
        example = ""
        extra = ""
    else:
        text = EXAMPLE.read_text()
        example = text[text.index("[[mirror]]") :] + "\n"
        extra = 'access_log = "off"\nverify_files = false\n'
    head = f"""[redirector]
listen = "{listen}"
master = "http://mirror.contribs.org/smeserver/"
trusted_proxies = ["127.0.0.1/32", "::1/128"]
geoip_db = "{geoip_db}"
{extra}
"""
    return head + example + "\n".join(mirror_toml(m) for m in synthetic)


def on_stub(m: Mirror, port: int) -> Mirror:
    """`m` with its URLs on the loopback mirror stub, one directory per mirror."""
    base = f"http://127.0.0.1:{port}/{m.name}/smeserver/"
    return replace(m, http=base, https=None)


def mirror_stub_conf(directory: Path, port: int) -> str:
    """nginx as every mirror at once, for the per-file check's HEADs: 200 for any file."""
    return nginx_conf(directory, port, 1, answer="return 200")


def fresh_states(names: Sequence[str], now: float) -> list[MirrorState]:
    """Every mirror up, holding the master's current state, checked just now."""
    return [
        MirrorState(n, Status.UP, now, master_date=now - 86400, behind_since=None) for n in names
    ]


def fresh_master(now: float) -> MasterState:
    return MasterState((MasterVersion(now - 86400, now - 86000),), now)


@dataclass(frozen=True, slots=True)
class World:
    """The clients' side: the GeoIP database and one address per client network in it."""

    db: Path
    clients: tuple[str, ...]


def _record(place: int, lat: float, lon: float) -> dict[str, object]:
    """A GeoLite2-City-shaped record (names in a few languages, as the real ones carry)."""
    names = {"en": f"City {place}", "de": f"Stadt {place}", "fr": f"Ville {place}"}
    country = {"iso_code": "XX", "names": {"en": "Somewhere", "de": "Irgendwo"}}
    return {
        "city": {"geoname_id": 100000 + place, "names": names},
        "continent": {"code": "EU", "names": {"en": "Europe"}},
        "country": country,
        "registered_country": country,
        "location": {"accuracy_radius": 100, "latitude": lat, "longitude": lon},
    }


def build_world(directory: Path, clients: int = 10_000, filler: int = 0, seed: int = SEED) -> World:
    """A GeoIP database and one public address in each of its `clients` networks (4 in 5 IPv4
    /24s, 1 in 5 IPv6 /32s, from tests/mmdb_build.sample_networks), each network at one of
    1,000 places: what the load generator sends as X-Forwarded-For.

    `filler` more random IPv4 /24s make the file as large as a real GeoLite2-City (about
    4,800,000 give 63 MB; building that takes about 4 minutes and 3 GB of memory), for the
    memory figures. Both files are kept in `directory` and reused.
    """
    db = directory / f"bench-city-{clients}-{filler}-{seed}.mmdb"
    listing = directory / f"bench-clients-{clients}-{seed}.txt"
    if db.exists() and listing.exists():
        return World(db, tuple(listing.read_text().split()))
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    rng = random.Random(seed + 2)
    spots = places(seed=seed)
    v4_wanted, v6_wanted = clients * 4 // 5, clients - clients * 4 // 5
    pool = sample_networks(2 * max(v4_wanted, v6_wanted) + 2, seed=seed)
    v4 = [n for n in pool if ":" not in n][:v4_wanted]
    v6 = [n for n in pool if ":" in n][:v6_wanted]
    by_place: dict[int, list[str]] = {}
    addresses: list[str] = []
    for cidr in v4 + v6:
        by_place.setdefault(rng.randrange(len(spots)), []).append(cidr)
        addresses.append(str(ipaddress.ip_network(cidr).network_address + 7))
    taken = {int(ipaddress.ip_network(c).network_address) >> 8 for c in v4}
    while filler > 0:
        block = rng.getrandbits(24)
        net = ipaddress.IPv4Network((block << 8, 24))
        if block in taken or not net.is_global or net.is_multicast:
            continue
        taken.add(block)
        by_place.setdefault(rng.randrange(len(spots)), []).append(str(net))
        filler -= 1
    writer = MMDBWriter(
        ip_version=6,
        database_type="GeoLite2-City",
        languages=["en"],
        description={"en": "redirector bench database"},
        ipv4_compatible=True,
    )
    # One insert per place with all its networks: far faster than one per network. Every
    # network here is a /24 or a /32, so the order of insertion does not matter.
    for place, nets in sorted(by_place.items()):
        lat, lon = spots[place]
        writer.insert_network(IPSet(nets), _record(place, lat, lon))
    rng.shuffle(addresses)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = db.with_suffix(".tmp")
    writer.to_db_file(str(tmp))
    tmp.replace(db)
    listing.write_text("\n".join(addresses) + "\n")
    return World(db, tuple(addresses))


def lua_script(clients: Sequence[str], paths: Sequence[str] = PATHS) -> str:
    """wrk's script: each request takes the next path and the next X-Forwarded-For address.

    `done` prints one machine-readable line: requests, seconds, p50 and p99 in microseconds,
    and wrk's error counts (connect, read, write, timeout, HTTP status >= 400).
    """
    quoted = ",\n".join(f'"{c}"' for c in clients)
    ps = ", ".join(f'"{p}"' for p in paths)
    return f"""-- generated by bench/common.py: rotate X-Forwarded-For over {len(clients)} addresses
local addrs = {{
{quoted}
}}
local paths = {{ {ps} }}
local na, np = #addrs, #paths
local i = 0
local headers = {{}}
request = function()
  i = i + 1
  headers["X-Forwarded-For"] = addrs[(i % na) + 1]
  return wrk.format("GET", paths[(i % np) + 1], headers)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %.6f %d %d %d %d %d %d %d\\n",
    summary.requests, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.timeout, e.status))
end
"""


def nginx_conf(directory: Path, port: int, workers: int, *, answer: str = "") -> str:
    """nginx answering every request with the 302 a redirector would give: the ceiling.

    `answer`: another `return` for every request (the mirror stub's `return 200`)."""
    answer = answer or "return 302 http://ftp.nluug.nl/os/Linux/distr/smeserver$request_uri"
    return f"""# generated by bench/common.py
worker_processes {workers};
daemon off;
master_process on;
pid {directory}/nginx.pid;
error_log {directory}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {directory}/nginx-body;
    proxy_temp_path {directory}/nginx-proxy;
    fastcgi_temp_path {directory}/nginx-fastcgi;
    uwsgi_temp_path {directory}/nginx-uwsgi;
    scgi_temp_path {directory}/nginx-scgi;
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{
            add_header Cache-Control "private, no-store" always;
            {answer};
        }}
    }}
}}
"""
