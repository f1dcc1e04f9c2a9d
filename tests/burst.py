"""A burst into a big group whose members are all offline: the scenario of tests/test_notifier_burst.py and
bench/notifier.py (one group of N members, one sender online, M messages published at once at QoS 1).

Only the sender can log in (the members' accounts share one password hash, so making 500 of them takes no
500 argon2 hashes); the members never connect, so every message queues one notification per member.
"""

from __future__ import annotations

import secrets
import time
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import Engine, insert
from sqlmodel import Session, select

from switchboard import accounts
from switchboard.tables import Conversation, User, utcnow
from switchboard.topics import dm_conversation, group_conversation
from tests.deploy import Publisher, json_payloads
from tests.webhook import Webhook


@dataclass(frozen=True)
class BigGroup:
    sender: str
    password: str
    group: str
    members: list[str]  # without the sender
    outsider: str  # not in the group: receives the probe DM

    @property
    def conversation(self) -> str:
        return group_conversation(self.group)

    @property
    def probe_conversation(self) -> str:
        return dm_conversation(self.sender, self.outsider)


def make_big_group(engine: Engine, members: int) -> BigGroup:
    """A sender who can log in, ``members`` - 1 other members and one user outside the group."""
    suffix = secrets.token_hex(3)
    sender, password = f"sender-{suffix}", f"pw-{secrets.token_hex(6)}"
    others = [f"member{n:04d}-{suffix}" for n in range(members - 1)]
    outsider = f"outsider-{suffix}"
    shared_hash, now = accounts.hash_password(secrets.token_hex(8)), utcnow()
    with Session(engine) as session:
        accounts.create_user(session, sender, password)
        session.execute(
            insert(User.__table__),  # type: ignore[attr-defined]
            [
                {"name": name, "password_hash": shared_hash, "role": "user", "disabled": False, "created_at": now}
                for name in [*others, outsider]
            ],
        )
        group = f"big-{suffix}"
        accounts.create_group(session, group, [sender, *others])
        session.commit()
    return BigGroup(sender, password, group, others, outsider)


def publish(port: int, group: BigGroup, topic: str, count: int, prefix: str) -> Publisher:
    """Publish ``count`` messages at QoS 1 on one connection and wait for the broker's acknowledgements."""
    publisher = Publisher(port, group.sender, group.password)
    Publisher.wait_acked(publisher.publish(topic, json_payloads(prefix, count)))
    return publisher


def stored(engine: Engine, conversation: str) -> int:
    """How many messages of ``conversation`` are stored."""
    with Session(engine) as session:
        found = session.exec(select(Conversation.last_seq).where(Conversation.id == conversation)).first()
        return int(found or 0)


def wait_stored(engine: Engine, conversation: str, count: int, timeout: float) -> float:
    """Wait until ``count`` messages of ``conversation`` are stored; the monotonic time it was seen."""
    deadline = time.monotonic() + timeout
    while stored(engine, conversation) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} messages not stored in {conversation} within {timeout}s")
        time.sleep(0.05)
    return time.monotonic()


def notified(webhook: Webhook) -> dict[str, int]:
    """Messages notified per user, each notification id counted once (a batch may be sent again after a
    restart, with the same id)."""
    seen: set[str] = set()
    counts: dict[str, int] = defaultdict(int)
    for call in list(webhook.calls):
        body = call.json
        if body["id"] not in seen:
            seen.add(body["id"])
            counts[body["user"]] += body["count"]
    return counts
