"""Settings: the one table of keys, parsing and validation, the live holder."""
