"""Regenerate docs/chat.png, the README's screenshot: the demo page of `make run`'s stack in
Chromium, alice and bob in the lobby, its presence list showing both, a few messages, and the
access token bound to the browser's key (DPoP).

    .venv/bin/python -m tests.e2e.screenshot            # writes docs/chat.png
    .venv/bin/python -m tests.e2e.screenshot out.png    # or another path

It starts the stack itself (``python -m services``, what `make run` runs, with its defaults) on
free ports in a scratch data directory, so a `make run` of yours is left alone. It needs what the
browser tests need: the playwright package and /usr/bin/chromium (`make test` installs both).
``tests/e2e/test_screenshot.py`` runs ``take`` in `make test`, so this keeps working.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, TIMEOUT, Stack
from tests.e2e.test_browser import log_in, members, open_page, say, wait_for_message
from tests.system.procs import embedded_env, service

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ViewportSize

DOC = Path(__file__).resolve().parents[2] / "docs" / "chat.png"
VIEWPORT: ViewportSize = {"width": 1000, "height": 720}
CONVERSATION = [
    ("alice", "hi bob, the draft is up"),
    ("bob", "reading it now"),
    ("alice", "the second section is new"),
]


def take(browser: Browser, stack: Stack, path: Path) -> None:
    """alice's view of the lobby once bob has joined and they have talked."""
    stack.register("alice", "bob")
    contexts = [browser.new_context(viewport=VIEWPORT) for _ in ("alice", "bob")]
    try:
        for context in contexts:
            context.set_default_timeout(TIMEOUT)
        pages = {"alice": open_page(contexts[0], stack), "bob": open_page(contexts[1], stack)}
        for name, page in pages.items():
            log_in(page, name)
        for page in pages.values():
            page.wait_for_function("() => document.querySelectorAll('#members li').length === 2")
        for who, text in CONVERSATION:
            say(pages[who], text)
            for page in pages.values():
                wait_for_message(page, who, text)
        alice = pages["alice"]
        assert members(alice) == "alice,bob", members(alice)
        alice.wait_for_function(
            "() => document.getElementById('binding').textContent === \"bound to this browser's key\""
        )
        alice.locator("#text").blur()
        alice.screenshot(path=str(path), full_page=True)
    finally:
        for context in contexts:
            context.close()


def main(argv: list[str]) -> int:
    from playwright.sync_api import sync_playwright

    path = Path(argv[0]) if argv else DOC
    with tempfile.TemporaryDirectory() as scratch, sync_playwright() as playwright:
        env, auth_port, ws_port = embedded_env(Path(scratch))
        with service("services", env, ws_port, Path(scratch)) as proc:
            stack = Stack(
                f"http://127.0.0.1:{auth_port}", f"ws://127.0.0.1:{ws_port}/ws", proc.log_path
            )
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
            try:
                take(browser, stack, path)
            finally:
                browser.close()
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
