"""The config key tables: docs/configuration.md, parsing, the allowed keys and the restart-only
list all come from them, and none can drift from the others."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from redirector.config.docs import (
    DocsError,
    check_tables,
    defaults_block,
    format_duration,
    render,
    shown_default,
)
from redirector.config.settings import (
    MIRROR_ALLOWED,
    MIRROR_KEYS,
    NOT_FROM_KEYS,
    TOP_ALLOWED,
    TOP_KEYS,
    ConfigError,
    Settings,
    parse_settings,
)
from redirector.config.table import REQUIRED, Key, keys_of, setting, spec
from redirector.core.models import Mirror
from redirector.reload import RESTART_KEYS, keep_running, restart_changes

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"

MASTER = 'master = "http://master.test/sme/"'
MIRROR = """
[[mirror]]
name = "nl"
http = "http://nl.test/sme/"
country = "NL"
latitude = 52.0
longitude = 4.9
"""


# --- the docs ---------------------------------------------------------------------------------


def test_the_docs_match_the_tables() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert check_tables() == []
    assert render(text) == text, "docs/configuration.md is stale: run dev/config_docs.py"


def test_every_key_is_in_the_docs_once_per_table() -> None:
    text = DOC.read_text(encoding="utf-8")
    top, mirror = text.split("## `[[mirror]]`")
    for key in TOP_KEYS:
        assert len(re.findall(rf"^\| `{key.name}` \|", top, re.MULTILINE)) == 1, key.name
    for key in MIRROR_KEYS:
        assert len(re.findall(rf"^\| `{key.name}` \|", mirror, re.MULTILINE)) == 1, key.name


def test_a_stale_or_broken_reference_is_caught() -> None:
    text = DOC.read_text(encoding="utf-8")
    stale = text.replace('| `max_lag` | duration &gt; 0 | `"8h"`', '| `max_lag` | x | `"4h"`')
    assert stale != text
    assert render(stale) == text  # regenerating repairs it
    no_block = re.sub(r"<!-- BEGIN GENERATED: verify -->.*?<!-- END GENERATED -->", "", text,
                      flags=re.DOTALL)  # fmt: skip
    with pytest.raises(DocsError, match="missing: verify"):
        render(no_block)
    with pytest.raises(DocsError, match="unknown generated block 'nosuch'"):
        render(text + "<!-- BEGIN GENERATED: nosuch -->\n<!-- END GENERATED -->\n")


def test_the_docs_toml_examples_are_valid_configs() -> None:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, re.DOTALL)
    assert len(blocks) >= 2
    everything = "\n".join(blocks)
    s = parse_settings(everything, "docs/configuration.md")
    assert [m.name for m in s.mirrors] == ["nluug"]
    # The defaults block says exactly the defaults.
    block = defaults_block().removeprefix("```toml\n").removesuffix("```\n")
    defaults = parse_settings(block + MIRROR, "defaults")
    bare = parse_settings(
        '[redirector]\nmaster = "http://mirror.contribs.org/smeserver/"\n' + MIRROR, "bare"
    )
    assert dataclasses.replace(defaults, source=None) == dataclasses.replace(bare, source=None)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(28800.0, "8h"), (300.0, "5m"), (0.5, "500ms"), (345600.0, "4d"), (30.0, "30s"),
     (5400.0, "90m"), (1.5, "1.5s")],
)  # fmt: skip
def test_durations_are_shown_in_the_largest_exact_unit(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# --- every field declared, once ---------------------------------------------------------------


def test_every_settings_field_is_set_by_exactly_one_key_or_named_as_not() -> None:
    fields = [f.name for f in dataclasses.fields(Settings)]
    set_by = [name for key in TOP_KEYS for name in key.fields]
    assert len(set_by) == len(set(set_by))
    assert set(set_by).isdisjoint(NOT_FROM_KEYS)
    assert sorted(set(set_by) | NOT_FROM_KEYS) == sorted(fields)


def test_every_mirror_field_has_a_key() -> None:
    names = [k.name for k in MIRROR_KEYS]
    assert sorted(names) == sorted(f.name for f in dataclasses.fields(Mirror))
    assert len(names) == len(set(names))
    required = {k.name for k in MIRROR_KEYS if k.required}
    assert required == {"name", "country", "latitude", "longitude"}


@pytest.mark.parametrize("key", TOP_KEYS + MIRROR_KEYS, ids=lambda k: f"{k.section}:{k.name}")
def test_the_shown_default_reads_back_as_the_default(key: Key) -> None:
    shown = shown_default(key)
    if shown is None:
        assert key.default is REQUIRED or key.default is None
        return
    assert key.parse(tomllib.loads(f"v = {shown}")["v"]) == key.default


# --- parsing and the allowed keys come from the table -----------------------------------------


def test_the_allowed_keys_are_the_tables() -> None:
    assert frozenset(k.name for k in TOP_KEYS) == TOP_ALLOWED
    assert frozenset(k.name for k in MIRROR_KEYS) == MIRROR_ALLOWED
    assert "listen" in TOP_ALLOWED
    assert "listen_host" not in TOP_ALLOWED  # a field name is no key


@pytest.mark.parametrize("key", TOP_KEYS, ids=lambda k: k.name)
def test_every_top_key_is_read_and_refused_by_its_declaration(key: Key) -> None:
    shown = shown_default(key)
    if key.name == "master":
        shown = '"http://master.test/sme/"'
    line = f"{key.name} = {shown}" if shown is not None else f'{key.name} = ""'
    head = "[redirector]\n" + ("" if key.name == "master" else MASTER + "\n")
    parse_settings(head + line + "\n" + MIRROR, "x.toml")
    # A value of the wrong type names the key and its line.
    bad = (
        "[redirector]\n" + ("" if key.name == "master" else MASTER + "\n") + f"{key.name} = {{}}\n"
    )
    bad_line = bad.count("\n")
    if key.name == "coverage_probes":  # a table is its type: give it a bad entry instead
        bad = bad.replace("{}", '{ "obsolete/" = "/abs" }')
    with pytest.raises(ConfigError) as info:
        parse_settings(bad + MIRROR, "x.toml")
    assert str(info.value).startswith(f"x.toml:{bad_line}: [redirector] field '{key.name}': ")


def test_an_unknown_key_is_refused_with_file_line_and_field() -> None:
    with pytest.raises(
        ConfigError, match=r"^x\.toml:3: \[redirector\] field 'max_lga': unknown key$"
    ):
        parse_settings(f'[redirector]\n{MASTER}\nmax_lga = "1h"\n' + MIRROR, "x.toml")
    with pytest.raises(ConfigError, match=r"^x\.toml:10: mirror 'nl' field 'wieght': unknown key$"):
        parse_settings(f"[redirector]\n{MASTER}\n" + MIRROR + "wieght = 3\n", "x.toml")


# --- the restart-only list comes from the table -----------------------------------------------


def test_the_restart_keys_are_the_keys_declared_not_reloadable() -> None:
    declared = tuple((k.name, k.fields) for k in TOP_KEYS if not k.reloadable)
    assert declared == RESTART_KEYS
    names = [name for name, _ in RESTART_KEYS]
    assert {"listen", "redis_url", "redis_prefix", "access_log_path"} <= set(names)
    assert "max_lag" not in names


def _changed(value: object) -> object:
    """Another valid value of the same kind as a default."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value / 2 if isinstance(value, float) else value + 1
    if isinstance(value, tuple) and value and isinstance(value[0], str) and len(value) == 2:
        return (value[0], value[1] + 1)  # listen: (host, port)
    if isinstance(value, str):
        return value + "x"
    if value is None:
        return "changed"
    return () if value else ("9",)


