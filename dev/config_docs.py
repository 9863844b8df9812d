"""Regenerate docs/configuration.md's tables from the config key tables (redirector/config).

The prose around the generated blocks is kept as written. `--check` changes nothing and exits
1 when the file is not up to date (tests/test_config_table.py checks the same).

    .venv/bin/python dev/config_docs.py          # rewrite docs/configuration.md
    .venv/bin/python dev/config_docs.py --check
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from redirector.config.docs import DocsError, check_tables, render

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only say whether it is up to date")
    ap.add_argument("path", nargs="?", type=Path, default=DOC)
    args = ap.parse_args(argv)
    problems = check_tables()
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    text = args.path.read_text(encoding="utf-8")
    try:
        new = render(text)
    except DocsError as e:
        print(f"{args.path}: {e}", file=sys.stderr)
        return 1
    if args.check:
        if new != text:
            print(f"{args.path} is out of date: run dev/config_docs.py", file=sys.stderr)
            return 1
        return 0
    if new != text:
        args.path.write_text(new, encoding="utf-8")
        print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
