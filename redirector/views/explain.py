"""Why a client goes where it goes: the `?mirrorlist` views and `redirector explain`'s text.

Pure: a `Routed` decision (from the router) and the snapshot's candidates in, an `Explanation`
out, rendered as JSON, HTML or text. Every configured mirror appears once: the eligible ones
in rank order with why they rank there, then the rejected ones nearest first with the
`selection.Reason` that ruled them out.

``?mirrorlist`` after any path under the tree shows the HTML view; ``?mirrorlist&json``
(also ``?mirrorlist=json``) or an ``Accept`` header asking for ``application/json`` and not
``text/html`` gives the JSON one.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from html import escape
from typing import Any

from redirector.core.condition import assess
from redirector.core.humanize import table
from redirector.core.selection import Candidate, Policy, distance_km, tier_limit
from redirector.router import Routed
from redirector.views.condition import reason_text


def wants_mirrorlist(query: str) -> bool:
    """True when the raw query names `mirrorlist` (bare, empty or with a value)."""
    return any(p.partition("=")[0] == "mirrorlist" for p in query.split("&"))


def wants_json(query: str, accept: str | None) -> bool:
    """JSON when the query says `json` (`&json` or `mirrorlist=json`) or Accept asks for it."""
    for p in query.split("&"):
        name, _, value = p.partition("=")
        if name == "json" or (name == "mirrorlist" and value == "json"):
            return True
    return prefers_json(accept)


def prefers_json(accept: str | None) -> bool:
    """An Accept header naming application/json and not text/html (browsers send the latter)."""
    if not accept:
        return False
    a = accept.lower()
    return "application/json" in a and "text/html" not in a


@dataclass(frozen=True, slots=True)
class Entry:
    """One mirror in the explanation."""

    name: str
    country: str
    weight: int
    rank: int | None  # 1 for the chosen mirror; None when rejected
    distance_km: float | None  # None without a client location
    tier: bool  # in the nearest tier (spread by weight)
    url: str | None  # where this request would go on it; None when rejected
    reason: str | None  # the selection.Reason's value, for rejected mirrors
    why: str  # the whole story in words
    condition: str | None = None  # the mirror's `core.condition.Condition` value
    rule: str | None = None  # the rule that put it ahead: "netblock ...", "same AS ...", ...


@dataclass(frozen=True, slots=True)
class Explanation:
    path: str
    client_ip: str | None
    scheme: str
    ipv6: bool
    network: str | None  # the /24 or /48 whose hash spreads this client
    asn: int | None  # its autonomous system, from the ASN database
    country: str | None
    continent: str | None
    latitude: float | None
    longitude: float | None
    location_note: str  # how the location was found, or why there is none
    target: str
    fallback: bool
    nearest_km: float | None
    tier_limit_km: float | None
    entries: tuple[Entry, ...]
    credit: str | None = None  # the GeoIP database's licence credit (DB-IP Lite), if any


def _network(routed: Routed) -> str | None:
    ip = routed.client.ip
    if ip is None:
        return None
    bits = 24 if ip.version == 4 else 48  # as clientip.network_key cuts it
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


def _networked(rule: str | None) -> bool:
    """A rank given by a network rule (selection.network_rule's words), not by distance."""
    return rule is not None and rule.startswith(("netblock ", "same AS "))


def explain(
    routed: Routed,
    candidates: Sequence[Candidate],
    policy: Policy,
    *,
    now: float,
    geo_note: str | None = None,
    credit: str | None = None,
) -> Explanation:
    """The story of one decision made at `now`. `geo_note` says why there is no location (no
    database...); `credit` is what the GeoIP database's licence asks to show beside its
    results."""
    loc = routed.location
    decision = routed.decision
    ranked = decision.ranked
    # The tier is measured from the nearest mirror outside the client's networks.
    by_distance = [r for r in ranked if r.distance_km is not None and not _networked(r.rule)]
    nearest = min((r.distance_km for r in by_distance if r.distance_km is not None), default=None)
    limit = None if nearest is None else tier_limit(nearest, policy)
    networked = sum(1 for r in ranked if _networked(r.rule))
    tier_size = sum(1 for r in ranked if r.tier) - networked

    entries: list[Entry] = []
    for i, r in enumerate(ranked, start=1):
        if _networked(r.rule):
            why = (
                f"{r.rule}: your network is its own, so it goes first; spread by weight among "
                f"{networked} such mirror{'s' if networked != 1 else ''}"
            )
        elif r.tier and loc is None:
            why = f"no client location: spread by weight among all {tier_size} eligible mirrors"
        elif r.tier:
            why = (
                f"in the nearest tier (within {limit:,.0f} km): spread by weight among "
                f"{tier_size} mirror{'s' if tier_size != 1 else ''}"
            )
        else:
            why = f"outside the nearest tier (beyond {limit:,.0f} km): ordered by distance"
        if r.rule is not None and not _networked(r.rule):
            why += f"; {r.rule}: ahead of the others in the tier"
        why = ("chosen: " if i == 1 else f"alternative #{i - 1}: ") + why
        entries.append(
            Entry(r.mirror.name, r.mirror.country, r.mirror.weight, i, r.distance_km, r.tier,
                  r.base + routed.path, None, why, rule=r.rule)
        )  # fmt: skip

    def dist(lat: float, lon: float) -> float | None:
        if loc is None:
            return None
        return distance_km(loc.latitude, loc.longitude, lat, lon)

    rejected = [(rej, dist(rej.mirror.latitude, rej.mirror.longitude)) for rej in decision.rejected]
    rejected.sort(key=lambda x: (x[1] if x[1] is not None else 0.0, x[0].mirror.name))
    for rej, d in rejected:
        m = rej.mirror
        entries.append(
            Entry(m.name, m.country, m.weight, None, d, False, None, rej.reason.value,
                  f"rejected: {reason_text(rej, now)}")
        )  # fmt: skip

    # Mirrors the decision never saw (a config reload between the two): listed, not judged.
    by_name = {c.mirror.name: c for c in candidates}
    entries = [
        e
        if e.name not in by_name
        else replace(e, condition=assess(by_name[e.name], now, policy.max_lag).condition.value)
        for e in entries
    ]
    seen = {e.name for e in entries}
    for c in candidates:
        if c.mirror.name not in seen:
            m = c.mirror
            entries.append(
                Entry(m.name, m.country, m.weight, None, dist(m.latitude, m.longitude), False,
                      None, None, "not considered: configured after this decision")
            )  # fmt: skip

    if loc is not None:
        note = "from the GeoIP database"
    elif geo_note:
        note = geo_note
    elif routed.client.ip is None:
        note = "no client address"
    else:
        note = "not in the GeoIP database (private, reserved or unknown address)"
    ip = routed.client.ip
    return Explanation(
        path=routed.path,
        client_ip=None if ip is None else str(ip),
        scheme=routed.client.scheme,
        ipv6=ip is not None and ip.version == 6,
        network=_network(routed),
        asn=routed.asn,
        country=loc.country if loc else None,
        continent=loc.continent if loc else None,
        latitude=loc.latitude if loc else None,
        longitude=loc.longitude if loc else None,
        location_note=note,
        target=routed.target,
        fallback=routed.fallback,
        nearest_km=nearest,
        tier_limit_km=limit,
        entries=tuple(entries),
        credit=credit,
    )


# --- renderings ----------------------------------------------------------------------------


def _km(d: float | None) -> float | None:
    return None if d is None else round(d, 1)


def to_json(e: Explanation) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": 1,
        "path": e.path,
        "client": {
            "ip": e.client_ip,
            "scheme": e.scheme,
            "ipv6": e.ipv6,
            "network": e.network,
            "location": None
            if e.latitude is None
            else {
                "country": e.country,
                "continent": e.continent,
                "latitude": e.latitude,
                "longitude": e.longitude,
            },
            "location_note": e.location_note,
        },
        "target": e.target,
        "outcome": "master" if e.fallback else "mirror",
        "nearest_km": _km(e.nearest_km),
        "tier_limit_km": _km(e.tier_limit_km),
        "geoip_credit": e.credit,
        "mirrors": [
            {
                "name": x.name,
                "country": x.country,
                "weight": x.weight,
                "rank": x.rank,
                "eligible": x.rank is not None,
                "distance_km": _km(x.distance_km),
                "tier": x.tier,
                "rule": x.rule,
                "url": x.url,
                "reason": x.reason,
                "condition": x.condition,
                "why": x.why,
            }
            for x in e.entries
        ],
    }
    if e.asn is not None:  # only when an ASN database knows it: the shape stays otherwise
        doc["client"]["asn"] = e.asn
    return doc


