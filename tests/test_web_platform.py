"""The platform around the web pages, over real HTTP against ``switchboard up``: Swagger UI and ReDoc with
their assets served by the API itself (no CDN), CORS for apps on other origins (``api.cors_origins``),
``/app/`` and ``/console/`` served with the broker's WebSocket port, what ``up`` tells the operator on a
database with no administrator, and the scripts saying what they do."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.console_metrics import SERIES, http_source, snapshot
from switchboard.settings import ApiSettings
from tests.helpers import REPO, Stack, free_port, start_stack

ALLOWED = "http://chat.example.test:5173"


@pytest.fixture(scope="module")
def web_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack on a new, empty database (no administrator), with one origin allowed for CORS."""
    url = f"sqlite:///{tmp_path_factory.mktemp('web')}/web.db"
    running = start_stack(
        url, tmp_path_factory.mktemp("web-stack"), SWITCHBOARD_API__CORS_ORIGINS=json.dumps([ALLOWED])
    )
    yield running
    assert running.stop() == 0, running.output()


def _get(stack: Stack, path: str, **kwargs: object) -> httpx.Response:
    return httpx.get(stack.api + path, trust_env=False, timeout=10, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", ["/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"]),
        ("/redoc", ["/docs-assets/redoc.standalone.js"]),
    ],
)
def test_docs_load_their_assets_from_the_api_not_a_cdn(web_stack: Stack, page: str, assets: list[str]) -> None:
    html = _get(web_stack, page)
    assert html.status_code == 200
    for asset in assets:
        assert f'"{asset}"' in html.text
        served = _get(web_stack, asset)
        assert served.status_code == 200 and len(served.content) > 10_000
    for cdn in ("cdn.jsdelivr.net", "unpkg.com", "fonts.googleapis.com"):
        assert cdn not in html.text


def test_preflight_from_an_allowed_origin_is_answered(web_stack: Stack) -> None:
    headers = {
        "Origin": ALLOWED,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    preflight = httpx.options(web_stack.api + "/v1/auth/token", headers=headers, trust_env=False)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    # The answer to the request itself names the origin too, so the page may read it.
    health = _get(web_stack, "/healthz", headers={"Origin": ALLOWED})
    assert health.headers["access-control-allow-origin"] == ALLOWED


def test_an_origin_not_listed_gets_no_cors_headers(web_stack: Stack) -> None:
    other = "http://elsewhere.example.test"
    preflight = httpx.options(
        web_stack.api + "/v1/auth/token",
        headers={"Origin": other, "Access-Control-Request-Method": "POST"},
        trust_env=False,
    )
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in _get(web_stack, "/healthz", headers={"Origin": other}).headers


def test_cors_origins_default_to_none_and_bad_ones_are_explained() -> None:
    assert ApiSettings().cors_origins == []
    with pytest.raises(ValueError, match=r"'chat.example.com' is not an origin: write scheme://host\[:port\]"):
        ApiSettings(cors_origins=["chat.example.com"])
    with pytest.raises(ValueError, match="no path"):
        ApiSettings(cors_origins=["https://chat.example.com/app"])


def test_app_and_console_are_served_with_the_brokers_websocket_port(web_stack: Stack) -> None:
    root = _get(web_stack, "/")
    assert root.status_code == 307 and root.headers["location"] == "/app/"
    for page in ("/app/", "/console/"):
        html = _get(web_stack, page)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert "<title>" in html.text
    config = _get(web_stack, "/app/config.json").json()
    assert web_stack.ws_port and config == {"ws_port": web_stack.ws_port}
    mqtt_js = _get(web_stack, "/vendor/mqtt.min.js")
    assert mqtt_js.status_code == 200 and "mqtt" in mqtt_js.text[:2000].lower()


def test_up_says_where_the_pages_are_and_how_to_make_the_first_admin(web_stack: Stack) -> None:
    pages = web_stack.out.wait_for(r"web app at (http://\S+/app/) ; operator console at (http://\S+/console/)", 10)
    assert pages.group(1) == f"{web_stack.api}/app/"
    assert pages.group(2) == f"{web_stack.api}/console/"
    web_stack.out.wait_for(r"no administrator yet: make the first one with `switchboard user add NAME --role admin`", 1)
    assert "migrating the database" in web_stack.output()


def test_scripts_say_what_they_are_doing(tmp_path: Path) -> None:
    up = subprocess.run(
        ["bash", str(REPO / "scripts/up"), "--help"], capture_output=True, text=True, timeout=300, check=False
    )
    assert up.returncode == 0, up.stderr
    assert "scripts/up: installing the Python packages when missing" in up.stderr
    test_script = (REPO / "scripts/test").read_text()
    assert "running the whole test suite: it takes several minutes" in test_script
    assert "scripts/test: starting Postgres" in test_script


def test_console_metrics_read_another_process_over_http(web_stack: Stack) -> None:
    """What ``switchboard api`` alone charts: the broker's and the bridge's /metrics read over HTTP; a
    service that does not answer gives null, not an error."""
    ports = [
        int(m) for m in re.findall(r"(?:broker|bridge) metrics on http://[\d.]+:(\d+)/metrics", web_stack.output())
    ]
    assert len(ports) == 2, web_stack.output()
    values = snapshot(http_source(f"http://127.0.0.1:{port}/metrics") for port in ports)
    assert values["connections"] is not None and values["connections"] >= 1  # the bridge's own connection
    assert values["bridge_lag"] == 0 and values["bridge_stored"] == 0
    assert values["api_requests"] is None  # the API's own registry is not among these sources
    assert snapshot([http_source(f"http://127.0.0.1:{free_port()}/metrics")]) == dict.fromkeys(SERIES)
