"""The application's typed keys, declared in one place."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from .geo import GeoReader
from .router import Router
from .settings import Settings
from .snapshot import SnapshotHolder
from .store import Store

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
HOLDER = web.AppKey("holder", SnapshotHolder)
GEO = web.AppKey[GeoReader | None]("geo")
ROUTER = web.AppKey("router", Router)
SESSION = web.AppKey("session", aiohttp.ClientSession)
GEO_WARNING = web.AppKey("geo_warning", str)
