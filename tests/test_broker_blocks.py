"""Issue 16 §3 over MQTT, enforced by the broker: a blocked user's DMs to its blocker are refused (with the words
of a chat.dm_policy refusal: the notice never says "blocked"), its typing and presence are not shown to the
blocker nor the blocker's presence to it, group messages still flow; ``chat.dm_policy: shared_group`` refuses a
DM between users who share no group and no DM; ``presence/{user}`` (live and retained, exact and wildcard
filters) reaches only users who share a conversation with it. Real clients (paho v3 and v5) against
``switchboard up`` on SQLite and Postgres; blocks are written to the table with their directory event, as the
REST route does, and a reconnect (a remembered login waits for the directory events before it) makes sure the
broker has read them."""

from __future__ import annotations

import json
from collections.abc import Callable

from sqlalchemy import Engine
from sqlmodel import Session

from switchboard import accounts, directory
from switchboard.acl import dm_refused
from switchboard.tables import Block, DirectoryChange
from tests.conftest import Users
from tests.helpers import PahoClient, Stack, wait_for
from tests.mqtt5 import V5Client
from tests.test_broker_door import notices, publish, v3


def block(engine: Engine, blocker: str, blocked: str, *, on: bool = True) -> None:
    """What ``PUT /v1/blocks/{blocked}`` (``DELETE``) does: the row and its directory event, in one transaction."""
    with Session(engine) as session:
        if on:
            session.add(Block(blocker=blocker, blocked=blocked))
        else:
            row = session.get(Block, (blocker, blocked))
            assert row is not None
            session.delete(row)
        directory.record(session, DirectoryChange.BLOCK_ADDED if on else DirectoryChange.BLOCK_REMOVED, blocker)
        session.commit()


def v5(clients: Callable[..., V5Client], port: int, user: str, password: str, *topics: str) -> V5Client:
    client = clients(port, user=user, password=password)
    client.connect()
    for topic in topics:
        assert client.subscribe((topic, 1))[0].value == 1
    return client


def received(client: V5Client, until: Callable[[list[tuple[str, bytes]]], bool]) -> list[tuple[str, bytes]]:
    """What an MQTT 5 client has received, once ``until`` holds for it."""
    got: list[tuple[str, bytes]] = []

    def check() -> bool:
        while not client.messages.empty():
            message = client.messages.get()
            got.append((message.topic, message.payload))
        return until(got)

    wait_for(check, what="messages")
    return got


def topics_of(client: PahoClient) -> list[str]:
    return [message[0] for message in client.messages]


def test_a_block_refuses_dms_and_hides_typing_and_presence_both_ways(
    stack: Stack, users: Users, clients: Callable[..., V5Client]
) -> None:
    bob, bob_pw = users.user("bob")
    mallory, mallory_pw = users.user("mallory")
    carol, carol_pw = users.user("carol")
    team = users.group("team", [bob, mallory, carol])
    dm = f"dm:{min(bob, mallory)}:{max(bob, mallory)}"
    for user, password in ((mallory, mallory_pw), (bob, bob_pw)):  # their next logins are remembered ones
        v5(clients, stack.mqtt_port, user, password).disconnect()
    block(users.engine, bob, mallory)

    watcher = v3(
        stack.mqtt_port,
        bob,
        bob_pw,
        f"dm/{bob}/+",
        f"group/{team}/+",
        f"typing/group:{team}/+",
        f"typing/{dm}/+",
        f"presence/{mallory}",
        f"presence/{carol}",
    )
    other = v3(stack.mqtt_port, carol, carol_pw)
    try:
        wait_for(lambda: f"presence/{carol}" in topics_of(watcher), what="carol's presence (a contact's) live")
        # A remembered login waits for the directory events before it: the block is known from here on.
        blocked = v5(clients, stack.mqtt_port, mallory, mallory_pw, f"ack/{mallory}")
        reason, properties = blocked.publish(f"dm/{bob}/{mallory}", b'{"id": "hi-1", "body": "hello?"}')
        assert reason.value == 0x87
        assert properties.ReasonString == dm_refused(bob)
        for topic in (f"typing/group:{team}/{mallory}", f"typing/{dm}/{mallory}"):
            assert blocked.publish(topic, b'{"typing": true}')[0].value == 0
        assert blocked.publish(f"group/{team}/{mallory}", b'{"id": "g-1", "body": "in the group"}')[0].value == 0

        wait_for(lambda: f"group/{team}/{mallory}" in topics_of(watcher), what="the group message")
        # Group messages still flow; nothing else of mallory's reached bob: no DM, no typing, no presence.
        assert topics_of(watcher) == [f"presence/{carol}", f"group/{team}/{mallory}"]
        told = received(blocked, lambda got: bool(notices(got, mallory)))
        notice = notices(told, mallory)[0]
        assert notice == {"id": "hi-1", "conversation": dm, "error": f"{bob} is not accepting direct messages from you"}
        assert "block" not in notice["error"]

        # Nor does mallory see bob's presence (retained: bob is online), while she sees carol's.
        assert blocked.subscribe((f"presence/{bob}", 1))[0].value == 1
        assert blocked.subscribe((f"presence/{carol}", 1))[0].value == 1
        got = received(blocked, lambda got: any(topic == f"presence/{carol}" for topic, _ in got))
        assert [topic for topic, _ in got if topic.startswith("presence/")] == [f"presence/{carol}"]

        # Unblocked: the DM goes through again.
        block(users.engine, bob, mallory, on=False)
        again = v5(clients, stack.mqtt_port, mallory, mallory_pw)
        assert again.publish(f"dm/{bob}/{mallory}", b'{"id": "hi-2", "body": "hello again"}')[0].value == 0
        wait_for(lambda: f"dm/{bob}/{mallory}" in topics_of(watcher), what="the DM after the unblock")
    finally:
        other.close()
        watcher.close()


