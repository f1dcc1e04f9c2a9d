"""JSON from untrusted bytes (REST bodies, MQTT payloads, retained messages): one parser whose only error is a
``ValueError``.

``json.loads`` raises ``RecursionError`` for a document nested deeper than the interpreter's recursion limit
(``[[[[...`` 100,000 times), which callers catching ``ValueError`` do not expect: a request would answer 500, a
broker or bridge task would die. Here it becomes :class:`JsonTooDeep`, a ``ValueError`` with a message a person
can act on.
"""

from __future__ import annotations

import json
from typing import Any


class JsonTooDeep(ValueError):
    """The document nests arrays and objects deeper than the parser can follow."""

    def __init__(self) -> None:
        super().__init__("JSON nested too deeply: send objects and arrays at most a few levels deep")


def loads(data: str | bytes) -> Any:
    """The value of a JSON document; ``json.JSONDecodeError`` when malformed, :class:`JsonTooDeep` when nested
    too deeply (both are ``ValueError``)."""
    try:
        return json.loads(data)
    except RecursionError:
        raise JsonTooDeep() from None
