"""Every delivery passes the receive check (ACL per delivery) and every PUBLISH the publish check, answered from
the decisions each client keeps by topic (``AccessControl.check_kept``), so a message to a group costs one decision
per member and topic, not one per delivery. A kept decision holds only while it is still true as far as the broker
can know: a directory event drops it (a removed member stops receiving at once), and it expires with the earliest
fact it was made on (a change made behind the broker's back counts after ``mqtt.directory_cache_seconds``, as
without kept decisions)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlmodel import Session

from broker.access import DECISIONS_PER_CLIENT, AccessControl
from broker.principal import Principal
from switchboard import accounts
from switchboard.acl import Action, Decision
from switchboard.db import make_engine, upgrade
from switchboard.logins import LoginThrottle
from switchboard.settings import LoginSettings
from tests.conftest import Users
from tests.helpers import wait_for


def test_a_receive_decision_is_kept_until_a_directory_event_or_the_expiry_of_its_facts(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/acl.db")
    upgrade(engine)
    try:
        users = Users(engine)
        alice, _ = users.user("alice")
        bob, _ = users.user("bob")
        team = users.group("team", [alice, bob])
        topic = f"group/{team}/{bob}"
        access = AccessControl(
            engine, allow_anonymous=False, throttle=LoginThrottle(engine, LoginSettings()), cache_seconds=1.0
        )
        principal = Principal(client_id="alice-phone", username=alice)
        own = f"group/{team}/{alice}"

        assert access.may_receive_now(principal, topic) is None  # nothing known yet: the database is asked
        assert asyncio.run(access.may_receive(principal, topic)) is True
        assert access.may_receive_now(principal, topic) is True
        assert principal.decisions is not None and topic in principal.decisions  # kept for the next delivery
        assert access.check_kept(principal, own, Action.PUBLISH) == Decision(True, "member of the group")
        assert principal.publish_decisions is not None and own in principal.publish_decisions
        dm = f"dm/{bob}/{alice}"  # a DM's publish decision is made each time: too many possible targets to keep
        assert asyncio.run(access.check(principal, dm, Action.PUBLISH)).allowed
        assert access.check_kept(principal, dm, Action.PUBLISH) == Decision(True, "own message to an existing user")
        assert dm not in principal.publish_decisions

        # A directory event (here: alice left the group): the kept decision goes, the database is asked again.
        with Session(engine) as session:
            accounts.remove_member(session, team, alice)
            session.commit()
        access.forget_member(team, alice)
        assert access.may_receive_now(principal, topic) is None
        assert access.check_kept(principal, own, Action.PUBLISH) is None
        assert asyncio.run(access.may_receive(principal, topic)) is False
        assert access.may_receive_now(principal, topic) is False

        # A change behind the broker's back (no event): counted once the fact the decision was made on expires.
        with Session(engine) as session:
            accounts.add_member(session, team, alice)
            session.commit()
        wait_for(lambda: access.may_receive_now(principal, topic) is None, what="the kept decision to expire")
        assert asyncio.run(access.may_receive(principal, topic)) is True

        # A client's kept decisions are bounded: past the bound they are forgotten and made again.
        for n in range(DECISIONS_PER_CLIENT * 2):
            access.may_receive_now(principal, f"group/{team}/u{n}")
        assert len(principal.decisions) <= DECISIONS_PER_CLIENT
    finally:
        engine.dispose()
