"""The operator views' budget over HTTP: the live settings' limits, and the answer past them.

`Guard` holds the process's `core.viewbudget.ViewBudget`, under the limits of the settings in
force (a reload applies at the next view), and its clock. `refusal` is what a client past the
budget gets instead of the view: `429 Too Many Requests` when its network's bucket is empty,
`503 Service Unavailable` when the process's is, each with `Retry-After` (whole seconds until
a token), a line of text and `Cache-Control: no-store`; nothing is rendered, so a refusal
costs about what a redirect does. `pages` asks the guard before every costly view, with the
client the router makes out of the request (`pages.budgeted`, `pages.mirrorlist`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from redirector.config.settings import Settings
from redirector.core.budget import Refusal
from redirector.core.clientip import IPAddress
from redirector.core.viewbudget import Refused, ViewBudget, ViewLimits

# The view label of redirector_view_refusals_total: one per costly view, whatever the path.
MIRRORS, MIRRORS_JSON, SCHEMA, METRICS, EXPLAIN = (
    "mirrors", "mirrors.json", "schema", "metrics", "explain",
)  # fmt: skip


def limits_of(settings: Settings) -> ViewLimits:
    """The budget's limits as the views_* keys of `settings` set them."""
    return ViewLimits(
        network_burst=float(settings.views_network_burst),
        network_per_second=settings.views_network_rate,
        total_burst=float(settings.views_total_burst),
        total_per_second=settings.views_total_rate,
        exempt=settings.views_exempt,
    )


class Guard:
    """The views' budget of one process, under the live settings' limits. `current` reads the
    settings in force (`LiveSettings.get`); `clock` is monotonic seconds (injectable)."""

    def __init__(
        self, current: Callable[[], Settings], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.current = current
        self.clock = clock
        self.budget = ViewBudget()
        self._settings: Settings | None = None

    def admit(self, ip: IPAddress | None) -> Refused | None:
        """None when a view may be answered to the client at `ip` now, else the refusal."""
        settings = self.current()
        if settings is not self._settings:  # the first view, or the first after a reload
            self.budget.configure(limits_of(settings))
            self._settings = settings
        return self.budget.admit(ip, self.clock())


def refusal(refused: Refused) -> web.Response:
    """The answer to a view past its budget: cheap, never cached, saying when to come back."""
    wait = refused.retry_after
    if refused.budget is Refusal.NETWORK:
        status = 429
        text = (
            "429 Too Many Requests: your network asked for the operator views too often;"
            f" retry in {wait} s\n"
        )
    else:
        status = 503
        text = f"503 Service Unavailable: the operator views are busy; retry in {wait} s\n"
    return web.Response(
        status=status,
        text=text,
        headers={"Retry-After": str(wait), "Cache-Control": "no-store"},
    )
