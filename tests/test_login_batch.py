"""Concurrent broker logins are checked together (broker/login_batch.py), on Postgres and SQLite: each gets
the verdict it got alone (token, password, someone else's token, wrong password, disabled account, unknown
name, throttled address), and the whole batch costs one read of ``login_failures`` and one query per kind
of secret, where every login used to cost two ORM queries of its own."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from broker.login_batch import LoginBatcher, Verified
from switchboard import accounts, tokens
from switchboard.db import session_scope
from switchboard.logins import LoginThrottle, Throttled
from switchboard.schema import Role
from switchboard.settings import LoginSettings
from tests.conftest import Users
from tests.helpers import statements_sent


def _token(engine: Engine, user: str) -> str:
    with session_scope(engine) as session:
        token, _ = tokens.issue(session, user, timedelta(hours=1))
    return token


def test_concurrent_logins_share_one_throttle_read_and_one_query_per_kind(engine: Engine, users: Users) -> None:
    owner, password = users.user("batch-owner")
    other, _ = users.user("batch-other")
    gone, gone_password = users.user("batch-disabled")
    with session_scope(engine) as session:
        accounts.set_disabled(session, gone, True)
    owner_token, other_token = _token(engine, owner), _token(engine, other)
    throttle = LoginThrottle(engine, LoginSettings(max_failures=2, backoff_after=100))
    for _ in range(2):  # this address has used up its tries for the owner
        assert throttle.attempt(owner, "10.9.9.9", lambda: None) is None

    logins = [
        (owner, owner_token, "10.0.0.1"),
        (other, owner_token, "10.0.0.2"),  # someone else's token
        (owner, password, "10.0.0.3"),
        (owner, "wrong", "10.0.0.4"),
        (gone, gone_password, "10.0.0.5"),
        ("batch-nobody", "pw", "10.0.0.6"),
        (owner, password, "10.9.9.9"),  # throttled: refused without a look at the password
        *((other, other_token, f"10.1.0.{n}") for n in range(40)),
    ]

    async def check_all() -> list[Verified | BaseException | None]:
        batcher = LoginBatcher(engine, throttle)
        return await asyncio.gather(*(batcher.check(*login) for login in logins), return_exceptions=True)

    with statements_sent(engine) as sent:
        results = asyncio.run(check_all())
    statements = [" ".join(statement.split()).lower() for statement in sent]

    by_token, other_token_result, by_password, wrong, disabled, unknown, throttled, *rest = results
    assert isinstance(by_token, Verified) and by_token.identity.name == owner and by_token.identity.role is Role.USER
    assert by_token.seconds_left is not None and 3000 < by_token.seconds_left <= 3600  # the token's own expiry
    assert isinstance(by_password, Verified) and by_password.identity.name == owner and by_password.seconds_left is None
    assert (other_token_result, wrong, disabled, unknown) == (None, None, None, None)
    assert isinstance(throttled, Throttled) and throttled.retry_after > 0
    assert all(isinstance(r, Verified) and r.identity.name == other for r in rest)

    reads = [s for s in statements if s.startswith("select")]
    assert len([s for s in reads if "from login_failures" in s]) == 1, reads
    assert len([s for s in reads if "from api_tokens" in s]) == 1, reads
    assert len([s for s in reads if "from users" in s and "api_tokens" not in s]) == 1, reads
    # the one failure was counted, and only under its own address
    with pytest.raises(Throttled):
        for _ in range(2):
            throttle.attempt(owner, "10.0.0.4", lambda: None)
    assert throttle.attempt(owner, "10.0.0.7", lambda: "in") == "in"


def test_a_batch_of_password_logins_hashes_on_several_threads(
    engine: Engine, users: Users, monkeypatch: pytest.MonkeyPatch
) -> None:
    """argon2 releases the GIL and one hash takes 50-250 ms: a batch's password checks run side by side on the
    machine's cores, not one after another in the batch's thread (a token login in the same batch would wait for
    all of them). The real argon2 runs; the wrapper only notes which thread it ran on."""
    import os
    import threading

    import broker.login_batch as login_batch

    owner, password = users.user("batch-hashes")
    threads: set[int] = set()
    real = login_batch.verify_password

    def noted(password_hash: str, given: str) -> bool:
        threads.add(threading.get_ident())
        return real(password_hash, given)

    monkeypatch.setattr(login_batch, "verify_password", noted)
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: the batch's hashes have no second core to run on")
    throttle = LoginThrottle(engine, LoginSettings(max_failures=100, backoff_after=100))
    batcher = LoginBatcher(engine, throttle)
    logins = [batcher.check(owner, password, f"10.2.0.{n}") for n in range(4)]

    async def check_all() -> list[Verified | None]:
        return await asyncio.gather(*logins)

    results = asyncio.run(check_all())
    assert all(isinstance(r, Verified) and r.identity.name == owner for r in results)
    assert len(threads) > 1, "the batch's password checks ran one after another on one thread"
