"""docker-compose.yml is checked offline: no Docker engine runs on these machines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[3]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SERVICE_COMMANDS = {
    "auth": ["python", "-m", "auth_service"],
    "ws": ["python", "-m", "ws_service"],
}
"""The only commands our image may run: the ones the test suite starts as real processes."""


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load(COMPOSE_FILE.read_text())
    return data


def test_compose_file_matches_the_compose_specification() -> None:
    result = validate(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_validation_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE_FILE.read_text()
    assert "    command:" in text
    broken.write_text(text.replace("    command:", "    comand:", 1))
    result = validate(broken)
    assert result.returncode != 0
    assert "comand" in result.stdout


def test_our_image_runs_only_the_commands_the_tests_run(compose: dict[str, Any]) -> None:
    ours = {
        name: service
        for name, service in compose["services"].items()
        if service.get("build", {}).get("dockerfile") == "services/Dockerfile"
        or service.get("image") == "realtime-gateway:dev"
    }
    assert set(ours) == set(SERVICE_COMMANDS)
    for name, service in ours.items():
        assert service["command"] == SERVICE_COMMANDS[name]
        assert service["deploy"]["replicas"] == 2


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("postgres", "redis", "auth", "ws"):
        assert services[name]["healthcheck"]["test"], name
    assert "/readyz" in " ".join(services["auth"]["healthcheck"]["test"])
    assert "/readyz" in " ".join(services["ws"]["healthcheck"]["test"])


def test_start_order_waits_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["auth"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    assert services["ws"]["depends_on"]["auth"] == {"condition": "service_healthy"}
    assert services["lb"]["depends_on"]["certs"] == {"condition": "service_completed_successfully"}
    assert services["lb"]["ports"] == ["443:443"]


def test_secrets_are_required_not_defaulted(compose: dict[str, Any]) -> None:
    auth_env = compose["services"]["auth"]["environment"]
    assert auth_env["AUTH_KEY_ENCRYPTION_SECRETS"].startswith("${AUTH_KEY_ENCRYPTION_SECRETS:?")
    assert "${POSTGRES_PASSWORD:?" in auth_env["AUTH_DATABASE_URL"]


def test_issuer_and_key_url_agree(compose: dict[str, Any]) -> None:
    auth_env = compose["services"]["auth"]["environment"]
    ws_env = compose["services"]["ws"]["environment"]
    assert auth_env["AUTH_ISSUER"] == ws_env["WS_ISSUER"]
    assert ws_env["WS_JWKS_URL"] == f"http://auth:{auth_env['AUTH_PORT']}/.well-known/jwks.json"
    assert ws_env["REDIS_URL"] == auth_env["REDIS_URL"] == "redis://redis:6379/0"
