"""Command line: serve, check-config, locate."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .settings import ConfigError, Settings, load_settings

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def default_config() -> Path:
    """The example config shipped inside the package: what `serve` runs with no --config."""
    return Path(__file__).with_name("mirrors.example.toml")


def _load(path: str | None) -> Settings:
    return load_settings(path if path else default_config())


def mirror_table(settings: Settings) -> str:
    """The configured mirrors as a fixed-width table."""
    rows = [("NAME", "CC", "LAT", "LON", "WEIGHT", "ON", "V6", "EXCLUDES", "URL")]
    for m in settings.mirrors:
        rows.append(
            (
                m.name,
                m.country,
                f"{m.latitude:.2f}",
                f"{m.longitude:.2f}",
                str(m.weight),
                "yes" if m.enabled else "no",
                "yes" if m.ipv6 else "no",
                ",".join(m.exclude) or "-",
                " ".join(u for u in (m.http, m.https) if u),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows
    )


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.file)
    print(mirror_table(settings))
    enabled = sum(1 for m in settings.mirrors if m.enabled)
    print(f"\n{args.file}: OK, {len(settings.mirrors)} mirrors ({enabled} enabled), "
          f"master {settings.master}")  # fmt: skip
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from .app import run  # aiohttp is only needed when serving

    settings = _load(args.config)
    if args.listen:
        from dataclasses import replace

        from .settings import parse_listen

        host, port = parse_listen(args.listen)
        settings = replace(settings, listen_host=host, listen_port=port)
    logging.getLogger(__name__).info(
        "config %s, %d mirrors", settings.source, len(settings.mirrors)
    )
    run(settings, poll=not args.no_poll)
    return EXIT_OK


def cmd_locate(args: argparse.Namespace) -> int:
    from .app import open_geo
    from .clientip import parse_ip

    settings = _load(args.config)
    if args.db:
        from dataclasses import replace

        settings = replace(settings, geoip_db=Path(args.db))
    ip = parse_ip(args.ip)
    if ip is None:
        print(f"not an IP address: {args.ip!r}", file=sys.stderr)
        return EXIT_USAGE
    reader, warning = open_geo(settings)
    if reader is None:
        print(warning, file=sys.stderr)
        return EXIT_FAIL
    try:
        loc = reader.locate(ip)
        print(f"database: {reader.describe()}")
        if loc is None:
            print(f"{ip}: no location (private, reserved or not in the database)")
            return EXIT_FAIL
        print(f"{ip}: country {loc.country or '-'}, continent {loc.continent or '-'}, "
              f"latitude {loc.latitude:.4f}, longitude {loc.longitude:.4f}")  # fmt: skip
        return EXIT_OK
    finally:
        reader.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="redirector", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the HTTP server and the poller")
    s.add_argument("--config", help="TOML config (default: the example shipped in the package)")
    s.add_argument("--listen", help="override [redirector] listen, e.g. 127.0.0.1:8080")
    s.add_argument("--no-poll", action="store_true", help="serve only; another process polls")
    s.set_defaults(func=cmd_serve)

    c = sub.add_parser("check-config", help="validate a config and print its mirrors")
    c.add_argument("file")
    c.set_defaults(func=cmd_check_config)

    g = sub.add_parser("locate", help="what the GeoIP database says of an address")
    g.add_argument("ip")
    g.add_argument("--config", help="TOML config whose geoip_db to use")
    g.add_argument("--db", help="an MMDB file (overrides the config)")
    g.set_defaults(func=cmd_locate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK
    return code


if __name__ == "__main__":
    sys.exit(main())
