"""Mirror lists (yum) and metalinks (dnf's librepo) as text, from already-decided inputs (pure).

Repo names: ``<repo>-<ver>`` (``smeupdates-testing-10``) names the directory
``releases/<ver>/<repo>`` below the tree root, or ``releases/testing/<ver>/<repo>`` for a version
listed in ``testing_versions`` (a beta whose whole tree lives under ``releases/testing/``).
Testing *repos* of a released version (``smeupdates-testing``) are ordinary repo names and live
beside the others, as in SME's own shipped lists (``releases/7/smeupdates-testing/$basearch``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import urlsplit
from xml.sax.saxutils import escape, quoteattr

from redirector.core.models import RepomdVersion

BASEARCH = "$basearch"  # yum and librepo substitute it; a list for a request without arch keeps it
LEGACY_VERSION = "7"  # SME 7's `/mirrorlists/<repo>` named no version

# yum keeps only lines matching this (re.match, so from the line's start); librepo is laxer.
YUM_LINE = re.compile(r"\w+://\S+\s*$")
SCHEMES = frozenset({"http", "https", "ftp"})  # what yum and librepo fetch; never rsync://

METALINK_NS = "http://www.metalinker.org/"
MM0_NS = "http://fedorahosted.org/mirrormanager"
MAX_PREFERENCE = 100  # librepo accepts 0..100; MirrorManager counts down from 100 to 1


@dataclass(frozen=True, slots=True)
class RepoRef:
    """A repository a client names, and where it lives in the tree."""

    repo: str  # "smeupdates-testing"
    version: str  # "10"
    path: str  # below the tree root, no trailing slash: "releases/10/smeupdates-testing"

    @property
    def name(self) -> str:
        return f"{self.repo}-{self.version}"

    def arch_dir(self, arch: str) -> str:
        """The directory holding ``repodata/`` for `arch` (or the literal ``$basearch``)."""
        return f"{self.path}/{arch}"


def repo_path(repo: str, version: str, testing_versions: Iterable[str] = ()) -> str:
    """Where ``<repo>-<version>`` lives below the tree root."""
    if version in set(testing_versions):
        return f"releases/testing/{version}/{repo}"
    return f"releases/{version}/{repo}"


def resolve(
    name: str,
    repos: Sequence[str],
    versions: Sequence[str],
    testing_versions: Sequence[str] = (),
) -> RepoRef | None:
    """``smeos-10`` -> its RepoRef, or None when the repo or version is not one we serve.

    Matched against the configured names, never parsed loosely: ``smeupdates-testing-10`` is
    smeupdates-testing version 10, not smeupdates version testing-10.
    """
    repo, sep, version = name.rpartition("-")
    if not sep or repo not in repos or version not in versions:
        return None
    return RepoRef(repo, version, repo_path(repo, version, testing_versions))


def valid_names(repos: Sequence[str], versions: Sequence[str]) -> list[str]:
    """Every ``<repo>-<ver>`` we answer for, for the 404 body."""
    return [f"{r}-{v}" for v in versions for r in repos]


def list_line(base: str, ref: RepoRef, arch: str) -> str | None:
    """One mirror list line, or None if yum would drop it or fetch nothing useful from it."""
    line = base + ref.arch_dir(arch)
    if not YUM_LINE.match(line) or any(c.isspace() for c in line):
        return None
    if urlsplit(line).scheme not in SCHEMES:
        return None
    return line


def _comment(text: str) -> str:
    # A comment must never look like a URL to a lax parser: no "://", one line.
    return "# " + " ".join(text.replace("://", ":/ /").split())


def mirrorlist_text(
    ref: RepoRef,
    arch: str,
    bases: Sequence[str],
    fallback: str | None,
    country: str | None,
    limit: int,
) -> str:
    """The list: ``#`` comments, then at most `limit` URLs in the order given (best first).

    `bases` are tree-root URLs ending in "/", already chosen and ranked for this client;
    `fallback` (the master) is listed alone when none of them gives a usable line. None (the
    master is the redirector itself, `topology.list_fallback`) leaves such a list without URLs
    and says why in a comment: yum then keeps its cached metadata, where a line naming the
    redirector would only send it round in a loop.
    """
    lines: list[str] = []
    for base in bases:
        line = list_line(base, ref, arch)
        if line is not None and line not in lines:
            lines.append(line)
        if len(lines) >= limit:
            break
    if not lines and fallback is not None:
        line = list_line(fallback, ref, arch)
        lines.append(line if line is not None else fallback + ref.arch_dir(arch))
    head = [
        _comment(f"SME Server mirror list for {ref.name} ({ref.path}/{arch})"),
        _comment(f"repo={ref.repo} version={ref.version} arch={arch}"),
        _comment(f"client country={country or 'unknown'} mirrors={len(lines)}"),
    ]
    if not lines:
        head.append(_comment("error: no mirror is current for this repository right now"))
    return "\n".join(head + lines) + "\n"


def metalink_error(ref: RepoRef, arch: str, reason: str, now: float) -> str:
    """The body of a metalink 404, as MirrorManager answers one: a comment saying why, in an
    empty metalink document, so that no client gets a metalink it cannot verify."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f"<!-- {_xml_comment(f'repo={ref.name} arch={arch} error: {reason}')} -->\n"
        f'<metalink version="3.0" xmlns="{METALINK_NS}" type="dynamic"'
        f' pubdate="{formatdate(now, usegmt=True)}" generator="redirector"/>\n'
    )


