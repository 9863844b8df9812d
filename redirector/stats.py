"""Download statistics: counted in memory per request, flushed to the store in batches.

A redirect costs one dict increment (`Tally.count`); a background task (`flush_forever`) turns
what piled up into one `Store.add_counts` call every `FLUSH_INTERVAL` seconds, so Redis sees
one pipelined round trip per flush whatever the request rate. Buckets are stamped at flush
time, so a count may land in the next bucket by up to the flush interval.

Buckets (hashes ``{prefix}stats:{bucket}`` in Redis, see `redirector.store`):

``5m:{unix time // 300}``
    ``total``, ``master`` (fallbacks to the master), ``m:{mirror}``; kept 2 hours. The last
    hour is the current bucket and the 11 before it (55 to 60 minutes).
``h:{unix time // 3600}``
    The same fields, kept 26 hours. The last day is the current hour and the 23 before it.
``d:{YYYY-MM-DD}`` (UTC)
    The same plus ``c:{country}`` (ISO code, ``--`` when unknown) and ``t:{subtree}`` (the
    first path segment when it is one of `SUBTREES`, else ``other``: client-chosen paths
    must not grow the hash without bound); kept `DAYS_KEPT` days.

Counts are per GET redirect (HEAD requests and explain views are not downloads).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from redirector.core.humanize import day
from redirector.store.base import Counts, Store, StoreError

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 2.0
FIVE_MIN = 300
HOUR = 3600
DAY = 86400
DAYS_KEPT = 35
DAYS_SHOWN = 7
SUBTREES = frozenset({"releases", "contribs", "obsolete", "project"})
OTHER = "other"
NO_COUNTRY = "--"
READ_MAX_AGE = 5.0  # how long a read of the store serves status pages before it is redone

Key = tuple[str | None, str | None, str]  # (mirror or None for the master, country, subtree)


def subtree_of(path: str) -> str:
    """The top-level subtree a tree path falls in, or `OTHER` (bounded cardinality)."""
    top = path.partition("/")[0]
    return top if top in SUBTREES else OTHER


class Tally:
    """Counts piling up in this process between flushes. Not thread-safe: one event loop."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: dict[Key, int] = {}

    def count(self, mirror: str | None, country: str | None, path: str) -> None:
        """One download sent to `mirror` (None: the master); cheap enough for every request."""
        key = (mirror, country, subtree_of(path))
        pending = self._pending
        pending[key] = pending.get(key, 0) + 1

    @property
    def pending(self) -> int:
        """Downloads counted and not flushed yet."""
        return sum(self._pending.values())

    def take(self) -> dict[Key, int]:
        """Everything counted so far; the tally starts again from zero."""
        taken, self._pending = self._pending, {}
        return taken

    def put_back(self, taken: Mapping[Key, int]) -> None:
        """Return counts a failed flush could not write, to go with the next one."""
        for key, n in taken.items():
            self._pending[key] = self._pending.get(key, 0) + n


def day_of(ts: float) -> str:
    """The UTC day a count belongs to: the key of its day bucket."""
    return day(ts)


def batches(taken: Mapping[Key, int], now: float) -> list[Counts]:
    """The store increments for `taken`, stamped with the buckets `now` falls in."""
    window: dict[str, int] = {}
    daily: dict[str, int] = {}
    for (mirror, country, subtree), n in taken.items():
        target = "master" if mirror is None else f"m:{mirror}"
        window["total"] = window.get("total", 0) + n
        window[target] = window.get(target, 0) + n
        cc = f"c:{country or NO_COUNTRY}"
        sub = f"t:{subtree}"
        daily[cc] = daily.get(cc, 0) + n
        daily[sub] = daily.get(sub, 0) + n
    if not window:
        return []
    daily.update(window)
    t = int(now)
    return [
        Counts(f"5m:{t // FIVE_MIN}", 2 * HOUR, window),
        Counts(f"h:{t // HOUR}", 26 * HOUR, window),
        Counts(f"d:{day_of(now)}", DAYS_KEPT * DAY, daily),
    ]


async def flush(tally: Tally, store: Store, now: float) -> int:
    """Write what `tally` holds; on a store failure keep it for the next try and re-raise.

    Returns how many downloads were written.
    """
    taken = tally.take()
    if not taken:
        return 0
    try:
        await store.add_counts(batches(taken, now))
    except StoreError:
        tally.put_back(taken)
        raise
    return sum(taken.values())


