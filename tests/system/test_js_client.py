"""The JavaScript client as a team installs it (`npm pack` of clients/js into a fresh folder), in
Node against the real stack, and its types under `tsc --strict` without skipLibCheck.

The Node suite is clients/js/test/client.test.js (node's own test runner); the README's Node
script runs as printed, with the stack's ports. The Chromium side is tests/e2e/test_js_bundle.py.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from realtime_gateway_protocol.close_codes import CloseCode, Disconnect, action_for
from tests.services import free_port
from tests.support.js_package import JS_CLIENT, install_packed, run, tool
from tests.system.procs import embedded_env, service
from tests.system.readme_walk import blocks

pytestmark = pytest.mark.system
README = JS_CLIENT / "README.md"
README_PASSWORD = "correct horse battery"
TOKEN_TTL = 6
"""Seconds: short enough that the suite sees renewals on one socket."""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_packed(tmp_path_factory.mktemp("js"))


@dataclass(frozen=True)
class Stack:
    auth_url: str
    ws_url: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`make run`'s stack on free ports, short-lived access tokens, DPoP nonces asked for (the
    client's proofs go through them), alice registered."""
    data = tmp_path_factory.mktemp("stack")
    env, auth_port, ws_port = embedded_env(
        data, AUTH_ACCESS_TOKEN_TTL=str(TOKEN_TTL), AUTH_DPOP_NONCE="1"
    )
    with service("services", env, ws_port, data):
        auth_url = f"http://127.0.0.1:{auth_port}"
        request = urllib.request.Request(  # noqa: S310 (our own loopback URL)
            f"{auth_url}/v1/register",
            json.dumps({"username": "alice", "password": README_PASSWORD}).encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310
            pass
        yield Stack(auth_url, f"ws://127.0.0.1:{ws_port}/ws")


def close_cases() -> list[tuple[int, str, str]]:
    """Every row, every reason under every code, and closes nobody lists, with the Python
    client's decision for each."""
    reasons = {row.reason for row in Disconnect} | {"", "something_new"}
    codes = {int(code) for code in CloseCode} | {1000, 1006, 4000, 4404, 4500}
    return [(code, r, action_for(code, r).value) for code in sorted(codes) for r in sorted(reasons)]


def test_the_node_suite_passes_against_the_real_stack(app: Path, stack: Stack) -> None:
    shutil.copy(JS_CLIENT / "test" / "client.test.js", app)
    env = {
        "GATEWAY_AUTH_URL": stack.auth_url,
        "GATEWAY_WS_URL": stack.ws_url,
        "GATEWAY_REFUSED_PORT": str(free_port()),
        "GATEWAY_CLOSE_CASES": json.dumps(close_cases()),
    }
    result = run(["node", "--test", "client.test.js"], app, env, timeout=180)
    assert "# fail 0" in result.stdout, result.stdout


def test_the_readme_node_script_logs_in_connects_and_receives(app: Path, stack: Stack) -> None:
    (script,) = blocks(README.read_text(), "node")
    text = script.text.replace("http://127.0.0.1:8081", stack.auth_url)
    (app / "readme.mjs").write_text(text.replace("ws://127.0.0.1:8082/ws", stack.ws_url))
    assert len(script.text.strip().splitlines()) <= 25, "the README promises a short script"
    result = run(["node", "readme.mjs"], app, timeout=60)
    assert result.stdout == "alice { text: 'hello from Node' }\n", result.stdout


TSCONFIGS = {
    "browser": {"module": "nodenext", "moduleResolution": "nodenext", "lib": ["es2022", "dom"]},
    "bundler": {"module": "esnext", "moduleResolution": "bundler", "lib": ["es2022", "dom"]},
    "node": {"module": "nodenext", "moduleResolution": "nodenext", "lib": ["es2022"]},
}


@pytest.mark.parametrize("setting", list(TSCONFIGS))
def test_the_types_compile_under_strict_without_skip_lib_check(app: Path, setting: str) -> None:
    """Every option, method and event (test/types.ts), with the DOM library or with @types/node
    alone (test/types-node.ts); the old declarations failed with TS2416 on addEventListener."""
    source = "types-node.ts" if setting == "node" else "types.ts"
    shutil.copy(JS_CLIENT / "test" / source, app)
    options = {
        **TSCONFIGS[setting],
        "strict": True,
        "noEmit": True,
        "target": "es2022",
        "types": ["node"] if setting == "node" else [],
    }
    config = app / f"tsconfig.{setting}.json"
    config.write_text(json.dumps({"compilerOptions": options, "files": [source]}))
    run([tool("tsc"), "-p", str(config)], app)
