"""Command line: serve, check-config, locate, mirrors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redirector.config.settings import ConfigError, Settings, load_settings
from redirector.core.humanize import table

if TYPE_CHECKING:
    from redirector.core.models import Mirror
    from redirector.snapshot import Snapshot

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def default_config() -> Path:
    """The example config shipped inside the package: what `serve` runs with no --config."""
    return Path(__file__).parents[1] / "config" / "mirrors.example.toml"


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
                "auto" if m.ipv6 is None else "yes" if m.ipv6 else "no",
                ",".join(m.exclude) or "-",
                " ".join(u for u in (m.http, m.https, m.ftp) if u),
            )
        )
    return table(rows)


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.file)
    print(mirror_details(settings) if args.long else mirror_table(settings))
    enabled = sum(1 for m in settings.mirrors if m.enabled)
    print(f"\n{args.file}: OK, {len(settings.mirrors)} mirrors ({enabled} enabled), "
          f"master {settings.master}")  # fmt: skip
    print(f"master read from {settings.origin}; fallback: {settings.fallback}; "
          f"own names: {', '.join(settings.own_names)}")  # fmt: skip
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from redirector.cli.workers import default_workers, serve  # aiohttp is only needed when serving

    settings = _load(args.config)
    if args.listen:
        from dataclasses import replace

        from redirector.config.settings import parse_listen

        host, port = parse_listen(args.listen)
        settings = replace(settings, listen_host=host, listen_port=port)
    logging.getLogger(__name__).info(
        "config %s, %d mirrors", settings.source, len(settings.mirrors)
    )
    workers = args.workers if args.workers is not None else default_workers()
    state_dir = Path(args.state_dir) if args.state_dir else settings.state_dir
    try:
        return serve(settings, workers=workers, poll=not args.no_poll, state_dir=state_dir)
    except OSError as e:  # the address is taken, or the state directory unusable
        where = f"{settings.listen_host}:{settings.listen_port}"
        print(f"cannot serve on {where}: {e.strerror or e}", file=sys.stderr)
        return EXIT_FAIL


def cmd_locate(args: argparse.Namespace) -> int:
    from redirector.core.clientip import parse_ip
    from redirector.geo import open_geo

    settings = _load(args.config)
    if args.db:
        from dataclasses import replace

        settings = replace(settings, geoip_db=Path(args.db), geoip_databases=())
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
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        asn = reader.asn(ip)
        if asn is not None:
            print(f"{ip}: AS {asn}")
        if loc is None:
            print(f"{ip}: no location (private, reserved or not in the database)")
            return EXIT_FAIL
        print(f"{ip}: country {loc.country or '-'}, continent {loc.continent or '-'}, "
              f"latitude {loc.latitude:.4f}, longitude {loc.longitude:.4f}")  # fmt: skip
        return EXIT_OK
    finally:
        reader.close()


def state_report(snap: Snapshot, max_lag: float, now: float) -> tuple[str, int]:
    """The mirrors' conditions as a table with a line on the master, and how many are fresh."""
    from redirector.core.condition import Condition
    from redirector.core.humanize import ago
    from redirector.views.condition import state_table

    table, conditions = state_table(snap.candidates, now, max_lag)
    fresh = conditions.count(Condition.FRESH)
    lines = [table]
    master = snap.master
    if master is None:
        lines.append("\nmaster: not checked yet")
    else:
        cur = master.current
        reach = "unreachable: " + master.error if master.error else "reachable"
        since = f", current content first seen {ago(cur.first_seen, now)}" if cur else ""
        lines.append(f"\nmaster: {reach}, checked {ago(master.checked_at, now)}{since}")
    lines.append(f"{fresh} of {len(snap.candidates)} mirrors fresh")
    return "\n".join(lines), fresh


def cmd_mirrors(args: argparse.Namespace) -> int:
    import asyncio
    import time

    from redirector.cli.events import NoSharedStore, shared_store
    from redirector.snapshot import Snapshot
    from redirector.store.base import StoreData, StoreError

    settings = _load(args.config)
    try:
        store = shared_store(settings, _dir_arg(args.state_dir))
    except NoSharedStore as e:
        print(e, file=sys.stderr)
        return EXIT_FAIL

    async def load() -> StoreData:
        try:
            return await store.load()
        finally:
            await store.close()

    try:
        data = asyncio.run(load())
    except StoreError as e:
        print(f"store unreachable: {e}", file=sys.stderr)
        return EXIT_FAIL
    now = time.time()
    table, fresh = state_report(Snapshot.build(settings.mirrors, data, now), settings.max_lag, now)
    print(table)
    return EXIT_OK if fresh else EXIT_FAIL


def _serves(m: Mirror) -> str | None:
    """Whom a mirror's own rules let it serve, None when everybody."""
    only = [
        word
        for word, on in (
            ("its networks", m.private),
            (f"its country ({m.country})", m.country_only),
            ("its continent", m.continent_only),
        )
        if on
    ]
    return "only " + " and ".join(only) if only else None


