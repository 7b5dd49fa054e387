"""examples/app_backend/README.md's five commands work as printed: extracted from the README
(``<!-- walk: example -->`` blocks, see ``readme_walk``), each run in a fresh shell of a fresh
checkout, the two servers among them kept running until the end, on free ports. The demo then
runs a second time against the same example (its people log in instead of signing up)."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.services import free_port
from tests.system.readme_walk import Terminal, blocks
from tests.system.test_readme import (
    ROOT,
    checkout,
    ready_urls,
    replacements,
    shell_env,
    terminal_serving,
    walk,
)

pytestmark = pytest.mark.system
README = (ROOT / "examples" / "app_backend" / "README.md").read_text()
TOLD = [
    "bob may not subscribe yet: forbidden",
    "bob got 'hi bob' from alice",
    "alice un-shared it; bob's socket left doc:",
    "bob deleted his account; his socket was closed 4403 session_revoked",
    "online, from the webhooks: nobody",
]


def test_the_example_walks_in_five_commands(tmp_path: Path) -> None:
    walked = blocks(README, "example")
    assert [b.background for b in walked] == [False, True, False, True, False], (
        "five commands, the stack and the example kept running"
    )
    workdir = checkout(tmp_path, "checkout")
    (workdir / "examples").symlink_to(ROOT / "examples")
    auth_port, ws_port, notes_port = free_port(), free_port(), free_port()
    env = {
        **shell_env(auth_port, ws_port),
        "NOTES_PORT": str(notes_port),
        "NOTES_AUTH_URL": f"http://127.0.0.1:{auth_port}",
        "NOTES_GATEWAY_URL": f"http://127.0.0.1:{ws_port}",
        "NOTES_WS_URL": f"ws://127.0.0.1:{ws_port}/ws",
    }
    subs = {
        **replacements(auth_port, ws_port, tmp_path),
        "127.0.0.1:8083": f"127.0.0.1:{notes_port}",
    }
    with ExitStack() as serving:
        for block in walked:
            if not block.background:
                output = walk(block, workdir, env, subs)
                continue
            terminal = Terminal(block.script(subs, workdir), env, workdir)
            urls = (
                ready_urls(auth_port, ws_port)
                if "make run" in block.text
                else [f"http://127.0.0.1:{notes_port}/healthz"]
            )
            serving.enter_context(terminal_serving(terminal, urls, ("notes: ",)))
        again = walk(walked[-1], workdir, env, subs)
    for demo in (output, again):
        for line in TOLD:
            assert line in demo, demo
