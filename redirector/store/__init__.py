"""Shared state: the Store protocol (base), its codec, and the memory, Redis and file stores."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redirector.store.base import Store


def open_store(url: str | None, *, prefix: str = "redirector:", timeout: float = 1.0) -> Store:
    """A RedisStore for `url` (not connected yet), or a MemoryStore when `url` is None."""
    # Imported here: redis-py is loaded only by a process that is configured to use Redis.
    if url is None:
        from redirector.store.memory import MemoryStore

        return MemoryStore()
    from redirector.store.redis import RedisStore

    return RedisStore(url, prefix=prefix, timeout=timeout)
