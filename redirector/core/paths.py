"""Request paths: which part of the tree a request names, refusing anything that could escape it."""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

TREE_PREFIXES = ("/smeserver", "/pub/smeserver")  # /pub/ links from 2005-2006 still circulate

# RFC 3986 pchar plus "/", with "%" only as the start of a valid escape.
_SAFE = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*")
_SLASHES = re.compile(r"/{2,}")
# One C-level scan each instead of a Python loop over the characters or segments: this runs
# for every redirect.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")
_DOT_SEGMENT = re.compile(r"(?:^|/)\.\.?(?:/|\Z)")
MAX_PATH = 4096


class BadPath(ValueError):
    """A path we refuse to redirect; the message says why, for the 400 body."""


def split_target(raw: str) -> tuple[str, str]:
    """The raw request target -> (raw path, raw query)."""
    path, _, query = raw.partition("?")
    return path, query


def tree_prefix(raw_path: str) -> str | None:
    """The tree prefix `raw_path` starts with, or None when it is not a tree path."""
    for p in TREE_PREFIXES:
        if raw_path == p or raw_path.startswith(p + "/"):
            return p
    return None


def tree_path(raw_path: str, prefix: str) -> str:
    """The path below the tree root, still percent-encoded as the client sent it.

    Refuses ('..' or '.' segments, raw or encoded), NUL and control characters, backslashes,
    an encoded '/', and characters a URL may not carry. Runs of slashes are folded so the
    result never starts with '/': joined to a base URL it stays below that base.
    """
    rest = raw_path[len(prefix) :]
    if len(rest) > MAX_PATH:
        raise BadPath("path too long")
    if not _SAFE.fullmatch(rest):
        raise BadPath("path has characters a URL may not carry")
    if "//" in rest:
        rest = _SLASHES.sub("/", rest)
    rest = rest.lstrip("/")
    if "%" in rest:
        try:
            # Strict UTF-8 also refuses overlong forms such as %c0%ae, an old way to write '.'.
            decoded = unquote_to_bytes(rest).decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadPath("percent-encoded bytes are not UTF-8") from e
        if decoded.count("/") != rest.count("/"):
            raise BadPath("encoded '/' in the path")
        # Without a '%', _SAFE has already refused these: only decoding can bring them in.
        if _CONTROL.search(decoded):
            raise BadPath("control character or backslash in the path")
    else:
        decoded = rest
    if _DOT_SEGMENT.search(decoded):
        raise BadPath("'.' or '..' segment in the path")
    return rest
