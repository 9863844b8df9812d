"""The master's file facts as this process sees them: a copy of the store's, kept current.

Every request for a hashed file looks its facts up here (a dict lookup, no I/O); a background
task reloads the copy when the store's facts generation moves, which the hasher makes happen
once per file it hashes and never when nothing changed.
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Mapping

from redirector.core.filefacts import BadCopy, FileFacts, digest_headers
from redirector.store.base import FactStore, StoreError

log = logging.getLogger(__name__)

REFRESH_INTERVAL = 1.0  # seconds between looks at the facts generation
BAD_COPY_HOLD = 86400.0  # a mirror caught with a wrong copy gets no client for it this long


class FactsHolder:
    """The last facts loaded from the store; empty until the first load, or without a store
    that keeps facts."""

    def __init__(self) -> None:
        self.current: Mapping[str, FileFacts] = types.MappingProxyType({})
        # Digest and Repr-Digest of each file, made once per load rather than per redirect
        self._headers: dict[str, dict[str, str]] = {}
        self.generation: int | None = None
        self.error: str | None = None
        self.bad: Mapping[tuple[str, str], BadCopy] = types.MappingProxyType({})

    def get(self, path: str) -> FileFacts | None:
        return self.current.get(path)

    def vetoed(self, mirror: str, path: str, now: float) -> bool:
        """Whether `mirror` was caught with a wrong copy of `path` in the last BAD_COPY_HOLD."""
        if not self.bad:
            return False
        bad = self.bad.get((mirror, path))
        return bad is not None and now - bad.seen_at < BAD_COPY_HOLD

    def headers(self, path: str) -> dict[str, str] | None:
        """The Digest and Repr-Digest headers of a redirect to `path`; None when none."""
        return self._headers.get(path)

    async def refresh(self, store: object) -> bool:
        """Reload if the store's facts changed; True when it did. Never raises StoreError: a
        store that fails keeps the last copy (a hash known a minute ago is still the hash)."""
        if not isinstance(store, FactStore):
            return False
        try:
            generation = await store.facts_generation()
            if generation == self.generation:
                return False
            facts = await store.load_facts()
            bad = await store.load_bad_copies()
        except StoreError as e:
            if self.error is None:
                log.warning("file facts not refreshed: %s", e)
            self.error = str(e)
            return False
        if self.error is not None:
            log.info("file facts refreshed again")
        self.error = None
        self.current = types.MappingProxyType(facts)
        self.bad = types.MappingProxyType({(b.mirror, b.path): b for b in bad})
        self._headers = {p: h for p, f in facts.items() if (h := digest_headers(f))}
        self.generation = generation
        return True


async def refresh_facts_forever(
    holder: FactsHolder, store: object, interval: float = REFRESH_INTERVAL
) -> None:
    """`holder.refresh(store)` every `interval` seconds until cancelled."""
    while True:
        await holder.refresh(store)
        await asyncio.sleep(interval)
