"""Settings: defaults, the YAML file, environment overrides, and one-line errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard.errors import ConfigError
from switchboard.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("SWITCHBOARD_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no config/switchboard.yaml here


def test_defaults_are_the_embedded_stack() -> None:
    settings = load_settings()
    assert settings.database_url == "sqlite:///./var/switchboard.db"
    assert (settings.mqtt.host, settings.mqtt.port, settings.mqtt.allow_anonymous) == ("0.0.0.0", 1883, False)
    assert (settings.api.host, settings.api.port) == ("0.0.0.0", 8000)


def test_shipped_config_file_holds_the_defaults() -> None:
    shipped = Path(__file__).resolve().parent.parent / "config" / "switchboard.yaml"
    assert load_settings(shipped) == load_settings()


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "custom.yaml"
    config.write_text("mqtt:\n  port: 1999\napi:\n  port: 8111\n")
    monkeypatch.setenv("SWITCHBOARD_MQTT__PORT", "2000")
    monkeypatch.setenv("SWITCHBOARD_MQTT__ALLOW_ANONYMOUS", "true")
    monkeypatch.setenv("SWITCHBOARD_DATABASE_URL", "postgresql+psycopg://u:p@db/switchboard")
    settings = load_settings(config)
    assert settings.mqtt.port == 2000
    assert settings.mqtt.allow_anonymous is True
    assert settings.api.port == 8111
    assert settings.database_url == "postgresql+psycopg://u:p@db/switchboard"


def test_config_env_variable_picks_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "other.yaml"
    config.write_text("api:\n  port: 8222\n")
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(config))
    assert load_settings().api.port == 8222


def _error(**kwargs: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(**kwargs)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_unknown_key_in_file(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("mqtt:\n  prot: 1883\n")
    message = _error(config_file=config)
    assert "unknown setting 'mqtt.prot'" in message and "bad.yaml" in message


def test_unknown_top_level_env_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_DATABSE_URL", "sqlite:///x.db")
    message = _error()
    assert "SWITCHBOARD_DATABSE_URL" in message and "SWITCHBOARD_DATABASE_URL" in message


def test_unknown_nested_env_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_MQTT__PROT", "1")
    assert "unknown setting 'mqtt.prot'" in _error()


def test_bad_value_names_setting_value_and_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_MQTT__PORT", "eighty")
    message = _error()
    assert "mqtt.port" in message and "SWITCHBOARD_MQTT__PORT" in message and "'eighty'" in message
    assert "TCP port" in message


def test_out_of_range_port_in_file(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("api:\n  port: 70000\n")
    message = _error(config_file=config)
    assert "api.port" in message and "70000" in message and "less than or equal to 65535" in message


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    assert "does not exist" in _error(config_file=tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("mqtt: [unclosed\n")
    assert "not valid YAML" in _error(config_file=broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    assert "must hold a mapping" in _error(config_file=listing)


def test_tls_needs_existing_cert_and_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SWITCHBOARD_MQTT__TLS_PORT", "8883")
    assert _error() == "mqtt.tls_port needs mqtt.tls_cert and mqtt.tls_key (PEM files): fix the settings"
    monkeypatch.setenv("SWITCHBOARD_MQTT__TLS_CERT", str(tmp_path / "missing.pem"))
    monkeypatch.setenv("SWITCHBOARD_MQTT__TLS_KEY", str(tmp_path / "missing.key"))
    assert "missing.pem': no such file" in _error()


def test_wss_needs_the_tls_cert_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_MQTT__WSS_PORT", "8084")
    assert _error() == "mqtt.wss_port needs mqtt.tls_cert and mqtt.tls_key (PEM files): fix the settings"


def test_null_in_the_environment_turns_an_optional_listener_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_MQTT__WS_PORT", "null")
    monkeypatch.setenv("SWITCHBOARD_BRIDGE__METRICS_PORT", "null")
    settings = load_settings()
    assert (settings.mqtt.ws_port, settings.bridge.metrics_port) == (None, None)


def test_null_for_a_required_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_MQTT__PORT", "null")
    with pytest.raises(ConfigError, match=r"mqtt\.port \(SWITCHBOARD_MQTT__PORT\)"):
        load_settings()


def test_log_format_json_and_level_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_LOG__FORMAT", "json")
    monkeypatch.setenv("SWITCHBOARD_LOG__LEVEL", "WARNING")
    assert load_settings().log.model_dump() == {"level": "WARNING", "format": "json"}
    monkeypatch.setenv("SWITCHBOARD_LOG__FORMAT", "xml")
    with pytest.raises(ConfigError, match=r"log\.format \(SWITCHBOARD_LOG__FORMAT\) = 'xml'"):
        load_settings()


@pytest.mark.parametrize(
    "url",
    ["mysql://u:secret@db/switchboard", "postgresql+asyncpg://u@db/x", "postgresql+psycopg2://u@db/x", "not a url"],
)
def test_database_url_must_be_one_switchboard_can_open(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("SWITCHBOARD_DATABASE_URL", url)
    message = _error()
    assert "bad value for database_url" in message
    assert "sqlite:///PATH" in message and "postgresql+psycopg://" in message  # what is accepted
    assert "secret" not in message  # the password is not echoed


@pytest.mark.parametrize(
    "url", ["sqlite:///./var/x.db", "sqlite:////abs/x.db", "postgresql+psycopg://u:p@db/x", "postgresql://u:p@db/x"]
)
def test_database_urls_switchboard_opens_are_valid(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("SWITCHBOARD_DATABASE_URL", url)
    assert load_settings().database_url == url