def test_dm_policy_shared_group_refuses_strangers_with_the_words_of_a_block(
    door_stack: Stack, door_users: Users, clients: Callable[..., V5Client]
) -> None:
    alice, alice_pw = door_users.user("alice")
    bob, bob_pw = door_users.user("bob")
    carol, carol_pw = door_users.user("carol")
    dave, dave_pw = door_users.user("dave")
    door_users.group("team", [alice, bob])
    pair = door_users.group("pair", [alice, dave])
    inbox = v5(clients, door_stack.mqtt_port, alice, alice_pw, f"dm/{alice}/+")

    stranger = v5(clients, door_stack.mqtt_port, carol, carol_pw, f"ack/{carol}")
    reason, properties = stranger.publish(f"dm/{alice}/{carol}", b'{"id": "c-1", "body": "hi, stranger here"}')
    assert reason.value == 0x87 and properties.ReasonString == dm_refused(alice)
    told = received(stranger, lambda got: bool(notices(got, carol)))
    assert notices(told, carol)[0]["error"] == dm_refused(alice)

    member = v5(clients, door_stack.mqtt_port, bob, bob_pw)
    assert member.publish(f"dm/{alice}/{bob}", b'{"id": "b-1", "body": "hi from the team"}')[0].value == 0

    # dave shares a group with alice, writes to her (stored: acknowledged with a seq), then leaves the group:
    # they still have a DM with messages, so he may go on writing.
    friend = v5(clients, door_stack.mqtt_port, dave, dave_pw, f"ack/{dave}")
    assert friend.publish(f"dm/{alice}/{dave}", b'{"id": "d-1", "body": "hi"}')[0].value == 0
    received(friend, lambda got: any("seq" in json.loads(payload) for _, payload in got))
    with Session(door_users.engine) as session:
        accounts.remove_member(session, pair, dave)
        session.commit()
    friend.disconnect()
    friend = v5(clients, door_stack.mqtt_port, dave, dave_pw)  # remembered login: the removal is read
    assert friend.publish(f"dm/{alice}/{dave}", b'{"id": "d-2", "body": "still here"}')[0].value == 0

    got = received(inbox, lambda got: len(got) >= 3)
    assert sorted(json.loads(payload)["id"] for _, payload in got) == ["b-1", "d-1", "d-2"]
    assert inbox.no_message(0.5)


def test_presence_reaches_only_users_who_share_a_conversation(
    stack: Stack, users: Users, clients: Callable[..., V5Client]
) -> None:
    alice, alice_pw = users.user("alice")
    bob, bob_pw = users.user("bob")  # shares a group with alice
    carol, carol_pw = users.user("carol")  # a stranger
    dave, dave_pw = users.user("dave")  # has a DM with messages with alice
    users.group("team", [alice, bob])
    writer = v5(clients, stack.mqtt_port, dave, dave_pw, f"ack/{dave}")
    assert writer.publish(f"dm/{alice}/{dave}", b'{"id": "d-1", "body": "hi alice"}')[0].value == 0
    received(writer, lambda got: any("seq" in json.loads(payload) for _, payload in got))  # stored
    writer.disconnect()

    subject = v5(clients, stack.mqtt_port, alice, alice_pw)
    contact = v5(clients, stack.mqtt_port, bob, bob_pw, "presence/+")  # a wildcard: retained alice online
    partner = v5(clients, stack.mqtt_port, dave, dave_pw, f"presence/{alice}")
    stranger = v3(stack.mqtt_port, carol, carol_pw, "presence/+", f"presence/{alice}", f"presence/{carol}")
    try:
        for client in (contact, partner):
            received(client, lambda got: (f"presence/{alice}", True) in _statuses(got, "online"))
        # The stranger's own presence comes through both of its filters; alice's through neither.
        wait_for(lambda: topics_of(stranger).count(f"presence/{carol}") >= 2, what="carol's own presence")
        assert f"presence/{alice}" not in topics_of(stranger)

        subject.disconnect()  # live: offline reaches the contact and the DM partner, not the stranger
        for client in (contact, partner):
            received(client, lambda got: (f"presence/{alice}", True) in _statuses(got, "offline"))
        publish(stranger, f"presence/{carol}", b'{"status": "online"}')
        # Once (overlapping subscriptions deliver a message once [MQTT-3.3.5-1]).
        wait_for(lambda: topics_of(stranger).count(f"presence/{carol}") >= 3, what="carol's own presence again")
        assert f"presence/{alice}" not in topics_of(stranger)
    finally:
        stranger.close()


def _statuses(got: list[tuple[str, bytes]], status: str) -> list[tuple[str, bool]]:
    return [(topic, json.loads(payload).get("status") == status) for topic, payload in got if payload]
