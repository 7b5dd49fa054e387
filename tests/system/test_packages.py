"""What a team installs into its own application: the protocol package alone, and the Python client
with it, each `pip install`ed from its folder into a fresh virtual environment.

Neither may bring a server, a generic top-level package (`shared`, `services`) or a third-party
dependency beyond aiohttp (for the client). pip fetches build backends and aiohttp from the package
registry; without it these tests skip with the reason (and fail under CI=true).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import unavailable

pytestmark = pytest.mark.system
ROOT = Path(__file__).resolve().parents[2]
SERVER_PACKAGES = {"shared", "services", "auth_service", "ws_service", "tests"}


def fresh_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    return path / "bin" / "python"


def pip_install(python: Path, *folders: Path) -> None:
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        + [str(folder) for folder in folders],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        if "Could not find a version" in result.stderr or "NewConnectionError" in result.stderr:
            unavailable("the package registry", result.stderr.strip().splitlines()[-1])
        raise AssertionError(result.stdout + result.stderr)


def installed(python: Path) -> dict[str, list[str]]:
    """Each installed distribution (lower case) and the top-level names it put in site-packages."""
    script = (
        "import json, importlib.metadata as m\n"
        "print(json.dumps({d.metadata['Name'].lower(): sorted({f.parts[0] for f in d.files or ()"
        " if not f.parts[0].endswith(('.dist-info', '.pth')) and f.parts[0] != '..'})"
        " for d in m.distributions()}))"
    )
    out = subprocess.run(
        [str(python), "-c", script],
        cwd=python.parents[2],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, list[str]] = json.loads(out.stdout)
    return result


BASELINE = {"pip", "setuptools"}


def test_the_protocol_package_installs_alone_with_nothing_else(tmp_path: Path) -> None:
    python = fresh_venv(tmp_path / "venv")
    pip_install(python, ROOT / "protocol")
    dists = installed(python)
    assert set(dists) - BASELINE == {"realtime-gateway-protocol"}
    assert dists["realtime-gateway-protocol"] == ["realtime_gateway_protocol"]
    check = (
        "from realtime_gateway_protocol.frames import schema, SUBPROTOCOL\n"
        "from realtime_gateway_protocol.close_codes import action_for\n"
        "assert schema()['$defs']['client_frame'] and SUBPROTOCOL == 'realtime.v1'\n"
        "print(action_for(4401, 'token_expired').value)"
    )
    out = subprocess.run(
        [str(python), "-c", check],
        cwd=python.parents[2],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "refresh_then_reconnect"


def test_the_python_client_installs_with_aiohttp_as_its_only_third_party_dependency(
    tmp_path: Path,
) -> None:
    python = fresh_venv(tmp_path / "venv")
    pip_install(python, ROOT / "protocol", ROOT / "clients" / "python")
    requires = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m; print(m.requires('realtime-gateway-client'))",
        ],
        cwd=python.parents[2],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "aiohttp" in requires and "realtime-gateway-protocol" in requires
    dists = installed(python)
    ours = {"realtime-gateway-protocol", "realtime-gateway-client"}
    aiohttp_closure = set(dists) - BASELINE - ours
    assert "aiohttp" in aiohttp_closure
    names = {name for files in dists.values() for name in files}
    assert not names & SERVER_PACKAGES, names & SERVER_PACKAGES
    for dist in aiohttp_closure:
        assert dist not in {"pyjwt", "cryptography", "redis", "asyncpg", "prometheus-client"}
    check = "from realtime_gateway_client import GatewayClient; print(GatewayClient.__name__)"
    out = subprocess.run(
        [str(python), "-c", check],
        cwd=python.parents[2],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "GatewayClient"
