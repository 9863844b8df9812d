"""The master topology: where the poller reads the master, where a client falls back, own names.

Three things that used to be one URL (`master`) and must not be, when the redirector runs on
the master's own host (DOMAIN.md section 7):

- the *origin*: what the poller reads the master tree from (`master_origin`: a local directory
  as ``file:///srv/...`` or an internal URL the redirector does not answer);
- the *fallback*: what a client gets when no mirror is eligible. ``redirect`` sends it to the
  master's public download URL (`master`), which must then be another host; ``local`` answers
  with ``X-Accel-Redirect: /_master/<path>`` and nginx serves the file from the local tree;
- the *public names*: the host names (optionally ``host:port``) clients reach the redirector
  by. A Location, a mirror list line or a metalink URL never names one of them: a client sent
  there would only be sent on again, in a loop.

Pure: the checks here are what `config.settings` refuses a config with, and what the router,
the per-file check and the list handlers ask before naming the master.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

FALLBACK_MODES = ("redirect", "local")
# The nginx location (internal) that serves the master tree from disk; see deploy/nginx.
LOCAL_PREFIX = "/_master/"
ACCEL_HEADER = "X-Accel-Redirect"
_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}


def normalize_name(value: str) -> str:
    """A public name as compared: lower case, no trailing dot, ``[v6]:port`` kept bracketed.

    Raises ValueError for anything but ``host`` or ``host:port``.
    """
    text = value.strip().lower()
    if not text or any(c in text for c in "/?#@ \t") or "://" in text:
        raise ValueError(f"{value!r}: expected a host name like 'mirror.contribs.org' or host:port")
    parts = urlsplit("//" + text)
    try:
        port = parts.port
    except ValueError as e:
        raise ValueError(f"{value!r} has a bad port") from e
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError(f"{value!r} has no host")
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def _host_port(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".").lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        port = None
    return host, port


def names_url(names: Iterable[str], url: str) -> str | None:
    """The public name `url` points at (a name without a port matches every port), or None."""
    host, port = _host_port(url)
    if not host:
        return None
    for name in names:
        parts = urlsplit("//" + name)
        nhost = (parts.hostname or "").rstrip(".")
        if nhost != host:
            continue
        if parts.port is None or parts.port == port:
            return name
    return None


def listen_names(host: str, port: int) -> tuple[str, ...]:
    """The names the listen address itself answers by (a wildcard: the loopback addresses)."""
    if host in ("0.0.0.0", "::", ""):  # noqa: S104  # compared, not bound
        return (f"127.0.0.1:{port}", f"[::1]:{port}", f"localhost:{port}")
    return (normalize_name(f"[{host}]:{port}" if ":" in host else f"{host}:{port}"),)


def fallback_target(mode: str, master: str, path: str) -> str:
    """Where a client goes for `path` (below the tree root) when no mirror has it.

    ``redirect``: the master's public URL. ``local``: the internal nginx location, a path
    (never a URL): the web layer answers it with X-Accel-Redirect instead of a 302.
    """
    if mode == "local":
        return LOCAL_PREFIX + path
    return master + path


def is_local(target: str) -> bool:
    """Whether a target from `fallback_target` is served by nginx from the local tree."""
    return target.startswith(LOCAL_PREFIX)


def list_fallback(master: str, names: Iterable[str]) -> str | None:
    """The tree URL a mirror list or metalink may name when no mirror is usable: the master,
    unless it is one of the redirector's own names (then none: an empty list, not a loop)."""
    return None if names_url(names, master) is not None else master
