"""/v1/admin: users and groups for administrators only, and each change taking effect in the broker on open
connections (a removed member stops receiving the group; disabled, deleted or password-reset users are
disconnected), on Postgres and SQLite."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import httpx

from switchboard.tables import Role
from tests.conftest import Users
from tests.helpers import Stack, wait_for
from tests.rawmqtt import RawClient

Raw = Callable[[int], RawClient]


def _client_id() -> str:
    return f"adm-{secrets.token_hex(4)}"


def test_admin_routes_are_for_admins_only(stack: Stack, users: Users) -> None:
    alice = users.user("alice")
    routes = [
        ("GET", "/v1/admin/users", None),
        ("POST", "/v1/admin/users", {"name": "x", "password": "y"}),
        ("PATCH", f"/v1/admin/users/{alice[0]}", {"disabled": True}),
        ("POST", f"/v1/admin/users/{alice[0]}/password", {"password": "y"}),
        ("DELETE", f"/v1/admin/users/{alice[0]}", None),
        ("GET", "/v1/admin/groups", None),
        ("POST", "/v1/admin/groups", {"name": "g"}),
        ("PUT", f"/v1/admin/groups/g/members/{alice[0]}", None),
        ("DELETE", f"/v1/admin/groups/g/members/{alice[0]}", None),
    ]
    with stack.http(*alice) as http, httpx.Client(base_url=stack.api, trust_env=False) as anonymous:
        for method, path, body in routes:
            answer = http.request(method, path, json=body)
            assert answer.status_code == 403 and "administrators only" in answer.json()["detail"], (method, path)
            assert anonymous.request(method, path, json=body).status_code == 401, (method, path)
        assert http.get(f"/v1/conversations?me={alice[0]}").status_code == 200  # alice herself is fine


def test_admin_manages_users(stack: Stack, users: Users, raw: Raw) -> None:
    admin = users.user("admin", role=Role.ADMIN)
    name = f"dora-{users.suffix}"
    with stack.http(*admin) as http:
        created = http.post("/v1/admin/users", json={"name": name, "password": "first-pass"})
        assert created.status_code == 201 and created.json()["role"] == "user" and not created.json()["disabled"]
        assert http.post("/v1/admin/users", json={"name": name, "password": "x"}).status_code == 409
        bad = http.post("/v1/admin/users", json={"name": "no spaces", "password": "x"})
        assert bad.status_code == 422 and "name" in bad.text
        assert http.post("/v1/admin/users", json={"name": "x", "password": "x", "extra": 1}).status_code == 422
        assert name in [u["name"] for u in http.get("/v1/admin/users").json()["users"]]
        assert http.patch(f"/v1/admin/users/{admin[0]}", json={"disabled": True}).status_code == 409  # not yourself
        assert http.patch("/v1/admin/users/nobody-at-all", json={"disabled": True}).status_code == 404

        # disabling: the open MQTT connection closes, logins and tokens stop working, until enabled again
        token = httpx.post(
            f"{stack.api}/v1/auth/token", json={"username": name, "password": "first-pass"}, trust_env=False
        ).json()["access_token"]
        device = raw(stack.mqtt_port)
        assert device.connect(_client_id(), name, "first-pass").body[1] == 0
        assert http.patch(f"/v1/admin/users/{name}", json={"disabled": True}).json()["disabled"] is True
        assert device.closed_by_broker(timeout=20)
        assert raw(stack.mqtt_port).connect(_client_id(), name, "first-pass").body[1] != 0
        bearer = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{stack.api}/v1/conversations", headers=bearer, trust_env=False).status_code == 401
        assert http.patch(f"/v1/admin/users/{name}", json={"disabled": False}).json()["disabled"] is False
        assert raw(stack.mqtt_port).connect(_client_id(), name, "first-pass").body[1] == 0

        # a password reset closes connections and revokes tokens; only the new password works
        device = raw(stack.mqtt_port)
        assert device.connect(_client_id(), name, "first-pass").body[1] == 0
        reset = http.post(f"/v1/admin/users/{name}/password", json={"password": "second-pass"})
        assert reset.status_code == 204
        assert device.closed_by_broker(timeout=20)
        assert httpx.get(f"{stack.api}/v1/conversations", headers=bearer, trust_env=False).status_code == 401
        assert raw(stack.mqtt_port).connect(_client_id(), name, "first-pass").body[1] != 0
        assert raw(stack.mqtt_port).connect(_client_id(), name, "second-pass").body[1] == 0

        # deleting: disconnected, gone from the list, and the name is never handed out again
        device = raw(stack.mqtt_port)
        assert device.connect(_client_id(), name, "second-pass", clean=False).body[1] == 0
        assert http.delete(f"/v1/admin/users/{name}").status_code == 204
        assert device.closed_by_broker(timeout=20)
        assert name not in [u["name"] for u in http.get("/v1/admin/users").json()["users"]]
        assert http.delete(f"/v1/admin/users/{name}").status_code == 404
        again = http.post("/v1/admin/users", json={"name": name, "password": "x"})
        assert again.status_code == 409 and "not reused" in again.json()["detail"]


def test_admin_manages_groups(stack: Stack, users: Users) -> None:
    admin, alice, bob = users.user("admin", role=Role.ADMIN), users.user("alice"), users.user("bob")
    name = f"club-{users.suffix}"
    with stack.http(*admin) as http:
        created = http.post("/v1/admin/groups", json={"name": name, "members": [alice[0]]})
        assert created.status_code == 201 and created.json()["members"] == [alice[0]]
        assert http.post("/v1/admin/groups", json={"name": name}).status_code == 409
        unknown = http.post("/v1/admin/groups", json={"name": f"x-{name}", "members": ["nobody-at-all"]})
        assert unknown.status_code == 404 and "nobody-at-all" in unknown.json()["detail"]
        assert http.put(f"/v1/admin/groups/{name}/members/{bob[0]}").status_code == 204
        assert http.put(f"/v1/admin/groups/{name}/members/{bob[0]}").status_code == 204  # idempotent
        assert http.put(f"/v1/admin/groups/{name}/members/nobody-at-all").status_code == 404
        assert http.put(f"/v1/admin/groups/no-such-group/members/{bob[0]}").status_code == 404
        listed = {g["name"]: g["members"] for g in http.get("/v1/admin/groups").json()["groups"]}
        assert listed[name] == sorted([alice[0], bob[0]])
        assert http.delete(f"/v1/admin/groups/{name}/members/{alice[0]}").status_code == 204
        assert http.delete(f"/v1/admin/groups/{name}/members/{alice[0]}").status_code == 404
        listed = {g["name"]: g["members"] for g in http.get("/v1/admin/groups").json()["groups"]}
        assert listed[name] == [bob[0]]


def test_a_removed_member_stops_receiving_on_its_open_connection(stack: Stack, users: Users, raw: Raw) -> None:
    admin, alice, bob, carol = (
        users.user(n, role=Role.ADMIN if n == "admin" else Role.USER) for n in ("admin", "alice", "bob", "carol")
    )
    team = users.group("team", [alice[0], bob[0], carol[0]])
    sender, removed, staying = raw(stack.mqtt_port), raw(stack.mqtt_port), raw(stack.mqtt_port)
    assert sender.connect(_client_id(), *alice).body[1] == 0
    assert removed.connect(_client_id(), *bob).body[1] == 0
    assert staying.connect(_client_id(), *carol).body[1] == 0
    assert removed.subscribe((f"group/{team}/+", 0), (f"dm/{bob[0]}/+", 0)) == [0, 0]
    assert staying.subscribe((f"group/{team}/+", 0)) == [0]
    sender.publish(f"group/{team}/{alice[0]}", b'{"id": "before", "body": "hi"}')
    assert removed.expect(3).payload == staying.expect(3).payload == b'{"id": "before", "body": "hi"}'

    with stack.http(*admin) as http:
        assert http.delete(f"/v1/admin/groups/{team}/members/{bob[0]}").status_code == 204
    rounds = iter(range(1000))

    def removal_applied() -> bool:
        probe = f'{{"id": "probe-{next(rounds)}", "body": "?"}}'.encode()
        sender.publish(f"group/{team}/{alice[0]}", probe)
        assert staying.expect(3).payload == probe
        return not [p for p in removed.publishes_for(0.3) if p.payload == probe]

    wait_for(removal_applied, what="the broker applying the membership removal")
    for n in range(3):
        sender.publish(f"group/{team}/{alice[0]}", f'{{"id": "after-{n}", "body": "x"}}'.encode())
    assert [staying.expect(3).payload for _ in range(3)] == [
        f'{{"id": "after-{n}", "body": "x"}}'.encode() for n in range(3)
    ]
    assert removed.publishes_for(1.0) == []
    # the connection itself is untouched: bob still gets his DMs on it
    sender.publish(f"dm/{bob[0]}/{alice[0]}", b'{"id": "dm", "body": "still here"}')
    assert removed.expect(3).payload == b'{"id": "dm", "body": "still here"}'
