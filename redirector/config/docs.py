"""The configuration reference: docs/configuration.md's generated tables, from the key tables.

The file is prose written by hand around blocks this module owns, each between
`<!-- BEGIN GENERATED: <id> -->` and `<!-- END GENERATED -->`: one table per section of
`table.SECTIONS`, and `defaults`, a [redirector] table with every key at its default.
`render(text)` rewrites those blocks and leaves the prose alone; dev/config_docs.py writes the
file, and a test fails when it is not what `render` makes of it.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Iterable
from pathlib import PurePath

from redirector.config.settings import MIRROR_KEYS, TOP_KEYS
from redirector.config.table import REQUIRED, SECTION_IDS, SECTIONS, Key

DEFAULTS_BLOCK = "defaults"
_BLOCK = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<id>[a-z_]+) -->\n)(?P<body>.*?)(<!-- END GENERATED -->)",
    re.DOTALL,
)


class DocsError(ValueError):
    """The reference cannot be rendered: a block is missing, unknown or twice there."""


def all_keys() -> tuple[Key, ...]:
    return TOP_KEYS + MIRROR_KEYS


def format_duration(seconds: float) -> str:
    """28800 -> '8h', 0.5 -> '500ms': the largest unit that says it exactly."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and math.isclose(seconds % size, 0.0, abs_tol=1e-9):
            return f"{round(seconds / size)}{unit}"
    if seconds < 1 and math.isclose((seconds * 1000) % 1, 0.0, abs_tol=1e-9):
        return f"{round(seconds * 1000)}ms"
    return f"{seconds:g}s"


def toml_value(value: object, *, duration: bool = False) -> str:
    """`value` as TOML text that the key's parser reads back to `value`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return json.dumps(format_duration(value)) if duration else f"{value:g}"
    if isinstance(value, str | PurePath | ipaddress.IPv4Network | ipaddress.IPv6Network):
        return json.dumps(str(value))
    if isinstance(value, tuple):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            pairs = ", ".join(f"{toml_value(k)} = {toml_value(v)}" for k, v in value)
            return "{ " + pairs + " }"
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def shown_default(key: Key) -> str | None:
    """The default as the docs show it: TOML text, or None when there is none (unset,
    required)."""
    if key.shown is not None:
        return key.shown
    if key.default is REQUIRED or key.default is None:
        return None
    return toml_value(key.default, duration=key.kind.startswith("duration"))


def _cell(text: str) -> str:
    # "<ver>" would be read as an HTML tag and vanish.
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def section_table(keys: Iterable[Key]) -> str:
    """A Markdown table of `keys`: name, value, default, whether a reload applies it, meaning."""
    rows = [
        "| key | value | default | on reload | meaning |",
        "|---|---|---|---|---|",
    ]
    for key in keys:
        shown = shown_default(key)
        if key.default is REQUIRED:
            default = "**required**"
        elif shown is None:
            default = "unset"
        else:
            default = "`" + shown.replace("|", "\\|") + "`"
        reload = "applied" if key.reloadable else "**restart**"
        rows.append(
            f"| `{key.name}` | {_cell(key.kind)} | {default} | {reload} | {_cell(key.doc)} |"
        )
    return "\n".join(rows) + "\n"


def defaults_block() -> str:
    """Every [redirector] key at its default, as a config file would say it."""
    out = ["```toml", "[redirector]"]
    for key in TOP_KEYS:
        shown = shown_default(key)
        if key.default is REQUIRED:
            out.append(f'{key.name} = "http://mirror.contribs.org/smeserver/"  # required')
        elif shown is None:
            out.append(f"# {key.name}: unset")
        else:
            out.append(f"{key.name} = {shown}")
    out.append("```")
    return "\n".join(out) + "\n"


def blocks() -> dict[str, str]:
    """Every generated block by id."""
    out = {DEFAULTS_BLOCK: defaults_block()}
    for section, _ in SECTIONS:
        keys = [k for k in all_keys() if k.section == section]
        out[section] = section_table(keys)
    return out


def check_tables() -> list[str]:
    """What is wrong with the key tables themselves: unknown sections, names twice."""
    problems: list[str] = []
    seen: set[tuple[bool, str]] = set()
    for key in all_keys():
        if key.section not in SECTION_IDS:
            problems.append(f"{key.name}: unknown section {key.section!r}")
        place = (key.section == "mirror", key.name)
        if place in seen:
            problems.append(f"{key.name}: declared twice")
        seen.add(place)
        if not key.doc.strip() or not key.kind.strip():
            problems.append(f"{key.name}: no doc line or kind")
    return problems


def render(text: str) -> str:
    """`text` with every generated block rewritten from the tables; DocsError when a block is
    missing, unknown, or there twice."""
    wanted = blocks()
    found: list[str] = []

    def fill(m: re.Match[str]) -> str:
        block = m["id"]
        if block not in wanted:
            raise DocsError(f"unknown generated block {block!r}")
        found.append(block)
        return m.group(1) + wanted[block] + m.group(4)

    out = _BLOCK.sub(fill, text)
    twice = sorted({b for b in found if found.count(b) > 1})
    missing = sorted(set(wanted) - set(found))
    if twice or missing:
        raise DocsError(
            "generated blocks "
            + "; ".join(
                part
                for part in (
                    f"missing: {', '.join(missing)}" if missing else "",
                    f"twice: {', '.join(twice)}" if twice else "",
                )
                if part
            )
            + " (add <!-- BEGIN GENERATED: id --> ... <!-- END GENERATED --> to the prose)"
        )
    return out
