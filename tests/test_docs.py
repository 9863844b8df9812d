"""The docs: a short README, links and cited names that lead somewhere, no issue numbers.

A newcomer reads the README first, so it stays small and starts with the two commands; the rest
lives in docs/, SECURITY.md, CONTRIBUTING.md and deploy/README.md, and is only useful while the
links between them, the files they name and the tests they cite still exist. Moving a module or
renaming a heading breaks a doc silently; these tests make it loud.
"""

from __future__ import annotations

import ast
import io
import re
import shutil
import subprocess
import tokenize
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_LIMIT = 8000  # bytes: what a newcomer reads before the links

# The README's two commands, byte for byte: CI runs the second (.ci/run).
RUN_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -q . && "
    ".venv/bin/redirector serve --config examples/mirrors.toml"
)
TEST_COMMAND = "bash dev/test.sh"

# Directories that hold no file of the project when git cannot say what is tracked.
_UNTRACKED_DIRS = frozenset({"__pycache__", "node_modules", "build", "dist", "artifacts", "out"})

_FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
_INLINE_LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.I)
_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", re.M)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
# A repository path named in a code span: starts at a top-level folder, nothing but path
# characters (no placeholders, globs or spaces), so `deploy/mirrors.toml` counts and
# `bench/out/results-*.json` or `releases/<ver>/` do not.
_REPO_PATH = re.compile(r"(?:redirector|tests|bench|deploy|dev|docs|examples)/[\w./-]*")
_TEST_CITATION = re.compile(r"\b((?:[a-z0-9_]+/)*test_\w+\.py)((?:::\w+)+)")
# The word, a number, maybe a hash between: a reference to a tracker the reader does not have.
_ISSUE_WORD = re.compile(r"\bissues?\s*#?\d+", re.I)
# A hash and a number standing alone in prose; not an HTML entity, a URL fragment or a word's tail.
_BARE_NUMBER = re.compile(r"(?<![\w&#/\[\-])#\d+\b")


def project_files(*suffixes: str) -> list[Path]:
    """The project's files with one of `suffixes`: what git tracks (or would: not ignored)."""
    git = shutil.which("git")
    if git is not None and (ROOT / ".git").exists():
        out = subprocess.run(
            [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True,
        ).stdout.decode()  # fmt: skip
        names = sorted({n for n in out.split("\0") if n})
        return [ROOT / n for n in names if n.endswith(suffixes) and (ROOT / n).is_file()]
    found: list[Path] = []
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT).parts
        if any(p.startswith(".") or p in _UNTRACKED_DIRS or p.endswith(".egg-info") for p in rel):
            continue
        if path.is_file() and path.name.endswith(suffixes):
            found.append(path)
    return found


def markdown_files() -> list[Path]:
    return project_files(".md")


def _blank(m: re.Match[str]) -> str:
    return "\n" * m.group(0).count("\n")  # keeps line numbers right for the messages


def prose(text: str) -> str:
    """Markdown without fenced blocks and code spans: what a link or a reference can be in."""
    return _CODE_SPAN.sub(_blank, _FENCE.sub(_blank, text))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a link into `path` may name: its headings' slugs and explicit anchors."""
    text = _FENCE.sub("", path.read_text("utf-8"))
    found: set[str] = set(_HTML_ANCHOR.findall(text))
    seen: dict[str, int] = {}
    for heading in _HEADING.findall(text):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> Iterator[str]:
    text = prose(path.read_text("utf-8"))
    yield from _INLINE_LINK.findall(text)
    yield from _REF_LINK.findall(text)


def broken_link(source: Path, target: str) -> str | None:
    """Why the relative link `target` in `source` leads nowhere, or None when it resolves."""
    where, _, fragment = target.partition("#")
    dest = (source.parent / unquote(where)).resolve() if where else source
    if not dest.is_relative_to(ROOT):
        return "leaves the repository"
    if not dest.exists():
        return "no such file"
    if fragment and dest.suffix == ".md" and unquote(fragment).lower() not in anchors(dest):
        return f"no heading #{fragment} in {dest.relative_to(ROOT)}"
    return None


def test_readme_is_short() -> None:
    size = len(README.read_bytes())
    assert size < README_LIMIT, f"README.md is {size} bytes; move detail to docs/"


