"""The live settings: one holder per process whose `current` a reload replaces whole."""

from __future__ import annotations

from redirector.config.settings import Settings


class LiveSettings:
    """The settings in force now. Read `current` afresh where a reload must be seen (a handler,
    a poller pass); keep a `Settings` only for what is fixed at startup.

    A reload replaces `current` in one assignment, on the event loop, so a reader sees the old
    settings or the new ones, never a mix. `get` is `current` as a callable, for the poller's
    and hooks' `current=` arguments.
    """

    __slots__ = ("current", "replaced")

    def __init__(self, settings: Settings) -> None:
        self.current = settings
        self.replaced = 0  # how many times a reload has replaced them

    def get(self) -> Settings:
        return self.current

    def replace(self, settings: Settings) -> None:
        self.current = settings
        self.replaced += 1
