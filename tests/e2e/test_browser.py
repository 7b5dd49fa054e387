"""The demo page in a real browser against the real stack (issue 9's scenarios)."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.conftest import ARTIFACTS, PASSWORD, Stack

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Route

pytestmark = pytest.mark.e2e

REFRESH = """async () => {
    const { GatewayClient } = await import("/gateway-client.js");
    const config = await (await fetch("/config.json")).json();
    const client = new GatewayClient({ authUrl: config.authUrl ?? location.origin, wsUrl: "" });
    return client.refresh().then(() => "ok", (e) => e.code);
}"""
"""A refresh from the session cookie by a client of the test's own: the demo page keeps its client
to itself (no global), as a page should."""


def open_page(context: BrowserContext, stack: Stack, query: str = "") -> Page:
    page = context.new_page()
    page.goto(stack.page_url + query)
    page.wait_for_selector("body[data-ready=true]")
    return page


def log_in(page: Page, username: str, *, register: bool = False) -> None:
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#register-button" if register else "#login-button")
    wait_joined(page)


def wait_joined(page: Page) -> None:
    page.wait_for_selector("#chat[data-joined='chat:lobby']")
    assert page.inner_text("#state") == "authenticated"


def say(page: Page, text: str) -> None:
    page.fill("#text", text)
    page.click("#send-form button")


def messages(page: Page) -> list[tuple[str, str]]:
    rows: list[list[str]] = page.eval_on_selector_all(
        "#messages li",
        "items => items.map(li => [li.querySelector('.from').textContent,"
        " li.querySelector('.text').textContent])",
    )
    return [(who, text) for who, text in rows]


def wait_for_message(page: Page, who: str, text: str) -> None:
    page.wait_for_function(
        "([who, text]) => [...document.querySelectorAll('#messages li')].some(li =>"
        " li.querySelector('.from').textContent === who"
        " && li.querySelector('.text').textContent === text)",
        arg=[who, text],
    )


def test_a_fresh_load_logs_no_console_error(context: BrowserContext, stack: Stack) -> None:
    """No 404 for a favicon, and no failed request from a resume without a session cookie: a
    first visit is a normal state (both used to be console errors on every fresh load)."""
    page = context.new_page()
    errors: list[str] = []
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    page.on("pageerror", lambda error: errors.append(str(error)))
    posts: list[str] = []
    page.on(
        "request", lambda request: posts.append(request.url) if request.method == "POST" else None
    )
    with page.expect_response(re.compile(r"/favicon")) as icon:
        page.goto(stack.page_url)
    assert icon.value.status == 200
    page.wait_for_selector("body[data-ready=true]", state="attached")
    assert page.is_visible("#login")
    assert posts == [], "a first visit has no session to resume: nothing to ask the server"
    assert errors == []


def members(page: Page) -> str:
    return str(
        page.evaluate(
            "() => [...document.querySelectorAll('#members li')].map(li => li.textContent).join()"
        )
    )


def test_presence_shows_the_same_members_in_every_view(browser: Browser, stack: Stack) -> None:
    """A second tab of kim's announces nothing to others (join/leave are per user), so a count
    of kim's tabs showed in that tab alone."""
    stack.register("kim", "lee")
    kim_ctx, lee_ctx = browser.new_context(), browser.new_context()
    try:
        lee = open_page(lee_ctx, stack)
        log_in(lee, "lee")
        kim = open_page(kim_ctx, stack)
        log_in(kim, "kim")
        kim_again = open_page(kim_ctx, stack)  # resumes from the cookie: two sockets of kim's
        wait_joined(kim_again)
        for page in (lee, kim, kim_again):
            page.wait_for_function(
                "() => [...document.querySelectorAll('#members li')].length === 2"
            )
        assert [members(page) for page in (lee, kim, kim_again)] == ["kim,lee"] * 3
    finally:
        kim_ctx.close()
        lee_ctx.close()


