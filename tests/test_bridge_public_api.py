"""The bridge uses its libraries through their public API only: no attribute whose name starts with an
underscore is read from anything but the bridge's own objects (``self``, ``cls``) [issue 14, item 2: the
bridge used to acknowledge through aiomqtt's private ``_client``]."""

from __future__ import annotations

import ast
from pathlib import Path

BRIDGE = Path(__file__).resolve().parent.parent / "bridge"


def private_reads(source: str) -> list[str]:
    """``value._name`` reads where ``value`` is not ``self`` or ``cls``, as ``line: expression``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_of_the_bridge_reads_a_private_attribute_of_a_library() -> None:
    offenders = {path.name: reads for path in sorted(BRIDGE.glob("*.py")) if (reads := private_reads(path.read_text()))}
    assert offenders == {}


def test_the_check_sees_a_private_read() -> None:
    assert private_reads("client._client.ack(1, 1)\nself._queue.put(1)\n") == ["1: client._client"]
