"""The Python client against a hostile gateway: a real aiohttp server on loopback that says what
ws_service never would (frames that break the protocol, closes in a loop, silence). Each misdeed
must end in a reconnect with backoff or a clear ``ClientError``: never a dead client that says
nothing, never a hot loop."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from realtime_gateway_client import (
    AuthenticationFailed,
    ClientError,
    ConnectionLost,
    FrameTooLarge,
    GatewayClient,
    RequestFailed,
    RequestTimeout,
    ServerProtocolError,
    Unreachable,
)
from tests.integration.ws.harness import wait_until
from tests.services import free_port

Script = Callable[["HostileGateway", web.WebSocketResponse], Awaitable[None]]


class HostileGateway:
    """auth_service's login and refresh, and a socket that plays ``script`` on every connection."""

    def __init__(self, script: Script, *, autoping: bool = True) -> None:
        self.script = script
        self.autoping = autoping
        self.port = free_port()
        self.connects = 0
        self.refreshes = 0
        self.received: list[dict[str, Any]] = []
        self.close_codes: list[int | None] = []
        self.held = 0
        """The expires_at of the last auth_success sent."""
        self.token_gate: asyncio.Event | None = None
        self.token_asked: list[float] = []
        """``time.monotonic()`` of every refresh asked for."""
        self.token_refusals: list[web.Response] = []
        """Answers to the next refreshes, before any token."""

    @property
    def auth_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/login", self.login)
        app.router.add_post("/v1/token", self.token)
        app.router.add_get("/ws", self.socket)
        return app

    async def login(self, request: web.Request) -> web.Response:
        return web.json_response(tokens(0))

    async def token(self, request: web.Request) -> web.Response:
        self.token_asked.append(time.monotonic())
        if self.token_refusals:
            return self.token_refusals.pop(0)
        if self.token_gate is not None:  # a slow auth_service: answers once the test says
            await self.token_gate.wait()
        self.refreshes += 1
        return web.json_response(tokens(self.refreshes))

    async def socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=self.autoping, max_msg_size=0)
        await ws.prepare(request)
        self.connects += 1
        await self.script(self, ws)
        if not ws.closed:
            await ws.close()
        self.close_codes.append(ws.close_code)
        return ws

    async def receive(self, ws: web.WebSocketResponse) -> dict[str, Any] | None:
        """The client's next frame, or None once it closed."""
        msg = await ws.receive()
        if msg.type is not WSMsgType.TEXT:
            return None
        frame: dict[str, Any] = json.loads(msg.data)
        self.received.append(frame)
        return frame

    async def authenticate(self, ws: web.WebSocketResponse) -> None:
        frame = await self.receive(ws)
        assert frame is not None and frame["type"] == "auth"
        self.held = int(time.time()) + 60
        await ws.send_json({**AUTH_SUCCESS, "expires_at": self.held})

    async def drain(self, ws: web.WebSocketResponse) -> None:
        """Read (and answer nothing) until the client closes."""
        while await self.receive(ws) is not None:
            pass


def tokens(n: int) -> dict[str, Any]:
    return {"access_token": f"access-{n}", "refresh_token": f"refresh-{n}", "expires_in": 60}


AUTH_SUCCESS = {
    "type": "auth_success",
    "user": {"id": "u1", "username": "alice"},
    "session": "s1",
    "expires_in": 60,
    "expires_at": int(time.time()) + 60,
}

MESSAGE = {
    "type": "message",
    "channel": "chat:x",
    "data": "after",
    "from": "u2",
    "from_username": "bob",
    "ts": 1,
}