def test_two_users_chat_in_one_room(browser: Browser, stack: Stack) -> None:
    stack.register("bob")
    alice_ctx, bob_ctx = browser.new_context(), browser.new_context()
    try:
        alice, bob = open_page(alice_ctx, stack), open_page(bob_ctx, stack)
        log_in(alice, "alice", register=True)
        log_in(bob, "bob")
        say(alice, "hi bob, it is alice")
        wait_for_message(bob, "alice", "hi bob, it is alice")
        say(bob, "hello alice")
        wait_for_message(alice, "bob", "hello alice")
        wait_for_message(alice, "alice", "hi bob, it is alice")
        wait_for_message(bob, "bob", "hello alice")
        assert messages(bob) == [("alice", "hi bob, it is alice"), ("bob", "hello alice")]
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "chat.png"
        alice.screenshot(path=str(shot), full_page=True)
    finally:
        alice_ctx.close()
        bob_ctx.close()


def test_one_socket_through_several_renewals(context: BrowserContext, stack: Stack) -> None:
    stack.register("carol")
    page = context.new_page()
    sockets: list[Any] = []
    page.on("websocket", lambda ws: sockets.append(ws))
    page.goto(stack.page_url)
    page.wait_for_selector("body[data-ready=true]")
    log_in(page, "carol")
    page.wait_for_function(
        "() => Number(document.getElementById('renewals').textContent) >= 3", timeout=40_000
    )
    assert page.locator("#renewal-log li").count() >= 3
    assert page.inner_text("#state") in {"authenticated", "renewing"}
    assert len(sockets) == 1


def test_log_out_everywhere_closes_the_other_tab(context: BrowserContext, stack: Stack) -> None:
    stack.register("dave")
    first = open_page(context, stack)
    log_in(first, "dave")
    second = open_page(context, stack)  # same browser: resumes from the cookie
    wait_joined(second)
    first.click("#logout-everywhere")
    second.wait_for_function("() => document.getElementById('state').textContent === 'closed'")
    assert "session revoked" in second.inner_text("#notice")
    assert second.is_visible("#login")


@pytest.mark.parametrize(
    ("button", "success"),
    [("#logout", "Logged out."), ("#logout-everywhere", "Logged out on every device.")],
)
def test_a_logout_that_fails_says_so_and_can_be_tried_again(
    context: BrowserContext, stack: Stack, button: str, success: str
) -> None:
    """The page said "Logged out on every device." (or just showed the login form) when the
    request to /v1/logout failed: the session and every tab on it stayed logged in, and a reload
    resumed it."""
    username = f"liam{button.replace('#', '-')}"
    stack.register(username)
    page = open_page(context, stack)
    log_in(page, username)
    logout = re.compile(r"/v1/logout$")
    page.route(logout, lambda route: route.abort())
    page.click(button)
    page.wait_for_function("() => document.getElementById('notice').textContent !== ''")
    assert page.inner_text("#notice").startswith("Not logged out: unreachable")
    assert "try again" in page.inner_text("#notice")
    assert page.is_visible(button) and not page.is_visible("#login")
    assert page.evaluate(REFRESH) == "ok", "the session is still alive"
    page.unroute(logout)
    page.click(button)
    page.wait_for_function(
        "(text) => document.getElementById('notice').textContent === text", arg=success
    )
    assert page.is_visible("#login")
    assert page.evaluate(REFRESH) != "ok"


def test_reload_keeps_the_user_logged_in_without_web_storage(
    context: BrowserContext, stack: Stack
) -> None:
    stack.register("erin")
    page = open_page(context, stack)
    log_in(page, "erin")
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    wait_joined(page)
    assert page.inner_text("#who") == "Signed in as erin"
    assert page.evaluate("() => [localStorage.length, sessionStorage.length]") == [0, 0]


def test_a_resume_that_fails_says_why_and_a_reload_resumes(
    context: BrowserContext, stack: Stack
) -> None:
    """auth_service unreachable at a reload: the page showed the login form and nothing else, as
    if logged out, while the session was alive for the next reload."""
    stack.register("ruth")
    page = open_page(context, stack)
    log_in(page, "ruth")
    token = re.compile(r"/v1/token$")
    page.route(token, lambda route: route.abort())
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert page.inner_text("#notice").startswith("Could not resume your session: unreachable")
    assert page.is_visible("#login")
    page.unroute(token)
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    wait_joined(page)
    assert page.inner_text("#who") == "Signed in as ruth"


