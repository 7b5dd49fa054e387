"""Browser session mode: the refresh token in an encrypted cookie, CSRF, CORS, WebSocket tickets.

Cookies are sent by hand (the client keeps none), so each test says exactly what a browser, or an
attacker's page, would send.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http.cookies import Morsel
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from auth_service.app import create_app
from auth_service.browser import CSRF_COOKIE, CSRF_HEADER, HOST_PREFIX, SESSION_COOKIE
from auth_service.settings import Settings
from realtime_gateway_protocol.events import RevocationEvent, SessionRevoked, UserRevoked
from realtime_gateway_protocol.tickets import TICKET_TTL, TICKET_TYP
from shared.bus import InProcessBus
from tests.integration.auth.conftest import PASSWORD, AuthClient, MakeClient, login, register

OWN = "http://auth.test"
APP = "http://app.test"
EVIL = "http://evil.test"

MakeBrowserClient = Callable[..., Awaitable[AuthClient]]


@pytest.fixture
def make_browser_client(
    aiohttp_client: Callable[..., Awaitable[AuthClient]],
    make_settings: Callable[..., Settings],
    bus: InProcessBus,
) -> MakeBrowserClient:
    async def make(**overrides: Any) -> AuthClient:
        app = create_app(make_settings(**overrides), bus=bus)
        return await aiohttp_client(app, cookie_jar=aiohttp.DummyCookieJar())

    return make


@pytest.fixture
async def client(make_browser_client: MakeBrowserClient) -> AuthClient:
    client = await make_browser_client(cors_origins=(APP,))
    await register(client)
    return client


class Browser:
    """The two cookies a browser would hold for the auth origin."""

    def __init__(self, session: str, csrf: str) -> None:
        self.session = session
        self.csrf = csrf

    def headers(self, origin: str = OWN, csrf: str | None = None) -> dict[str, str]:
        return {
            "Cookie": f"{SESSION_COOKIE}={self.session}; {CSRF_COOKIE}={self.csrf}",
            "Origin": origin,
            CSRF_HEADER: self.csrf if csrf is None else csrf,
        }


async def cookie_login(client: AuthClient, origin: str = OWN) -> tuple[Browser, dict[str, Any]]:
    resp = await client.post(
        "/v1/login",
        json={"username": "alice", "password": PASSWORD, "session": "cookie"},
        headers={"Origin": origin},
    )
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return Browser(resp.cookies[SESSION_COOKIE].value, resp.cookies[CSRF_COOKIE].value), body


async def cookie_refresh(
    client: AuthClient, headers: dict[str, str]
) -> tuple[aiohttp.ClientResponse, dict[str, Any]]:
    resp = await client.post("/v1/token", data={"grant_type": "refresh_token"}, headers=headers)
    return resp, await resp.json()


async def test_cookie_login_keeps_the_refresh_token_out_of_the_body(client: AuthClient) -> None:
    resp = await client.post(
        "/v1/login",
        json={"username": "alice", "password": PASSWORD, "session": "cookie"},
        headers={"Origin": OWN},
    )
    body = await resp.json()
    assert resp.status == 200
    assert "refresh_token" not in body
    assert body["access_token"] and body["token_type"] == "Bearer"
    assert resp.headers["Cache-Control"] == "no-store"
    session: Morsel[str] = resp.cookies[SESSION_COOKIE]
    assert session["httponly"] is True
    assert session["samesite"] == "Strict"
    assert session["path"] == "/v1/"
    assert not session["secure"]
    csrf = resp.cookies[CSRF_COOKIE]
    assert not csrf["httponly"] and csrf["samesite"] == "Strict" and csrf["path"] == "/"
    assert csrf.value == body["csrf_token"]


async def test_over_https_both_cookies_are_host_only_secure_and_prefixed(
    make_browser_client: MakeBrowserClient,
) -> None:
    """``__Host-`` names: a browser keeps them only Secure, host-only and ``Path=/``, so a sibling
    subdomain cannot toss a cookie of its own beside them. The compose stack serves auth_service at
    https://localhost/auth, and even there the path is ``/``."""
    own = "https://localhost"
    client = await make_browser_client(issuer=f"{own}/auth")
    await register(client)
    resp = await client.post(
        "/v1/login",
        json={"username": "alice", "password": PASSWORD, "session": "cookie"},
        headers={"Origin": own},
    )
    assert resp.status == 200, await resp.text()
    assert SESSION_COOKIE not in resp.cookies and CSRF_COOKIE not in resp.cookies
    session, csrf = (
        resp.cookies[HOST_PREFIX + SESSION_COOKIE],
        resp.cookies[HOST_PREFIX + CSRF_COOKIE],
    )
    for cookie in (session, csrf):
        assert cookie["secure"] is True and cookie["path"] == "/" and not cookie["domain"]
        assert cookie["samesite"] == "Strict"
    assert session["httponly"] is True and not csrf["httponly"]
    headers = {
        "Cookie": f"{session.key}={session.value}; {csrf.key}={csrf.value}",
        "Origin": own,
        CSRF_HEADER: csrf.value,
    }
    resp, body = await cookie_refresh(client, headers)
    assert resp.status == 200, body
    headers["Cookie"] = f"{session.key}={resp.cookies[session.key].value}; {csrf.key}={csrf.value}"
    resp = await client.post("/v1/logout", headers=headers)
    assert resp.status == 200, await resp.text()
    for name in (session.key, csrf.key):
        cleared = resp.cookies[name]
        assert cleared.value == "" and cleared["max-age"] == "0"
        assert cleared["secure"] is True and cleared["path"] == "/", "else a browser ignores it"


