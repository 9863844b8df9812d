"""GeoIP: where a client address is and which network holds it, read from MMDB files."""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final, TypeAlias

import geoip2.database
import geoip2.errors
import maxminddb
from cachetools import LRUCache

from redirector.config.settings import Settings
from redirector.core.continent import continent_of as _continent_of
from redirector.core.humanize import day
from redirector.core.models import Location

__all__ = [
    "ASN",
    "DEFAULT_PATHS",
    "FLAT_CITY",
    "MAXMIND_CITY",
    "GeoError",
    "GeoFile",
    "GeoReader",
    "find_database",
]

log = logging.getLogger(__name__)

_Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
_Lookup: TypeAlias = Callable[[_Address], Location | None]

MAXMIND_CITY: Final = "maxmind-city"  # nested GeoIP2 City schema: country.iso_code, location.*
FLAT_CITY: Final = "flat-city"  # one flat map per network: country_code, latitude, longitude
ASN: Final = "asn"  # autonomous_system_number per network: GeoLite2-ASN, ip-location-db asn

# Where the redirector looks when the settings name no file, best first: a paid GeoIP2 City
# before GeoLite2, geoipupdate's Debian directory before the others, DB-IP Lite last.
DEFAULT_PATHS: Final[tuple[Path, ...]] = (
    Path("/var/lib/GeoIP/GeoIP2-City.mmdb"),
    Path("/var/lib/GeoIP/GeoLite2-City.mmdb"),
    Path("/usr/share/GeoIP/GeoIP2-City.mmdb"),
    Path("/usr/share/GeoIP/GeoLite2-City.mmdb"),
    Path("/usr/local/share/GeoIP/GeoIP2-City.mmdb"),
    Path("/usr/local/share/GeoIP/GeoLite2-City.mmdb"),
    Path("/var/lib/GeoIP/dbip-city-lite.mmdb"),
    Path("/usr/share/GeoIP/dbip-city-lite.mmdb"),
    Path("/usr/local/share/GeoIP/dbip-city-lite.mmdb"),
)

# The C extension memory-maps the file; maxminddb's MODE_MMAP is the pure-Python reader over
# the same kind of map, several times slower per lookup, so it is only the fallback.
try:
    from maxminddb import extension as _extension
except ImportError:  # pragma: no cover - wheels ship the extension
    _MODE = maxminddb.MODE_MMAP
else:
    _MODE = maxminddb.MODE_MMAP_EXT if hasattr(_extension, "Reader") else maxminddb.MODE_MMAP

# How many networks, in file order, open() inspects to recognise the record schema.
_PROBE_RECORDS: Final = 64

# DB-IP Lite is CC BY 4.0: whoever shows results from it must credit DB-IP.
_DBIP_ATTRIBUTION: Final = "IP Geolocation by DB-IP (https://db-ip.com), CC BY 4.0"


# Older than this, a database has moved enough networks (reassigned blocks, new allocations)
# for routing to suffer; the free databases are rebuilt weekly or monthly.

IPV4_ONLY_NOTE: Final = (
    "the GeoIP database holds IPv4 networks only: IPv6 clients get no location "
    "and are spread by weight only"
)


class GeoError(Exception):
    """A GeoIP database that cannot be used; the message names the file and the problem."""


_AsnLookup: TypeAlias = Callable[[_Address], int | None]


class GeoFile:
    """One open MMDB file: what it holds (a city or ASN schema), for which address families."""

    __slots__ = ("build_epoch", "close", "database_type", "families", "kind", "lookup", "path")

    def __init__(
        self,
        path: Path,
        kind: str,
        database_type: str,
        build_epoch: int,
        families: frozenset[int],
        lookup: _Lookup | _AsnLookup,
        close: Callable[[], None],
    ) -> None:
        self.path = path
        self.kind = kind
        self.database_type = database_type
        self.build_epoch = build_epoch
        self.families = families  # 4 and/or 6: whose addresses it has networks for
        self.lookup = lookup
        self.close = close

    def describe(self) -> str:
        built = time.strftime("%Y-%m-%d", time.gmtime(self.build_epoch))
        only = "" if len(self.families) > 1 else f", IPv{min(self.families)} only"
        return f"{self.path} ({self.kind}, {self.database_type}{only}, built {built} UTC)"


