"""The fast read path (api/reads.py): history and sync pages rendered straight from rows say exactly what the
response models say (MessagesPage, SyncPage: no field missing, none extra, timestamps alike), and history
answers 404, 403 or an empty page as the dependency-checked route did."""

from __future__ import annotations

import dataclasses
import json

import httpx
import orjson
from sqlalchemy import Engine
from sqlmodel import Session

from api import reads
from api.schemas import MessagePublic, MessagesPage, RelationPublic, SyncPage
from bridge.store import Incoming, Stored, save_batch
from switchboard import accounts
from switchboard.db import session_scope
from switchboard.message_views import MessageView, RelationView
from switchboard.payloads import ReceiptPayload
from switchboard.watermarks import save_receipt
from tests.conftest import Users
from tests.helpers import Stack, mosquitto_pub, statements_sent, wait_for


def test_message_views_are_rendered_with_the_public_models_fields_in_order() -> None:
    """api/reads.py hands the views to orjson as they are: their fields are the response models' fields."""
    assert [f.name for f in dataclasses.fields(MessageView)] == list(MessagePublic.model_fields)
    assert [f.name for f in dataclasses.fields(RelationView)] == list(RelationPublic.model_fields)


def test_a_page_without_reactions_or_relations_asks_one_query_for_its_messages(engine: Engine, users: Users) -> None:
    """Issue 18: one query per history page (its access check and whether each message has reactions ride
    along as columns); sync reads the heads, then the messages. Reactions cost one more query only on a page
    that has some, and still show, unsent ones left out."""
    (alice, _), (bob, _) = users.user("alice"), users.user("bob")
    conversation = f"dm:{min(alice, bob)}:{max(alice, bob)}"
    reading = engine.execution_options(isolation_level="AUTOCOMMIT")  # as the API reads (api/app.py)
    since = reads.sync_page(reading, alice, None, 10).content["next"]
    with session_scope(engine) as session:
        save_batch(
            session, [Incoming(f"dm/{bob}/{alice}", orjson.dumps({"id": f"m{n}", "body": "hi"})) for n in range(5)]
        )
    with statements_sent(engine) as sent:
        page = orjson.loads(reads.history_page(reading, alice, conversation, None, None, 50))
    assert len(sent) == 1 and [m["seq"] for m in page["messages"]] == [5, 4, 3, 2, 1]
    with statements_sent(engine) as sent:
        synced = orjson.loads(reads.dumps(reads.sync_page(reading, alice, since, 100).content))
    assert len(sent) == 2 and len(synced["messages"]) == 5
    reaction = {"kind": "reaction", "sender": alice, "id": "m3"}
    unsend = {"kind": "unsend", "sender": bob, "id": "r2"}
    with session_scope(engine) as session:
        outcomes = save_batch(
            session,
            [
                Incoming(f"dm/{alice}/{bob}", orjson.dumps({"id": "r1", "body": "👍", "relates_to": reaction})),
                Incoming(f"dm/{alice}/{bob}", orjson.dumps({"id": "r2", "body": "❤️", "relates_to": reaction})),
                Incoming(f"dm/{alice}/{bob}", orjson.dumps({"id": "u1", "body": "", "relates_to": unsend})),
            ],
        )
    assert all(isinstance(o, Stored) for o in outcomes), outcomes
    with statements_sent(engine) as sent:
        page = orjson.loads(reads.history_page(reading, alice, conversation, 5, None, 50))
    assert len(sent) == 2
    assert [(m["seq"], m["reactions"]) for m in page["messages"]] == [(4, {"👍": [bob]}), (3, {}), (2, {}), (1, {})]


