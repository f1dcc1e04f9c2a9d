"""schemathesis against the API's own OpenAPI schema: every documented route, as an administrator (so the
admin routes are reached), generated inputs (valid and not), every check but "schema-valid data is
accepted" (a schema-valid conversation id may still not exist: 404 is the right answer). Nothing may
return 500 or an undocumented status."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from switchboard.tables import Role
from tests.conftest import stack_users
from tests.helpers import start_stack


def test_schemathesis_finds_no_failures(tmp_path: Path) -> None:
    # The fuzzer sends hundreds of bad credentials from one address (ST401 checks each gets 401): lift the
    # login throttle here; tests/test_api.py covers it.
    stack = start_stack(
        f"sqlite:///{tmp_path}/schema.db",
        tmp_path,
        SWITCHBOARD_API__MAX_FAILED_LOGINS="1000000",
        SWITCHBOARD_API__MAX_FAILED_LOGINS_PER_ADDRESS="1000000",
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
