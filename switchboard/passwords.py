"""Password hashes: argon2id (argon2-cffi), shared by switchboard.accounts (the ORM side) and the broker's
login check (broker/login_batch.py), which must not load the ORM.

argon2 is loaded on the first password hashed or checked (a broker whose clients log in with API tokens
never loads it), and the dummy hash that unknown names are checked against (so they cost the same time
as known ones) is made then, not at import.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from switchboard.errors import InvalidAccount

if TYPE_CHECKING:
    from argon2 import PasswordHasher

MAX_PASSWORD_CHARS = 1024


@cache
def _hasher() -> PasswordHasher:
    from argon2 import PasswordHasher

    return PasswordHasher()


@cache
def _dummy_hash() -> str:
    return _hasher().hash("switchboard-dummy-password")


def hash_password(password: str) -> str:
    """An argon2id hash of ``password``."""
    if not password:
        raise InvalidAccount("the password is empty: choose one of at least 1 character")
    if len(password) > MAX_PASSWORD_CHARS:
        raise InvalidAccount(f"the password is longer than {MAX_PASSWORD_CHARS} characters")
    return _hasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when ``password`` matches ``password_hash``."""
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def waste_time(password: str) -> None:
    """Verify against a dummy hash: an unknown name or a refused password costs what a known one does."""
    verify_password(_dummy_hash(), password)
