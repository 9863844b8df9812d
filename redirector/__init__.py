"""Mirror redirector for the SME Server (Koozali) download network."""

__version__ = "0.1.0"  # the one place: pyproject.toml reads it from here
