"""What the compose stack and the Kubernetes manifests must agree on with the code and the image."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SERVICE_COMMANDS = {
    "auth": ["python", "-m", "auth_service"],
    "ws": ["python", "-m", "ws_service"],
}
"""The only commands our image may run: the ones the test suite starts as real processes."""
SECRET_SETTINGS = {
    "AUTH_KEY_ENCRYPTION_SECRETS",
    "AUTH_DATABASE_PASSWORD",
    "AUTH_METRICS_TOKEN",
    "REDIS_PASSWORD",
    "REDIS_SENTINEL_PASSWORD",
    "WS_API_KEYS",
    "WS_METRICS_TOKEN",
    "POSTGRES_PASSWORD",
}
"""Settings that never appear as plain environment variables in a deployment: only as ``_FILE``."""
WS_DRAIN_SECONDS = 30
"""ws_service's default drain window: a stop must wait at least this long."""
WS_HEARTBEAT = 30
"""ws_service's default heartbeat: proxies' idle timeouts must be longer."""


def image_user() -> tuple[int, int]:
    """The numeric ``USER uid:gid`` of services/Dockerfile's runtime stage."""
    match = re.search(r"^USER (\d+):(\d+)$", (ROOT / "services" / "Dockerfile").read_text(), re.M)
    assert match, "services/Dockerfile must name a numeric USER uid:gid"
    return int(match.group(1)), int(match.group(2))
