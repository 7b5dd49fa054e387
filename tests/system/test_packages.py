"""What a team installs into its own application: the protocol package alone, and the Python client
with it, each `pip install`ed from its folder into a fresh virtual environment.

Neither may bring a server, a generic top-level package (`shared`, `services`) or a third-party
dependency beyond aiohttp (for the client). pip fetches build backends and aiohttp from the package
registry; without it these tests skip with the reason (and fail under CI=true). The installed
client then runs its README's example against the real stack, and its chat meets wrong URLs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services import free_port, unavailable
from tests.system.procs import embedded_env, service
from tests.system.readme_walk import Rule, Terminal, blocks

pytestmark = pytest.mark.system
ROOT = Path(__file__).resolve().parents[2]
SERVER_PACKAGES = {"shared", "services", "auth_service", "ws_service", "tests"}
CLIENT_README = ROOT / "clients" / "python" / "README.md"
PASSWORD = "correct horse battery"


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


@pytest.fixture(scope="module")
def client_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv's python with the protocol package and the Python client, nothing else."""
    python = fresh_venv(tmp_path_factory.mktemp("client") / "venv")
    pip_install(python, ROOT / "protocol", ROOT / "clients" / "python")
    return python


@dataclass(frozen=True)
class Stack:
    auth_url: str
    ws_url: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`make run`'s stack on free ports, with alice registered."""
    data = tmp_path_factory.mktemp("stack")
    env, auth_port, ws_port = embedded_env(data)
    with service("services", env, ws_port, data):
        auth_url = f"http://127.0.0.1:{auth_port}"
        request = urllib.request.Request(  # noqa: S310 (our own loopback URL)
            f"{auth_url}/v1/register",
            json.dumps({"username": "alice", "password": PASSWORD}).encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310
            pass
        yield Stack(auth_url, f"ws://127.0.0.1:{ws_port}/ws")


def test_the_python_client_installs_with_aiohttp_as_its_only_third_party_dependency(
    client_python: Path,
) -> None:
    python = client_python
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
    check = (
        "import importlib.resources as r\n"
        "from realtime_gateway_client import GatewayClient\n"
        "assert r.files('realtime_gateway_client').joinpath('py.typed').is_file()\n"
        "assert 'API' in __import__('importlib.metadata').metadata.metadata("
        "'realtime-gateway-client')['Description']\n"
        "print(GatewayClient.__name__)"
    )
    out = subprocess.run(
        [str(python), "-c", check],
        cwd=python.parents[2],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "GatewayClient"


def test_the_installed_client_runs_its_readme_example(
    client_python: Path, stack: Stack, tmp_path: Path
) -> None:
    (example,) = blocks(CLIENT_README.read_text(), "package")
    script = tmp_path / "example.py"
    script.write_text(
        example.text.replace("http://127.0.0.1:8081", stack.auth_url).replace(
            "ws://127.0.0.1:8082/ws", stack.ws_url
        )
    )
    printed = Rule(r"alice \{'text': 'hello'\}", "\x03")  # the README's promise, then Ctrl-C
    terminal = Terminal([str(client_python), str(script)], os.environ, tmp_path, [printed])
    assert terminal.finish(timeout=60) == 0, terminal.output
    assert "alice {'text': 'hello'}" in terminal.output
    assert "Traceback" not in terminal.output, terminal.output


WRONG_URLS = {
    "auth refused": (
        "http://127.0.0.1:{free}",
        "{ws}",
        "auth_service at {auth} (connection refused)",
    ),
    "ws refused": (
        "{auth}",
        "ws://127.0.0.1:{free}/ws",
        "the gateway at {ws} (connection refused)",
    ),
    "ws host unknown": (
        "{auth}",
        "ws://no-such-host.invalid/ws",
        "the gateway at {ws} (no-such-host.invalid does not resolve)",
    ),
    "ws not a websocket": (
        "{auth}",
        "{auth}/ws",
        "the gateway at {ws} (HTTP 404, not a WebSocket)",
    ),
}


@pytest.mark.parametrize("case", list(WRONG_URLS))
def test_the_installed_chat_says_in_one_line_which_url_it_could_not_reach(
    client_python: Path, stack: Stack, case: str
) -> None:
    """It used to retry a wrong ws URL forever (a 404 as "connection lost ... reconnecting")."""
    auth_template, ws_template, reason = WRONG_URLS[case]
    free = free_port()
    auth_url = auth_template.format(free=free, auth=stack.auth_url)
    ws_url = ws_template.format(free=free, auth=stack.auth_url, ws=stack.ws_url)
    chat = client_python.with_name("realtime-gateway-chat")
    result = subprocess.run(
        [str(chat), "--user", "alice", "--auth-url", auth_url, "--ws-url", ws_url],
        env={**os.environ, "CHAT_PASSWORD": PASSWORD},
        capture_output=True,
        text=True,
        timeout=60,  # a guard against the old endless retry, not a speed limit
        check=False,
    )
    assert result.returncode == 1, result
    expected = "chat: cannot reach " + reason.format(auth=auth_url, ws=ws_url)
    assert result.stderr.startswith(expected + "; is `make run` up"), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
