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
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/x.py`: the package and tests/ from here
    sys.path.insert(0, str(ROOT))

from redirector.models import MasterState, MasterVersion, Mirror, MirrorState, Status  # noqa: E402
from tests.mmdb_build import CityRecord, sample_networks, write_city_mmdb  # noqa: E402

EXAMPLE = ROOT / "examples" / "mirrors.toml"
OUT = ROOT / "bench" / "out"  # generated files and results; ignored by git
SEED = 7
PATHS = (  # what the load generator asks for, in turn; obsolete/ is excluded by some mirrors
    "/smeserver/releases/10/smeos/x86_64/repodata/repomd.xml",
    "/smeserver/releases/10/smeupdates/x86_64/repodata/repomd.xml",
    "/smeserver/releases/10/smeos/x86_64/Packages/e2fsprogs-1.42.9-19.el7.x86_64.rpm",
    "/smeserver/releases/11/smeos/x86_64/Packages/smeserver-base-11.0.0-1.el8.sme.noarch.rpm",
    "/smeserver/releases/10/smeos/x86_64/repodata/primary.xml.gz",
    "/smeserver/obsolete/7/smeos/i386/CentOS/RPMS/kernel-2.6.9-89.EL.i686.rpm",
    "/smeserver/contribs/someone/10/noarch/smeserver-thing-1.0-1.noarch.rpm",
    "/pub/smeserver/releases/10/smeos/x86_64/repodata/repomd.xml",
)


def places(count: int = 1000, seed: int = SEED) -> list[tuple[float, float]]:
    """Random (latitude, longitude) pairs where people live, roughly: 45 S to 65 N."""
    rng = random.Random(seed)
    return [(round(rng.uniform(-45, 65), 4), round(rng.uniform(-180, 180), 4)) for _ in range(count)]


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


def config_text(listen: str, geoip_db: Path, synthetic: Sequence[Mirror]) -> str:
    """The example config with its [redirector] table replaced, plus the synthetic mirrors."""
    example = EXAMPLE.read_text()
    mirrors = example[example.index("[[mirror]]") :]
    head = f"""[redirector]
listen = "{listen}"
master = "http://mirror.contribs.org/smeserver/"
trusted_proxies = ["127.0.0.1/32", "::1/128"]
geoip_db = "{geoip_db}"
access_log = "off"

"""
    return head + mirrors + "\n" + "\n".join(mirror_toml(m) for m in synthetic)


def fresh_states(names: Sequence[str], now: float) -> list[MirrorState]:
    """Every mirror up, holding the master's current state, checked just now."""
    return [
        MirrorState(n, Status.UP, now, master_date=now - 86400, behind_since=None) for n in names
    ]


def fresh_master(now: float) -> MasterState:
    return MasterState((MasterVersion(now - 86400, now - 86000),), now)


@dataclass(frozen=True, slots=True)
class World:
    """The clients' side: the GeoIP database and one address per network in it."""

    db: Path
    clients: tuple[str, ...]


def build_world(directory: Path, clients: int = 10_000, seed: int = SEED) -> World:
    """A GeoIP database of `clients` networks (4 in 5 IPv4 /24, 1 in 5 IPv6 /32) at random
    places, and one public address in each: what the load generator sends as X-Forwarded-For.
    Reused when already built with the same parameters."""
    db = directory / f"bench-city-{clients}-{seed}.mmdb"
    listing = directory / f"bench-clients-{clients}-{seed}.txt"
    if db.exists() and listing.exists():
        return World(db, tuple(listing.read_text().split()))
    rng = random.Random(seed + 2)
    spots = places(seed=seed)
    v4_wanted, v6_wanted = clients * 4 // 5, clients - clients * 4 // 5
    pool = sample_networks(2 * max(v4_wanted, v6_wanted) + 2, seed=seed)
    v4 = [n for n in pool if ":" not in n][:v4_wanted]
    v6 = [n for n in pool if ":" in n][:v6_wanted]
    records: dict[str, CityRecord] = {}
    addresses: list[str] = []
    for cidr in v4 + v6:
        lat, lon = rng.choice(spots)
        records[cidr] = CityRecord("XX", "EU", lat, lon)
        net = ipaddress.ip_network(cidr)
        addresses.append(str(net.network_address + 7))
    rng.shuffle(addresses)
    directory.mkdir(parents=True, exist_ok=True)
    write_city_mmdb(db, records, build_epoch=int(time.time()))
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


def nginx_conf(directory: Path, port: int, workers: int) -> str:
    """nginx answering every request with the 302 a redirector would give: the ceiling."""
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
            return 302 http://ftp.nluug.nl/os/Linux/distr/smeserver$request_uri;
        }}
    }}
}}
"""
