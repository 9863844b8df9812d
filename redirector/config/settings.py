"""Typed settings: one TOML file read once, validated, and passed in to everything else."""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from redirector.config.table import Key, keys_of, mirror_key, setting, spec
from redirector.core.models import Mirror
from redirector.core.topology import FALLBACK_MODES, listen_names, names_url, normalize_name

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_TRUSTED = ("127.0.0.1/32", "::1/128")
# Directory index requests (HEAD) that prove a subtree is there; settings key coverage_probes.
DEFAULT_COVERAGE_PROBES = (
    ("releases/", "releases/"),
    ("releases/testing/", "releases/testing/"),
    ("contribs/", "contribs/"),
    ("obsolete/", "obsolete/"),
)

# The yum repositories SME Server's templates ask mirror lists for (DOMAIN.md section 1).
SME_REPOS = (
    "smeos", "smeupdates", "smeupdates-testing", "smeextras", "smeaddons", "smecontribs",
    "smecontribs-testing", "smetest", "smedev",
)  # fmt: skip


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file, line and field."""

    def __init__(self, path: Path | str, line: int | None, where: str, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.where = where
        self.message = message
        loc = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{loc}: {where}: {message}" if where else f"{loc}: {message}")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """'8h', '5m', '1h30m', '250ms' or a number of seconds -> seconds; ValueError otherwise."""
    if isinstance(value, bool):
        raise TypeError(f"expected a duration like '5m', got {value!r}")
    if isinstance(value, int | float):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"expected a positive duration, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise TypeError(f"expected a duration like '5m', got {value!r}")
    text = value.strip().replace(" ", "")
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"cannot read {value!r} as a duration (use e.g. '30s', '5m', '8h', '1d')")
    return total


def parse_listen(value: str) -> tuple[str, int]:
    """'127.0.0.1:8080', '[::1]:8080' or ':8080' -> (host, port)."""
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]]*):(\d+)", value.strip())
    if not m:
        raise ValueError(f"expected 'host:port' or '[v6]:port', got {value!r}")
    host = m.group(1) if m.group(1) is not None else (m.group(3) or "0.0.0.0")  # noqa: S104  # ':8080' means every address, as in nginx
    port = int(m.group(2) or m.group(4))
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range 1..65535")
    return host, port


def normalize_base_url(value: object, schemes: tuple[str, ...]) -> str:
    """A tree root URL: given scheme, a host, no query or fragment; returned ending in '/'."""
    if not isinstance(value, str):
        raise TypeError(f"expected a URL string, got {value!r}")
    parts = urlsplit(value.strip())
    if parts.scheme not in schemes:
        raise ValueError(f"{value!r} is not a {' or '.join(schemes)} URL")
    if not parts.hostname:
        raise ValueError(f"{value!r} has no host")
    # "?" and "#" even when empty: "http://h/sme/?" would put every path into the query.
    if "?" in value or "#" in value or "@" in parts.netloc:
        raise ValueError(f"{value!r} must not carry a query, fragment or user info")
    try:
        _ = parts.port
    except ValueError as e:
        raise ValueError(f"{value!r} has a bad port") from e
    url = value.strip()
    return url if url.endswith("/") else url + "/"


def normalize_subtree(value: object) -> str:
    """'obsolete' or '/releases/testing/' -> 'releases/testing/' (relative, one trailing slash)."""
    if not isinstance(value, str) or not value.strip("/ "):
        raise ValueError(f"expected a subtree like 'obsolete/', got {value!r}")
    parts = [p for p in value.strip().split("/") if p]
    if any(p in {".", ".."} for p in parts):
        raise ValueError(f"{value!r} must not contain '.' or '..'")
    return "/".join(parts) + "/"


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def _str(v: object) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {v!r}")
    return v


def _bool(v: object) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"expected true or false, got {v!r}")
    return v


def _int(v: object, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"expected a whole number, got {v!r}")
    if not lo <= v <= hi:
        raise ValueError(f"{v} is out of range {lo}..{hi}")
    return v


def _float(v: object, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError(f"expected a number, got {v!r}")
    if not (math.isfinite(v) and lo <= v <= hi):
        raise ValueError(f"{v} is out of range {lo:g}..{hi:g}")
    return float(v)


def _access_log(v: object) -> str:
    s = _str(v)
    if s not in ("text", "json", "off"):
        raise ValueError(f'{s!r}: use "text", "json" or "off"')
    return s


def _positive_duration(v: object) -> float:
    d = parse_duration(v)
    if d <= 0:
        raise ValueError("must be longer than zero")
    return d


def _verify_timeout(v: object) -> float:
    d = _positive_duration(v)
    if d > 1.0:
        raise ValueError("must be at most 1s: a client waits for it")
    return d


def _coverage_probes(v: object) -> tuple[tuple[str, str], ...]:
    """{subtree = path} merged over the defaults; an empty path stops probing that subtree."""
    if not isinstance(v, dict):
        raise TypeError(f'expected a table like {{ "obsolete/" = "obsolete/" }}, got {v!r}')
    probes = dict(DEFAULT_COVERAGE_PROBES)
    for key, value in v.items():
        sub = normalize_subtree(key)
        path = _str(value).strip()
        if not path:
            probes.pop(sub, None)
            continue
        parts = path.split("/")
        if path.startswith("/") or any(p in {".", ".."} for p in parts) or "//" in path:
            raise ValueError(f"{path!r} is not a relative path below the tree root")
        if not (path + "/").startswith(sub):
            raise ValueError(f"probe path {path!r} for {sub!r} must lie below {sub!r}")
        probes[sub] = path
    return tuple(probes.items())


def _name(v: object) -> str:
    s = _str(v)
    if not _NAME.fullmatch(s):
        raise ValueError(f"{s!r}: use letters, digits, '.', '_' and '-' (at most 63)")
    return s


def _country(v: object) -> str:
    s = _str(v)
    if not re.fullmatch(r"[A-Za-z]{2}", s):
        raise ValueError(f"{s!r} is not a two-letter ISO 3166 country code")
    return s.upper()


def _subtrees(v: object) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise TypeError(f'expected a list like ["obsolete/"], got {v!r}')
    return tuple(normalize_subtree(x) for x in v)


DEFAULT_HASH_PATTERNS = ("*.iso", "*.img", "*.qcow2")


def _hash_tree(v: object) -> Path | None:
    s = _str(v).strip()
    if not s:
        return None
    if not s.startswith("/") or any(p in {".", ".."} for p in s.split("/")):
        raise ValueError(f"{s!r} is not an absolute directory path like '/srv/smeserver'")
    return Path(s)


def _globs(v: object) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise TypeError(f'expected a list like ["*.iso"], got {v!r}')
    out = []
    for item in v:
        g = _str(item).strip()
        if not g or not g.isprintable() or g.startswith("/"):
            raise ValueError(f"{item!r} is not a glob like '*.iso' or 'releases/*/iso/*'")
        out.append(g)
    return tuple(out)


def _relpaths(v: object) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise TypeError(f'expected a list like ["releases/10/iso/sha256sum.txt"], got {v!r}')
    return tuple(_relpath(x) for x in v)


def _relpath(v: object) -> str:
    s = _str(v).strip("/")
    if not s or any(p in {"", ".", ".."} for p in s.split("/")):
        raise ValueError(f"{v!r} is not a relative path like 'project/trace/mirror.contribs.org'")
    return s


def _trace_name(v: object) -> str:
    s = _str(v)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", s):
        raise ValueError(f"{s!r} is not a trace file name")
    return s


def _redis_url(v: object) -> str | None:
    s = _str(v).strip()
    if not s:
        return None
    if urlsplit(s).scheme not in {"redis", "rediss", "unix"}:
        raise ValueError(f"{s!r} is not a redis://, rediss:// or unix:// URL")
    return s


_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_VERSION = re.compile(r"[0-9][0-9A-Za-z._]{0,31}")  # no '-': it ends a "<repo>-<ver>" name
_ARCH = re.compile(r"[A-Za-z0-9_]{1,32}")


def _tokens(v: object, pattern: re.Pattern[str]) -> tuple[str, ...]:
    """A list of names (or, for versions, whole numbers) each matching `pattern`, no repeats."""
    if not isinstance(v, list):
        raise TypeError(f"expected a list, got {v!r}")
    out: list[str] = []
    for item in v:
        text = str(item) if isinstance(item, int) and not isinstance(item, bool) else _str(item)
        if not pattern.fullmatch(text):
            raise ValueError(f"{item!r} is not a valid name here")
        if text in out:
            raise ValueError(f"{item!r} is listed twice")
        out.append(text)
    return tuple(out)


def _networks(v: object) -> tuple[IPNetwork, ...]:
    if not isinstance(v, list):
        raise TypeError(f"expected a list of networks, got {v!r}")
    out = []
    for item in v:
        try:
            out.append(ipaddress.ip_network(_str(item), strict=False))
        except ValueError as e:
            raise ValueError(f"{item!r} is not an IP network") from e
    return tuple(out)


# --- the mirror request fields of the wiki ---------------------------------------

# One weight unit per 10 Mbit/s: a 1 Gbit/s mirror gets 100, the weight of a mirror that
# states nothing, so stated and unstated mirrors mix sensibly.
BITS_PER_WEIGHT = 10_000_000
_BANDWIDTH = re.compile(
    r"(?P<num>\d+(?:\.\d+)?)\s*(?P<prefix>[kKmMgGtT]?)\s*(?P<unit>bits?|Bytes?|bps|Bps|b|B)"
    r"(?:\s*(?:/\s*s|ps|/sec))?"
)
_PREFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_EMAIL = re.compile(
    r"[^@\s<>\"',;]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)
_HOST = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
EMAIL_MODES = ("obfuscate", "omit", "show")
SYNC_MODES = ("push", "pull")
MASTER_UPSTREAM = "master"


def parse_bandwidth(value: object) -> int:
    """'1Gbit', '100 Mbit/s', '1 Gbps', '12.5 MB/s' -> bits per second (SI prefixes).

    A unit is required: 'b', 'bit', 'bps' are bits, 'B', 'Byte' are bytes (x8). A bare number
    is refused because bits and bytes are both common in mirror requests.
    """
    s = _str(value).strip()
    m = _BANDWIDTH.fullmatch(s)
    if not m:
        raise ValueError(f"cannot read {s!r} as a bandwidth (use e.g. '1Gbit' or '100 Mbit/s')")
    unit = m["unit"]
    bits = 8 if unit in {"B", "Byte", "Bytes", "Bps"} else 1
    total = float(m["num"]) * _PREFIX[m["prefix"].lower()] * bits
    if not 1 <= total <= 10**15:
        raise ValueError(f"{s!r} is out of range 1 bit/s..1 Pbit/s")
    return round(total)


def weight_from_bandwidth(bits_per_second: int) -> int:
    """The weight a mirror gets from its bandwidth when it states no weight: see BITS_PER_WEIGHT."""
    return min(1_000_000, max(1, round(bits_per_second / BITS_PER_WEIGHT)))


def format_bandwidth(bits_per_second: int) -> str:
    """1_000_000_000 -> '1 Gbit/s', for tables."""
    for prefix, scale in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if bits_per_second >= scale:
            return f"{bits_per_second / scale:g} {prefix}bit/s"
    return f"{bits_per_second} bit/s"


def _sync_mode(v: object) -> str:
    s = _str(v)
    if s not in SYNC_MODES:
        raise ValueError(f'{s!r}: use "push" or "pull"')
    return s


def _email_mode(v: object) -> str:
    s = _str(v)
    if s not in EMAIL_MODES:
        raise ValueError(f"{s!r}: use one of {', '.join(EMAIL_MODES)}")
    return s


def _email(v: object) -> str:
    s = _str(v).strip()
    if len(s) > 254 or not _EMAIL.fullmatch(s):
        raise ValueError(f"{s!r} is not an email address like 'name@example.org'")
    return s


def _contact_name(v: object) -> str:
    s = _str(v).strip()
    if not s or len(s) > 200 or any(ord(c) < 32 or ord(c) == 127 for c in s):
        raise ValueError("expected a name of 1..200 printable characters")
    return s


def _ssh_host(v: object) -> str:
    s = _str(v).strip()
    try:
        return str(ipaddress.ip_address(s.strip("[]")))
    except ValueError:
        pass
    if len(s) > 253 or not _HOST.fullmatch(s):
        raise ValueError(f"{s!r} is not a host name or IP address")
    return s.lower()


def _ssh_user(v: object) -> str:
    s = _str(v)
    if not _USER.fullmatch(s):
        raise ValueError(f"{s!r} is not a user name (letters, digits, '_', '.', '-'; at most 32)")
    return s


def _optional_path(v: object) -> Path | None:
    s = _str(v)
    return Path(s) if s else None


def _listen(v: object) -> tuple[str, int]:
    return parse_listen(_str(v))


def _optional_listen(v: object) -> tuple[str, int] | None:
    text = _str(v)
    return parse_listen(text) if text else None


def _netblocks(v: object) -> tuple[IPNetwork, ...]:
    nets = _networks(v)
    for net in nets:
        if net.prefixlen == 0:
            raise ValueError(f"{net} holds every address: that is no network of its own")
    return nets


def _asns(v: object) -> tuple[int, ...]:
    if not isinstance(v, list):
        raise TypeError(f"expected a list of AS numbers like [3320], got {v!r}")
    out: list[int] = []
    for item in v:
        text = item.upper().removeprefix("AS") if isinstance(item, str) else item
        if isinstance(text, str) and text.isdigit():
            text = int(text)
        if isinstance(text, bool) or not isinstance(text, int) or not 0 < text < 2**32:
            raise ValueError(f"{item!r} is not an AS number (1..4294967295, e.g. 3320 or 'AS3320')")
        if text in out:
            raise ValueError(f"{item!r} is listed twice")
        out.append(text)
    return tuple(out)


def _paths(v: object) -> tuple[Path, ...]:
    if not isinstance(v, list):
        raise TypeError(f'expected a list of file paths like ["/var/lib/GeoIP/a.mmdb"], got {v!r}')
    out: list[Path] = []
    for item in v:
        s = _str(item).strip()
        if not s:
            raise ValueError("an empty path is no file")
        if Path(s) in out:
            raise ValueError(f"{s!r} is listed twice")
        out.append(Path(s))
    return tuple(out)


HTTPS_POLICIES = ("mirrors", "master")


def _https_policy(v: object) -> str:
    s = _str(v)
    if s not in HTTPS_POLICIES:
        raise ValueError(f'{s!r}: use "mirrors" or "master"')
    return s


def _networks_default() -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(n) for n in DEFAULT_TRUSTED)


_DURATION_KIND = "duration > 0"
_NAMES_KIND = "list of names"


# --- the settings, each key declared once on its field ------------------------------------


def _origin(v: object) -> str:
    """`master_origin`: a file:///directory/ on this machine, or an http(s) tree URL."""
    s = _str(v).strip()
    if not s:
        return ""
    parts = urlsplit(s)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(f"{s!r}: a local tree is file:///absolute/path/")
        if "?" in s or "#" in s or any(p in {".", ".."} for p in parts.path.split("/")):
            raise ValueError(f"{s!r} must be a plain directory path (no '..', query, fragment)")
        return s if s.endswith("/") else s + "/"
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{s!r}: use file:///srv/smeserver/ or an http(s) URL")
    return normalize_base_url(s, ("http", "https"))


