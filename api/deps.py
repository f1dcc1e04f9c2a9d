"""Dependencies shared by the routes: a database session and the authenticated caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from sqlalchemy import Engine
from sqlmodel import Session

from switchboard import accounts
from switchboard.tables import User
from switchboard.topics import Conversation, parse_conversation

basic = HTTPBasic(description="The same username and password as for MQTT.")


def get_session(request: Request) -> Iterator[Session]:
    """A session on the app's engine, closed after the request."""
    engine: Engine = request.app.state.engine
    with Session(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_current_user(session: SessionDep, credentials: Annotated[HTTPBasicCredentials, Depends(basic)]) -> User:
    """The user named by HTTP Basic credentials; 401 when they are wrong."""
    user = accounts.authenticate(session, credentials.username, credentials.password)
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="bad username or password",
            headers={"WWW-Authenticate": 'Basic realm="switchboard"'},
        )
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def readable_conversation(
    session: SessionDep,
    user: CurrentUser,
    conversation: Annotated[str, Path(description="dm:{a}:{b} (names sorted) or group:{g}", examples=["dm:alice:bob"])],
) -> Conversation:
    """The conversation in the path, if it exists (else 404) and the caller is part of it (else 403)."""
    parsed = parse_conversation(conversation)
    if parsed is None or not accounts.conversation_exists(session, parsed):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"conversation {conversation!r} does not exist")
    if not accounts.may_read(session, user.name, parsed):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"you are not part of {conversation!r}")
    return parsed


ReadableConversation = Annotated[Conversation, Depends(readable_conversation)]

#: The error answers every route that takes a conversation can give, for the OpenAPI schema.
CONVERSATION_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "Missing or bad credentials."},
    403: {"description": "The caller is not part of this conversation."},
    404: {"description": "No such conversation."},
}
