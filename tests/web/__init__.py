"""Tests of redirector/web/: the app's handlers, access log and metrics over HTTP."""
