"""The dependency arrows: services import the shared domain, never each other; the domain imports no service."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SERVICES = {"broker", "bridge", "api"}


def _imports(package: str) -> set[str]:
    found: set[str] = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_services_do_not_import_each_other(service: str) -> None:
    assert _imports(service) & (SERVICES - {service}) == set()
    assert "cli" not in _imports(service)


def test_shared_domain_imports_no_service() -> None:
    assert _imports("switchboard") & (SERVICES | {"cli"}) == set()
