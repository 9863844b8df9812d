"""Wiring: builds the aiohttp application and opens and closes every resource in cleanup_ctx."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from aiohttp import web

from redirector.config.live import LiveSettings
from redirector.config.settings import Settings
from redirector.core.filefacts import BadCopy
from redirector.geo import GeoReader, open_geo
from redirector.poll.filecheck import Verifier, open_check_session
from redirector.poll.hasher import Hasher, HashPass
from redirector.poll.poller import PassHook, PassResult, run_poller, stop_task
from redirector.poll.probe import open_session
from redirector.poll.repodata import make_repodata_pass
from redirector.poll.samplecheck import make_sample_pass
from redirector.poll.syncread import sync_hook
from redirector.reload import GEO_GRACE, WATCH_INTERVAL, ReloadOutcome, hold_sighup, watching
from redirector.router import Router
from redirector.snapshot import SnapshotHolder, refresh_forever
from redirector.store import open_store
from redirector.store.base import FactStore, Store, StoreError
from redirector.store.facts import FactsHolder, refresh_facts_forever
from redirector.store.history import record_reload
from redirector.store.lease import Lease
from redirector.supervise import Tasks
from redirector.views.status import Section
from redirector.web import accesslog, front, keys, pages
from redirector.web import redirect as handlers
from redirector.web import yum as lists
from redirector.web.limits import HTTP_LIMITS, quiet_bad_requests

log = logging.getLogger(__name__)

POLLER, REFRESHER = "poller", "snapshot refresher"  # supervised task names, for /health


def _poller_ctx(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    """The poller: its session, the lease (shared stores), pass hooks, a task until shutdown."""

    async def poller_ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_session(settings.probe_timeout) as session:
            app[keys.SESSION] = session
            holder, st = app[keys.HOLDER], app[keys.STORE]
            # With Redis only the lease holder polls; in-process state has one process anyway.
            # A file store is shared by the workers of `serve --workers N`: one of them polls.
            lease = Lease(st, ttl=settings.lease_ttl) if st.kind in ("redis", "file") else None
            app[keys.LEASE] = lease
            hooks = app[keys.PASS_HOOKS]

            async def after_pass(result: PassResult) -> None:
                await holder.refresh(st)  # this process sees its own pass at once
                pages.observe_pass(app, result)

            tasks = app[keys.TASKS]
            tasks.start(
                POLLER,
                lambda: run_poller(
                    session,
                    settings,
                    st,
                    on_pass=after_pass,
                    current=app[keys.LIVE].get,  # reloads reach the poller
                    hooks=hooks,
                    lease=lease,
                    tasks=tasks,
                ),
            )
            yield
            await tasks.stop(POLLER)

    return poller_ctx


def _verify_ctx(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    """Never a 404 (verify.py): the checker, with its own session, so a poller pass never
    delays a waiting client."""

    async def verify_ctx(app: web.Application) -> AsyncIterator[None]:
        session = open_check_session(settings) if settings.verify_files else None
        vouchers = app[keys.VOUCHERS]
        recording: set[asyncio.Task[None]] = set()

        async def record(bad: BadCopy) -> None:
            st = app[keys.STORE]
            try:
                if isinstance(st, FactStore):
                    await st.put_bad_copies([bad])
            except StoreError as e:
                log.warning("wrong copy of %s on %s not recorded: %s", bad.path, bad.mirror, e)

        def on_bad(bad: BadCopy) -> None:
            log.warning("%s serves a wrong copy of %s: %s", bad.mirror, bad.path, bad.reason)
            task = asyncio.create_task(record(bad))
            recording.add(task)  # held until done: the loop keeps only weak references
            task.add_done_callback(recording.discard)

        verifier = Verifier(
            settings,
            session,
            app[keys.HOLDER],
            vouchers=vouchers,
            current=app[keys.LIVE].get,
            facts=app[keys.FACTS].get,
            on_bad=on_bad,
            vetoed=app[keys.FACTS].vetoed,
        )
        app[keys.VERIFIER] = verifier
        yield
        await verifier.close()
        for task in list(recording):
            await stop_task(task)
        if session is not None:
            await session.close()

    return verify_ctx


async def facts_ctx(app: web.Application) -> AsyncIterator[None]:
    """The master's file facts in this process: loaded once, then whenever they change."""
    holder = FactsHolder()
    app[keys.FACTS] = holder
    await holder.refresh(app[keys.STORE])
    task = asyncio.create_task(refresh_facts_forever(holder, app[keys.STORE]))
    yield
    await stop_task(task)


