"""A real browser against the real stack: Playwright's Python driver steering Debian's Chromium,
and ``python -m services`` (what `make run` starts) as a process on free ports.

Playwright's own browser download cannot work on these machines, so the browser is the system's
``/usr/bin/chromium`` (`make test` installs it as root). Without it, or without the ``playwright``
package, the tests are skipped with the reason; under CI=true that is a failure instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.services import unavailable
from tests.system.procs import embedded_env, service

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext

CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium phones home at start-up, and this closed network refuses it.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery staple"
ACCESS_TOKEN_TTL = 6
"""Seconds: short enough that a test sees several renewals on one socket."""
ARTIFACTS = Path(__file__).parent / "artifacts"
TIMEOUT = 15_000
"""Milliseconds Playwright waits for what a test expects of the page."""


@contextlib.contextmanager
def chromium(*args: str) -> Iterator[Browser]:
    """Debian's Chromium under Playwright, with ``args`` beside :data:`CHROMIUM_ARGS`."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        unavailable("Playwright", f"the playwright package is not installed: {exc}")
        raise AssertionError("unreachable") from exc
    if not os.access(CHROMIUM, os.X_OK):
        unavailable("Chromium", f"{CHROMIUM} is missing (as root: apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *args], headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 900, "height": 700})
    ctx.set_default_timeout(TIMEOUT)
    try:
        yield ctx
    finally:
        ctx.close()


@dataclass(frozen=True)
class Stack:
    auth_url: str
    ws_url: str
    log: Path

    @property
    def page_url(self) -> str:
        return f"{self.auth_url}/"

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(  # noqa: S310 (our own loopback URL)
            self.auth_url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
                return int(resp.status), json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def register(self, *usernames: str) -> None:
        for username in usernames:
            status, body = self.post("/v1/register", {"username": username, "password": PASSWORD})
            assert status == 201, body


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The embedded stack with a few-second access-token lifetime."""
    data = tmp_path_factory.mktemp("stack")
    env, auth_port, ws_port = embedded_env(
        data,
        AUTH_ACCESS_TOKEN_TTL=str(ACCESS_TOKEN_TTL),
    )
    with service("services", env, ws_port, data) as proc:
        yield Stack(f"http://127.0.0.1:{auth_port}", f"ws://127.0.0.1:{ws_port}/ws", proc.log_path)
