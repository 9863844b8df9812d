"""Shared test helpers: the injected clock, the tests' world (clients, GeoIP, mirror sets), load.

`ROOT` is the repository, for the tests that read its files (examples/, deploy/, bench/): it does
not depend on how deep below tests/ a test module sits.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
