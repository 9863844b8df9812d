"""The tests' world: clients and the GeoIP database that places them, mirror sets, their configs.

One place for what many tests share. Clients: `NL_CLIENT`, `US_CLIENT`, `AU_CLIENT`,
`NL6_CLIENT`, placed by `city_db` (the one GeoIP fixture builder; `geo` in conftest opens it).
Mirror sets, each a `World` that renders complete configs:

- `FRONT`: nl, us and au under .example, as the deployed front door sees them. Nothing ever
  connects to them (the apps run with poll=False); they only appear in Locations.
  `fresh_store` makes every named mirror current.
- `STATUS`: nine mirrors on loopback-only URLs (nothing is ever fetched from them), for the
  operator views; `fill` writes a state of each kind (fresh, syncing, down, stale, broken; one
  mirror is disabled in the config, one never checked), and `EXPECTED` is what the status page
  shows for each.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from redirector.config.settings import Settings, parse_settings
from redirector.core.models import MasterState, MasterVersion, MirrorState, Status
from redirector.geo import GeoReader
from redirector.store.base import Store
from redirector.store.memory import MemoryStore
from tests.farm import Farm
from tests.mmdb_build import CityRecord, write_asn_mmdb, write_city_mmdb, write_flat_mmdb

NL_CLIENT = "145.100.1.7"
US_CLIENT = "152.2.10.20"
AU_CLIENT = "1.120.5.5"
NL6_CLIENT = "2001:610:1:2::5"
REPOMD = "releases/10/smeos/x86_64/repodata/repomd.xml"

# Where the clients above are; any other address is not in the database.
NETWORKS: Mapping[str, CityRecord] = {
    "145.100.0.0/16": CityRecord("NL", "EU", 52.37, 4.90),
    "152.2.0.0/16": CityRecord("US", "NA", 35.91, -79.05),
    "1.120.0.0/16": CityRecord("AU", "OC", -33.87, 151.21),
    "2001:610::/32": CityRecord("NL", "EU", 52.37, 4.90),
}


def city_db(
    path: Path,
    networks: Mapping[str, CityRecord] = NETWORKS,
    *,
    build_epoch: int | None = None,
    database_type: str = "GeoLite2-City",
    ip_version: int = 6,
) -> Path:
    """A GeoLite2-City file at `path` placing `networks` (the clients above by default);
    `database_type` "DBIP-City-Lite" makes it DB-IP's, `ip_version` 4 an IPv4-only file."""
    return write_city_mmdb(
        path, networks, build_epoch=build_epoch, database_type=database_type, ip_version=ip_version
    )


def geo(tmp_path: Path, networks: Mapping[str, CityRecord] = NETWORKS) -> GeoReader:
    """A reader on `city_db` written in `tmp_path`."""
    return GeoReader.open(city_db(tmp_path / "city.mmdb", networks))


def replace_file(path: Path, text: str | bytes) -> None:
    """Write a new version of `path` the way config tools and geoipupdate do: temp + rename."""
    tmp = path.with_name(f".{path.name}.new")
    if isinstance(text, str):
        tmp.write_text(text, encoding="utf-8")
    else:
        tmp.write_bytes(text)
    os.replace(tmp, path)


# --- mirror sets -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Site:
    """One mirror of a world, as its [[mirror]] table says."""

    name: str
    country: str
    latitude: float
    longitude: float
    http: str
    https: str | None = None
    ipv6: bool | None = None  # None: the key is left out
    enabled: bool | None = None

    def toml(self, *, https: bool = True) -> list[str]:
        lines = [
            "[[mirror]]",
            f'name = "{self.name}"',
            f'http = "{self.http}"',
            *([f'https = "{self.https}"'] if https and self.https else []),
            f'country = "{self.country}"',
            f"latitude = {self.latitude}",
            f"longitude = {self.longitude}",
        ]
        if self.ipv6 is not None:
            lines.append(f"ipv6 = {str(self.ipv6).lower()}")
        if self.enabled is not None:
            lines.append(f"enabled = {str(self.enabled).lower()}")
        return [*lines, ""]


@dataclass(frozen=True, slots=True)
class World:
    """A mirror set, its master, and the [redirector] lines every config of it carries."""

    sites: tuple[Site, ...]
    master: str
    head: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sites)

    def site(self, name: str) -> Site:
        return next(s for s in self.sites if s.name == name)

    def config_text(
        self,
        names: Sequence[str] | None = None,
        *,
        master: str | None = None,
        extra: str = "",
        https: bool = True,
    ) -> str:
        """A complete config with the named mirrors (all by default); `extra` goes into
        [redirector]; `https=False` leaves the mirrors' https URLs out."""
        out = [
            "[redirector]",
            f'master = "{master or self.master}"',
            'trusted_proxies = ["127.0.0.1/32", "::1/128"]',
            # The per-file HEAD check would contact the mirrors: tests stay on loopback.
            "verify_files = false",
            *self.head,
            extra,
            "",
        ]
        for name in self.names if names is None else names:
            out += self.site(name).toml(https=https)
        return "\n".join(out)

    def config(
        self, names: Sequence[str] | None = None, *, master: str | None = None, extra: str = ""
    ) -> Settings:
        return parse_settings(self.config_text(names, master=master, extra=extra), "world.toml")