def test_html_in_a_message_is_shown_as_text(context: BrowserContext, stack: Stack) -> None:
    stack.register("frank")
    page = open_page(context, stack)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    log_in(page, "frank")
    payload = "<img src=x onerror=alert(1)>"
    say(page, payload)
    wait_for_message(page, "frank", payload)
    page.wait_for_timeout(500)
    assert page.locator("#messages img").count() == 0
    assert dialogs == []
    response = page.request.get(stack.page_url)
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def issued_tokens(page: Page) -> list[str]:
    """The access tokens auth_service answers the page with, as they arrive. Read on their way
    to the page (``route.fetch``), not from the devtools' copy: the client reads an answer as a
    stream (bounded in bytes), and Chromium keeps no copy of a body read that way."""
    tokens: list[str] = []

    def collect(route: Route) -> None:
        response = route.fetch()
        if response.ok:
            tokens.append(response.json()["access_token"])
        route.fulfill(response=response)

    page.route(re.compile(r"/v1/(login|token)$"), collect)
    return tokens


def test_no_token_in_web_storage_cookies_or_urls(context: BrowserContext, stack: Stack) -> None:
    stack.register("grace")
    page = context.new_page()
    urls: list[str] = []
    tokens = issued_tokens(page)
    page.on("request", lambda request: urls.append(request.url))
    page.on("websocket", lambda ws: urls.append(ws.url))
    page.goto(stack.page_url + "?handshake=ticket")
    page.wait_for_selector("body[data-ready=true]")
    log_in(page, "grace")
    page.wait_for_function("() => Number(document.getElementById('renewals').textContent) >= 1")
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    wait_joined(page)
    assert len(tokens) >= 3
    exposed = page.evaluate(
        "() => JSON.stringify([{...localStorage}, {...sessionStorage}, document.cookie])"
    )
    cookies = [cookie["value"] for cookie in context.cookies()]
    for token in tokens:
        assert token not in exposed
        assert all(token not in url for url in urls)
        assert all(token not in value for value in cookies)
    tickets = [url for url in urls if "ticket=" in url]
    assert len(tickets) == 2 and len(set(tickets)) == 2


def test_a_planted_csrf_cookie_does_not_override_the_clients_own_token(
    context: BrowserContext, stack: Stack
) -> None:
    """A page of the same site can overwrite the non-HttpOnly CSRF cookie (over plain http there
    is no ``__Host-`` prefix to stop it); the client renews with the token its login answered."""
    stack.register("ivy")
    page = open_page(context, stack)
    log_in(page, "ivy")
    assert page.evaluate("() => typeof window.gatewayClient") == "undefined"
    page.evaluate("() => { document.cookie = 'csrf_token=planted-by-a-sibling; path=/'; }")
    assert "csrf_token=planted-by-a-sibling" in page.evaluate("() => document.cookie")
    page.wait_for_function("() => Number(document.getElementById('renewals').textContent) >= 1")
    assert page.inner_text("#state") in {"authenticated", "renewing"}


LOGGED_IN_AGAIN = """async ([username, password]) => {
    const { GatewayClient } = await import("/gateway-client.js");
    const config = await (await fetch("/config.json")).json();
    const make = () => new GatewayClient({ authUrl: config.authUrl ?? location.origin, wsUrl: config.wsUrl });
    const earlier = make();
    await earlier.login(username, password);
    const later = make();
    await later.login(username, password);  // another tab: a new session cookie and CSRF cookie
    const outcome = (call) => call.then(() => "ok", (e) => e.code);
    return [await outcome(earlier.refresh()), await outcome(later.refresh()),
            await outcome(earlier.logout())];
}"""


