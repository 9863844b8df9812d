"""Shared test helpers: the injected clock and the tests' world (clients, GeoIP, mirror sets)."""
