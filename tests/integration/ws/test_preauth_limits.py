"""What one address may cost before it authenticates: a few sockets, a few frames per second."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest

from tests.integration.ws.conftest import MakeGateway
from tests.integration.ws.harness import auth, expect_close, expect_open, recv
from ws_service.appkeys import METRICS


def hits(gw: object, limit: str) -> float:
    value = gw.app[METRICS].registry.get_sample_value(  # type: ignore[attr-defined]
        "ws_limit_hits_total", {"limit": limit}
    )
    return value or 0.0


async def test_unauthenticated_sockets_per_address_are_capped(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(max_unauthenticated_per_address=3)
    waiting = [await gw.open() for _ in range(3)]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await gw.open()
    assert refused.value.status == 429
    assert hits(gw, "unauthenticated_per_address") == 1
    reply = await auth(waiting[0], gw.tokens.make("alice"))
    assert reply["type"] == "auth_success"
    await expect_open(await gw.login("bob"))
    await waiting[1].close()
    await expect_open(await gw.login("carol"))
    bearer = f"realtime.bearer.{gw.tokens.make('dave')}"
    ws = await gw.client.ws_connect("/ws", protocols=("realtime.v1", bearer))
    assert (await recv(ws))["type"] == "auth_success"
    await expect_open(ws)


async def test_the_cap_is_per_forwarded_address_behind_a_trusted_proxy(
    make_gateway: MakeGateway,
) -> None:
    gw = await make_gateway(max_unauthenticated_per_address=1, forwarded_allow_ips=("127.0.0.1",))
    await gw.client.ws_connect("/ws", headers={"X-Forwarded-For": "10.0.0.1"})
    await gw.client.ws_connect("/ws", headers={"X-Forwarded-For": "10.0.0.2"})
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await gw.client.ws_connect("/ws", headers={"X-Forwarded-For": "10.0.0.1"})


async def test_the_forwarded_address_is_the_last_hop_of_every_line(
    make_gateway: MakeGateway,
) -> None:
    """A proxy that adds its own X-Forwarded-For line after the client's (HAProxy's ``option
    forwardfor``): the client's line, first, named a new address for each socket and escaped
    the cap."""
    gw = await make_gateway(max_unauthenticated_per_address=1, forwarded_allow_ips=("127.0.0.1",))
    await gw.client.ws_connect(
        "/ws", headers=[("X-Forwarded-For", "203.0.113.1"), ("X-Forwarded-For", "10.0.0.1")]
    )
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await gw.client.ws_connect(
            "/ws", headers=[("X-Forwarded-For", "203.0.113.2"), ("X-Forwarded-For", "10.0.0.1")]
        )
    await gw.client.ws_connect("/ws", headers={"X-Forwarded-For": "203.0.113.1"})


async def test_an_ipv6_address_counts_as_its_64(make_gateway: MakeGateway) -> None:
    """One host's /64 is 2^64 addresses: counted apart, each was a fresh cap (as the login
    throttle counts them, an IPv4-mapped address as its IPv4 one)."""
    gw = await make_gateway(max_unauthenticated_per_address=1, forwarded_allow_ips=("127.0.0.1",))
    first = await gw.client.ws_connect("/ws", headers={"X-Forwarded-For": "2001:db8:1:2::1"})
    for other in ("2001:db8:1:2::2", "2001:db8:1:2:ffff:ffff:ffff:ffff"):
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await gw.client.ws_connect("/ws", headers={"X-Forwarded-For": other})
    await gw.client.ws_connect("/ws", headers={"X-Forwarded-For": "2001:db8:1:3::1"})
    await gw.client.ws_connect("/ws", headers={"X-Forwarded-For": "10.0.0.1"})
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await gw.client.ws_connect("/ws", headers={"X-Forwarded-For": "::ffff:10.0.0.1"})
    await first.close()
    for _ in range(100):  # the slot is given back once the server's handler has ended
        with contextlib.suppress(aiohttp.WSServerHandshakeError):
            ws = await gw.client.ws_connect("/ws", headers={"X-Forwarded-For": "2001:db8:1:2::2"})
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the /64's slot was never given back")
    assert not ws.closed


async def test_an_upgrade_whose_headers_outgrow_the_cap_is_refused(
    make_gateway: MakeGateway,
) -> None:
    """A socket's request lives as long as the socket, headers and all: aiohttp takes 128 header
    lines of 8 KiB, so one upgrade held 1.5 MB of them for the socket's life (an outside probe:
    40 sockets, 62 MB), beside the 18 KiB of an idle socket, and the per-address cap bounded no
    cost. nginx's default (4 x 8 KiB) is the cap, and a bearer subprotocol's token fits in it."""
    gw = await make_gateway()
    pad = {f"X-Pad-{i}": "a" * 8000 for i in range(5)}
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await gw.client.ws_connect("/ws", headers=pad)
    assert refused.value.status == 431
    assert hits(gw, "upgrade_header_bytes") == 1
    resp = await gw.client.get("/ws", headers=pad)
    assert resp.status == 431
    assert (await resp.json())["error"] == "request_header_fields_too_large"
    ws = await gw.client.ws_connect("/ws", headers={f"X-Pad-{i}": "a" * 8000 for i in range(3)})
    reply = await auth(ws, gw.tokens.make("alice"))
    assert reply["type"] == "auth_success"
    bearer = f"realtime.bearer.{gw.tokens.make('bob', pad='b' * 4000)}"
    ws = await gw.client.ws_connect(
        "/ws", protocols=("realtime.v1", bearer), headers={"Cookie": "c" * 8000}
    )
    assert (await recv(ws))["type"] == "auth_success"


async def test_pings_before_auth_are_rate_limited(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(preauth_frame_rate=1.0, preauth_frame_burst=3)
    ws = await gw.client.ws_connect("/ws", autoping=False)
    for _ in range(3):
        await ws.ping()
        msg = await ws.receive(timeout=3)
        assert msg.type is aiohttp.WSMsgType.PONG
    await ws.ping()
    await expect_close(ws, 4429, "rate_limited")
    assert hits(gw, "preauth_frame_rate") == 1


async def test_control_frames_after_auth_share_the_budget(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(preauth_frame_rate=1.0, preauth_frame_burst=3)
    ws = await gw.client.ws_connect("/ws", autoping=False)
    assert (await auth(ws, gw.tokens.make("alice")))["type"] == "auth_success"
    for _ in range(10):
        await ws.ping()
    msg = await ws.receive(timeout=3)
    while msg.type is aiohttp.WSMsgType.PONG:
        msg = await ws.receive(timeout=3)
    assert (msg.type, msg.data, msg.extra) == (aiohttp.WSMsgType.CLOSE, 4429, "rate_limited")
