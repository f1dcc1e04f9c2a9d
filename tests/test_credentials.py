"""The broker's memory of verified credentials (switchboard/credentials.py): only the same secret matches,
entries end with their lifetime or the token's, and forgetting is immediate."""

from __future__ import annotations

import time

from switchboard.acl import Identity
from switchboard.credentials import VerifiedCredentials
from switchboard.tables import Role

ALICE = Identity("alice", Role.USER)


def test_only_the_same_secret_matches_and_forget_is_immediate() -> None:
    cache = VerifiedCredentials(ttl=60)
    cache.remember("alice", "right", ALICE)
    assert cache.check("alice", "right") == ALICE
    assert cache.check("alice", "wrong") is None
    assert cache.check("bob", "right") is None
    cache.forget("alice")
    assert cache.check("alice", "right") is None


def test_entries_end_with_their_lifetime_or_the_secrets() -> None:
    cache = VerifiedCredentials(ttl=60)
    cache.remember("alice", "token", ALICE, seconds=0.05)  # a token about to expire
    assert cache.check("alice", "token") == ALICE
    time.sleep(0.1)
    assert cache.check("alice", "token") is None
    off = VerifiedCredentials(ttl=0)  # mqtt.credentials_cache_seconds: 0 turns it off
    off.remember("alice", "right", ALICE)
    assert off.check("alice", "right") is None