def _public_names(v: object) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise TypeError(f'expected a list like ["mirror.contribs.org"], got {v!r}')
    out: list[str] = []
    for item in v:
        name = normalize_name(_str(item))
        if name not in out:
            out.append(name)
    return tuple(out)


def _fallback_mode(v: object) -> str:
    s = _str(v)
    if s not in FALLBACK_MODES:
        raise ValueError(f'{s!r}: use "redirect" (302 to master) or "local" (nginx serves it)')
    return s


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the process needs, built once from the config file.

    Each field set by a config key declares that key here (table.py): its parser, its doc
    line, its section in docs/configuration.md and whether a reload may change it. A new key
    is one `setting(...)` field; then run dev/config_docs.py to update the reference.
    """

    mirrors: tuple[Mirror, ...]
    master: str = field(
        metadata=spec(
            lambda v: normalize_base_url(v, ("http", "https")),
            "http or https URL",
            "master",
            "The master tree: the trace every mirror is compared with, and where a client goes"
            " when no mirror will do.",
        )
    )
    master_trace: str = setting(
        "project/trace/mirror.contribs.org",
        _relpath,
        "relative path",
        "master",
        "The master's ftpsync trace file, relative to every tree root.",
    )
    listen_host: str = setting(
        "127.0.0.1",
        _listen,
        "host:port",
        "service",
        "Where to listen: 'host:port', '[v6]:port', or ':port' for every address.",
        reloadable=False,
        name="listen",
        fields=("listen_host", "listen_port"),
        shown='"127.0.0.1:8080"',
    )
    listen_port: int = 8080  # set by the listen key, with listen_host
    max_lag: float = setting(
        8 * 3600.0,
        _positive_duration,
        _DURATION_KIND,
        "master",
        "A mirror further behind the master than this gets no clients.",
    )
    poll_interval: float = setting(
        300.0,
        _positive_duration,
        _DURATION_KIND,
        "poller",
        "How often every mirror's trace is fetched.",
    )
    probe_timeout: float = setting(
        10.0, _positive_duration, _DURATION_KIND, "poller", "The time limit of one probe request."
    )
    probe_concurrency: int = setting(
        32,
        lambda v: _int(v, 1, 1024),
        "whole number 1..1024",
        "poller",
        "Probe requests in flight at once.",
    )
    trusted_proxies: tuple[IPNetwork, ...] = setting(
        _networks_default(),
        _networks,
        "list of IP networks",
        "service",
        "Peers whose X-Forwarded-For (read right to left) and X-Forwarded-Proto are believed.",
    )
    geoip_db: Path | None = setting(
        None,
        _optional_path,
        "file path",
        "geoip",
        'The GeoLite2 or GeoIP2 City database. Unset: look in the usual places; "": none,'
        " location-blind on purpose.",
    )
    geoip_search: bool = True  # look in the usual places when geoip_db is not set
    geoip_databases: tuple[Path, ...] = setting(
        (),
        _paths,
        "list of file paths",
        "geoip",
        "Several databases in place of geoip_db: city files (MaxMind or DB-IP schema) and ASN"
        " files (GeoLite2-ASN or ip-location-db's), IPv4 and IPv6 halves apart or together;"
        " for each address the first file that knows it answers. A family with no city file,"
        " or a file older than geoip_max_age, is warned of.",
    )
    geoip_max_age: float = setting(
        60 * 86400.0,
        _positive_duration,
        _DURATION_KIND,
        "geoip",
        "A GeoIP file built longer ago than this is warned of at startup and on reload.",
    )
    redis_url: str | None = setting(
        None,
        _redis_url,
        "redis://, rediss:// or unix:// URL",
        "store",
        "Where the mirrors' state is shared. Unset: kept in this process only.",
        reloadable=False,
    )
    redis_prefix: str = setting(
        "redirector:", _str, "string", "store", "Put before every Redis key.", reloadable=False
    )
    # Mirrors within max(closeness_km, closeness_ratio * nearest) of the nearest count as
    # equally close, so load is spread among them by weight instead of all going to one. The
    # defaults give max(1.5 x nearest, nearest + 300 km): see core/selection.py for why.
    closeness_km: float = setting(
        300.0,
        lambda v: _float(v, 0.0, 20040.0),
        "number 0..20040",
        "selection",
        "Mirrors within this many km of the nearest one count as equally close; load is spread"
        " among them by weight.",
    )
    closeness_ratio: float = setting(
        0.5,
        lambda v: _float(v, 0.0, 10.0),
        "number 0..10",
        "selection",
        "Or within this share of the nearest one's distance, when that is more.",
    )
    https_policy: str = setting(
        "mirrors",
        _https_policy,
        '"mirrors" or "master"',
        "selection",
        "Where an https download goes when fewer than https_min_mirrors https mirrors may serve"
        ' it: "mirrors" still to those (however far), "master" to the master over https. Mirror'
        " lists and metalinks asked for over https name http mirrors either way: a metalink's"
        " hashes, fetched over https, and the packages' GPG signatures check what they serve.",
    )
    https_min_mirrors: int = setting(
        2,
        lambda v: _int(v, 1, 100),
        "whole number 1..100",
        "selection",
        'The https mirrors an https download needs before https_policy "master" sends it to'
        " the master instead.",
    )
    snapshot_interval: float = 0.5
    # What the poller probes to learn which subtrees a mirror carries: subtree -> a path below
    # it that always exists (a directory index by default), relative to the tree root.
    coverage_probes: tuple[tuple[str, str], ...] = setting(
        DEFAULT_COVERAGE_PROBES,
        _coverage_probes,
        "table: subtree = path",
        "poller",
        "What is asked for (HEAD) to learn which subtrees a mirror carries: subtree = a path"
        ' below it that always exists, merged over the default; "" stops probing a subtree.'
        " The file checks keep the startup paths until a restart.",
    )
    coverage_interval: float = setting(
        3600.0,
        _positive_duration,
        _DURATION_KIND,
        "poller",
        "How often each mirror's subtrees are probed; coverage changes rarely.",
    )
    verify_files: bool = setting(
        True,
        _bool,
        "true or false",
        "verify",
        "HEAD the file on the chosen mirror before sending a client there. A reload can turn"
        " it off, and on again only if it was on at startup.",
    )
    verify_timeout: float = setting(
        1.0,
        _verify_timeout,
        "duration, at most 1s",
        "verify",
        "The time limit of one HEAD: a client is waiting for it.",
        reloadable=False,
    )
    verify_ttl: float = setting(
        3600.0,
        _positive_duration,
        _DURATION_KIND,
        "verify",
        'How long "the mirror has it" is believed.',
        reloadable=False,
    )
    verify_negative_ttl: float = setting(
        300.0,
        _positive_duration,
        _DURATION_KIND,
        "verify",
        'How long "it has not" (a 404, an error or a timeout) is believed.',
        reloadable=False,
    )
    failures_before_down: int = setting(
        2,
        lambda v: _int(v, 1, 100),
        "whole number 1..100",
        "poller",
        "Failed probes in a row before a working mirror counts as down.",
    )
    backoff_max: float = setting(
        3600.0,
        _positive_duration,
        _DURATION_KIND,
        "poller",
        "A failing mirror is probed again after poll_interval x 2^(n-1), at most this long.",
    )
    poller_metrics_listen: tuple[str, int] | None = setting(
        None,
        _optional_listen,
        "host:port",
        "poller",
        "Where `redirector poll` serves its own /metrics (its passes and failed probes, which"
        " web nodes started with --no-poll do not have). Unset: no such port.",
        reloadable=False,
    )
    lease_ttl: float = setting(
        30.0,
        _positive_duration,
        _DURATION_KIND,
        "store",
        "The poller lease in a shared store (only its holder polls); renewed every third of it.",
        reloadable=False,
    )
    status_email: str = setting(
        "obfuscate",
        _email_mode,
        '"obfuscate", "omit" or "show"',
        "status",
        "How the status page shows a mirror's contact email.",
    )
    # --- the operator views' budget (core/viewbudget.py, docs/operators.md) ---
    views_network_burst: int = setting(
        20,
        lambda v: _int(v, 1, 100_000),
        "whole number 1..100000",
        "views",
        "Operator views (/mirrors, /mirrors.json, the schema, /metrics, ?mirrorlist) one client"
        " network (/24, /48) gets at once; past them, views_network_rate.",
    )
    views_network_rate: float = setting(
        2.0,
        lambda v: _float(v, 0.01, 100_000.0),
        "number 0.01..100000 (a second)",
        "views",
        "Views a second a network gets past its burst; more are answered 429 with Retry-After.",
    )
    views_total_burst: int = setting(
        60,
        lambda v: _int(v, 1, 1_000_000),
        "whole number 1..1000000",
        "views",
        "Views one process answers at once, all networks together; past them, views_total_rate.",
    )
    views_total_rate: float = setting(
        10.0,
        lambda v: _float(v, 0.01, 1_000_000.0),
        "number 0.01..1000000 (a second)",
        "views",
        "Views a second the process answers past its burst; more are answered 503 with"
        " Retry-After.",
    )
    views_exempt: tuple[IPNetwork, ...] = setting(
        (),
        _networks,
        "list of IP networks",
        "views",
        "Clients the views' budget never counts nor refuses: an operator's Prometheus, an office.",
    )
    # --- file facts for downloaders (poll/hasher.py, core/filefacts.py) ---
    hash_tree: Path | None = setting(
        None,
        _hash_tree,
        "absolute directory path",
        "hashes",
        "The master tree on this machine's disk: the hasher reads sizes, dates and hashes"
        " from it. Unset: a file:/// master_origin's directory, else hash_sums, else none.",
        reloadable=False,
    )
    hash_patterns: tuple[str, ...] = setting(
        DEFAULT_HASH_PATTERNS,
        _globs,
        "list of globs",
        "hashes",
        "The files worth hashing: a glob on the file name, or on the path below the tree root"
        " when it holds a '/'.",
    )
    hash_sums: tuple[str, ...] = setting(
        (),
        _relpaths,
        "list of relative paths",
        "hashes",
        "Checksum files the master publishes (SHA256SUMS, sha256sum.txt, <file>.sha256),"
        " read over http when there is no hash_tree.",
    )
    hash_interval: float = setting(
        300.0,
        _positive_duration,
        _DURATION_KIND,
        "hashes",
        "How often the hasher looks for new and changed files; a new file is hashed within"
        " one pass.",
    )
    hash_read_rate: int = setting(
        32,
        lambda v: _int(v, 1, 100_000),
        "whole number 1..100000 (MB/s)",
        "hashes",
        "The hasher reads at most this many megabytes a second: the disk stays the downloads'.",
    )
    sample_checks: int = setting(
        0,
        lambda v: _int(v, 0, 100),
        "whole number 0..100",
        "hashes",
        "Ranged GETs of one piece of a hashed file per pass, each on one mirror, compared with"
        " the master's piece hash; each costs one piece (1 to 16 MiB) of the mirror's traffic.",
    )
    repos: tuple[str, ...] = setting(
        SME_REPOS,
        lambda v: _tokens(v, _REPO),
        _NAMES_KIND,
        "lists",
        "The yum repositories /mirrorlist and /metalink answer for.",
    )
    repo_versions: tuple[str, ...] = setting(
        ("7", "8", "9", "10", "11", "12"),
        lambda v: _tokens(v, _VERSION),
        "list of versions",
        "lists",
        "The SME Server versions they answer for.",
    )
    testing_versions: tuple[str, ...] = setting(
        (),
        lambda v: _tokens(v, _VERSION),
        "list of versions",
        "lists",
        "Versions whose repositories live under releases/testing/<ver>/ (a beta).",
    )
    mirrorlist_length: int = setting(
        10,
        lambda v: _int(v, 1, 100),
        "whole number 1..100",
        "lists",
        "Mirrors in one list at most; the master alone when none will do.",
    )
    repodata_versions: tuple[str, ...] = setting(
        ("10", "11", "12"),
        lambda v: _tokens(v, _VERSION),
        "list of versions",
        "repodata",
        "Versions whose repomd.xml files the repodata pass compares with the master's.",
    )
    repodata_arches: tuple[str, ...] = setting(
        ("x86_64",),
        lambda v: _tokens(v, _ARCH),
        _NAMES_KIND,
        "repodata",
        "Architectures it compares.",
    )
    alternates_window: float = setting(
        4 * 86400.0,
        parse_duration,
        "duration",
        "repodata",
        "How long an earlier master repomd.xml stays acceptable (a metalink's alternates).",
    )
    repodata_max_probes: int = setting(
        2000,
        lambda v: _int(v, 0, 1_000_000),
        "whole number 0..1000000",
        "repodata",
        "repomd.xml requests per repodata pass, the master's included.",
    )
    access_log: str = setting(
        "text",
        _access_log,
        '"text", "json" or "off"',
        "service",
        'One line per request: "text", "json" (one object per line) or "off".',
    )
    access_log_path: Path | None = setting(
        None,
        _optional_path,
        "file path",
        "service",
        "The file access log lines are appended to, reopened once logrotate moves it."
        " Unset: stderr (the journal).",
        reloadable=False,
    )
    state_dir: Path | None = setting(
        None,
        _optional_path,
        "directory path",
        "store",
        "Without Redis: the directory the serving processes share state in, so that"
        " `redirector mirrors`, `explain` and `events` read what the workers see (also"
        " `serve --state-dir`). Unset: a private directory per run, which no other process"
        " can find.",
        reloadable=False,
    )
    # The master topology (core/topology.py, docs/topology.md): what the poller reads, where a
    # client falls back, and the names no Location, list line or metalink URL may carry.
    master_origin: str = setting(
        "",
        _origin,
        "file:///directory/ or http(s) URL",
        "master",
        "What the poller reads the master tree from: the tree on this machine's disk"
        " (file:///srv/smeserver/) or an internal URL. Unset: `master`.",
    )
    public_names: tuple[str, ...] = setting(
        (),
        _public_names,
        "list of host names (or host:port)",
        "master",
        "The names clients reach this redirector by; the listen address counts too. No"
        " Location, list line or metalink URL ever names one of them.",
    )
    fallback: str = setting(
        "redirect",
        _fallback_mode,
        '"redirect" or "local"',
        "master",
        'Where a client goes when no mirror can serve it: "redirect" (a 302 to `master`, which'
        ' must then be another host) or "local" (X-Accel-Redirect to /_master/<path>, served by'
        " nginx from the local tree: deploy/nginx).",
    )
    source: Path | None = None  # the file these settings came from

    def mirror(self, name: str) -> Mirror | None:
        for m in self.mirrors:
            if m.name == name:
                return m
        return None

    @property
    def origin(self) -> str:
        """The tree root the poller reads the master from (`master_origin`, else `master`)."""
        return self.master_origin or self.master

    @property
    def local_tree(self) -> Path | None:
        """The master tree on this machine's disk: `hash_tree`, else a file:/// origin's."""
        if self.hash_tree is not None:
            return self.hash_tree
        if self.master_origin.startswith("file:"):
            return Path(unquote(urlsplit(self.master_origin).path))
        return None

    @property
    def own_names(self) -> tuple[str, ...]:
        """`public_names` and the names of the listen address: never a target."""
        return self.public_names + listen_names(self.listen_host, self.listen_port)


# The fields no key sets: the mirrors come from [[mirror]] tables, geoip_search from whether
# geoip_db is given at all, source from where the text was read; snapshot_interval is fixed.
NOT_FROM_KEYS = frozenset({"mirrors", "geoip_search", "snapshot_interval", "source"})
# Every [redirector] key, in field order.
TOP_KEYS = keys_of(Settings)
TOP_ALLOWED = frozenset(k.name for k in TOP_KEYS)


def _mkey(
    name: str, parse: Callable[[Any], Any], kind: str, doc: str, *, required: bool = False
) -> Key:
    return mirror_key(Mirror, name, parse, kind, doc, required=required)


# Every [[mirror]] field, each declared once; the defaults are those of core.models.Mirror.
MIRROR_KEYS: tuple[Key, ...] = (
    _mkey("name", _name, "letters, digits, '.', '_', '-'", "Unique: names it in logs, metrics"
          " and the status page.", required=True),
    _mkey("http", lambda v: normalize_base_url(v, ("http",)), "http URL",
          "The root of its smeserver tree over http. At least one of http and https."),
    _mkey("https", lambda v: normalize_base_url(v, ("https",)), "https URL",
          "The same tree over https."),
    _mkey("ftp", lambda v: normalize_base_url(v, ("ftp",)), "ftp URL",
          "The same tree over anonymous ftp: listed in mirror lists and metalinks; a browser"
          " is sent there only over plain http and only when no http mirror has the file."),
    _mkey("country", _country, "ISO 3166 two-letter code", "Where it is.", required=True),
    _mkey("latitude", lambda v: _float(v, -90.0, 90.0), "number -90..90",
          "Where it is, for the distance to a client.", required=True),
    _mkey("longitude", lambda v: _float(v, -180.0, 180.0), "number -180..180",
          "Where it is, for the distance to a client.", required=True),
    _mkey("weight", lambda v: _int(v, 0, 1_000_000), "whole number 0..1000000",
          "Relative capacity. Unset: bandwidth / 10 Mbit/s when bandwidth is given."),
    _mkey("exclude", _subtrees, "list of subtrees",
          'Subtrees it does not carry, e.g. ["obsolete/"].'),
    _mkey("ipv6", _bool, "true or false",
          "Whether it answers over IPv6. Unset: the poller finds out (an AAAA record, then the"
          " tree fetched over IPv6); true or false overrides that."),
    _mkey("enabled", _bool, "true or false", "false keeps it configured but sends nobody there."),
    _mkey("trace_name", _trace_name, "file name",
          "Its own ftpsync trace under project/trace/. Unset: its host name."),
    _mkey("contact_name", _contact_name, "text", "Who runs it (the wiki's mirror request)."),
    _mkey("contact_email", _email, "email address",
          "How to reach them; the status page shows it as status_email says."),
    _mkey("bandwidth", parse_bandwidth, "number and unit",
          "What it offers: '1Gbit', '100 Mbit/s', '12.5 MB/s' (bytes, x8); a bare number is"
          " refused."),
    _mkey("sync", _sync_mode, '"push" or "pull"',
          '"push": the upstream triggers ftpsync over ssh; "pull": it syncs from cron.'),
    _mkey("ssh_host", _ssh_host, "host name or IP address",
          "Where the upstream reaches it over ssh; required for a push mirror."),
    _mkey("ssh_port", lambda v: _int(v, 1, 65535), "whole number 1..65535", "Its ssh port."),
    _mkey("ssh_user", _ssh_user, "user name", "The ssh user ftpsync runs as."),
    _mkey("upstream", _name, '"master" or a mirror name',
          'What it syncs from: "master" or the name of a configured mirror.'),
    _mkey("netblocks", _netblocks, "list of IP networks",
          "Its networks: clients inside them go to it first, however far another mirror is."),
    _mkey("asns", _asns, "list of AS numbers",
          "Its autonomous systems: clients in them (per the ASN database) go to it first."),
    _mkey("private", _bool, "true or false",
          "Serve only clients inside its netblocks or AS numbers; needs one of them."),
    _mkey("country_only", _bool, "true or false", "Serve only clients in its country."),
    _mkey("continent_only", _bool, "true or false",
          "Serve only clients on its country's continent."),
)  # fmt: skip
MIRROR_ALLOWED = frozenset(k.name for k in MIRROR_KEYS)


class _Lines:
    """Finds the line a table or key stands on, since tomllib reports none for valid TOML."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def _table_starts(self, header: re.Pattern[str]) -> list[int]:
        return [i for i, line in enumerate(self.lines) if header.match(line)]

    def _key_in(self, start: int, key: str) -> int:
        key_re = re.compile(rf"\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for i in range(start + 1, len(self.lines)):
            if re.match(r"\s*\[", self.lines[i]):
                break
            if key_re.match(self.lines[i]):
                return i + 1
        return start + 1

    def mirror(self, index: int, key: str | None = None) -> int | None:
        starts = self._table_starts(re.compile(r"\s*\[\[\s*mirror\s*\]\]"))
        if index >= len(starts):
            return None
        return self._key_in(starts[index], key) if key else starts[index] + 1

    def table(self, name: str, key: str | None = None) -> int | None:
        starts = self._table_starts(re.compile(rf"\s*\[\s*{re.escape(name)}\s*\]"))
        if not starts:
            return None
        return self._key_in(starts[0], key) if key else starts[0] + 1


def load_settings(path: str | Path) -> Settings:
    """Read and validate a config file; ConfigError names the file, line and field on any fault."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(p, None, "", f"cannot read: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(p, None, "", "not UTF-8 text") from e
    return parse_settings(text, p)


Fail = Callable[[int | None, str, str], ConfigError]


def parse_settings(text: str, path: Path | str = "<config>") -> Settings:
    """Validate config text; `path` is only used in error messages."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise ConfigError(path, int(m.group(1)) if m else None, "", f"not valid TOML: {e}") from e
    lines = _Lines(text)
    src = Path(path)

    def fail(line: int | None, where: str, message: str) -> ConfigError:
        return ConfigError(src, line, where, message)

    for key in doc:
        if key not in {"redirector", "mirror"}:
            raise fail(
                lines.table(key), key, "unknown table (expected [redirector] and [[mirror]])"
            )
    top = doc.get("redirector", {})
    if not isinstance(top, dict):
        raise fail(None, "redirector", "must be a table")
    for name in top:
        if name not in TOP_ALLOWED:
            raise fail(
                lines.table("redirector", name), f"[redirector] field '{name}'", "unknown key"
            )
    values = _read(
        TOP_KEYS,
        top,
        lambda name: fail(lines.table("redirector"), f"[redirector] field '{name}'", "is required"),
        lambda name, message: fail(
            lines.table("redirector", name), f"[redirector] field '{name}'", message
        ),
    )
    settings = Settings(
        mirrors=_mirrors(doc.get("mirror", []), lines, fail),
        # An explicit empty geoip_db = "" turns the search off: location-blind on purpose.
        geoip_search="geoip_db" not in top,
        source=src,
        **values,
    )
    _check_topology(settings, lines, fail)
    return settings


def _read(
    keys: tuple[Key, ...],
    table: Mapping[str, Any],
    missing: Callable[[str], ConfigError],
    bad: Callable[[str, str], ConfigError],
) -> dict[str, Any]:
    """The fields `table` sets, by field name; a key it leaves out keeps its default."""
    values: dict[str, Any] = {}
    for key in keys:
        if key.name not in table:
            if key.required:
                raise missing(key.name)
            continue
        try:
            parsed = key.parse(table[key.name])
        except (ValueError, TypeError) as e:
            raise bad(key.name, str(e)) from e
        values.update(key.values(parsed))
    return values


def _mirrors(raw: object, lines: _Lines, fail: Fail) -> tuple[Mirror, ...]:
    if not isinstance(raw, list):
        raise fail(lines.table("mirror"), "mirror", "use [[mirror]] tables, one per mirror")
    out: list[Mirror] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(raw):
        label = f"mirror #{i + 1}"
        if not isinstance(entry, dict):
            raise fail(lines.mirror(i), label, "must be a table")
        name = entry.get("name")
        if isinstance(name, str) and name:
            label = f"mirror '{name}'"
        for key in entry:
            if key not in MIRROR_ALLOWED:
                raise fail(lines.mirror(i, key), f"{label} field '{key}'", "unknown key")
        out.append(_mirror(entry, i, label, lines, fail))
        if out[-1].name in seen:
            raise fail(
                lines.mirror(i, "name"),
                f"{label} field 'name'",
                f"duplicate name (also mirror #{seen[out[-1].name] + 1})",
            )
        seen[out[-1].name] = i
    _check_upstreams(out, lines, fail)
    return tuple(out)


def _mirror(entry: Mapping[str, Any], i: int, label: str, lines: _Lines, fail: Fail) -> Mirror:
    values = _read(
        MIRROR_KEYS,
        entry,
        lambda name: fail(lines.mirror(i), f"{label} field '{name}'", "is required"),
        lambda name, message: fail(lines.mirror(i, name), f"{label} field '{name}'", message),
    )
    if all(values.get(k) is None for k in ("http", "https", "ftp")):
        raise fail(
            lines.mirror(i), f"{label} field 'http'", "an http, https or ftp URL is required"
        )
    if values.get("sync") == "push" and values.get("ssh_host") is None:
        raise fail(
            lines.mirror(i, "sync"),
            f"{label} field 'ssh_host'",
            "a push mirror needs ssh_host (where the upstream triggers ftpsync over ssh)",
        )
    if values.get("private") and not (values.get("netblocks") or values.get("asns")):
        raise fail(
            lines.mirror(i, "private"),
            f"{label} field 'private'",
            "a private mirror needs netblocks or asns: it serves only clients inside them",
        )
    bandwidth = values.get("bandwidth")
    if "weight" not in values and bandwidth is not None:
        values["weight"] = weight_from_bandwidth(bandwidth)
    # http and https have no default in Mirror: a mirror states which it has.
    defaults: dict[str, Any] = {k.name: k.default for k in MIRROR_KEYS if not k.required}
    return Mirror(**(defaults | values))


def _check_topology(
    s: Settings, lines: _Lines, fail: Callable[[int | None, str, str], ConfigError]
) -> None:
    """Refuse a config that would send a client, or the poller, to the redirector itself."""
    names = s.own_names
    own_master = names_url(names, s.master)
    if own_master is not None and s.fallback == "redirect":
        raise fail(
            lines.table("redirector", "master"),
            "[redirector] fields 'master' and 'fallback'",
            f"master {s.master} is this redirector's own name {own_master!r} (public_names or "
            'listen), so a fallback would redirect to itself in a loop: set fallback = "local" '
            "(nginx serves the tree, deploy/nginx) or a master on another host",
        )
    own_origin = names_url(names, s.origin)
    if own_origin is not None:
        field_name = "master_origin" if s.master_origin else "master"
        raise fail(
            lines.table("redirector", field_name),
            f"[redirector] field '{field_name}'"
            + (" (master_origin is unset)" if not s.master_origin else ""),
            f"the poller would read the master from {s.origin}, which is this redirector "
            f"({own_origin!r}), not the tree: set master_origin to the tree on disk "
            "(file:///srv/smeserver/) or an internal URL",
        )
    for i, m in enumerate(s.mirrors):
        for key, url in (("http", m.http), ("https", m.https), ("ftp", m.ftp)):
            own = None if url is None else names_url(names, url)
            if own is not None:
                raise fail(
                    lines.mirror(i, key),
                    f"mirror '{m.name}' field '{key}'",
                    f"{url} is this redirector's own name {own!r}: a client sent there would "
                    "be sent on in a loop",
                )


def _check_upstreams(
    mirrors: list[Mirror], lines: _Lines, fail: Callable[[int | None, str, str], ConfigError]
) -> None:
    """Every `upstream` names "master" or a configured mirror, never itself, and no loop."""
    index = {m.name: i for i, m in enumerate(mirrors)}
    for i, m in enumerate(mirrors):
        if m.upstream is None or m.upstream == MASTER_UPSTREAM:
            continue
        where = f"mirror '{m.name}' field 'upstream'"
        if m.upstream == m.name:
            raise fail(lines.mirror(i, "upstream"), where, "a mirror cannot sync from itself")
        if m.upstream not in index:
            raise fail(
                lines.mirror(i, "upstream"),
                where,
                f'{m.upstream!r} is no configured mirror (use a mirror name or "master")',
            )
        seen = [m.name]
        up: str | None = m.upstream
        while up is not None and up != MASTER_UPSTREAM and up in index:
            if up in seen:
                loop = " -> ".join([*seen, up])
                raise fail(lines.mirror(i, "upstream"), where, f"upstream loop: {loop}")
            seen.append(up)
            up = mirrors[index[up]].upstream
