"""The injected clock: time that moves only when a test says so."""

from __future__ import annotations


class Clock:
    """Pass it wherever the code takes `clock=`; move it with `clock.t += seconds` or step it back.

    Wall-clock or monotonic is the caller's choice: the code under test only calls it.
    """

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t