def _front(name: str, country: str, latitude: float, longitude: float) -> Site:
    return Site(name, country, latitude, longitude, mirror_url(name), mirror_url(name, "https"))


def mirror_url(name: str, scheme: str = "http") -> str:
    """A `FRONT` mirror's base URL."""
    return f"{scheme}://{name}.example/sme/"


FRONT = World(
    (
        _front("nl", "NL", 52.37, 4.90),
        _front("us", "US", 35.91, -79.05),
        _front("au", "AU", -37.81, 144.96),
    ),
    master="http://master.example/smeserver/",
)


def _status(name: str, country: str, latitude: float, longitude: float) -> Site:
    return Site(
        name,
        country,
        latitude,
        longitude,
        http=f"http://127.0.0.1:9/{name}/",
        https=f"https://127.0.0.1:9/{name}/",
        ipv6=True,
        enabled=name != "is-co-za",
    )


STATUS = World(
    (
        _status("nluug", "NL", 52.37, 4.90),
        _status("mirrorservice", "GB", 51.30, 1.07),
        _status("opencare", "FR", 50.69, 3.17),
        _status("contribs-fr", "FR", 48.86, 2.35),
        _status("ibiblio", "US", 35.91, -79.05),
        _status("pialasse", "CA", 45.50, -73.57),
        _status("is-co-za", "ZA", -26.20, 28.05),
        _status("pacific", "AU", -37.81, 144.96),
        _status("voxteneo", "ID", -6.21, 106.85),
    ),
    master="http://127.0.0.1:9/master/",
    head=('poll_interval = "5m"',),
)
# What each STATUS mirror shows on the status page with `states(now)` in the store.
EXPECTED = {
    "nluug": "fresh",
    "mirrorservice": "fresh",
    "opencare": "syncing",
    "contribs-fr": "down",
    "ibiblio": "fresh",
    "pialasse": "stale",
    "is-co-za": "disabled",
    "pacific": "broken",
    "voxteneo": "unchecked",
}


# --- stores ------------------------------------------------------------------------------------


async def fresh_store(names: Sequence[str], store: Store | None = None) -> Store:
    """A store in which the master was checked just now and every named mirror is current."""
    st = store if store is not None else MemoryStore()
    now = time.time()
    date = now - 3600
    await st.put_master(MasterState((MasterVersion(date, date),), now))
    await st.put_states(
        MirrorState(n, Status.UP, now, master_date=date, behind_since=None) for n in names
    )
    return st


def states(now: float) -> list[MirrorState]:
    """One state per kind for `STATUS`: fresh, syncing, down, stale, broken; voxteneo never
    checked."""
    fresh = MirrorState("x", Status.UP, now - 120, master_date=now - 7200, own_date=now - 7300)
    return [
        replace(fresh, name="nluug"),
        replace(
            fresh,
            name="mirrorservice",
            lacks=("obsolete/",),
            covered=("releases/", "contribs/"),
            coverage_at=now - 600,
            coverage_note="obsolete/: HTTP 404 at obsolete/",
        ),
        replace(fresh, name="ibiblio"),
        replace(fresh, name="opencare", status=Status.SYNCING),
        MirrorState(
            "contribs-fr",
            Status.DOWN,
            now - 90,
            error="cannot connect: refused",
            failures=4,
            retry_at=now + 300,
        ),
        replace(fresh, name="pialasse", master_date=now - 86400, behind_since=now - 9 * 3600),
        MirrorState(
            "pacific", Status.BROKEN, now - 60, error="not a trace: <html> <b>404</b>", failures=2
        ),
    ]


async def fill(store: Store, now: float | None = None) -> float:
    """Write the `STATUS` states and a master checked a minute ago; returns `now`."""
    now = time.time() if now is None else now
    await store.put_master(
        MasterState((MasterVersion(now - 7200, now - 7100),), checked_at=now - 60)
    )
    await store.put_states(states(now))
    return now


# The other two builders, through here like city_db: ip-location-db's flat city schema, and
# ASN files (either schema's `autonomous_system_number`).
flat_db = write_flat_mmdb
asn_db = write_asn_mmdb


def near_far(farm: Farm, extra: str = "", *, verify_timeout: str = "300ms") -> str:
    """Config text for two mirrors of `farm`: for a client in Amsterdam "near" (NL) comes first,
    then "far" (US); the master is the farm's too. `extra` goes into [redirector]."""
    return f"""
[redirector]
master = "{farm.url("master")}"
poll_interval = "1s"
probe_timeout = "1s"
verify_timeout = "{verify_timeout}"
{extra}

[[mirror]]
name = "near"
http = "{farm.url("near")}"
country = "NL"
latitude = 52.37
longitude = 4.90

[[mirror]]
name = "far"
http = "{farm.url("far")}"
country = "US"
latitude = 35.91
longitude = -79.05
"""
