"""schemathesis against the API's own OpenAPI schema: every documented route, as an administrator (so the
admin routes are reached), generated inputs (valid and not), every check. Nothing may return 500 or an
undocumented status, and a schema-valid request may be refused only where the schema says why."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from switchboard.tables import Role
from tests.conftest import stack_users
from tests.helpers import start_stack

#: Schema-valid requests the server refuses on purpose, each documented in the operation's responses: a
#: well-formed `since` cursor ahead of the server (400), a file that is empty or of a type not accepted (415),
#: blocking yourself (400). No schema can say these apart from valid ones, so schemathesis is told they are
#: expected answers.
REFUSED_THOUGH_SCHEMA_VALID = {("GET", "/v1/sync"): 400, ("POST", "/v1/media"): 415, ("PUT", "/v1/blocks/{user}"): 400}
#: What schemathesis's positive_data_acceptance check accepts by default.
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]


LOGOUT_PATHS = "/v1/auth/logout"


def schemathesis_config(spec: dict[str, object], directory: Path) -> Path:
    """A schemathesis.toml: no cache written anywhere, and the documented refusals of schema-valid data."""
    paths = spec["paths"]
    assert isinstance(paths, dict)
    lines = ["[cache]", "enabled = false", ""]
    for (method, path), status in REFUSED_THOUGH_SCHEMA_VALID.items():
        assert str(status) in paths[path][method.lower()]["responses"], f"{method} {path} does not document {status}"
        lines += [
            "[[operations]]",
            f'include-name = "{method} {path}"',  # (include-path with include-method matches either, not both)
            f"checks.positive_data_acceptance.expected-statuses = {json.dumps([*ACCEPTED, str(status)])}",
            "",
        ]
    config = directory / "schemathesis.toml"
    config.write_text("\n".join(lines))
    return config


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
        with httpx.Client(base_url=stack.api, timeout=30, trust_env=False) as http:
            # A bearer token: HTTP Basic would verify the password hash on each of ~1,000 requests (minutes).
            token = http.post("/v1/auth/token", json={"username": user, "password": password}).json()["access_token"]
            spec = http.get("/openapi.json").json()
        # The logouts would end the fuzzer's own token (every later request 401): tests/test_api_tokens.py covers them.
        logouts = [path for path in spec["paths"] if path.startswith(LOGOUT_PATHS)]
        assert logouts == ["/v1/auth/logout", "/v1/auth/logout/all"]
        operations = sum(len(methods) for path, methods in spec["paths"].items() if path not in logouts)
        workdir = tmp_path / "schemathesis"  # its working files (hypothesis's) stay out of the checkout
        workdir.mkdir()
        schemathesis = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
        result = subprocess.run(
            [
                schemathesis,
                "--config-file",
                str(schemathesis_config(spec, workdir)),
                "run",
                f"{stack.api}/openapi.json",
                "--header",
                f"Authorization: Bearer {token}",
                "--exclude-path-regex",
                f"^{LOGOUT_PATHS}",
                "--max-examples",
                "25",
                "--checks",
                "all",
                "--generation-database",
                "none",
                "--seed",
                "1",
                "--no-color",
            ],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        assert f"Tested: {operations}" in result.stdout, result.stdout[-3000:]  # every route, sync and media too
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
