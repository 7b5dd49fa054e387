"""The browser infrastructure itself: Chromium starts and reaches the real stack on loopback."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from tests.e2e.conftest import Stack

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.e2e


def test_chromium_reaches_the_stack(browser: Browser, stack: Stack) -> None:
    page = browser.new_page()
    try:
        response = page.goto(f"{stack.auth_url}/healthz")
        assert response is not None and response.status == 200
        assert json.loads(page.inner_text("body")) == {"status": "ok"}
    finally:
        page.close()
