"""Failed logins (switchboard/logins.py) against real processes on Postgres: ``switchboard up`` and a second
``switchboard api`` behind a trusted proxy, real MQTT clients (mosquitto_pub bound to a source address,
127.0.0.2 standing for another machine) and real HTTP. The stack allows 3 failures per user and address,
and the per-user backoff starts only at 3, so the hard limit is reached without waiting."""

from __future__ import annotations

import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, col, select

from switchboard.db import make_engine, upgrade
from switchboard.logins import LoginThrottle, Throttled
from switchboard.settings import LoginSettings
from switchboard.tables import LoginFailure, Role
from tests.conftest import Users, create_database, drop_database
from tests.helpers import (
    Service,
    Stack,
    run_mosquitto_pub,
    start_service,
    start_stack,
    statements_sent,
    switchboard_env,
)

HOOK_SECRET = "hook-secret-" + secrets.token_hex(8)
LIMITS = {
    "SWITCHBOARD_LOGIN__MAX_FAILURES": "3",
    "SWITCHBOARD_LOGIN__BACKOFF_AFTER": "3",
    "SWITCHBOARD_LOGIN__BACKOFF_MAX_SECONDS": "1",
    "SWITCHBOARD_API__HOOK_SECRET": HOOK_SECRET,
}
ELSEWHERE = "127.0.0.2"


@dataclass
class Site:
    stack: Stack
    proxied_api: str  # a second API process trusting X-Forwarded-For from 127.0.0.1
    users: Users

    def http(self, base: str | None = None, *, source: str = "127.0.0.1", **kwargs: Any) -> httpx.Client:
        transport = httpx.HTTPTransport(local_address=source)
        return httpx.Client(base_url=base or self.stack.api, transport=transport, trust_env=False, timeout=30, **kwargs)

    def mqtt_login(self, user: str, password: str, *, source: str = "127.0.0.1") -> bool:
        """Whether ``mosquitto_pub`` connecting from ``source`` is let in (CONNACK accepted) or refused."""
        topic = f"presence/{user}"
        result = run_mosquitto_pub(self.stack.mqtt_port, user, password, topic, "{}", qos=0, extra=("-A", source))
        if result.returncode == 0:
            return True
        assert b"not authori" in result.stderr.lower(), result.stderr  # nothing else may go wrong
        return False


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    name = f"switchboard_logins_{secrets.token_hex(4)}"
    url = create_database(name)
    stack = start_stack(url, tmp_path_factory.mktemp("logins"), **LIMITS)
    env = switchboard_env(url, SWITCHBOARD_API__TRUSTED_PROXIES='["127.0.0.1"]', **LIMITS)
    api: Service = start_service("api", env=env, cwd=Path(tmp_path_factory.mktemp("logins-api")))
    engine = make_engine(url)
    try:
        port = int(api.out.wait_for(r"api listening on http://[\d.]+:(\d+)", 60).group(1))
        yield Site(stack, f"http://127.0.0.1:{port}", Users(engine))
    finally:
        engine.dispose()
        api.stop(signal.SIGINT)
        stack.stop(signal.SIGINT)
        drop_database(name)


def _recorded(site: Site, user: str) -> dict[str, int]:
    with Session(site.users.engine) as session:
        rows = session.exec(select(LoginFailure).where(col(LoginFailure.user_name) == user)).all()
        return {row.address: row.failures for row in rows}


def test_mqtt_password_guessing_is_refused_while_the_owner_logs_in_from_elsewhere(site: Site) -> None:
    owner, password = site.users.user("owner")
    assert [site.mqtt_login(owner, f"guess-{n}") for n in range(3)] == [False] * 3
    # today's code let the right password in after any number of guesses; now the guessing address is refused
    assert not site.mqtt_login(owner, password)
    site.stack.out.wait_for(rf"user={owner} from 127\.0\.0\.1: too many failed logins", 20)
    # ... and the owner, on another machine, is not
    assert site.mqtt_login(owner, password, source=ELSEWHERE)
    assert _recorded(site, owner) == {"127.0.0.1": 3}


