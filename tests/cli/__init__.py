"""Tests of redirector/cli/: the commands as real processes."""