def test_a_tab_whose_session_another_tab_replaced_refreshes_with_the_new_one(
    context: BrowserContext, stack: Stack
) -> None:
    """The session cookie is shared by the site's tabs: after another tab logs in again, a tab's
    own CSRF copy no longer matches it. The refusal (csrf_failed) makes the client take the CSRF
    cookie once, as a reload would, instead of logging the tab out."""
    stack.register("judy")
    page = open_page(context, stack)
    assert page.evaluate(LOGGED_IN_AGAIN, ["judy", PASSWORD]) == ["ok", "ok", "ok"]


ANOTHER_USER_LOGS_IN = """async ([first, second, password, everywhere]) => {
    const { GatewayClient } = await import("/gateway-client.js");
    const config = await (await fetch("/config.json")).json();
    const make = () => new GatewayClient({ authUrl: config.authUrl ?? location.origin, wsUrl: config.wsUrl });
    const earlier = make();
    await earlier.login(first, password);
    const later = make();
    await later.login(second, password);  // another tab, another user: the shared cookie is theirs
    const outcome = (call) => call.then(() => "ok", (e) => e.code);
    return [await outcome(earlier.logout({ everywhere })), await outcome(later.refresh())];
}"""


@pytest.mark.parametrize("everywhere", [False, True])
def test_a_tab_logs_out_its_own_user_not_the_one_who_logged_in_since(
    context: BrowserContext, stack: Stack, everywhere: bool
) -> None:
    """Alice's tab, after bob logged in in another tab of the browser: "log out (everywhere)" took
    the cookie's CSRF token on csrf_failed and logged bob out (every device of his), while alice's
    sessions lived on and her page said she was logged out (an outside probe)."""
    alice, bob = f"alice-{everywhere}".lower(), f"bob-{everywhere}".lower()
    stack.register(alice, bob)
    devices = {}
    for user in (alice, bob):  # each also logged in on another device
        status, body = stack.post("/v1/login", {"username": user, "password": PASSWORD})
        assert status == 200, body
        devices[user] = body["refresh_token"]
    page = open_page(context, stack)
    assert page.evaluate(ANOTHER_USER_LOGS_IN, [alice, bob, PASSWORD, everywhere]) == ["ok", "ok"]
    refreshed = {
        user: stack.post("/v1/token", {"grant_type": "refresh_token", "refresh_token": token})[0]
        for user, token in devices.items()
    }
    assert refreshed == {alice: 400 if everywhere else 200, bob: 200}


def test_two_tabs_refreshing_at_once_both_stay_logged_in(
    context: BrowserContext, stack: Stack
) -> None:
    stack.register("heidi")
    first = open_page(context, stack)
    log_in(first, "heidi")
    second = open_page(context, stack)
    wait_joined(second)
    start = f"() => {{ window.outcome = ({REFRESH})(); }}"
    for _ in range(3):
        first.evaluate(start)
        second.evaluate(start)
        assert first.evaluate("() => window.outcome") == "ok"
        assert second.evaluate("() => window.outcome") == "ok"
    for page in (first, second):
        assert page.inner_text("#state") in {"authenticated", "renewing"}
    say(first, "still here")
    wait_for_message(second, "heidi", "still here")


def test_a_tab_that_reconnects_as_another_user_says_so_and_leaves_the_chat(
    context: BrowserContext, stack: Stack
) -> None:
    """Another page of the site logged in as bob while kate's tab was connected: the shared session
    cookie became bob's, and kate's tab, reconnecting, adopted bob's session while its header
    still said kate. The gateway here is the test's own, which answers the second socket as bob."""
    stack.register("kate")
    sockets: list[Any] = []

    def gateway(route: Any) -> None:
        user = (
            {"id": "u-kate", "username": "kate"}
            if not sockets
            else {"id": "u-bob", "username": "bob"}
        )
        sockets.append(route)

        def answer(message: str | bytes) -> None:
            frame = json.loads(message)
            replies = {
                "auth": {"type": "auth_success", "user": user, "expires_at": time.time() + 60},
                "subscribe": {"type": "subscribed", "channel": frame.get("channel")},
                "history": {"type": "history", "publications": []},
                "presence": {"type": "presence", "members": []},
            }
            reply = replies.get(frame["type"], {"type": "error", "code": "unexpected"})
            route.send(json.dumps({**reply, **({"id": frame["id"]} if "id" in frame else {})}))

        route.on_message(answer)

    context.route_web_socket(re.compile(r"/ws"), gateway)
    page = open_page(context, stack)
    log_in(page, "kate")
    assert page.inner_text("#who") == "Signed in as kate"
    sockets[0].close(code=1001, reason="going_away")
    page.wait_for_function("() => document.getElementById('notice').textContent !== ''")
    assert page.inner_text("#notice").startswith(
        "This tab was signed in as kate, and another account"
    )
    assert page.is_visible("#login")
    assert page.inner_text("#who") == ""
    assert page.inner_text("#state") == "closed"
    assert len(sockets) == 2


