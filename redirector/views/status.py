"""The network at a glance: status data from a snapshot and download stats, as JSON and HTML.

Pure: no aiohttp, no store, no clock; `now` comes in. `pages` serves what this builds at
``/mirrors`` (HTML), ``/mirrors.json`` (JSON, schema ``redirector/views/schema/mirrors-v1.json``)
and ``/health/ready``.

Other views add sections to the page without touching this module: a `Section` (an id, a
title and an HTML fragment the caller has escaped) is rendered after the downloads, in order;
`pages` gathers them from the providers listed under ``keys.STATUS_SECTIONS``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from functools import cache
from html import escape
from pathlib import Path
from typing import Any

from redirector.core import history
from redirector.core.condition import Condition, assess
from redirector.core.history import Day, Event, EventKind, HistoryData, LagSample, MirrorHistory
from redirector.core.humanize import ago, day, duration, rfc3339, when
from redirector.core.models import MasterState, Status
from redirector.core.selection import serves_ipv6
from redirector.snapshot import Snapshot
from redirector.stats import DownloadStats
from redirector.views.condition import classify, failure_note, lag_text

_HERE = Path(__file__).parent  # package data sits beside the modules

SCHEMA_VERSION = 1
SCHEMA_ID = "mirrors-v1"
SCHEMA_PATH = "/schema/mirrors-v1.json"  # where the server publishes the schema


# The order of the mirror table: what needs an operator first, so on a phone the problems are
# on the first screen and not 2,500 px down. Config order within one state.
PROBLEMS_FIRST = (
    Condition.DOWN,
    Condition.BROKEN,
    Condition.STALE,
    Condition.UNCHECKED,
    Condition.SYNCING,
    Condition.FRESH,
    Condition.DISABLED,
)

COLOURS = {
    Condition.FRESH: "#2e7d32",
    Condition.SYNCING: "#1e88e5",
    Condition.STALE: "#ef8f00",
    Condition.DOWN: "#c62828",
    Condition.BROKEN: "#8e24aa",
    Condition.UNCHECKED: "#9e9e9e",
    Condition.DISABLED: "#616161",
}


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
    state: Condition
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
    # From the store's history (core.history); empty before the first recorded pass.
    availability: Mapping[str, float | None] = dataclass_field(default_factory=dict)
    down_since: float | None = None  # out of service (down or broken) since; None: in service
    days: tuple[Day, ...] = ()  # the last 14 UTC days, oldest first
    lags: tuple[LagSample, ...] = ()  # lag per pass, oldest first


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
    events: tuple[Event, ...] = ()  # newest first, at most `EVENTS_SHOWN`
    history_error: str | None = None  # why the history could not be read
    site: str = ""  # the host the page is served at, for its header
    geo_notes: tuple[str, ...] = ()  # what is wrong with the GeoIP database, in words
    geo_credit: str | None = None  # the credit line its licence asks for (DB-IP Lite)

    def count(self, state: Condition) -> int:
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
    past: HistoryData | None = None,
    history_error: str | None = None,
    site: str = "",
    geo_notes: Sequence[str] = (),
    geo_credit: str | None = None,
) -> Report:
    """The whole report: one row per configured mirror, problems first (`PROBLEMS_FIRST`),
    config order within a state; `past` is the store's history, if it could be read."""
    verdicts = snap.repodata.mirrors if snap.repodata is not None else None
    kept = past.mirrors if past is not None else {}
    rows = []
    for c in snap.candidates:
        m, s = c.mirror, c.state
        state, reason = classify(c, now, max_lag)
        h = kept.get(m.name) or MirrorHistory(m.name)
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
                availability=history.windows(h, now),
                down_since=history.down_start(h) if m.enabled else None,
                days=history.strip(h, now),
                lags=h.lags,
            )
        )
    rows.sort(key=lambda r: PROBLEMS_FIRST.index(r.state))
    events = past.events[::-1][:EVENTS_SHOWN] if past is not None else ()
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
        events=events,
        history_error=history_error,
        site=site,
        geo_notes=tuple(geo_notes),
        geo_credit=geo_credit,
    )


