"""File facts for people: the ?mirrorlist block and the status page's wrong-copies section."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from redirector.core.filefacts import BadCopy, FileFacts
from redirector.core.humanize import rfc3339

SOURCES = {"tree": "hashed from the master tree", "sums": "the master's checksum files"}


def facts_json(facts: FileFacts | None) -> dict[str, Any] | None:
    """The facts a ?mirrorlist JSON shows: size, date, hashes and where they came from."""
    if facts is None:
        return None
    return {
        "size": facts.size,
        "modified": rfc3339(facts.mtime),
        "hashes": dict(facts.hashes),
        "source": facts.source,
    }


def facts_html(facts: FileFacts | None) -> str:
    """``<dt>``/``<dd>`` lines for the ?mirrorlist page; empty when nothing is known."""
    if facts is None:
        return ""
    hashes = "".join(
        f"<br><small>{escape(a)} <code>{escape(h)}</code></small>" for a, h in facts.hashes
    )
    return (
        f"<dt>File</dt><dd>{facts.size:,} bytes, modified {escape(rfc3339(facts.mtime))} "
        f"({escape(SOURCES.get(facts.source, facts.source))}){hashes}</dd>"
    )


def bad_copies_html(copies: Sequence[BadCopy]) -> str:
    """The status page's table of mirrors caught serving a copy that is not the master's."""
    if not copies:
        return "<p>No mirror has been caught serving a wrong copy of a hashed file.</p>"
    rows = "".join(
        f'<tr data-mirror="{escape(b.mirror)}"><td>{escape(b.mirror)}</td>'
        f"<td><code>{escape(b.path)}</code></td><td>{escape(b.reason)}</td>"
        f"<td>{escape(rfc3339(b.seen_at))}</td></tr>"
        for b in copies
    )
    return (
        "<p>These mirrors get no client for these files while their copy differs.</p>"
        "<table><thead><tr><th>Mirror</th><th>File</th><th>Found</th><th>Last seen</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>"
    )
