"""Tests of redirector/core/: the pure decisions, with time and randomness passed in."""
