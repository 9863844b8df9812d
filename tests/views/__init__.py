"""Tests of redirector/views/: the status and explain pages, HTML and JSON."""