def mirror_details(settings: Settings) -> str:
    """Every field of every mirror, one `key: value` line each, for `check-config --long`."""
    from redirector.config.settings import format_bandwidth, weight_from_bandwidth

    out: list[str] = []
    for m in settings.mirrors:
        derived = (
            " (bandwidth / 10 Mbit/s)"
            if m.bandwidth and m.weight == weight_from_bandwidth(m.bandwidth)
            else ""
        )
        fields = [
            ("http", m.http), ("https", m.https), ("country", m.country),
            ("location", f"{m.latitude:.2f}, {m.longitude:.2f}"),
            ("weight", f"{m.weight}{derived}"), ("enabled", "yes" if m.enabled else "no"),
            ("ipv6", "found by the poller" if m.ipv6 is None else "yes" if m.ipv6 else "no"),
            ("exclude", ", ".join(m.exclude) or None),
            ("trace_name", m.trace_name), ("contact_name", m.contact_name),
            ("contact_email", m.contact_email),
            ("bandwidth", format_bandwidth(m.bandwidth) if m.bandwidth else None),
            ("sync", m.sync), ("upstream", m.upstream),
            ("ssh", f"{m.ssh_user + '@' if m.ssh_user else ''}{m.ssh_host}:{m.ssh_port}"
             if m.ssh_host else None),
            ("netblocks", ", ".join(map(str, m.netblocks)) or None),
            ("asns", ", ".join(f"AS{a}" for a in m.asns) or None),
            ("serves", _serves(m)),
        ]  # fmt: skip
        out.append(f"[{m.name}]")
        out.extend(f"  {k:<14} {v}" for k, v in fields if v is not None)
    return "\n".join(out)


def _trace_arg(value: str) -> str:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a trace file name")
    return value


