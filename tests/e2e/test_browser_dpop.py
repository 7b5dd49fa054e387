"""DPoP in a real browser (issue 21): the demo page's key is a non-extractable WebCrypto key kept
in IndexedDB, the binding survives a reload, and a token that script copies out of the page is
worth nothing in another browser context."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.conftest import Stack
from tests.e2e.test_browser import (
    issued_tokens,
    log_in,
    open_page,
    say,
    wait_for_message,
    wait_joined,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = pytest.mark.e2e

BOUND = "bound to this browser's key"
STORED_KEY = """async () => {
    const done = (request) => new Promise((resolve, reject) => {
        request.onsuccess = () => resolve(request.result);
        request.onerror = () => reject(request.error);
    });
    const db = await done(indexedDB.open("realtime-gateway-dpop"));
    const pair = await done(db.transaction("keys").objectStore("keys").get("dpop"));
    db.close();
    const attempt = (format) => crypto.subtle.exportKey(format, pair.privateKey)
        .then(() => "exported", (error) => error.name);
    return {
        type: pair.privateKey.type,
        algorithm: pair.privateKey.algorithm,
        extractable: pair.privateKey.extractable,
        jwk: await attempt("jwk"),
        pkcs8: await attempt("pkcs8"),
    };
}"""
"""What script on the page can do with the stored key: read the CryptoKeyPair, fail to export it."""
STEAL = """() => {
    window.stolen = [];
    const send = WebSocket.prototype.send;
    WebSocket.prototype.send = function (data) {
        window.stolen.push(String(data));
        return send.call(this, data);
    };
}"""
"""Injected script that copies every frame the page sends (its ``auth`` frames: token and proof)."""


def bound_key(token: str) -> str:
    """The ``cnf.jkt`` of an access token (read, not verified: the services verify)."""
    payload = token.split(".")[1]
    padded = payload + "=" * (-len(payload) % 4)
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return str(claims["cnf"]["jkt"])


def thumbprint(page: Page) -> str:
    page.wait_for_function(f"() => document.getElementById('binding').textContent === {BOUND!r}")
    return str(page.get_attribute("#key-thumbprint", "title"))


def logged_in(context: BrowserContext, stack: Stack, user: str) -> tuple[Page, list[str]]:
    """A new page of the demo, logged in as a freshly registered user; the tokens it is issued."""
    stack.register(user)
    page = context.new_page()
    tokens = issued_tokens(page)
    page.goto(stack.page_url)
    page.wait_for_selector("body[data-ready=true]")
    log_in(page, user)
    return page, tokens


def test_the_key_is_non_extractable_and_the_page_says_the_token_is_bound(
    context: BrowserContext, stack: Stack
) -> None:
    page, tokens = logged_in(context, stack, "kate")
    jkt = thumbprint(page)
    assert tokens and {bound_key(token) for token in tokens} == {jkt}
    key = page.evaluate(STORED_KEY)
    assert key == {
        "type": "private",
        "algorithm": {"name": "ECDSA", "namedCurve": "P-256"},
        "extractable": False,
        "jwk": "InvalidAccessError",
        "pkcs8": "InvalidAccessError",
    }


def test_the_binding_survives_a_reload(context: BrowserContext, stack: Stack) -> None:
    """The session cookie is bound to the key: the refresh after a reload proves the same one."""
    page, tokens = logged_in(context, stack, "liam")
    before = thumbprint(page)
    issued = len(tokens)
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    wait_joined(page)
    assert thumbprint(page) == before
    assert len(tokens) > issued, "the page refreshed from its cookie after the reload"
    assert {bound_key(token) for token in tokens} == {before}
    say(page, "after the reload")
    wait_for_message(page, "liam", "after the reload")


def test_a_token_copied_out_of_the_page_is_refused_in_another_context(
    browser: Browser, context: BrowserContext, stack: Stack
) -> None:
    stack.register("mia")
    context.add_init_script(f"({STEAL})()")
    page = open_page(context, stack)
    log_in(page, "mia")
    auth = json.loads(page.evaluate("() => window.stolen[0]"))
    assert auth["type"] == "auth" and "proof" in auth
    token = auth["token"]
    thief = browser.new_context()
    try:
        elsewhere = open_page(thief, stack)
        answers = elsewhere.evaluate(
            """([url, token, proof]) => new Promise((resolve) => {
                const answers = [];
                const ws = new WebSocket(url, ["realtime.v1"]);
                ws.onopen = () => ws.send(JSON.stringify({type: "auth", token}));
                ws.onmessage = (event) => {
                    answers.push(JSON.parse(event.data));
                    if (answers.length === 1) ws.send(JSON.stringify({type: "auth", token, proof}));
                    else { ws.close(); resolve(answers); }
                };
            })""",
            [stack.ws_url, token, auth["proof"]],
        )
        # Without a proof, then with the page's own proof replayed: both refused.
        refusals = [(answer["type"], answer["code"]) for answer in answers]
        assert refusals == [("auth_error", "invalid_dpop_proof")] * 2
        statuses = elsewhere.evaluate(
            """async ([auth, token, proof]) => {
                const post = async (path, headers) => (await fetch(auth + path, {
                    method: "POST", headers: {"Content-Type": "application/json", ...headers},
                    body: "{}"})).status;
                return [
                    await post("/v1/ws-ticket", {Authorization: "DPoP " + token}),
                    await post("/v1/ws-ticket", {Authorization: "Bearer " + token}),
                    await post("/v1/ws-ticket", {Authorization: "DPoP " + token, DPoP: proof}),
                    await post("/v1/logout", {Authorization: "DPoP " + token}),
                ];
            }""",
            [stack.auth_url, token, auth["proof"]],
        )
        assert statuses == [401, 401, 401, 401]
    finally:
        thief.close()
    # Nothing was revoked: the page goes on with its key.
    say(page, "still mine")
    wait_for_message(page, "mia", "still mine")