async def test_over_http_behind_a_path_prefix_the_cookie_path_follows_the_issuer(
    make_browser_client: MakeBrowserClient,
) -> None:
    client = await make_browser_client(issuer="http://localhost/auth")
    await register(client)
    resp = await client.post(
        "/v1/login",
        json={"username": "alice", "password": PASSWORD, "session": "cookie"},
        headers={"Origin": "http://localhost"},
    )
    assert resp.status == 200, await resp.text()
    assert resp.cookies[SESSION_COOKIE]["path"] == "/auth/v1/"


@pytest.mark.parametrize(
    ("issuer", "page"),
    [
        ("https://b\u00fccher.example/auth", "https://xn--bcher-kva.example"),
        ("https://chat.example.com:443/auth", "https://chat.example.com"),
    ],
)
async def test_the_issuers_own_page_is_known_by_the_origin_its_browser_sends(
    make_browser_client: MakeBrowserClient, issuer: str, page: str
) -> None:
    """A browser's ``Origin`` carries an international host in ASCII and never a default port:
    the issuer's own page was compared with the issuer as written, so its cookie login was
    refused 403 ``csrf_failed`` (an outside probe)."""
    client = await make_browser_client(issuer=issuer)
    await register(client)
    for origin, status in ((page, 200), (EVIL, 403)):
        resp = await client.post(
            "/v1/login",
            json={"username": "alice", "password": PASSWORD, "session": "cookie"},
            headers={"Origin": origin},
        )
        assert resp.status == status, await resp.text()
    assert HOST_PREFIX + SESSION_COOKIE not in resp.cookies


async def test_refresh_from_the_cookie_rotates_it(client: AuthClient) -> None:
    browser, first = await cookie_login(client)
    resp, body = await cookie_refresh(client, browser.headers())
    assert resp.status == 200, body
    assert "refresh_token" not in body and body["access_token"] != first["access_token"]
    rotated = resp.cookies[SESSION_COOKIE].value
    assert rotated != browser.session
    assert body["csrf_token"] == browser.csrf
    # The old cookie is a rotated refresh token now: refused (within the grace, nothing revoked).
    resp, body = await cookie_refresh(client, browser.headers())
    assert (resp.status, body["error"]) == (400, "invalid_grant")
    resp, body = await cookie_refresh(client, Browser(rotated, browser.csrf).headers())
    assert resp.status == 200, body


@pytest.mark.parametrize(
    ("origin", "csrf"),
    [
        (OWN, ""),
        (OWN, "not-the-token"),
        (EVIL, None),
        ("null", None),
    ],
    ids=["no-csrf", "wrong-csrf", "foreign-origin", "null-origin"],
)
async def test_refresh_without_csrf_proof_is_403_and_rotates_nothing(
    client: AuthClient, origin: str, csrf: str | None
) -> None:
    browser, _ = await cookie_login(client)
    resp, body = await cookie_refresh(client, browser.headers(origin=origin, csrf=csrf))
    assert (resp.status, body["error"]) == (403, "csrf_failed")
    assert SESSION_COOKIE not in resp.cookies
    resp, body = await cookie_refresh(client, browser.headers())
    assert resp.status == 200, body


