"""Dependencies shared by the routes: a database session and the authenticated caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from sqlalchemy import Engine
from sqlmodel import Session

from switchboard import accounts
from switchboard.tables import User

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
