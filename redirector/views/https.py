"""The https balance: where https clients go from each part of the world, beside http clients.

Pure: the snapshot's candidates and the policy in, a `Balance` out, rendered as a status page
section. Few mirrors serve https, so an https download from Sydney may cross the world to
Europe (or go to the master, under https_policy "master") while http stays close; this shows
it for a fixed set of places, decided by `selection.select` exactly as a request from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from redirector.core.models import Location
from redirector.core.selection import Candidate, Decision, Policy, Request, check, select

# One or two large cities per inhabited continent: where the clients are.
PLACES: tuple[tuple[str, Location], ...] = (
    ("New York", Location("US", "NA", 40.71, -74.01)),
    ("Los Angeles", Location("US", "NA", 34.05, -118.24)),
    ("São Paulo", Location("BR", "SA", -23.55, -46.63)),
    ("London", Location("GB", "EU", 51.51, -0.13)),
    ("Frankfurt", Location("DE", "EU", 50.11, 8.68)),
    ("Lagos", Location("NG", "AF", 6.52, 3.38)),
    ("Johannesburg", Location("ZA", "AF", -26.20, 28.05)),
    ("Mumbai", Location("IN", "AS", 19.08, 72.88)),
    ("Singapore", Location("SG", "AS", 1.35, 103.82)),
    ("Tokyo", Location("JP", "AS", 35.68, 139.69)),
    ("Sydney", Location("AU", "OC", -33.87, 151.21)),
)
PATH = "releases/"  # a path every mirror carries: the balance is about schemes, not subtrees


@dataclass(frozen=True, slots=True)
class Target:
    """Where one kind of client from one place goes: a mirror and how far, or the master."""

    mirror: str | None  # None: the master
    distance_km: float | None


@dataclass(frozen=True, slots=True)
class Row:
    place: str
    country: str
    https: Target
    http: Target


@dataclass(frozen=True, slots=True)
class Balance:
    fresh: int  # mirrors that serve at all now
    fresh_https: int  # of those, with an https URL
    policy: str  # https_policy
    rows: tuple[Row, ...]


def _target(d: Decision) -> Target:
    chosen = d.chosen
    if chosen is None:
        return Target(None, None)
    return Target(chosen.mirror.name, chosen.distance_km)


def balance(
    candidates: Sequence[Candidate], now: float, policy: Policy, policy_name: str
) -> Balance:
    """Where https and http clients from each of `PLACES` go now."""
    serving = [c for c in candidates if check(c, "", "http", False, now, policy.max_lag) is None]
    rows = []
    for name, loc in PLACES:
        key = name.encode()
        https = select(candidates, Request(PATH, "https", False, loc, key), now, policy)
        http = select(candidates, Request(PATH, "http", False, loc, key), now, policy)
        rows.append(Row(name, loc.country or "", _target(https), _target(http)))
    return Balance(
        fresh=len(serving),
        fresh_https=sum(1 for c in serving if c.mirror.https is not None),
        policy=policy_name,
        rows=tuple(rows),
    )


def _cell(t: Target) -> str:
    if t.mirror is None:
        return "<td>the master</td><td class=num>&ndash;</td>"
    km = "&ndash;" if t.distance_km is None else f"{t.distance_km:,.0f}"
    return f"<td>{escape(t.mirror)}</td><td class=num>{km}</td>"


def _worse(r: Row) -> bool:
    """An https client from there goes to the master, or farther than an http one."""
    if r.https.mirror is None:
        return r.http.mirror is not None
    return (r.https.distance_km or 0.0) > (r.http.distance_km or 0.0)


def render_html(b: Balance) -> str:
    """The status page section: a summary line and one row per place."""
    rows = "".join(
        f'<tr data-place="{escape(r.place)}"><td>{escape(r.place)} ({escape(r.country)})</td>'
        f"{_cell(r.https)}{_cell(r.http)}</tr>"
        for r in b.rows
    )
    farther = sum(1 for r in b.rows if _worse(r))
    return (
        f"<p>{b.fresh_https} of {b.fresh} serving mirrors have https; https_policy is "
        f'"{escape(b.policy)}". From {farther} of {len(b.rows)} places an https download goes'
        " farther than an http one (or to the master).</p>"
        "<table><thead><tr><th>Client near</th><th>https goes to</th><th>km</th>"
        f"<th>http goes to</th><th>km</th></tr></thead><tbody>{rows}</tbody></table>"
    )
