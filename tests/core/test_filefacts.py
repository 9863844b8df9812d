"""File facts, checksum files, Digest headers and Metalink documents: the pure parts."""

from __future__ import annotations

import base64
import hashlib
import random
import xml.etree.ElementTree as ET

import pytest

from redirector.core.filefacts import (
    PIECE_MIN,
    Digester,
    FileFacts,
    accepts_meta4,
    changed,
    digest_headers,
    hash_text,
    parse_sums,
    pick_samples,
    piece_length_for,
    query_request,
    suffix_request,
    sums_algorithm,
    valid_hex,
    worth_hashing,
)
from redirector.core.metalink4 import DownloadUrl, metalink3_xml, metalink4_xml

NS4 = {"m": "urn:ietf:params:xml:ns:metalink"}
NS3 = {"m": "http://www.metalinker.org/"}


def parse_xml(text: str) -> ET.Element:
    return ET.fromstring(text)  # noqa: S314  # our own server's output


def digest_of(data: bytes, path: str = "releases/10/iso/sme.iso", chunks: int = 7) -> FileFacts:
    d = Digester(len(data))
    step = max(1, len(data) // chunks)
    for i in range(0, len(data), step):
        d.update(data[i : i + step])
    return d.facts(path, 1700000000.0)


def test_the_digester_gives_every_hash_of_the_bytes_fed_in_any_chunking() -> None:
    data = bytes(range(256)) * 20000  # 5 MB: several pieces and a short last one
    facts = digest_of(data)
    assert facts.size == len(data)
    assert facts.md5 == hashlib.md5(data).hexdigest()  # noqa: S324  # a checksum, not security
    assert facts.sha1 == hashlib.sha1(data).hexdigest()  # noqa: S324  # a checksum, not security
    assert facts.sha256 == hashlib.sha256(data).hexdigest()
    assert facts.sha512 == hashlib.sha512(data).hexdigest()
    length = facts.piece_length
    assert length == PIECE_MIN
    assert facts.pieces == tuple(
        hashlib.sha256(data[i : i + length]).hexdigest() for i in range(0, len(data), length)
    )
    assert digest_of(data, chunks=1) == facts == digest_of(data, chunks=1000)


def test_pieces_grow_so_a_large_file_has_a_bounded_number_of_them() -> None:
    assert piece_length_for(0) == PIECE_MIN
    assert piece_length_for(256 * PIECE_MIN) == PIECE_MIN
    assert piece_length_for(256 * PIECE_MIN + 1) == 2 * PIECE_MIN
    four_gb = 4 * 10**9
    assert -(-four_gb // piece_length_for(four_gb)) <= 256
    assert digest_of(b"").pieces == ()


@pytest.mark.parametrize(
    ("path", "patterns", "worth"),
    [
        ("releases/10/iso/sme.iso", ("*.iso",), True),
        ("releases/10/iso/sme.iso.sha256", ("*.iso",), False),
        ("releases/10/iso/sme.ISO", ("*.iso",), False),
        ("contribs/x/big.tar.gz", ("contribs/*/*.tar.gz",), True),
        ("releases/x/big.tar.gz", ("contribs/*/*.tar.gz",), False),
    ],
)
def test_worth_hashing_is_a_glob_on_the_name_or_the_path(
    path: str, patterns: tuple[str, ...], worth: bool
) -> None:
    assert worth_hashing(path, patterns) is worth


SHA = hashlib.sha256(b"a").hexdigest()
MD5 = hashlib.md5(b"a").hexdigest()  # noqa: S324  # a checksum, not security


def test_checksum_files_in_gnu_and_bsd_form() -> None:
    text = (
        "-----BEGIN PGP SIGNED MESSAGE-----\n"
        f"{SHA}  smeserver-10.0-x86_64.iso\n"
        f"{SHA.upper()} *dir/binary-mode.iso\n"
        f"{MD5}  a-md5-line-in-a-sha256-file.iso\n"
        f"SHA256 (tagged.iso) = {SHA}\n"
        f"MD5 (tagged.iso) = {MD5}\n"
        "# comment\n"
        f"{SHA}  ..\n"
        "garbage line\n"
    )
    got = parse_sums(text, "sha256")
    assert got == {
        "smeserver-10.0-x86_64.iso": {"sha256": SHA},
        "binary-mode.iso": {"sha256": SHA},
        "tagged.iso": {"sha256": SHA, "md5": MD5},
    }
    # Without a name that says the algorithm, the length does.
    assert parse_sums(f"{MD5}  x.iso\n{SHA}  y.iso\n", None) == {
        "x.iso": {"md5": MD5},
        "y.iso": {"sha256": SHA},
    }


@pytest.mark.parametrize(
    ("name", "algorithm"),
    [
        ("SHA256SUMS", "sha256"),
        ("sha256sum.txt", "sha256"),
        ("smeserver.iso.sha256", "sha256"),
        ("MD5SUMS", "md5"),
        ("sha512sum.txt", "sha512"),
        ("CHECKSUM", None),
    ],
)
def test_a_checksum_file_name_says_its_algorithm(name: str, algorithm: str | None) -> None:
    assert sums_algorithm(name) == algorithm


def test_suffixes_queries_and_accept() -> None:
    assert suffix_request("releases/a.iso.sha256") == ("releases/a.iso", "sha256")
    assert suffix_request("releases/a.iso.meta4") == ("releases/a.iso", "meta4")
    assert suffix_request("releases/a.iso.metalink") == ("releases/a.iso", "metalink")
    assert suffix_request("releases/a.iso") is None
    assert suffix_request(".sha256") is None
    assert query_request("sha256") == "sha256"
    assert query_request("x=1&md5=") == "md5"
    assert query_request("mirrorlist") is None
    assert query_request("fileinfo&json") == "fileinfo"
    assert accepts_meta4("application/metalink4+xml")
    assert accepts_meta4("text/html, application/metalink4+xml;q=0.9")
    assert not accepts_meta4("application/metalink4+xml;q=0")
    assert not accepts_meta4("*/*")
    assert not accepts_meta4(None)


def test_digest_headers_are_base64_of_the_raw_digests() -> None:
    data = b"iso bytes"
    facts = digest_of(data)
    h = digest_headers(facts)
    sha256 = base64.b64encode(hashlib.sha256(data).digest()).decode()
    sha512 = base64.b64encode(hashlib.sha512(data).digest()).decode()
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324  # RFC 1864
    assert h["Repr-Digest"] == f"sha-512=:{sha512}:, sha-256=:{sha256}:"
    assert h["Digest"].split(",") == [
        f"SHA-512={sha512}",
        f"SHA-256={sha256}",
        f"SHA={base64.b64encode(hashlib.sha1(data).digest()).decode()}",  # noqa: S324  # RFC 3230
        f"MD5={md5}",
    ]
    # Only what a source gave is claimed.
    only = FileFacts("a.iso", 1, 0.0, md5=MD5, source="sums")
    assert digest_headers(only) == {
        "Digest": f"MD5={base64.b64encode(bytes.fromhex(MD5)).decode()}"
    }
    assert digest_headers(FileFacts("a.iso", 1, 0.0)) == {}
    assert hash_text(only, "sha256", with_name=False) is None
    assert hash_text(only, "md5", with_name=True) == f"{MD5}  a.iso\n"


def test_only_a_changed_file_is_hashed_again() -> None:
    known = {"a.iso": FileFacts("a.iso", 10, 5.0, sha256=SHA)}
    assert not changed(known, "a.iso", 10, 5.0)
    assert changed(known, "a.iso", 11, 5.0)
    assert changed(known, "a.iso", 10, 6.0)
    assert changed(known, "b.iso", 10, 5.0)
    assert changed({"a.iso": FileFacts("a.iso", 10, 5.0, source="sums")}, "a.iso", 10, 5.0)


def test_valid_hex_wants_the_algorithm_length_in_lower_case() -> None:
    assert valid_hex("sha256", SHA)
    assert not valid_hex("sha256", SHA.upper())
    assert not valid_hex("sha256", MD5)
    assert not valid_hex("sha256", None)
    assert not valid_hex("crc32", "00000000")


def test_a_metalink4_lists_size_hashes_pieces_and_mirrors_in_rank_order() -> None:
    data = b"x" * (PIECE_MIN + 5)
    facts = digest_of(data, "releases/10/iso/a & b.iso")
    urls = [
        DownloadUrl("http://nl.example/sme/releases/10/iso/a%20&%20b.iso", "NL"),
        DownloadUrl("https://us.example/releases/10/iso/a%20&%20b.iso", None),
    ]
    doc = parse_xml(metalink4_xml(facts.path, facts, urls, 1700000000.0))
    assert doc.tag == "{urn:ietf:params:xml:ns:metalink}metalink"
    assert doc.findtext("m:published", namespaces=NS4) == "2023-11-14T22:13:20Z"
    f = doc.find("m:file", NS4)
    assert f is not None
    assert f.get("name") == "a & b.iso"
    assert f.findtext("m:size", namespaces=NS4) == str(len(data))
    hashes = {h.get("type"): h.text for h in f.findall("m:hash", NS4)}
    assert hashes == {
        "sha-512": facts.sha512,
        "sha-256": facts.sha256,
        "sha-1": facts.sha1,
        "md5": facts.md5,
    }
    pieces = f.find("m:pieces", NS4)
    assert pieces is not None
    assert pieces.get("length") == str(PIECE_MIN)
    assert pieces.get("type") == "sha-256"
    assert [h.text for h in pieces.findall("m:hash", NS4)] == list(facts.pieces)
    got = [(u.text, u.get("location"), u.get("priority")) for u in f.findall("m:url", NS4)]
    assert got == [(urls[0].url, "nl", "1"), (urls[1].url, None, "2")]


def test_a_metalink_without_facts_claims_nothing() -> None:
    doc = parse_xml(metalink4_xml("x/y.iso", None, [DownloadUrl("http://m/x/y.iso", "DE")], 0))
    f = doc.find("m:file", NS4)
    assert f is not None
    assert f.find("m:size", NS4) is None
    assert f.find("m:hash", NS4) is None
    assert [u.text for u in f.findall("m:url", NS4)] == ["http://m/x/y.iso"]


def test_a_metalink3_has_the_same_download_with_preferences() -> None:
    facts = digest_of(b"abc")
    urls = [DownloadUrl(f"http://m{i}/a.iso", "FR") for i in range(3)]
    doc = parse_xml(metalink3_xml(facts.path, facts, urls, 0))
    f = doc.find("m:files/m:file", NS3)
    assert f is not None
    assert f.findtext("m:size", namespaces=NS3) == "3"
    hashes = {h.get("type"): h.text for h in f.findall("m:verification/m:hash", NS3)}
    assert hashes["sha256"] == facts.sha256
    assert hashes["md5"] == facts.md5
    prefs = [u.get("preference") for u in f.findall("m:resources/m:url", NS3)]
    assert prefs == ["100", "99", "98"]


def test_samples_cover_everything_within_budget_and_draw_with_the_given_randomness() -> None:
    big = digest_of(b"y" * (3 * PIECE_MIN + 10), "a.iso")  # 4 pieces, the last 10 bytes
    small = FileFacts("b.iso", 5, 0.0)  # no piece hashes: never sampled
    every = pick_samples([big, small], ["nl", "us"], 8, random.Random(1))
    assert len(every) == 8
    assert {(s.mirror, s.piece) for s in every} == {(m, i) for m in ("nl", "us") for i in range(4)}
    last = next(s for s in every if s.piece == 3)
    assert (last.start, last.end) == (3 * PIECE_MIN, 3 * PIECE_MIN + 9)
    drawn = pick_samples([big], ["nl", "us"], 3, random.Random(5))
    assert len({(s.mirror, s.piece) for s in drawn}) == 3
    assert drawn == pick_samples([big], ["nl", "us"], 3, random.Random(5))
    assert pick_samples([big], ["nl"], 0, random.Random(1)) == []
    assert pick_samples([small], ["nl"], 5, random.Random(1)) == []
