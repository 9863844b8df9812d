"""Tests of redirector/poll/: the poller, repodata and file checks against loopback mirrors."""
