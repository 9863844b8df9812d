"""The aiohttp layer: the only importer of aiohttp.web; app wiring and handlers."""
