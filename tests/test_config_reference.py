"""docs/configuration.md is generated from the settings models and must match them; `switchboard config
check` lists every problem at once; `switchboard config show` masks secrets."""

from __future__ import annotations

from pathlib import Path

import yaml

from switchboard import config_reference
from tests.helpers import run_cli, switchboard_env

REPO = Path(__file__).resolve().parent.parent


def test_every_setting_is_documented_and_the_reference_is_current() -> None:
    undocumented = [entry.key for entry in config_reference.entries() if not entry.description.strip()]
    assert undocumented == [], f"settings without a description: {undocumented}"
    written = (REPO / "docs" / "configuration.md").read_text()
    assert written == config_reference.render(), (
        "docs/configuration.md is out of date: run `switchboard config reference > docs/configuration.md`"
    )
    keys = [entry.key for entry in config_reference.entries()]
    assert {"database_url", "mqtt.port", "mqtt.directory_poll_seconds", "bridge.password"} <= set(keys)
    assert all(f"`{key}`" in written for key in keys)


def test_config_check_lists_every_problem(tmp_path: Path) -> None:
    env = switchboard_env(f"sqlite:///{tmp_path}/c.db")
    good = tmp_path / "good.yaml"
    good.write_text("mqtt:\n  port: 1884\n")
    ok = run_cli("config", "check", "--config", str(good), env=env, cwd=tmp_path)
    assert ok.returncode == 0 and "valid" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("mqtt:\n  sys_interval: 0\n  max_inflight: zero\n  colour: blue\nlogin:\n  max_failures: -1\n")
    env["SWITCHBOARD_TYPO"] = "1"
    result = run_cli("config", "check", "--config", str(bad), env=env, cwd=tmp_path)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("switchboard: error:")]
    assert len(lines) == 5, result.stderr
    for needle in ("SWITCHBOARD_TYPO", "mqtt.sys_interval", "mqtt.max_inflight", "'mqtt.colour'", "login.max_failures"):
        assert any(needle in line for line in lines), (needle, result.stderr)
    assert "5 problem(s)" in result.stderr
    # starting anything with that file still stops at the first problem, and points at config check
    del env["SWITCHBOARD_TYPO"]
    started = run_cli("--config", str(bad), "db", "upgrade", env=env, cwd=tmp_path)
    assert started.returncode == 1 and "switchboard config check" in started.stderr, started.stderr


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    env = switchboard_env("postgresql+psycopg://bridge:db-secret@db.example/switchboard")
    env["SWITCHBOARD_BRIDGE__PASSWORD"] = "bridge-secret"
    shown = run_cli("config", "show", env=env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "db-secret" not in shown.stdout and "bridge-secret" not in shown.stdout
    data = yaml.safe_load(shown.stdout)
    assert data["database_url"] == "postgresql+psycopg://bridge:***@db.example/switchboard"
    assert data["bridge"]["password"] == config_reference.MASK
    assert data["mqtt"]["port"] == 0  # the environment's value, not the default


def test_config_check_refuses_a_database_url_switchboard_cannot_open(tmp_path: Path) -> None:
    config = tmp_path / "mysql.yaml"
    config.write_text("database_url: mysql://switchboard:secret@db/switchboard\n")
    env = switchboard_env("unused")
    del env["SWITCHBOARD_DATABASE_URL"]
    result = run_cli("config", "check", "--config", str(config), env=env, cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    assert "bad value for database_url" in result.stderr and "mysql://" in result.stderr
    assert "sqlite:///PATH" in result.stderr and "postgresql+psycopg://" in result.stderr
    assert "secret" not in result.stderr
