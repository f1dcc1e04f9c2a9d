"""User and group names: one rule (``switchboard.topics.is_valid_name``, a full match) for the CLI, the admin
API and the broker, so nothing the CLI creates is out of the admin API's reach."""

from __future__ import annotations

from pathlib import Path

from switchboard.tables import Role
from switchboard.topics import is_valid_name
from tests.conftest import Users
from tests.helpers import Stack, run_cli, switchboard_env

#: Names that look almost right; "bob\n" passed re.match(r"^...$") because "$" also matches before a final newline.
BAD_NAMES = ["bob\n", "bob\r", "\nbob", "bo b", "", "x" * 65, "bob/x", "b+b", "b#b"]


def test_a_name_is_the_whole_string() -> None:
    assert is_valid_name("bob") and is_valid_name("a.b_c-9") and is_valid_name("x" * 64)
    for name in BAD_NAMES:
        assert not is_valid_name(name), repr(name)


def test_cli_refuses_names_the_admin_api_refuses(tmp_path: Path, chat_stack: Stack, chat_users: Users) -> None:
    env = switchboard_env(f"sqlite:///{tmp_path}/names.db")
    assert run_cli("user", "add", "alice", "--password", "pw", env=env, cwd=tmp_path).returncode == 0
    admin = chat_users.user("admin", role=Role.ADMIN)
    with chat_stack.http(*admin) as http:
        for name in ("bob\n",):  # the others differ from it only in is_valid_name, tested above
            user = run_cli("user", "add", name, "--password", "pw", env=env, cwd=tmp_path)
            assert user.returncode == 1 and f"user name {name!r} is invalid" in user.stderr, user.stderr
            group = run_cli("group", "create", name, "--member", "alice", env=env, cwd=tmp_path)
            assert group.returncode == 1 and f"group name {name!r} is invalid" in group.stderr, group.stderr
            assert http.post("/v1/admin/users", json={"name": name, "password": "pw"}).status_code == 422
            assert http.post("/v1/admin/groups", json={"name": name}).status_code == 422
    listing = run_cli("user", "list", env=env, cwd=tmp_path)
    assert listing.stdout.splitlines() == ["alice\tuser"]
