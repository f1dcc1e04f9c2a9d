"""A burst into a big group whose members are all offline (issue 13), on SQLite and Postgres: the first
notification comes within seconds of the burst being stored, a new message is stored promptly while the
outbox drains, SIGINT ends the process within ``bridge.stop_timeout_seconds`` while the notifier is in
the middle of a round, and after a restart every member is notified of every message, once.

Each run stores 600 messages to 500 members: about 300,000 outbox rows.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchboard.db import make_engine, upgrade
from tests.burst import make_big_group, notified, publish, wait_stored
from tests.conftest import create_database, drop_database
from tests.helpers import start_stack, wait_for
from tests.webhook import Webhook

MEMBERS, MESSAGES = 500, 600
STOP_TIMEOUT_SECONDS = 5
#: The bounds the issue demands, generous for a shared 2-core machine.
FIRST_NOTIFICATION_SECONDS = 15
STORED_WHILE_DRAINING_SECONDS = 10
EXIT_MARGIN_SECONDS = 3


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of its own: 300,000 outbox rows must not reach other tests' notifiers."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/burst.db"
        return
    name = f"switchboard_burst_{secrets.token_hex(4)}"
    yield create_database(name)
    drop_database(name)


def test_a_burst_into_a_big_offline_group_is_notified_without_stalling(fresh_url: str, tmp_path: Path) -> None:
    engine = make_engine(fresh_url)
    upgrade(engine)
    group = make_big_group(engine, MEMBERS)
    webhook = Webhook()
    env = {
        "SWITCHBOARD_NOTIFY__WEBHOOK_URL": webhook.url,
        "SWITCHBOARD_NOTIFY__SECRET": "burst-secret",
        "SWITCHBOARD_MQTT__PUBLISH_BURST": str(MESSAGES),  # one sender's burst, within the rate limit
        "SWITCHBOARD_NOTIFY__BATCH_SECONDS": "2",
        "SWITCHBOARD_NOTIFY__TIMEOUT_SECONDS": "2",  # a batch cut off by the stop is due again 7 s later
        "SWITCHBOARD_BRIDGE__STOP_TIMEOUT_SECONDS": str(STOP_TIMEOUT_SECONDS),
    }
    stack = start_stack(fresh_url, tmp_path, **env)
    try:
        publisher = publish(stack.mqtt_port, group, f"group/{group.group}/{group.sender}", MESSAGES, "burst")
        stored_at = wait_stored(engine, group.conversation, MESSAGES, timeout=180)
        wait_for(lambda: webhook.calls, timeout=60, what="the first notification")
        assert webhook.calls[0].at - stored_at < FIRST_NOTIFICATION_SECONDS

        # Storage goes on while the notifier drains: a DM to someone outside the group is stored promptly.
        sent_at = time.monotonic()
        publisher.publish(f"dm/{group.outsider}/{group.sender}", [b'{"id":"probe","body":"still there?"}'])
        assert wait_stored(engine, group.probe_conversation, 1, timeout=60) - sent_at < STORED_WHILE_DRAINING_SECONDS
        publisher.close()

        # Stop mid-round: the webhook now hangs, so the notifier is waiting on a call when the signal comes.
        webhook.delay = 30
        calls = len(webhook.calls)
        wait_for(lambda: len(webhook.calls) > calls, timeout=60, what="a webhook call that hangs")
        assert sum(notified(webhook).values()) < MESSAGES * len(group.members), "the outbox was still draining"
        signalled = time.monotonic()
        stack.process.send_signal(signal.SIGINT)
        try:
            code = stack.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - signalled
        assert code == 0 and took < STOP_TIMEOUT_SECONDS + EXIT_MARGIN_SECONDS, (
            f"exit {code} {took:.1f}s after SIGINT:\n{stack.output()}"
        )
    finally:
        stack.stop(signal.SIGKILL)

    # After a restart every member has been told of every message once (a batch cut off by the stop is
    # sent again with its id, which receivers drop), and the outsider of the DM.
    webhook.delay = 0
    again = start_stack(fresh_url, tmp_path, **env)
    try:
        wanted = {**dict.fromkeys(group.members, MESSAGES), group.outsider: 1}
        wait_for(lambda: notified(webhook) == wanted, timeout=240, interval=1, what="every member notified")
    finally:
        assert again.stop() == 0, again.output()
        webhook.close()
        engine.dispose()