async def test_refresh_without_origin_is_403(client: AuthClient) -> None:
    browser, _ = await cookie_login(client)
    headers = browser.headers()
    del headers["Origin"]
    resp, body = await cookie_refresh(client, headers)
    assert (resp.status, body["error"]) == (403, "csrf_failed")


async def test_a_csrf_token_only_works_with_its_own_session(client: AuthClient) -> None:
    first, _ = await cookie_login(client)
    second, _ = await cookie_login(client)
    assert first.session != second.session and first.csrf != second.csrf
    resp, body = await cookie_refresh(client, second.headers(csrf=first.csrf))
    assert (resp.status, body["error"]) == (403, "csrf_failed")


async def test_without_a_cookie_the_refresh_token_parameter_is_required(
    client: AuthClient,
) -> None:
    resp, body = await cookie_refresh(client, {"Origin": OWN})
    assert (resp.status, body["error"]) == (400, "invalid_request")


async def test_cookie_login_from_a_foreign_origin_is_refused(client: AuthClient) -> None:
    for headers in ({"Origin": EVIL}, {}):
        resp = await client.post(
            "/v1/login",
            json={"username": "alice", "password": PASSWORD, "session": "cookie"},
            headers=headers,
        )
        assert resp.status == 403
        assert SESSION_COOKIE not in resp.cookies


async def test_unknown_session_mode_is_a_bad_request(client: AuthClient) -> None:
    resp = await client.post(
        "/v1/login", json={"username": "alice", "password": PASSWORD, "session": "local"}
    )
    assert (resp.status, (await resp.json())["error"]) == (400, "invalid_request")


async def test_cookie_logout_revokes_and_clears_both_cookies(
    client: AuthClient, events: list[RevocationEvent]
) -> None:
    browser, _ = await cookie_login(client)
    resp = await client.post("/v1/logout", headers=browser.headers(csrf="wrong"))
    assert resp.status == 403
    assert events == []
    resp = await client.post("/v1/logout", headers=browser.headers())
    assert resp.status == 200, await resp.text()
    assert resp.cookies[SESSION_COOKIE].value == ""
    assert resp.cookies[CSRF_COOKIE].value == ""
    assert [type(event) for event in events] == [SessionRevoked]
    resp, body = await cookie_refresh(client, browser.headers())
    assert (resp.status, body["error"]) == (400, "invalid_grant")


async def test_a_cookie_whose_session_ended_is_cleared_with_the_refusal(
    client: AuthClient,
) -> None:
    """A session ended elsewhere (a logout everywhere from another device): the browser's refresh
    and logout are refused, and both cookies go with the refusal. They stayed, and every page
    load sent them again, to be refused again (an outside probe)."""
    browser, _ = await cookie_login(client)
    other, _ = await cookie_login(client)
    resp = await client.post("/v1/logout", json={"all": True}, headers=other.headers())
    assert resp.status == 200
    for attempt in ("refresh", "logout"):
        if attempt == "refresh":
            resp, body = await cookie_refresh(client, browser.headers())
        else:
            resp = await client.post("/v1/logout", headers=browser.headers())
            body = await resp.json()
        assert (resp.status, body["error"]) == (400, "invalid_grant"), attempt
        assert body["error_description"] == "the session was revoked"
        assert resp.cookies[SESSION_COOKIE].value == "", attempt
        assert resp.cookies[CSRF_COOKIE].value == "", attempt


async def test_a_refusal_that_says_nothing_of_the_session_keeps_the_cookies(
    client: AuthClient,
) -> None:
    """Within the reuse grace another tab's refresh may have set the next cookie already: a
    refusal that does not say the session ended deletes nothing."""
    browser, _ = await cookie_login(client)
    resp, _ = await cookie_refresh(client, browser.headers())
    assert resp.status == 200
    resp, body = await cookie_refresh(client, browser.headers())  # the rotated one, in grace
    assert (resp.status, body["error"]) == (400, "invalid_grant")
    assert SESSION_COOKIE not in resp.cookies and CSRF_COOKIE not in resp.cookies


