"""A bounded map whose entries expire a fixed time after they were set.

The per-file check reads its answers on every redirect, so a read is one dict lookup and one
comparison: the caller passes the time (monotonic seconds, read once per request) rather than
the map reading a clock per access, and nothing is reordered on a read. Every entry lives
`ttl` seconds, so the order entries were set in is the order they expire in: the oldest are
dropped first, whether expired or, when the map is full, not yet.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLMap(Generic[K, V]):
    """At most `maxsize` entries, each for `ttl` seconds from when it was last set."""

    __slots__ = ("_entries", "maxsize", "ttl")

    def __init__(self, maxsize: int, ttl: float) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.ttl = ttl
        # key -> (value, the time it expires), oldest first
        self._entries: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def get(self, key: K, now: float) -> V | None:
        """The value set for `key` if it has not expired at `now`, else None."""
        found = self._entries.get(key)
        if found is None or found[1] <= now:
            return None
        return found[0]

    def holds(self, key: K, now: float) -> bool:
        """Whether `key` has a value that has not expired at `now`."""
        found = self._entries.get(key)
        return found is not None and found[1] > now

    def set(self, key: K, value: V, now: float) -> None:
        """Set `key` to `value` until `now + ttl`; expired entries and, past `maxsize`, the
        oldest are dropped."""
        entries = self._entries
        entries.pop(key, None)  # set again: now the newest
        entries[key] = (value, now + self.ttl)
        while entries:
            oldest = next(iter(entries.values()))
            if len(entries) <= self.maxsize and oldest[1] > now:
                break
            entries.popitem(last=False)

    def __len__(self) -> int:
        """Entries held, expired ones not yet dropped included."""
        return len(self._entries)
