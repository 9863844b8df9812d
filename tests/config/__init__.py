"""Tests of redirector/config/: settings, their TOML and every kind of mistake."""