def test_readme_starts_with_the_two_commands_ci_runs() -> None:
    text = README.read_text("utf-8")
    blocks = re.findall(r"^```sh\n(.*?)\n```$", text, re.M | re.S)
    assert blocks[:2] == [RUN_COMMAND, TEST_COMMAND]
    before = text[: text.index("```sh")]
    assert "##" not in before, "the commands come before any section"
    ci = (ROOT / ".ci" / "run").read_text("utf-8").strip().splitlines()
    assert ci[-1] == TEST_COMMAND


def test_every_doc_is_linked_from_the_readme() -> None:
    linked = {
        (README.parent / unquote(t.partition("#")[0])).resolve()
        for t in links(README)
        if not _SCHEME.match(t) and not t.startswith("#")
    }
    wanted = {*(ROOT / "docs").glob("*.md"), ROOT / "SECURITY.md", ROOT / "CONTRIBUTING.md"}
    wanted |= {ROOT / "CHANGELOG.md", ROOT / "deploy" / "README.md"}
    assert sorted(str(p.relative_to(ROOT)) for p in wanted - linked) == []


def test_every_relative_link_resolves() -> None:
    bad: list[str] = []
    for md in markdown_files():
        for target in links(md):
            if _SCHEME.match(target):
                continue
            why = broken_link(md, target)
            if why is not None:
                bad.append(f"{md.relative_to(ROOT)}: ({target}): {why}")
    assert bad == []


def test_every_path_a_doc_names_exists() -> None:
    bad: list[str] = []
    for md in markdown_files():
        text = _FENCE.sub("", md.read_text("utf-8"))
        for _, span in _CODE_SPAN.findall(text):
            name = span.strip()
            if _REPO_PATH.fullmatch(name) and not (ROOT / name).exists():
                bad.append(f"{md.relative_to(ROOT)}: `{name}`")
    assert bad == []


def test_every_test_a_doc_cites_exists() -> None:
    defined: dict[str, set[str]] = {}
    bad: list[str] = []
    for md in markdown_files():
        for file, names in _TEST_CITATION.findall(md.read_text("utf-8")):
            path = ROOT / "tests" / file
            if not path.exists():
                bad.append(f"{md.relative_to(ROOT)}: {file}{names}: no such file")
                continue
            if file not in defined:
                tree = ast.parse(path.read_text("utf-8"))
                defined[file] = {
                    n.name
                    for n in ast.walk(tree)
                    if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                }
            missing = [n for n in names.split("::")[1:] if n not in defined[file]]
            if missing:
                bad.append(f"{md.relative_to(ROOT)}: {file}{names}: no {', '.join(missing)}")
    assert bad == []


def _python_comments_and_docstrings(text: str) -> Iterator[tuple[int, str]]:
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc is not None and node.body:
                yield node.body[0].lineno, doc


def _hash_comments(text: str) -> Iterator[tuple[int, str]]:
    """Comments of shell and TOML files: from a `#` at a line's start or after a space."""
    for number, line in enumerate(text.splitlines(), 1):
        m = re.search(r"(?:^|\s)#(?!!)(.*)$", line)
        if m:
            yield number, m.group(1)


def test_nothing_points_at_issue_numbers() -> None:
    bad: list[str] = []
    for path in project_files(".py", ".md", ".sh", ".toml"):
        text = path.read_text("utf-8")
        rel = path.relative_to(ROOT)
        for number, line in enumerate(text.splitlines(), 1):
            if m := _ISSUE_WORD.search(line):
                bad.append(f"{rel}:{number}: {m.group(0)!r}")
        # A bare hash and number only counts in prose: code may hold colours and counters.
        if path.suffix == ".py":
            parts = list(_python_comments_and_docstrings(text))
        elif path.suffix == ".md":
            parts = [(n, line) for n, line in enumerate(prose(text).splitlines(), 1)]
        else:
            parts = list(_hash_comments(text))
        for number, part in parts:
            if m := _BARE_NUMBER.search(part):
                bad.append(f"{rel}:{number}: {m.group(0)!r}")
    assert bad == []


def test_the_issue_patterns_catch_references_and_spare_code() -> None:
    word, hashed = "issue", "#"  # spelt apart so that this file passes its own check
    for ref in (f"see {word} 7", f"{word.title()} {hashed}12", f"{word}s 3 and 4", f"({hashed}7)"):
        assert _ISSUE_WORD.search(ref) or _BARE_NUMBER.search(ref), ref
    for fine in (f"the {word}'s number", "&#160;", "page/#1", "a#1", f"{word}s"):
        assert not _ISSUE_WORD.search(fine)
        assert not _BARE_NUMBER.search(fine), fine
