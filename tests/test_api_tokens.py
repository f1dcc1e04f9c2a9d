"""Bearer tokens answered from each API process's cache (api/callers.py), and revocations honoured: at once
in the process that revoked them, and in another API process on the same database through its change watch
(LISTEN/NOTIFY on Postgres, the shared poll on SQLite), never by waiting for the cache to expire."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import httpx
import pytest
from sqlalchemy import Engine, delete

from api.callers import Caller, TokenCache
from switchboard import tokens
from switchboard.schema import api_tokens
from switchboard.tables import Role
from tests.conftest import Users
from tests.helpers import STARTUP_SECONDS, PahoClient, Service, Stack, start_service, switchboard_env, wait_for


def _token(stack: Stack, user: tuple[str, str]) -> dict[str, str]:
    with stack.http(*user) as http:
        answer = http.post("/v1/auth/token", json={"username": user[0], "password": user[1]})
        assert answer.status_code == 200, answer.text
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}


@contextmanager
def _second_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``switchboard api`` on the stack's database, caching tokens for an hour: only a revocation event can
    end a cached token within a test."""
    env = switchboard_env(stack.database_url, SWITCHBOARD_API__TOKEN_CACHE_SECONDS="3600")
    service: Service = start_service("api", env=env, cwd=tmp_path_factory.mktemp("api2"))
    try:
        port = int(service.out.wait_for(r"api listening on http://[\d.]+:(\d+)", STARTUP_SECONDS).group(1))
        yield f"http://127.0.0.1:{port}"
    finally:
        assert service.stop() == 0, service.output()


def test_revoked_tokens_stop_working_before_the_revoking_request_returns(stack: Stack, users: Users) -> None:
    admin = users.user("admin", role=Role.ADMIN)
    victims = {action: users.user(action) for action in ("disable", "reset", "delete")}
    headers = {action: _token(stack, user) for action, user in victims.items()}
    with httpx.Client(base_url=stack.api, trust_env=False, timeout=10) as http, stack.http(*admin) as admin_http:
        for header in headers.values():
            for _ in range(2):  # the second answer comes from the cache
                assert http.get("/v1/sync", headers=header).status_code == 200
        name = victims["disable"][0]
        assert admin_http.patch(f"/v1/admin/users/{name}", json={"disabled": True}).status_code == 200
        assert http.get("/v1/sync", headers=headers["disable"]).status_code == 401
        name = victims["reset"][0]
        assert admin_http.post(f"/v1/admin/users/{name}/password", json={"password": "new-pw"}).status_code == 204
        assert http.get("/v1/sync", headers=headers["reset"]).status_code == 401
        assert admin_http.delete(f"/v1/admin/users/{victims['delete'][0]}").status_code == 204
        assert http.get("/v1/sync", headers=headers["delete"]).status_code == 401


def test_another_api_process_forgets_tokens_revoked_elsewhere(
    stack: Stack, users: Users, tmp_path_factory: pytest.TempPathFactory
) -> None:
    admin = users.user("admin", role=Role.ADMIN)
    alice, bob = users.user("alice"), users.user("bob")
    alice_token, bob_token = _token(stack, alice), _token(stack, bob)
    with (
        _second_api(stack, tmp_path_factory) as other,
        httpx.Client(base_url=other, trust_env=False, timeout=10) as http,
    ):
        for header in (alice_token, bob_token):
            assert http.get("/v1/sync", headers=header).status_code == 200  # now in the other process's cache
        with stack.http(*admin) as admin_http:
            assert admin_http.patch(f"/v1/admin/users/{alice[0]}", json={"disabled": True}).status_code == 200
            assert admin_http.post(f"/v1/admin/users/{bob[0]}/password", json={"password": "pw-2"}).status_code == 204
        for header in (alice_token, bob_token):
            wait_for(
                lambda h=header: http.get("/v1/sync", headers=h).status_code == 401 or None,  # type: ignore[misc]
                what="the other API process refusing the revoked token",
            )


def _mqtt_login(stack: Stack, user: str, header: dict[str, str], client_id: str) -> PahoClient:
    client = PahoClient(stack.mqtt_port, client_id, user, header["Authorization"].removeprefix("Bearer "), clean=True)
    client.connect()
    return client


