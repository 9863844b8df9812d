"""Metalink 4 (RFC 5854) and Metalink 3 documents for one download, from decided inputs (pure).

A Metalink client (aria2, wget2) reads the size and hashes, fetches from several of the listed
mirrors at once, checks every piece against the piece hashes, and fetches a piece that does
not match again from another mirror: a corrupt mirror then costs a retry, not a bad ISO.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import urlsplit
from xml.sax.saxutils import escape, quoteattr

from redirector.core.filefacts import FileFacts
from redirector.core.humanize import rfc3339

META4_NS = "urn:ietf:params:xml:ns:metalink"
METALINK3_NS = "http://www.metalinker.org/"
# RFC 5854 names hashes by the IANA "Hash Function Textual Names".
META4_HASH = {"md5": "md5", "sha1": "sha-1", "sha256": "sha-256", "sha512": "sha-512"}
# The order of <hash> elements: wget2 (1.99.1) checks the file against the first one only and
# gets sha-512 wrong, failing every download; aria2 picks the strongest it knows wherever it is.
META4_ORDER = ("sha256", "sha512", "sha1", "md5")
MAX_PRIORITY = 999999  # RFC 5854: priority 1 (best) .. 999999
MAX_PREFERENCE = 100  # Metalink 3: preference 100 (best) .. 1


@dataclass(frozen=True, slots=True)
class DownloadUrl:
    """One place to get the file, in rank order (the first is the best for this client)."""

    url: str
    country: str | None  # ISO 3166 code for `location`; None: left out


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1] or "download"


def metalink4_xml(
    path: str, facts: FileFacts | None, urls: Sequence[DownloadUrl], now: float
) -> str:
    """An RFC 5854 document for the file at `path`: its size and hashes when `facts` is given,
    then one ``<url>`` per entry of `urls` with ``priority`` 1, 2, ... in the order given.

    `facts` None (nothing known about the file): URLs only, so nothing is claimed that no
    source gave. The piece hashes go in only with a known piece length.
    """
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<metalink xmlns="{META4_NS}">',
        "  <generator>redirector</generator>",
        f"  <published>{rfc3339(now)}</published>",
        f"  <file name={quoteattr(_name(path))}>",
    ]
    if facts is not None:
        out.append(f"    <size>{facts.size}</size>")
        for algorithm in META4_ORDER:
            digest = facts.hash(algorithm)
            if digest is not None:
                out.append(f'    <hash type="{META4_HASH[algorithm]}">{digest}</hash>')
        if facts.piece_length and facts.pieces:
            out.append(f'    <pieces length="{facts.piece_length}" type="sha-256">')
            out += [f"      <hash>{p}</hash>" for p in facts.pieces]
            out.append("    </pieces>")
    for i, u in enumerate(urls):
        location = f" location={quoteattr(u.country.lower())}" if u.country else ""
        priority = min(i + 1, MAX_PRIORITY)
        out.append(f'    <url{location} priority="{priority}">{escape(u.url)}</url>')
    out += ["  </file>", "</metalink>"]
    return "\n".join(out) + "\n"


def metalink3_xml(
    path: str, facts: FileFacts | None, urls: Sequence[DownloadUrl], now: float
) -> str:
    """The same download as a Metalink 3.0 document (``.metalink``), for older clients:
    ``preference`` counts down from 100 and never below 1."""
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<metalink version="3.0" xmlns="{METALINK3_NS}" type="dynamic"'
        f' pubdate="{formatdate(now, usegmt=True)}" generator="redirector">',
        "  <files>",
        f"    <file name={quoteattr(_name(path))}>",
    ]
    if facts is not None:
        out.append(f"      <size>{facts.size}</size>")
        out.append("      <verification>")
        for algorithm, digest in facts.hashes:
            out.append(
                f'        <hash type="{META4_HASH[algorithm].replace("-", "")}">{digest}</hash>'
            )
        if facts.piece_length and facts.pieces:
            out.append(f'        <pieces length="{facts.piece_length}" type="sha256">')
            out += [f'          <hash piece="{i}">{p}</hash>' for i, p in enumerate(facts.pieces)]
            out.append("        </pieces>")
        out.append("      </verification>")
    out.append("      <resources>")
    for i, u in enumerate(urls):
        scheme = urlsplit(u.url).scheme
        location = f" location={quoteattr(u.country.lower())}" if u.country else ""
        preference = max(MAX_PREFERENCE - i, 1)
        out.append(
            f'        <url type="{scheme}"{location} preference="{preference}">'
            f"{escape(u.url)}</url>"
        )
    out += ["      </resources>", "    </file>", "  </files>", "</metalink>"]
    return "\n".join(out) + "\n"
