"""Sample checks: a ranged GET of one piece of a hashed file, compared with the master's hash.

A mirror can serve a copy of the right size that is not the master's (a sync that died in the
middle of a rewrite, a damaged disk): no HEAD tells. After each poller pass, up to
`sample_checks` pieces (each one piece of 1 to 16 MiB: that is the budget, per pass, across all
mirrors) are fetched from the mirrors the poller found up and compared with the piece hashes
from the master's tree. A mismatch records a `BadCopy`, and the mirror gets no client for that
file (nor a place in its Metalinks) for a day, or until caught again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Callable

import aiohttp

from redirector.config.settings import Settings
from redirector.core.filefacts import BadCopy, FileFacts, Sample, pick_samples
from redirector.core.models import Status
from redirector.poll.poller import PassHook, PassResult
from redirector.poll.probe import ProbeError, fetch
from redirector.store.base import FactStore, Store, StoreError
from redirector.store.facts import BAD_COPY_HOLD

log = logging.getLogger(__name__)

CONCURRENCY = 4  # pieces fetched at once
MIN_RATE = 1e6  # bytes/s a mirror is given to send a piece before the fetch times out
SERVED = frozenset({Status.UP, Status.SYNCING})


async def check_sample(
    session: aiohttp.ClientSession, base: str, facts: FileFacts, s: Sample, timeout: float
) -> str | None:
    """Why `s` shows a wrong copy, or None when it matches or tells nothing (no answer, no
    range support, a 404 the per-file check deals with)."""
    want = s.end - s.start + 1
    try:
        got = await fetch(
            session,
            base + s.path,
            timeout=timeout + want / MIN_RATE,
            max_bytes=want,
            headers={"Range": f"bytes={s.start}-{s.end}"},
        )
    except ProbeError:
        return None
    if got.status == 416:
        return f"no bytes {s.start}-{s.end}: shorter than the master's {facts.size}"
    if got.status != 206:
        return None
    if len(got.body) != want or hashlib.sha256(got.body).hexdigest() != facts.pieces[s.piece]:
        return f"piece {s.piece} (bytes {s.start}-{s.end}) differs from the master's"
    return None


def make_sample_pass(
    current: Callable[[], Settings],
    store: Callable[[], Store],
    *,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.time,
) -> PassHook:
    """The pass hook; `store` is looked up when a pass runs, the settings in `current`."""
    draw = rng if rng is not None else random.Random()  # sampling, not secrets

    async def sample_pass(session: aiohttp.ClientSession, result: PassResult) -> None:
        settings = current()
        st = store()
        if settings.sample_checks <= 0 or not isinstance(st, FactStore):
            return
        try:
            facts = await st.load_facts()
            caught = await st.load_bad_copies()
        except StoreError as e:
            log.warning("sample checks skipped: %s", e)
            return
        now = clock()
        # A copy caught lately gets no clients anyway: its budget goes to the others.
        held = {(b.mirror, b.path) for b in caught if now - b.seen_at < BAD_COPY_HOLD}
        up = {s.name for s in result.states if s.status in SERVED}
        bases = {m.name: m.base for m in settings.mirrors if m.enabled and m.name in up}
        samples = [
            s
            for s in pick_samples(
                [f for f in facts.values() if f.pieces],
                sorted(bases),
                settings.sample_checks,
                draw,
            )
            if (s.mirror, s.path) not in held
        ]
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(s: Sample) -> BadCopy | None:
            async with limit:
                why = await check_sample(
                    session, bases[s.mirror], facts[s.path], s, settings.probe_timeout
                )
            return None if why is None else BadCopy(s.mirror, s.path, why, clock())

        found = [b for b in await asyncio.gather(*(one(s) for s in samples)) if b is not None]
        for b in found:
            log.warning("%s serves a wrong copy of %s: %s", b.mirror, b.path, b.reason)
        if found:
            try:
                await st.put_bad_copies(found)
            except StoreError as e:
                log.warning("wrong copies not recorded: %s", e)

    return sample_pass