STALLED_REFRESH = """async ([username, password]) => {
    const { GatewayClient } = await import("/gateway-client.js");
    const config = await (await fetch("/config.json")).json();
    const make = () => new GatewayClient({
        authUrl: config.authUrl ?? location.origin, wsUrl: config.wsUrl, authTimeout: 500 });
    const login = make();
    await login.login(username, password);
    login.close();  // the session cookie stays
    const outcome = (call) => call.then(() => "ok", (e) => e.code);
    const stuck = new Promise((resolve) => setTimeout(() => resolve("stuck"), 5000));
    const stalled = outcome(make().refresh());  // takes the refresh lock; its request never ends
    await new Promise((resolve) => setTimeout(resolve, 100));
    const started = Date.now();
    const next = await Promise.race([outcome(make().refresh()), stuck]);
    return [await Promise.race([stalled, stuck]), next, Date.now() - started < 3000];
}"""


def test_a_stalled_refresh_holds_the_tabs_refresh_lock_no_longer_than_auth_timeout(
    context: BrowserContext, stack: Stack
) -> None:
    """A refresh whose request never ends (a half-open connection after a laptop wakes) held the
    Web Lock every tab of the origin refreshes under, so no tab renewed its token meanwhile."""
    stack.register("lena")
    held: list[Any] = []

    def stall_the_first(route: Any) -> None:
        if held:
            route.continue_()
        else:
            held.append(route)  # never answered

    context.route(re.compile(r"/v1/token$"), stall_the_first)
    page = open_page(context, stack)
    assert page.evaluate(STALLED_REFRESH, ["lena", PASSWORD]) == ["timeout", "ok", True]
    assert len(held) == 1


