"""The Ranking page plugin: cheap to load, behind Airflow's login, rendered in headless Chromium.

The browser tests run a real ``airflow api-server`` with this checkout's plugins over a seeded
RANKFLOW_HOME and a private redis-server (see ``conftest.py``), and read what Chromium rendered.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from screenshot import ROOT, dump_dom, page_in_process, page_url, screenshot


def test_loading_the_plugin_imports_nothing_heavy() -> None:
    """Schedulers, DAG processors and task runners load plugins: the app waits for a request."""
    code = (
        "import sys; import airflow.plugins_manager; before = set(sys.modules); "
        "import rankflow_ranking_page as p; "
        "heavy = ('fastapi', 'redis', 'deltalake', 'mlflow', 'pandas', 'rankflow'); "
        "print([m for m in set(sys.modules) - before if m.split('.')[0] in heavy]); "
        "print(p.RankflowRankingPagePlugin.fastapi_apps[0]['url_prefix'])"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[-2:] == ["[]", "/ranking"]


@pytest.fixture
def app_client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """The page's app mounted like the API server mounts it, with an auth manager, no server.

    RANKFLOW_HOME is empty and Redis unreachable: every section must say so, not fail.
    """
    from airflow.api_fastapi import app as api_app

    manager = api_app.get_auth_manager_cls()()
    with page_in_process(monkeypatch, tmp_path / "home", manager) as client:
        yield client, manager


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_the_page_requires_an_airflow_login(app_client: Any) -> None:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    client, manager = app_client
    assert client.get("/ranking/", headers={"accept": "application/json"}).status_code == 401
    browser_get = client.get(
        "/ranking/?surface=home", headers={"accept": "text/html"}, follow_redirects=False
    )
    assert browser_get.status_code == 303
    assert browser_get.headers["location"].endswith("?next=%2Franking%2F%3Fsurface%3Dhome")
    assert client.get("/ranking/report/1").status_code == 401
    assert client.get("/ranking/", headers={"authorization": "Bearer nope"}).status_code == 403

    token = manager.generate_jwt(SimpleAuthManagerUser(username="viewer", role="viewer"))
    client.cookies.set("_token", token)  # what the Airflow UI's session holds
    page = client.get("/ranking/?surface=search")
    assert page.status_code == 200
    assert "script-src" not in page.headers["content-security-policy"]
    assert "frame-ancestors 'self'" in page.headers["content-security-policy"]
    assert "Could not read Redis at redis://127.0.0.1:1/0" in page.text
    assert "No monitoring history for surface “search” yet" in page.text
    assert "No champion yet" in page.text
    assert client.get("/ranking/?surface=nope").status_code == 404
    for malformed in ("²", "1²", "١٢", "-3", "1.9", "0", "4294967296", "1*", "a:b", "x" * 200):
        answer = client.get("/ranking/", params={"user": malformed})
        assert answer.status_code == 400, malformed
        assert "Not a user id" in answer.text
        assert "x" * 41 not in answer.text  # the echo is cut short
    assert client.get("/ranking/report/1").status_code == 404
    assert client.get("/ranking/report/..%2f1").status_code == 404


# --------------------------------------------------------------------------- in the browser


def fetch(url: str) -> tuple[int, str]:
    """GET a URL, returning the status and body even for an error status."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.usefixtures("chromium")
@pytest.mark.slow
@pytest.mark.services
def test_the_page_renders_history_versions_champion_and_a_lookup(server: str, seeded: Any) -> None:
    user = seeded.users[0]
    dom = dump_dom(page_url(server, seeded.surface, str(user)))

    charts = dict(re.findall(r'data-chart="([^"]+)" data-breaches="(\d+)"', dom))
    expected = {
        "offline-ipw_ndcg@10",
        "offline-ndcg@10",
        "list_coverage",
        "catalog_coverage",
        "feature-psi",
        "published_users",
        "redis_bytes_per_user",
        "publish-seconds",
    }
    assert expected <= set(charts), sorted(charts)
    assert charts["list_coverage"] == "1"
    assert charts["feature-psi"] == "1"
    assert dom.count('class="breach"') == 2
    assert dom.count("<svg") == len(charts)
    breaches = re.search(r'<table id="breaches">.*?</table>', dom, flags=re.S)
    assert breaches is not None
    assert seeded.drifting in breaches.group(0)
    assert f"Latest monitored day <b>{seeded.last_day.isoformat()}</b>" in dom

    assert f'data-version="{seeded.current}"' in dom
    assert f'data-version="{seeded.previous}"' in dom
    assert 'href="report/1"' in dom
    assert "rankflow-ranker version <b>1</b>" in dom

    listed = seeded.lists[user]
    assert re.findall(r'data-item="(\d+)"', dom) == [str(i) for i in listed]
    assert f"version <code>{seeded.current}</code>" in dom
    assert "personal list" in dom
    assert "-new</td>" in dom
    assert "-old</td>" not in dom
    assert f'<tr class="sold" data-item="{seeded.sold_item}">' in dom

    status, report = fetch(f"{server}/ranking/report/1")
    assert status == 200
    assert seeded.report_marker in report
    assert fetch(f"{server}/ranking/report/7")[0] == 404


@pytest.mark.usefixtures("chromium")
@pytest.mark.slow
@pytest.mark.services
def test_empty_states_and_fallback_in_the_browser(server: str, seeded: Any) -> None:
    empty = dump_dom(page_url(server, "search"))
    assert "No monitoring history for surface “search” yet" in empty
    assert "Nothing is published for surface “search” yet" in empty
    assert "rankflow-ranker version <b>1</b>" in empty  # the champion serves every surface
    unknown = dump_dom(page_url(server, seeded.surface, "4294967295"))  # well formed, never seen
    assert "fallback list: no personal list for this user" in unknown
    malformed = dump_dom(page_url(server, seeded.surface, "no-such-user"))
    assert "Not a user id: 'no-such-user'" in malformed
    assert "fallback list" not in malformed


@pytest.mark.usefixtures("chromium")
@pytest.mark.slow
@pytest.mark.services
def test_the_page_is_in_the_airflow_ui(server: str) -> None:
    status, body = fetch(f"{server}/api/v2/plugins")
    assert status == 200
    plugin = next(p for p in json.loads(body)["plugins"] if p["name"] == "rankflow_ranking_page")
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/ranking"
    view = plugin["external_views"][0]
    assert (view["url_route"], view["href"], view["destination"]) == ("ranking", "ranking/", "nav")
    # the UI shows it in an iframe at /plugin/ranking (a React page: give its scripts time)
    dom = dump_dom(f"{server}/plugin/ranking", budget_ms=15000)
    assert re.search(r'<iframe[^>]*src="[^"]*ranking/"', dom), dom[-2000:]


@pytest.mark.usefixtures("chromium")
@pytest.mark.slow
@pytest.mark.services
def test_a_screenshot_is_taken(server: str, seeded: Any, tmp_path: Path) -> None:
    from PIL import Image

    url = page_url(server, seeded.surface, str(seeded.users[0]))
    out = screenshot(url, tmp_path / "ranking-page.png")
    with Image.open(out) as image:
        assert image.size == (1400, 2200)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
    assert out.stat().st_size > 50_000
    assert len(colours) > 200, "a blank or error page has few colours"
    kept = os.environ.get("RANKFLOW_UI_SCREENSHOT")
    if kept:
        Path(kept).write_bytes(out.read_bytes())
