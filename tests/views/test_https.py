"""The https balance: where https clients go, on the status page and in the metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

from redirector.core.models import Mirror, MirrorState, Status
from redirector.core.selection import Candidate, Policy
from redirector.store.memory import MemoryStore
from redirector.views.https import balance, render_html
from redirector.web.app import create_app
from tests.support.world import NL_CLIENT, REPOMD, STATUS, fill, geo
from tests.web.test_metrics import scrape

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]

NOW = 1_764_000_000.0


def fresh(m: Mirror) -> Candidate:
    return Candidate(m, MirrorState(m.name, Status.UP, NOW - 60, master_date=NOW - 3600))


# Three of nine real mirrors on https, all in Europe: the imbalance the page must show.
PARIS = Mirror("contribs-fr", None, "https://contribs-fr.test/", "FR", 48.86, 2.35)
AMSTERDAM = Mirror("nluug", "http://nluug.test/", "https://nluug.test/", "NL", 52.37, 4.90)
MELBOURNE = Mirror("pacific", "http://pacific.test/", None, "AU", -37.81, 144.96)
CHAPEL_HILL = Mirror("ibiblio", "http://ibiblio.test/", None, "US", 35.91, -79.05)
CANDIDATES = [fresh(m) for m in (PARIS, AMSTERDAM, MELBOURNE, CHAPEL_HILL)]


def test_https_clients_far_from_every_https_mirror_are_shown_crossing_the_world() -> None:
    b = balance(CANDIDATES, NOW, Policy(), "mirrors")
    assert (b.fresh, b.fresh_https) == (4, 2)
    rows = {r.place: r for r in b.rows}
    sydney = rows["Sydney"]
    assert sydney.http.mirror == "pacific"
    assert sydney.https.mirror in {"contribs-fr", "nluug"}
    assert sydney.https.distance_km is not None
    assert sydney.https.distance_km > 16000
    assert rows["New York"].http.mirror == "ibiblio"
    assert rows["London"].https.mirror in {"contribs-fr", "nluug"}
    html = render_html(b)
    assert "2 of 4 serving mirrors have https" in html
    assert '<tr data-place="Sydney"><td>Sydney (AU)</td>' in html


def test_https_policy_master_shows_the_master() -> None:
    b = balance(CANDIDATES, NOW, Policy(https_min=3), "master")
    assert all(r.https.mirror is None for r in b.rows)
    assert all(r.http.mirror is not None for r in b.rows)
    html = render_html(b)
    assert "From 11 of 11 places an https download goes farther" in html
    assert "<td>the master</td>" in html


async def test_status_page_and_metrics_show_where_https_clients_go(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    store = MemoryStore()
    await fill(store)
    client = await aiohttp_client(
        create_app(STATUS.config(), poll=False, store=store, geo=geo(tmp_path))
    )
    page = await (await client.get("/mirrors")).text()
    assert '<section class="card" id="https"><h2>Where https clients go</h2>' in page
    assert 'https_policy is "mirrors"' in page

    for proto in ("https", "https", "http"):
        resp = await client.get(
            f"/smeserver/{REPOMD}",
            headers={"X-Forwarded-For": NL_CLIENT, "X-Forwarded-Proto": proto},
            allow_redirects=False,
        )
        assert resp.status == 302
    fams = await scrape(client)
    https = {s.labels["mirror"]: s.value for s in fams["redirector_https_redirects"][1]
             if s.name.endswith("_total")}  # fmt: skip
    assert sum(https.values()) == 2
    assert set(https) <= {"nluug", "mirrorservice"}
