"""The broker and the bridge use their libraries through their public API only: no attribute whose name starts
with an underscore is read from anything but their own objects (``self``, ``cls``) [issue 14, item 2: the
bridge used to acknowledge through aiomqtt's private ``_client``; the broker read amqtt's ``_servers`` and its
stream adapters' ``_reader``/``_writer``/``_protocol``]."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def private_reads(source: str) -> list[str]:
    """``value._name`` reads where ``value`` is not ``self`` or ``cls``, as ``line: expression``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and str(node.args[1].value).startswith("_")
        ):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
            continue
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("package", ["broker", "bridge"])
def test_no_module_reads_a_private_attribute_of_a_library(package: str) -> None:
    modules = sorted((REPO / package).rglob("*.py"))
    assert modules
    offenders = {path.name: reads for path in modules if (reads := private_reads(path.read_text()))}
    assert offenders == {}


def test_the_check_sees_a_private_read() -> None:
    assert private_reads("client._client.ack(1, 1)\nself._queue.put(1)\n") == ["1: client._client"]
    assert private_reads('inner = getattr(reader, "_reader", None)\n') == ["1: getattr(reader, '_reader', None)"]