async def test_cookie_logout_everywhere(client: AuthClient, events: list[RevocationEvent]) -> None:
    browser, _ = await cookie_login(client)
    resp = await client.post("/v1/logout", json={"all": True}, headers=browser.headers())
    assert resp.status == 200
    assert (await resp.json())["all"] is True
    assert UserRevoked in {type(event) for event in events}


async def test_cors_with_credentials_for_configured_origins_only(client: AuthClient) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-csrf-token",
    }
    resp = await client.options("/v1/token", headers={"Origin": APP, **preflight})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert "X-CSRF-TOKEN" in resp.headers["Access-Control-Allow-Headers"].upper()
    resp = await client.options("/v1/token", headers={"Origin": EVIL, **preflight})
    assert "Access-Control-Allow-Origin" not in resp.headers
    refused = {
        "an origin": {"Origin": EVIL, **preflight},
        "a method": {"Origin": APP, "Access-Control-Request-Method": "PUT"},
        "a header": {"Origin": APP, **preflight, "Access-Control-Request-Headers": "x-other"},
        "no origin": preflight,
    }
    for what, headers in refused.items():  # a documented code saying which (an outside probe)
        resp = await client.options("/v1/token", headers=headers)
        body = await resp.json()
        assert (resp.status, body["error"]) == (403, "cors_refused"), what
        assert body["error_description"].startswith("CORS preflight request failed: "), what
    browser, _ = await cookie_login(client, origin=APP)
    resp, _ = await cookie_refresh(client, browser.headers(origin=APP))
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    resp, _ = await cookie_refresh(client, browser.headers(origin=EVIL))
    assert resp.status == 403
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_api_answers_vary_by_origin_and_a_registration_is_not_stored(
    client: AuthClient,
) -> None:
    """An answer whose CORS headers hold for one origin and not another says ``Vary: Origin``,
    or a shared cache could hand it to the other (aiohttp-cors adds none: an outside probe);
    and a registration's 201 was the one API answer without ``Cache-Control``."""
    resp = await client.post(
        "/v1/register",
        json={"username": "vera", "password": PASSWORD},
        headers={"Origin": APP},
    )
    assert resp.status == 201
    assert resp.headers["Cache-Control"] == "no-store"
    for origin in (APP, EVIL):
        resp, _ = await cookie_refresh(client, {"Origin": origin})
        assert "Origin" in resp.headers.getall("Vary"), origin
    resp = await client.get("/.well-known/jwks.json")
    assert "Vary" not in resp.headers, "not an API answer: its caching is left alone"


async def test_cors_only_on_the_api_a_page_calls(client: AuthClient) -> None:
    """/metrics is for operators; the JWKS and metadata are public and cacheable by anyone, so they
    must not carry one origin's CORS headers (a shared cache would replay them to every origin)."""
    for path in (
        "/metrics",
        "/readyz",
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
    ):
        resp = await client.get(path, headers={"Origin": APP})
        assert resp.status == 200, path
        assert not any(h.startswith("Access-Control-") for h in resp.headers), path
        preflight = await client.options(
            path, headers={"Origin": APP, "Access-Control-Request-Method": "GET"}
        )
        assert "Access-Control-Allow-Origin" not in preflight.headers, path
    jwks = await client.get("/.well-known/jwks.json", headers={"Origin": APP})
    assert jwks.headers["Cache-Control"].startswith("public")
    resp = await client.post("/v1/register", json={}, headers={"Origin": APP})
    assert resp.headers["Access-Control-Allow-Origin"] == APP