def dumps(e: Explanation) -> str:
    return json.dumps(to_json(e), indent=2, ensure_ascii=False) + "\n"


def _where(e: Explanation) -> str:
    if e.latitude is None or e.longitude is None:
        return f"no location ({e.location_note})"
    return (
        f"{e.country or '??'} ({e.continent or '??'}), "
        f"{e.latitude:.2f}, {e.longitude:.2f} ({e.location_note})"
    )


def render_text(e: Explanation) -> str:
    """The explanation for a terminal: what `redirector explain` prints."""
    v = "IPv6" if e.ipv6 else "IPv4"
    lines = [
        f"path:     {e.path or '(tree root)'}",
        f"client:   {e.client_ip or '(none)'} over {e.scheme}, {v}, network {e.network or '-'}"
        + (f", AS {e.asn}" if e.asn is not None else ""),
        f"location: {_where(e)}",
        f"target:   {e.target}" + ("  (the master: no mirror is eligible)" if e.fallback else ""),
    ]
    if e.tier_limit_km is not None and e.nearest_km is not None:
        lines.append(
            f"tier:     nearest eligible mirror {e.nearest_km:,.0f} km away; "
            f"mirrors within {e.tier_limit_km:,.0f} km count as equally close"
        )
    lines.append("")
    rows = [("RANK", "MIRROR", "CC", "KM", "WEIGHT", "STATE", "WHY")]
    for x in e.entries:
        km = "-" if x.distance_km is None else f"{x.distance_km:,.0f}"
        rank = str(x.rank) if x.rank else "-"
        rows.append((rank, x.name, x.country, km, str(x.weight), x.condition or "-", x.why))
    lines.append(table(rows))
    if e.credit:
        lines.append(e.credit)
    return "\n".join(lines) + "\n"