Serve = Callable[..., Awaitable[HostileGateway]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(script: Script, **kwargs: Any) -> HostileGateway:
        gateway = HostileGateway(script, **kwargs)
        runner = web.AppRunner(gateway.app(), shutdown_timeout=1)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", gateway.port).start()
        return gateway

    yield start
    for runner in runners:
        await runner.cleanup()


def client(
    gateway: HostileGateway, states: list[tuple[str, str]] | None = None, **kwargs: Any
) -> GatewayClient:
    listen = None if states is None else (lambda state, detail: states.append((state, detail)))
    options: dict[str, Any] = {"backoff_base": 0.05, "backoff_cap": 0.5, **kwargs}
    return GatewayClient(
        gateway.auth_url, gateway.ws_url, "alice", "pw", on_state=listen, **options
    )


async def next_message(client: GatewayClient) -> dict[str, Any]:
    async with asyncio.timeout(5):
        async for message in client.messages():
            return message
    raise AssertionError("the message stream ended")


BROKEN_FRAMES = {
    "not json": ("{not json", 1007),
    "null": ("null", 1007),
    "an array": ("[1,2,3]", 1007),
    "nested 200000 deep": ("[" * 200_000 + "]" * 200_000, 1007),
    "publications not a list": (
        '{"type":"subscribed","channel":"c:x","publications":5,"recovered":true}',
        1002,
    ),
    "a message without a channel": ('{"type":"message","data":1}', 1002),
}


@pytest.mark.parametrize("case", list(BROKEN_FRAMES))
async def test_a_frame_that_breaks_the_protocol_closes_the_socket_and_reconnects(
    serve: Serve, case: str
) -> None:
    """The runner used to die on it (JSONDecodeError, TypeError, RecursionError) and say nothing:
    no state, messages() ended as if closed, requests only timed out."""
    text, code = BROKEN_FRAMES[case]

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.authenticate(ws)
        await ws.send_str(text if gateway.connects == 1 else json.dumps(MESSAGE))
        await gateway.drain(ws)

    gateway = await serve(script)
    states: list[tuple[str, str]] = []
    async with client(gateway, states) as alice:
        assert (await next_message(alice))["data"] == "after"
        assert alice.connects == 2
    assert gateway.close_codes[0] == code
    assert states[1][0] == "disconnected" and states[1][1].startswith(str(code))
    assert states[2][0] == "reconnecting"


async def test_a_broken_answer_to_the_first_auth_fails_start(serve: Serve) -> None:
    """Before the first connection nothing is retried: the URL does not lead to the gateway."""

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.receive(ws)
        await ws.send_str("<html>")
        await gateway.drain(ws)

    gateway = await serve(script)
    with pytest.raises(ServerProtocolError) as err:
        async with asyncio.timeout(5), client(gateway):
            pass
    assert err.value.close_code == 1007
    assert gateway.connects == 1


async def test_a_refused_token_before_any_success_backs_off_and_refreshes_once_per_socket(
    serve: Serve,
) -> None:
    """auth_error token_expired (retry) then close 4401 token_expired used to reconnect every
    53 ms with two refreshes each time, and start() never returned."""

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.receive(ws)
        error = {"type": "auth_error", "code": "token_expired", "message": "", "retry": True}
        await ws.send_json(error)
        await gateway.receive(ws)
        await ws.send_json(error)
        await gateway.receive(ws)
        await ws.close(code=4401, message=b"token_expired")

    gateway = await serve(script)
    alice = client(gateway, backoff_base=0.1, backoff_cap=10)
    starting = asyncio.ensure_future(alice.start())
    await asyncio.sleep(2)
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert gateway.connects < 12, gateway.connects
    assert gateway.refreshes <= 2 * gateway.connects


@pytest.mark.parametrize(
    ("code", "reason"), [(1011, b"internal_error"), (1000, b""), (4401, b"token_expired")]
)
async def test_a_server_that_closes_after_each_auth_success_meets_a_growing_backoff(
    serve: Serve, code: int, reason: bytes
) -> None:
    """The backoff started again at every auth_success: about 4 reconnects a second forever
    (1011, 1000), and with 4401 token_expired 4434 connects and refreshes in 5 s."""

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.authenticate(ws)
        await ws.close(code=code, message=reason)

    gateway = await serve(script)
    async with client(gateway, backoff_base=0.1, backoff_cap=10):
        await asyncio.sleep(2)
    assert gateway.connects < 12, gateway.connects
    assert gateway.refreshes <= gateway.connects


async def test_the_backoff_starts_again_after_a_connection_that_stayed_up(serve: Serve) -> None:
    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.authenticate(ws)
        if gateway.connects >= 6:  # held open: the count below is read while it stands still
            await gateway.drain(ws)
            return
        if gateway.connects in (4, 5):
            await asyncio.sleep(0.3)
        await ws.close(code=1011, message=b"internal_error")

    gateway = await serve(script)
    alice = client(gateway, backoff_base=0.1, backoff_cap=10, stable_after=0.2)
    async with alice:
        await wait_until(lambda: gateway.connects >= 6, wait=10)
        assert alice._attempt <= 2


async def test_a_server_that_never_answers_auth_fails_start_within_the_connect_timeout(
    serve: Serve,
) -> None:
    """start() used to wait forever for an answer to auth."""

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.drain(ws)

    gateway = await serve(script)
    with pytest.raises(Unreachable) as err:
        async with asyncio.timeout(5), client(gateway, connect_timeout=0.5):
            pass
    assert (
        str(err.value)
        == f"cannot reach the gateway at {gateway.ws_url} (no answer to auth within 0.5 s)"
    )


async def test_a_refusal_without_a_close_is_taken_as_the_close_it_names(serve: Serve) -> None:
    """auth_error with retry false and no close used to hang start() forever."""

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.receive(ws)
        await ws.send_json(
            {"type": "auth_error", "code": "invalid_token", "message": "", "retry": False}
        )
        await gateway.drain(ws)

    gateway = await serve(script)
    with pytest.raises(AuthenticationFailed) as err:
        async with asyncio.timeout(5), client(gateway, connect_timeout=0.5):
            pass
    assert (err.value.code, err.value.close_code) == ("invalid_token", 4401)


async def test_frames_after_a_refusal_do_not_put_off_its_close(serve: Serve) -> None:
    """Each frame used to start the wait for the close again."""

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.receive(ws)
        await ws.send_json(
            {"type": "auth_error", "code": "invalid_token", "message": "", "retry": False}
        )
        for _ in range(100):
            await asyncio.sleep(0.2)
            await ws.send_json({"type": "pong"})

    gateway = await serve(script)
    with pytest.raises(AuthenticationFailed):
        async with asyncio.timeout(5), client(gateway, connect_timeout=0.5):
            pass


async def test_a_silent_peer_is_found_by_the_heartbeat_and_left_for_a_new_connection(
    serve: Serve,
) -> None:
    """With no heartbeat a frozen server (SIGSTOP) kept the client connected forever."""

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.authenticate(ws)
        if gateway.connects == 1:
            await asyncio.sleep(30)  # reads nothing, so answers no ping: a frozen process
        await ws.send_json(MESSAGE)
        await gateway.drain(ws)

    gateway = await serve(script)
    states: list[tuple[str, str]] = []
    async with client(gateway, states, heartbeat=0.2) as alice:
        assert (await next_message(alice))["data"] == "after"
        assert alice.connects == 2
    assert states[1][0] == "disconnected" and "PONG" in states[1][1]


async def test_a_request_on_a_socket_reset_under_it_is_connection_lost(serve: Serve) -> None:
    """A publish written while the reset was not yet heard raised aiohttp's
    ClientConnectionResetError, and subscribe(), which retries only ConnectionLost, gave up."""

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.authenticate(ws)
        for _ in range(20):
            frame = await gateway.receive(ws)
            assert frame is not None
            await ws.send_json({"type": "published", "id": frame["id"], "channel": "chat:x"})
        request = ws._req
        assert request is not None and request.transport is not None
        request.transport.abort()

    gateway = await serve(script)
    failures: list[BaseException] = []
    async with client(gateway) as alice:

        async def publish() -> None:
            for n in range(40):
                await asyncio.sleep(0)
                try:
                    await alice.publish("chat:x", n)
                except Exception as exc:
                    failures.append(exc)

        await asyncio.gather(*(publish() for _ in range(5)))
    assert failures
    assert {type(exc) for exc in failures} == {ConnectionLost}


async def test_a_request_without_a_reply_times_out_as_a_client_error(serve: Serve) -> None:
    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.authenticate(ws)
        await gateway.drain(ws)

    gateway = await serve(script)
    async with client(gateway, request_timeout=0.2) as alice:
        with pytest.raises(RequestTimeout, match=r"no reply within 0\.2 s") as err:
            await alice.publish("chat:x", 1)
    assert isinstance(err.value, ClientError) and isinstance(err.value, TimeoutError)


def big_message(size: int) -> dict[str, Any]:
    return {**MESSAGE, "data": "x" * size}


async def test_a_frame_over_4_mib_is_delivered(serve: Serve) -> None:
    """aiohttp's default bound (4 MiB) made the client close 1009 and stop as a ProtocolViolation,
    blaming itself for what the server may lawfully send."""

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.authenticate(ws)
        await ws.send_json(big_message(5 * 1024 * 1024))
        await gateway.drain(ws)

    gateway = await serve(script)
    async with client(gateway, max_queued_bytes=64 * 1024 * 1024) as alice:
        assert len((await next_message(alice))["data"]) == 5 * 1024 * 1024


async def test_a_frame_over_max_frame_bytes_stops_the_client_saying_so(serve: Serve) -> None:
    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.authenticate(ws)
        await gateway.receive(ws)
        await ws.send_json(big_message(2 * 1024 * 1024))
        await gateway.drain(ws)

    gateway = await serve(script)
    states: list[tuple[str, str]] = []
    async with client(gateway, states, max_frame_bytes=1024 * 1024) as alice:
        with pytest.raises(FrameTooLarge):
            await alice.subscribe("chat:x")
        with pytest.raises(FrameTooLarge) as err:
            async with asyncio.timeout(5):
                await alice.wait_closed()
    assert err.value.limit == 1024 * 1024
    assert states[-1] == ("stopped", str(err.value))
    assert gateway.close_codes == [1009]


@pytest.mark.parametrize("extra", [0, 1])
async def test_max_frame_bytes_is_the_largest_frame_taken(serve: Serve, extra: int) -> None:
    """aiohttp refuses a message of ``max_msg_size`` bytes and more: a frame of exactly
    ``max_frame_bytes`` stopped the client as ``FrameTooLarge`` ("larger than max_frame_bytes"),
    one byte short of the bound the README gives."""
    frame = big_message(64 * 1024)
    size = len(json.dumps(frame))

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.authenticate(ws)
        await ws.send_str(json.dumps(frame))
        await gateway.drain(ws)

    gateway = await serve(script)
    if extra:  # may stop start() itself: the frame comes right behind auth_success
        with pytest.raises(FrameTooLarge):
            async with client(gateway, max_frame_bytes=size - extra) as alice:
                await next_message(alice)
        return
    async with client(gateway, max_frame_bytes=size) as alice:
        assert (await next_message(alice))["data"] == frame["data"]
        assert alice.connects == 1


async def test_a_repeated_expiry_warning_earns_one_renewal(serve: Serve) -> None:
    """Every token_expiring made a REST refresh, each rotating the refresh token: 300 frames 10 ms
    apart made 300 refreshes."""
    warning = {"type": "token_expiring", "expires_in": 30, "expires_at": int(time.time()) + 30}

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.authenticate(ws)
        for _ in range(100):
            await ws.send_json(warning)
            await asyncio.sleep(0.005)
        await gateway.drain(ws)

    gateway = await serve(script)
    async with client(gateway) as alice:
        await wait_until(lambda: len(gateway.received) >= 2)
        await asyncio.sleep(0.8)
        assert (alice.refreshes, gateway.refreshes) == (1, 1)
    renewals = [frame for frame in gateway.received if frame.get("id") == "renew"]
    assert [frame["token"] for frame in renewals] == ["access-1"]


async def test_a_warning_for_every_new_expiry_does_not_make_a_refresh_storm(serve: Serve) -> None:
    """A gateway that warned of each new expiry as it confirmed it made 232 refreshes in 5 s
    (each rotating the refresh token); renewals start MIN_RENEWAL_INTERVAL (2 s) apart."""

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.authenticate(ws)
        held = gateway.held

        async def confirm() -> None:
            nonlocal held
            while (frame := await gateway.receive(ws)) is not None:
                if frame["type"] == "auth":
                    held += 1
                    renewed = {**AUTH_SUCCESS, "expires_at": held, "renewed": True, "id": "renew"}
                    await ws.send_json(renewed)

        confirming = asyncio.create_task(confirm())
        for _ in range(300):
            await ws.send_json({"type": "token_expiring", "expires_in": 30, "expires_at": held})
            await asyncio.sleep(0.01)
        await confirming

    gateway = await serve(script)
    async with client(gateway) as alice:
        await wait_until(lambda: gateway.refreshes >= 1)
        await asyncio.sleep(2.6)
        assert gateway.refreshes == 2, gateway.refreshes
        assert alice.refreshes == gateway.refreshes


async def test_a_warning_for_a_later_expiry_than_the_tokens_is_ignored(serve: Serve) -> None:
    """A warning names the expiry of the token the socket holds, or a sooner close (a key
    withdrawal); never a later one."""

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.authenticate(ws)
        later = gateway.held + 1
        await ws.send_json({"type": "token_expiring", "expires_in": 61, "expires_at": later})
        await ws.send_json({"type": "ping", "id": "marker"})
        await gateway.drain(ws)

    gateway = await serve(script)
    async with client(gateway):
        await asyncio.sleep(0.5)
        assert gateway.refreshes == 0


async def test_a_subscribe_reply_never_moves_the_position_back_past_a_delivered_message(
    serve: Serve,
) -> None:
    """The reply and a later message in one read: the message is delivered first, then
    ``subscribe()`` resumes with the reply's older position. Remembering it made the next
    resubscription ask for the message again, delivered twice (an outside probe)."""

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.authenticate(ws)
        frame = await gateway.receive(ws)
        assert frame is not None
        if gateway.connects == 1:
            position = {"offset": 5, "epoch": "e"}
            await ws.send_json({"type": "subscribed", "channel": "chat:x", "id": frame["id"],
                                "position": position})  # fmt: skip
            await ws.send_json({**MESSAGE, "offset": 6, "epoch": "e", "data": 6})
            await asyncio.sleep(0.2)
            await ws.close(code=1012)
            return
        await ws.send_json({"type": "subscribed", "channel": "chat:x", "recovered": True,
                            "publications": [], "position": frame.get("since")})  # fmt: skip
        await gateway.drain(ws)

    gateway = await serve(script)
    async with client(gateway) as alice:
        await alice.subscribe("chat:x")
        assert (await next_message(alice))["data"] == 6
        assert alice.position("chat:x") == {"offset": 6, "epoch": "e"}
        await wait_until(lambda: gateway.connects == 2 and len(gateway.received) >= 4)
    resubscribe = gateway.received[3]
    assert resubscribe["type"] == "subscribe"
    assert resubscribe["since"] == {"offset": 6, "epoch": "e"}


async def test_a_reconnect_that_authenticates_another_user_stops_the_client(
    serve: Serve,
) -> None:
    """The client is one user's: a gateway that answers a reconnect's ``auth`` for someone
    else is not followed (the JavaScript client stops with ``user_changed``; this one took the
    new user and went on publishing as them: an outside probe)."""

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        frame = await gateway.receive(ws)
        assert frame is not None and frame["type"] == "auth"
        user = {"id": "u1", "username": "alice"} if gateway.connects == 1 else {
            "id": "u2", "username": "mallory"}  # fmt: skip
        await ws.send_json({**AUTH_SUCCESS, "user": user, "expires_at": int(time.time()) + 60})
        if gateway.connects == 1:
            await ws.close(code=1012)
            return
        await gateway.drain(ws)

    gateway = await serve(script)
    states: list[tuple[str, str]] = []
    alice = client(gateway, states)
    await alice.start()
    try:
        await wait_until(lambda: gateway.connects == 2 and any(s == "stopped" for s, _ in states))
        assert alice.user == {"id": "u1", "username": "alice"}
        assert next(detail for state, detail in states if state == "stopped").startswith(
            "user_changed"
        )
        with pytest.raises(AuthenticationFailed):
            await alice.publish("chat:x", 1)
    finally:
        await alice.close()


async def test_close_ends_a_refresh_in_flight_and_the_messages_of_a_client_never_started(
    serve: Serve,
) -> None:
    """``close()`` stops everything the client started: a refresh waiting on auth_service went
    on after it (and died later, "Task exception was never retrieved"), and ``messages()`` of a
    client that never started waited for good (an outside probe)."""
    release = asyncio.Event()

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.authenticate(ws)
        await gateway.drain(ws)

    gateway = await serve(script)
    gateway.token_gate = release
    alice = client(gateway)
    await alice.start()
    refreshing = asyncio.create_task(alice.refresh())
    await asyncio.sleep(0.1)
    await asyncio.wait_for(alice.close(), 2)
    with pytest.raises(ConnectionLost, match="closed during the refresh"):
        await asyncio.wait_for(refreshing, 2)
    release.set()

    never = client(gateway)
    await never.close()
    async with asyncio.timeout(2):
        assert [message async for message in never.messages()] == []


async def test_resubscriptions_refused_for_good_are_reported_and_the_rest_asked_again(
    serve: Serve,
) -> None:
    """After a reconnect each channel is asked for again with an id. A refusal for good drops
    the channel and says so (``resubscribe_failed``); one for a passing reason, and one never
    answered (a frame the gateway dropped), are asked again; a late answer to the first ask
    and the answer to the second bring the same missed message, delivered once. Before, the
    resubscriptions had no id: a refused or dropped one was lost without a word."""
    position = {"offset": 1, "epoch": "e"}
    asked: dict[str, list[dict[str, Any]]] = {}

    def subscribed(frame: dict[str, Any], *offsets: int) -> dict[str, Any]:
        publications = [
            {**MESSAGE, "channel": frame["channel"], "offset": n, "epoch": "e", "data": n}
            for n in offsets
        ]
        return {"type": "subscribed", "channel": frame["channel"], "id": frame["id"],
                "recovered": True, "publications": publications,
                "position": {"offset": max(offsets, default=1), "epoch": "e"}}  # fmt: skip

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.authenticate(ws)
        if gateway.connects == 1:
            for _ in range(4):
                frame = await gateway.receive(ws)
                assert frame is not None
                await ws.send_json({"type": "subscribed", "channel": frame["channel"],
                                    "id": frame["id"], "position": position})  # fmt: skip
            await ws.close(code=1012)
            return
        while (frame := await gateway.receive(ws)) is not None:
            channel = frame["channel"]
            asked.setdefault(channel, []).append(frame)
            if channel == "chat:a":
                await ws.send_json({"type": "error", "code": "forbidden", "id": frame["id"],
                                    "message": "not any more"})  # fmt: skip
            elif channel == "chat:b" and len(asked[channel]) == 1:
                await ws.send_json({"type": "error", "code": "proxy_unavailable",
                                    "id": frame["id"], "message": "try again"})  # fmt: skip
            elif channel == "chat:c" and len(asked[channel]) == 1:
                pass  # dropped: never answered
            elif channel == "chat:c":
                await ws.send_json(subscribed(asked[channel][0], 2))  # the late first answer
                await ws.send_json(subscribed(frame, 2))
            else:
                await ws.send_json(subscribed(frame, 2))

    gateway = await serve(script)
    events: list[dict[str, Any]] = []
    async with client(gateway, request_timeout=0.5, on_event=events.append) as alice:
        for channel in ("chat:a", "chat:b", "chat:c", "chat:d"):
            await alice.subscribe(channel)
        received = [await next_message(alice) for _ in range(3)]
        assert sorted((m["channel"], m["offset"]) for m in received) == [
            ("chat:b", 2), ("chat:c", 2), ("chat:d", 2)]  # fmt: skip
        await asyncio.sleep(0.3)
        assert alice._messages.empty(), "a missed message delivered twice"
        assert alice.channels == {"chat:b", "chat:c", "chat:d"}
    assert [len(asked[c]) for c in ("chat:a", "chat:b", "chat:c", "chat:d")] == [1, 2, 2, 1]
    assert all(isinstance(f.get("id"), str) for frames in asked.values() for f in frames)
    assert asked["chat:c"][1]["since"] == position
    refused = [e for e in events if e["type"] == "resubscribe_failed"]
    assert refused == [{"type": "resubscribe_failed", "channel": "chat:a", "code": "forbidden",
                        "message": "not any more"}]  # fmt: skip


async def test_a_refresh_answered_429_with_retry_after_waits_that_long(serve: Serve) -> None:
    """auth_service said "429, Retry-After: 1": the client reconnected after its own backoff
    (50 ms here) with the expired token, which a real gateway answers token_expired, and
    refreshed again at once, as often as the backoff allowed inside the second it was asked to
    wait. Now it neither reconnects nor refreshes before that second is over."""

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        if gateway.connects == 1:
            await gateway.authenticate(ws)
            await ws.close(code=4401, message=b"token_expired")
            return
        await gateway.authenticate(ws)
        await gateway.drain(ws)

    gateway = await serve(script)
    too_many = {"error": "slow_down", "error_description": "too many"}
    gateway.token_refusals.append(
        web.json_response(too_many, status=429, headers={"Retry-After": "1"})
    )
    async with client(gateway, backoff_base=0.05, backoff_cap=5) as alice:
        await wait_until(lambda: alice.refreshes == 1 and gateway.connects == 2, wait=5)
    asked = gateway.token_asked
    assert len(asked) == 2
    assert asked[1] - asked[0] >= 0.95, asked
    assert gateway.connects == 2


async def test_a_first_message_read_with_the_subscribe_reply_is_delivered_once(
    serve: Serve,
) -> None:
    """A channel with nothing kept answers offset 0 of a "none-" epoch; its first message
    starts an epoch of its own and came in the same read. subscribe() took the reply's position
    after that message was delivered, moving the position back to offset 0 (another epoch, so
    "never back within an epoch" did not hold it): the resubscription asked since it and the
    first message was delivered again (an outside probe, against the real gateway too)."""
    first = {**MESSAGE, "channel": "chat:new", "offset": 1, "epoch": "e1", "data": 1}
    asked: list[dict[str, Any]] = []

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.authenticate(ws)
        frame = await gateway.receive(ws)
        assert frame is not None
        if gateway.connects == 1:
            none = {"offset": 0, "epoch": "none-1795966297123"}
            await ws.send_json({"type": "subscribed", "channel": "chat:new", "id": frame["id"],
                                "position": none})  # fmt: skip
            await ws.send_json(first)
            await asyncio.sleep(0.2)
            await ws.close(code=1012)
            return
        asked.append(frame)
        again = [first] if frame.get("since", {}).get("epoch") != "e1" else []
        await ws.send_json({"type": "subscribed", "channel": "chat:new", "id": frame["id"],
                            "recovered": True, "publications": again,
                            "position": {"offset": 1, "epoch": "e1"}})  # fmt: skip
        await gateway.drain(ws)

    gateway = await serve(script)
    async with client(gateway) as alice:
        await alice.subscribe("chat:new")
        assert alice.position("chat:new") == {"offset": 1, "epoch": "e1"}
        assert (await next_message(alice))["data"] == 1
        await wait_until(lambda: bool(asked))
        await asyncio.sleep(0.2)
        assert alice._messages.empty(), "the first message delivered twice"
    assert asked[0]["since"] == {"offset": 1, "epoch": "e1"}


async def test_close_ends_the_requests_in_flight_at_once(serve: Serve) -> None:
    """A publish the gateway never answered ran on after close() until request_timeout, then
    raised RequestTimeout ("it may yet be done"); the JavaScript client rejected it at close()."""

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.authenticate(ws)
        await gateway.drain(ws)

    gateway = await serve(script)
    alice = client(gateway, request_timeout=10)
    await alice.start()
    publishing = asyncio.ensure_future(alice.publish("chat:x", 1))
    await wait_until(lambda: any(f.get("type") == "publish" for f in gateway.received))
    started = time.monotonic()
    await alice.close()
    with pytest.raises(ConnectionLost, match="close"):
        await publishing
    assert time.monotonic() - started < 2


async def test_requests_waiting_for_the_budget_when_the_socket_closes_fail_quietly(
    serve: Serve,
) -> None:
    """Requests waiting in the pacer when the socket closed each raised ConnectionLost, but the
    futures the close had failed were never awaited: asyncio logged "Future exception was never
    retrieved" for each (an outside probe)."""
    unretrieved: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: unretrieved.append(context["message"]))

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.receive(ws)
        limits = {"rate_per_second": 1, "rate_burst": 2, "max_subscriptions": 100}
        await ws.send_json({**AUTH_SUCCESS, "expires_at": int(time.time()) + 60, "limits": limits})
        if gateway.connects == 1:
            await gateway.receive(ws)  # the first publish; the rest wait for the budget
            await asyncio.sleep(0.3)
            await ws.close(code=1012)
            return
        await gateway.drain(ws)

    gateway = await serve(script)
    try:
        async with client(gateway) as alice:
            outcomes = await asyncio.gather(
                *(alice.publish("chat:x", n) for n in range(4)), return_exceptions=True
            )
            assert all(isinstance(outcome, ConnectionLost) for outcome in outcomes), outcomes
        del outcomes
        gc.collect()
        await asyncio.sleep(0.05)
    finally:
        loop.set_exception_handler(None)
    assert not [m for m in unretrieved if "never retrieved" in m], unretrieved