EVENTS_SHOWN = 50


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
    config_error: str | None = None,
    config_watched: bool = False,
) -> Readiness:
    """What a load balancer needs: can this node serve, and what is wrong if anything.

    The rule: ready means "this node can send a client somewhere that works": a fresh mirror
    in its snapshot, or a master whose last check answered. Only when neither holds is it "not
    ready" (503). Everything else that is wrong but leaves the node serving is "degraded"
    (200) with the reason: a silent poller (no pass in 3 poll intervals), an unreachable
    store, a config file refused on reload. Those faults are shared by every node (there is
    one poller, one store, one config), so failing readiness on them would take the whole
    fleet out of the load balancer at once, while each node still serves its last snapshot;
    they belong in alerts, not in the balancer's decision. A node that has seen no pass at all
    knows no target and is not ready. `config_watched` adds the config check (a process whose
    config is not read from a file has nothing to reload).
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
            # outage's doing, reported once, under the store.
            ok = True
            reason += ", none since the store became unreachable"
        elif not ok:
            reason += (
                f", older than 3 intervals ({duration(limit)}): the poller is silent, "
                "serving the last snapshot"
            )
        checks["poller"] = {"ok": ok, "reason": reason, "age_seconds": round(age, 1)}
    if config_watched:
        checks["config"] = {
            "ok": config_error is None,
            "reason": (
                "the file in force"
                if config_error is None
                else f"reload refused, the last good config runs: {config_error}"
            ),
        }
    fresh = [
        c.mirror.name
        for c in snap.candidates
        if assess(c, now, max_lag).condition is Condition.FRESH
    ]
    master_up = master is not None and master.error is None
    if fresh:
        reason = f"{len(fresh)} fresh mirror{'s' if len(fresh) != 1 else ''}"
    elif master_up:
        reason = "no fresh mirror; clients go to the master, which answers"
    else:
        why = master.error if master is not None else "not checked yet"
        reason = f"no fresh mirror and the master is unreachable ({why})"
    checks["targets"] = {"ok": bool(fresh) or master_up, "reason": reason, "fresh": len(fresh)}
    # Without any pass the snapshot's states are nobody's findings this run: not ready.
    ready = checks["targets"]["ok"] and master is not None
    degraded = not all(c["ok"] for c in checks.values())
    status = "not ready" if not ready else "degraded" if degraded else "ready"
    return Readiness(ready, status, checks)


# --- formatting helpers --------------------------------------------------------------------


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
        "master_trace": rfc3339(r.master_date),
        "last_sync": rfc3339(r.last_sync),
        "last_check": rfc3339(r.last_check),
        "failures": r.failures,
        "excludes": list(r.excludes),
        "lacks": list(r.lacks),
        "covered": list(r.covered),
        "coverage_checked": rfc3339(r.coverage_checked),
        "coverage_note": r.coverage_note,
        "next_check": rfc3339(r.next_check),
        "repodata": None if r.repodata is None else dict(r.repodata),
        "redirects": {"hour": r.redirects_hour, "day": r.redirects_day},
        "share": {
            "hour": None if r.share_hour is None else round(r.share_hour, 4),
            "day": None if r.share_day is None else round(r.share_day, 4),
        },
        "availability": {k: _ratio(v) for k, v in r.availability.items()},
        "down_since": rfc3339(r.down_since),
        "days": [{"date": day(d.start), "up": _ratio(d.up)} for d in r.days],
    }


def _ratio(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def _event_json(e: Event) -> dict[str, Any]:
    return {
        "at": rfc3339(e.at),
        "kind": e.kind.value,
        "subject": e.subject,
        "detail": e.detail,
        "duration_seconds": None if e.duration is None else round(e.duration, 1),
    }


def to_json(report: Report) -> dict[str, Any]:
    """The `/mirrors.json` document; `redirector/views/schema/mirrors-v1.json` describes it."""
    d = report.downloads
    m = report.master
    return {
        "version": SCHEMA_VERSION,
        "schema": SCHEMA_PATH,
        "generated_at": rfc3339(report.generated_at),
        "max_lag_seconds": report.max_lag,
        "poll_interval_seconds": report.poll_interval,
        "summary": {
            "mirrors": len(report.mirrors),
            "enabled": report.enabled,
            "fresh": report.count(Condition.FRESH),
            "states": {s.value: report.count(s) for s in Condition},
        },
        "master": {
            "url": m.url,
            "state": m.state,
            "error": m.error,
            "last_check": rfc3339(m.last_check),
            "content_date": rfc3339(m.content_date),
            "changed_at": rfc3339(m.changed_at),
        },
        "store": {
            "kind": report.store_kind,
            "ok": report.store_error is None,
            "error": report.store_error,
        },
        "repodata_checked_at": rfc3339(report.repodata_checked_at),
        "mirrors": [_mirror_json(r) for r in report.mirrors],
        "events": [_event_json(e) for e in report.events],
        "history_error": report.history_error,
        "geoip": {"notes": list(report.geo_notes), "credit": report.geo_credit},
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
        "lists": _lists_json(d),
    }


def _lists_json(d: DownloadStats) -> dict[str, Any]:
    """Mirror lists and metalinks answered (yum and dnf): most of what SME Servers ask."""
    return {
        "hour": {"total": d.hour.lists, "first": dict(d.hour.listed_first)},
        "day": {"total": d.day.lists, "first": dict(d.day.listed_first)},
        "days": [
            {
                "date": day.date,
                "total": day.lists,
                "kinds": dict(day.list_kinds),
                "repos": dict(day.list_repos),
                "countries": dict(day.list_countries),
                "first": dict(day.listed_first),
            }
            for day in d.days
        ],
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
    for r in sorted(rows, key=lambda r: list(Condition).index(r.state)):
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
    return f'<time datetime="{rfc3339(ts)}" title="{rfc3339(ts)}">{escape(ago(ts, now))}</time>'


def _lag_cell(r: MirrorRow) -> str:
    text = escape(lag_text(r.lag))
    return f'<span class="muted">{text}</span>' if r.lag is None else text


def _strip(r: MirrorRow) -> str:
    """The last 14 days as a row of squares, one per UTC day, coloured by the time up."""
    cells = []
    for i, d in enumerate(r.days):
        if d.up is None:
            cls, words = "d-none", "not known"
        else:
            cls = "d-up" if d.up >= 0.999 else "d-part" if d.up >= 0.95 else "d-down"
            words = f"{d.up * 100:.1f} % up"
            if d.down_seconds >= 1:
                words += f", out of service {duration(d.down_seconds)}"
        up = "" if d.up is None else f' data-up="{d.up:.4f}"'
        cells.append(
            f'<rect class="day {cls}"{up} x="{i * 8}" y="0" width="7" height="14" rx="1.5">'
            f"<title>{day(d.start)}: {escape(words)}</title></rect>"
        )
    svg = (
        f'<svg class="strip" viewBox="0 0 {max(1, len(r.days)) * 8 - 1} 14" role="img" '
        f'aria-label="availability per day, last {len(r.days)} days" '
        f'xmlns="http://www.w3.org/2000/svg">{"".join(cells)}</svg>'
    )
    figures = " · ".join(
        f"{k} {'&ndash;' if v is None else f'{v * 100:.1f} %'}" for k, v in r.availability.items()
    )
    return f'{svg}<div class="avail">{figures}</div>'


def _sparkline(lags: Sequence[LagSample]) -> str:
    """The lag per pass as a line; gaps where it was unknown. Empty with fewer than 2 known."""
    known = [x for x in lags if x.lag is not None]
    if len(known) < 2:
        return ""
    t0, t1 = lags[0].at, lags[-1].at
    top = max(60.0, *(x.lag or 0.0 for x in known))  # a flat line for lags under a minute
    span = max(t1 - t0, 1.0)
    runs: list[list[str]] = [[]]
    for x in lags:
        if x.lag is None:
            runs.append([])
            continue
        runs[-1].append(f"{(x.at - t0) / span * 100:.1f},{18 - x.lag / top * 16:.1f}")
    paths = "".join(f"M{'L'.join(run)}" for run in runs if run)
    title = f"lag over the last {len(lags)} passes; highest {duration(top)}"
    return (
        '<svg class="spark" viewBox="0 0 100 20" preserveAspectRatio="none" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>"
        f'<path d="{paths}" fill="none" stroke="#0b5cad" stroke-width="1.5" '
        'vector-effect="non-scaling-stroke"/></svg>'
    )


def _down_since(r: MirrorRow, now: float) -> str:
    if r.down_since is None or r.state not in (Condition.DOWN, Condition.BROKEN):
        return ""
    return (
        f'<div class="down-since">out of service since <time datetime="{rfc3339(r.down_since)}">'
        f"{when(r.down_since)}</time> ({escape(duration(now - r.down_since))})</div>"
    )


def _row(r: MirrorRow, now: float, repo_checked: bool) -> str:
    url = r.https or r.http or ""
    ip6 = ' <span class="tag" title="reachable over IPv6">v6</span>' if r.ipv6 else ""
    tls = ' <span class="tag" title="has an https URL">https</span>' if r.https else ""
    note = failure_note(r.failures, r.next_check, r.state, now)
    failures = f" {note}" if note else ""
    cells = [
        ("Mirror", f'<a href="{escape(url)}">{escape(r.name)}</a>{tls}{ip6}'),
        ("Country", escape(r.country)),
        (
            "State",
            f'<span class="badge s-{r.state.value}">{r.state.value}</span>'
            f'<div class="reason">{escape(r.reason + failures)}</div>{_down_since(r, now)}',
        ),
        ("Lag", _lag_cell(r) + _sparkline(r.lags)),
        ("Last 14 days", _strip(r)),
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
    fresh = report.count(Condition.FRESH)
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
            f', content of <time datetime="{rfc3339(m.content_date)}">'
            f"{when(m.content_date)}</time>, current since {ago(m.changed_at, now)}"
        )
    store = ""
    if report.store_error is not None:
        store = (
            f'<p class="warn">State store unreachable, showing the last state read: '
            f"{escape(report.store_error)}</p>"
        )
    if report.history_error is not None:
        store += f'<p class="warn">History unavailable: {escape(report.history_error)}</p>'
    store += "".join(f'<p class="warn geo">{escape(n)}</p>' for n in report.geo_notes)
    return (
        f'<p class="summary"><strong id="fresh-count">{fresh} of {report.enabled}</strong> '
        f"mirrors fresh · {master}</p>{store}"
    )


_EVENT_WORDS = {
    EventKind.MIRROR_DOWN: "down",
    EventKind.MIRROR_UP: "up",
    EventKind.MASTER_PUBLISHED: "published",
    EventKind.CONFIG_RELOADED: "reloaded",
    EventKind.CONFIG_REFUSED: "refused",
}


def _events(report: Report) -> str:
    """The network's event log, newest first."""
    if not report.events:
        return '<section id="events"><h2>Events</h2><p class="muted">none yet</p></section>'
    now = report.generated_at
    rows = []
    for e in report.events:
        detail = e.detail
        if e.duration is not None:
            detail += f" after {duration(e.duration)}"
        rows.append(
            f'<tr class="ev-{e.kind.value}"><td>{_time_cell(e.at, now)}</td>'
            f'<td><span class="ev ev-{e.kind.value}">{_EVENT_WORDS[e.kind]}</span></td>'
            f"<td>{escape(e.subject or 'master')}</td><td>{escape(detail)}</td></tr>"
        )
    return (
        '<section id="events"><h2>Events</h2><table class="mini events">'
        f"<tr><th>when</th><th>what</th><th>who</th><th>detail</th></tr>{''.join(rows)}"
        "</table></section>"
    )