_CSS = """
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2228;
background:#f6f7f9}
header{background:#17324d;color:#fff;padding:12px 18px}header h1{margin:0;font-size:1.2rem}
main{max-width:1100px;margin:0 auto;padding:10px 14px 28px}
dl{display:grid;grid-template-columns:8em 1fr;gap:3px 12px;background:#fff;padding:12px;
border:1px solid #e3e6ea;border-radius:8px}dt{color:#6b7480}dd{margin:0;overflow-wrap:anywhere}
table{width:100%;border-collapse:collapse;background:#fff;margin-top:12px}
th,td{padding:6px 8px;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}
th{font-size:.78rem;text-transform:uppercase;color:#6b7480}
tr.chosen td{background:#e8f5e9;font-weight:600}tr.rejected td{color:#6b7480}
.num{text-align:right}code{overflow-wrap:anywhere}a{color:#0b5cad}
td a,td small{overflow-wrap:anywhere;word-break:break-word}.credit{color:#6b7480}
@media (max-width:700px){table,tbody,tr,td{display:block}thead{display:none}
tr{border:1px solid #e3e6ea;border-radius:8px;margin:8px 0}
td{border:0;padding:2px 10px;display:grid;grid-template-columns:5.5em minmax(0,1fr);gap:8px}
td.num{text-align:left}td::before{content:attr(data-label);color:#6b7480;font-size:.8rem}}
"""


def render_html(e: Explanation) -> str:
    """The explanation as a self-contained page."""
    rows = []
    for x in e.entries:
        cls = "chosen" if x.rank == 1 else "eligible" if x.rank else "rejected"
        km = "&ndash;" if x.distance_km is None else f"{x.distance_km:,.0f}"
        url = f'<a href="{escape(x.url)}">{escape(x.url)}</a>' if x.url else ""
        rows.append(
            f'<tr class="{cls}" data-mirror="{escape(x.name)}" '
            f'data-reason="{escape(x.reason or "")}">'
            f'<td data-label="Rank">{x.rank or "&ndash;"}</td>'
            f'<td data-label="Mirror">{escape(x.name)}</td>'
            f'<td data-label="Country">{escape(x.country)}</td>'
            f'<td data-label="km" class=num>{km}</td>'
            f'<td data-label="Weight" class=num>{x.weight}</td>'
            f'<td data-label="State" class="state">{x.condition or "&ndash;"}</td>'
            f'<td data-label="Why">{escape(x.why)}<br><small>{url}</small></td></tr>'
        )
    tier = ""
    if e.tier_limit_km is not None and e.nearest_km is not None:
        tier = (
            f"<dt>Tier</dt><dd>nearest eligible mirror {e.nearest_km:,.0f} km away; mirrors "
            f"within {e.tier_limit_km:,.0f} km count as equally close</dd>"
        )
    fallback = " (the master: no mirror is eligible)" if e.fallback else ""
    v = "IPv6" if e.ipv6 else "IPv4"
    credit = f'<p class="credit"><small>{escape(e.credit)}</small></p>' if e.credit else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>Mirror list for {escape(e.path)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>Where /{escape(e.path)} goes</h1></header><main><dl>"
        f"<dt>Client</dt><dd>{escape(e.client_ip or '(none)')} over {escape(e.scheme)}, {v}, "
        f"network {escape(e.network) if e.network else '&ndash;'}"
        f"{f', AS {e.asn}' if e.asn is not None else ''}</dd>"
        f"<dt>Location</dt><dd>{escape(_where(e))}</dd>"
        f'<dt>Target</dt><dd><a id="target" href="{escape(e.target)}">{escape(e.target)}</a>'
        f"{fallback}</dd>{tier}</dl>"
        "<table><thead><tr><th>Rank</th><th>Mirror</th><th>CC</th><th>km</th><th>Weight</th>"
        f"<th>State</th><th>Why</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        '<p><a href="/mirrors">All mirrors</a> · the same as JSON: add <code>&amp;json</code>'
        f"</p>{credit}</main></body></html>\n"
    )