async def test_a_link_that_flaps_faster_than_a_resubscription_confirms_every_channel_in_turn(
    serve: Serve,
) -> None:
    """Each socket lived long enough for two resubscriptions to be answered. In a fixed (sorted)
    order the same two channels were confirmed every time and the others never, while the client
    said it held them all (an outside probe, 70 channels over a link cut every 0.4-1.5 s). The
    least recently confirmed now go first."""
    channels = [f"chat:{name}" for name in "abcdef"]
    answered: list[set[str]] = []

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.authenticate(ws)
        if gateway.connects == 1:
            for _ in channels:
                frame = await gateway.receive(ws)
                assert frame is not None
                await ws.send_json({"type": "subscribed", "channel": frame["channel"],
                                    "id": frame["id"]})  # fmt: skip
            await ws.close(code=1012)
            return
        confirmed: set[str] = set()
        answered.append(confirmed)
        while (frame := await gateway.receive(ws)) is not None:
            if len(confirmed) < 2 or gateway.connects > 4:
                confirmed.add(frame["channel"])
                await ws.send_json({"type": "subscribed", "channel": frame["channel"],
                                    "id": frame["id"]})  # fmt: skip
            if len(confirmed) == 2 and gateway.connects <= 4:
                await asyncio.sleep(0.05)
                await ws.close(code=1012)
                return

    gateway = await serve(script)
    async with client(gateway) as alice:
        for channel in channels:
            await alice.subscribe(channel)
        await wait_until(lambda: len(answered) >= 3 and len(answered[2]) == 2, wait=10)
    assert set().union(*answered[:3]) == set(channels), answered


