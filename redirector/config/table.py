"""The config keys as one table: each key's name, parser, default, reloadability and doc line.

A top-level key is declared once, on its `Settings` field, with `setting(...)` (or
`field(metadata=spec(...))` when it has no default); `keys_of(Settings)` reads them back as
`Key`s. Mirror fields are declared once in `settings.MIRROR_KEYS`, their defaults taken from
`core.models.Mirror`. Parsing, the allowed-keys check, the restart-only list (reload.py) and
docs/configuration.md (docs.py) all come from these tables, so none of them can drift apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

T = TypeVar("T")


class _Required:
    """The default of a key that must be given."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()

# Where a key is documented, in the order docs/configuration.md shows them: (id, heading).
SECTIONS: tuple[tuple[str, str], ...] = (
    ("service", "Listening, clients and logs"),
    ("master", "The master and freshness"),
    ("poller", "Polling"),
    ("selection", "Choosing a mirror"),
    ("geoip", "GeoIP"),
    ("store", "Shared state"),
    ("verify", "Never a 404: checking files before the redirect"),
    ("lists", "Mirror lists and metalinks"),
    ("repodata", "The repodata pass"),
    ("status", "The status page"),
    ("views", "The operator views' budget"),
    ("hashes", "File facts for downloaders: sizes, hashes, Metalink"),
    ("mirror", "[[mirror]] tables"),
)
SECTION_IDS = frozenset(s for s, _ in SECTIONS)

_META = "redirector.key"


@dataclass(frozen=True, slots=True)
class Key:
    """One config key: how it is read, its default, and what the docs say about it.

    `parse` turns the TOML value into the field's value (ValueError or TypeError with a
    message for the operator); a key that sets several fields returns a tuple, one per name in
    `fields`. `kind` is how the docs name the value ("duration > 0", "whole number 1..1024").
    `shown` is the default as the docs show it, when rendering `default` would not say it well.
    """

    name: str
    parse: Callable[[Any], Any]
    kind: str
    section: str
    doc: str
    default: object = REQUIRED
    reloadable: bool = True
    fields: tuple[str, ...] = ()
    shown: str | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def values(self, parsed: object) -> dict[str, Any]:
        """The fields a parsed value sets, by name."""
        if len(self.fields) == 1:
            return {self.fields[0]: parsed}
        assert isinstance(parsed, tuple)
        assert len(parsed) == len(self.fields)
        return dict(zip(self.fields, parsed, strict=True))


def spec(
    parse: Callable[[Any], Any],
    kind: str,
    section: str,
    doc: str,
    *,
    reloadable: bool = True,
    name: str | None = None,
    fields: tuple[str, ...] = (),
    shown: str | None = None,
) -> Mapping[str, Key]:
    """Field metadata declaring the key that sets this field; `name` when the key's name
    differs from the field's, `fields` when the key sets more than this one."""
    key = Key(name or "", parse, kind, section, doc, REQUIRED, reloadable, fields, shown)
    return {_META: key}


def setting(
    default: T,
    parse: Callable[[Any], Any],
    kind: str,
    section: str,
    doc: str,
    *,
    reloadable: bool = True,
    name: str | None = None,
    fields: tuple[str, ...] = (),
    shown: str | None = None,
) -> T:
    """A dataclass field with `default`, declaring the config key that sets it."""
    meta = spec(
        parse, kind, section, doc, reloadable=reloadable, name=name, fields=fields, shown=shown
    )
    return dataclasses.field(default=default, metadata=meta)


def keys_of(cls: type) -> tuple[Key, ...]:
    """The keys declared on the fields of dataclass `cls`, in field order, names and defaults
    filled in; a field no key declares is set some other way (see `settings.NOT_FROM_KEYS`)."""
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    out: list[Key] = []
    for f in dataclasses.fields(cls):
        key = f.metadata.get(_META)
        if key is None:
            continue
        assert isinstance(key, Key)
        names = key.fields or (f.name,)
        defaults = [_default_of(by_name[n]) for n in names]
        default: object = (
            REQUIRED
            if any(d is REQUIRED for d in defaults)
            else (defaults[0] if len(names) == 1 else tuple(defaults))
        )
        out.append(dataclasses.replace(key, name=key.name or f.name, fields=names, default=default))
    return tuple(out)


def _default_of(f: dataclasses.Field[Any]) -> object:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return REQUIRED


def mirror_key(
    mirror_cls: type,
    name: str,
    parse: Callable[[Any], Any],
    kind: str,
    doc: str,
    *,
    required: bool = False,
    shown: str | None = None,
) -> Key:
    """A [[mirror]] field's key; its default is the one `mirror_cls` declares (None when it
    declares none and the key is optional)."""
    f = {f.name: f for f in dataclasses.fields(mirror_cls)}[name]
    default = REQUIRED if required else _default_of(f)
    if default is REQUIRED and not required:
        default = None
    return Key(name, parse, kind, "mirror", doc, default, True, (name,), shown)
