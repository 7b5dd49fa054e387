"""The WebSocket protocol as data (realtime_gateway_protocol/schema.json) and a hypothesis state machine that
drives the real gateway (the app on aiohttp's test server, a real JWKS server, real RSA tokens)
through auth, renewal, subscribe, publish, garbage, binary and oversized frames.

Invariants after every step: every text frame the server sends is strict JSON valid against
``$defs/server_frame``; every close is a documented code from protocol/realtime_gateway_protocol/close_codes.py and never
1011; a socket the server did not close still answers.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from jsonschema import Draft202012Validator

from realtime_gateway_protocol.close_codes import CloseCode, Disconnect
from realtime_gateway_protocol.frames import schema
from realtime_gateway_protocol.wire_json import loads
from shared.bus import InProcessBus
from tests.integration.ws.harness import AUDIENCE, ISSUER, KeySet, Tokens
from ws_service.app import create_app
from ws_service.domain import protocol
from ws_service.domain.history import HistoryPage, Position, with_position
from ws_service.domain.limits import Limits
from ws_service.domain.presence import Member, member_frame
from ws_service.settings import Settings

SCHEMA = schema()
Draft202012Validator.check_schema(SCHEMA)
SERVER = Draft202012Validator({**SCHEMA, "$ref": "#/$defs/server_frame"})
CLIENT = Draft202012Validator({**SCHEMA, "$ref": "#/$defs/client_frame"})
DOCUMENTED_CLOSES = {int(row.code) for row in Disconnect} - {CloseCode.INTERNAL_ERROR}
MAX_MESSAGE = 8192
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
CHANNELS = st.sampled_from(["chat:a", "chat:b", "user:alice", "user:bob", "news:x", "bad", ""])
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
HOSTILE_TEXT = st.sampled_from(
    ["1e400", "NaN", '"\\ud800"', "[" * 40 + "]" * 40, "[" * 3000, "{}", "[]", "null", '"x"', ""]
)


def test_the_schema_accepts_every_frame_the_server_builds() -> None:
    from realtime_gateway_protocol.access_token import Claims

    claims = Claims("alice", "s1", 1, 2, frozenset({"chat:read"}), "Alice", "key-1")
    published = with_position(protocol.message("chat:a", {"t": 1}, claims, 123), 7, "e1")
    page = HistoryPage([published], Position(7, "e1"), True)
    for text in [
        protocol.auth_success(claims, 0, 1, renewed=False),
        protocol.auth_success(claims, 0, None, renewed=False, limits=Limits().advertised()),
        protocol.auth_success(claims, 0, "x", renewed=True),
        protocol.reply("pong", None),
        protocol.reply("subscribed", 3, channel="chat:a"),
        protocol.reply("unsubscribed", None, channel="chat:a", reason="permission_revoked"),
        protocol.reply("revoked", None, reason="user_revoked"),
        protocol.reply("token_expiring", None, expires_in=1, expires_at=2),
        protocol.message("chat:a", {"x": [1.5]}, claims, 123),
        protocol.message("user:bob", None, None, 123),
        with_position(protocol.message("chat:a", 1, claims, 123), 7, "e1"),
        protocol.subscribed("chat:a", 4, page, recovering=False),
        protocol.subscribed("chat:a", 4, page, recovering=True),
        protocol.subscribed("chat:a", 4, None, recovering=True),
        protocol.history("chat:a", 5, page, recovering=True),
        protocol.reply(
            "presence",
            6,
            channel="chat:a",
            members=[{"user": {"id": "alice", "username": None}, "connections": 2}],
        ),
        member_frame("join", "chat:a", Member("alice", "Alice").as_json()),
        member_frame("leave", "chat:a", Member("bob", None).as_json()),
    ]:
        SERVER.validate(loads(text))
    CLIENT.validate({"type": "auth", "token": "t", "id": 1})
    assert not CLIENT.is_valid({"type": "auth"})


class GatewayMachine(RuleBasedStateMachine):
    """One socket at a time against one gateway; a closed socket is replaced by a fresh one."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tokens = Tokens(KEY, "k1")
        self.run(self._start())

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _start(self) -> None:
        self.jwks = TestServer(KeySet({"k1": KEY}).app())
        await self.jwks.start_server()
        settings_ = Settings(
            jwks_url=str(self.jwks.make_url("/.well-known/jwks.json")),
            issuer=ISSUER,
            audience=AUDIENCE,
            leeway=0,
            max_message_bytes=MAX_MESSAGE,
            close_timeout=0.5,
            auth_timeout=5,
            max_unauthenticated_per_address=1000,
        )
        self.app = create_app(settings_, bus=InProcessBus())
        self.server = TestServer(self.app)
        await self.server.start_server()
        self.http = aiohttp.ClientSession()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.authed = False
        self.closes: list[int | None] = []
        deadline = time.monotonic() + 5
        while not (await self.http.get(self.server.make_url("/readyz"))).ok:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)

    async def _socket(self) -> aiohttp.ClientWebSocketResponse:
        if self.ws is None or self.ws.closed:
            self.ws = await self.http.ws_connect(self.server.make_url("/ws"), autoclose=True)
            self.authed = False
        return self.ws

    async def _send_text(self, text: str) -> None:
        ws = await self._socket()
        await ws.send_str(text)
        await self._drain()

    async def _drain(self, quiet: float = 0.03) -> None:
        """Read what the server sends until it is quiet; check every frame and close."""
        ws = self.ws
        assert ws is not None
        while not ws.closed:
            try:
                msg = await ws.receive(timeout=quiet)
            except TimeoutError:
                return
            if msg.type is WSMsgType.TEXT:
                frame = loads(msg.data)
                errors = sorted(SERVER.iter_errors(frame), key=str)
                assert not errors, (frame, [e.message for e in errors])
                if frame["type"] == "auth_success":
                    self.authed = True
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                break
            else:
                raise AssertionError(f"unexpected {msg.type}: {msg.data!r}")
        self.closes.append(ws.close_code)
        assert ws.close_code in DOCUMENTED_CLOSES, ws.close_code

    @initialize()
    def connect(self) -> None:
        self.run(self._socket())

    @rule(sub=st.sampled_from(["alice", "bob"]), ttl=st.sampled_from([300, -10]), rid=JSON_VALUES)
    def auth(self, sub: str, ttl: int, rid: Any) -> None:
        token = self.tokens.make(sub, ttl=ttl, sid=f"sid-{sub}")
        self.run(self._send_text(json.dumps({"type": "auth", "token": token, "id": rid})))

    @rule(token=st.text(max_size=40) | st.just("eyJ\\ud800.a.b"))
    def bad_auth(self, token: str) -> None:
        self.run(self._send_text('{"type": "auth", "token": "' + token.replace('"', "") + '"}'))

    @rule(kind=st.sampled_from(["subscribe", "unsubscribe"]), channel=CHANNELS, rid=JSON_VALUES)
    def channel_request(self, kind: str, channel: str, rid: Any) -> None:
        self.run(self._send_text(json.dumps({"type": kind, "channel": channel, "id": rid})))

    @rule(
        kind=st.sampled_from(["subscribe", "history"]),
        channel=CHANNELS,
        offset=st.integers(-2, 5) | JSON_VALUES,
        epoch=st.sampled_from(["", "x"]) | JSON_VALUES,
        extra=st.fixed_dictionaries(
            {},
            optional={"limit": st.integers(-1, 200) | JSON_VALUES, "presence_events": JSON_VALUES},
        ),
    )
    def recover(self, kind: str, channel: str, offset: Any, epoch: Any, extra: Any) -> None:
        since = {"offset": offset, "epoch": epoch}
        frame = {"type": kind, "channel": channel, "since": since, "id": 9, **extra}
        self.run(self._send_text(json.dumps(frame)))

    @rule(channel=CHANNELS, events=st.booleans())
    def presence(self, channel: str, events: bool) -> None:
        subscribe = {"type": "subscribe", "channel": channel, "presence_events": events}
        self.run(self._send_text(json.dumps(subscribe)))
        self.run(self._send_text(json.dumps({"type": "presence", "channel": channel, "id": 8})))

    @rule(channel=CHANNELS, data=JSON_VALUES)
    def publish(self, channel: str, data: Any) -> None:
        self.run(self._send_text(json.dumps({"type": "publish", "channel": channel, "data": data})))

    @rule(data=HOSTILE_TEXT)
    def publish_hostile(self, data: str) -> None:
        self.run(self._send_text('{"type": "publish", "channel": "chat:a", "data": ' + data + "}"))

    @rule()
    def ping(self) -> None:
        self.run(self._send_text('{"type": "ping", "id": "p"}'))

    @rule(text=st.text(max_size=60) | HOSTILE_TEXT | JSON_VALUES.map(json.dumps))
    def garbage(self, text: str) -> None:
        self.run(self._send_text(text))

    @rule(data=st.binary(max_size=20))
    def binary(self, data: bytes) -> None:
        async def send() -> None:
            ws = await self._socket()
            await ws.send_bytes(data)
            await self._drain()

        self.run(send())

    @rule()
    def oversize(self) -> None:
        self.run(self._send_text('{"type": "ping", "pad": "' + "x" * MAX_MESSAGE + '"}'))

    @invariant()
    def open_sockets_answer(self) -> None:
        ws = self.ws
        if ws is None or ws.closed or not self.authed:
            return

        async def probe() -> None:
            await ws.send_str('{"type": "ping", "id": "probe"}')
            while True:
                msg = await ws.receive(timeout=3)
                if msg.type is not WSMsgType.TEXT:
                    self.closes.append(ws.close_code)
                    assert ws.close_code in DOCUMENTED_CLOSES, ws.close_code
                    return
                frame = loads(msg.data)
                assert SERVER.is_valid(frame), frame
                if frame == {"type": "pong", "id": "probe"}:
                    return

        self.run(probe())

    def teardown(self) -> None:
        async def stop() -> None:
            if self.ws is not None:
                await self.ws.close()
            await self.http.close()
            await self.server.close()
            await self.jwks.close()

        self.run(stop())
        self.loop.close()


TestGatewayProtocol = GatewayMachine.TestCase
TestGatewayProtocol.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
