"""A page on another host than auth_service's (``app.example.test`` against ``auth.example.test``,
one site): allowed by ``AUTH_CORS_ORIGINS`` and ``WS_ALLOWED_ORIGINS``, it cannot read the CSRF
cookie, which is host-only on auth_service's host. Chromium maps both names to loopback."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.conftest import PASSWORD, TIMEOUT, Stack, chromium
from tests.services import free_port
from tests.system.procs import embedded_env, service

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

CLIENT = Path(__file__).parents[2] / "clients" / "js" / "gateway-client.js"
PAGE = b"<!doctype html><meta charset=utf-8><title>the app</title><body>the app</body>"


class _AppPages(http.server.BaseHTTPRequestHandler):
    """The app's own host: a blank page and the client module, nothing of auth_service's."""

    def do_GET(self) -> None:
        if self.path == "/gateway-client.js":
            body, kind = CLIENT.read_bytes(), "text/javascript"
        else:
            body, kind = PAGE, "text/html"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def app_origin() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _AppPages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://app.example.test:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def cross_stack(tmp_path_factory: pytest.TempPathFactory, app_origin: str) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("cross-host")
    env, auth_port, ws_port = embedded_env(
        data, AUTH_CORS_ORIGINS=app_origin, WS_ALLOWED_ORIGINS=app_origin
    )
    with service("services", env, ws_port, data) as proc:
        yield Stack(f"http://127.0.0.1:{auth_port}", f"ws://127.0.0.1:{ws_port}/ws", proc.log_path)


def seen_by_the_page(stack: Stack) -> list[str]:
    """auth_service's and the gateway's URLs as the page uses them: on their host name."""
    return [url.replace("127.0.0.1", "auth.example.test") for url in (stack.auth_url, stack.ws_url)]


@pytest.fixture(scope="module")
def mapped_context() -> Iterator[BrowserContext]:
    with chromium("--host-resolver-rules=MAP *.example.test 127.0.0.1") as browser:
        context = browser.new_context()
        context.set_default_timeout(TIMEOUT)
        yield context


CLIENT_OF = """([auth, ws]) => import("/gateway-client.js").then(({ GatewayClient }) => {
    window.client = new GatewayClient({ authUrl: auth, wsUrl: ws });
    return window.client;
})"""
LOG_IN = f"""async ([auth, ws, username, password]) => {{
    const client = await ({CLIENT_OF})([auth, ws]);
    await client.login(username, password);
    return client.state;
}}"""
RESUME = f"""async ([auth, ws]) => {{
    const client = await ({CLIENT_OF})([auth, ws]);
    const resumed = await client.resume();
    return [resumed, client.state];
}}"""
REFRESH = """() => window.client.refresh().then(() => "ok", (e) => e.code)"""


def app_page(context: BrowserContext, app_origin: str) -> Page:
    page = context.new_page()
    page.goto(f"{app_origin}/")
    return page


def test_a_page_on_another_host_resumes_after_a_reload_and_follows_another_tabs_login(
    mapped_context: BrowserContext, cross_stack: Stack, app_origin: str
) -> None:
    """It had no CSRF token after a reload: resume() said there was no session (the login form
    again, the old session left live), and a second tab's login, which replaced the cookie,
    threw the first tab out at its next refresh (an outside probe). It asks auth_service for
    the token of the session its cookie holds."""
    cross_stack.register("olga")
    urls = seen_by_the_page(cross_stack)
    page = app_page(mapped_context, app_origin)
    assert page.evaluate("() => document.cookie") == ""
    assert page.evaluate(LOG_IN, [*urls, "olga", PASSWORD]) == "authenticated"
    page.reload()
    assert page.evaluate("() => document.cookie") == "", "the CSRF cookie is auth_service's"
    assert page.evaluate(RESUME, urls) == [True, "authenticated"]
    other = app_page(mapped_context, app_origin)
    assert other.evaluate(LOG_IN, [*urls, "olga", PASSWORD]) == "authenticated"
    assert page.evaluate(REFRESH) == "ok", "the first tab goes on in the new session"
    assert other.evaluate(REFRESH) == "ok"


def test_a_page_on_another_host_without_a_session_resolves_false(
    mapped_context: BrowserContext, cross_stack: Stack, app_origin: str
) -> None:
    mapped_context.clear_cookies()
    page = app_page(mapped_context, app_origin)
    resumed = page.evaluate(RESUME, seen_by_the_page(cross_stack))
    assert resumed[0] is False
