"""The ``switchboard`` command: administration, and start-up errors reported in one line."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.helpers import run_cli, start_service, switchboard_env


def test_user_and_group_administration(tmp_path: Path) -> None:
    env = switchboard_env(f"sqlite:///{tmp_path}/admin.db")
    assert run_cli("user", "add", "alice", "--password", "pw", env=env, cwd=tmp_path).returncode == 0
    piped = run_cli("user", "add", "bob", env=env, cwd=tmp_path, stdin="secret\n")
    assert piped.returncode == 0, piped.stderr
    admin = run_cli("user", "add", "root-admin", "--role", "admin", "--password", "x", env=env, cwd=tmp_path)
    assert admin.returncode == 0

    listing = run_cli("user", "list", env=env, cwd=tmp_path)
    assert listing.stdout.splitlines() == ["alice\tuser", "bob\tuser", "root-admin\tadmin"]

    assert run_cli("group", "create", "team", "--member", "alice", env=env, cwd=tmp_path).returncode == 0
    assert run_cli("group", "add-member", "team", "bob", env=env, cwd=tmp_path).returncode == 0

    duplicate = run_cli("user", "add", "alice", "--password", "pw", env=env, cwd=tmp_path)
    assert duplicate.returncode == 1
    assert duplicate.stderr.strip() == "switchboard: error: user 'alice' already exists: pick another name"
    unknown = run_cli("group", "add-member", "team", "nobody", env=env, cwd=tmp_path)
    assert unknown.returncode == 1 and "user 'nobody' does not exist" in unknown.stderr
    bad_name = run_cli("user", "add", "no spaces", "--password", "pw", env=env, cwd=tmp_path)
    assert bad_name.returncode == 1 and "invalid" in bad_name.stderr
    empty = run_cli("user", "add", "carol", env=env, cwd=tmp_path, stdin="\n")
    assert empty.returncode == 1 and "password is empty" in empty.stderr

    removed = run_cli("group", "remove-member", "team", "bob", env=env, cwd=tmp_path)
    assert removed.returncode == 0 and removed.stdout.strip() == "bob removed from team"
    again = run_cli("group", "remove-member", "team", "bob", env=env, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.strip() == "bob was not a member of team"
    assert run_cli("user", "disable", "alice", env=env, cwd=tmp_path).returncode == 0
    listing = run_cli("user", "list", env=env, cwd=tmp_path)
    assert listing.stdout.splitlines()[0] == "alice\tuser (disabled)"
    assert run_cli("user", "enable", "alice", env=env, cwd=tmp_path).stdout.strip() == "user alice enabled"
    nobody = run_cli("user", "disable", "nobody", env=env, cwd=tmp_path)
    assert nobody.returncode == 1 and "user 'nobody' does not exist" in nobody.stderr


def test_db_upgrade_is_idempotent(tmp_path: Path) -> None:
    env = switchboard_env(f"sqlite:///{tmp_path}/up.db")
    for _ in range(2):
        result = run_cli("db", "upgrade", env=env, cwd=tmp_path)
        assert result.returncode == 0 and "up to date" in result.stdout


def test_bad_config_stops_startup_with_one_line(tmp_path: Path) -> None:
    env = switchboard_env(f"sqlite:///{tmp_path}/x.db", SWITCHBOARD_API__PORT="http")
    result = run_cli("up", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "api.port" in result.stderr and "'http'" in result.stderr

    env = switchboard_env(f"sqlite:///{tmp_path}/x.db", SWITCHBOARD_MQTT__MAX_CONNECTIONZ="5")
    result = run_cli("broker", env=env, cwd=tmp_path)
    assert result.returncode == 1 and "unknown setting 'mqtt.max_connectionz'" in result.stderr


def test_port_in_use_stops_startup_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for variable, setting in (("SWITCHBOARD_MQTT__PORT", "mqtt.port"), ("SWITCHBOARD_API__PORT", "api.port")):
            env = switchboard_env(f"sqlite:///{tmp_path}/p.db", **{variable: str(port)})
            result = run_cli("up", env=env, cwd=tmp_path)
            assert result.returncode == 1, result.stdout + result.stderr
            errors = [line for line in result.stderr.splitlines() if "error" in line]
            assert errors == [
                f"switchboard: error: {setting} = {port} ({variable}): port {port} on 127.0.0.1 is already in use; "
                f"stop the other server or choose another port with {variable}"
            ]


def test_bridge_alone_needs_its_password(tmp_path: Path) -> None:
    env = switchboard_env(f"sqlite:///{tmp_path}/b.db")
    result = run_cli("bridge", env=env, cwd=tmp_path)
    assert result.returncode == 1 and "SWITCHBOARD_BRIDGE__PASSWORD" in result.stderr


def test_up_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    import signal

    service = start_service("up", env=switchboard_env(f"sqlite:///{tmp_path}/t.db"), cwd=tmp_path)
    service.out.wait_for("switchboard: ready", 60)
    assert service.stop(signal.SIGTERM) == 0
    assert "switchboard: stopped" in service.output()


def test_config_option_before_or_after_the_command(tmp_path: Path) -> None:
    """`switchboard --config F COMMAND` and `switchboard COMMAND --config F` both read F, for every kind of command."""
    env = switchboard_env("unused")
    del env["SWITCHBOARD_DATABASE_URL"]  # the file says which database
    config = tmp_path / "site.yaml"
    config.write_text(f"database_url: sqlite:///{tmp_path}/site.db\n")
    elsewhere = tmp_path / "elsewhere"  # where the default database would go if the file were ignored
    elsewhere.mkdir()
    given = ("--config", str(config))

    added = run_cli("user", "add", "alice", "--password", "pw", *given, env=env, cwd=elsewhere)
    assert added.returncode == 0, added.stderr
    assert run_cli(*given, "group", "create", "team", "--member", "alice", env=env, cwd=elsewhere).returncode == 0
    for args in ((*given, "user", "list"), ("user", "list", *given)):
        assert run_cli(*args, env=env, cwd=elsewhere).stdout.splitlines() == ["alice\tuser"], args
    for args in ((*given, "config", "show"), ("config", "show", *given)):
        assert f"{tmp_path}/site.db" in run_cli(*args, env=env, cwd=elsewhere).stdout, args
    assert not (elsewhere / "var").exists()  # the default database was never made

    bad = tmp_path / "bad.yaml"
    bad.write_text("mqtt:\n  sys_interval: 0\n")
    wrong = ("--config", str(bad))
    for args in ((*wrong, "up"), ("up", *wrong), ("broker", *wrong), (*wrong, "api")):
        result = run_cli(*args, env=env, cwd=elsewhere)
        assert result.returncode == 1, (args, result.stdout)
        assert "mqtt.sys_interval" in result.stderr and "bad.yaml" in result.stderr, args


def test_a_new_or_empty_database_is_named_and_no_users_said(tmp_path: Path) -> None:
    """A relative SQLite path run from another folder makes a new database there: the command says so."""
    env = switchboard_env("sqlite:///./var/switchboard.db")
    elsewhere = (tmp_path / "elsewhere").resolve()
    elsewhere.mkdir()
    database = elsewhere / "var" / "switchboard.db"
    relative = f"(database_url sqlite:///./var/switchboard.db is relative to the current folder {elsewhere})"

    first = run_cli("user", "list", env=env, cwd=elsewhere)
    assert (first.returncode, first.stdout) == (0, "no users\n")
    assert first.stderr == f"switchboard: using a new, empty database at {database} {relative}\n"
    again = run_cli("user", "list", env=env, cwd=elsewhere)
    assert (again.returncode, again.stdout) == (0, "no users\n")
    assert again.stderr == f"switchboard: no users in the database at {database} {relative}\n"

    assert run_cli("user", "add", "alice", "--password", "pw", env=env, cwd=elsewhere).returncode == 0
    listing = run_cli("user", "list", env=env, cwd=elsewhere)
    assert (listing.stdout, listing.stderr) == ("alice\tuser\n", "")

    absolute = run_cli("db", "upgrade", env=switchboard_env(f"sqlite:///{tmp_path}/abs.db"), cwd=elsewhere)
    assert absolute.stderr == f"switchboard: using a new, empty database at {tmp_path}/abs.db\n"
