"""The outbound side: the one HTTP client and every pass that probes mirrors."""
