"""Dependencies shared by the routes: a database session and the authenticated caller."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer
from sqlalchemy import Engine, QueuePool
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from api.callers import Caller, TokenCache
from api.changes import ChangeWatch
from switchboard import accounts, tokens
from switchboard.db import make_read_engine, read_again_if_dropped
from switchboard.logins import LoginThrottle, Throttled
from switchboard.tables import Role, User
from switchboard.topics import Conversation, parse_conversation

T = TypeVar("T")

#: Threads for the fast reads when the engine's pool has no fixed size (SQLite's in-memory pools).
READ_THREADS = 10

basic = HTTPBasic(auto_error=False, description="The same username and password as for MQTT.")
bearer = HTTPBearer(auto_error=False, description="A token from POST /v1/auth/token.")


def get_session(request: Request) -> Iterator[Session]:
    """A session on the app's engine, closed after the request."""
    engine: Engine = request.app.state.engine
    with Session(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


class ReadThreads:
    """The threads the fast reads (api/reads.py, the token lookups) run in, and the engine they read with: a
    thread pool of its own with as many threads as the engine's pool keeps connections, and a read engine with
    a connection for each thread and no ping per checkout (switchboard.db.make_read_engine; a read whose
    connection the server had closed runs once more).

    Not Starlette's ``run_in_threadpool``: its 40 threads let a storm's reads past the pool's size open a
    connection of the pool's overflow and close it after (a Postgres backend started and ended per request),
    and anyio's hop (a cancel scope, a capacity limiter, a ``queue.Queue`` per worker) cost about a quarter
    of the event loop's samples in the storm's profile. Here a read is one ``SimpleQueue`` put and one
    ``call_soon_threadsafe`` back; past the pool's size it waits in the queue for a thread."""

    def __init__(self, engine: Engine) -> None:
        pool = engine.pool
        self.size = pool.size() if isinstance(pool, QueuePool) else READ_THREADS
        self.engine = make_read_engine(engine, self.size)
        self._shared_pool = engine.pool  # SQLite's read engine is the app's: not this to dispose of
        self._executor = concurrent.futures.ThreadPoolExecutor(self.size, thread_name_prefix="api-read")

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        call = functools.partial(function, *args, **kwargs) if kwargs else functools.partial(function, *args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, read_again_if_dropped, call)

    def close(self) -> None:
        """No new reads; the threads end once the reads running now are done, and the read engine's
        connections close."""
        self._executor.shutdown(wait=False)
        if self.engine.pool is not self._shared_pool:
            self.engine.dispose()


async def run_read(request: Request, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` in one of the app's read threads (:class:`ReadThreads`)."""
    threads: ReadThreads = request.app.state.read_threads
    return await threads.run(function, *args, **kwargs)


def get_limiter(request: Request) -> LoginThrottle:
    limiter: LoginThrottle = request.app.state.login_throttle
    return limiter


LimiterDep = Annotated[LoginThrottle, Depends(get_limiter)]


def client_address(request: Request) -> str:
    """The peer's address, or the client a trusted proxy names in X-Forwarded-For (``api.trusted_proxies``,
    applied by uvicorn, see api/main.py)."""
    return request.client.host if request.client else "unknown"


def check_login(
    session: Session, limiter: LoginThrottle, request: Request, name: str, secret: str, *, address: str | None = None
) -> User:
    """The user for these credentials; 429 while this address (``address``, else the caller's) is
    throttled for this user (switchboard/logins.py), else 401."""
    where = address or client_address(request)
    try:
        user = limiter.attempt(name, where, lambda: accounts.authenticate(session, name, secret))
    except Throttled as exc:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS, detail=str(exc), headers={"Retry-After": str(exc.retry_after)}
        ) from None
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="bad username or password",
            headers={"WWW-Authenticate": 'Basic realm="switchboard", Bearer'},
        )
    return user


async def get_current_user(
    request: Request,
    credentials: Annotated[HTTPBasicCredentials | None, Depends(basic)],
    token: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    """The caller, from HTTP Basic (username and password, or username and token) or a bearer token. A
    bearer token verified recently is answered from this process's token cache (api/callers.py), on the
    event loop; anything else is checked in the database, in a thread."""
    state = request.app.state
    if token is not None:
        cache: TokenCache = state.callers
        watch: ChangeWatch = state.changes
        watch.ensure_started()
        # The cache is used only while the watch runs: revocations by other processes reach it through the watch.
        keep = cache if watch.running else None
        caller = keep.get(token.credentials) if keep is not None else None
        if caller is None:
            caller = await run_read(request, _token_holder, state.read_engine, keep, token.credentials)
        if caller is None:  # 256 random bits: guessing is hopeless, so no throttle (and no user name to key it)
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="the token is unknown or expired: get a new one from POST /v1/auth/token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return caller
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="log in with HTTP Basic (the MQTT credentials) or a bearer token",
            headers={"WWW-Authenticate": 'Basic realm="switchboard", Bearer'},
        )
    return await run_in_threadpool(_basic_login, request, credentials.username, credentials.password)


def _token_holder(engine: Engine, cache: TokenCache | None, token: str) -> Caller | None:
    """The holder of a live token of an enabled user, from the database; remembered in ``cache`` if given."""
    epoch = cache.epoch() if cache is not None else 0
    with engine.connect() as connection:
        found = tokens.holders(connection, [token]).get(token)
    if found is None:
        return None
    name, role, expires = found
    caller = Caller(name, Role(role))
    if cache is not None:
        cache.remember(token, caller, expires, epoch)
    return caller


def _basic_login(request: Request, name: str, secret: str) -> Caller:
    with Session(request.app.state.engine) as session:
        user = check_login(session, request.app.state.login_throttle, request, name, secret)
        return Caller(user.name, Role(user.role))


def forget_tokens(request: Request, user: str) -> None:
    """This process stops accepting ``user``'s cached tokens (call after committing their revocation)."""
    cache: TokenCache = request.app.state.callers
    cache.forget(user)


CurrentUser = Annotated[Caller, Depends(get_current_user)]


async def get_admin(user: CurrentUser) -> Caller:
    """The caller, if it is an administrator (else 403)."""
    if user.role != Role.ADMIN:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="administrators only: ask an admin to do this")
    return user


AdminUser = Annotated[Caller, Depends(get_admin)]


#: The ``{conversation}`` path parameter.
CONVERSATION_PATH = Path(description="dm:{a}:{b} (names sorted) or group:{g}", examples=["dm:alice:bob"])


def readable_conversation(
    session: SessionDep,
    user: CurrentUser,
    conversation: Annotated[str, CONVERSATION_PATH],
) -> Conversation:
    """The conversation in the path, if it exists (else 404) and the caller is part of it (else 403)."""
    parsed = parse_conversation(conversation)
    if parsed is None or not accounts.conversation_exists(session, parsed):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"conversation {conversation!r} does not exist")
    if not accounts.may_read(session, user.name, parsed):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"you are not part of {conversation!r}")
    return parsed


ReadableConversation = Annotated[Conversation, Depends(readable_conversation)]

#: Error answers for the OpenAPI schema: every logged-in route, routes with a JSON body, conversation routes.
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or bad credentials."},
    429: {"description": "Too many failed logins for this user from this address; see Retry-After."},
}
BODY_ERRORS: dict[int | str, dict[str, Any]] = {400: {"description": "The body is not valid JSON."}}
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    403: {"description": "The caller is not an administrator."},
}
ACCOUNT_ERRORS: dict[int | str, dict[str, Any]] = {
    **ADMIN_ERRORS,
    404: {"description": "No such user or group."},
    409: {"description": "The change conflicts with what exists (a taken name, the caller's own account)."},
}
CONVERSATION_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    403: {"description": "The caller is not part of this conversation."},
    404: {"description": "No such conversation."},
}
