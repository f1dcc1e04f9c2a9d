"""``GET /v1/sync?since=CURSOR``: everything that changed for the caller since the cursor — new messages
in all its conversations, receipts that moved, membership changes in its groups — paged, with a new cursor.

A cursor holds one position per change stream (switchboard.streams). Positions follow commit order, so a
change that commits late is never skipped. Without ``since`` the answer is empty and its cursor is "now":
load the first screen with /v1/conversations and history, then sync from that cursor.

``timeout`` (seconds, up to 60) makes it a long poll, as Matrix's /sync and Zulip's /events: when nothing
changed, the answer waits until something does (then comes at once) or the time is up (then it is empty,
with the same cursor). Waiting costs no database query: the process's change watch (api/changes.py) wakes
only the requests its changes concern. The pages themselves are read by api/reads.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import Engine

from api.changes import ChangeWatch, Waiter
from api.deps import AUTH_ERRORS, CurrentUser, ReadThreads, run_read
from api.reads import Cursor, SyncResult, dumps, sync_page
from api.schemas import SyncPage

router = APIRouter(prefix="/v1", tags=["sync"])

MAX_LIMIT = 1000
MAX_TIMEOUT = 60
MAX_SINCE = 80  # characters of a cursor
__all__ = ["Cursor", "router"]


@router.get(
    "/sync",
    response_model=SyncPage,
    responses={
        **AUTH_ERRORS,
        400: {
            "description": "`since` is not a cursor this server gave out: malformed, or well formed but ahead of the "
            "server's newest change (a cursor from another server, or the database was restored from a backup). "
            "Sync again without `since`."
        },
    },
)
async def sync(
    request: Request,
    user: CurrentUser,
    since: Annotated[
        str | None,
        Query(
            max_length=MAX_SINCE,
            description="The `next` of the previous sync; omit to start from now.",
            examples=["v1.1000.70.5"],
        ),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="At most this many of each kind of change.", examples=[100])
    ] = 100,
    timeout: Annotated[  # noqa: ASYNC109 (the query parameter's name is the API: ?timeout=30)
        float,
        Query(
            ge=0,
            le=MAX_TIMEOUT,
            description="Long poll: when nothing changed since `since`, wait up to this many seconds (0 to 60) for a "
            "change and answer as soon as one commits; an empty page (same `next`) when the time is up. 0 (the "
            "default) answers at once. Ignored without `since`.",
            examples=[30],
        ),
    ] = 0,
) -> Response:
    """Oldest change first. When ``more`` is true, call again at once with ``next``."""
    engine = request.app.state.read_engine
    waiting = timeout > 0 and since is not None
    page = await run_read(request, sync_page, engine, user.name, since, limit, interest=waiting)
    if waiting and page.empty:
        state = request.app.state
        page = await _long_poll(state.changes, state.read_threads, engine, user.name, page, limit, timeout)
    return Response(dumps(page.content), media_type="application/json")


async def _long_poll(
    watch: ChangeWatch, threads: ReadThreads, engine: Engine, user: str, page: SyncResult, limit: int, seconds: float
) -> SyncResult:
    """Wait on the change watch until a change concerns ``user`` and its sync page is not empty, or until
    ``seconds``; returns the last page read (empty when the time ran out)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    await watch.ready()
    waiter = Waiter(user, page.conversations, page.groups)
    watch.register(waiter)
    try:
        # Changes the watch handed out before the waiter was registered: read them once now. Every later
        # one wakes the waiter.
        heads = watch.heads
        assert heads is not None
        missed = page.next.behind(heads)
        while True:
            if not missed:
                remaining = deadline - loop.time()
                if remaining <= 0 or watch.closing:
                    return page
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.woken.wait(), remaining)
                if not waiter.woken.is_set() or watch.closing:  # the time is up, or the server is stopping
                    return page
            missed = False
            waiter.woken.clear()
            # Woken: most likely by a change for this user, whose page is then the answer. What the user reads
            # (two more queries) is needed only to wait again, after a change that was not for it.
            found = await threads.run(sync_page, engine, user, str(page.next), limit)
            if not found.empty:
                return found
            page = await threads.run(sync_page, engine, user, str(page.next), limit, interest=True)
            if not page.empty:
                return page
            waiter.conversations, waiter.groups = page.conversations, page.groups
    finally:
        watch.unregister(waiter)