def test_rest_owner_is_not_locked_out_by_a_strangers_failures(site: Site) -> None:
    owner = site.users.user("rest-owner")
    with site.http(source=ELSEWHERE) as stranger:
        codes = [stranger.get("/v1/conversations", auth=(owner[0], f"guess-{n}")).status_code for n in range(4)]
        refused = stranger.get("/v1/conversations", auth=owner)
    assert codes == [401, 401, 401, 429]
    assert refused.status_code == 429 and 0 < int(refused.headers["retry-after"]) <= 900
    with site.http(auth=owner) as http:  # today: 10 failures from anywhere made this 429 for 5 minutes
        assert http.get("/v1/conversations").status_code == 200


def test_rest_and_mqtt_failures_count_in_one_limiter_shared_by_processes(site: Site) -> None:
    owner, password = site.users.user("shared")
    assert not site.mqtt_login(owner, "guess-1") and not site.mqtt_login(owner, "guess-2")  # the broker
    with site.http() as http:  # the API of the same process
        assert http.post("/v1/auth/token", json={"username": owner, "password": "guess-3"}).status_code == 401
    # the third failure, wherever it happened, closes the address, at another API process too
    with site.http(site.proxied_api) as other:
        refused = other.post("/v1/auth/token", json={"username": owner, "password": password})
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["retry-after"]) > 0 and "too many failed logins" in refused.json()["detail"]
    assert not site.mqtt_login(owner, password)
    with site.http(site.proxied_api, source=ELSEWHERE) as elsewhere:
        assert elsewhere.post("/v1/auth/token", json={"username": owner, "password": password}).status_code == 200


def test_forwarded_for_counts_only_from_a_trusted_proxy(site: Site) -> None:
    forged = {"X-Forwarded-For": "1.2.3.4"}
    # default settings (api.trusted_proxies empty): the header is ignored, the peer is the key
    victim = site.users.user("xff-default")
    with site.http() as http:
        for n in range(3):
            http.get("/v1/conversations", auth=(victim[0], f"guess-{n}"), headers=forged)
        assert http.get("/v1/conversations", auth=victim).status_code == 429
    assert _recorded(site, victim[0]) == {"127.0.0.1": 3}
    # api.trusted_proxies = ["127.0.0.1"]: the proxy's X-Forwarded-For names the client
    client = site.users.user("xff-trusted")
    with site.http(site.proxied_api) as proxy:
        for n in range(3):
            proxy.get("/v1/conversations", auth=(client[0], f"guess-{n}"), headers=forged)
        assert proxy.get("/v1/conversations", auth=client, headers=forged).status_code == 429
        assert proxy.get("/v1/conversations", auth=client).status_code == 200  # the proxy's own address
    assert _recorded(site, client[0]) == {"1.2.3.4": 3}


def test_hooks_answer_only_the_external_broker_and_reveal_nothing_else(site: Site) -> None:
    alice, bob = site.users.user("hook-alice"), site.users.user("hook-bob")
    service = site.users.user("hook-broker", role=Role.SERVICE)
    auth_body = {"username": alice[0], "password": alice[1]}
    acl_body = {"username": alice[0], "topic": f"dm/{bob[0]}/{alice[0]}", "action": "publish"}
    with site.http() as http:
        refusals = [
            http.post("/v1/mqtt/auth", json=auth_body),
            http.post("/v1/mqtt/acl", json=acl_body),
            http.post("/v1/mqtt/auth", json=auth_body, headers={"X-Switchboard-Hook-Secret": "not-it"}),
            http.post("/v1/mqtt/acl", json=acl_body, auth=(f"nobody-{secrets.token_hex(3)}", "pw")),  # no such user
            http.post("/v1/mqtt/acl", json=acl_body, auth=(service[0], "wrong")),  # a wrong password
            http.post("/v1/mqtt/acl", json=acl_body, auth=bob),  # a real user, but not a service account
        ]
        assert [r.status_code for r in refusals] == [401] * 6
        assert len({r.text for r in refusals}) == 1 and alice[0] not in refusals[0].text
        ways: list[dict[str, Any]] = [{"auth": service}, {"headers": {"X-Switchboard-Hook-Secret": HOOK_SECRET}}]
        for access in ways:
            assert http.post("/v1/mqtt/auth", json=auth_body, **access).json()["result"] == "allow"
            assert http.post("/v1/mqtt/acl", json=acl_body, **access).json()["result"] == "allow"


