"""`redirector events`: the network's event log and each mirror's availability, from the store.

Reads the store the serving processes share: Redis with `redis_url`, else the file store in
`state_dir` (or `--state-dir`), so the command shows what the workers' status page shows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from redirector.config.settings import Settings
from redirector.core import history
from redirector.core.history import Event, HistoryData
from redirector.core.humanize import duration, rfc3339, table
from redirector.store.base import Store, StoreError
from redirector.store.file import FileStore
from redirector.store.redis import RedisStore


class NoSharedStore(Exception):
    """The config names no store another process could read."""


def shared_store(settings: Settings, state_dir: Path | None = None) -> Store:
    """The store the serving processes share, for a command that reads it.

    Redis when the config has `redis_url`; else the file store in `state_dir` (the option)
    or the config's `state_dir`, which must exist. NoSharedStore when there is neither: the
    state then lives inside the serving process alone.
    """
    if settings.redis_url is not None:
        return RedisStore(settings.redis_url, prefix=settings.redis_prefix)
    directory = state_dir or settings.state_dir
    if directory is None:
        raise NoSharedStore(
            "no redis_url in the config, and no state_dir: the state lives inside the serving "
            "process (see its /mirrors page); set state_dir, or pass --state-dir DIR as given "
            "to `redirector serve`"
        )
    if not directory.is_dir():
        raise NoSharedStore(f"state directory {directory} does not exist: is the server running?")
    return FileStore(directory)


def event_line(e: Event) -> str:
    who = e.subject or "master"
    after = f" (after {duration(e.duration)})" if e.duration is not None else ""
    return f"{rfc3339(e.at)}  {e.kind.value:<16}  {who}: {e.detail}{after}"


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def availability_table(settings: Settings, past: HistoryData, now: float) -> str:
    """One line per configured mirror: availability over 24 h, 7 d, 30 d and down since."""
    rows = [("MIRROR", "24H", "7D", "30D", "OUT OF SERVICE SINCE")]
    for m in settings.mirrors:
        h = past.mirrors.get(m.name) or history.MirrorHistory(m.name)
        w = history.windows(h, now)
        since = history.down_start(h)
        rows.append(
            (m.name, _ratio(w["24h"]), _ratio(w["7d"]), _ratio(w["30d"]), rfc3339(since) or "-")
        )
    return table(rows)


def to_json(settings: Settings, past: HistoryData, events: Sequence[Event], now: float) -> str:
    mirrors: dict[str, Any] = {}
    for m in settings.mirrors:
        h = past.mirrors.get(m.name) or history.MirrorHistory(m.name)
        mirrors[m.name] = {
            "availability": history.windows(h, now),
            "down_since": rfc3339(history.down_start(h)),
        }
    doc = {
        "generated_at": rfc3339(now),
        "mirrors": mirrors,
        "events": [
            {
                "at": rfc3339(e.at),
                "kind": e.kind.value,
                "subject": e.subject,
                "detail": e.detail,
                "duration_seconds": e.duration,
            }
            for e in events
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


async def events_command(
    settings: Settings,
    store: Store,
    out: TextIO,
    err: TextIO,
    *,
    now: float,
    limit: int,
    mirror: str | None = None,
    as_json: bool = False,
) -> int:
    """Print the last `limit` events (oldest first, like a log), then availability per mirror.

    `mirror` keeps only that mirror's events. Exit status 0, 1 when the store cannot be read,
    2 for a mirror the config does not name.
    """
    if mirror is not None and mirror not in {m.name for m in settings.mirrors}:
        print(f"no mirror {mirror!r} in {settings.source}", file=err)
        return 2
    try:
        past = await store.load_history()
    except StoreError as e:
        print(f"store unreachable: {e}", file=err)
        return 1
    finally:
        await store.close()
    events = [ev for ev in past.events if mirror is None or ev.subject == mirror][-limit:]
    if as_json:
        out.write(to_json(settings, past, events, now))
        return 0
    if not events:
        out.write("no events recorded yet\n")
    for ev in events:
        out.write(event_line(ev) + "\n")
    out.write("\n" + availability_table(settings, past, now) + "\n")
    return 0
