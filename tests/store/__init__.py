"""Tests of redirector/store/: the store contract over every backend, and the lease."""