class _BlankPage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>another site</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def foreign_origin() -> Iterator[str]:
    """A real page on another site than the chat page (localhost, not 127.0.0.1), on loopback."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BlankPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_foreign_origin_can_neither_refresh_nor_open_a_socket(
    context: BrowserContext, stack: Stack, foreign_origin: str
) -> None:
    stack.register("ivan")
    page = open_page(context, stack)
    log_in(page, "ivan")
    evil = context.new_page()
    evil.goto(f"{foreign_origin}/")
    refresh = evil.evaluate(
        """async (auth) => {
            try {
                const r = await fetch(auth + "/v1/token", {method: "POST", credentials: "include",
                    headers: {"Content-Type": "application/json", "X-CSRF-Token": "guess"},
                    body: JSON.stringify({grant_type: "refresh_token"})});
                return "status " + r.status;
            } catch (e) { return "blocked"; }
        }""",
        stack.auth_url,
    )
    assert refresh == "blocked"
    socket = evil.evaluate(
        """(url) => new Promise(resolve => {
            const ws = new WebSocket(url, ["realtime.v1"]);
            ws.onopen = () => resolve("open");
            ws.onclose = (e) => resolve("closed " + e.code);
        })""",
        stack.ws_url,
    )
    assert socket == "closed 1006"
    assert '"ws_origin_refused"' in stack.log.read_text()
    # The user's own page was not disturbed: its cookie still refreshes.
    assert page.evaluate(REFRESH) == "ok"


@pytest.mark.parametrize("handshake", ["ticket", "bearer"])
def test_ticket_and_bearer_handshakes_from_the_page(
    context: BrowserContext, stack: Stack, handshake: str
) -> None:
    username = f"judy-{handshake}"
    stack.register(username)
    page = context.new_page()
    sockets: list[Any] = []
    page.on("websocket", lambda ws: sockets.append(ws))
    page.goto(f"{stack.page_url}?handshake={handshake}")
    page.wait_for_selector("body[data-ready=true]")
    log_in(page, username)
    say(page, f"via {handshake}")
    wait_for_message(page, username, f"via {handshake}")
    assert len(sockets) == 1
    assert ("ticket=" in sockets[0].url) == (handshake == "ticket")
    # The bearer subprotocol cannot carry a DPoP proof: the page asks for bearer tokens there.
    binding = "bearer token" if handshake == "bearer" else "bound to this browser's key"
    assert page.inner_text("#binding") == binding


def test_an_unknown_handshake_in_the_url_is_said_and_the_default_used(
    context: BrowserContext, stack: Stack
) -> None:
    """The page passed ?handshake= to the client, which sent nothing for a name it did not know:
    the gateway closed 4408 again and again and the login never settled."""
    stack.register("kurt")
    page = open_page(context, stack, "?handshake=tickets")
    expected = 'handshake must be one of "message", "bearer", "ticket", not "tickets"'
    assert expected in page.inner_text("#notice")
    log_in(page, "kurt")
    assert expected in page.inner_text("#notice"), "still said once logged in"
    page.reload()  # a resumed session said nothing of it (an outside probe)
    page.wait_for_selector("body[data-ready=true]")
    wait_joined(page)
    assert expected in page.inner_text("#notice")


@pytest.mark.parametrize(("code", "reason"), [(1001, "going_away"), (1012, "draining")])
def test_presence_list_and_recovery_after_a_dropped_socket(
    browser: Browser, stack: Stack, code: int, reason: str
) -> None:
    """Dropped as a network or a shutdown would (1001), or by a draining replica (1012)."""
    g, h, room = f"gina{code}", f"hank{code}", f"presence{code}"
    stack.register(g, h)
    gina_ctx, hank_ctx = browser.new_context(), browser.new_context()
    routes: list[Any] = []

    def proxy(route: Any) -> None:
        """Gina's sockets go through Playwright, so the test can drop one as a network would."""
        routes.append((route, route.connect_to_server()))

    try:
        gina_ctx.route_web_socket(re.compile(r"/ws"), proxy)
        gina, hank = open_page(gina_ctx, stack), open_page(hank_ctx, stack)
        for page, name in ((gina, g), (hank, h)):
            log_in(page, name)
            page.fill("#room", room)
            page.click("#room-form button")
            page.wait_for_selector(f"#chat[data-joined='chat:{room}']")
        for page in (gina, hank):
            page.wait_for_function(
                "() => [...document.querySelectorAll('#members li')].map(li => li.textContent)"
                f".join() === '{g},{h}'"
            )
        page_side, server_side = routes[-1]
        server_side.on_message(lambda message: None)  # the network loses what the server sends
        say(hank, "while you were away")
        wait_for_message(hank, h, "while you were away")
        page_side.close(code=code, reason=reason)
        server_side.close()
        gina.wait_for_function(
            "() => document.getElementById('recovery').textContent"
            ".includes('1 missed message(s) recovered')"
        )
        wait_for_message(gina, h, "while you were away")
        assert messages(gina).count((h, "while you were away")) == 1
        hank_ctx.close()
        gina.wait_for_function(
            "() => [...document.querySelectorAll('#members li')].map(li => li.textContent)"
            f".join() === '{g}'"
        )
    finally:
        gina_ctx.close()
        hank_ctx.close()