def _legend(report: Report) -> str:
    return "".join(
        f'<span class="legend-item"><span class="swatch s-{s.value}"></span>{s.value} '
        f"{report.count(s)}</span>"
        for s in Condition
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


def _lists(report: Report) -> str:
    d = report.downloads
    days = "".join(
        f"<tr><td>{day.date}</td><td class=num>{day.lists}</td>"
        f"<td class=num>{day.list_kinds.get('mirrorlist', 0)}</td>"
        f"<td class=num>{day.list_kinds.get('metalink', 0)}</td></tr>"
        for day in d.days
    )
    week = f"last {len(d.days)} days"
    return (
        '<section id="lists"><h2>Mirror lists (yum, dnf)</h2>'
        f'<p>Last hour: <strong id="ml-hour">{d.hour.lists}</strong> · last 24 h: '
        f"<strong>{d.day.lists}</strong></p>"
        f'<div class="cols"><div><h3>Per day (UTC)</h3><table class="mini">'
        f"<tr><th>day</th><th>total</th><th>mirrorlist</th><th>metalink</th></tr>{days}</table>"
        f"</div><div><h3>Repositories, {week}</h3>{_top(_sum(x.list_repos for x in d.days))}</div>"
        f"<div><h3>Client countries, {week}</h3>"
        f"{_top(_sum(x.list_countries for x in d.days))}</div>"
        f"<div><h3>Mirror listed first, {week}</h3>"
        f"{_top(_sum(x.listed_first for x in d.days))}</div>"
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
.strip{width:126px;height:16px;display:block}.spark{width:100px;height:20px;display:block}
.d-up{fill:#2e7d32}.d-part{fill:#ef8f00}.d-down{fill:#c62828}.d-none{fill:#e0e0e0}
.avail{color:var(--muted);font-size:.75rem}
.down-since{color:#c62828;font-size:.82rem}
.ev{display:inline-block;padding:0 6px;border-radius:8px;font-size:.78rem;color:#fff;
background:#616161}.ev.ev-mirror-down,.ev.ev-config-refused{background:#c62828}
.ev.ev-mirror-up,.ev.ev-config-reloaded{background:#2e7d32}
.ev.ev-master-published{background:#1e88e5}
.events td{vertical-align:top;overflow-wrap:anywhere}
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
    "Mirror", "Country", "State", "Lag", "Last 14 days", "Last complete sync", "Last check",
    "Subtrees", "Repodata", "Weight", "Share 1h", "Share 24h",
)  # fmt: skip


def render_html(
    report: Report, sections: Sequence[Section] = (), notices: Sequence[str] = ()
) -> str:
    """The whole status page: self-contained (inline CSS and SVG, no script, no CDN).

    `notices`: plain-text warnings for operators (a refused config), shown at the top.
    """
    now = report.generated_at
    warns = "".join(f'<p class="warn" role="alert">{escape(n)}</p>' for n in notices)
    repo_checked = report.repodata_checked_at is not None
    rows = "".join(_row(r, now, repo_checked) for r in report.mirrors)
    head = "".join(f"<th>{h}</th>" for h in HEADERS)
    extra = "".join(
        f'<section class="card" id="{escape(s.id)}"><h2>{escape(s.title)}</h2>{s.html}</section>'
        for s in sections
    )
    site = f"{escape(report.site)} · " if report.site else ""
    credit = ""
    if report.geo_credit:
        credit = f" <span class='geo-credit'>{escape(report.geo_credit)}</span>"
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
        f"<p>{site}state as of {when(now)} · "
        f"fresh means at most {duration(report.max_lag)} behind the master</p></header>"
        "<main>"
        f'<div class="card">{_summary(report)}{warns}</div>'
        f'<div class="card">{_map(report)}<div class="legend">{_legend(report)}</div></div>'
        f'<div class="card" style="padding:0;overflow-x:auto">'
        f'<table class="mirrors"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'
        f'<div class="card">{_events(report)}</div>'
        f'<div class="card">{_downloads(report)}</div>'
        f'<div class="card">{_lists(report)}</div>'
        f"{extra}"
        '<footer>Machine-readable: <a href="/mirrors.json">/mirrors.json</a> '
        f'(<a href="{SCHEMA_PATH}">schema</a>) · <a href="/metrics">/metrics</a> · '
        '<a href="/health/ready">/health/ready</a>. Why did a download go where it went? '
        f"Append <code>?mirrorlist</code> to its URL.{credit}</footer>"
        "</main></body></html>\n"
    )
