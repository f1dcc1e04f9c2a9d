"""Authentication and topic access for broker clients, backed by the users and groups tables.

One :class:`AccessControl` per broker is the broker's only auth/ACL seam: CONNECT, publish, subscribe
and receive checks all go through it (``check_now`` answers from the cache without waiting). Database
work runs in a worker thread so a slow query or an argon2 hash never blocks the event loop; the facts
the ACL needs are cached (and forgotten when a directory event says they changed, see
broker/directory_watch.py), so most decisions are pure function calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from broker.directory_cache import CachedDirectory, Miss
from broker.login_batch import LoginBatcher
from broker.principal import Principal
from switchboard import lookups
from switchboard.acl import ANONYMOUS, Action, Decision, DmPolicy, Identity, Policy
from switchboard.credentials import VerifiedCredentials
from switchboard.errors import StoreError
from switchboard.logins import LoginThrottle, Throttled
from switchboard.rules import OperatorRule
from switchboard.schema import Role
from switchboard.topics import is_chat_topic

log = logging.getLogger(__name__)

#: Decisions kept per client and action (``AccessControl.check_kept``): a member of a few groups receives and
#: publishes to a few dozen topics; past this many the client's are forgotten and made again.
DECISIONS_PER_CLIENT = 64
#: The topics whose publish decisions are kept: a client's own group topics, a few each, published to again and
#: again. A DM's goes to any of many users, so keeping it would cost memory (per client) for little reuse.
KEPT_PUBLISH = ("group/", "typing/group:")
#: The chat topics whose every delivery is checked (kept decisions make that cheap).
CHECKED_RECEIVE = ("group/", "typing/", "presence/")


class AccessControl:
    """Decides who may connect, and what each connected client may publish, subscribe or receive."""

    def __init__(
        self,
        engine: Engine,
        *,
        allow_anonymous: bool,
        rules: Sequence[OperatorRule] | None = None,
        throttle: LoginThrottle,
        cache_seconds: float = 30.0,
        credentials_seconds: float = 300.0,
        dm_policy: DmPolicy = DmPolicy.ANYONE,
    ) -> None:
        self._engine = engine
        self._logins = LoginBatcher(engine, throttle)
        self._directory = CachedDirectory(engine, ttl=cache_seconds)
        self._credentials: VerifiedCredentials[Identity] = VerifiedCredentials(credentials_seconds)
        self._policy = Policy(
            generic_topics=allow_anonymous, rules=None if rules is None else tuple(rules), dm_policy=dm_policy
        )
        self.allow_anonymous = allow_anonymous
        self._identities: dict[str, Identity] = {}
        #: Bumped by every directory event: the receive decisions clients hold are then made again.
        self._generation = 0
        self._catch_up: Callable[[], Awaitable[None]] | None = None

    def follow_directory(self, catch_up: Callable[[], Awaitable[None]]) -> None:
        """Have remembered credentials trusted only once ``catch_up`` has applied the directory events
        committed before the login (see broker.directory_watch)."""
        self._catch_up = catch_up

    async def authenticate(self, session: Principal) -> bool:
        """True when the CONNECT's credentials are good (or it is anonymous and that is allowed),
        and its will, if any, is one this client may publish."""
        who = await self._identify(session)
        if who is None:
            return False
        if session.will_flag and session.will_topic is not None:
            will_topic, client_id = session.will_topic, session.client_id or ""
            decision = await self._decide(
                lambda: self._policy.check_will(who, will_topic, self._directory, client_id=client_id)
            )
            if not decision.allowed:
                log.warning(
                    "refused client_id=%s user=%s: will topic %r: %s",
                    session.client_id,
                    session.username,
                    session.will_topic,
                    decision.reason,
                    extra={"client_id": session.client_id, "user": session.username, "topic": session.will_topic},
                )
                return False
        if who.name is not None:
            self._identities[who.name] = who
        return True

    async def _identify(self, session: Principal) -> Identity | None:
        if session.username is None:
            if not self.allow_anonymous:
                log.warning(
                    "refused client_id=%s: no username (set mqtt.allow_anonymous to allow)",
                    session.client_id,
                    extra={"client_id": session.client_id},
                )
                return None
            return ANONYMOUS
        name, password = session.username, session.password or ""
        remembered = self._credentials.check(name, password)
        if remembered is not None and self._catch_up is not None:
            await self._catch_up()  # a disable or password reset committed before this CONNECT forgets them
            remembered = self._credentials.check(name, password)
        if remembered is not None:
            return remembered
        address = session.address or "unknown"
        try:
            verified = await self._logins.check(name, password, address)
        except Throttled as exc:
            log.warning(
                "refused client_id=%s user=%s from %s: %s", session.client_id, name, address, exc, extra=_who(session)
            )
            return None
        except StoreError as exc:
            log.error("refused client_id=%s user=%s: %s", session.client_id, name, exc, extra=_who(session))
            return None
        if verified is None:
            log.warning(
                "refused client_id=%s user=%s: bad username or password", session.client_id, name, extra=_who(session)
            )
            return None
        self._credentials.remember(name, password, verified.identity, seconds=verified.seconds_left)
        return verified.identity

    def receive_needs_check(self, topic: str, *, root_wildcard: bool) -> bool:
        """Whether delivering ``topic`` must be checked per recipient: group membership can change (group
        messages, typing in groups), presence goes only to contacts and typing not across a block, operator
        rules may deny part of what a filter matches, and a filter starting with a wildcard reaches chat topics."""
        if topic.startswith(CHECKED_RECEIVE):
            return True
        if is_chat_topic(topic):
            return root_wildcard
        return self._policy.has_rules

    def is_service(self, username: str | None) -> bool:
        """True for a service account (known once it has logged in, or loaded from the users table)."""
        if username is None:
            return False
        who = self._identities.get(username)
        if who is None:
            who = self._load_identity(username)
        return who is not None and who.is_service

    def has_presence(self, username: str) -> bool:
        """People get presence; service accounts (the bridge) do not."""
        who = self._identities.get(username)
        return who is not None and not who.is_service

    def _load_identity(self, name: str) -> Identity | None:
        with self._engine.connect() as connection:
            role = lookups.enabled_role(connection, name)
        if role is None:
            return None
        who = Identity(name, Role(role))
        self._identities[name] = who
        return who

    def forget_member(self, group: str, user: str) -> None:
        """A directory event: the membership changed."""
        self._directory.forget_member(group, user)
        self._generation += 1

    def forget_user(self, name: str) -> None:
        """A directory event: the user was disabled, enabled or deleted. (Its identity stays known: its
        connections are being closed and their presence bookkeeping still needs it.)"""
        self._directory.forget_user(name)
        self._credentials.forget(name)
        self._generation += 1

    def forget_blocks(self, blocker: str) -> None:
        """A directory event: ``blocker`` blocked or unblocked someone (whom is not said)."""
        self._directory.forget_blocks()
        self._generation += 1

    def dm_sent(self, sender: str, recipient: str) -> None:
        """A DM was let through: the two now share a conversation (presence, ``chat.dm_policy``)."""
        if self._directory.dm_started(sender, recipient):
            self._generation += 1

    def identity(self, session: Principal) -> Identity | None:
        """Who this client logged in as; None if it never authenticated here."""
        if session.username is None:
            return ANONYMOUS if self.allow_anonymous else None
        return self._identities.get(session.username)

    def check_now(self, session: Principal, topic: str, action: Action) -> Decision | None:
        """Decide one action from what is cached, without waiting; None when the database must be asked
        (then call :meth:`check`). Denials are logged with client id, user, topic and reason."""
        who = self.identity(session)
        if who is None and session.username is not None:
            return None  # a session restored after a restart: its user has not logged in since
        if who is None:
            decision = Decision(False, "client is not authenticated")
        else:
            try:
                decision = self._policy.check(action, who, topic, self._directory, client_id=session.client_id or "")
            except Miss:
                return None
        if not decision.allowed:
            _log_denial(session, topic, action, decision)
        return decision

    async def check(self, session: Principal, topic: str, action: Action) -> Decision:
        """Decide one action, loading what the cache lacks in a worker thread."""
        decision = self.check_now(session, topic, action)
        if decision is not None:
            return decision
        who = self.identity(session)
        if who is None and session.username is not None:
            try:
                who = await asyncio.to_thread(self._load_identity, session.username)
            except (StoreError, SQLAlchemyError) as exc:
                log.warning("access: cannot load user %r (%s)", session.username, exc)
        if who is None:
            decision = Decision(False, "client is not authenticated")
        else:
            known, client_id = who, session.client_id or ""
            decision = await self._decide(
                lambda: self._policy.check(action, known, topic, self._directory, client_id=client_id)
            )
        if not decision.allowed:
            _log_denial(session, topic, action, decision)
        return decision

    def may_receive_now(self, principal: Principal, topic: str) -> bool | None:
        """Whether this client may receive ``topic``, from the cache; None when the database must be asked.

        Every delivery is decided, but a fan-out asks the same question of the same client again and again (each
        message to a group, to each member): the decision is kept on the client's principal, by topic (see
        :meth:`check_kept`)."""
        decision = self.check_kept(principal, topic, Action.RECEIVE)
        return None if decision is None else decision.allowed

    def check_kept(self, principal: Principal, topic: str, action: Action) -> Decision | None:
        """:meth:`check_now` for RECEIVE, or PUBLISH to a group (``KEPT_PUBLISH``), answered from the decisions
        this client keeps by topic while they still hold: same identity, no directory event since (a removed member
        stops receiving at once), and none of the facts a decision read has expired (a change made behind the
        broker's back counts after ``cache_seconds``, as without kept decisions)."""
        receive = action is Action.RECEIVE
        if not receive and not topic.startswith(KEPT_PUBLISH):
            return self.check_now(principal, topic, action)
        who = self.identity(principal)
        decisions = principal.decisions if receive else principal.publish_decisions
        if decisions is not None:
            known = decisions.get(topic)
            if known is not None and known[1] is who and known[2] == self._generation and known[3] > time.monotonic():
                decision: Decision = known[0]
                if not decision.allowed:
                    _log_denial(principal, topic, action, decision)
                return decision
        self._directory.start_decision()
        found = self.check_now(principal, topic, action)
        if found is None or who is None:
            return found
        if decisions is None:
            decisions = {}
            if receive:
                principal.decisions = decisions
            else:
                principal.publish_decisions = decisions
        elif len(decisions) >= DECISIONS_PER_CLIENT:
            decisions.clear()
        decisions[topic] = (found, who, self._generation, self._directory.horizon)
        return found

    async def may_receive(self, principal: Principal, topic: str) -> bool:
        return (await self.check(principal, topic, Action.RECEIVE)).allowed

    async def _decide(self, decide: Callable[[], Decision]) -> Decision:
        """Run a pure decision; on a directory cache miss, load the fact in a thread and decide again."""
        while True:
            try:
                return decide()
            except Miss as miss:
                try:
                    await asyncio.to_thread(miss.fill)
                except (StoreError, SQLAlchemyError) as exc:
                    # The database is down: decide on what was last known rather than refuse everyone.
                    if not miss.keep_stale():
                        return Decision(False, f"cannot check access, the database is unreachable: {exc}")
                    log.warning("access: database unreachable (%s); using the last known answer", exc)


def _log_denial(session: Principal, topic: str, action: Action, decision: Decision) -> None:
    log.warning(
        "denied %s: client_id=%s user=%s topic=%r reason=%s",
        action,
        session.client_id,
        session.username,
        topic,
        decision.reason,
        extra={"client_id": session.client_id, "user": session.username, "topic": topic},
    )


def _who(session: Principal) -> dict[str, str | None]:
    """The log fields of a login being decided (before its connection binds them)."""
    return {"client_id": session.client_id, "user": session.username}
