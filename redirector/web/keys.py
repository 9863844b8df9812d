"""The application's typed keys, declared in one place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from redirector.config.live import LiveSettings
from redirector.config.settings import Settings
from redirector.geo import GeoReader
from redirector.poll.filecheck import Verifier, Voucher
from redirector.poll.hasher import Hasher
from redirector.poll.poller import PassHook
from redirector.reload import Reloader, ReloadOutcome
from redirector.router import Routed, Router
from redirector.snapshot import SnapshotHolder
from redirector.stats import StatsReader, Tally
from redirector.store.base import Store
from redirector.store.facts import FactsHolder
from redirector.store.history import HistoryReader
from redirector.store.lease import Lease
from redirector.supervise import Tasks
from redirector.views.status import SectionProvider
from redirector.web.metrics import Metrics
from redirector.web.viewbudget import Guard
from redirector.web.viewcache import Views

# The startup settings; the ones in force now, replaced by each reload, are LIVE's `current`.
SETTINGS = web.AppKey("settings", Settings)
LIVE = web.AppKey("live", LiveSettings)
STORE = web.AppKey("store", Store)
HOLDER = web.AppKey("holder", SnapshotHolder)
GEO = web.AppKey[GeoReader | None]("geo")
ROUTER = web.AppKey("router", Router)
SESSION = web.AppKey("session", aiohttp.ClientSession)
GEO_WARNING = web.AppKey("geo_warning", str)
# The config and GeoIP reloader (reload.py), while the app runs: its `last` is the latest
# reload, refused or accepted, that /health, /health/ready, /metrics and /mirrors show.
RELOADER = web.AppKey("reloader", Reloader)
# Called with every reload outcome, each in its own task, in the worker that speaks for the
# host (SPEAKS): where the event log records "config reloaded" and "config refused" once per
# host. Append before startup.
RELOAD_HOOKS = web.AppKey[list[Callable[[ReloadOutcome], Awaitable[None]]]]("reload_hooks")
# False in all workers of `serve --workers N` but one: host-wide news (reloads, GeoIP) is
# logged once per host, by the worker that speaks.
SPEAKS = web.AppKey("speaks", bool)

# Pass hooks run after each poller pass in the process holding the poller lease; append
# to this list (set by create_app, read afresh each pass). Vouchers tell the never-a-404 check
# which (mirror, path) the poller's passes already know to exist. LEASE is None without Redis.
PASS_HOOKS = web.AppKey[list[PassHook]]("pass_hooks")
VOUCHERS = web.AppKey[list[Voucher]]("vouchers")
VERIFIER = web.AppKey("verifier", Verifier)
# The master's file facts (sizes, hashes) as this process last loaded them (store/facts.py).
FACTS = web.AppKey("facts", FactsHolder)
HASHER = web.AppKey("hasher", Hasher)  # set only where a hasher runs
LEASE = web.AppKey[Lease | None]("lease")
TASKS = web.AppKey("tasks", Tasks)  # the supervised background tasks (supervise.py)
# Operator views (pages.py): metrics, the download tally and its reader, and the extra
# sections other modules add to the status page (append a provider to the list).
METRICS = web.AppKey("metrics", Metrics)
TALLY = web.AppKey("tally", Tally)
STATS_READER = web.AppKey("stats_reader", StatsReader)
HISTORY_READER = web.AppKey("history_reader", HistoryReader)
STATUS_SECTIONS = web.AppKey[list[SectionProvider]]("status_sections")
VIEWS = web.AppKey("views", Views)  # the views rendered once per state (viewcache.py)
VIEW_GUARD = web.AppKey("view_guard", Guard)  # how often a client may fetch them (viewbudget.py)
# What a redirect consults, looked up once after startup, is redirect.REDIRECTS: declared
# beside its class, which imports this module.

# Per request: what the redirect handler decided and how long the decision took, for the
# access log (accesslog.py).
ROUTED = web.RequestKey("routed", Routed)
DECISION_SECONDS = web.RequestKey("decision_seconds", float)
TARGET = web.RequestKey("target", str)  # the Location sent, after the per-file check
# The mirrors a mirror list or metalink named, best first (yum.py), for the access log.
LISTED = web.RequestKey[tuple[str, ...]]("listed")
