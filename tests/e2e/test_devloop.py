"""dev/test.sh, the README's test command: it leaves a host's services alone outside CI.

The script runs for real (bash, its own control flow) in a copy of the repository's layout. The
tools it drives are small stand-ins on PATH that write down how they were called: the real ones
would install packages, stop services and run the whole suite, which is what this test is about
not doing to a contributor's machine.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support import ROOT

# Every tool dev/test.sh calls by name. `dpkg-query` says each package is installed; `python3
# -m venv` makes a .venv whose tools only log.
STANDINS = {
    "dpkg-query": 'printf "install ok installed"\n',
    "apt-get": 'echo "apt-get $*" >> "$LOG"\n',
    "systemctl": 'echo "systemctl $*" >> "$LOG"\n',
    "python3": """echo "python3 $*" >> "$LOG"
mkdir -p .venv/bin
for tool in python ruff mypy pytest; do
  printf '#!/bin/sh\\necho "%s $*" >> "$LOG"\\n' "$tool" > ".venv/bin/$tool"
  chmod +x ".venv/bin/$tool"
done
""",
}


def run_script(tmp_path: Path, *args: str, ci: str | None = None) -> list[str]:
    """dev/test.sh in a copy of the layout, stand-ins first on PATH; the calls they logged."""
    repo = tmp_path / "repo"
    (repo / "dev").mkdir(parents=True)
    shutil.copy(ROOT / "dev" / "test.sh", repo / "dev" / "test.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STANDINS.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "calls.log"
    log.touch()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "LOG": str(log)}
    if ci is not None:
        env["CI"] = ci
    done = subprocess.run(
        ["bash", str(repo / "dev" / "test.sh"), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return log.read_text().splitlines()


def test_outside_ci_no_service_is_stopped_and_nothing_installed(tmp_path: Path) -> None:
    calls = run_script(tmp_path, "-m", "not system")
    assert not [c for c in calls if c.startswith(("systemctl", "apt-get"))], calls
    # The rest still runs, and the arguments reach pytest.
    assert "ruff check ." in calls
    assert "mypy " in calls
    assert calls[-1] == "pytest -m not system"


def test_under_ci_the_packages_services_are_stopped(tmp_path: Path) -> None:
    calls = run_script(tmp_path, ci="true")
    stopped = [c.split()[3:] for c in calls if c.startswith("systemctl disable --now ")]
    assert sorted(name for names in stopped for name in names) == ["nginx", "redis-server"]
    assert calls[-1] == "pytest "
