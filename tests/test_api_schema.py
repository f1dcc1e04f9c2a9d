"""schemathesis against the API's own OpenAPI schema: every documented route, as an administrator (so the
admin routes are reached), generated inputs (valid and not), every check but "schema-valid data is
accepted" (a schema-valid conversation id may still not exist: 404 is the right answer). Nothing may
return 500 or an undocumented status."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from switchboard.tables import Role
from tests.conftest import stack_users
from tests.helpers import start_stack


def test_schemathesis_finds_no_failures(tmp_path: Path) -> None:
    # The fuzzer sends hundreds of bad credentials from one address (ST401 checks each gets 401): lift the
    # login throttle here; tests/test_logins.py covers it.
    stack = start_stack(
        f"sqlite:///{tmp_path}/schema.db",
        tmp_path,
        SWITCHBOARD_LOGIN__MAX_FAILURES="1000000",
        SWITCHBOARD_LOGIN__BACKOFF_MAX_SECONDS="0",
    )
    try:
        with stack_users(stack) as users:
            user, password = users.user("fuzzer", role=Role.ADMIN)  # so the admin routes are reached too
        schemathesis = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
        result = subprocess.run(
            [
                schemathesis,
                "run",
                f"{stack.api}/openapi.json",
                "--auth",
                f"{user}:{password}",
                "--max-examples",
                "25",
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance",
                "--seed",
                "1",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    finally:
        assert stack.stop() == 0


def test_every_schema_and_parameter_has_a_valid_example() -> None:
    """The OpenAPI document shows an example for every model and parameter, and each model's example is
    accepted by the model itself (so the docs never show a body the API would refuse)."""
    from sqlalchemy import create_engine

    from api import schemas
    from api.app import create_app
    from switchboard.settings import ApiSettings

    spec = create_app(create_engine("sqlite://"), ApiSettings()).openapi()
    models: dict[str, type[schemas.Schema]] = {}
    pending = list(schemas.Schema.__subclasses__())
    while pending:
        model = pending.pop()
        models[model.__name__] = model
        pending += model.__subclasses__()
    ours = {name: schema for name, schema in spec["components"]["schemas"].items() if "ValidationError" not in name}
    assert len(ours) >= 20 and set(ours) <= set(models), set(ours) - set(models)
    for name, schema in ours.items():
        assert schema.get("examples"), f"{name} has no example"
        for example in schema["examples"]:
            models[name].model_validate_json(json.dumps(example))
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                assert "examples" in parameter or "examples" in parameter["schema"], (method, path, parameter["name"])