NOT_WIRE_JSON = {
    "NaN": float("nan"),
    "infinity": float("inf"),
    "an integer beyond a double": 10**400,
    "a lone surrogate": "\ud83d",
    "nested 40 deep": json.loads("[" * 40 + "]" * 40),
    "NaN in a tuple": (float("nan"),),
    "a lone surrogate in a tuple": ("\ud83d",),
}


@pytest.mark.parametrize("case", list(NOT_WIRE_JSON))
async def test_data_the_gateway_cannot_read_is_refused_before_it_is_sent(
    serve: Serve, case: str
) -> None:
    """json.dumps wrote NaN (and the rest) into the frame: the gateway refused it as bad_request
    with no id, so the publish waited request_timeout, and the fifth such publish closed the socket
    4400, which stopped the client for good (an outside probe, on the real stack)."""

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.authenticate(ws)
        while (frame := await gateway.receive(ws)) is not None:
            await ws.send_json({"type": "published", "id": frame["id"], "channel": "chat:x"})

    gateway = await serve(script)
    async with client(gateway, request_timeout=5) as alice:
        for _ in range(6):
            async with asyncio.timeout(1):
                with pytest.raises(ValueError, match="not sent"):
                    await alice.publish("chat:x", {"value": NOT_WIRE_JSON[case]})
        await alice.publish("chat:x", {"value": "fine"})
    assert [frame["type"] for frame in gateway.received] == ["auth", "publish"]


