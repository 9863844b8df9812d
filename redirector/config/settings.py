"""Typed settings: one TOML file read once, validated, and passed in to everything else."""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

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


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the process needs, built once from the config file."""

    mirrors: tuple[Mirror, ...]
    master: str
    master_trace: str = "project/trace/mirror.contribs.org"
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    max_lag: float = 8 * 3600
    poll_interval: float = 300.0
    probe_timeout: float = 10.0
    probe_concurrency: int = 32
    trusted_proxies: tuple[IPNetwork, ...] = field(
        default_factory=lambda: tuple(ipaddress.ip_network(n) for n in DEFAULT_TRUSTED)
    )
    geoip_db: Path | None = None
    geoip_search: bool = True  # look in the usual places when geoip_db is not set
    redis_url: str | None = None
    redis_prefix: str = "redirector:"
    # Mirrors within max(closeness_km, closeness_ratio * nearest) of the nearest count as
    # equally close, so load is spread among them by weight instead of all going to one.
    closeness_km: float = 500.0
    closeness_ratio: float = 0.25
    snapshot_interval: float = 0.5
    # What the poller probes to learn which subtrees a mirror carries: subtree -> a path below
    # it that always exists (a directory index by default), relative to the tree root.
    coverage_probes: tuple[tuple[str, str], ...] = DEFAULT_COVERAGE_PROBES
    coverage_interval: float = 3600.0  # coverage changes rarely: probed this often, not each pass
    verify_files: bool = True  # HEAD a file on the chosen mirror before sending a client there
    verify_timeout: float = 1.0  # per HEAD; at most 1 s, a client is waiting
    verify_ttl: float = 3600.0  # how long "the mirror has it" is believed
    verify_negative_ttl: float = 300.0  # how long "it has not" (404 or error) is believed
    failures_before_down: int = 2  # failed probes in a row before a working mirror is down
    backoff_max: float = 3600.0  # longest wait between probes of a failing mirror
    lease_ttl: float = 30.0  # the poller lease in Redis; renewed every third of it
    # How the status page shows a mirror's contact email: "obfuscate", "omit" or "show".
    status_email: str = "obfuscate"
    # Mirror lists and metalinks (lists.py): the repos `/mirrorlist/<repo>-<ver>` knows, the
    # versions it serves, and which of those live under releases/testing/<ver>/ (a beta).
    repos: tuple[str, ...] = SME_REPOS
    repo_versions: tuple[str, ...] = ("7", "8", "9", "10", "11", "12")
    testing_versions: tuple[str, ...] = ()
    mirrorlist_length: int = 10
    # The repodata pass (repodata.py): which versions and arches it compares with the master,
    # how long an earlier master repomd.xml stays acceptable, and a cap on probes per pass.
    repodata_versions: tuple[str, ...] = ("10", "11", "12")
    repodata_arches: tuple[str, ...] = ("x86_64",)
    alternates_window: float = 4 * 86400.0
    repodata_max_probes: int = 2000
    # The access log (accesslog.py): "text", "json" (one object per line) or "off"; lines go to
    # stderr, or appended to access_log_path when set.
    access_log: str = "text"
    access_log_path: Path | None = None
    # --- the master topology (core/topology.py, docs/topology.md) ---------------------------
    # `master` is the master's public download URL: where a client falls back with
    # fallback = "redirect". `master_origin` is what the poller reads the master tree from:
    # "file:///srv/smeserver/" (the tree on this machine's disk) or an internal http(s) URL;
    # empty means `master`. `public_names` are the host names (or host:port) clients reach this
    # redirector by; the listen address counts too (`own_names`). No Location, list line or
    # metalink URL ever names one of them. `fallback`: "redirect" (a 302 to `master`, which
    # must then be another host) or "local" (X-Accel-Redirect to /_master/<path>, served by
    # nginx from the local tree, deploy/nginx).
    master_origin: str = ""
    public_names: tuple[str, ...] = ()
    fallback: str = "redirect"
    # --- end of the master topology ----------------------------------------------------------
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
    def own_names(self) -> tuple[str, ...]:
        """`public_names` and the names of the listen address: never a target."""
        return self.public_names + listen_names(self.listen_host, self.listen_port)


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


T = TypeVar("T")

_REDIRECTOR_KEYS = {
    "listen", "master", "master_trace", "max_lag", "poll_interval", "probe_timeout",
    "probe_concurrency", "trusted_proxies", "geoip_db", "redis_url", "redis_prefix",
    "closeness_km", "closeness_ratio",
    "repos", "repo_versions", "testing_versions", "mirrorlist_length", "repodata_versions",
    "repodata_arches", "alternates_window", "repodata_max_probes",
}  # fmt: skip
_MIRROR_KEYS = {
    "name", "http", "https", "ftp", "country", "latitude", "longitude", "weight", "exclude",
    "ipv6", "enabled", "trace_name",
}  # fmt: skip
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
# Coverage, never-a-404, backoff and the poller lease.
_REDIRECTOR_KEYS |= {
    "coverage_probes", "coverage_interval", "verify_files", "verify_timeout", "verify_ttl",
    "verify_negative_ttl", "failures_before_down", "backoff_max", "lease_ttl",
}  # fmt: skip
# The mirror request fields of the wiki; see _mirror_request below.
_REDIRECTOR_KEYS |= {"status_email"}
# The access log and reloads.
_REDIRECTOR_KEYS |= {"access_log", "access_log_path"}
# The master topology: what the poller reads, where clients fall back, the redirector's names.
_REDIRECTOR_KEYS |= {"master_origin", "public_names", "fallback"}
_MIRROR_KEYS |= {
    "contact_name", "contact_email", "bandwidth", "ssh_host", "ssh_port", "ssh_user",
    "upstream", "sync",
}  # fmt: skip


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

    def top_field(key: str, conv: Callable[[Any], T], default: T) -> T:
        if key not in top:
            return default
        try:
            return conv(top[key])
        except (ValueError, TypeError) as e:
            raise fail(lines.table("redirector", key), f"[redirector] field '{key}'", str(e)) from e

    for key in top:
        if key not in _REDIRECTOR_KEYS:
            raise fail(lines.table("redirector", key), f"[redirector] field '{key}'", "unknown key")
    if "master" not in top:
        raise fail(lines.table("redirector"), "[redirector] field 'master'", "is required")
    master = top_field("master", lambda v: normalize_base_url(v, ("http", "https")), "")
    listen = top_field("listen", lambda v: parse_listen(_str(v)), ("127.0.0.1", 8080))
    trace = top_field("master_trace", _relpath, "project/trace/mirror.contribs.org")
    redis_url = top_field("redis_url", _redis_url, None)
    geoip = top_field("geoip_db", lambda v: Path(_str(v)) if _str(v) else None, None)
    settings = Settings(
        mirrors=_mirrors(doc.get("mirror", []), lines, fail),
        master=master,
        master_trace=trace,
        listen_host=listen[0],
        listen_port=listen[1],
        max_lag=top_field("max_lag", _positive_duration, 8 * 3600.0),
        poll_interval=top_field("poll_interval", _positive_duration, 300.0),
        probe_timeout=top_field("probe_timeout", _positive_duration, 10.0),
        probe_concurrency=top_field("probe_concurrency", lambda v: _int(v, 1, 1024), 32),
        trusted_proxies=top_field(
            "trusted_proxies",
            _networks,
            tuple(ipaddress.ip_network(n) for n in DEFAULT_TRUSTED),
        ),
        geoip_db=geoip,
        # An explicit empty geoip_db = "" turns the search off: location-blind on purpose.
        geoip_search="geoip_db" not in top,
        redis_url=redis_url,
        redis_prefix=top_field("redis_prefix", _str, "redirector:"),
        closeness_km=top_field("closeness_km", lambda v: _float(v, 0.0, 20040.0), 500.0),
        closeness_ratio=top_field("closeness_ratio", lambda v: _float(v, 0.0, 10.0), 0.25),
        coverage_probes=top_field("coverage_probes", _coverage_probes, DEFAULT_COVERAGE_PROBES),
        coverage_interval=top_field("coverage_interval", _positive_duration, 3600.0),
        verify_files=top_field("verify_files", _bool, True),
        verify_timeout=top_field("verify_timeout", _verify_timeout, 1.0),
        verify_ttl=top_field("verify_ttl", _positive_duration, 3600.0),
        verify_negative_ttl=top_field("verify_negative_ttl", _positive_duration, 300.0),
        failures_before_down=top_field("failures_before_down", lambda v: _int(v, 1, 100), 2),
        backoff_max=top_field("backoff_max", _positive_duration, 3600.0),
        lease_ttl=top_field("lease_ttl", _positive_duration, 30.0),
        status_email=top_field("status_email", _email_mode, "obfuscate"),
        repos=top_field("repos", lambda v: _tokens(v, _REPO), SME_REPOS),
        repo_versions=top_field(
            "repo_versions", lambda v: _tokens(v, _VERSION), ("7", "8", "9", "10", "11", "12")
        ),
        testing_versions=top_field("testing_versions", lambda v: _tokens(v, _VERSION), ()),
        mirrorlist_length=top_field("mirrorlist_length", lambda v: _int(v, 1, 100), 10),
        repodata_versions=top_field(
            "repodata_versions", lambda v: _tokens(v, _VERSION), ("10", "11", "12")
        ),
        repodata_arches=top_field("repodata_arches", lambda v: _tokens(v, _ARCH), ("x86_64",)),
        alternates_window=top_field("alternates_window", parse_duration, 4 * 86400.0),
        repodata_max_probes=top_field("repodata_max_probes", lambda v: _int(v, 0, 1_000_000), 2000),
        access_log=top_field("access_log", _access_log, "text"),
        access_log_path=top_field(
            "access_log_path", lambda v: Path(_str(v)) if _str(v) else None, None
        ),
        master_origin=top_field("master_origin", _origin, ""),
        public_names=top_field("public_names", _public_names, ()),
        fallback=top_field("fallback", _fallback_mode, "redirect"),
        source=src,
    )
    _check_topology(settings, lines, fail)
    return settings


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


def _mirrors(
    raw: object, lines: _Lines, fail: Callable[[int | None, str, str], ConfigError]
) -> tuple[Mirror, ...]:
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
            if key not in _MIRROR_KEYS:
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


def _mirror(
    entry: Mapping[str, Any],
    i: int,
    label: str,
    lines: _Lines,
    fail: Callable[[int | None, str, str], ConfigError],
) -> Mirror:
    def get(key: str, conv: Callable[[Any], T], default: T | None = None) -> T:
        if key not in entry:
            if default is None:
                raise fail(lines.mirror(i), f"{label} field '{key}'", "is required")
            return default
        try:
            return conv(entry[key])
        except (ValueError, TypeError) as e:
            raise fail(lines.mirror(i, key), f"{label} field '{key}'", str(e)) from e

    def opt_url(key: str) -> str | None:
        if key not in entry:
            return None
        return get(key, lambda v: normalize_base_url(v, (key,)))

    name = get("name", _name)
    http, https, ftp = opt_url("http"), opt_url("https"), opt_url("ftp")
    enabled = get("enabled", _bool, True)
    if http is None and https is None and ftp is None:
        raise fail(
            lines.mirror(i), f"{label} field 'http'", "an http, https or ftp URL is required"
        )
    request = _mirror_request(get, i, label, lines, fail)
    return Mirror(
        name=name,
        http=http,
        https=https,
        country=get("country", _country),
        latitude=get("latitude", lambda v: _float(v, -90.0, 90.0)),
        longitude=get("longitude", lambda v: _float(v, -180.0, 180.0)),
        weight=get(
            "weight",
            lambda v: _int(v, 0, 1_000_000),
            weight_from_bandwidth(request.bandwidth) if request.bandwidth else 100,
        ),
        exclude=get("exclude", _subtrees, ()),
        ipv6=get("ipv6", _bool, False),
        enabled=enabled,
        trace_name=get("trace_name", _trace_name, "") or None,
        contact_name=request.contact_name,
        contact_email=request.contact_email,
        bandwidth=request.bandwidth,
        ssh_host=request.ssh_host,
        ssh_port=request.ssh_port,
        ssh_user=request.ssh_user,
        upstream=request.upstream,
        sync=request.sync,
        ftp=ftp,
    )


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


@dataclass(frozen=True, slots=True)
class _MirrorRequest:
    contact_name: str | None
    contact_email: str | None
    bandwidth: int | None
    ssh_host: str | None
    ssh_port: int
    ssh_user: str | None
    upstream: str | None
    sync: str | None


def _mirror_request(
    get: Callable[..., Any],
    i: int,
    label: str,
    lines: _Lines,
    fail: Callable[[int | None, str, str], ConfigError],
) -> _MirrorRequest:
    """The contact, bandwidth, ssh and upstream fields; `upstream` names are checked later."""
    sync: str | None = get("sync", _sync_mode, "") or None
    ssh_host: str | None = get("ssh_host", _ssh_host, "") or None
    if sync == "push" and ssh_host is None:
        raise fail(
            lines.mirror(i, "sync"),
            f"{label} field 'ssh_host'",
            "a push mirror needs ssh_host (where the upstream triggers ftpsync over ssh)",
        )
    bandwidth: int = get("bandwidth", parse_bandwidth, 0)
    return _MirrorRequest(
        contact_name=get("contact_name", _contact_name, "") or None,
        contact_email=get("contact_email", _email, "") or None,
        bandwidth=bandwidth or None,
        ssh_host=ssh_host,
        ssh_port=get("ssh_port", lambda v: _int(v, 1, 65535), 22),
        ssh_user=get("ssh_user", _ssh_user, "") or None,
        upstream=get("upstream", _name, "") or None,
        sync=sync,
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
