"""Shipped alerting: the rules pass Debian's promtool (check and unit tests), the Grafana
dashboard has the structure Grafana loads, and every series either names is exported by a
live app's /metrics after a poll pass against loopback mirrors."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from redirector.config.settings import load_settings
from redirector.geo import GeoReader
from redirector.web import keys
from redirector.web.app import create_app
from tests.farm import Farm, error_500
from tests.support import ROOT
from tests.support.world import NL_CLIENT

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "redirector.json"
SERIES = re.compile(r"\b(redirector_[a-z0-9_]+)")
REPO_DIR = "releases/10/smeos/x86_64"


pytestmark = pytest.mark.system  # Debian's promtool


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        # Never skip: dev/test.sh installs Debian's prometheus package, which ships it.
        pytest.fail("promtool is not on PATH: run dev/test.sh (Debian package prometheus)")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_checks_the_rules() -> None:
    r = run(promtool(), "check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 8 rules found" in r.stdout
    names = re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.M)
    assert set(names) == {
        "RedirectorNoFreshMirror",
        "RedirectorMasterUnreachable",
        "RedirectorPollerSilent",
        "RedirectorMirrorStale",
        "RedirectorConfigRefused",
        "RedirectorStoreDown",
        "RedirectorGeoIPDatabaseOld",
        "RedirectorNotReady",
    }


def test_promtool_unit_tests_pass_and_mean_something(tmp_path: Path) -> None:
    r = run(promtool(), "test", "rules", str(RULE_TESTS))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout
    # A poller-silent rule that never fires fails the stopped-poller case.
    (tmp_path / "deploy" / "prometheus").mkdir(parents=True)
    (tmp_path / "tests" / "prometheus").mkdir(parents=True)
    broken = (
        RULES.read_text()
        .replace(
            "> 3 * redirector_poll_interval_seconds", "> 30 * redirector_poll_interval_seconds"
        )
        .replace("or redirector_poller_silent == 1", "or redirector_poller_silent == 2")
    )
    (tmp_path / "deploy" / "prometheus" / "alerts.yml").write_text(broken)
    copy = tmp_path / "tests" / "prometheus" / "alerts_test.yml"
    copy.write_text(RULE_TESTS.read_text())
    r = run(promtool(), "test", "rules", str(copy))
    assert r.returncode != 0
    assert "alertname: RedirectorPollerSilent" in r.stdout + r.stderr


# --- the dashboard ---------------------------------------------------------------------------

_TARGET = {
    "type": "object",
    "required": ["refId", "expr", "datasource"],
    "properties": {
        "refId": {"type": "string", "pattern": "^[A-Z]$"},
        "expr": {"type": "string", "minLength": 1},
        "datasource": {"$ref": "#/$defs/datasource"},
    },
}
_GRID = {
    "type": "object",
    "required": ["h", "w", "x", "y"],
    "properties": {
        k: {"type": "integer", "minimum": 0, "maximum": 24 if k in "wx" else 1000} for k in "hwxy"
    },
}
# What Grafana needs to import the file (its dashboard model, the parts this one uses).
DASHBOARD_SCHEMA: dict[str, Any] = {
    "$defs": {
        "datasource": {
            "type": "object",
            "required": ["type", "uid"],
            "properties": {"type": {"const": "prometheus"}, "uid": {"const": "${datasource}"}},
        }
    },
    "type": "object",
    "required": ["title", "uid", "schemaVersion", "panels", "templating", "time"],
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "uid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "time": {"type": "object", "required": ["from", "to"]},
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {
                "list": {
                    "type": "array",
                    "contains": {
                        "type": "object",
                        "required": ["name", "type", "query"],
                        "properties": {
                            "name": {"const": "datasource"},
                            "type": {"const": "datasource"},
                            "query": {"const": "prometheus"},
                        },
                    },
                }
            },
        },
        "panels": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "type", "title", "gridPos"],
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "type": {"enum": ["row", "stat", "timeseries", "table"]},
                    "title": {"type": "string", "minLength": 1},
                    "gridPos": _GRID,
                    "datasource": {"$ref": "#/$defs/datasource"},
                    "targets": {"type": "array", "minItems": 1, "items": _TARGET},
                },
                "if": {"properties": {"type": {"not": {"const": "row"}}}},
                "then": {"required": ["datasource", "targets"]},
            },
        },
    },
}


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def expressions() -> Iterator[str]:
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", ()):
            yield target["expr"]


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    doc = dashboard()
    jsonschema.validate(doc, DASHBOARD_SCHEMA)
    panels = doc["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
        refs = [t["refId"] for t in p.get("targets", ())]
        assert len(set(refs)) == len(refs), p["title"]
    for expr in expressions():
        assert SERIES.search(expr), expr


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    # promtool parses PromQL for real: each query as a recording rule (JSON is YAML).
    rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(expressions())]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = run(promtool(), "check", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rules)} rules found" in r.stdout


# --- every query against a live /metrics ------------------------------------------------------


def live_config(farm: Farm, tmp_path: Path) -> Path:
    cfg = tmp_path / "mirrors.toml"
    cfg.write_text(
        f"""