async def test_data_json_dumps_writes_as_the_gateway_reads_it_is_sent(serve: Serve) -> None:
    """wire_json.check walked the Python value, not the JSON sent: ``{1: "a"}`` (json.dumps
    writes ``{"1": "a"}``) raised AttributeError unsent, where it was published before, and a
    tuple's NaN passed unchecked (the gateway refused it: the publish waited request_timeout)."""

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.authenticate(ws)
        while (frame := await gateway.receive(ws)) is not None:
            await ws.send_json({"type": "published", "id": frame["id"], "channel": "chat:x"})

    gateway = await serve(script)
    async with client(gateway, request_timeout=5) as alice:
        async with asyncio.timeout(1):
            await alice.publish("chat:x", {1: "one", 2.5: [("a", 2)]})
    assert gateway.received[-1]["data"] == {"1": "one", "2.5": [["a", 2]]}


async def test_a_frame_of_another_type_before_the_answer_to_auth_is_passed_over(
    serve: Serve,
) -> None:
    """A pong before auth_success was taken as a refusal: the client waited connect_timeout for a
    close, then stopped for good with AuthenticationFailed('None') (an outside probe)."""

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.receive(ws)
        await ws.send_json({"type": "pong"})
        await ws.send_json({**AUTH_SUCCESS, "expires_at": int(time.time()) + 60})
        await gateway.drain(ws)

    gateway = await serve(script)
    async with asyncio.timeout(1), client(gateway, connect_timeout=5) as alice:
        assert alice.connects == 1


