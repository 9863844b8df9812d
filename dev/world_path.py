"""Build redirector/views/data/land-110m.path, the status page's world outline, from Natural Earth.

Input: `land-110m.json` from the npm package world-atlas 2.0.2 (Natural Earth 4.1.0 land
polygons, public domain; TopoJSON packaging ISC, Copyright 2013-2019 Michael Bostock).
Output: one SVG path in equirectangular degrees (x = longitude, y = -latitude), rounded to
0.1 degree, points closer than `--tolerance` degrees dropped, Antarctica cut off (the map ends
at 60 degrees south), rings that shrink below 4 points dropped.

    npm pack world-atlas@2.0.2 && tar xzf world-atlas-2.0.2.tgz
    python3 dev/world_path.py package/land-110m.json > redirector/views/data/land-110m.path
    python3 dev/world_path.py --tolerance 0.12 --box=-7,42,17,57 package/land-50m.json \
        > redirector/views/data/europe-50m.path
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from typing import Any

SOUTH = -60.0


def decode_arcs(topo: dict[str, Any]) -> list[list[tuple[float, float]]]:
    sx, sy = topo["transform"]["scale"]
    tx, ty = topo["transform"]["translate"]
    out = []
    for arc in topo["arcs"]:
        x = y = 0
        pts = []
        for dx, dy in arc:
            x += dx
            y += dy
            pts.append((x * sx + tx, y * sy + ty))
        out.append(pts)
    return out


def ring(arcs: list[list[tuple[float, float]]], indexes: list[int]) -> list[tuple[float, float]]:
    pts: list[tuple[float, float]] = []
    for i in indexes:
        arc = arcs[i] if i >= 0 else arcs[~i][::-1]
        pts.extend(arc if not pts else arc[1:])
    return pts


def unwrap(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Longitudes made continuous: a ring crossing the antimeridian goes past 180 instead of
    jumping back to -180 (which would draw a band across the whole map)."""
    out = [pts[0]]
    offset = 0.0
    for (px, _), (x, y) in itertools.pairwise(pts):
        if x - px > 180:
            offset -= 360
        elif px - x > 180:
            offset += 360
        out.append((x + offset, y))
    return out


def thin(pts: list[tuple[float, float]], tol: float) -> list[tuple[float, float]]:
    kept = [pts[0]]
    for p in pts[1:]:
        if math.dist(p, kept[-1]) >= tol:
            kept.append(p)
    return kept


def _num(v: float) -> str:
    s = f"{v:.1f}".removesuffix(".0")
    return "0" if s == "-0" else s


def clip(
    pts: list[tuple[float, float]], box: tuple[float, float, float, float]
) -> list[tuple[float, float]]:
    """Sutherland-Hodgman: the part of a ring inside the rectangle (west, south, east, north)."""
    west, south, east, north = box
    edges = [
        (lambda p: p[0] >= west, lambda a, b: _at_x(a, b, west)),
        (lambda p: p[0] <= east, lambda a, b: _at_x(a, b, east)),
        (lambda p: p[1] >= south, lambda a, b: _at_y(a, b, south)),
        (lambda p: p[1] <= north, lambda a, b: _at_y(a, b, north)),
    ]
    out = pts
    for inside, cross in edges:
        src, out = out, []
        for i, cur in enumerate(src):
            prev = src[i - 1]
            if inside(cur):
                if not inside(prev):
                    out.append(cross(prev, cur))
                out.append(cur)
            elif inside(prev):
                out.append(cross(prev, cur))
        if not out:
            break
    return out


def _at_x(a: tuple[float, float], b: tuple[float, float], x: float) -> tuple[float, float]:
    t = (x - a[0]) / (b[0] - a[0])
    return (x, a[1] + t * (b[1] - a[1]))


def _at_y(a: tuple[float, float], b: tuple[float, float], y: float) -> tuple[float, float]:
    t = (y - a[1]) / (b[1] - a[1])
    return (a[0] + t * (b[0] - a[0]), y)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("topojson")
    ap.add_argument("--tolerance", type=float, default=1.0)
    ap.add_argument("--box", help="west,south,east,north: clip to this box (the inset map)")
    args = ap.parse_args()
    box = None
    if args.box:
        west, south, east, north = (float(v) for v in args.box.split(","))
        box = (west, south, east, north)
    with open(args.topojson, encoding="utf-8") as f:
        topo = json.load(f)
    arcs = decode_arcs(topo)
    parts = []
    for geom in topo["objects"]["land"]["geometries"]:
        polygons = geom["arcs"] if geom["type"] == "MultiPolygon" else [geom["arcs"]]
        for poly in polygons:
            for r in poly:
                pts = unwrap([(x, max(y, SOUTH)) for x, y in ring(arcs, r)])
                if all(y <= SOUTH for _, y in pts):
                    continue
                # A ring unwrapped past the antimeridian is drawn twice, once from each side;
                # the SVG viewport clips what falls outside -180..180.
                shifts = [0.0]
                if max(x for x, _ in pts) > 180:
                    shifts.append(-360.0)
                if min(x for x, _ in pts) < -180:
                    shifts.append(360.0)
                for dx in shifts:
                    moved = [(x + dx, y) for x, y in pts]
                    if box is not None:
                        moved = clip(moved, box)
                        if len(moved) < 3:
                            continue
                    moved = thin(moved, args.tolerance)
                    if len(moved) < 4:
                        continue
                    coords = " ".join(f"{_num(x)},{_num(-y)}" for x, y in moved)
                    parts.append("M" + coords + "Z")
    sys.stdout.write("".join(parts) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
