"""Hypothesis throws arbitrary JSON at a live connection handler: it must answer, never crash."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from aiohttp import WSMsgType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.ws.conftest import MakeGateway
from tests.integration.ws.harness import Harness, send

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
frames = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(
                ["auth", "subscribe", "unsubscribe", "publish", "ping", "message", ""]
            )
            | st.text(max_size=10)
            | json_values,
        },
        optional={
            "id": json_values,
            "channel": st.sampled_from(["chat:a", "user:alice", "user:bob", "x"]) | json_values,
            "data": json_values,
            "token": st.text(max_size=40) | json_values,
        },
    ).map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=200),
)
counter = itertools.count()
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


async def answered(ws: Any) -> None:
    """The handler is alive: our ping's pong arrives (other replies may come first)."""
    marker = f"probe-{next(counter)}"
    await send(ws, {"type": "ping", "id": marker})
    while True:
        msg = await ws.receive(timeout=3)
        assert msg.type is WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
        frame = json.loads(msg.data)
        assert isinstance(frame, dict) and isinstance(frame.get("type"), str)
        if frame == {"type": "pong", "id": marker}:
            return


@pytest.fixture
async def fuzz_gw(make_gateway: MakeGateway) -> Harness:
    """One gateway per test, shared by all its examples, with limits that fuzzing would trip."""
    return await make_gateway(max_violations=10**9, rate_per_second=10**6, rate_burst=10**6)


@pytest.fixture
async def fuzz_ws(fuzz_gw: Harness) -> Any:
    return await fuzz_gw.login("alice", sid="fuzz", scope="chat:read chat:write")


@FUZZ
@given(frame=frames)
async def test_authenticated_handler_survives_any_frame(fuzz_ws: Any, frame: str) -> None:
    await fuzz_ws.send_str(frame)
    await answered(fuzz_ws)


@FUZZ
@given(frame=frames)
async def test_unauthenticated_handler_refuses_any_frame_cleanly(
    fuzz_gw: Harness, frame: str
) -> None:
    ws = await fuzz_gw.open()
    await ws.send_str(frame)
    while True:
        msg = await ws.receive(timeout=3)
        if msg.type is not WSMsgType.TEXT:
            break
        assert json.loads(msg.data)["type"] in {"auth_error", "auth_success"}
    assert msg.type is WSMsgType.CLOSE
    assert msg.data in {4400, 4401, 4403}