def test_logout_ends_the_token_in_every_api_process_and_for_new_mqtt_logins(
    stack: Stack, users: Users, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``POST /v1/auth/logout`` ends the token it presents: 401 at once from this process, from another API
    process that had it cached (its change watch reads the ``tokens_revoked`` event), and a new MQTT connection
    with it is refused although the broker remembered it (mqtt.credentials_cache_seconds). The caller's other
    token and its open MQTT connection stay; ``/logout/all`` ends the rest, the password still works."""
    alice = users.user("alice")
    phone, laptop = _token(stack, alice), _token(stack, alice)
    with (
        _second_api(stack, tmp_path_factory) as other,
        httpx.Client(base_url=stack.api, trust_env=False, timeout=10) as here,
        httpx.Client(base_url=other, trust_env=False, timeout=10) as there,
    ):
        for http in (here, there):
            for header in (phone, laptop):
                assert http.get("/v1/sync", headers=header).status_code == 200  # cached in both processes
        live = _mqtt_login(stack, alice[0], phone, "alice-live")
        assert live.reason == "Success"  # and remembered by the broker
        try:
            assert here.post("/v1/auth/logout", headers=phone).status_code == 204
            assert here.get("/v1/sync", headers=phone).status_code == 401
            wait_for(
                lambda: there.get("/v1/sync", headers=phone).status_code == 401 or None,
                what="the other API process refusing the logged-out token",
            )
            again = _mqtt_login(stack, alice[0], phone, "alice-again")
            again.close()
            assert again.reason != "Success"
            assert not live.disconnected.is_set()  # open connections stay: the token is checked at CONNECT
            for http in (here, there):
                assert http.get("/v1/sync", headers=laptop).status_code == 200
            assert here.post("/v1/auth/logout/all", headers=laptop).status_code == 204
            assert here.get("/v1/sync", headers=laptop).status_code == 401
            wait_for(
                lambda: there.get("/v1/sync", headers=laptop).status_code == 401 or None,
                what="the other API process refusing the tokens of /logout/all",
            )
        finally:
            live.close()
    with stack.http(*alice) as basic:
        assert basic.get("/v1/sync").status_code == 200  # the password is not a token: it still works
        refused = basic.post("/v1/auth/logout")
        assert refused.status_code == 400 and "Bearer" in refused.json()["detail"]


def test_a_verified_token_is_answered_from_memory(
    stack: Stack, users: Users, engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The cache is real: once the other process has verified a token, removing the token's row behind its
    back (no revocation event: nothing in Switchboard does this) goes unseen until api.token_cache_seconds."""
    alice = users.user("alice")
    header = _token(stack, alice)
    with (
        _second_api(stack, tmp_path_factory) as other,
        httpx.Client(base_url=other, trust_env=False, timeout=10) as http,
    ):
        assert http.get("/v1/sync", headers=header).status_code == 200
        with engine.begin() as connection:
            digest = tokens.digest(header["Authorization"].removeprefix("Bearer "))
            connection.execute(delete(api_tokens).where(api_tokens.c.token_hash == digest))
        assert http.get("/v1/sync", headers=header).status_code == 200  # from memory
    with httpx.Client(base_url=stack.api, trust_env=False, timeout=10) as fresh:
        assert fresh.get("/v1/sync", headers=header).status_code == 401  # never verified there


def test_a_lookup_that_began_before_a_revocation_is_not_remembered() -> None:
    cache = TokenCache(60)
    later = datetime.fromtimestamp(4_000_000_000).astimezone()
    alice = Caller("alice", Role.USER)
    epoch = cache.epoch()  # a database lookup starts ...
    cache.forget("alice")  # ... an administrator revokes alice's tokens meanwhile ...
    cache.remember("sbt_x", alice, later, epoch)  # ... and the lookup's (stale) answer arrives
    assert cache.get("sbt_x") is None
    cache.remember("sbt_x", alice, later, cache.epoch())
    cache.remember("sbt_y", alice, later, cache.epoch())
    assert cache.get("sbt_x") == alice and cache.get("sbt_y") == alice
    cache.forget("alice")
    assert cache.get("sbt_x") is None and cache.get("sbt_y") is None
    past = datetime.fromtimestamp(1_000_000_000).astimezone()
    cache.remember("sbt_z", alice, past, cache.epoch())  # an expired token is never kept
    assert cache.get("sbt_z") is None
