"""The helper that regenerates docs/chat.png still works against the page as it is."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.conftest import Stack
from tests.e2e.screenshot import take

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.e2e
PNG = b"\x89PNG\r\n\x1a\n"


def test_the_readme_screenshot_can_be_taken_again(
    browser: Browser, stack: Stack, tmp_path: Path
) -> None:
    shot = tmp_path / "chat.png"
    take(browser, stack, shot)  # fails unless both users are in the presence list
    assert shot.read_bytes().startswith(PNG)
