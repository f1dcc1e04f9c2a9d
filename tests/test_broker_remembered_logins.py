"""Remembered logins (``mqtt.credentials_cache_seconds``) end at once when an admin disables the user or resets
its password: a login answered from memory first waits for the directory watch to read the events committed
before it (``DirectoryWatch.catch_up``), so it never rests on a poll that has not happened yet. The watch here
polls once a minute: without the catch-up the dead credentials would be accepted for that minute."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlmodel import Session

from broker.access import AccessControl
from broker.directory_watch import DirectoryWatch
from broker.principal import Principal
from switchboard import accounts
from switchboard.db import make_engine, upgrade
from switchboard.logins import LoginThrottle
from switchboard.settings import LoginSettings
from tests.conftest import Users


def test_a_disable_or_password_reset_ends_remembered_credentials_before_the_next_poll(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/logins.db")
    upgrade(engine)
    users = Users(engine)
    alice, alice_password = users.user("alice")
    bob, bob_password = users.user("bob")
    revoked: list[str] = []

    def revoke(user: str, reason: str, forget_sessions: bool) -> int:
        revoked.append(f"{user}: {reason}")
        return 0

    async def scenario() -> None:
        access = AccessControl(engine, allow_anonymous=False, throttle=LoginThrottle(engine, LoginSettings()))
        watch = DirectoryWatch(engine, access, revoke=revoke, interval=60.0)
        access.follow_directory(watch.catch_up)
        task = asyncio.create_task(watch.run())
        try:

            async def login(user: str, password: str) -> bool:
                return await access.authenticate(Principal(client_id=f"{user}-phone", username=user, password=password))

            assert await login(alice, alice_password) and await login(bob, bob_password)  # remembered now
            assert await login(alice, alice_password)  # from memory, after a catch-up that found nothing
            with Session(engine) as session:
                accounts.set_disabled(session, alice, True)
                accounts.set_disabled(session, alice, False)  # enabled again: the account is fine, as before
                accounts.reset_password(session, bob, "a-new-password-for-bob")
                session.commit()
            assert await login(alice, alice_password)  # disable + enable leaves the password good
            assert not await login(bob, bob_password)  # the old password: refused at once, not a minute later
            assert await login(bob, "a-new-password-for-bob")
            assert revoked == [f"{alice}: the account was disabled", f"{bob}: the password was reset"]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        # A stopped watch leaves no login waiting for ever.
        await asyncio.wait_for(watch.catch_up(), 5)

    try:
        asyncio.run(scenario())
    finally:
        engine.dispose()