def _xml_comment(text: str) -> str:
    # "--" may not appear inside an XML comment; one line.
    return " ".join(text.replace("--", "- -").split())


@dataclass(frozen=True, slots=True)
class MetalinkUrl:
    """One mirror's repomd.xml in a metalink."""

    url: str  # full URL of .../repodata/repomd.xml
    country: str | None  # ISO code for the location attribute; None: left out


def _details(v: RepomdVersion, pad: str) -> list[str]:
    hashes = (("md5", v.md5), ("sha1", v.sha1), ("sha256", v.sha256), ("sha512", v.sha512))
    return [
        f"{pad}<mm0:timestamp>{v.timestamp}</mm0:timestamp>",
        f"{pad}<size>{v.size}</size>",
        f"{pad}<verification>",
        *(f'{pad} <hash type="{t}">{escape(h)}</hash>' for t, h in hashes if h),
        f"{pad}</verification>",
    ]


def metalink_xml(
    current: RepomdVersion,
    alternates: Sequence[RepomdVersion],
    urls: Sequence[MetalinkUrl],
    now: float,
    limit: int = MAX_PREFERENCE,
) -> str:
    """A Metalink 3.0 document for ``repomd.xml`` in the shape MirrorManager serves.

    librepo's parser matches element names literally (expat without namespaces), so the
    ``mm0:`` prefix is spelled exactly so. `current` is the master's repomd.xml: its
    timestamp, size and hashes are what librepo verifies (without one, answer `metalink_error`
    instead). `alternates` are earlier accepted versions, newest first. `urls` in preference
    order; preference counts down from 100 and never below 1.
    """
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<metalink version="3.0" xmlns="{METALINK_NS}" type="dynamic"'
        f' pubdate="{formatdate(now, usegmt=True)}" generator="redirector"'
        f' xmlns:mm0="{MM0_NS}">',
        " <files>",
        '  <file name="repomd.xml">',
    ]
    out += _details(current, "   ")
    if alternates:
        out.append("   <mm0:alternates>")
        for alt in alternates:
            out += ["    <mm0:alternate>", *_details(alt, "     "), "    </mm0:alternate>"]
        out.append("   </mm0:alternates>")
    out.append('   <resources maxconnections="1">')
    for i, u in enumerate(urls[:limit]):
        scheme = urlsplit(u.url).scheme
        location = f" location={quoteattr(u.country)}" if u.country else ""
        preference = max(MAX_PREFERENCE - i, 1)
        out.append(
            f'    <url protocol="{scheme}" type="{scheme}"{location}'
            f' preference="{preference}">{escape(u.url)}</url>'
        )
    out += ["   </resources>", "  </file>", " </files>", "</metalink>"]
    return "\n".join(out) + "\n"