def _subtree_arg(value: str) -> str:
    from redirector.config.settings import normalize_subtree

    try:
        return normalize_subtree(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _path_arg(value: str) -> str:
    """A path below the tree root: relative, no '.' or '..' segments, trailing '/' kept."""
    parts = value.strip().lstrip("/").split("/")
    if not value.strip("/ ") or any(p in {".", ".."} for p in parts):
        raise argparse.ArgumentTypeError(f"{value!r} is not a path below the tree root")
    return "/".join(parts)


def _duration_arg(value: str) -> float:
    from redirector.config.settings import parse_duration

    try:
        seconds = parse_duration(value)
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be longer than zero")
    return seconds


def cmd_check_mirror(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import ssl
    from dataclasses import replace

    from redirector.cli import checkmirror as cm

    settings = load_settings(args.config) if args.config else None
    opts = cm.CheckOptions()
    if settings is not None:
        opts = replace(opts, master=settings.origin, master_trace=settings.master_trace,
                       max_lag=settings.max_lag, timeout=settings.probe_timeout)  # fmt: skip
    if args.mirror:
        mirror = settings.mirror(args.mirror) if settings is not None else None
        if mirror is None:
            print(f"check-mirror: --mirror {args.mirror!r} needs a --config that has it",
                  file=sys.stderr)  # fmt: skip
            return EXIT_USAGE
        opts = replace(opts, trace_name=mirror.trace_name, exclude=mirror.exclude)
    repomd = tuple(p if p.endswith("repomd.xml") else p.rstrip("/") + "/repodata/repomd.xml"
                   for p in args.repomd)  # fmt: skip
    if len(repomd) > cm.MAX_REPOMD:
        print(f"check-mirror: at most {cm.MAX_REPOMD} --repomd paths", file=sys.stderr)
        return EXIT_USAGE
    opts = replace(
        opts,
        master=args.master or opts.master,
        trace_name=args.trace_name or opts.trace_name,
        exclude=tuple(args.exclude) or opts.exclude,
        symlink_path=args.symlink_path or opts.symlink_path,
        repomd_paths=repomd or opts.repomd_paths,
        ca_file=args.ca_file,
        timeout=args.timeout or opts.timeout,
        slow=args.slow,
        very_slow=5 * args.slow,
    )
    try:
        cm.ssl_context(opts.ca_file)
    except (OSError, ssl.SSLError) as e:
        print(f"check-mirror: cannot use --ca-file {opts.ca_file}: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        results = asyncio.run(cm.check_mirror(args.url, opts))
    except (TypeError, ValueError) as e:
        print(f"check-mirror: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(cm.to_json(args.url, opts.master, results), indent=2))
    else:
        print(cm.format_text(results))
    return EXIT_FAIL if cm.failed(results) else EXIT_OK


def cmd_poll(args: argparse.Namespace) -> int:
    import asyncio

    from redirector.cli.poll import poll_command

    return asyncio.run(poll_command(_load(args.config), once=args.once))


def cmd_explain(args: argparse.Namespace) -> int:
    import asyncio

    from redirector.cli.explain import explain_command

    scheme = "https" if args.https else "http"
    settings = _load(args.config)
    return asyncio.run(
        explain_command(
            settings,
            args.ip,
            args.path,
            scheme,
            sys.stdout,
            sys.stderr,
            state_dir=_dir_arg(args.state_dir),
        )
    )


def _dir_arg(value: str | None) -> Path | None:
    return Path(value) if value else None


def cmd_events(args: argparse.Namespace) -> int:
    import asyncio
    import time

    from redirector.cli.events import NoSharedStore, events_command, shared_store

    settings = _load(args.config)
    try:
        store = shared_store(settings, _dir_arg(args.state_dir))
    except NoSharedStore as e:
        print(e, file=sys.stderr)
        return EXIT_FAIL
    return asyncio.run(
        events_command(
            settings,
            store,
            sys.stdout,
            sys.stderr,
            now=time.time(),
            limit=args.limit,
            mirror=args.mirror,
            as_json=args.json,
        )
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 up, got {text!r}")
    return value


def _state_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        help="without Redis: the directory `redirector serve` shares state in (default: the "
        "config's state_dir)",
    )


def _add_store_readers(sub: Any) -> None:
    """The commands that read the store the serving processes share: mirrors and events."""
    ms = sub.add_parser("mirrors", help="each mirror's state, read from the shared store")
    ms.add_argument("--config", help="TOML config naming the store (redis_url or state_dir)")
    _state_dir_option(ms)
    ms.set_defaults(func=cmd_mirrors)
    ev = sub.add_parser("events", help="the event log and availability, from the shared store")
    ev.add_argument("--config", help="TOML config naming the store (redis_url or state_dir)")
    _state_dir_option(ev)
    ev.add_argument("--mirror", help="only this mirror's events")
    ev.add_argument(
        "--limit", type=_positive_int, default=50, help="the last N events (default 50)"
    )
    ev.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    ev.set_defaults(func=cmd_events)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="redirector", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the HTTP server and the poller")
    s.add_argument("--config", help="TOML config (default: the example shipped in the package)")
    s.add_argument("--listen", help="override [redirector] listen, e.g. 127.0.0.1:8080")
    s.add_argument("--no-poll", action="store_true", help="serve only; another process polls")
    s.add_argument(
        "--workers",
        type=_positive_int,
        help="processes serving the port (SO_REUSEPORT); default: one per core",
    )
    s.add_argument(
        "--state-dir",
        help="without Redis: the directory the workers share state in, kept across restarts "
        "(default: the config's state_dir, else under $STATE_DIRECTORY or "
        "~/.local/state/redirector)",
    )
    s.set_defaults(func=cmd_serve)

    c = sub.add_parser("check-config", help="validate a config and print its mirrors")
    c.add_argument("file")
    c.add_argument("--long", action="store_true", help="every field of every mirror")
    c.set_defaults(func=cmd_check_config)

    g = sub.add_parser("locate", help="what the GeoIP database says of an address")
    g.add_argument("ip")
    g.add_argument("--config", help="TOML config whose geoip_db to use")
    g.add_argument("--db", help="an MMDB file (overrides the config)")
    g.set_defaults(func=cmd_locate)

    _add_store_readers(sub)
    cm = sub.add_parser("check-mirror", help="check a candidate mirror before it joins")
    cm.add_argument("url", help="the base URL of its smeserver tree")
    cm.add_argument("--master", help="the master tree to compare with (default: the config's)")
    cm.add_argument("--config", help="take master, master_trace, max_lag, probe_timeout from it")
    cm.add_argument("--mirror", help="a mirror of --config: take its trace_name and exclude")
    cm.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    cm.add_argument(
        "--trace-name",
        type=_trace_arg,
        help="its ftpsync MIRRORNAME (default: its _hierarchy or _traces, else the URL host)",
    )
    cm.add_argument("--exclude", action="append", default=[], type=_subtree_arg,
                    metavar="SUBTREE", help="a subtree it leaves out (repeatable)")  # fmt: skip
    cm.add_argument(
        "--symlink-path",
        type=_path_arg,
        help="a symlink of the master tree to probe (default releases/testing/11/)",
    )
    cm.add_argument(
        "--repomd",
        action="append",
        default=[],
        type=_path_arg,
        metavar="PATH",
        help="a repodata/repomd.xml to compare (repeatable, at most 3)",
    )
    cm.add_argument("--ca-file", help="also trust the CA certificates in this PEM file")
    cm.add_argument("--timeout", type=_duration_arg, help="per request (default 10s)")
    cm.add_argument(
        "--slow",
        type=_duration_arg,
        default=1.0,
        help="WARN above this median response time, FAIL above 5 times it",
    )
    cm.set_defaults(func=cmd_check_mirror)
    po = sub.add_parser("poll", help="run the poller alone (with the lease when using Redis)")
    po.add_argument("--config", help="TOML config (default: the example shipped in the package)")
    po.add_argument("--once", action="store_true", help="one pass, then a table of the mirrors")
    po.set_defaults(func=cmd_poll)
    ex = sub.add_parser("explain", help="where a client is sent for a path, and why")
    ex.add_argument("ip", help="the client's address")
    ex.add_argument("path", help="a URL, /smeserver/... path, or a path below the tree root")
    ex.add_argument("--config", help="TOML config whose store (redis_url or state_dir) to read")
    _state_dir_option(ex)
    ex.add_argument("--https", action="store_true", help="as an https request")
    ex.set_defaults(func=cmd_explain)
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
