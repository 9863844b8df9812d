"""GeoIP: where a client address is, read from a MaxMind-format (MMDB) city database."""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Final, TypeAlias

import geoip2.database
import geoip2.errors
import maxminddb
from cachetools import LRUCache

from redirector.config.settings import Settings
from redirector.core.humanize import day
from redirector.core.models import Location

__all__ = [
    "DEFAULT_PATHS",
    "FLAT_CITY",
    "MAXMIND_CITY",
    "GeoError",
    "GeoReader",
    "find_database",
]

log = logging.getLogger(__name__)

_Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
_Lookup: TypeAlias = Callable[[_Address], Location | None]

MAXMIND_CITY: Final = "maxmind-city"  # nested GeoIP2 City schema: country.iso_code, location.*
FLAT_CITY: Final = "flat-city"  # one flat map per network: country_code, latitude, longitude

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


class GeoError(Exception):
    """A GeoIP database that cannot be used; the message names the file and the problem."""


class GeoReader:
    """One open city database, memory-mapped, with an LRU cache of answers per address.

    Not thread-safe: meant for one event loop, which is where every request runs.
    """

    path: Path
    kind: str
    database_type: str
    build_epoch: int

    def __init__(
        self,
        path: Path,
        *,
        kind: str,
        database_type: str,
        build_epoch: int,
        ip_version: int,
        lookup: _Lookup,
        close: Callable[[], None],
        cache_size: int,
    ) -> None:
        """Use `GeoReader.open`; this only assembles an already opened database."""
        self.path = path
        self.kind = kind
        self.database_type = database_type
        self.build_epoch = build_epoch
        self._ipv4_only = ip_version == 4
        self._lookup = lookup
        self._close = close
        self._damaged = False  # logged once that the file is damaged
        self._cache: LRUCache[object, Location | None] = LRUCache(maxsize=cache_size)

    @classmethod
    def open(cls, path: str | Path, *, cache_size: int = 65536) -> GeoReader:
        """Open and memory-map the database at `path` and recognise its schema.

        The schema is decided by the records, not the vendor: open() reads up to the first
        64 networks in file order. A record holding a `location` or `country` map is the
        MaxMind GeoIP2 City schema (GeoLite2-City, GeoIP2-City, DB-IP's own DBIP-City-Lite)
        and is read through geoip2, which also demands "City" in the metadata database_type.
        A record with top-level `latitude` and `longitude` is the flat schema of the
        ip-location-db DB-IP Lite files and is read through maxminddb. Anything else
        (ASN, ISP, country-only databases) is refused.

        Raises GeoError when the file is missing or unreadable, is not an MMDB file, or holds
        no city schema; ValueError when `cache_size` is below 1.
        """
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, not {cache_size}")
        path = Path(path)
        reader = _open_mmdb(path)
        try:
            metadata = reader.metadata()
            database_type = str(metadata.database_type)
            kind = _detect_kind(reader, path, database_type)
        except BaseException:
            reader.close()
            raise
        lookup: _Lookup
        close: Callable[[], None]
        if kind == MAXMIND_CITY:
            reader.close()
            city_reader = _open_geoip2(path)
            lookup = _maxmind_lookup(city_reader)
            close = city_reader.close
        else:
            lookup = _flat_lookup(reader)
            close = reader.close
        return cls(
            path,
            kind=kind,
            database_type=database_type,
            build_epoch=int(metadata.build_epoch),
            ip_version=int(metadata.ip_version),
            lookup=lookup,
            close=close,
            cache_size=cache_size,
        )

    def locate(self, ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> Location | None:
        """Where `ip` is, or None when unknown.

        None for: an invalid address, a non-global one (private, loopback, link-local,
        reserved, multicast, unspecified; the database is not consulted), an address the
        database has no network for, or a record without coordinates. An IPv4-mapped IPv6
        address is looked up as its IPv4 address. Answers, None included, are cached per
        argument, so a repeated address costs one dict lookup and no parsing.
        """
        cache = self._cache
        try:
            return cache[ip]
        except KeyError:
            pass
        location = self._resolve(ip)
        cache[ip] = location
        return location

    def close(self) -> None:
        """Unmap the database; closing twice is harmless. Later lookups raise ValueError."""
        self._close()
        self._cache.clear()

    def describe(self) -> str:
        """One line for logs and the health view: path, schema, database type, build date."""
        built = day(self.build_epoch)
        return f"{self.path} ({self.kind}, {self.database_type}, built {built} UTC)"

    @property
    def attribution(self) -> str | None:
        """The credit line a page showing results must carry (DB-IP Lite), else None."""
        if "dbip" in self.database_type.lower() or "dbip" in self.path.name.lower():
            return _DBIP_ATTRIBUTION
        return None

    @property
    def cached(self) -> int:
        """How many addresses the lookup cache holds now."""
        return len(self._cache)

    def _resolve(self, ip: object) -> Location | None:
        address = _global_address(ip)
        if address is None:
            return None
        if self._ipv4_only and address.version == 6:
            return None  # the reader would raise: the file has no IPv6 tree
        try:
            return self._lookup(address)
        except maxminddb.InvalidDatabaseError as err:
            problem = str(err)
        # A file damaged in place (not replaced by rename) fails only at the records it breaks;
        # those addresses go location-blind rather than failing their requests. Logged once,
        # without a traceback: the message says all there is.
        if not self._damaged:
            self._damaged = True
            log.error("%s: damaged GeoIP database, some lookups fail: %s", self.path, problem)
        return None


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


def _detect_kind(reader: maxminddb.Reader, path: Path, database_type: str) -> str:
    """Which schema the records use; see `GeoReader.open` for the rule."""
    seen = 0
    try:
        for _network, record in reader:
            if isinstance(record, Mapping):
                if isinstance(record.get("location"), Mapping) or isinstance(
                    record.get("country"), Mapping
                ):
                    if "City" not in database_type:
                        raise GeoError(
                            f"{path}: database type {database_type!r} is not a City database;"
                            " it has no coordinates"
                        )
                    return MAXMIND_CITY
                if "latitude" in record and "longitude" in record:
                    return FLAT_CITY
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
        return Location(
            country=country,
            continent=city.continent.code or _continent_of(country),
            latitude=latitude,
            longitude=longitude,
        )

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
        return Location(
            country=country,
            continent=continent or _continent_of(country),
            latitude=latitude,
            longitude=longitude,
        )

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


def _continent_of(country: str | None) -> str | None:
    return None if country is None else _CONTINENT_OF.get(country)


# ISO 3166-1 alpha-2 (plus XK, Kosovo) to continent, as GeoNames assigns them; MaxMind's
# continent codes come from GeoNames too, so both schemas answer alike.
_CONTINENT_OF: Final[Mapping[str, str]] = {
    country: continent
    for continent, countries in {
        "AF": "AO BF BI BJ BW CD CF CG CI CM CV DJ DZ EG EH ER ET GA GH GM GN GQ GW KE KM LR LS"
        " LY MA MG ML MR MU MW MZ NA NE NG RE RW SC SD SH SL SN SO SS ST SZ TD TG TN TZ UG YT"
        " ZA ZM ZW",
        "AN": "AQ BV GS HM TF",
        "AS": "AE AF AM AZ BD BH BN BT CC CN CX GE HK ID IL IN IO IQ IR JO JP KG KH KP KR KW KZ"
        " LA LB LK MM MN MO MV MY NP OM PH PK PS QA SA SG SY TH TJ TM TR TW UZ VN YE",
        "EU": "AD AL AT AX BA BE BG BY CH CY CZ DE DK EE ES FI FO FR GB GG GI GR HR HU IE IM IS"
        " IT JE LI LT LU LV MC MD ME MK MT NL NO PL PT RO RS RU SE SI SJ SK SM UA VA XK",
        "NA": "AG AI AW BB BL BM BQ BS BZ CA CR CU CW DM DO GD GL GP GT HN HT JM KN KY LC MF MQ"
        " MS MX NI PA PM PR SV SX TC TT US VC VG VI",
        "OC": "AS AU CK FJ FM GU KI MH MP NC NF NR NU NZ PF PG PN PW SB TK TL TO TV UM VU WF WS",
        "SA": "AR BO BR CL CO EC FK GF GY PE PY SR UY VE",
    }.items()
    for country in countries.split()
}


def open_geo(settings: Settings) -> tuple[GeoReader | None, str | None]:
    """The GeoIP reader the settings ask for, or None with the warning to show for it."""
    path = settings.geoip_db
    if path is None and settings.geoip_search:
        path = find_database()
    if path is None:
        return None, "no GeoIP database found: location-blind, mirrors spread by weight only"
    try:
        return GeoReader.open(path), None
    except GeoError as e:
        return None, f"GeoIP database unusable, location-blind: {e}"
