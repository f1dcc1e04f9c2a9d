"""docker-compose.yml is valid (checked by Debian's docker-compose; no Docker engine runs here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from switchboard.settings import ApiSettings, BridgeSettings

REPO = Path(__file__).resolve().parent.parent


def _config() -> dict[str, object]:
    assert shutil.which("docker-compose"), "docker-compose is missing: scripts/test installs it from Debian"
    result = subprocess.run(
        ["docker-compose", "--env-file", ".env.example", "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return dict(yaml.safe_load(result.stdout))


def test_compose_file_is_valid_and_starts_in_order() -> None:
    services = _config()["services"]
    assert isinstance(services, dict)
    assert set(services) == {"postgres", "migrate", "broker", "bridge", "api"}
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["broker"]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    assert services["bridge"]["depends_on"] == {"broker": {"condition": "service_healthy"}}
    assert services["api"]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    for name in ("migrate", "broker", "bridge", "api"):
        url = services[name]["environment"]["SWITCHBOARD_DATABASE_URL"]
        assert url.startswith("postgresql+psycopg://switchboard:")
        assert services[name]["environment"]["SWITCHBOARD_LOG__FORMAT"] == "json"
        assert services[name]["environment"]["SWITCHBOARD_NOTIFY__WEBHOOK_URL"] == "null"  # off unless set
    assert any(str(volume).startswith("media:/app/var/media") for volume in services["api"]["volumes"])


def test_compose_gives_services_longer_to_stop_than_they_take() -> None:
    """SIGTERM, then SIGKILL after stop_grace_period: it must outlast bridge/api.stop_timeout_seconds."""
    services = _config()["services"]
    assert isinstance(services, dict)
    longest = max(BridgeSettings().stop_timeout_seconds, ApiSettings().stop_timeout_seconds) + 5
    for name in ("broker", "bridge", "api"):
        grace = services[name]["stop_grace_period"]
        assert grace.endswith("s") and float(grace[:-1]) > longest, (name, grace)


def test_dockerfile_pins_its_base_image() -> None:
    first = next(line for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith("FROM"))
    assert first.split()[1].count(":") == 1 and not first.endswith(":latest")
