"""Tests for redirector.mirrorlist: repo names, lists as yum reads them, metalinks for librepo."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from xml.parsers import expat

import pytest

from redirector.config.settings import SME_REPOS
from redirector.core.mirrorlist import (
    MetalinkUrl,
    RepoRef,
    list_line,
    metalink_xml,
    mirrorlist_text,
    repo_path,
    resolve,
    valid_names,
)
from redirector.core.models import RepomdVersion

YUM = re.compile(r"\w+://\S+\s*$")  # yum's own filter, applied with re.match
VERSIONS = ("7", "8", "9", "10", "11", "12")
NS = {"ml": "http://www.metalinker.org/", "mm0": "http://fedorahosted.org/mirrormanager"}
NOW = 1_790_000_000.0


def parse(doc: str) -> ET.Element:
    return ET.fromstring(doc)  # noqa: S314  # our own output under test, not untrusted input


def yum_urls(text: str) -> list[str]:
    """What yum keeps of a mirror list: lines matching its pattern, stripped."""
    return [line.strip() for line in text.splitlines() if YUM.match(line)]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("smeos-10", RepoRef("smeos", "10", "releases/10/smeos")),
        (
            "smeupdates-testing-11",
            RepoRef("smeupdates-testing", "11", "releases/11/smeupdates-testing"),
        ),
        (
            "smecontribs-testing-12",
            RepoRef("smecontribs-testing", "12", "releases/12/smecontribs-testing"),
        ),
        ("smedev-7", RepoRef("smedev", "7", "releases/7/smedev")),
        ("smeos-13", None),  # version not served
        ("smeos", None),
        ("smefoo-10", None),
        ("smeupdates-testing", None),  # "testing" is not a version
        ("-10", None),
        ("", None),
        ("smeos-10-", None),
    ],
)
def test_resolve(name: str, expected: RepoRef | None) -> None:
    assert resolve(name, SME_REPOS, VERSIONS) == expected


def test_testing_versions_live_under_releases_testing() -> None:
    ref = resolve("smeos-12", SME_REPOS, VERSIONS, testing_versions=("12",))
    assert ref == RepoRef("smeos", "12", "releases/testing/12/smeos")
    assert (
        repo_path("smeupdates-testing", "12", ("12",)) == "releases/testing/12/smeupdates-testing"
    )
    assert repo_path("smeos", "11", ("12",)) == "releases/11/smeos"


def test_valid_names() -> None:
    names = valid_names(("smeos", "smedev"), ("10", "11"))
    assert names == ["smeos-10", "smedev-10", "smeos-11", "smedev-11"]


REF = RepoRef("smeos", "10", "releases/10/smeos")
BASES = [
    "http://ftp.nluug.nl/os/Linux/distr/smeserver/",
    "https://mail.contribs.fr/",
    "http://www.mirrorservice.org/sites/mirror.contribs.org/",
]


def test_list_has_comments_on_top_then_urls_with_literal_basearch() -> None:
    text = mirrorlist_text(REF, "$basearch", BASES, "http://master/", "NL", 10)
    lines = text.splitlines()
    assert text.endswith("\n")
    assert [line for line in lines if line.startswith("#")] == lines[:3]
    assert "repo=smeos" in lines[1]
    assert "version=10" in lines[1]
    assert "country=NL" in lines[2]
    assert lines[3:] == [b + "releases/10/smeos/$basearch" for b in BASES]
    assert yum_urls(text) == lines[3:]


def test_list_respects_the_limit_and_keeps_order() -> None:
    bases = [f"http://m{i}.example/sme/" for i in range(30)]
    urls = yum_urls(mirrorlist_text(REF, "x86_64", bases, "http://master/", None, 10))
    assert urls == [f"http://m{i}.example/sme/releases/10/smeos/x86_64" for i in range(10)]


def test_list_never_carries_a_line_yum_would_drop_or_could_not_use() -> None:
    bases = [
        "rsync://rsync.example/sme/",
        "http://bad host/sme/",
        "http://tab\there/",
        "ftp://ftp.example/sme/",
        "gopher://old.example/",
        "http://ok.example/sme/",
    ]
    text = mirrorlist_text(REF, "$basearch", bases, "http://master/", None, 10)
    urls = [line for line in text.splitlines() if not line.startswith("#")]
    assert urls == [
        "ftp://ftp.example/sme/releases/10/smeos/$basearch",
        "http://ok.example/sme/releases/10/smeos/$basearch",
    ]
    assert yum_urls(text) == urls


def test_an_empty_choice_falls_back_to_the_master() -> None:
    text = mirrorlist_text(REF, "$basearch", [], "https://mirror.contribs.org/smeserver/", None, 10)
    assert yum_urls(text) == ["https://mirror.contribs.org/smeserver/releases/10/smeos/$basearch"]
    assert "country=unknown" in text


def test_comments_never_look_like_urls() -> None:
    text = mirrorlist_text(REF, "$basearch", BASES, "http://master/", "US", 10)
    for line in text.splitlines():
        if line.startswith("#"):
            assert "://" not in line


@pytest.mark.parametrize("repo", SME_REPOS)
@pytest.mark.parametrize("version", ["10", "11", "12"])
def test_every_sme_repo_gives_a_well_formed_list(repo: str, version: str) -> None:
    ref = resolve(f"{repo}-{version}", SME_REPOS, VERSIONS)
    assert ref is not None
    text = mirrorlist_text(ref, "$basearch", BASES, "http://master/", "DE", 10)
    urls = [line for line in text.splitlines() if not line.startswith("#")]
    assert urls
    assert yum_urls(text) == urls
    for url in urls:
        assert url.endswith(f"/releases/{version}/{repo}/$basearch")


def test_list_line() -> None:
    assert list_line("http://a/", REF, "x86_64") == "http://a/releases/10/smeos/x86_64"
    assert list_line("rsync://a/", REF, "x86_64") is None
    assert list_line("http://a b/", REF, "x86_64") is None


def version(n: int, size: int = 3000) -> RepomdVersion:
    return RepomdVersion(
        size=size,
        timestamp=1_700_000_000 + n,
        md5=f"{n:032x}",
        sha1=f"{n:040x}",
        sha256=f"{n:064x}",
        sha512=f"{n:0128x}",
        first_seen=NOW - 3600 * n,
    )


URLS = [
    MetalinkUrl("http://nl.example/sme/releases/10/smeos/x86_64/repodata/repomd.xml", "NL"),
    MetalinkUrl("https://fr.example/releases/10/smeos/x86_64/repodata/repomd.xml", "FR"),
    MetalinkUrl("http://master.example/releases/10/smeos/x86_64/repodata/repomd.xml?a=1&b=2", None),
]


def test_metalink_has_what_librepo_reads() -> None:
    doc = metalink_xml(version(1), [version(2), version(3)], URLS, NOW)
    root = parse(doc)
    assert root.tag == "{http://www.metalinker.org/}metalink"
    assert root.get("version") == "3.0"
    assert root.get("type") == "dynamic"
    files = root.findall("ml:files/ml:file", NS)
    assert [f.get("name") for f in files] == ["repomd.xml"]
    f = files[0]
    assert f.findtext("mm0:timestamp", namespaces=NS) == "1700000001"
    assert f.findtext("ml:size", namespaces=NS) == "3000"
    hashes = {h.get("type"): h.text for h in f.findall("ml:verification/ml:hash", NS)}
    assert hashes == {
        "md5": f"{1:032x}",
        "sha1": f"{1:040x}",
        "sha256": f"{1:064x}",
        "sha512": f"{1:0128x}",
    }
    alts = f.findall("mm0:alternates/mm0:alternate", NS)
    assert [a.findtext("mm0:timestamp", namespaces=NS) for a in alts] == [
        "1700000002",
        "1700000003",
    ]
    assert alts[0].find("ml:verification/ml:hash[@type='sha256']", NS) is not None
    res = f.find("ml:resources", NS)
    assert res is not None
    assert res.get("maxconnections") == "1"
    urls = res.findall("ml:url", NS)
    assert [u.text for u in urls] == [u.url for u in URLS]  # & escaped and read back
    assert [u.get("preference") for u in urls] == ["100", "99", "98"]
    assert [u.get("protocol") for u in urls] == ["http", "https", "http"]
    assert [u.get("type") for u in urls] == ["http", "https", "http"]
    assert [u.get("location") for u in urls] == ["NL", "FR", None]


def librepo_elements(doc: str) -> list[str]:
    """Element names as librepo's expat parser sees them: no namespace processing, so the
    'mm0:' prefix must be spelled literally."""
    names: list[str] = []
    parser = expat.ParserCreate()
    parser.StartElementHandler = lambda name, attrs: names.append(name)
    parser.Parse(doc.encode(), True)
    return names


def test_metalink_element_names_are_the_literal_ones_librepo_matches() -> None:
    names = librepo_elements(metalink_xml(version(1), [version(2)], URLS, NOW))
    for needed in ("metalink", "files", "file", "mm0:timestamp", "size", "verification", "hash"):
        assert needed in names
    for needed in ("mm0:alternates", "mm0:alternate", "resources", "url"):
        assert needed in names


def test_metalink_without_a_known_repomd_still_lists_mirrors() -> None:
    doc = metalink_xml(None, [], URLS[:1], NOW)
    root = parse(doc)
    f = root.find("ml:files/ml:file", NS)
    assert f is not None
    assert f.find("ml:verification", NS) is None
    assert f.find("mm0:timestamp", NS) is None
    assert [u.text for u in f.findall("ml:resources/ml:url", NS)] == [URLS[0].url]


def test_metalink_preference_stops_at_one_and_respects_the_limit() -> None:
    many = [MetalinkUrl(f"http://m{i}.example/repodata/repomd.xml", "DE") for i in range(120)]
    root = parse(metalink_xml(version(1), [], many, NOW, limit=105))
    prefs = [int(u.get("preference", "")) for u in root.iter("{http://www.metalinker.org/}url")]
    assert len(prefs) == 105
    assert prefs[0] == 100
    assert prefs[99] == 1
    assert prefs[-1] == 1
    assert root.find("ml:files/ml:file/mm0:alternates", NS) is None
