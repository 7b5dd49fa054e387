"""The Python client against the real auth_service and the real ws_service on one bus."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from auth_service.appkeys import KEYRING
from realtime_gateway_client import (
    AuthenticationFailed,
    ClientError,
    ConnectionLost,
    GatewayClient,
    RequestFailed,
    TemporaryFailure,
    Unreachable,
)
from realtime_gateway_protocol.key_events import KEYS_TOPIC, KeyWithdrawn, encode_key_event
from tests.integration.stack import API_KEY, PASSWORD, MakeStack, Stack
from tests.integration.ws.harness import wait_until
from tests.services import free_port


@pytest.fixture
async def stack(make_stack: MakeStack) -> Stack:
    stack = await make_stack()
    await stack.register("alice", "bob")
    return stack


async def next_message(client: GatewayClient) -> dict[str, Any]:
    async with asyncio.timeout(3):
        async for message in client.messages():
            return message
    raise AssertionError("the message stream ended")


async def test_login_subscribe_publish_roundtrip(stack: Stack) -> None:
    alice_id, bob_id = stack.users["alice"], stack.users["bob"]
    async with stack.client("alice") as alice, stack.client("bob") as bob:
        assert alice.user == {"id": alice_id, "username": "alice"}
        await alice.subscribe("chat:general")
        await bob.publish("chat:general", {"text": "hi"})
        message = await next_message(alice)
        assert (message["from"], message["from_username"], message["data"]) == (
            bob_id,
            "bob",
            {"text": "hi"},
        )
        await alice.subscribe(f"user:{alice_id}")
        with pytest.raises(RequestFailed) as err:
            await alice.subscribe(f"user:{bob_id}")
        assert err.value.code == "forbidden"


async def test_wrong_password_raises_authentication_failed(stack: Stack) -> None:
    with pytest.raises(AuthenticationFailed) as err:
        async with stack.client("alice", "wrong password"):
            pass
    assert err.value.code == "invalid_grant"


WRONG_URLS = {
    "refused": ("ws://127.0.0.1:{free}/ws", "connection refused", None),
    "no such host": ("ws://no-such-host.invalid/ws", "no-such-host.invalid does not resolve", None),
    "not a websocket": ("{auth}/ws", "HTTP 404, not a WebSocket", 404),
}


@pytest.mark.parametrize("case", list(WRONG_URLS))
async def test_a_wrong_ws_url_fails_start_at_once(stack: Stack, case: str) -> None:
    """Before its first connection the client has nothing to lose by stopping, and a retry loop
    would hide the mistake: ``start()`` used to wait forever, silently."""
    template, reason, status = WRONG_URLS[case]
    url = template.format(free=free_port(), auth=stack.auth_url.rstrip("/"))
    client = GatewayClient(stack.auth_url, url, "alice", PASSWORD)
    with pytest.raises(Unreachable) as err:
        async with asyncio.timeout(10):  # a guard against the old hang, not a speed limit
            await client.start()
    assert str(err.value) == f"cannot reach the gateway at {url} ({reason})"
    assert (err.value.url, err.value.status) == (url, status)
    assert client.connects == 0


@pytest.mark.parametrize(
    ("template", "reason"),
    [("http://127.0.0.1:{free}", "connection refused"), ("{ws}", "HTTP 404 Not Found")],
)
async def test_a_wrong_auth_url_is_the_same_one_error(
    stack: Stack, template: str, reason: str
) -> None:
    url = template.format(free=free_port(), ws=stack.ws_url.removesuffix("/ws"))
    with pytest.raises(Unreachable) as err:
        async with GatewayClient(url, stack.ws_url, "alice", PASSWORD):
            pass
    assert str(err.value) == f"cannot reach auth_service at {url} ({reason})"


async def test_throttled_login_raises_a_temporary_failure_with_retry_after(stack: Stack) -> None:
    for _ in range(10):
        bad = {"username": "alice", "password": "wrong password"}
        assert (await stack.auth.post("/v1/login", json=bad)).status == 401
    with pytest.raises(TemporaryFailure) as err:
        async with stack.client("alice"):
            pass
    assert (err.value.status, err.value.code) == (429, "too_many_attempts")
    assert err.value.retry_after is not None and err.value.retry_after > 0


async def test_renews_in_band_on_token_expiring_keeping_one_socket(make_stack: MakeStack) -> None:
    stack = await make_stack(auth={"access_token_ttl": 2})
    await stack.register("alice")
    async with stack.client("alice") as alice:
        await wait_until(lambda: alice.refreshes >= 2, wait=6)
        await alice.subscribe("chat:general")
        assert alice.connects == 1
        assert stack.auth_count("auth_refreshes_total", outcome="ok") == alice.refreshes
        assert stack.ws_count("ws_expiries_total") == 0


async def test_a_key_withdrawn_moments_after_the_login_is_renewed_in_place(
    make_stack: MakeStack,
) -> None:
    """The gateway warns of the close a withdrawal brings (an expiry sooner than the token's):
    the client renews at once on the same socket, however young its token."""
    stack = await make_stack(ws={"key_withdrawal_grace": 3})
    await stack.register("alice")
    async with stack.client("alice") as alice:
        ring = stack.auth.app[KEYRING]
        signing = ring.signing_key(time.time())
        assert signing is not None
        kid = (await ring.withdraw(signing.kid, time.time())).kid
        await stack.bus.publish(KEYS_TOPIC, encode_key_event(KeyWithdrawn(kid)))
        await wait_until(lambda: alice.refreshes == 1, wait=3)
        await asyncio.sleep(3.5)  # past the grace: the socket renewed is not closed
        await alice.subscribe("chat:general")
        assert alice.connects == 1


async def test_concurrent_refreshes_share_one_request(stack: Stack) -> None:
    async with stack.client("alice") as alice:
        pairs = await asyncio.gather(*(alice.refresh() for _ in range(5)))
        assert stack.auth_count("auth_refreshes_total", outcome="ok") == 1
        assert len({pair.refresh_token for pair in pairs}) == 1
        await alice.refresh()
        assert stack.auth_count("auth_refreshes_total", outcome="ok") == 2
        assert stack.auth_count("auth_refreshes_total", outcome="invalid_grant") == 0


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (1001, "going_away"),
        (1011, "internal_error"),
        (1012, "draining"),
        (4408, "auth_timeout"),
        (4429, "rate_limited"),
    ],
)
async def test_reconnects_and_resubscribes(stack: Stack, code: int, reason: str) -> None:
    async with stack.client("alice") as alice:
        await alice.subscribe("chat:general")
        await stack.close_sockets(code, reason)
        await wait_until(lambda: alice.connects == 2)
        await alice.publish("chat:general", "after")
        message = await next_message(alice)
        assert message["data"] == "after"
        assert alice.refreshes == 0


def lose_the_first(client: GatewayClient, frame_type: str) -> asyncio.Event:
    """Make ``client`` drop its first frame of ``frame_type`` unsent, as if the server went down
    before answering it; the event is set when it has."""
    sent, swallowed = client._send, asyncio.Event()

    async def losing(ws: Any, frame: dict[str, Any], **options: Any) -> None:
        if frame.get("type") == frame_type and not swallowed.is_set():
            swallowed.set()
            return
        await sent(ws, frame, **options)

    client._send = losing  # type: ignore[method-assign]
    return swallowed


async def test_a_subscribe_in_flight_when_the_socket_drops_is_made_on_the_next_one(
    stack: Stack,
) -> None:
    """The first thing a program does after connecting is subscribe; a drop (a restart) while
    that request waits for its answer must not end the program (the chat exited on it)."""
    async with stack.client("alice") as alice:
        swallowed = lose_the_first(alice, "subscribe")
        subscribing = asyncio.ensure_future(alice.subscribe("chat:general"))
        await swallowed.wait()
        await stack.close_sockets(1001, "going_away")
        async with asyncio.timeout(5):
            await subscribing
        assert alice.connects == 2
        await alice.publish("chat:general", "after")
        assert (await next_message(alice))["data"] == "after"


async def test_a_publish_in_flight_when_the_socket_drops_fails_as_connection_lost(
    stack: Stack,
) -> None:
    """A publish is not sent again (it may have been done): the caller hears why."""
    async with stack.client("alice") as alice:
        swallowed = lose_the_first(alice, "publish")
        publishing = asyncio.ensure_future(alice.publish("chat:general", "lost?"))
        await swallowed.wait()
        await stack.close_sockets(1001, "going_away")
        with pytest.raises(ConnectionLost, match="1001 going_away"):
            async with asyncio.timeout(5):
                await publishing


async def test_token_expired_close_refreshes_then_reconnects(stack: Stack) -> None:
    async with stack.client("alice") as alice:
        await stack.close_sockets(4401, "token_expired")
        await wait_until(lambda: alice.connects == 2)
        assert alice.refreshes == 1
        assert stack.auth_count("auth_refreshes_total", outcome="ok") == 1


async def test_auth_down_at_token_expired_close_backs_off_and_reconnects(stack: Stack) -> None:
    async with stack.client("alice") as alice:
        await alice.subscribe("chat:general")
        await stack.auth.server.close()
        await stack.close_sockets(4401, "token_expired")
        await wait_until(lambda: alice.connects == 2)
        await alice.publish("chat:general", "still here")
        assert (await next_message(alice))["data"] == "still here"
        assert alice.refreshes == 0


@pytest.mark.parametrize(
    ("code", "reason"),
    [(4401, "invalid_token"), (4403, "subject_mismatch"), (4403, "disconnected")],
)
async def test_fatal_close_codes_stop_with_a_clear_exception(
    stack: Stack, code: int, reason: str
) -> None:
    async with stack.client("alice") as alice:
        await stack.close_sockets(code, reason)
        with pytest.raises(AuthenticationFailed) as err:
            await alice.wait_closed()
        assert (err.value.code, err.value.close_code) == (reason, code)
        with pytest.raises(AuthenticationFailed):
            await alice.publish("chat:general", 1)


async def test_logout_everywhere_elsewhere_stops_the_client(stack: Stack) -> None:
    async with stack.client("alice") as alice:
        elsewhere = await stack.login("alice")
        await stack.logout(elsewhere["access_token"], all=True)
        with pytest.raises(AuthenticationFailed) as err:
            async with asyncio.timeout(3):
                async for _ in alice.messages():
                    pass
        assert (err.value.code, err.value.close_code) == ("session_revoked", 4403)


async def test_chat_cli_publishes_typed_lines_and_prints_messages(stack: Stack) -> None:
    from realtime_gateway_client.chat import chat

    alice_id = stack.users["alice"]
    printed: list[str] = []
    typed: asyncio.Queue[str | None] = asyncio.Queue()

    async def lines() -> Any:
        while (line := await typed.get()) is not None:
            yield line

    async with stack.client("alice") as alice, stack.client("bob") as bob:
        alice_chat = asyncio.ensure_future(chat(alice, "chat:general", lines(), printed.append))
        bob_printed: list[str] = []
        bob_chat = asyncio.ensure_future(chat(bob, "chat:general", _never(), bob_printed.append))
        await wait_until(lambda: "chat:general" in bob.channels)
        await wait_until(lambda: f"user:{alice_id}" in alice.channels)
        await typed.put("hello bob\n")
        await wait_until(lambda: bool(bob_printed) and bool(printed))
        assert bob_printed == ["[chat:general] alice: hello bob"]
        response = await stack.ws.post(
            "/v1/publish",
            json={"channel": f"user:{alice_id}", "data": {"text": "direct"}},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        assert response.status == 202
        await wait_until(lambda: len(printed) == 2)
        assert printed == [
            "[chat:general] alice: hello bob",
            f"[user:{alice_id}] server: direct",
        ]
        await typed.put(None)
        await asyncio.wait_for(alice_chat, 3)
        bob_chat.cancel()


async def _never() -> Any:
    await asyncio.Event().wait()
    yield ""


async def test_recovers_what_was_published_during_a_refresh_then_reconnect(stack: Stack) -> None:
    events: list[dict[str, Any]] = []
    async with GatewayClient(
        stack.auth_url, stack.ws_url, "alice", PASSWORD, on_event=events.append
    ) as alice:
        await alice.subscribe("chat:general")
        await publish_from_server(stack, 0)
        assert (await next_message(alice))["offset"] == 1
        await stack.close_sockets(4401, "token_expired")
        for n in range(1, 4):
            await publish_from_server(stack, n)
        received = [await next_message(alice) for _ in range(3)]
        assert [(m["offset"], m["data"]) for m in received] == [(2, 1), (3, 2), (4, 3)]
        assert (alice.connects, alice.refreshes) == (2, 1)
        assert events == [
            {"type": "recovery", "channel": "chat:general", "recovered": True, "count": 3}
        ]
        assert alice.position("chat:general") == {"offset": 4, "epoch": received[0]["epoch"]}


async def test_an_unrecoverable_gap_is_an_event_and_history_and_presence_answer(
    stack: Stack,
) -> None:
    events: list[dict[str, Any]] = []
    async with GatewayClient(
        stack.auth_url, stack.ws_url, "alice", PASSWORD, on_event=events.append
    ) as alice:
        await alice.subscribe("chat:general", presence_events=True)
        await wait_until(lambda: len(events) == 1)
        assert events[0]["type"] == "join"
        alice._positions["chat:general"]["epoch"] = "lost"  # as if the server lost its history
        await stack.close_sockets(1001, "going_away")
        await wait_until(lambda: len(events) == 3)
        assert events[1:] == [
            {"type": "recovery", "channel": "chat:general", "recovered": False, "count": 0},
            {"type": "join", "channel": "chat:general", "user": events[0]["user"]},
        ]
        await publish_from_server(stack, "x")
        history = await alice.history("chat:general", limit=1)
        assert [p["data"] for p in history["publications"]] == ["x"]
        members = await alice.presence("chat:general")
        assert members == [{"user": events[0]["user"], "connections": 1}]


async def publish_from_server(stack: Stack, data: Any) -> None:
    resp = await stack.ws.post(
        "/v1/publish",
        json={"channel": "chat:general", "data": data},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert resp.status == 202


async def test_the_password_is_forgotten_once_logged_in(stack: Stack) -> None:
    async with stack.client("alice") as alice:
        held = [value for value in vars(alice).values() if isinstance(value, str)]
        assert PASSWORD not in held
        assert alice._tokens is not None and alice._tokens.access_token not in repr(alice._tokens)
        with pytest.raises(ClientError, match="already called"):
            await alice.start()


async def test_a_full_message_queue_drops_the_socket_not_the_messages(stack: Stack) -> None:
    """Nobody reads messages() while 40 messages of ~300 bytes arrive; the queue holds 4 KiB.
    The client disconnects rather than grow or drop, and once read it reconnects and recovers
    the rest from history: every message once, in order."""
    states: list[tuple[str, str]] = []
    client = GatewayClient(
        stack.auth_url,
        stack.ws_url,
        "alice",
        PASSWORD,
        backoff_base=0.05,
        backoff_cap=0.2,
        max_queued_bytes=4096,
        on_state=lambda state, detail: states.append((state, detail)),
    )
    async with client as alice, stack.client("bob") as bob:
        await alice.subscribe("chat:flood")
        for n in range(40):
            await bob.publish("chat:flood", {"n": n, "pad": "x" * 250})
        await wait_until(lambda: ("disconnected", "message_queue_full") in states)
        assert alice._queued <= 4096
        got: list[int] = []
        async with asyncio.timeout(10):
            async for message in alice.messages():
                got.append(message["data"]["n"])
                if len(got) == 40:
                    break
        assert got == list(range(40))
        assert alice.connects >= 2


async def test_a_reconnect_resubscribes_more_channels_than_the_rate_burst_losing_nothing(
    stack: Stack,
) -> None:
    """55 channels against the gateway's default budget (20 frames/s beyond a burst of 40),
    told in ``auth_success``: the client paces its subscribes and resubscriptions rather than
    sending them at once. Before, the 15 past the burst were dropped as ``rate_limited``: their
    channels lost without a word (past 60 the socket closed 4429, again on every reconnect)."""
    channels = [f"chat:many-{n:02}" for n in range(55)]
    async with stack.client("alice") as alice:
        for channel in channels:
            await alice.subscribe(channel)
        await stack.close_sockets(1012, "restarting")
        for channel in channels:
            resp = await stack.ws.post(
                "/v1/publish",
                json={"channel": channel, "data": channel},
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
            assert resp.status == 202
        async with asyncio.timeout(15):
            received = [(await next_message(alice))["data"] for _ in channels]
        assert sorted(received) == channels
        assert alice.connects == 2
        assert alice.channels == set(channels)


async def test_a_publish_over_the_gateways_message_limit_is_refused_unsent(
    make_stack: MakeStack,
) -> None:
    """The gateway closes a message over ``WS_MAX_MESSAGE_BYTES`` 1009, whose action is stop: a
    user pasting a long text stopped the client for good, every subscription with it. The limit
    is in ``auth_success``'s ``limits`` now, and a request over it raises unsent."""
    stack = await make_stack(ws={"max_message_bytes": 16384})
    await stack.register("alice", "bob")
    async with stack.client("alice") as alice, stack.client("bob") as bob:
        await bob.subscribe("chat:general")
        with pytest.raises(ValueError, match="over the gateway's max_message_bytes"):
            await alice.publish("chat:general", {"text": "x" * 16384})
        await alice.publish("chat:general", {"text": "é" * 2000})  # 12,000 bytes escaped: taken
        message = await next_message(bob)
        assert message["data"] == {"text": "é" * 2000}
        assert alice.connects == 1


async def test_the_chat_says_a_line_over_the_message_limit_was_not_sent_and_goes_on(
    make_stack: MakeStack,
) -> None:
    """The refusal is a ``ValueError``: the chat ended on it."""
    from realtime_gateway_client.chat import chat

    stack = await make_stack(ws={"max_message_bytes": 16384})
    await stack.register("alice")
    printed: list[str] = []
    typed: asyncio.Queue[str | None] = asyncio.Queue()

    async def lines() -> Any:
        while (line := await typed.get()) is not None:
            yield line

    async with stack.client("alice") as alice:
        alice_chat = asyncio.ensure_future(chat(alice, "chat:general", lines(), printed.append))
        await wait_until(lambda: "chat:general" in alice.channels)
        await typed.put("x" * 17000 + "\n")
        await wait_until(lambda: bool(printed))
        assert printed[0].startswith("* not sent: ") and "max_message_bytes" in printed[0]
        await typed.put("short\n")
        await wait_until(lambda: len(printed) == 2)
        assert printed[1] == "[chat:general] alice: short"
        assert not alice_chat.done()
        await typed.put(None)
        await asyncio.wait_for(alice_chat, 3)