def test_a_live_message_during_a_failed_recovery_is_shown_once(
    context: BrowserContext, stack: Stack
) -> None:
    """After a reconnect answered ``recovered: false`` the page cleared the room and prepended its
    history; a message that came live before that history's answer was shown twice (an outside
    probe). The gateway here is the test's own: the epoch changed, and m6 came right after."""
    stack.register("rhea")
    sockets: list[Any] = []

    def message(offset: int, epoch: str) -> dict[str, Any]:
        return {"type": "message", "channel": "chat:lobby", "data": {"text": f"m{offset}"},
                "from": "u-x", "from_username": "xavi", "ts": 1, "offset": offset, "epoch": epoch}  # fmt: skip

    def gateway(route: Any) -> None:
        sockets.append(route)
        epoch, last = ("E1", 3) if len(sockets) == 1 else ("E2", 6)

        def answer(raw: str | bytes) -> None:
            frame = json.loads(raw)
            user = {"id": "u-rhea", "username": "rhea"}
            position = {"offset": last if frame["type"] == "history" else 5, "epoch": epoch}
            replies = {
                "auth": {"type": "auth_success", "user": user, "expires_at": time.time() + 60},
                "subscribe": {"type": "subscribed", "channel": "chat:lobby", "position": position},
                "history": {
                    "type": "history",
                    "position": position,
                    "publications": [message(n, epoch) for n in range(1, last + 1)],
                },
                "presence": {"type": "presence", "members": []},
            }
            reply = replies.get(frame["type"], {"type": "error", "code": "unexpected"})
            if frame["type"] == "subscribe" and "since" in frame:
                reply = {**reply, "recovered": False, "publications": []}
            route.send(json.dumps({**reply, **({"id": frame["id"]} if "id" in frame else {})}))
            if frame["type"] == "subscribe" and "since" in frame:
                route.send(json.dumps(message(6, "E2")))  # published right after: live

        route.on_message(answer)

    context.route_web_socket(re.compile(r"/ws"), gateway)
    page = open_page(context, stack)
    log_in(page, "rhea")
    wait_for_message(page, "xavi", "m3")
    sockets[0].close(code=1012, reason="draining")
    page.wait_for_selector("#recovery:has-text('could not be recovered')")
    wait_for_message(page, "xavi", "m5")
    page.wait_for_timeout(300)
    assert [text for _, text in messages(page)] == [f"m{n}" for n in range(1, 7)]


def test_a_failed_recovery_without_a_position_reloads_every_recent_message(
    context: BrowserContext, stack: Stack
) -> None:
    """A resubscription answered while the gateway could not read history (Redis down) carries
    ``recovered: false`` and no position, so the client keeps the one from before the drop: the
    page cut its reloaded history there, and what was published during the outage (in the
    history it reloaded a moment later) was never shown (an outside probe)."""
    stack.register("rufus")
    sockets: list[Any] = []

    def message(offset: int) -> dict[str, Any]:
        return {"type": "message", "channel": "chat:lobby", "data": {"text": f"m{offset}"},
                "from": "u-x", "from_username": "xavi", "ts": 1, "offset": offset, "epoch": "E1"}  # fmt: skip

    def gateway(route: Any) -> None:
        sockets.append(route)
        last = 3 if len(sockets) == 1 else 6

        def answer(raw: str | bytes) -> None:
            frame = json.loads(raw)
            user = {"id": "u-rufus", "username": "rufus"}
            position = {"offset": last, "epoch": "E1"}
            replies = {
                "auth": {"type": "auth_success", "user": user, "expires_at": time.time() + 60},
                "subscribe": {"type": "subscribed", "channel": "chat:lobby", "position": position},
                "history": {
                    "type": "history",
                    "position": position,
                    "publications": [message(n) for n in range(1, last + 1)],
                },
                "presence": {"type": "presence", "members": []},
            }
            reply = replies.get(frame["type"], {"type": "error", "code": "unexpected"})
            if frame["type"] == "subscribe" and "since" in frame:  # history unavailable
                reply = {"type": "subscribed", "channel": "chat:lobby", "recovered": False,
                         "publications": []}  # fmt: skip
            route.send(json.dumps({**reply, **({"id": frame["id"]} if "id" in frame else {})}))

        route.on_message(answer)

    context.route_web_socket(re.compile(r"/ws"), gateway)
    page = open_page(context, stack)
    log_in(page, "rufus")
    wait_for_message(page, "xavi", "m3")
    sockets[0].close(code=1012, reason="draining")
    page.wait_for_selector("#recovery:has-text('could not be recovered')")
    page.wait_for_timeout(1000)
    assert [text for _, text in messages(page)] == [f"m{n}" for n in range(1, 7)]