async def test_every_messages_iterator_ends_when_the_client_stops(serve: Serve) -> None:
    """The client's one end-of-stream marker went to the first iterator: a second one, beside it
    or called later, waited forever (an outside probe), and one after a stop never raised why."""

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.authenticate(ws)
        await gateway.drain(ws)

    async def drain(alice: GatewayClient) -> None:
        async for _ in alice.messages():
            pass

    gateway = await serve(script)
    alice = client(gateway)
    await alice.start()
    beside = [asyncio.create_task(drain(alice)) for _ in range(2)]
    await asyncio.sleep(0.05)
    await alice.close()
    async with asyncio.timeout(2):
        await asyncio.gather(*beside, drain(alice))

    async def refuse(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.authenticate(ws)
        await asyncio.sleep(0.2)
        await ws.close(code=4403, message=b"session_revoked")

    gateway = await serve(refuse)
    async with client(gateway) as bob:
        for _ in range(2):
            async with asyncio.timeout(2):
                with pytest.raises(AuthenticationFailed):
                    await drain(bob)


@pytest.mark.parametrize(
    "arguments",
    [
        {"limit": -1},
        {"limit": 2**63},
        {"limit": True},
        {"limit": 2.0},
        {"since": {"offset": 1}},
        {"since": {"offset": -1, "epoch": "e"}},
        {"since": {"offset": 1, "epoch": ""}},
        {"since": {"offset": 1, "epoch": "e" * 65}},
    ],
)
async def test_a_history_argument_the_gateway_refuses_is_not_sent(
    serve: Serve, arguments: dict[str, Any]
) -> None:
    """Each was a bad_request, a protocol violation: the fifth closed the socket 4400 and stopped
    the client for good, every subscription with it (an outside probe on the real stack)."""

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.authenticate(ws)
        await gateway.drain(ws)

    gateway = await serve(script)
    async with client(gateway) as alice:
        for _ in range(6):
            with pytest.raises(ValueError, match="not sent"):
                await alice.history("chat:x", **arguments)
    assert [frame["type"] for frame in gateway.received] == ["auth"]


async def test_the_gateways_unsubscribe_is_heard_and_leaving_a_channel_it_dropped_succeeds(
    serve: Serve,
) -> None:
    """The gateway unsubscribed the socket (the app's backend, or a renewal whose token may not
    read the channel): the client dropped the channel without a word, so the app's view of it
    went silent. And ``unsubscribe()`` of a channel the gateway no longer had (dropped so, or not
    resubscribed by a socket that reconnected meanwhile) raised ``not_subscribed``, although the
    channel was left, as asked (an outside probe)."""

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        await gateway.authenticate(ws)
        while (frame := await gateway.receive(ws)) is not None:
            if frame["type"] == "subscribe":
                await ws.send_json({"type": "subscribed", "channel": frame["channel"],
                                    "id": frame["id"], "recovered": True, "publications": [],
                                    "position": {"offset": 0, "epoch": "e"}})  # fmt: skip
                if frame["channel"] == "chat:a":
                    await ws.send_json({"type": "unsubscribed", "channel": frame["channel"],
                                        "reason": "server"})  # fmt: skip
            elif frame["type"] == "unsubscribe":
                await ws.send_json({"type": "error", "code": "not_subscribed",
                                    "id": frame["id"], "message": "not subscribed"})  # fmt: skip

    gateway = await serve(script)
    events: list[dict[str, Any]] = []
    async with client(gateway, on_event=events.append) as alice:
        await alice.subscribe("chat:a")
        await wait_until(lambda: events != [])
        assert events == [{"type": "unsubscribed", "channel": "chat:a", "reason": "server"}]
        assert alice.channels == set()
        with pytest.raises(RequestFailed, match="not_subscribed"):
            await alice.unsubscribe("chat:a")  # not this client's either: said so
        await alice.subscribe("chat:b")
        await alice.unsubscribe("chat:b")  # the gateway says not_subscribed: left all the same
        assert alice.channels == set()


async def test_a_channel_left_right_after_subscribing_stays_left_across_a_reconnect(
    serve: Serve,
) -> None:
    """subscribe() and unsubscribe() at once: the gateway answered subscribed, then
    unsubscribed, and left the channel; the client recorded it on the subscribe's reply, kept it,
    and every reconnect subscribed it again (an outside probe)."""
    held: dict[int, set[str]] = {}

    async def script(gateway: HostileGateway, ws: web.WebSocketResponse) -> None:
        n = gateway.connects
        mine = held.setdefault(n, set())
        await gateway.authenticate(ws)
        while (frame := await gateway.receive(ws)) is not None:
            reply: dict[str, Any] = {"id": frame["id"], "channel": frame.get("channel")}
            if frame["type"] == "subscribe":
                mine.add(frame["channel"])
                reply |= {"type": "subscribed", "position": {"offset": 0, "epoch": "e"}}
            elif frame["type"] == "unsubscribe" and frame["channel"] in mine:
                mine.discard(frame["channel"])
                reply |= {"type": "unsubscribed"}
            else:
                reply |= {"type": "error", "code": "not_subscribed", "message": "no"}
            await ws.send_json(reply)
            if frame.get("channel") == "chat:last" and n == 1:
                break  # the socket drops: the client reconnects

    gateway = await serve(script)
    async with client(gateway) as alice:
        await asyncio.gather(alice.subscribe("chat:a"), alice.unsubscribe("chat:a"))
        assert alice.channels == set()
        await alice.subscribe("chat:last")
        await wait_until(lambda: held.get(2) == {"chat:last"})
        assert alice.channels == {"chat:last"}
