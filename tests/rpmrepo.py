"""Small real RPM repositories for tests: packages from rpmbuild, metadata from createrepo_c."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

TOOLS = ("rpmbuild", "createrepo_c")

_SPEC = """\
Name: {name}
Version: {version}
Release: 1
Summary: {name}, a package of no content for redirector tests
License: GPL-3.0-or-later
BuildArch: noarch

%description
Built by tests/rpmrepo.py.

%files
"""


def require(*tools: str) -> None:
    """Fail (never skip) when a tool the test drives is not installed."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not on PATH: run dev/test.sh, which installs them")


def _run(args: Sequence[str], cwd: Path) -> None:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({done.returncode}):\n{done.stderr[-2000:]}")


def build_rpm(work: Path, name: str, version: str, out: Path) -> Path:
    """A noarch RPM `name`-`version`-1 with no files, written into `out`; `work` is scratch."""
    require("rpmbuild")
    top = work / "rpmbuild"
    work.mkdir(parents=True, exist_ok=True)
    spec = work / f"{name}-{version}.spec"
    spec.write_text(_SPEC.format(name=name, version=version))
    out.mkdir(parents=True, exist_ok=True)
    _run(
        [
            "rpmbuild", "-bb", "--quiet",
            "--define", f"_topdir {top}",
            "--define", f"_rpmdir {out}",
            "--define", "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm",
            "--define", "_build_id_links none",
            str(spec),
        ],
        work,
    )  # fmt: skip
    rpm = out / f"{name}-{version}-1.noarch.rpm"
    assert rpm.is_file(), sorted(p.name for p in out.iterdir())
    return rpm


def build_repo(work: Path, repo: Path, packages: Sequence[tuple[str, str]]) -> dict[str, bytes]:
    """A yum repository in `repo` (``Packages/*.rpm`` and ``repodata/``) holding `packages`
    (name, version); returns every file in it by path relative to `repo`."""
    require(*TOOLS)
    for name, version in packages:
        build_rpm(work, name, version, repo / "Packages")
    _run(["createrepo_c", "--quiet", "--no-database", str(repo)], work)
    return files_below(repo)


def files_below(root: Path) -> dict[str, bytes]:
    """Every regular file below `root`, by its path relative to it."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