def test_sync_reads_each_conversation_by_its_index_and_pages_as_before(engine: Engine, users: Users) -> None:
    """On Postgres a sync page takes at most ``limit`` messages (and receipts) from each of the caller's
    conversations by its (conversation_id, stream_pos) index (LATERAL), then the first ``limit`` of those (issue
    18: a member of a group of 300,000 messages syncing from the start sorted them all for every page). The
    pages are the plain statement's, page after page, across DMs and a group whose positions interleave, and
    nothing from a conversation the caller is not part of; SQLite keeps the plain statement."""
    (alice, _), (bob, _), (carol, _) = users.user("alice"), users.user("bob"), users.user("carol")
    team = users.group("team", [alice, bob])
    reading = engine.execution_options(isolation_level="AUTOCOMMIT")
    since = reads.sync_page(reading, alice, None, 10).content["next"]
    topics = [f"dm/{alice}/{bob}", f"group/{team}/{bob}", f"dm/{carol}/{bob}", f"dm/{alice}/{carol}"]
    batch = [Incoming(topics[n % 4], orjson.dumps({"id": f"m{n}", "body": str(n)})) for n in range(23)]
    with session_scope(engine) as session:
        assert all(isinstance(o, Stored) for o in save_batch(session, batch))
    pair = ":".join(sorted((alice, bob))), ":".join(sorted((bob, carol))), ":".join(sorted((alice, carol)))
    readers = [(bob, alice, f"dm:{pair[0]}"), (bob, alice, f"group:{team}"), (carol, bob, f"dm:{pair[1]}")]
    readers.append((carol, alice, f"dm:{pair[2]}"))
    with session_scope(engine) as session:
        for n in range(8):  # each reader's receipt twice: the second moves its row's position
            reader, sender, conversation = readers[n % 4]
            assert save_receipt(session, reader, sender, ReceiptPayload(conversation, n // 4 + 1, "read")) is None
    seen: list[str] = []
    receipts: list[tuple[str, str]] = []
    cursor = since
    while True:
        with statements_sent(engine) as sent:
            page = reads.sync_page(reading, alice, cursor, 2)
        streams = [text for text in sent if ".stream_pos >" in text]  # the messages' and receipts' statements
        assert streams and all(("JOIN LATERAL" in text) == (engine.dialect.name == "postgresql") for text in streams)
        after = reads.Cursor.parse(cursor)
        assert after is not None
        with reading.connect() as connection:
            plain = connection.execute(reads.MESSAGES_AFTER, {"user": alice, "after": after.messages, "limit": 3})
            assert [m.id for m in page.content["messages"]] == [row.client_msg_id for row in plain][:2]
            plain = connection.execute(reads.RECEIPTS_AFTER, {"user": alice, "after": after.receipts, "limit": 3})
            expected = [(row.conversation_id, row.user_name) for row in plain][:2]
            assert [(r["conversation"], r["user"]) for r in page.content["receipts"]] == expected
        seen += [m.id for m in page.content["messages"]]
        receipts += [(r["conversation"], r["user"]) for r in page.content["receipts"]]
        cursor = page.content["next"]
        if not page.content["more"]:
            break
    assert seen == [f"m{n}" for n in range(23) if n % 4 != 2]  # not the DM between bob and carol
    assert receipts == [
        (conversation, reader)
        for reader, _, conversation in readers
        if bob not in conversation or alice in conversation
    ]


def test_history_and_sync_pages_match_their_response_models(stack: Stack, users: Users) -> None:
    alice, bob = users.user("alice"), users.user("bob")
    dm = "dm:" + ":".join(sorted((alice[0], bob[0])))
    with stack.http(*alice) as http:
        since = http.get("/v1/sync").json()["next"]
        for n in range(3):
            body = json.dumps({"id": f"m{n}", "body": f"hé {n} \u2603"})
            mosquitto_pub(stack.mqtt_port, *bob, f"dm/{alice[0]}/{bob[0]}", body)
        page = wait_for(
            lambda: (p := http.get(f"/v1/conversations/{dm}/messages", params={"limit": 2}).json())["next"] and p,
            what="three stored messages",
        )
        assert page == MessagesPage.model_validate(page).model_dump(mode="json")
        assert [m["id"] for m in page["messages"]] == ["m2", "m1"] and page["direction"] == "backward"
        assert page["messages"][0]["stored_at"].endswith("Z")
        rest = http.get(f"/v1/conversations/{dm}/messages", params={"before": page["next"]}).json()
        assert [m["id"] for m in rest["messages"]] == ["m0"] and rest["next"] is None
        forward = http.get(f"/v1/conversations/{dm}/messages", params={"after": 1}).json()
        assert [m["seq"] for m in forward["messages"]] == [2, 3] and forward["direction"] == "forward"
        synced = http.get("/v1/sync", params={"since": since}).json()
        assert synced == SyncPage.model_validate(synced).model_dump(mode="json")
        assert [m["id"] for m in synced["messages"]] == ["m0", "m1", "m2"]


def test_history_refuses_as_before(stack: Stack, users: Users) -> None:
    alice, bob, carol = users.user("alice"), users.user("bob"), users.user("carol")
    team = users.group("team", [bob[0]])
    gone = users.user("gone")
    with Session(users.engine) as session:
        accounts.delete_user(session, gone[0])
        session.commit()
    pair = ":".join(sorted((alice[0], bob[0])))
    with stack.http(*alice) as http:
        quiet = http.get(f"/v1/conversations/dm:{pair}/messages")
        assert quiet.status_code == 200 and quiet.json()["messages"] == [] and quiet.json()["next"] is None
        expectations = {
            "dm:" + ":".join(sorted((bob[0], carol[0]))): 403,  # someone else's DM
            f"group:{team}": 403,  # a group alice is not in
            "group:no-such-group": 404,
            "dm:" + ":".join(sorted((alice[0], "nobody-at-all"))): 404,
            "dm:" + ":".join(sorted((alice[0], gone[0]))): 404,  # the other user was deleted
            "dm:zz:aa": 404,  # not a conversation id (names unsorted)
        }
        for conversation, code in expectations.items():
            answer = http.get(f"/v1/conversations/{conversation}/messages")
            assert answer.status_code == code, (conversation, answer.text)
            assert conversation in answer.json()["detail"]
        assert http.get(f"/v1/conversations/dm:{pair}/messages", params={"limit": 501}).status_code == 422


def test_the_fast_lane_answers_as_the_routes_do(stack: Stack, users: Users) -> None:
    """A bearer token the API has verified takes the fast lane (api/fast_lane.py); HTTP Basic always takes the
    routes. Both answer every request alike: pages, refusals, and what the lane passes on to the routes
    (parameters out of bounds or not plain digits, a long poll)."""
    alice, bob, carol = users.user("alice"), users.user("bob"), users.user("carol")
    team = users.group("team", [bob[0]])
    dm = "dm:" + ":".join(sorted((alice[0], bob[0])))
    history = f"/v1/conversations/{dm}/messages"
    with stack.http(*alice) as basic, httpx.Client(base_url=stack.api, trust_env=False, timeout=10) as bearer:
        token = basic.post("/v1/auth/token", json={"username": alice[0], "password": alice[1]}).json()
        bearer.headers["Authorization"] = f"Bearer {token['access_token']}"
        since = bearer.get("/v1/sync").json()["next"]  # the route verifies the token: the lane has it from now on
        for n in range(3):
            mosquitto_pub(stack.mqtt_port, *bob, f"dm/{alice[0]}/{bob[0]}", json.dumps({"id": f"m{n}", "body": "hi"}))
        wait_for(lambda: len(bearer.get(history).json()["messages"]) == 3 or None, what="three stored messages")
        requests: list[tuple[str, dict[str, str]]] = [
            (history, {}),
            (history, {"limit": "2"}),
            (history, {"before": "3", "limit": "1"}),
            (history, {"after": "1"}),
            ("/v1/sync", {}),
            ("/v1/sync", {"since": since}),
            ("/v1/sync", {"since": since, "limit": "1"}),
            ("/v1/sync", {"since": "v1.nonsense"}),  # 400
            ("/v1/sync", {"since": since, "timeout": "0"}),  # a long poll: the route's
            ("/v1/conversations/" + "dm:" + ":".join(sorted((bob[0], carol[0]))) + "/messages", {}),  # 403
            (f"/v1/conversations/group:{team}/messages", {}),  # 403
            ("/v1/conversations/group:no-such-group/messages", {}),  # 404
            (history, {"limit": "0"}),  # 422 from the route
            (history, {"limit": "501"}),
            (history, {"before": "x"}),
            (history, {"limit": "+5"}),
        ]
        for path, params in requests:
            fast, routed = bearer.get(path, params=params), basic.get(path, params=params)
            assert fast.status_code == routed.status_code, (path, params, fast.text, routed.text)
            assert fast.headers["content-type"] == routed.headers["content-type"], (path, params)
            assert fast.json() == routed.json(), (path, params)
