"""A Redis ACL user without channel access stops both services at start-up, in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from tests.services import free_port
from tests.system.cluster import redis_server
from tests.system.procs import _base_env

pytestmark = pytest.mark.system


@pytest.fixture
def acl_redis_url(tmp_path: Path) -> Iterator[str]:
    """A private redis-server with a user that may use every key and command but no channel:
    what ``ACL SETUSER`` gives a new user by default since Redis 7 (``resetchannels``)."""
    with redis_server(tmp_path) as port:
        admin = Redis(host="127.0.0.1", port=port)
        admin.execute_command("ACL", "SETUSER", "gw", "on", ">gw-password-0123", "~*", "+@all")
        admin.close()
        yield f"redis://gw:gw-password-0123@127.0.0.1:{port}/0"


@pytest.mark.parametrize("module", ["auth_service", "ws_service"])
def test_an_acl_user_without_channels_stops_start_up_naming_redis_url(
    tmp_path: Path, acl_redis_url: str, module: str
) -> None:
    """Both services subscribe their topics after the bus starts: Redis's NOPERM stopped the
    link for good, and the service started ready and "degraded", deaf to revocations: a
    logged-out token authenticated at ws_service (an outside probe)."""
    _assert_stops_naming_redis_url(_start(module, tmp_path, acl_redis_url))


def test_an_acl_user_with_the_services_own_topics_alone_stops_ws_service_start_up(
    tmp_path: Path, acl_redis_url: str
) -> None:
    """A user that may use ws_service's own topics (``&auth.* &ws.*``) but not the channels'
    passed start-up, which subscribed only its own; the first client's subscription to a channel
    then got NOPERM, which stopped the bus's link for good: the replica heard no revocation
    again until restarted (outside probe K: probe_k/acl_partial.py)."""
    port = int(acl_redis_url.rsplit(":", 1)[1].split("/", 1)[0])
    admin = Redis(host="127.0.0.1", port=port)
    admin.execute_command("ACL", "SETUSER", "gw", "&auth.*", "&ws.*")
    admin.close()
    _assert_stops_naming_redis_url(_start("ws_service", tmp_path, acl_redis_url))


def _start(module: str, tmp_path: Path, url: str) -> subprocess.CompletedProcess[bytes]:
    env = {
        "REDIS_URL": url,
        "AUTH_PORT": str(free_port()),
        "AUTH_DATABASE_URL": f"sqlite:///{tmp_path}/auth.db",
        "AUTH_KEY_ENCRYPTION_SECRETS": "acl-test-key-encryption-secret-0123",
        "WS_PORT": str(free_port()),
        "WS_ISSUER": "http://127.0.0.1:9",
        "WS_JWKS_URL": "http://127.0.0.1:9/.well-known/jwks.json",
    }
    return subprocess.run(
        [sys.executable, "-m", module],
        env=_base_env(env),
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        check=False,
    )


def _assert_stops_naming_redis_url(result: subprocess.CompletedProcess[bytes]) -> None:
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 2, output
    last = json.loads(output.splitlines()[-1])
    assert last["level"] == "error", output
    assert last["msg"].startswith("configuration error: Redis refused"), output
    assert "REDIS_URL" in last["msg"] and "ACL" in last["msg"], output
    assert "Traceback" not in output
    assert "gw-password-0123" not in output
