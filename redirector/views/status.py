"""The network at a glance: status data from a snapshot and download stats, as JSON and HTML.

Pure: no aiohttp, no store, no clock; `now` comes in. `pages` serves what this builds at
``/mirrors`` (HTML), ``/mirrors.json`` (JSON, schema ``redirector/views/schema/mirrors-v1.json``)
and ``/health/ready``.

Other views add sections to the page without touching this module: a `Section` (an id, a
title and an HTML fragment the caller has escaped) is rendered after the downloads, in order;
`pages` gathers them from the providers listed under ``keys.STATUS_SECTIONS``.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from html import escape
from pathlib import Path
from typing import Any

from redirector.core.models import MasterState, Status
from redirector.core.selection import Candidate, check, serves_ipv6
from redirector.snapshot import Snapshot
from redirector.stats import DownloadStats

_HERE = Path(__file__).parent  # package data sits beside the modules

SCHEMA_VERSION = 1
SCHEMA_ID = "mirrors-v1"
SCHEMA_PATH = "/schema/mirrors-v1.json"  # where the server publishes the schema


class State(enum.Enum):
    """What the status views call a mirror, worst news last in `ORDER`."""

    FRESH = "fresh"  # would be served: up, current within max_lag, checked within max_lag
    SYNCING = "syncing"  # an ftpsync run is in progress
    STALE = "stale"  # up, but too far behind the master (or not checked recently enough)
    DOWN = "down"
    BROKEN = "broken"  # answers, but with junk or inconsistent traces
    UNCHECKED = "unchecked"  # configured, not probed yet
    DISABLED = "disabled"  # switched off in the config


COLOURS = {
    State.FRESH: "#2e7d32",
    State.SYNCING: "#1e88e5",
    State.STALE: "#ef8f00",
    State.DOWN: "#c62828",
    State.BROKEN: "#8e24aa",
    State.UNCHECKED: "#9e9e9e",
    State.DISABLED: "#616161",
}


def classify(c: Candidate, now: float, max_lag: float) -> tuple[State, str]:
    """The state of one mirror and the reason, in words, for the views."""
    m, s = c.mirror, c.state
    if not m.enabled:
        return State.DISABLED, "disabled in the config"
    if s is None or s.status is Status.UNKNOWN:
        return State.UNCHECKED, "not checked yet"
    if s.status is Status.DOWN:
        return State.DOWN, s.error or "no reason given"
    if s.status is Status.BROKEN:
        return State.BROKEN, s.error or "no reason given"
    why = check(c, "", "http", False, now, max_lag)
    if s.status is Status.SYNCING:
        return State.SYNCING, why.detail if why is not None else "sync in progress, still served"
    if why is not None:
        return State.STALE, why.detail
    lag = s.lag(now)
    return State.FRESH, "current" if not lag else f"{duration(lag)} behind, within the limit"


# --- the data --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MirrorRow:
    """One mirror as the views show it."""

    name: str
    country: str
    latitude: float
    longitude: float
    http: str | None
    https: str | None
    ipv6: bool
    weight: int
    enabled: bool
    state: State
    reason: str
    status: str  # the poller's raw verdict: unknown, up, syncing, broken, down
    lag: float | None  # seconds behind the master; None: unknown
    master_date: float | None  # the master state it holds
    last_sync: float | None  # its own trace: its last complete sync
    last_check: float | None
    failures: int
    excludes: tuple[str, ...]  # by config
    lacks: tuple[str, ...]  # found missing by the poller
    covered: tuple[str, ...]  # found present by the poller's coverage probes
    coverage_checked: float | None  # when the coverage was last probed
    coverage_note: str | None  # why a subtree is missing, in words
    next_check: float | None  # a failing mirror is backed off until then
    repodata: Mapping[str, str] | None  # repo directory -> verdict; None: not checked yet
    redirects_hour: int
    redirects_day: int
    share_hour: float | None
    share_day: float | None


@dataclass(frozen=True, slots=True)
class MasterRow:
    url: str
    state: str  # "up", "down" or "unchecked"
    error: str | None
    last_check: float | None
    content_date: float | None  # the current master trace date
    changed_at: float | None  # when that content was first seen: "current since"


@dataclass(frozen=True, slots=True)
class Report:
    generated_at: float
    max_lag: float
    poll_interval: float
    mirrors: tuple[MirrorRow, ...]
    master: MasterRow
    store_kind: str
    store_error: str | None
    downloads: DownloadStats
    repodata_checked_at: float | None

    def count(self, state: State) -> int:
        return sum(1 for r in self.mirrors if r.state is state)

    @property
    def enabled(self) -> int:
        return sum(1 for r in self.mirrors if r.enabled)


def _master_row(url: str, master: MasterState | None) -> MasterRow:
    if master is None:
        return MasterRow(url, "unchecked", None, None, None, None)
    cur = master.current
    return MasterRow(
        url,
        "up" if master.error is None else "down",
        master.error,
        master.checked_at,
        cur.date if cur else None,
        cur.first_seen if cur else None,
    )


def build(
    snap: Snapshot,
    downloads: DownloadStats,
    *,
    now: float,
    max_lag: float,
    poll_interval: float,
    master_url: str,
    store_kind: str,
    store_error: str | None,
) -> Report:
    """The whole report: one row per configured mirror, in config order."""
    verdicts = snap.repodata.mirrors if snap.repodata is not None else None
    rows = []
    for c in snap.candidates:
        m, s = c.mirror, c.state
        state, reason = classify(c, now, max_lag)
        repo: Mapping[str, str] | None = None
        if verdicts is not None:
            repo = {d: v.value for d, v in sorted(verdicts.get(m.name, {}).items())}
        rows.append(
            MirrorRow(
                name=m.name,
                country=m.country,
                latitude=m.latitude,
                longitude=m.longitude,
                http=m.http,
                https=m.https,
                ipv6=serves_ipv6(m, s),
                weight=m.weight,
                enabled=m.enabled,
                state=state,
                reason=reason,
                status=s.status.value if s else "unknown",
                lag=s.lag(now) if s else None,
                master_date=s.master_date if s else None,
                last_sync=s.own_date if s else None,
                last_check=s.checked_at if s and s.status is not Status.UNKNOWN else None,
                failures=s.failures if s else 0,
                excludes=m.exclude,
                lacks=s.lacks if s else (),
                covered=s.covered if s else (),
                coverage_checked=s.coverage_at if s else None,
                coverage_note=s.coverage_note if s else None,
                next_check=s.retry_at if s else None,
                repodata=repo,
                redirects_hour=downloads.hour.mirrors.get(m.name, 0),
                redirects_day=downloads.day.mirrors.get(m.name, 0),
                share_hour=downloads.hour.share(m.name),
                share_day=downloads.day.share(m.name),
            )
        )
    return Report(
        generated_at=now,
        max_lag=max_lag,
        poll_interval=poll_interval,
        mirrors=tuple(rows),
        master=_master_row(master_url, snap.master),
        store_kind=store_kind,
        store_error=store_error,
        downloads=downloads,
        repodata_checked_at=snap.repodata.checked_at if snap.repodata is not None else None,
    )


# --- readiness -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    status: str  # "ready", "degraded" (ready, with a problem) or "not ready"
    checks: Mapping[str, Mapping[str, Any]]


def readiness(
    snap: Snapshot,
    *,
    now: float,
    max_lag: float,
    poll_interval: float,
    store_error: str | None,
) -> Readiness:
    """What a load balancer needs: may this process take traffic, and if not, why.

    Not ready when the poller's last pass (the master's last check, written every pass) is
    older than 3 poll intervals or missing, or when no mirror is fresh and the master's last
    check failed. An unreachable store only degrades: the last snapshot keeps serving, and
    an old pass then counts against no one (without the store nobody can poll).
    """
    checks: dict[str, dict[str, Any]] = {}
    checks["store"] = {
        "ok": store_error is None,
        "reason": "reachable" if store_error is None else f"unreachable: {store_error}",
    }
    master = snap.master
    limit = 3 * poll_interval
    if master is None:
        checks["poller"] = {"ok": False, "reason": "no poller pass recorded yet"}
    else:
        age = now - master.checked_at
        ok = age <= limit
        reason = f"last pass {duration(age)} ago"
        if not ok and store_error is not None:
            # Nobody can poll without the store (the lease lives there): an old pass is the
            # outage's doing, not this process's, and the last snapshot still serves. Taking
            # every process out of the load balancer would stop the front door for nothing.
            ok = True
            reason += ", none since the store became unreachable"
        elif not ok:
            reason += f", older than 3 intervals ({duration(limit)})"
        checks["poller"] = {"ok": ok, "reason": reason, "age_seconds": round(age, 1)}
    fresh = [c.mirror.name for c in snap.candidates if classify(c, now, max_lag)[0] is State.FRESH]
    master_up = master is not None and master.error is None
    if fresh:
        reason = f"{len(fresh)} fresh mirror{'s' if len(fresh) != 1 else ''}"
    elif master_up:
        reason = "no fresh mirror; clients go to the master, which answers"
    else:
        why = master.error if master is not None else "not checked yet"
        reason = f"no fresh mirror and the master is unreachable ({why})"
    checks["targets"] = {"ok": bool(fresh) or master_up, "reason": reason, "fresh": len(fresh)}
    ready = checks["poller"]["ok"] and checks["targets"]["ok"]
    status = "not ready" if not ready else "ready" if checks["store"]["ok"] else "degraded"
    return Readiness(ready, status, checks)


# --- formatting helpers --------------------------------------------------------------------


def iso(ts: float | None) -> str | None:
    """Unix time -> RFC 3339 UTC with a Z, whole seconds."""
    if ts is None:
        return None
    return datetime.fromtimestamp(round(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration(seconds: float) -> str:
    """A short human duration: 40 s, 12 min, 3 h 20 min, 4 d 2 h."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(s // 3600, 24)
    return f"{d} d {h} h" if h else f"{d} d"


def ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    delta = now - ts
    if delta < -1:
        return f"in {duration(-delta)}"
    return "just now" if delta < 1 else f"{duration(delta)} ago"


def _pct(share: float | None) -> str:
    if share is None:
        return "&ndash;"
    pct = share * 100
    return f"{pct:.0f} %" if pct >= 10 or pct == 0 else f"{pct:.1f} %"


# --- JSON ----------------------------------------------------------------------------------


def _mirror_json(r: MirrorRow) -> dict[str, Any]:
    return {
        "name": r.name,
        "country": r.country,
        "latitude": r.latitude,
        "longitude": r.longitude,
        "http": r.http,
        "https": r.https,
        "ipv6": r.ipv6,
        "weight": r.weight,
        "enabled": r.enabled,
        "state": r.state.value,
        "reason": r.reason,
        "status": r.status,
        "lag_seconds": None if r.lag is None else round(r.lag, 1),
        "master_trace": iso(r.master_date),
        "last_sync": iso(r.last_sync),
        "last_check": iso(r.last_check),
        "failures": r.failures,
        "excludes": list(r.excludes),
        "lacks": list(r.lacks),
        "covered": list(r.covered),
        "coverage_checked": iso(r.coverage_checked),
        "coverage_note": r.coverage_note,
        "next_check": iso(r.next_check),
        "repodata": None if r.repodata is None else dict(r.repodata),
        "redirects": {"hour": r.redirects_hour, "day": r.redirects_day},
        "share": {
            "hour": None if r.share_hour is None else round(r.share_hour, 4),
            "day": None if r.share_day is None else round(r.share_day, 4),
        },
    }


