"""Payload parsing: JSON messages, plain text, and every way a payload is rejected."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from switchboard.payloads import (
    MAX_BODY_CHARS,
    ChatPayload,
    PresencePayload,
    Rejection,
    parse_message,
    parse_presence,
    stamp_presence,
)


def test_json_message() -> None:
    assert parse_message(b'{"id": "m1", "body": "hi", "extra": 1}') == ChatPayload("m1", "hi")


def test_plain_text_gets_a_server_made_id() -> None:
    message = parse_message(b"hello there")
    assert isinstance(message, ChatPayload)
    assert message.body == "hello there" and message.server_made_id and len(message.id) == 32


def test_rejections_say_what_is_wrong() -> None:
    cases = {
        b"": "empty payload",
        b"\xff\xfe": "not UTF-8",
        b"{oops": "invalid JSON",
        b'{"body": "x"}': 'missing "id"',
        b'{"id": 5, "body": "x"}': 'missing "id"',
        json.dumps({"id": "x" * 65, "body": "x"}).encode(): "the limit is 64",
        b'{"id": "a"}': 'missing "body"',
        json.dumps({"id": "a", "body": "x" * (MAX_BODY_CHARS + 1)}).encode(): "the limit is",
    }
    for payload, expected in cases.items():
        result = parse_message(payload)
        assert isinstance(result, Rejection), payload
        assert expected in result.reason, (payload, result.reason)


def test_json_that_is_not_an_object_is_rejected() -> None:
    result = parse_message(b"{}")
    assert isinstance(result, Rejection)
    assert isinstance(parse_message(b"42"), ChatPayload)  # plain text "42", as mosquitto_pub -m 42 sends


def test_attachments_are_media_ids() -> None:
    message = parse_message(b'{"id": "m1", "body": "", "attachments": [{"media_id": "abc_DEF-1"}, {"media_id": "x"}]}')
    assert isinstance(message, ChatPayload) and message.attachments == ("abc_DEF-1", "x")
    for bad, reason in (
        (b'{"id": "m", "body": "", "attachments": "abc"}', "must be a list"),
        (b'{"id": "m", "body": "", "attachments": [{"id": "abc"}]}', "must be a list"),
        (b'{"id": "m", "body": "", "attachments": [{"media_id": "a b"}]}', "must be a list"),
        (b'{"id": "m", "body": "", "attachments": [{"media_id": "a"}, {"media_id": "a"}]}', "listed twice"),
        (
            b'{"id": "m", "body": "", "attachments": ['
            + b",".join([b'{"media_id": "a%d"}' % n for n in range(11)])
            + b"]}",
            "at most 10",
        ),
    ):
        rejected = parse_message(bad)
        assert isinstance(rejected, Rejection) and reason in rejected.reason, bad


NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_a_presence_time_is_never_later_than_the_servers() -> None:
    """A far-future "at" (published through a broker that does not stamp presence, e.g. Mosquitto) would
    freeze the watermark; it counts as now. An earlier time is kept (the broker's own stamp)."""
    future = b'{"status": "online", "at": "9999-12-31T23:59:59+00:00"}'
    assert parse_presence(future, NOW) == PresencePayload("online", NOW)
    earlier = datetime(2026, 11, 30, 11, 0, tzinfo=UTC)
    assert parse_presence(json.dumps({"status": "offline", "at": earlier.isoformat()}).encode(), NOW) == (
        PresencePayload("offline", earlier)
    )


def test_the_broker_stamps_a_clients_presence_with_its_own_time() -> None:
    stamped = stamp_presence(b'{"status": "online", "at": "9999-12-31T23:59:59+00:00", "x": 1}', NOW)
    assert isinstance(stamped, bytes) and json.loads(stamped) == {"status": "online", "at": NOW.isoformat()}
    assert stamp_presence(b"", NOW) == b""  # clears the retained presence
    assert stamp_presence(b'{"status": "away"}', NOW) == Rejection('presence "status" must be "online" or "offline"')
    assert isinstance(stamp_presence(b"online", NOW), Rejection)
