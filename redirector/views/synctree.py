"""The sync tree drawn for the status page: an SVG of who syncs from whom, and the lag per hop."""

from __future__ import annotations

from html import escape

from redirector.config.settings import format_bandwidth
from redirector.core.humanize import duration
from redirector.core.models import Mirror
from redirector.core.synctree import Node, SyncTree


def shown_email(email: str | None, mode: str) -> str | None:
    """A contact email as the status page shows it: "show", "obfuscate" (name at host dot org)
    or "omit" (None)."""
    if email is None or mode == "omit":
        return None
    if mode == "show":
        return email
    local, _, domain = email.partition("@")
    return f"{local} at {' dot '.join(domain.split('.'))}"


def _lag_text(n: Node) -> str:
    if n.kind == "master":
        return "the master"
    if n.lag is None:
        return "lag unknown"
    hop = f" (+{duration(n.added)})" if n.added is not None and n.added >= 0 else ""
    if n.added is not None and n.added < 0:
        hop = f" ({duration(n.added)})"
    return f"lag {duration(n.lag)}{hop}"


BOX_W, BOX_H, COL, ROW, PAD = 200, 38, 250, 48, 8
_FILL = {"master": "#17324d", "mirror": "#ffffff", "external": "#f1f1f1"}
_TEXT = {"master": "#ffffff", "mirror": "#1d2228", "external": "#555555"}


def _node_svg(n: Node, x: int, y: int) -> str:
    cls = f"node {n.kind} tier-{n.tier}" + (" mismatch" if n.mismatch else "")
    stroke = "#c62828" if n.mismatch else ("#8a8f98" if n.kind == "external" else "#17324d")
    tip = [n.label, _lag_text(n)]
    if n.parent is not None:
        tip.append(f"syncs from {n.parent} ({n.via})")
    if n.mismatch:
        tip.append(n.mismatch)
    if n.condition is not None:
        tip.append(f"state: {n.condition.value}")
    lag_attr = "" if n.lag is None else f' data-lag="{n.lag:.0f}"'
    added_attr = "" if n.added is None else f' data-added="{n.added:.0f}"'
    flag = "! " if n.mismatch else ""
    return (
        f'<g class="{cls}" data-name="{escape(n.key)}" data-tier="{n.tier}"{lag_attr}'
        f'{added_attr} data-parent="{escape(n.parent or "")}" transform="translate({x},{y})">'
        f"<title>{escape(' - '.join(tip))}</title>"
        f'<rect width="{BOX_W}" height="{BOX_H}" rx="6" fill="{_FILL[n.kind]}" '
        f'stroke="{stroke}" stroke-width="{2 if n.mismatch else 1}"/>'
        f'<text class="label" x="8" y="15" font-size="12" font-weight="600" '
        f'fill="{_TEXT[n.kind]}">{escape(flag + n.label[:30])}</text>'
        f'<text class="lag" x="8" y="31" font-size="11" fill="{_TEXT[n.kind]}">'
        f"{escape(_lag_text(n))}</text></g>"
    )


def render_svg(tree: SyncTree) -> str:
    """The tree drawn left to right: one column per tier, one row per node, depth first."""
    pos = {k: (PAD + tree.nodes[k].tier * COL, PAD + i * ROW) for i, k in enumerate(tree.order)}
    width = PAD * 2 + tree.depth * COL + BOX_W
    height = PAD * 2 + (len(tree.order) - 1) * ROW + BOX_H
    edges = []
    for n in tree.walk():
        if n.parent is None or n.parent not in pos:
            continue
        (px, py), (x, y) = pos[n.parent], pos[n.key]
        x1, y1, y2 = px + BOX_W, py + BOX_H // 2, y + BOX_H // 2
        mid = (x1 + x) // 2
        dash = ' stroke-dasharray="4 3"' if n.via in ("config", "assumed") else ""
        colour = "#c62828" if n.mismatch else "#6b7a89"
        edges.append(
            f'<path class="edge" data-from="{escape(n.parent)}" data-to="{escape(n.key)}" '
            f'd="M{x1},{y1} C{mid},{y1} {mid},{y2} {x},{y2}" fill="none" stroke="{colour}" '
            f'stroke-width="1.5"{dash}/>'
        )
    boxes = [_node_svg(tree.nodes[k], *pos[k]) for k in tree.order]
    return (
        f'<svg class="synctree" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'aria-label="Sync tree: {len(tree.order) - 1} mirrors in {tree.depth} tiers" '
        f'font-family="system-ui, sans-serif">' + "".join(edges + boxes) + "</svg>"
    )


def _facts(m: Mirror, email_mode: str) -> str:
    parts = []
    if m.sync:
        parts.append(m.sync)
    if m.bandwidth:
        parts.append(format_bandwidth(m.bandwidth))
    contact = m.contact_name or ""
    email = shown_email(m.contact_email, email_mode)
    if email:
        contact = f"{contact} <{email}>" if contact else email
    if contact:
        parts.append(f"contact {contact}")
    return ", ".join(parts)


def render_html(tree: SyncTree, *, email_mode: str = "obfuscate") -> str:
    """The status-page fragment: the drawing, lag per tier, the flags, and a text version."""
    rows = "".join(
        f'<tr data-tier="{t.tier}"><td>tier {t.tier}</td><td class="num">{t.count}</td>'
        f'<td class="num">{duration(t.median_lag) if t.median_lag is not None else "-"}</td>'
        f'<td class="num">{duration(t.worst_lag) if t.worst_lag is not None else "-"}</td>'
        f'<td class="num">'
        f"{'+' + duration(t.median_added) if t.median_added is not None else '-'}</td></tr>"
        for t in tree.tiers()
    )
    table = (
        '<table class="mini synctiers"><tr><th>Tier</th><th>Mirrors</th><th>Median lag</th>'
        f"<th>Worst lag</th><th>Added by the hop (median)</th></tr>{rows}</table>"
    )
    flagged = [n for n in tree.walk() if n.mismatch]
    flags = (
        '<ul class="sync-flags">'
        + "".join(
            f'<li data-name="{escape(n.key)}"><b>{escape(n.label)}</b>: {escape(n.mismatch or "")}'
            "</li>"
            for n in flagged
        )
        + "</ul>"
        if flagged
        else ""
    )
    items = []
    for n in tree.walk():
        if n.kind == "master":
            continue
        up = tree.nodes[n.parent].label if n.parent is not None else "?"
        facts = _facts(n.mirror, email_mode) if n.mirror is not None else "not configured"
        items.append(
            f'<li data-name="{escape(n.key)}" data-tier="{n.tier}">'
            f"{'&nbsp;&nbsp;' * (n.tier - 1)}<b>{escape(n.label)}</b> "
            f"&larr; {escape(up)} <small>({escape(n.via)})</small>: {escape(_lag_text(n))}"
            f"{' <small>' + escape(facts) + '</small>' if facts else ''}</li>"
        )
    legend = (
        "<p><small>Drawn from each mirror's trace (<code>Upstream-mirror:</code>) and "
        "<code>project/trace/_hierarchy</code>; dashed lines are upstreams known only from the "
        "config. Lag is how long the master has had content the mirror lacks; (+x) is what "
        "the hop from its upstream adds. Red: the real upstream differs from the configured "
        "one.</small></p>"
    )
    return (
        f'<div class="synctree-wrap" style="overflow-x:auto">{render_svg(tree)}</div>'
        f"{table}{flags}"
        f'<details><summary>As text</summary><ul class="synctree-list">{"".join(items)}'
        f"</ul></details>{legend}"
    )