# Answers kept per address. The router keeps each client it resolved, location included, so
# this cache serves the rest (mirror lists, explain pages) and stays small.
CACHE_SIZE = 1024


class GeoReader:
    """The open GeoIP files, memory-mapped, with an LRU cache of answers per address.

    One file or several: city files (either schema) say where an address is, ASN files which
    autonomous system holds it; the IPv4 and IPv6 halves may come as separate files (as
    ip-location-db ships them). For each address the first file, in the order given, that
    holds the address's family and knows it answers. Not thread-safe: meant for one event
    loop, which is where every request runs.
    """

    def __init__(self, files: Sequence[GeoFile], *, cache_size: int) -> None:
        """Use `GeoReader.open` or `open_all`; this only assembles already opened files."""
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, not {cache_size}")
        self.files = tuple(files)
        self._cities = tuple(f for f in self.files if f.kind != ASN)
        self._asns = tuple(f for f in self.files if f.kind == ASN)
        main = self._cities[0] if self._cities else self.files[0]
        self.path = main.path
        self.kind = main.kind
        self.database_type = main.database_type
        self.build_epoch = main.build_epoch
        self._damaged: set[Path] = set()  # files logged once as damaged
        self._cache: LRUCache[object, tuple[Location | None, int | None]] = LRUCache(
            maxsize=cache_size
        )

    @classmethod
    def open(cls, path: str | Path, *, cache_size: int = CACHE_SIZE) -> GeoReader:
        """Open and memory-map the city database at `path` and recognise its schema.

        The schema is decided by the records, not the vendor: open() reads up to the first
        64 networks in file order. A record holding a `location` or `country` map is the
        MaxMind GeoIP2 City schema (GeoLite2-City, GeoIP2-City, DB-IP's own DBIP-City-Lite)
        and is read through geoip2, which also demands "City" in the metadata database_type.
        A record with top-level `latitude` and `longitude` is the flat schema of the
        ip-location-db DB-IP Lite files and is read through maxminddb. Anything else
        (ASN, ISP, country-only databases) is refused here; `open_all` takes ASN files too.

        Raises GeoError when the file is missing or unreadable, is not an MMDB file, or holds
        no city schema; ValueError when `cache_size` is below 1.
        """
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, not {cache_size}")
        return cls([_open_file(Path(path), asn=False)], cache_size=cache_size)

    @classmethod
    def open_all(cls, paths: Iterable[str | Path], *, cache_size: int = CACHE_SIZE) -> GeoReader:
        """Open every file in `paths`: city files as `open` reads them, and ASN files (a record
        with `autonomous_system_number`: GeoLite2-ASN, ip-location-db's asn files).

        All or nothing: GeoError for the first file that cannot be used (the others are
        closed again), or when `paths` is empty.
        """
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, not {cache_size}")
        opened: list[GeoFile] = []
        try:
            for path in paths:
                opened.append(_open_file(Path(path), asn=True))
        except BaseException:
            for f in opened:
                f.close()
            raise
        if not opened:
            raise GeoError("no GeoIP database files given")
        return cls(opened, cache_size=cache_size)

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(f.path for f in self.files)

    def locate(self, ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> Location | None:
        """Where `ip` is, or None when unknown.

        None for: an invalid address, a non-global one (private, loopback, link-local,
        reserved, multicast, unspecified; the database is not consulted), an address no city
        file has a network for, or a record without coordinates. An IPv4-mapped IPv6 address
        is looked up as its IPv4 address. Answers, None included, are cached per argument,
        so a repeated address costs one dict lookup and no parsing.
        """
        return self._answer(ip)[0]

    def asn(self, ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> int | None:
        """The autonomous system number of `ip` from the ASN files, None when unknown."""
        return self._answer(ip)[1]

    def close(self) -> None:
        """Unmap the files; closing twice is harmless. Later lookups raise ValueError."""
        for f in self.files:
            f.close()
        self._cache.clear()

    def describe(self) -> str:
        """One line for logs and the health view: each file's path, schema, type, build date."""
        return "; ".join(f.describe() for f in self.files)

    def warnings(self, now: float, max_age: float) -> list[str]:
        """What an operator should hear at `now`: a family no city file covers, a file older
        than `max_age` seconds (locations go wrong as networks move)."""
        out: list[str] = []
        covered = frozenset().union(*(f.families for f in self._cities))
        if covered == {4}:
            out.append(IPV4_ONLY_NOTE)
        else:
            out.extend(
                f"no GeoIP city database for IPv{family}: those clients go unlocated"
                for family in (4, 6)
                if family not in covered
            )
        for f in self.files:
            age = now - f.build_epoch
            if age > max_age:
                out.append(
                    f"the GeoIP database {f.path} was built {day(f.build_epoch)}, "
                    f"{age / 86400:.0f} days ago (more than {max_age / 86400:.0f}): update it, "
                    "locations go wrong as networks move"
                )
        return out

    @property
    def attribution(self) -> str | None:
        """The credit line a page showing results must carry (DB-IP Lite), else None."""
        for f in self.files:
            if "dbip" in f.database_type.lower() or "dbip" in f.path.name.lower():
                return _DBIP_ATTRIBUTION
        return None

    @property
    def ipv4_only(self) -> bool:
        """No city file covers IPv6: every IPv6 client is without a location."""
        covered = frozenset().union(*(f.families for f in self._cities))
        return 4 in covered and 6 not in covered

    @property
    def cached(self) -> int:
        """How many addresses the lookup cache holds now."""
        return len(self._cache)

    def _answer(self, ip: object) -> tuple[Location | None, int | None]:
        cache = self._cache
        try:
            return cache[ip]
        except KeyError:
            pass
        answer = self._resolve(ip)
        cache[ip] = answer
        return answer

    def _resolve(self, ip: object) -> tuple[Location | None, int | None]:
        address = _global_address(ip)
        if address is None:
            return _UNKNOWN
        location: Location | None = None
        for f in self._cities:
            if address.version in f.families:
                found = self._ask(f, address)
                if isinstance(found, Location):
                    location = found
                    break
        asn: int | None = None
        for f in self._asns:
            if address.version in f.families:
                number = self._ask(f, address)
                if isinstance(number, int):
                    asn = number
                    break
        return (location, asn) if location is not None or asn is not None else _UNKNOWN

    def _ask(self, f: GeoFile, address: _Address) -> Location | int | None:
        try:
            return f.lookup(address)
        except maxminddb.InvalidDatabaseError as err:
            problem = str(err)
        # A file damaged in place (not replaced by rename) fails only at the records it breaks;
        # those addresses go location-blind rather than failing their requests. Logged once
        # per file, without a traceback: the message says all there is.
        if f.path not in self._damaged:
            self._damaged.add(f.path)
            log.error("%s: damaged GeoIP database, some lookups fail: %s", f.path, problem)
        return None


_UNKNOWN: Final[tuple[Location | None, int | None]] = (None, None)


def _open_file(path: Path, *, asn: bool) -> GeoFile:
    """Open one file as a city file, or (with `asn`) an ASN file; see `GeoReader.open`."""
    reader = _open_mmdb(path)
    try:
        metadata = reader.metadata()
        database_type = str(metadata.database_type)
        kind, has_ipv4 = _detect_kind(reader, path, database_type, asn=asn)
    except BaseException:
        reader.close()
        raise
    ip_version = int(metadata.ip_version)
    # A v6 file holds IPv4 only when it has networks under ::/96, which come first in file
    # order: ip-location-db's IPv6 halves have none, GeoLite2's single file has them.
    families = frozenset({4}) if ip_version == 4 else frozenset({6, 4} if has_ipv4 else {6})
    lookup: _Lookup | _AsnLookup
    close: Callable[[], None]
    if kind == MAXMIND_CITY:
        reader.close()
        city_reader = _open_geoip2(path)
        lookup = _maxmind_lookup(city_reader)
        close = city_reader.close
    elif kind == ASN:
        lookup = _asn_lookup(reader)
        close = reader.close
    else:
        lookup = _flat_lookup(reader)
        close = reader.close
    return GeoFile(path, kind, database_type, int(metadata.build_epoch), families, lookup, close)


def find_database(candidates: Iterable[Path] = DEFAULT_PATHS) -> Path | None:
    """The first candidate that exists as a file, or None.

    Existence only: an unreadable or broken file is still returned, so that
    `GeoReader.open` can say what is wrong with it instead of it being skipped silently.
    """
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def _global_address(ip: object) -> _Address | None:
    """`ip` as an address worth looking up: parsed, IPv4-mapped unwrapped, globally routed."""
    address: _Address
    if isinstance(ip, str):
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return None
    elif isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
        address = ip
    else:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # is_global is True for multicast (224.0.0.0/4, ff00::/8); no client sends from there.
    if not address.is_global or address.is_multicast:
        return None
    return address


def _open_mmdb(path: Path) -> maxminddb.Reader:
    if path.is_dir():
        raise GeoError(f"{path}: is a directory, not a GeoIP database file")
    try:
        return maxminddb.open_database(path, _MODE)
    except FileNotFoundError:
        raise GeoError(f"{path}: GeoIP database not found") from None
    except OSError as err:
        raise GeoError(f"{path}: cannot open GeoIP database: {err.strerror or err}") from None
    except (maxminddb.InvalidDatabaseError, ValueError):
        # The library's own message repeats the path; ValueError: an empty file cannot be
        # memory-mapped by the pure-Python reader.
        raise GeoError(f"{path}: not a MaxMind DB (.mmdb) file") from None


def _open_geoip2(path: Path) -> geoip2.database.Reader:
    try:
        return geoip2.database.Reader(path, mode=_MODE)
    except OSError as err:  # replaced or removed between the two opens
        raise GeoError(f"{path}: cannot open GeoIP database: {err.strerror or err}") from None
    except (maxminddb.InvalidDatabaseError, ValueError):
        raise GeoError(f"{path}: not a MaxMind DB (.mmdb) file") from None


def _detect_kind(
    reader: maxminddb.Reader, path: Path, database_type: str, *, asn: bool
) -> tuple[str, bool]:
    """Which schema the records use (see `GeoReader.open` for the rule), and whether the
    first network is an IPv4 one."""
    seen = 0
    first_ipv4 = False
    try:
        for network, record in reader:
            if seen == 0:
                first_ipv4 = network.version == 4
            if isinstance(record, Mapping):
                if asn and isinstance(record.get("autonomous_system_number"), int):
                    return ASN, first_ipv4
                if isinstance(record.get("location"), Mapping) or isinstance(
                    record.get("country"), Mapping
                ):
                    if "City" not in database_type:
                        raise GeoError(
                            f"{path}: database type {database_type!r} is not a City database;"
                            " it has no coordinates"
                        )
                    return MAXMIND_CITY, first_ipv4
                if "latitude" in record and "longitude" in record:
                    return FLAT_CITY, first_ipv4
            seen += 1
            if seen >= _PROBE_RECORDS:
                break
    except maxminddb.InvalidDatabaseError as err:
        raise GeoError(f"{path}: corrupt MaxMind DB file ({err})") from None
    if seen == 0:
        raise GeoError(f"{path}: database {database_type!r} holds no networks")
    raise GeoError(
        f"{path}: database {database_type!r} is not a city database: none of its first"
        f" {seen} records has a location (need GeoLite2-City, GeoIP2-City or DB-IP City Lite)"
    )


_PLACES: dict[tuple[str | None, str | None, float, float], Location] = {}
PLACES = 65536  # distinct locations kept: a GeoLite2-City file has fewer than that in use


def place(
    country: str | None, continent: str | None, latitude: float, longitude: float
) -> Location:
    """The one Location for these values: clients far outnumber the places they are at, and
    every cached client (here and in the router) holds its location."""
    key = (country, continent, latitude, longitude)
    found = _PLACES.get(key)
    if found is None:
        if len(_PLACES) >= PLACES:
            _PLACES.clear()
        found = _PLACES[key] = Location(
            country=country, continent=continent, latitude=latitude, longitude=longitude
        )
    return found


def _maxmind_lookup(reader: geoip2.database.Reader) -> _Lookup:
    def lookup(address: _Address) -> Location | None:
        try:
            city = reader.city(address)
        except geoip2.errors.AddressNotFoundError:
            return None
        latitude = city.location.latitude
        longitude = city.location.longitude
        if latitude is None or longitude is None:
            return None
        country = city.country.iso_code
        return place(country, city.continent.code or _continent_of(country), latitude, longitude)

    return lookup


def _asn_lookup(reader: maxminddb.Reader) -> _AsnLookup:
    def lookup(address: _Address) -> int | None:
        record = reader.get(address)
        if not isinstance(record, Mapping):
            return None
        number = record.get("autonomous_system_number")
        if isinstance(number, bool) or not isinstance(number, int) or number <= 0:
            return None
        return number

    return lookup


def _flat_lookup(reader: maxminddb.Reader) -> _Lookup:
    def lookup(address: _Address) -> Location | None:
        record = reader.get(address)
        if not isinstance(record, Mapping):
            return None
        latitude = _coordinate(record.get("latitude"), 90.0)
        longitude = _coordinate(record.get("longitude"), 180.0)
        if latitude is None or longitude is None:
            return None
        country = _code(record.get("country_code"))
        continent = _code(record.get("continent_code")) or _code(record.get("continent"))
        return place(country, continent or _continent_of(country), latitude, longitude)

    return lookup


def _coordinate(value: object, limit: float) -> float | None:
    """A latitude or longitude as the flat files store it: a double, or a decimal string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None  # "" for networks the source could not place
    elif isinstance(value, int | float):
        number = float(value)
    else:
        return None
    if not math.isfinite(number) or abs(number) > limit:
        return None
    return number


def _code(value: object) -> str | None:
    """A two-letter country or continent code, upper case; None for blanks and "ZZ"."""
    if isinstance(value, str) and len(value) == 2 and value.isascii() and value.isalpha():
        code = value.upper()
        return None if code == "ZZ" else code  # ZZ: "unknown" in ISO 3166 user space
    return None


def geo_paths(settings: Settings) -> tuple[Path, ...]:
    """The GeoIP files the settings ask for: geoip_databases, else geoip_db, else the first
    city file found in the usual places (none when searching is off)."""
    if settings.geoip_databases:
        return settings.geoip_databases
    if settings.geoip_db is not None:
        return (settings.geoip_db,)
    if settings.geoip_search:
        found = find_database()
        return () if found is None else (found,)
    return ()


def open_paths(settings: Settings, paths: Sequence[Path]) -> GeoReader:
    """Open `paths` (from `geo_paths`): several files as a set, a single geoip_db as a city file."""
    if settings.geoip_databases:
        return GeoReader.open_all(paths)
    return GeoReader.open(paths[0])


def open_geo(settings: Settings) -> tuple[GeoReader | None, str | None]:
    """The GeoIP reader the settings ask for, or None with the warning to show for it.

    With a reader the warning, if any, names what it lacks (a family without a city file) or
    a file that is old.
    """
    paths = geo_paths(settings)
    if not paths:
        return None, "no GeoIP database found: location-blind, mirrors spread by weight only"
    try:
        reader = open_paths(settings, paths)
    except GeoError as e:
        return None, f"GeoIP database unusable, location-blind: {e}"
    said = reader.warnings(time.time(), settings.geoip_max_age)
    return reader, "; ".join(said) if said else None
