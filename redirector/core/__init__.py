"""The pure core: decisions and formats, with time and randomness passed in; no I/O."""
