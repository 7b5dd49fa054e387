"""The JavaScript client as a team ships it to browsers: the packed package installed into a fresh
folder, a tiny app over it bundled by esbuild, run in Chromium against the real stack."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.conftest import Stack
from tests.support.js_package import JS_CLIENT, install_packed, run, tool

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.e2e


def test_an_esbuild_bundle_of_a_tiny_app_works_in_chromium(
    browser: Browser, stack: Stack, tmp_path: Path
) -> None:
    app = install_packed(tmp_path)
    shutil.copy(JS_CLIENT / "test" / "bundle-app.js", app)
    esbuild = tool("esbuild")
    run([esbuild, "bundle-app.js", "--bundle", "--format=esm", "--outfile=bundle.js"], app)
    bundle = (app / "bundle.js").read_text()
    assert "import " not in bundle, "the bundle stands alone"

    def serve(route: Any) -> None:
        """The bundle in place of the demo page's app.js: the page itself comes from the stack,
        so Chromium lets it reach the loopback gateway (a page Playwright made up, it would not)."""
        route.fulfill(body=bundle, content_type="text/javascript")

    context = browser.new_context()
    try:
        context.route(f"{stack.auth_url}/app.js", serve)
        page = context.new_page()
        page.goto(f"{stack.auth_url}/?user=bundler&ws={stack.ws_url}")
        page.wait_for_function("() => document.body?.dataset.result", timeout=15_000)
        assert page.get_attribute("body", "data-result") == "bundler: bundled"
    finally:
        context.close()
