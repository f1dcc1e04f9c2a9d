"""The relations of a batch (replies, reactions, edits, unsends): their targets found, refused when the
database says so, and applied to their targets once stored (rules in switchboard.relations).

A relation may name a message stored earlier or one earlier in the same batch (a client that sends a
message and reacts to it at once); the batch is walked in arrival order, so a relation sees what the
messages before it did (an unsend earlier in the batch makes its target unsent for what follows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from sqlmodel import Session

from switchboard import relations
from switchboard.payloads import ChatPayload, Relation

Key = tuple[str, str]


class Item(Protocol):
    """A new message of the batch, as bridge.store holds it."""

    @property
    def key(self) -> Key: ...
    @property
    def conversation(self) -> str: ...
    @property
    def payload(self) -> ChatPayload: ...

    target: relations.Target | None


def resolve(session: Session, items: Sequence[Item], *, now: datetime, edit_window: timedelta) -> dict[Key, str]:
    """Find the target of each relation among ``items`` (new messages, in arrival order) and set it on the
    item; returns why each refused one is refused, by key (one query, none when the batch has no relation)."""
    wanted = {(r.sender, r.id) for item in items if (r := item.payload.relates_to) is not None}
    if not wanted:
        return {}
    targets = relations.find_targets(session, wanted - {item.key for item in items})
    refused: dict[Key, str] = {}
    for item in items:
        relation = item.payload.relates_to
        if relation is not None:
            target = targets.get((relation.sender, relation.id))
            reason = relations.refusal(
                relation.kind,
                relation.sender,
                relation.id,
                target,
                conversation=item.conversation,
                now=now,
                edit_window=edit_window,
            )
            if reason is not None or target is None:
                refused[item.key] = reason or "no target"
                continue
            item.target = target
            if relation.kind == "unsend":
                target.unsent = True
        if item.key in wanted:  # a later relation of the batch names this message
            kind = relation.kind if relation is not None else None
            targets[item.key] = relations.Target(item.conversation, None, kind, now, unsent=False)
    return refused


def target_seq(relation: Relation, target: relations.Target, seq_of: Callable[[Key], int]) -> int:
    """The target's seq: known when it was stored before, else given to it in this batch."""
    return target.seq if target.seq is not None else seq_of((relation.sender, relation.id))


def apply(session: Session, items: Sequence[Item], seq_of: Callable[[Key], int], now: datetime) -> None:
    """Apply the stored edits and unsends to their targets, in arrival order."""
    for item in items:
        relation, target = item.payload.relates_to, item.target
        if relation is None or target is None or relation.kind not in ("edit", "unsend"):
            continue
        seq = target_seq(relation, target, seq_of)
        if relation.kind == "edit":
            relations.apply_edit(session, item.conversation, seq, item.payload.body, now)
        else:
            relations.apply_unsend(session, item.conversation, seq, now)