async def test_no_cors_headers_without_configured_origins(
    make_browser_client: MakeBrowserClient,
) -> None:
    client = await make_browser_client()
    resp = await client.post("/v1/token", data={"grant_type": "x"}, headers={"Origin": APP})
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_ws_ticket_is_short_lived_and_not_an_access_token(client: AuthClient) -> None:
    _, tokens = await cookie_login(client)
    resp = await client.post(
        "/v1/ws-ticket", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert resp.status == 200, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert 0 < body["expires_in"] <= TICKET_TTL
    ticket = body["ticket"]
    assert jwt.get_unverified_header(ticket)["typ"] == TICKET_TYP
    access = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    claims = jwt.decode(ticket, options={"verify_signature": False})
    assert (claims["sub"], claims["sid"], claims["scope"]) == (
        access["sub"],
        access["sid"],
        access["scope"],
    )
    assert claims["exp"] <= access["exp"] and claims["token_exp"] == access["exp"]
    for credentials in (ticket, "not-a-token"):
        resp = await client.post(
            "/v1/ws-ticket", headers={"Authorization": f"Bearer {credentials}"}
        )
        assert (resp.status, (await resp.json())["error"]) == (401, "invalid_token")
    resp = await client.post("/v1/logout", headers={"Authorization": f"Bearer {ticket}"})
    assert resp.status == 401
    assert (await client.post("/v1/ws-ticket")).status == 401


async def test_ws_ticket_from_the_session_cookie(client: AuthClient) -> None:
    browser, tokens = await cookie_login(client)
    resp = await client.post("/v1/ws-ticket", headers=browser.headers())
    assert resp.status == 200, await resp.text()
    claims = jwt.decode((await resp.json())["ticket"], options={"verify_signature": False})
    access = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert (claims["sub"], claims["sid"], claims["scope"]) == (
        access["sub"],
        access["sid"],
        access["scope"],
    )
    assert claims["preferred_username"] == "alice"
    assert claims["exp"] - claims["iat"] <= TICKET_TTL
    assert claims["token_exp"] - claims["token_iat"] == access["exp"] - access["iat"]
    # The cookie still refreshes: minting a ticket rotated nothing.
    resp, _ = await cookie_refresh(client, browser.headers())
    assert resp.status == 200


@pytest.mark.parametrize(
    ("origin", "csrf"), [(EVIL, None), (OWN, "forged"), (OWN, "")], ids=["origin", "csrf", "none"]
)
async def test_ws_ticket_from_the_cookie_needs_csrf_proof(
    client: AuthClient, origin: str, csrf: str | None
) -> None:
    browser, _ = await cookie_login(client)
    resp = await client.post("/v1/ws-ticket", headers=browser.headers(origin, csrf))
    assert (resp.status, (await resp.json())["error"]) == (403, "csrf_failed")


async def test_no_ws_ticket_from_a_logged_out_cookie(client: AuthClient) -> None:
    browser, _ = await cookie_login(client)
    resp = await client.post("/v1/logout", headers=browser.headers())
    assert resp.status == 200
    resp = await client.post("/v1/ws-ticket", headers=browser.headers())
    assert (resp.status, (await resp.json())["error"]) == (400, "invalid_grant")


@pytest.mark.parametrize("everywhere", [False, True], ids=["logout", "logout-everywhere"])
async def test_no_ws_ticket_from_the_access_token_of_a_logged_out_session(
    make_client: MakeClient, database_url: str, everywhere: bool
) -> None:
    """The gateway would refuse such a ticket; the issuer refuses to mint it, as it refuses a
    second logout with that token."""
    client = await make_client(database_url=database_url)
    await register(client)
    tokens = await login(client)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (await client.post("/v1/ws-ticket", headers=bearer)).status == 200
    if everywhere:  # from another session: this token's session ends with the user's
        other = await login(client)
        resp = await client.post(
            "/v1/logout",
            json={"all": True},
            headers={"Authorization": f"Bearer {other['access_token']}"},
        )
    else:
        resp = await client.post("/v1/logout", headers=bearer)
    assert resp.status == 200
    ticket = await client.post("/v1/ws-ticket", headers=bearer)
    again = await client.post("/v1/logout", headers=bearer)
    assert (ticket.status, (await ticket.json()).get("error")) == (401, "invalid_token")
    assert (again.status, (await again.json())["error"]) == (401, "invalid_token")
    assert ticket.headers["WWW-Authenticate"] == again.headers["WWW-Authenticate"]


async def test_a_page_on_another_host_gets_its_sessions_csrf_token_and_nothing_else_does(
    client: AuthClient,
) -> None:
    """A page of an allowed origin on another host cannot read the CSRF cookie (host-only on the
    issuer's host): after a reload it could not resume its session (an outside probe). It asks
    for the token; a page of another site, a request without Origin or without the cookie get
    nothing, and nothing rotates."""
    browser, body = await cookie_login(client, origin=APP)
    cookie = {"Cookie": f"{SESSION_COOKIE}={browser.session}"}
    resp = await client.post("/v1/csrf", headers={**cookie, "Origin": APP})
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"csrf_token": body["csrf_token"]}
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    assert SESSION_COOKIE not in resp.cookies
    for headers in ({**cookie, "Origin": EVIL}, {**cookie, "Origin": "null"}, cookie):
        resp = await client.post("/v1/csrf", headers=headers)
        assert (resp.status, (await resp.json())["error"]) == (403, "csrf_failed"), headers
        assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await client.post("/v1/csrf", headers={"Origin": APP})
    assert (resp.status, (await resp.json())["error"]) == (400, "invalid_request")
    resp, refreshed = await cookie_refresh(client, browser.headers(origin=APP))
    assert resp.status == 200, refreshed


