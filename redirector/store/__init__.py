"""Shared state: the Store protocol, its codec, and the memory, Redis and file stores."""