async def flush_forever(
    tally: Tally,
    store: Store,
    interval: float = FLUSH_INTERVAL,
    clock: Callable[[], float] = time.time,
) -> None:
    """Flush every `interval` seconds until cancelled; logs only when failing starts and ends.

    The caller flushes once more after cancelling, so nothing counted is lost on a clean stop.
    """
    failing = False
    while True:
        await asyncio.sleep(interval)
        try:
            await flush(tally, store, clock())
        except StoreError as e:
            if not failing:
                log.warning("cannot write download statistics, keeping them in memory: %s", e)
            failing = True
            continue
        if failing:
            log.warning("download statistics written again")
        failing = False


# --- reading -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """Downloads over a recent window: in total, to the master, per mirror."""

    total: int = 0
    master: int = 0
    mirrors: Mapping[str, int] = field(default_factory=dict)

    def share(self, mirror: str) -> float | None:
        """The fraction of the window's downloads sent to `mirror`; None when there were none."""
        if self.total <= 0:
            return None
        return self.mirrors.get(mirror, 0) / self.total


@dataclass(frozen=True, slots=True)
class Day:
    """Downloads of one UTC day, per mirror, per client country and per top-level subtree."""

    date: str  # YYYY-MM-DD
    total: int
    master: int
    mirrors: Mapping[str, int]
    countries: Mapping[str, int]
    subtrees: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class DownloadStats:
    hour: Window
    day: Window
    days: tuple[Day, ...]  # newest first, `DAYS_SHOWN` of them
    error: str | None = None  # why the store could not be read (the figures are then older)


def buckets_for(now: float, days: int = DAYS_SHOWN) -> tuple[list[str], list[str], list[str]]:
    """The bucket names making up the last hour, the last day and the last `days` days."""
    t = int(now)
    five = [f"5m:{t // FIVE_MIN - i}" for i in range(HOUR // FIVE_MIN)]
    hours = [f"h:{t // HOUR - i}" for i in range(DAY // HOUR)]
    dailies = [f"d:{day_of(now - i * DAY)}" for i in range(days)]
    return five, hours, dailies


def _window(raw: Mapping[str, Mapping[str, int]], names: list[str]) -> Window:
    total = master = 0
    mirrors: dict[str, int] = {}
    for b in names:
        fields = raw.get(b, {})
        total += fields.get("total", 0)
        master += fields.get("master", 0)
        for f, n in fields.items():
            if f.startswith("m:"):
                mirrors[f[2:]] = mirrors.get(f[2:], 0) + n
    return Window(total, master, mirrors)


def _prefixed(fields: Mapping[str, int], prefix: str) -> dict[str, int]:
    n = len(prefix)
    items = ((f[n:], v) for f, v in fields.items() if f.startswith(prefix))
    return dict(sorted(items, key=lambda kv: (-kv[1], kv[0])))


def summarize(raw: Mapping[str, Mapping[str, int]], now: float) -> DownloadStats:
    """The figures shown on the status page, from the buckets `buckets_for(now)` names."""
    five, hours, dailies = buckets_for(now)
    days = []
    for b in dailies:
        fields = raw.get(b, {})
        days.append(
            Day(
                date=b[2:],
                total=fields.get("total", 0),
                master=fields.get("master", 0),
                mirrors=_prefixed(fields, "m:"),
                countries=_prefixed(fields, "c:"),
                subtrees=_prefixed(fields, "t:"),
            )
        )
    return DownloadStats(_window(raw, five), _window(raw, hours), tuple(days))


async def read(store: Store, now: float) -> DownloadStats:
    """The current figures from the store (one pipelined round trip); StoreError on failure."""
    five, hours, dailies = buckets_for(now)
    raw = await store.get_counts([*five, *hours, *dailies])
    return summarize(raw, now)


class StatsReader:
    """Reads the figures for status pages at most every `max_age` seconds per process.

    On a store failure the last figures are served with the error; before any success, zeros.
    """

    def __init__(
        self, store: Store, clock: Callable[[], float] = time.time, max_age: float = READ_MAX_AGE
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_age = max_age
        self._last: DownloadStats | None = None
        self._read_at = -float("inf")

    async def get(self) -> DownloadStats:
        now = self._clock()
        if self._last is not None and now - self._read_at < self._max_age:
            return self._last
        try:
            self._last = await read(self._store, now)
        except StoreError as e:
            old = self._last or summarize({}, now)
            return DownloadStats(old.hour, old.day, old.days, str(e))
        self._read_at = now
        return self._last

    def invalidate(self) -> None:
        """Read the store again next time (tests, and right after a flush)."""
        self._read_at = -float("inf")
