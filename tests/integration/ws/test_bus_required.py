"""A ws_service started on its own must hear auth_service's logouts, or say loudly that it won't."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared.config.env import ConfigError
from tests.integration.ws.harness import AUDIENCE, ISSUER
from ws_service.app import create_app
from ws_service.settings import Settings


def test_without_redis_or_an_explicit_local_bus_it_refuses_to_start() -> None:
    settings = Settings(jwks_url="http://127.0.0.1:9/jwks", issuer=ISSUER, audience=AUDIENCE)
    with pytest.raises(ConfigError, match=r"REDIS_URL .* WS_LOCAL_BUS=1"):
        create_app(settings)
    create_app(Settings.from_env({"WS_LOCAL_BUS": "1", "WS_ISSUER": ISSUER}))
    create_app(Settings.from_env({"REDIS_URL": "redis://127.0.0.1:6379/0", "WS_ISSUER": ISSUER}))


def test_the_process_exits_with_the_reason() -> None:
    env = {"PATH": "/usr/bin:/bin", "WS_PORT": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "ws_service"], env=env, capture_output=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert b"WS_LOCAL_BUS=1" in result.stderr