@pytest.mark.parametrize("key", [k for k in TOP_KEYS if k.name != "master"], ids=lambda k: k.name)
def test_a_reload_keeps_exactly_the_restart_only_keys(key: Key) -> None:
    running = parse_settings(f"[redirector]\n{MASTER}\n" + MIRROR, "x.toml")
    current = tuple(getattr(running, f) for f in key.fields)
    changed = _changed(current[0] if len(current) == 1 else current)
    new_values: tuple[object, ...] = (
        changed if len(key.fields) > 1 and isinstance(changed, tuple) else (changed,)
    )
    new_fields: dict[str, Any] = dict(zip(key.fields, new_values, strict=True))
    new = dataclasses.replace(running, **new_fields)
    applied = keep_running(running, new)
    got = {f: getattr(applied, f) for f in key.fields}
    if key.reloadable:
        assert restart_changes(running, new) == []
        assert got == new_fields
    else:
        assert restart_changes(running, new) == [key.name]
        assert got == dict(zip(key.fields, current, strict=True))


# --- the declaration helpers ------------------------------------------------------------------


def _int(v: Any) -> int:
    if not isinstance(v, int):
        raise TypeError("expected a whole number")
    return v


def _pair(v: Any) -> tuple[str, int]:
    host, port = str(v).split(":")
    return host, int(port)


@dataclass(frozen=True, slots=True)
class _Example:
    required: int = field(metadata=spec(_int, "whole number", "poller", "Must be given."))
    count: int = setting(3, _int, "whole number", "poller", "How many.", reloadable=False)
    host: str = setting("h", _pair, "host:port", "service", "Where.", name="where",
                        fields=("host", "port"))  # fmt: skip
    port: int = 1


def test_keys_of_reads_the_declarations_back() -> None:
    required, count, where = keys_of(_Example)
    assert (required.name, required.required, required.fields) == ("required", True, ("required",))
    assert (count.name, count.default, count.reloadable) == ("count", 3, False)
    assert (where.name, where.default, where.fields) == ("where", ("h", 1), ("host", "port"))
    assert where.values(where.parse("a:2")) == {"host": "a", "port": 2}
    assert _Example(required=1).count == 3
