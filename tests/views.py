"""Shared by the operator-view tests: a mirror set with every state, and a known store."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from redirector.config.settings import Settings, parse_settings
from redirector.core.models import MasterState, MasterVersion, MirrorState, Status
from redirector.geo import GeoReader
from redirector.store.base import Store
from tests.mmdb_build import CityRecord, write_city_mmdb

NL_CLIENT = "145.100.1.7"
US_CLIENT = "152.2.10.20"
NL6_CLIENT = "2001:610:1:2::5"
REPOMD = "releases/10/smeos/x86_64/repodata/repomd.xml"

# name, country, latitude, longitude, state the poller left (see `states`)
MIRRORS = (
    ("nluug", "NL", 52.37, 4.90),
    ("mirrorservice", "GB", 51.30, 1.07),
    ("opencare", "FR", 50.69, 3.17),
    ("contribs-fr", "FR", 48.86, 2.35),
    ("ibiblio", "US", 35.91, -79.05),
    ("pialasse", "CA", 45.50, -73.57),
    ("is-co-za", "ZA", -26.20, 28.05),
    ("pacific", "AU", -37.81, 144.96),
    ("voxteneo", "ID", -6.21, 106.85),
)
# What each mirror shows on the status page with `states(now)` in the store.
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


def config_text(master: str = "http://127.0.0.1:9/master/", extra: str = "") -> str:
    """Nine mirrors on loopback-only URLs (nothing is ever fetched from them)."""
    blocks = []
    for name, cc, lat, lon in MIRRORS:
        enabled = "false" if name == "is-co-za" else "true"
        blocks.append(
            f"""
[[mirror]]
name = "{name}"
http = "http://127.0.0.1:9/{name}/"
https = "https://127.0.0.1:9/{name}/"
country = "{cc}"
latitude = {lat}
longitude = {lon}
ipv6 = true
enabled = {enabled}
"""
        )
    head = f"""
[redirector]
master = "{master}"
poll_interval = "5m"
verify_files = false  # the mirrors are not real: no HEAD checks
trusted_proxies = ["127.0.0.1/32", "::1/128"]
{extra}
"""
    return head + "".join(blocks)


def config(master: str = "http://127.0.0.1:9/master/", extra: str = "") -> Settings:
    return parse_settings(config_text(master, extra), "views.toml")


def states(now: float) -> list[MirrorState]:
    """One state per kind: fresh, syncing, down, stale, broken; voxteneo never checked."""
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
    """Write the known states and a master checked a minute ago; returns `now`."""
    now = time.time() if now is None else now
    await store.put_master(
        MasterState((MasterVersion(now - 7200, now - 7100),), checked_at=now - 60)
    )
    await store.put_states(states(now))
    return now


def geo(tmp_path: Path) -> GeoReader:
    db = write_city_mmdb(
        tmp_path / "city.mmdb",
        {
            "145.100.0.0/16": CityRecord("NL", "EU", 52.37, 4.90),
            "152.2.0.0/16": CityRecord("US", "NA", 35.91, -79.05),
            "2001:610::/32": CityRecord("NL", "EU", 52.37, 4.90),
        },
    )
    return GeoReader.open(db)
