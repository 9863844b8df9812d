"""What ftpsync leaves in a mirror's trace directory: its MIRRORNAME and its stage files (pure).

ftpsync names a mirror's own trace, its stage-1 trace and its lock after MIRRORNAME, which
defaults to the machine's `hostname -f`, not to the host of the mirror's URL. Every run that
writes a trace rewrites two files that say the name:

- ``project/trace/_hierarchy``: one line per hop, ``<tracefile> <MIRRORNAME> <TRACEHOST>
  <upstream>``, the mirror itself last; its tracefile is ``<MIRRORNAME>-stage1`` after a run
  of stage 1 alone.
- ``project/trace/_traces``: ``ls -1rt`` of the trace directory, made right after the mirror's
  own trace (or its stage-1 trace) was written, so that trace is the last line.

`_hierarchy` is read first: it names the mirror outright. `_traces` is the fallback (ftpsync
writes both, a copy kept by hand may have one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from redirector.core.synctree import parse_hierarchy

__all__ = ["STAGE1_SUFFIX", "FoundName", "name_from_hierarchy", "name_from_traces", "usable_name"]

STAGE1_SUFFIX = "-stage1"
MAX_TRACES_LINES = 1000  # a trace directory holds a few dozen files
# A name used in a URL path and a file name: what `hostname -f` gives, nothing that could
# climb out of project/trace/ or need escaping.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


@dataclass(frozen=True, slots=True)
class FoundName:
    """The name a mirror's own trace and lock go by, and where it was learned."""

    name: str
    source: str  # "trace_name" (the config), "_hierarchy", "_traces" or "URL host"


def usable_name(name: str) -> bool:
    """Whether `name` can be a trace file name under project/trace/ (and in a URL)."""
    return _NAME.fullmatch(name) is not None and ".." not in name


def name_from_hierarchy(body: bytes) -> str | None:
    """The MIRRORNAME of a `_hierarchy`'s last line (the mirror itself), None when unusable."""
    entries = parse_hierarchy(body)
    if not entries:
        return None
    last = entries[-1]
    # ftpsync writes the mirror's own name as its trace file name, with "-stage1" after a
    # stage-1 run; any other pairing is not a line ftpsync wrote for this mirror.
    if last.tracefile not in (last.mirror, last.mirror + STAGE1_SUFFIX):
        return None
    return last.mirror if usable_name(last.mirror) else None


def name_from_traces(body: bytes, master_trace_name: str) -> str | None:
    """The mirror's own name from a `_traces` listing: its newest entry, "-stage1" dropped.

    None when the body is not a listing (an HTML page) or its newest entry is the master's
    trace (the mirror never wrote one of its own).
    """
    text = body.decode("utf-8", errors="replace")
    if text.lstrip().startswith("<"):
        return None
    names = [line.strip() for line in text.splitlines()[:MAX_TRACES_LINES] if line.strip()]
    if not names:
        return None
    newest = names[-1].removesuffix(STAGE1_SUFFIX)
    if newest == master_trace_name or not usable_name(newest):
        return None
    return newest
