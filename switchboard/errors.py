"""The exceptions Switchboard raises, one root for the whole project.

    SwitchboardError
    ├── ConfigError        a setting is unknown, malformed, or cannot be honoured (port in use)
    ├── StoreError         the database refused or could not be reached
    ├── AccountError       a user or group operation is impossible (duplicate name, own account)
    │   ├── UnknownAccount the user or group does not exist
    │   └── InvalidAccount a name or password is not acceptable
    └── MediaRefused       an upload is not accepted
        ├── MediaTooLarge  over media.max_bytes
        └── MediaTypeRefused  its bytes are not one of media.allowed_types

Library errors (pydantic, SQLAlchemy, OSError) are translated into these once, at the edge that
calls the library, so callers and the CLI only ever handle this tree.
"""


class SwitchboardError(Exception):
    """Root of every error Switchboard raises on purpose."""


class ConfigError(SwitchboardError):
    """A setting is wrong. The message is one line: the setting, the value, and what to do."""


class StoreError(SwitchboardError):
    """The database failed. ``retryable``: it was unreachable, trying later can help. ``conflict``: a
    concurrent writer won a race (a unique key); trying again at once sees its row."""

    def __init__(self, message: str, *, retryable: bool = False, conflict: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.conflict = conflict


class AccountError(SwitchboardError):
    """A user or group operation cannot be done as asked."""


class UnknownAccount(AccountError):
    """The user or group named does not exist."""


class InvalidAccount(AccountError):
    """A name or password is not acceptable (the message says what is)."""


class MediaRefused(SwitchboardError):
    """An upload is not accepted; the message says why and what is."""


class MediaTooLarge(MediaRefused):
    """The upload is larger than ``media.max_bytes``."""


class MediaTypeRefused(MediaRefused):
    """The upload's bytes are not of an accepted type (sniffed, whatever the client declared)."""
