"""Test data: small real MMDB files in the MaxMind City and the flat DB-IP Lite schemas.

Built with the `mmdb-writer` package. What it does with values, read from its source
(0.2.7): a Python float is always written as a double (its `float_type` only applies to
the MmdbF32/MmdbF64 wrappers), an int as the smallest unsigned type that holds it (int32
when negative), a dict as a map. Metadata gets `database_type`, `languages` and a
`description` per language as given, and `build_epoch` from the clock at write time
(`_Writer` below pins it). Networks are inserted shortest prefix first: the writer splits a
leaf for a more specific network inserted later, but a shorter one inserted later would
replace the longer ones under it.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter
from netaddr import IPSet

__all__ = [
    "CityRecord",
    "sample_networks",
    "write_asn_mmdb",
    "write_city_mmdb",
    "write_flat_mmdb",
    "write_mmdb",
]


@dataclass(frozen=True, slots=True)
class CityRecord:
    """What a test database says about one network."""

    country: str
    continent: str
    latitude: float
    longitude: float


class _Writer(MMDBWriter):
    """MMDBWriter with a chosen build_epoch (the base class always writes the current time)."""

    def __init__(self, *, build_epoch: int | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._build_epoch = build_epoch

    def _build_meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = super()._build_meta()
        if self._build_epoch is not None:
            meta["build_epoch"] = self._build_epoch
        return meta


def write_mmdb(
    path: Path,
    records: Mapping[str, Mapping[str, Any]],
    *,
    database_type: str,
    ip_version: int = 6,
    build_epoch: int | None = None,
) -> Path:
    """Write `records` (CIDR -> record map, as stored) to `path` and return `path`.

    With ip_version 6, IPv4 networks go where real GeoLite2 files put them: under ::/96,
    where readers look IPv4 addresses up, and again under ::ffff:0:0/96 so that a raw
    lookup of an IPv4-mapped address finds them too. More specific networks win over the
    networks containing them, whatever the order of `records`.
    """
    writer = _Writer(
        ip_version=ip_version,
        database_type=database_type,
        languages=["en"],
        description={"en": f"{database_type} test database"},
        ipv4_compatible=ip_version == 6,
        build_epoch=build_epoch,
    )
    networks = sorted(
        ((ipaddress.ip_network(cidr), record) for cidr, record in records.items()),
        key=lambda item: item[0].prefixlen + (96 if item[0].version == 4 else 0),
    )
    for network, record in networks:
        content = dict(record)
        writer.insert_network(IPSet([str(network)]), content)
        if ip_version == 6 and network.version == 4:
            mapped = f"::ffff:{network.network_address}/{96 + network.prefixlen}"
            writer.insert_network(IPSet([mapped]), content)
    writer.to_db_file(str(path))
    return path


def write_city_mmdb(
    path: Path,
    networks: Mapping[str, CityRecord],
    *,
    database_type: str = "GeoLite2-City",
    ip_version: int = 6,
    build_epoch: int | None = None,
) -> Path:
    """A MaxMind GeoIP2 City schema file (nested maps), as GeoLite2-City or DBIP-City-Lite."""
    records = {cidr: _city_record(record) for cidr, record in networks.items()}
    return write_mmdb(
        path,
        records,
        database_type=database_type,
        ip_version=ip_version,
        build_epoch=build_epoch,
    )


def write_flat_mmdb(
    path: Path,
    networks: Mapping[str, CityRecord],
    *,
    database_type: str | None = None,
    ip_version: int = 6,
    build_epoch: int | None = None,
    string_coordinates: bool = False,
    continent_key: str | None = None,
) -> Path:
    """A flat schema file, one map per network, as the ip-location-db DB-IP Lite files.

    Those files (made by ip-location-to-mmdb) are typed "city ipv4" or "city ipv6", the
    default here, store `latitude`/`longitude` as decimal strings and carry no continent;
    `string_coordinates` reproduces the strings, and `continent_key` ("continent_code" or
    "continent") adds a continent field.
    """
    records = {
        cidr: _flat_record(record, string_coordinates, continent_key)
        for cidr, record in networks.items()
    }
    return write_mmdb(
        path,
        records,
        database_type=database_type or f"city ipv{ip_version}",
        ip_version=ip_version,
        build_epoch=build_epoch,
    )


def write_asn_mmdb(
    path: Path,
    networks: Mapping[str, int],
    *,
    database_type: str = "GeoLite2-ASN",
    ip_version: int = 6,
    build_epoch: int | None = None,
) -> Path:
    """An ASN file: GeoLite2-ASN's records, which ip-location-db's asn files share (typed
    "asn ipv4" / "asn ipv6" there). `networks` maps CIDR -> AS number."""
    records = {
        cidr: {
            "autonomous_system_number": asn,
            "autonomous_system_organization": f"AS{asn} test network",
        }
        for cidr, asn in networks.items()
    }
    return write_mmdb(
        path, records, database_type=database_type, ip_version=ip_version, build_epoch=build_epoch
    )


def sample_networks(count: int, *, seed: int = 0) -> dict[str, CityRecord]:
    """`count` distinct global networks, half IPv4 /24s and half IPv6 /32s, random places."""
    rng = random.Random(seed)
    places = [
        CityRecord("NL", "EU", 52.37, 4.89),
        CityRecord("DE", "EU", 50.11, 8.68),
        CityRecord("US", "NA", 39.04, -77.49),
        CityRecord("BR", "SA", -23.55, -46.63),
        CityRecord("JP", "AS", 35.69, 139.69),
        CityRecord("AU", "OC", -33.87, 151.21),
        CityRecord("ZA", "AF", -26.20, 28.05),
    ]
    networks: dict[str, CityRecord] = {}
    ipv4 = ipaddress.IPv4Network("1.0.0.0/24")
    index = 0
    while len(networks) < count:
        if index % 2 == 0:
            while not ipv4.is_global or ipv4.is_multicast:
                ipv4 = _next_ipv4(ipv4)
            cidr = str(ipv4)
            ipv4 = _next_ipv4(ipv4)
        else:
            cidr = f"2a{(index >> 17) & 0xFF:02x}:{(index >> 1) & 0xFFFF:x}::/32"
        networks[cidr] = rng.choice(places)
        index += 1
    return networks


def _next_ipv4(network: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    # A prime stride of /24s spreads the networks over the address space.
    start = (int(network.network_address) + 7919 * 256) % 2**32
    return ipaddress.IPv4Network((start, 24))


def _city_record(record: CityRecord) -> dict[str, Any]:
    country = {"iso_code": record.country, "names": {"en": record.country}}
    return {
        "continent": {"code": record.continent, "names": {"en": record.continent}},
        "country": country,
        "registered_country": country,
        "location": {
            "accuracy_radius": 100,
            "latitude": float(record.latitude),
            "longitude": float(record.longitude),
        },
    }


def _flat_record(
    record: CityRecord, string_coordinates: bool, continent_key: str | None
) -> dict[str, Any]:
    latitude: float | str = float(record.latitude)
    longitude: float | str = float(record.longitude)
    if string_coordinates:
        latitude, longitude = str(latitude), str(longitude)
    flat: dict[str, Any] = {
        "city": "",
        "country_code": record.country,
        "latitude": latitude,
        "longitude": longitude,
        "postcode": "",
        "state1": "",
        "state2": "",
        "timezone": "",
    }
    if continent_key is not None:
        flat[continent_key] = record.continent
    return flat
