"""File facts: a master file's size, date and hashes, and what clients ask of them (pure).

The facts come from the master's own tree (`Digester` fed the bytes of a file) or from the
checksum files the master publishes beside its files (`parse_sums`). A hash that neither gave
is None, and nothing built from the facts then claims it. The piece hashes (sha-256 of
consecutive `piece_length` blocks) let a Metalink client such as aria2 find the bad block a
corrupt mirror served and fetch that block again from another mirror.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# The algorithms clients ask for, by the name used in ?<name> and .<name> URLs.
ALGORITHMS = ("md5", "sha1", "sha256", "sha512")
HEX_LENGTH = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}
# RFC 3230 Digest names (IANA "HTTP Digest Algorithm Values") and RFC 9530 Repr-Digest names.
DIGEST_NAMES = {"md5": "MD5", "sha1": "SHA", "sha256": "SHA-256", "sha512": "SHA-512"}
REPR_DIGEST_NAMES = {"sha256": "sha-256", "sha512": "sha-512"}  # RFC 9530 keeps only these
DEFAULT_PATTERNS = ("*.iso", "*.img")

PIECE_MIN = 1 << 20  # aria2 re-fetches a bad piece: small pieces waste little
MAX_PIECES = 256  # a 4 GB ISO gets 16 MiB pieces, 16 KiB of piece hashes in the store

_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What the master says one file is. `path` is below the tree root, no leading slash."""

    path: str
    size: int
    mtime: float  # unix time of the master's copy (its mtime, or Last-Modified)
    md5: str | None = None  # lower-case hex, each; None: not known
    sha1: str | None = None
    sha256: str | None = None
    sha512: str | None = None
    piece_length: int = 0  # 0: no piece hashes
    pieces: tuple[str, ...] = ()  # sha-256 hex of each piece, in order
    source: str = "tree"  # "tree" (hashed here) or "sums" (the master's checksum files)

    def hash(self, algorithm: str) -> str | None:
        """The hex digest for `algorithm` (one of ALGORITHMS), None when not known."""
        value: str | None = getattr(self, algorithm) if algorithm in HEX_LENGTH else None
        return value

    @property
    def hashes(self) -> tuple[tuple[str, str], ...]:
        """(algorithm, hex) for every known hash, strongest first."""
        return tuple((a, h) for a in reversed(ALGORITHMS) if (h := self.hash(a)) is not None)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def valid_hex(algorithm: str, value: object) -> bool:
    """Whether `value` is a lower-case hex digest of the right length for `algorithm`."""
    return (
        isinstance(value, str)
        and len(value) == HEX_LENGTH.get(algorithm, -1)
        and _HEX.fullmatch(value) is not None
    )


def worth_hashing(path: str, patterns: Sequence[str]) -> bool:
    """Whether `path` matches one of `patterns`: a glob on the file name, or on the whole path
    when the pattern holds a '/'. Case-sensitive, as the tree is."""
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(path if "/" in p else name, p) for p in patterns)


def piece_length_for(size: int) -> int:
    """The piece length for a file of `size` bytes: a power of two, at least PIECE_MIN, with at
    most MAX_PIECES pieces."""
    length = PIECE_MIN
    while length * MAX_PIECES < size:
        length *= 2
    return length


class Digester:
    """Every hash of one file at once, fed its bytes in order (`update`), read once (`facts`)."""

    def __init__(self, size: int) -> None:
        self.piece_length = piece_length_for(size)
        self._all = {a: hashlib.new(a) for a in ALGORITHMS}
        self._piece = hashlib.sha256()
        self._in_piece = 0
        self._pieces: list[str] = []
        self.fed = 0

    def update(self, data: bytes) -> None:
        for h in self._all.values():
            h.update(data)
        self.fed += len(data)
        view = memoryview(data)
        while view:
            room = self.piece_length - self._in_piece
            part, view = view[:room], view[room:]
            self._piece.update(part)
            self._in_piece += len(part)
            if self._in_piece == self.piece_length:
                self._pieces.append(self._piece.hexdigest())
                self._piece, self._in_piece = hashlib.sha256(), 0

    def facts(self, path: str, mtime: float) -> FileFacts:
        pieces = list(self._pieces)
        if self._in_piece:
            pieces.append(self._piece.hexdigest())
        d = {a: h.hexdigest() for a, h in self._all.items()}
        return FileFacts(
            path=path,
            size=self.fed,
            mtime=mtime,
            md5=d["md5"],
            sha1=d["sha1"],
            sha256=d["sha256"],
            sha512=d["sha512"],
            piece_length=self.piece_length,
            pieces=tuple(pieces),
            source="tree",
        )