def _hasher_ctx(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    """The hasher (poll/hasher.py), in the polling process, while it holds the poller lease."""

    async def hasher_ctx(app: web.Application) -> AsyncIterator[None]:
        st = app[keys.STORE]
        if not isinstance(st, FactStore) or not (settings.local_tree or settings.hash_sums):
            yield
            return
        hasher = Hasher(st, app[keys.LIVE].get, session=app[keys.SESSION])
        holder = app[keys.FACTS]

        async def after_pass(_: HashPass) -> None:
            await holder.refresh(st)  # this process serves its own hashes at once

        app[keys.HASHER] = hasher
        task = asyncio.create_task(hasher.run(app[keys.LEASE], after_pass))
        yield
        await stop_task(task)

    return hasher_ctx


def reload_ctx(
    *, watch_geo: bool, interval: float = WATCH_INTERVAL, grace: float = GEO_GRACE
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx that reloads the app's config and GeoIP database while it runs.

    Needs keys.ROUTER and keys.HOLDER, so it goes after the context that makes them. A reload
    replaces `app[keys.LIVE].current` (app[keys.SETTINGS] stays the startup config: an
    application's keys cannot change once it runs), and the live GeoIP reader is
    `app[keys.ROUTER].geo`. `watch_geo` is False when the reader was injected rather than
    opened from the settings.
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        router, holder = app[keys.ROUTER], app[keys.HOLDER]
        hooks = app[keys.RELOAD_HOOKS]
        running: set[asyncio.Task[None]] = set()

        def apply(new: Settings) -> None:
            # One synchronous step with the replacing of app[keys.LIVE].current that follows
            # it: no request runs between these assignments.
            holder.set_mirrors(new.mirrors)
            router.reconfigure(new)

        def tell_hooks(outcome: ReloadOutcome) -> None:
            for hook in list(hooks):
                task = asyncio.create_task(_run_reload_hook(hook, outcome))
                running.add(task)  # held until done: the loop keeps only weak references
                task.add_done_callback(running.discard)

        async with watching(
            app[keys.LIVE],
            apply,
            geo=router.geo,
            swap_geo=router.swap_geo if watch_geo else None,
            interval=interval,
            grace=grace,
            speak=app.get(keys.SPEAKS, True),
            tasks=app[keys.TASKS],
        ) as reloader:
            if app.get(keys.SPEAKS, True):  # host-wide news: recorded by one worker per host
                reloader.listeners.append(tell_hooks)
            app[keys.RELOADER] = reloader
            yield
        for task in list(running):
            await stop_task(task)

    return ctx


async def _run_reload_hook(
    hook: Callable[[ReloadOutcome], Awaitable[None]], outcome: ReloadOutcome
) -> None:
    try:
        await hook(outcome)
    except Exception:  # one hook's failure is logged; the reload itself stands
        log.exception("reload hook %s failed", getattr(hook, "__qualname__", repr(hook)))


def _event_log_hook(app: web.Application) -> Callable[[ReloadOutcome], Awaitable[None]]:
    """A reload hook writing each reload, applied or refused, to the network's event log."""

    async def log_reload(outcome: ReloadOutcome) -> None:
        detail = outcome.error or outcome.detail or "applied"
        await record_reload(
            app[keys.STORE], ok=outcome.ok, path=outcome.path or "", detail=detail, now=outcome.at
        )

    return log_reload


def _add_pass_hooks(app: web.Application) -> None:
    """After every poller pass (only where the poller runs): the mirrors' repomd.xml against
    the master's, and their sync info, drawn as the status page's sync tree. The store is looked
    up when a pass runs (it exists only once the app has started), the settings in the live
    holder, which a reload replaces."""

    live = app[keys.LIVE].get

    def store() -> Store:
        return app[keys.STORE]

    app[keys.PASS_HOOKS].append(make_repodata_pass(app[keys.SETTINGS], store, current=live))
    app[keys.PASS_HOOKS].append(sync_hook(live, store))
    app[keys.PASS_HOOKS].append(make_sample_pass(live, store))

    async def sync_tree() -> Section:
        return await pages.tree_section(app)

    app[keys.STATUS_SECTIONS].append(sync_tree)

    async def bad_copies() -> Section | None:
        return await pages.bad_copies_section(app)

    app[keys.STATUS_SECTIONS].append(bad_copies)


def create_app(  # noqa: PLR0915 (the wiring reads top to bottom, one context a step)
    settings: Settings,
    *,
    poll: bool = True,
    store: Store | None = None,
    geo: GeoReader | None = None,
    use_geo_settings: bool = True,
    pass_hooks: Sequence[PassHook] = (),
    speaks: bool = True,
) -> web.Application:
    """The redirector app. `store` and `geo` may be injected (tests); otherwise settings decide.

    `poll=False` serves from the store alone, for processes where another one polls.
    `speaks` False: reloads and GeoIP news are logged at debug level only (keys.SPEAKS).
    """
    # Request-line and header limits (limits.py): a longer request is a 400 before any handler.
    # The timing middleware is outermost: the whole request, errors included.
    app = web.Application(middlewares=[pages.timed, handlers.errors], handler_args=HTTP_LIMITS)
    app[keys.SETTINGS] = settings
    app[keys.LIVE] = LiveSettings(settings)
    app[keys.SPEAKS] = speaks
    app[keys.RELOAD_HOOKS] = [_event_log_hook(app)]
    # Live lists: others append pass hooks and vouchers after create_app, before startup.
    app[keys.PASS_HOOKS] = list(pass_hooks)
    app[keys.VOUCHERS] = []
    # Every long-lived task runs supervised here: restarted after a crash, shown in /health.
    app[keys.TASKS] = Tasks()

    async def geo_ctx(app: web.Application) -> AsyncIterator[None]:
        reader, warning = (
            (geo, None) if geo is not None or not use_geo_settings else open_geo(settings)
        )
        if reader is None and warning is None:
            warning = "no GeoIP database: location-blind"
        if reader is not None:
            log.info("GeoIP: %s", reader.describe())
        if warning:
            log.log(logging.WARNING if speaks else logging.DEBUG, "%s", warning)
            app[keys.GEO_WARNING] = warning
        else:
            assert reader is not None
            log.log(logging.INFO if speaks else logging.DEBUG, "GeoIP: %s", reader.describe())
            for note in reader.warnings(time.time(), settings.geoip_max_age):
                log.log(logging.WARNING if speaks else logging.DEBUG, "%s", note)
        app[keys.GEO] = reader
        yield
        if reader is not None and geo is None:
            reader.close()

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        st = (
            store
            if store is not None
            else open_store(settings.redis_url, prefix=settings.redis_prefix)
        )
        app[keys.STORE] = app[keys.METRICS].instrument(st)  # counts store errors
        yield
        if store is None:
            await st.close()

    async def snapshot_ctx(app: web.Application) -> AsyncIterator[None]:
        holder = SnapshotHolder(settings.mirrors)
        app[keys.HOLDER] = holder
        await holder.refresh(app[keys.STORE])
        app[keys.ROUTER] = Router(settings, holder, app[keys.GEO])
        app[keys.TASKS].start(
            REFRESHER, lambda: refresh_forever(holder, app[keys.STORE], settings.snapshot_interval)
        )
        yield
        await app[keys.TASKS].stop(REFRESHER)

    app.cleanup_ctx.append(geo_ctx)
    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(snapshot_ctx)
    app.cleanup_ctx.append(facts_ctx)
    app.cleanup_ctx.append(_verify_ctx(settings))
    # Config and GeoIP reloads; an injected reader is the caller's, so it is not watched.
    app.cleanup_ctx.append(reload_ctx(watch_geo=geo is None and use_geo_settings))
    if poll:
        app.cleanup_ctx.append(_poller_ctx(settings))
        app.cleanup_ctx.append(_hasher_ctx(settings))
    app.on_response_prepare.append(handlers.nosniff)  # aiohttp's own 404s and 405s too
    handlers.add_routes(app)
    lists.add_routes(app)
    # Metrics, download stats (flushed by a context after the others) and the status views.
    pages.setup(app, settings, poll=poll)
    app.cleanup_ctx.append(handlers.redirects_ctx)
    _add_pass_hooks(app)
    return app


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed (the `speed` extra): a faster loop for the same code."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(
    settings: Settings,
    *,
    poll: bool = True,
    print_fn: Callable[[str], None] = print,
    store: Store | None = None,
    reuse_port: bool = False,
    speaks: bool = True,
) -> None:
    """Serve until interrupted. `reuse_port`: share the port with other workers (SO_REUSEPORT).

    `speaks`: see `create_app`."""
    hold_sighup()  # a reload before the app listens for it must not end the process
    quiet_bad_requests()  # a malformed request logs one line, not a traceback
    app = create_app(settings, poll=poll, store=store, speaks=speaks)
    front.serve(
        app,
        host=settings.listen_host,
        port=settings.listen_port,
        reuse_port=reuse_port,
        loop_factory=new_event_loop,
        print_fn=lambda msg: print_fn(msg) if msg else None,
        runner_kwargs=accesslog.runner_kwargs(settings),
    )