def to_json(report: Report) -> dict[str, Any]:
    """The `/mirrors.json` document; `redirector/views/schema/mirrors-v1.json` describes it."""
    d = report.downloads
    m = report.master
    return {
        "version": SCHEMA_VERSION,
        "schema": SCHEMA_PATH,
        "generated_at": iso(report.generated_at),
        "max_lag_seconds": report.max_lag,
        "poll_interval_seconds": report.poll_interval,
        "summary": {
            "mirrors": len(report.mirrors),
            "enabled": report.enabled,
            "fresh": report.count(State.FRESH),
            "states": {s.value: report.count(s) for s in State},
        },
        "master": {
            "url": m.url,
            "state": m.state,
            "error": m.error,
            "last_check": iso(m.last_check),
            "content_date": iso(m.content_date),
            "changed_at": iso(m.changed_at),
        },
        "store": {
            "kind": report.store_kind,
            "ok": report.store_error is None,
            "error": report.store_error,
        },
        "repodata_checked_at": iso(report.repodata_checked_at),
        "mirrors": [_mirror_json(r) for r in report.mirrors],
        "downloads": {
            "error": d.error,
            "hour": {
                "total": d.hour.total,
                "master": d.hour.master,
                "mirrors": dict(d.hour.mirrors),
            },
            "day": {
                "total": d.day.total,
                "master": d.day.master,
                "mirrors": dict(d.day.mirrors),
            },
            "days": [
                {
                    "date": day.date,
                    "total": day.total,
                    "master": day.master,
                    "mirrors": dict(day.mirrors),
                    "countries": dict(day.countries),
                    "subtrees": dict(day.subtrees),
                }
                for day in d.days
            ],
        },
    }