# --- checksum files the master publishes ----------------------------------------------------

# GNU coreutils: "<hex>  <name>" or "<hex> *<name>" (binary mode);
# BSD and `sha256sum --tag`: "SHA256 (<name>) = <hex>".
_GNU_LINE = re.compile(r"([0-9a-fA-F]+) [ *](.+)")
_BSD_LINE = re.compile(r"(MD5|SHA1|SHA256|SHA512) \((.+)\) = ([0-9a-fA-F]+)")
_SUMS_NAMES = {
    "md5": ("MD5SUMS", "md5sum.txt"),
    "sha1": ("SHA1SUMS", "sha1sum.txt"),
    "sha256": ("SHA256SUMS", "sha256sum.txt"),
    "sha512": ("SHA512SUMS", "sha512sum.txt"),
}


def sums_algorithm(name: str) -> str | None:
    """The algorithm a checksum file's name says it holds, None when it names none:
    ``SHA256SUMS``, ``sha256sum.txt``, ``<file>.sha256``, ``CHECKSUM`` (None: its lines say)."""
    lower = name.lower()
    for algorithm, names in _SUMS_NAMES.items():
        if lower in {n.lower() for n in names} or lower.endswith("." + algorithm):
            return algorithm
    return None


def parse_sums(text: str, algorithm: str | None) -> dict[str, dict[str, str]]:
    """File name -> {algorithm: hex} from a checksum file's text.

    GNU lines (``<hex>  <name>``) count only when the hex has `algorithm`'s length (or, with
    `algorithm` None, a length that names exactly one algorithm); BSD lines name their own.
    A name with a directory keeps only its last part, as the files sit beside the list; lines
    that are neither (comments, PGP armour) are skipped.
    """
    by_length = {n: a for a, n in HEX_LENGTH.items()}
    out: dict[str, dict[str, str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        bsd = _BSD_LINE.fullmatch(line)
        if bsd is not None:
            algo, name, digest = bsd.group(1).lower(), bsd.group(2), bsd.group(3).lower()
        else:
            gnu = _GNU_LINE.fullmatch(line)
            if gnu is None:
                continue
            digest, name = gnu.group(1).lower(), gnu.group(2)
            found = by_length.get(len(digest))
            if found is None or (algorithm is not None and found != algorithm):
                continue
            algo = found
        name = name.rsplit("/", 1)[-1]
        if valid_hex(algo, digest) and name and name not in {".", ".."}:
            out.setdefault(name, {})[algo] = digest
    return out


# --- what clients ask: ?sha256, .sha256, ?meta4, .meta4, .metalink -------------------------

SUFFIXES = {f".{a}": a for a in ALGORITHMS} | {".meta4": "meta4", ".metalink": "metalink"}
QUERY_WORDS = frozenset({*ALGORITHMS, "meta4", "metalink", "fileinfo"})
META4_TYPE = "application/metalink4+xml"


def suffix_request(path: str) -> tuple[str, str] | None:
    """(the file's path, what is asked) for ``<file>.sha256``, ``<file>.meta4``, ...; None else.

    Whether `<file>` is one we know is the caller's to check: ``x.sha256`` may be a real file.
    """
    dot = path.rfind(".")
    if dot <= 0:
        return None
    want = SUFFIXES.get(path[dot:])
    return None if want is None else (path[:dot], want)


def query_request(query: str) -> str | None:
    """The first word of `query` that asks for facts (``sha256``, ``meta4``, ``fileinfo``, ...),
    bare or with a value (``?sha256=1``); None when none does."""
    for part in query.split("&"):
        name = part.partition("=")[0]
        if name in QUERY_WORDS:
            return name
    return None


def accepts_meta4(accept: str | None) -> bool:
    """Whether an Accept header names Metalink 4 (with a q above 0)."""
    if not accept or "metalink4" not in accept:
        return False
    for item in accept.split(","):
        kind, _, params = item.strip().partition(";")
        if kind.strip().lower() == META4_TYPE:
            q = re.search(r"q\s*=\s*([0-9.]+)", params)
            try:
                return q is None or float(q.group(1)) > 0
            except ValueError:
                return False
    return False


def hash_text(facts: FileFacts, algorithm: str, *, with_name: bool) -> str | None:
    """The hash as text: ``<hex>\\n``, or ``<hex>  <name>\\n`` (what ``sha256sum -c`` reads)."""
    digest = facts.hash(algorithm)
    if digest is None:
        return None
    return f"{digest}  {facts.name}\n" if with_name else digest + "\n"


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def digest_headers(facts: FileFacts) -> dict[str, str]:
    """RFC 3230 ``Digest`` and RFC 9530 ``Repr-Digest`` for the file, strongest first; empty
    when no hash is known. Both carry base64 of the raw digest (RFC 9530 as a byte sequence)."""
    out: dict[str, str] = {}
    known = facts.hashes
    legacy = ",".join(f"{DIGEST_NAMES[a]}={_b64(h)}" for a, h in known)
    if legacy:
        out["Digest"] = legacy
    modern = ", ".join(
        f"{REPR_DIGEST_NAMES[a]}=:{_b64(h)}:" for a, h in known if a in REPR_DIGEST_NAMES
    )
    if modern:
        out["Repr-Digest"] = modern
    return out


def fileinfo(facts: FileFacts, iso_date: str) -> dict[str, object]:
    """The ``?fileinfo`` answer (mirrorbits' shape): path, size, date and the known hashes."""
    out: dict[str, object] = {"path": facts.path, "size": facts.size, "modtime": iso_date}
    out.update(dict(facts.hashes))
    out["source"] = facts.source
    return out


def changed(known: Mapping[str, FileFacts], path: str, size: int, mtime: float) -> bool:
    """Whether the file at `path` (now `size` bytes, `mtime`) needs hashing again."""
    old = known.get(path)
    return old is None or old.source != "tree" or old.size != size or old.mtime != mtime


def gone(known: Iterable[str], present: set[str]) -> list[str]:
    """The known paths no longer in the tree, sorted."""
    return sorted(p for p in known if p not in present)


@dataclass(frozen=True, slots=True)
class BadCopy:
    """A mirror caught serving a copy of a master file that is not the master's."""

    mirror: str
    path: str
    reason: str  # "size 1000, the master's 2000", "piece 3 differs"
    seen_at: float  # unix time it was last seen so


# --- sample checks: ranged GETs of a piece, compared with the master's piece hash ---------


@dataclass(frozen=True, slots=True)
class Sample:
    """One piece of one file to fetch from one mirror: bytes `start`..`end`, both included."""

    mirror: str
    path: str
    piece: int
    start: int
    end: int


def _sample(mirror: str, f: FileFacts, piece: int) -> Sample:
    start = piece * f.piece_length
    return Sample(mirror, f.path, piece, start, min(start + f.piece_length, f.size) - 1)


def pick_samples(
    files: Sequence[FileFacts], mirrors: Sequence[str], budget: int, rng: random.Random
) -> list[Sample]:
    """At most `budget` distinct (mirror, file, piece) samples, drawn with `rng`; every one of
    them when there are no more than `budget`. Files without piece hashes are left out."""
    hashed = [f for f in files if f.pieces and f.size > 0]
    total = sum(len(f.pieces) for f in hashed) * len(mirrors)
    if budget <= 0 or total == 0:
        return []
    if total <= budget:
        return [_sample(m, f, i) for m in mirrors for f in hashed for i in range(len(f.pieces))]
    picked: dict[tuple[str, str, int], Sample] = {}
    while len(picked) < budget:
        m = mirrors[rng.randrange(len(mirrors))]
        f = hashed[rng.randrange(len(hashed))]
        i = rng.randrange(len(f.pieces))
        picked.setdefault((m, f.path, i), _sample(m, f, i))
    return list(picked.values())
