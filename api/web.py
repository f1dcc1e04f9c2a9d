"""The pages the API serves besides JSON: interactive documentation (Swagger UI and ReDoc, their assets
from the ``fastapi-offline`` package, never a CDN), the web chat client at ``/app/`` and the operator
console at ``/console/`` (static files in api/static, no build step), and CORS for apps on other origins.

FastAPI's documented way to serve the docs with assets of one's own: ``docs_url=None, redoc_url=None``,
the files mounted as static files, and ``get_swagger_ui_html`` / ``get_redoc_html`` pointing at them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from api.console_metrics import MetricSource

#: Swagger UI's and ReDoc's built files, as the fastapi-offline package ships them.
DOCS_ASSETS = Path(str(files("fastapi_offline") / "static"))
STATIC = Path(__file__).parent / "static"
ASSETS_URL = "/docs-assets"


@dataclass
class WebContext:
    """What the pages need from the process serving them: where the broker's WebSocket listeners are
    (``app_config``, served as /app/config.json), the effective configuration with secrets masked, and
    the services' metrics for the console's charts."""

    app_config: dict[str, int] = field(default_factory=dict)
    effective_config: dict[str, Any] = field(default_factory=dict)
    metric_sources: list[MetricSource] = field(default_factory=list)


def install_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` with their scripts and styles served from this process."""
    app.mount(ASSETS_URL, StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    title = app.title

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{title} - Swagger UI",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{title} - ReDoc",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )


def install_pages(app: FastAPI, web: dict[str, int]) -> None:
    """``/app/`` and ``/console/`` with ``/app/config.json`` (``web``: where the broker's WebSocket
    listeners are, so the page can connect), and ``/`` leading to the app."""

    @app.get("/app/config.json", include_in_schema=False)
    def app_config() -> JSONResponse:
        return JSONResponse(web, headers={"Cache-Control": "no-store"})

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/app/")

    for name in ("app", "console", "shared", "vendor"):
        app.mount(f"/{name}", StaticFiles(directory=STATIC / name, html=True), name=name)


def install_cors(app: FastAPI, origins: list[str]) -> None:
    """Let pages on ``origins`` call the API (preflights answered); nothing when the list is empty."""
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
