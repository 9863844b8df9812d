"""The poller lease: among all processes sharing one store, exactly one polls.

The lease lives in the store (`Store.acquire_lease`: a Redis key with an expiry, taken and
renewed by a Lua script that reads the holder first). Every process runs `Lease.keep`, which
tries to take or renew it every third of its time to live: the holder keeps it while alive,
and when the holder dies or is cut off, another takes it within one ttl. A process that cannot
reach the store does not count itself the holder, so it stops polling; its lease then expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket

from redirector.store.base import Store, StoreError

log = logging.getLogger(__name__)

POLLER = "poller"


def owner_id() -> str:
    """Who this process is, for the lease holder's key: host, pid and a random tag.

    The tag tells apart two owners in one process (tests) and a pid reused after a restart.
    """
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"


class Lease:
    """One process's side of lease `name` in `store`; `held` says whether it holds it now."""

    def __init__(
        self, store: Store, *, name: str = POLLER, owner: str | None = None, ttl: float = 30.0
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"lease ttl must be positive, got {ttl!r}")
        self.store = store
        self.name = name
        self.owner = owner or owner_id()
        self.ttl = ttl
        self._held = asyncio.Event()
        self._error: str | None = None

    @property
    def held(self) -> bool:
        return self._held.is_set()

    async def confirm(self) -> bool:
        """Take the lease if free, renew it if ours; True when this process holds it now.

        A store failure counts as not holding it: we cannot prove we do, and another process
        may take it once it expires.
        """
        try:
            got = await self.store.acquire_lease(self.name, self.owner, self.ttl)
        except StoreError as e:
            if self._error is None:
                log.warning("cannot reach the store for the %s lease: %s", self.name, e)
            self._error = str(e)
            got = False
        else:
            if self._error is not None:
                log.info("store reachable again for the %s lease", self.name)
            self._error = None
        if got and not self.held:
            log.info("holding the %s lease as %s: this process polls", self.name, self.owner)
            self._held.set()
        elif not got and self.held:
            log.warning("lost the %s lease: this process stops polling", self.name)
            self._held.clear()
        return got

    async def wait_held(self) -> None:
        """Return once this process holds the lease (at once if it does)."""
        await self._held.wait()

    async def keep(self) -> None:
        """Take or renew the lease every third of its ttl, until cancelled."""
        while True:
            await self.confirm()
            await asyncio.sleep(self.ttl / 3)

    async def release(self) -> None:
        """Give the lease up now (on shutdown), so another process takes over at once."""
        was = self.held
        self._held.clear()
        try:
            await self.store.release_lease(self.name, self.owner)
        except StoreError as e:
            log.warning("cannot release the %s lease: %s", self.name, e)
        else:
            if was:
                log.info("released the %s lease", self.name)


async def let_go(lease: Lease | None, keeper: asyncio.Task[None] | None) -> None:
    """The end of a holding: stop `keeper` (the `Lease.keep` task), then release `lease`."""
    if keeper is not None:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
    if lease is not None:
        await lease.release()