@pytest.mark.parametrize("path", ["/v1/token", "/v1/logout"])
async def test_a_session_cookie_that_cannot_be_read_is_deleted_with_its_refusal(
    make_browser_client: MakeBrowserClient, client: AuthClient, path: str, tmp_path: Path
) -> None:
    """A cookie sealed under a key-encryption secret since retired (or garbled) read as no cookie:
    400 invalid_request, and it stayed, so every page load sent it and was refused again (an
    outside probe). It is a session that has ended: 400 invalid_grant, both cookies deleted. From
    a foreign Origin nothing is deleted."""
    elsewhere = await make_browser_client(
        cors_origins=(APP,),
        key_encryption_secrets=("another-secret-" + "x" * 40,),
        database_url=f"sqlite:///{tmp_path / 'elsewhere.db'}",
    )
    await register(elsewhere)
    sealed_elsewhere, _ = await cookie_login(elsewhere)
    body = {"grant_type": "refresh_token"} if path == "/v1/token" else {}
    for unreadable in (sealed_elsewhere.session, "garbled"):
        browser = Browser(unreadable, "some-csrf")
        resp = await client.post(path, json=body, headers=browser.headers(origin=EVIL))
        assert (resp.status, (await resp.json())["error"]) == (403, "csrf_failed")
        assert SESSION_COOKIE not in resp.cookies
        resp = await client.post(path, json=body, headers=browser.headers())
        assert (resp.status, (await resp.json())["error"]) == (400, "invalid_grant"), unreadable
        for name in (SESSION_COOKIE, CSRF_COOKIE):
            assert resp.cookies[name].value == "" and resp.cookies[name]["max-age"] == "0"
    resp = await client.post(path, json=body, headers={"Origin": OWN})
    assert (resp.status, (await resp.json())["error"]) == (400, "invalid_request")


async def test_a_cookie_planted_by_another_host_of_the_site_never_stands_for_the_session(
    client: AuthClient,
) -> None:
    """aiohttp also splits a cookie pair on whitespace: a sibling host's ``x=1 gw_session=...``
    on the parent domain (the ``__Host-`` prefix judges names, not values) read as the session
    cookie. A junk value deleted the victim's valid session as unreadable; another account's
    sealed cookie made ``POST /v1/csrf`` hand out that account's CSRF token, which a cross-host
    page's client follows into the attacker's account (an outside probe, also in Chromium)."""
    alice, alice_body = await cookie_login(client, origin=APP)
    await register(client, "mallory")
    resp = await client.post(
        "/v1/login",
        json={"username": "mallory", "password": PASSWORD, "session": "cookie"},
        headers={"Origin": APP},
    )
    mallory = resp.cookies[SESSION_COOKIE].value
    for planted in ("junk", mallory):
        headers = alice.headers(origin=APP)
        headers["Cookie"] += f"; x=1 {SESSION_COOKIE}={planted}"
        resp = await client.post("/v1/csrf", headers=headers)
        assert (await resp.json()) == {"csrf_token": alice_body["csrf_token"]}, planted
        resp, body = await cookie_refresh(client, headers)
        assert resp.status == 200, body
        assert (
            jwt.decode(body["access_token"], options={"verify_signature": False})[
                "preferred_username"
            ]
            == "alice"
        )
        alice = Browser(resp.cookies[SESSION_COOKIE].value, alice.csrf)
    headers = alice.headers(origin=APP)
    headers["Cookie"] += f"; {SESSION_COOKIE}={mallory}"  # two of them: neither is read
    resp, body = await cookie_refresh(client, headers)
    assert (resp.status, body["error"]) == (400, "invalid_request")
    assert SESSION_COOKIE not in resp.cookies, "nothing deleted"
    resp, body = await cookie_refresh(client, alice.headers(origin=APP))
    assert resp.status == 200, body