def test_hook_logins_are_throttled_per_mqtt_client_address(site: Site) -> None:
    """EMQX sends the client's ``peerhost``: one client's guessing does not lock out the broker's others."""
    owner, password = site.users.user("hook-owner")
    with site.http(headers={"X-Switchboard-Hook-Secret": HOOK_SECRET}) as broker:

        def hook(secret: str, peer: str) -> dict[str, object]:
            body = {"username": owner, "password": secret, "clientid": "c", "peerhost": peer}
            answer: dict[str, object] = broker.post("/v1/mqtt/auth", json=body).json()
            return answer

        assert [hook(f"guess-{n}", "198.51.100.1")["ok"] for n in range(3)] == [False] * 3
        throttled = hook(password, "198.51.100.1")
        assert throttled["ok"] is False and "too many failed logins" in str(throttled["error"])
        assert hook(password, "198.51.100.2")["ok"] is True
    assert _recorded(site, owner) == {"198.51.100.1": 3}


def test_tokens_issued_before_a_disable_stay_dead_after_enable(site: Site) -> None:
    admin = site.users.user("admin", role=Role.ADMIN)
    user, password = site.users.user("disabled-once")
    with site.http() as http:
        token = http.post("/v1/auth/token", json={"username": user, "password": password}).json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        assert http.get("/v1/conversations", headers=bearer).status_code == 200
        assert site.mqtt_login(user, token)
        for disabled in (True, False):
            changed = http.patch(f"/v1/admin/users/{user}", json={"disabled": disabled}, auth=admin)
            assert changed.status_code == 200, changed.text
        assert http.get("/v1/conversations", headers=bearer).status_code == 401
        assert http.get("/v1/conversations", auth=(user, token)).status_code == 401
        assert not site.mqtt_login(user, token, source=ELSEWHERE)
        # the account itself is back
        assert http.get("/v1/conversations", auth=(user, password)).status_code == 200
        assert site.mqtt_login(user, password, source=ELSEWHERE)


def test_backoff_slows_only_addresses_that_failed_and_is_capped(tmp_path: Path) -> None:
    """The limiter itself on a SQLite file: the per-user backoff grows with the user's failures from every
    address, stops at its cap, and never refuses an address with no failure of its own."""
    engine = make_engine(f"sqlite:///{tmp_path}/logins.db")
    upgrade(engine)
    throttle = LoginThrottle(engine, LoginSettings(max_failures=100, backoff_after=2, backoff_max_seconds=30))
    right, wrong = (lambda: "in"), (lambda: None)
    try:
        assert throttle.attempt("target", "10.0.0.1", wrong) is None  # 1 failure: no backoff yet
        assert throttle.attempt("target", "10.0.0.1", wrong) is None  # 2: the backoff starts at 1 s
        with pytest.raises(Throttled) as first:
            throttle.attempt("target", "10.0.0.1", right)
        assert first.value.retry_after == 1
        for stranger in range(5):  # 7 failures of the user: 2**5 s, capped at 30
            assert throttle.attempt("target", f"10.0.1.{stranger}", wrong) is None
        with pytest.raises(Throttled) as later:
            throttle.attempt("target", "10.0.0.1", right)
        assert 1 < later.value.retry_after <= 30
        assert throttle.attempt("target", "10.0.9.9", right) == "in"  # a clean address: never refused
        # a success where failures were recorded clears them; a success without any writes nothing
        assert throttle.attempt("other", "10.0.0.1", wrong) is None
        assert throttle.attempt("other", "10.0.0.1", right) == "in"
        with statements_sent(engine) as sent:
            assert throttle.attempt("other", "10.0.0.1", right) == "in"
            assert throttle.attempt("target", "10.0.9.9", right) == "in"
        writes = [statement.split()[0].upper() for statement in sent]
        assert [verb for verb in writes if verb in ("INSERT", "UPDATE", "DELETE")] == []
    finally:
        engine.dispose()
