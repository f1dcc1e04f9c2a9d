"""Builds the FastAPI application around an engine made by the caller."""

from __future__ import annotations

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from api.limits import LoginLimiter
from api.routes import auth, conversations, health, hooks, messages, presence, receipts
from switchboard import __version__
from switchboard.settings import ApiSettings


def create_app(engine: Engine, settings: ApiSettings) -> FastAPI:
    """The API, reading and writing through ``engine``."""
    app = FastAPI(
        title="Switchboard",
        version=__version__,
        summary="History and health for Switchboard, chat over MQTT.",
        docs_url="/docs",
    )
    app.state.engine = engine
    app.state.settings = settings
    app.state.login_limiter = LoginLimiter(settings.max_failed_logins, settings.max_failed_logins_per_address)
    app.include_router(auth.router)
    app.include_router(hooks.router)
    app.include_router(health.router)
    app.include_router(conversations.router)
    app.include_router(messages.router)
    app.include_router(receipts.router)
    app.include_router(presence.router)
    app.add_exception_handler(OperationalError, _database_unavailable)
    return app


async def _database_unavailable(_request: Request, _exc: Exception) -> JSONResponse:
    return JSONResponse(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        content={"detail": "the database is unreachable; try again shortly"},
        headers={"Retry-After": "5"},
    )