[redirector]
master = "{farm.url("master")}"
poll_interval = "1s"
probe_timeout = "1s"
verify_timeout = "300ms"
repos = ["smeos"]
repodata_versions = ["10"]
# The test scrapes /metrics ten times a second until the series show: as exempt monitoring.
views_exempt = ["127.0.0.1/32"]

[[mirror]]
name = "near"
http = "{farm.url("near")}"
country = "NL"
latitude = 52.37
longitude = 4.90

[[mirror]]
name = "broken"
http = "{farm.url("broken")}"
country = "NL"
latitude = 52.37
longitude = 4.90
"""
    )
    return cfg


async def live_series(
    aiohttp_client: ClientFactory, farm: Farm, tmp_path: Path, geo: GeoReader
) -> tuple[set[str], set[str]]:
    """The series a live app exports after a pass, requests of every kind and a refused
    reload: (names with samples, names declared, labelled families still without any too)."""
    now = time.time()
    farm.set_trace("master", now - 3600)
    farm.set_trace("near", now - 3600)
    farm.behaviours["broken"] = error_500
    repomd = b'<repomd xmlns="http://linux.duke.edu/metadata/repo"><revision>7</revision></repomd>'
    farm.put("master", f"{REPO_DIR}/repodata/repomd.xml", repomd)
    farm.put("near", f"{REPO_DIR}/repodata/repomd.xml", repomd)
    cfg = live_config(farm, tmp_path)
    app = create_app(load_settings(cfg), geo=geo)
    client = await aiohttp_client(app)
    deadline = time.monotonic() + 20
    while True:
        text = await (await client.get("/metrics")).text()
        if "redirector_repodata_verdict{" in text and "redirector_poller_errors_total{" in text:
            break
        assert time.monotonic() < deadline, text[-3000:]
        await asyncio.sleep(0.1)
    xff = {"X-Forwarded-For": NL_CLIENT}
    farm.put("near", "contribs/x.rpm", b"rpm")
    assert (
        await client.get("/smeserver/contribs/x.rpm", headers=xff, allow_redirects=False)
    ).status == 302
    assert (await client.post("/smeserver/x")).status == 405
    yum = {"User-Agent": "urlgrabber/3.10 yum/3.4.3"}
    assert (await client.get("/mirrorlist?repo=smeos-10&arch=x86_64", headers=yum)).status == 200
    dnf = {"User-Agent": "libdnf (Koozali SME Server 11)"}
    assert (await client.get("/metalink?repo=smeos-10&arch=x86_64", headers=dnf)).status == 200
    cfg.write_text(cfg.read_text().replace('poll_interval = "1s"', 'poll_interval = "-1s"'))
    app[keys.RELOADER].check()
    # A scrape may be served from a rendering up to a second old (the views cache): wait for
    # the counters just moved.
    deadline = time.monotonic() + 10
    while True:
        text = await (await client.get("/metrics")).text()
        if "redirector_list_requests_total{" in text and "redirector_config_refused{" in text:
            break
        assert time.monotonic() < deadline, text[-3000:]
        await asyncio.sleep(0.2)
    names = {m.group(1) for m in re.finditer(r"^(redirector_\w+)[{ ]", text, re.M)}
    declared = {m.group(1) for m in re.finditer(r"^# TYPE (redirector_\w+) ", text, re.M)}
    return names, names | declared


async def test_every_query_names_an_exported_series(
    aiohttp_client: ClientFactory, farm: Farm, tmp_path: Path, geo: GeoReader
) -> None:
    sampled, exported = await live_series(aiohttp_client, farm, tmp_path, geo)
    rule_lines = [ln for ln in RULES.read_text().splitlines() if not ln.lstrip().startswith("#")]
    wanted = {("dashboard", name) for expr in expressions() for name in SERIES.findall(expr)} | {
        ("alerts.yml", name) for line in rule_lines for name in SERIES.findall(line)
    }
    missing = sorted((where, name) for where, name in wanted if name not in exported)
    assert missing == []
    # The families the dashboard and the alerts rest on have real samples, not just names.
    for name in (
        "redirector_poller_errors_total",
        "redirector_repodata_verdict",
        "redirector_list_requests_total",
        "redirector_file_checks_total",
        "redirector_config_refused",
        "redirector_geoip_build_timestamp_seconds",
        "redirector_request_duration_seconds_bucket",
    ):
        assert name in sampled, name