def dumps(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


@cache
def schema_text() -> str:
    """The JSON Schema of `/mirrors.json`, as shipped in the package."""
    return (_HERE / "schema" / "mirrors-v1.json").read_text("utf-8")


# --- HTML ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Section:
    """An extra part of the status page. `html` is a trusted fragment: escape what goes in."""

    id: str
    title: str
    html: str


@cache
def land_path(name: str = "land-110m") -> str:
    """Natural Earth land as SVG path data in degrees (see dev/world_path.py): the 1:110m
    world, or ``europe-50m``, 1:50m clipped to the inset."""
    return (_HERE / "data" / f"{name}.path").read_text("ascii").strip()


SectionProvider = Callable[[], Awaitable[Section | None]]
"""Builds one extra section per page view; None leaves it out this time."""

MAP_NORTH, MAP_SOUTH = 84, -60  # what the world map shows: Antarctica has no mirrors
# The inset, where most mirrors sit too close to tell apart on the world map: west, south,
# east, north in degrees (what europe-50m.path was clipped to), and the cosine of its middle
# latitude to undo the east-west stretch of the plain projection.
INSET = (-7.0, 42.0, 17.0, 57.0)
INSET_COS = 0.65
LABEL_SIZE = 0.62  # font size of inset labels, in degrees of latitude


def _dots(rows: Iterable[MirrorRow], radius: float, xscale: float = 1.0) -> str:
    out = []
    # Worst news drawn last, so a down mirror is never hidden under a fresh neighbour.
    for r in sorted(rows, key=lambda r: list(State).index(r.state)):
        title = escape(f"{r.name} ({r.country}): {r.state.value}: {r.reason}")
        out.append(
            f'<circle class="dot s-{r.state.value}" cx="{r.longitude * xscale:.2f}" '
            f'cy="{-r.latitude:.2f}" r="{radius}"><title>{title}</title></circle>'
        )
    return "".join(out)


def _labels(rows: Sequence[MirrorRow], radius: float, xscale: float) -> str:
    """Names beside their dots, each put where it overlaps no label placed before it."""
    placed: list[tuple[float, float, float, float]] = []
    out = []
    h = LABEL_SIZE
    for r in sorted(rows, key=lambda r: -r.latitude):
        x, y = r.longitude * xscale, -r.latitude
        w = 0.56 * h * len(r.name)
        gap = radius * 1.5
        # right, left, above right, below right: (text x, baseline y, anchor)
        options = [
            (x + gap, y + h * 0.35, "start"),
            (x - gap, y + h * 0.35, "end"),
            (x + gap * 0.5, y - gap, "start"),
            (x + gap * 0.5, y + gap + h * 0.7, "start"),
        ]
        for tx, ty, anchor in options:
            left = tx - w if anchor == "end" else tx
            box = (left, ty - h * 0.8, left + w, ty + h * 0.2)
            if not any(_overlap(box, b) for b in placed):
                break
        placed.append(box)
        out.append(
            f'<text class="label" x="{tx:.2f}" y="{ty:.2f}" text-anchor="{anchor}" '
            f'font-size="{h}">{escape(r.name)}</text>'
        )
    return "".join(out)


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _svg(view: str, label: str, body: str, cls: str = "map") -> str:
    return (
        f'<svg class="{cls}" viewBox="{view}" role="img" aria-label="{label}" '
        f'preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )


def _map(report: Report) -> str:
    """Equirectangular SVG maps (x = longitude, y = -latitude), a dot per mirror by state.

    The world map, and an inset of western Europe when two mirrors or more are in it.
    """
    height = MAP_NORTH - MAP_SOUTH
    grid = [f"M{lon},{-MAP_NORTH}V{-MAP_SOUTH}" for lon in range(-150, 180, 30)]
    grid += [f"M-180,{-lat}H180" for lat in range(-30, MAP_NORTH, 30)]
    west, south, east, north = INSET
    k = INSET_COS
    frame = (
        f'<rect class="frame" x="{west}" y="{-north}" width="{east - west}" '
        f'height="{north - south}"/>'
    )
    inside = [
        r for r in report.mirrors
        if west <= r.longitude <= east and south <= r.latitude <= north
    ]  # fmt: skip
    world = _svg(
        f"-180 {-MAP_NORTH} 360 {height}",
        "World map of the mirrors, coloured by state",
        f'<rect x="-180" y="{-MAP_NORTH}" width="360" height="{height}" class="sea"/>'
        f'<path class="grid" d="{"".join(grid)}"/>'
        f'<path class="land" d="{land_path()}"/>'
        + (frame if len(inside) >= 2 else "")
        + _dots(report.mirrors, 3.0),
    )
    if len(inside) < 2:
        return f'<div class="maps one">{world}</div>'
    inset = _svg(
        f"{west * k:.2f} {-north} {(east - west) * k:.2f} {north - south}",
        "Map of the mirrors in western Europe",
        f'<rect x="{west * k:.2f}" y="{-north}" width="{(east - west) * k:.2f}" '
        f'height="{north - south}" class="sea"/>'
        f'<path class="land" transform="scale({k},1)" d="{land_path("europe-50m")}"/>'
        + _dots(inside, 0.32, xscale=k)
        + _labels(inside, 0.32, xscale=k),
    )
    return f'<div class="maps">{world}{inset}</div>'


def _subtrees(r: MirrorRow, now: float) -> str:
    if not r.excludes and not r.lacks:
        text = "all"
    else:
        parts = [f"{escape(x)} <small>(config)</small>" for x in r.excludes]
        parts += [f"{escape(x)} <small>(missing)</small>" for x in r.lacks if x not in r.excludes]
        text = "all but " + ", ".join(parts)
    if r.coverage_checked is None:
        return text
    note = f"probed {ago(r.coverage_checked, now)}"
    if r.coverage_note:
        note += f": {r.coverage_note}"
    return f'<span title="{escape(note)}">{text}</span>'


def _repodata(r: MirrorRow, checked: bool) -> str:
    if r.repodata is None:
        return '<span class="muted">not checked yet</span>' if checked else "&ndash;"
    if not r.repodata:
        return '<span class="muted">none checked</span>'
    counts: dict[str, int] = {}
    for v in r.repodata.values():
        counts[v] = counts.get(v, 0) + 1
    summary = ", ".join(f"{n} {escape(v)}" for v, n in sorted(counts.items()))
    bad = [(d, v) for d, v in r.repodata.items() if v not in ("current", "alternate")]
    if not bad:
        return f'<span class="ok">{summary}</span>'
    items = "".join(f"<li>{escape(d)}: {escape(v)}</li>" for d, v in bad)
    return f'<details><summary class="bad">{summary}</summary><ul>{items}</ul></details>'


def _time_cell(ts: float | None, now: float) -> str:
    if ts is None:
        return '<span class="muted">never</span>'
    return f'<time datetime="{iso(ts)}" title="{iso(ts)}">{escape(ago(ts, now))}</time>'


def _lag_cell(r: MirrorRow) -> str:
    if r.lag is None:
        return '<span class="muted">unknown</span>'
    return "current" if r.lag == 0 else escape(duration(r.lag))


def _row(r: MirrorRow, now: float, repo_checked: bool) -> str:
    url = r.https or r.http or ""
    ip6 = ' <span class="tag" title="reachable over IPv6">v6</span>' if r.ipv6 else ""
    tls = ' <span class="tag" title="has an https URL">https</span>' if r.https else ""
    failures = f" ({r.failures} failed checks)" if r.failures > 1 else ""
    if r.next_check is not None and r.next_check > now and r.state in (State.DOWN, State.BROKEN):
        failures += f"; next try {ago(r.next_check, now)}"
    cells = [
        ("Mirror", f'<a href="{escape(url)}">{escape(r.name)}</a>{tls}{ip6}'),
        ("Country", escape(r.country)),
        (
            "State",
            f'<span class="badge s-{r.state.value}">{r.state.value}</span>'
            f'<div class="reason">{escape(r.reason + failures)}</div>',
        ),
        ("Lag", _lag_cell(r)),
        ("Last complete sync", _time_cell(r.last_sync, now)),
        ("Last check", _time_cell(r.last_check, now)),
        ("Subtrees", _subtrees(r, now)),
        ("Repodata", _repodata(r, repo_checked)),
        ("Weight", str(r.weight)),
        ("Share 1h", f'<span title="{r.redirects_hour} redirects">{_pct(r.share_hour)}</span>'),
        ("Share 24h", f'<span title="{r.redirects_day} redirects">{_pct(r.share_day)}</span>'),
    ]
    # One wrapper per cell: on phones the cell is a two-column grid (label, value).
    tds = "".join(f'<td data-label="{label}"><div>{html}</div></td>' for label, html in cells)
    return f'<tr id="mirror-{escape(r.name)}" data-state="{r.state.value}">{tds}</tr>'


def _summary(report: Report) -> str:
    now = report.generated_at
    fresh = report.count(State.FRESH)
    m = report.master
    if m.state == "unchecked":
        master = "master not checked yet"
    elif m.state == "down":
        master = (
            f'master <span class="badge s-down">down</span> {escape(m.error or "")} '
            f"(checked {escape(ago(m.last_check, now))})"
        )
    else:
        master = f'master <span class="badge s-fresh">up</span> (checked {ago(m.last_check, now)})'
    if m.content_date is not None:
        master += (
            f', content of <time datetime="{iso(m.content_date)}">'
            f"{_short_time(m.content_date)}</time>, current since {ago(m.changed_at, now)}"
        )
    store = ""
    if report.store_error is not None:
        store = (
            f'<p class="warn">State store unreachable, showing the last state read: '
            f"{escape(report.store_error)}</p>"
        )
    return (
        f'<p class="summary"><strong id="fresh-count">{fresh} of {report.enabled}</strong> '
        f"mirrors fresh · {master}</p>{store}"
    )


def _short_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%d %b %Y %H:%M UTC")


def _legend(report: Report) -> str:
    return "".join(
        f'<span class="legend-item"><span class="swatch s-{s.value}"></span>{s.value} '
        f"{report.count(s)}</span>"
        for s in State
    )


def _top(counts: Mapping[str, int], limit: int = 10) -> str:
    if not counts:
        return '<p class="muted">none yet</p>'
    rows = "".join(
        f"<tr><td>{escape(k)}</td><td class=num>{n}</td></tr>"
        for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    )
    return f'<table class="mini">{rows}</table>'


def _sum(maps: Iterable[Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in maps:
        for k, n in m.items():
            out[k] = out.get(k, 0) + n
    return out


def _downloads(report: Report) -> str:
    d = report.downloads
    err = f'<p class="warn">{escape(d.error)}</p>' if d.error else ""
    days = "".join(
        f"<tr><td>{day.date}</td><td class=num>{day.total}</td>"
        f"<td class=num>{day.total - day.master}</td><td class=num>{day.master}</td></tr>"
        for day in d.days
    )
    week = f"last {len(d.days)} days"
    return (
        f'<section id="downloads"><h2>Downloads</h2>{err}'
        f'<p>Last hour: <strong id="dl-hour">{d.hour.total}</strong> '
        f"({d.hour.master} to the master) · last 24 h: <strong>{d.day.total}</strong> "
        f"({d.day.master} to the master)</p>"
        f'<div class="cols"><div><h3>Per day (UTC)</h3><table class="mini">'
        f"<tr><th>day</th><th>total</th><th>mirrors</th><th>master</th></tr>{days}</table></div>"
        f"<div><h3>Client countries, {week}</h3>{_top(_sum(x.countries for x in d.days))}</div>"
        f"<div><h3>Subtrees, {week}</h3>{_top(_sum(x.subtrees for x in d.days))}</div>"
        f"<div><h3>Mirrors, {week}</h3>{_top(_sum(x.mirrors for x in d.days))}</div>"
        f"</div></section>"
    )


CSS = """
:root{--fg:#1d2228;--muted:#6b7480;--bg:#f6f7f9;--card:#fff;--line:#e3e6ea;--accent:#0b5cad}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
header{background:#17324d;color:#fff;padding:14px 20px}
header h1{margin:0;font-size:1.35rem;font-weight:600}
header p{margin:2px 0 0;color:#c9d6e3;font-size:.9rem}
main{max-width:1280px;margin:0 auto;padding:12px 16px 32px}
a{color:var(--accent)}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 14px;
margin:12px 0}
.summary{margin:0;font-size:1.02rem}
.warn{background:#fff4e5;border:1px solid #f5c27a;border-radius:6px;padding:6px 10px}
.maps{display:grid;grid-template-columns:minmax(0,2.3fr) minmax(0,1fr);gap:10px;
align-items:start}.maps.one{grid-template-columns:1fr}
.map{width:100%;height:auto;display:block;border-radius:6px}
.sea{fill:#dfeaf3}.land{fill:#f4f1ea;stroke:#b9b3a5;stroke-width:.6px}
.grid{fill:none;stroke:#c9d8e6;stroke-width:.6px}
.land,.grid,.dot{vector-effect:non-scaling-stroke}
.dot{stroke:#fff;stroke-width:1.5px}
.label{fill:#1d2228;paint-order:stroke;stroke:#fff;stroke-width:2.5px;stroke-linejoin:round;
vector-effect:non-scaling-stroke;font-weight:600}
.frame{fill:none;stroke:#17324d;stroke-width:1px;stroke-dasharray:3 2;
vector-effect:non-scaling-stroke}
.legend{display:flex;flex-wrap:wrap;gap:6px 14px;margin-top:8px;font-size:.9rem}
.swatch{display:inline-block;width:11px;height:11px;border-radius:50%;margin-right:5px;
vertical-align:-1px}
table.mirrors{width:100%;border-collapse:collapse;background:var(--card)}
.mirrors th,.mirrors td{padding:7px 8px;border-bottom:1px solid var(--line);text-align:left;
vertical-align:top}
.mirrors th{font-size:.78rem;text-transform:uppercase;letter-spacing:.03em;color:var(--muted);
background:#fafbfc;position:sticky;top:0}
.mirrors tr:hover td{background:#fafcff}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:.8rem;
font-weight:600}
.reason{color:var(--muted);font-size:.82rem;max-width:22em;overflow-wrap:anywhere}
.tag{font-size:.7rem;border:1px solid var(--line);border-radius:4px;padding:0 3px;
color:var(--muted)}
.muted{color:var(--muted)}.ok{color:#2e7d32}.bad{color:#c62828;cursor:pointer}
.num{text-align:right;font-variant-numeric:tabular-nums}
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(220px,1fr));gap:4px 20px}
table.mini{border-collapse:collapse;font-size:.9rem}
.mini td,.mini th{padding:2px 10px 2px 0;text-align:left}
h2{font-size:1.1rem;margin:4px 0 8px}h3{font-size:.92rem;margin:8px 0 4px;color:var(--muted)}
footer{color:var(--muted);font-size:.85rem;margin-top:18px}
details ul{margin:4px 0;padding-left:18px;font-size:.82rem}
small{color:var(--muted)}
@media (max-width:820px){
 main{padding:8px}
 .maps{grid-template-columns:1fr}
 table.mirrors thead{display:none}
 table.mirrors,.mirrors tbody,.mirrors tr,.mirrors td{display:block;width:100%}
 .mirrors tr{border:1px solid var(--line);border-radius:8px;margin:0 0 10px;padding:4px 0;
 background:var(--card)}
 .mirrors td{border:0;padding:3px 12px;display:grid;grid-template-columns:9.5em 1fr;gap:8px}
 .mirrors td::before{content:attr(data-label);color:var(--muted);font-size:.8rem}
 .mirrors td:first-child{font-size:1.05rem;font-weight:600}
}
""" + "".join(f".s-{s.value}{{background:{c};fill:{c}}}" for s, c in COLOURS.items())

HEADERS = (
    "Mirror", "Country", "State", "Lag", "Last complete sync", "Last check", "Subtrees",
    "Repodata", "Weight", "Share 1h", "Share 24h",
)  # fmt: skip


def render_html(report: Report, sections: Sequence[Section] = ()) -> str:
    """The whole status page: self-contained (inline CSS and SVG, no script, no CDN)."""
    now = report.generated_at
    repo_checked = report.repodata_checked_at is not None
    rows = "".join(_row(r, now, repo_checked) for r in report.mirrors)
    head = "".join(f"<th>{h}</th>" for h in HEADERS)
    extra = "".join(
        f'<section class="card" id="{escape(s.id)}"><h2>{escape(s.title)}</h2>{s.html}</section>'
        for s in sections
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta http-equiv="refresh" content="60">'
        "<title>SME Server mirrors: status</title>"
        f"<style>{CSS}</style>"
        '<link rel="alternate" type="application/json" href="/mirrors.json">'
        "</head><body>"
        "<header><h1>SME Server download mirrors</h1>"
        f"<p>mirror.contribs.org · state as of {_short_time(now)} · "
        f"fresh means at most {duration(report.max_lag)} behind the master</p></header>"
        "<main>"
        f'<div class="card">{_summary(report)}</div>'
        f'<div class="card">{_map(report)}<div class="legend">{_legend(report)}</div></div>'
        f'<div class="card" style="padding:0;overflow-x:auto">'
        f'<table class="mirrors"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'
        f'<div class="card">{_downloads(report)}</div>'
        f"{extra}"
        '<footer>Machine-readable: <a href="/mirrors.json">/mirrors.json</a> '
        f'(<a href="{SCHEMA_PATH}">schema</a>) · <a href="/metrics">/metrics</a> · '
        '<a href="/health/ready">/health/ready</a>. Why did a download go where it went? '
        "Append <code>?mirrorlist</code> to its URL.</footer>"
        "</main></body></html>\n"
    )
