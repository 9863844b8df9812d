"""Request paths: what is below the tree root, and what is refused."""

from __future__ import annotations

import pytest

from redirector.core.paths import BadPath, tree_path, tree_prefix


@pytest.mark.parametrize(
    ("raw", "prefix", "rest"),
    [
        ("/smeserver/releases/10/smeos/x86_64/repodata/repomd.xml", "/smeserver",
         "releases/10/smeos/x86_64/repodata/repomd.xml"),
        ("/pub/smeserver/releases/7/smeos/i386/", "/pub/smeserver", "releases/7/smeos/i386/"),
        ("/smeserver", "/smeserver", ""),
        ("/smeserver/", "/smeserver", ""),
        ("/smeserver//releases///10/", "/smeserver", "releases/10/"),
        ("/smeserver/contribs/a%20b/file%2B1.rpm", "/smeserver", "contribs/a%20b/file%2B1.rpm"),
        ("/smeserver/releases/x@y:z", "/smeserver", "releases/x@y:z"),
        ("/smeserver/%C3%A9t%C3%A9", "/smeserver", "%C3%A9t%C3%A9"),
        ("/smeserver/a..b/...", "/smeserver", "a..b/..."),
    ],
)  # fmt: skip
def test_tree_path(raw: str, prefix: str, rest: str) -> None:
    assert tree_prefix(raw) == prefix
    assert tree_path(raw, prefix) == rest


@pytest.mark.parametrize("raw", ["/", "/smeserverx/", "/pub/", "/smeserve", "/mirrors"])
def test_not_tree(raw: str) -> None:
    assert tree_prefix(raw) is None


@pytest.mark.parametrize(
    "rest",
    ["/../etc/passwd", "/a/../../b", "/%2e%2e/x", "/%2E%2e/x", "/a/%2e/b", "/.", "/a/%00b",
     "/a%0d%0aX-Evil:1", "/a\\b", "/a%5cb", "/a%2fb", "/a b", "/a\"b", "/a<b>", "/%c0%ae%c0%ae/x",
     "/%zz", "/a%2", "/" + "a" * 5000, "/\x7f"],
)  # fmt: skip
def test_refused(rest: str) -> None:
    with pytest.raises(BadPath):
        tree_path("/smeserver" + rest, "/smeserver")
