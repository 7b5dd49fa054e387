"""auth_service and ws_service together on one bus: what a logout, a stolen refresh token or a key
rotation at the issuer does to live sockets at the gateway."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import jwt

from auth_service.appkeys import KEYRING
from tests.integration.stack import API_KEY, MakeStack
from tests.integration.ws.harness import auth, expect_close, expect_open, recv, send


async def expect_revoked(ws: Any) -> None:
    """The revocation notice, then close 4403, both within a second of the REST call."""
    assert await recv(ws, wait=1.0) == {"type": "revoked", "reason": "session_revoked"}
    await expect_close(ws, 4403, "session_revoked", wait=1.0)


def unverified(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


async def test_login_auth_subscribe_and_a_message_attributed_by_the_server(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack()
    await stack.register("alice", "bob")
    alice_tokens, bob_tokens = await stack.login("alice"), await stack.login("bob")
    alice, success = await stack.connect(alice_tokens["access_token"])
    assert success["user"] == {"id": stack.users["alice"], "username": "alice"}
    assert success["session"] == unverified(alice_tokens["access_token"])["sid"]
    bob, _ = await stack.connect(bob_tokens["access_token"])
    await send(alice, {"type": "subscribe", "channel": "chat:general", "id": 1})
    subscribed = await recv(alice)
    assert subscribed == {
        "type": "subscribed",
        "channel": "chat:general",
        "id": 1,
        "position": {"offset": 0, "epoch": subscribed["position"]["epoch"]},
    }
    frame = {"type": "publish", "channel": "chat:general", "data": {"t": "hi"}, "from": "alice"}
    await send(bob, {**frame, "id": 2})
    assert await recv(bob) == {"type": "published", "channel": "chat:general", "id": 2}
    message = await recv(alice)
    assert (message["type"], message["from"], message["from_username"], message["data"]) == (
        "message",
        stack.users["bob"],
        "bob",
        {"t": "hi"},
    )
    assert message["offset"] == 1


async def test_logout_closes_the_socket_and_the_access_token_is_refused_afterwards(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack()
    await stack.register("alice")
    tokens = await stack.login("alice")
    ws, _ = await stack.connect(tokens["access_token"])
    await stack.logout(tokens["access_token"])
    await expect_revoked(ws)
    assert unverified(tokens["access_token"])["exp"] > time.time()
    again = await stack.open()
    reply = await auth(again, tokens["access_token"])
    assert (reply["type"], reply["code"], reply["retry"]) == (
        "auth_error",
        "session_revoked",
        False,
    )
    await expect_close(again, 4403, "session_revoked")


async def test_logout_everywhere_closes_every_socket_of_the_user_only(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack()
    await stack.register("alice", "bob")
    phone, laptop, bob = [await stack.login(user) for user in ("alice", "alice", "bob")]
    phone_ws, _ = await stack.connect(phone["access_token"])
    laptop_ws, _ = await stack.connect(laptop["access_token"])
    bob_ws, _ = await stack.connect(bob["access_token"])
    await stack.logout(phone["access_token"], all=True)
    await expect_revoked(phone_ws)
    await expect_revoked(laptop_ws)
    await expect_open(bob_ws)
    status, body = await stack.refresh(laptop["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")
    fresh = await stack.login("alice")
    fresh_ws, _ = await stack.connect(fresh["access_token"])
    await expect_open(fresh_ws)


async def test_refresh_token_reuse_revokes_the_family_and_closes_its_socket(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack(auth={"refresh_reuse_grace": 0})
    await stack.register("alice")
    stolen, other = await stack.login("alice"), await stack.login("alice")
    ws, _ = await stack.connect(stolen["access_token"])
    other_ws, _ = await stack.connect(other["access_token"])
    status, rotated = await stack.refresh(stolen["refresh_token"])
    assert status == 200
    status, body = await stack.refresh(stolen["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")
    await expect_revoked(ws)
    status, body = await stack.refresh(rotated["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")
    again = await stack.open()
    reply = await auth(again, rotated["access_token"])
    assert (reply["type"], reply["code"]) == ("auth_error", "session_revoked")
    await expect_open(other_ws)


async def test_immediate_key_rotation_is_picked_up_through_the_unknown_kid_refetch(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack()
    await stack.register("alice")
    before = await stack.login("alice")
    fetches = stack.ws_count("ws_jwks_fetches_total", outcome="ok")
    await stack.auth.app[KEYRING].rotate(time.time(), immediate=True)
    after = await stack.login("alice")
    old_kid = jwt.get_unverified_header(before["access_token"])["kid"]
    new_kid = jwt.get_unverified_header(after["access_token"])["kid"]
    assert new_kid != old_kid
    new_ws, _ = await stack.connect(after["access_token"])
    assert stack.ws_count("ws_jwks_fetches_total", outcome="ok") == fetches + 1
    old_ws, _ = await stack.connect(before["access_token"])
    await expect_open(new_ws)
    await expect_open(old_ws)


async def test_a_revoked_token_stays_refused_through_the_gateway_leeway(
    make_stack: MakeStack,
) -> None:
    """auth_service forgets a revocation at the token's latest ``exp``; the gateway accepts tokens
    up to ``exp`` plus its leeway, so it has to remember the revocation that much longer.
    ``iat`` and ``exp`` are whole seconds, so a 3 s token has more than 2 s left when issued: time
    for the logout on a loaded machine (a 1 s token could have none)."""
    stack = await make_stack(auth={"access_token_ttl": 3}, ws={"leeway": 5})
    await stack.register("alice")
    tokens = await stack.login("alice")
    exp = unverified(tokens["access_token"])["exp"]
    await stack.logout(tokens["access_token"])
    await asyncio.sleep(exp + 0.1 - time.time())  # auth_service has forgotten the revocation
    assert time.time() < exp + 5
    ws = await stack.open()
    reply = await auth(ws, tokens["access_token"])
    assert (reply["type"], reply["code"]) == ("auth_error", "session_revoked")


async def test_both_services_name_the_same_http_refusal_alike(make_stack: MakeStack) -> None:
    """A client of both services handles one code per refusal: the 404, the 405 and a body over
    the limit read the same from auth_service and ws_service (ws_service said
    ``request_entity_too_large`` for what auth_service calls ``request_too_large``)."""
    stack = await make_stack()
    bearer = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    too_big = b'{"channel": "chat:a", "data": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    for service, path in ((stack.auth, "/v1/login"), (stack.ws, "/v1/publish")):
        codes = []
        for method, url, body in (
            ("GET", "/no-such-path", None),
            ("PUT", path, None),
            ("POST", path, too_big),
        ):
            data = None if body is None else io.BytesIO(body)
            response = await service.request(method, url, data=data, headers=bearer)
            assert response.content_type == "application/json"
            codes.append((response.status, (await response.json())["error"]))
        assert codes == [
            (404, "not_found"),
            (405, "method_not_allowed"),
            (413, "request_too_large"),
        ], service
