"""DPoP at the gateway (RFC 9449) through the real app: a DPoP-bound token (cnf.jkt) needs a proof
of its key in every auth frame (first auth and renewal), for GET of the public WebSocket URL with
ath, fresh and never seen before; the bearer subprotocol refuses bound tokens, tickets carry the
binding. The public URL is wss://gw.test/ws, as behind a proxy: proofs name it, not the test
server's address."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from realtime_gateway_client import GatewayClient
from realtime_gateway_client.dpop import DPoPKey
from shared.dpop import ProofVerifier, thumbprint
from shared.once import LocalUsedOnce
from tests.integration.stack import MakeStack, Stack
from tests.integration.ws.conftest import MakeGateway
from tests.integration.ws.harness import (
    Harness,
    auth,
    expect_close,
    expect_open,
    recv,
    send,
    wait_until,
)
from tests.integration.ws.test_handshake import BEARER, upgrade
from tests.support.dpop import PrivateKey, es256_key, jkt, make_proof, private_jwk
from ws_service.appkeys import METRICS

PUBLIC_URL = "wss://gw.test/ws"


def proof(key: PrivateKey, token: str, **options: Any) -> str:
    options.setdefault("access_token", token)
    return make_proof(key, options.pop("htm", "GET"), options.pop("htu", PUBLIC_URL), **options)


@pytest.fixture
async def gw(make_gateway: MakeGateway) -> Harness:
    return await make_gateway(public_url=PUBLIC_URL)


def bound(gw: Harness, key: PrivateKey, sub: str = "alice", **claims: Any) -> str:
    return gw.tokens.make(sub, cnf={"jkt": jkt(key)}, **claims)


async def test_a_bound_token_authenticates_with_a_proof_of_its_key(gw: Harness) -> None:
    key = es256_key()
    token = bound(gw, key)
    ws = await gw.open()
    reply = await auth(ws, token, proof=proof(key, token))
    assert reply["type"] == "auth_success", reply


async def test_unbound_tokens_keep_working_and_ignore_a_proof(gw: Harness) -> None:
    token = gw.tokens.make("alice")
    assert (await auth(await gw.open(), token))["type"] == "auth_success"
    reply = await auth(await gw.open(), token, proof="whatever")
    assert reply["type"] == "auth_success"


def refusals(key: PrivateKey, token: str) -> dict[str, str | None]:
    now = time.time()
    return {
        "no proof": None,
        "another key": proof(es256_key(), token),
        "wrong htu": proof(key, token, htu="wss://evil.test/ws"),
        "wrong htm": proof(key, token, htm="POST"),
        "no ath": make_proof(key, "GET", PUBLIC_URL),
        "ath of another token": proof(key, token, access_token=token + "x"),
        "too old": proof(key, token, iat=now - 61),
        "from the future": proof(key, token, iat=now + 30),
        "alg none": jwt.encode(
            {"htm": "GET", "htu": PUBLIC_URL, "iat": int(now), "jti": "n"},
            None,
            "none",
            headers={"typ": "dpop+jwt"},
        ),
        "HS256": proof(key, token, alg="HS256", signing_key=b"s" * 32),
        "private jwk": proof(key, token, jwk=private_jwk(key)),
    }


@pytest.mark.parametrize("breakage", list(refusals(es256_key(), "t")))
async def test_a_bound_token_without_a_good_proof_is_refused(gw: Harness, breakage: str) -> None:
    key = es256_key()
    token = bound(gw, key)
    ws = await gw.open()
    extra = {} if (bad := refusals(key, token)[breakage]) is None else {"proof": bad}
    reply = await auth(ws, token, **extra)
    assert (reply["type"], reply["code"], reply["retry"]) == (
        "auth_error",
        "invalid_dpop_proof",
        True,
    ), breakage
    assert reply["message"]
    reply = await auth(ws, token, proof=proof(key, token))
    assert reply["type"] == "auth_success", "a retry with a good proof works"


async def test_three_failed_proofs_close_the_socket(gw: Harness) -> None:
    key = es256_key()
    token = bound(gw, key)
    ws = await gw.open()
    for attempt in (1, 2, 3):
        reply = await auth(ws, token, proof=proof(es256_key(), token))
        assert (reply["code"], reply["retry"]) == ("invalid_dpop_proof", attempt < 3)
    await expect_close(ws, 4401, "invalid_dpop_proof")
    metrics = gw.app[METRICS].registry
    assert metrics.get_sample_value("ws_auth_total", {"outcome": "invalid_dpop_proof"}) == 3


async def test_a_proof_works_once(gw: Harness) -> None:
    key = es256_key()
    token = bound(gw, key)
    once = proof(key, token)
    assert (await auth(await gw.open(), token, proof=once))["type"] == "auth_success"
    reply = await auth(await gw.open(), token, proof=once)
    assert (reply["code"], "used before" in reply["message"]) == ("invalid_dpop_proof", True)


async def test_a_renewal_needs_a_proof_and_the_same_key(gw: Harness) -> None:
    key = es256_key()
    token = bound(gw, key)
    ws = await gw.open()
    assert (await auth(ws, token, proof=proof(key, token)))["type"] == "auth_success"
    renewal = bound(gw, key)
    reply = await auth(ws, renewal, id="r1")
    assert (reply["code"], reply["id"]) == ("invalid_dpop_proof", "r1")
    await expect_open(ws)
    reply = await auth(ws, renewal, proof=proof(key, renewal), id="r2")
    assert (reply["type"], reply["renewed"]) == ("auth_success", True)
    other = es256_key()
    stolen = bound(gw, other)
    reply = await auth(ws, stolen, proof=proof(other, stolen), id="r3")
    assert (reply["code"], reply["retry"]) == ("subject_mismatch", False)
    await expect_close(ws, 4403, "subject_mismatch")


async def test_ws_dpop_required_refuses_bearer_tokens(make_gateway: MakeGateway) -> None:
    gw = await make_gateway(public_url=PUBLIC_URL, dpop_required=True)
    ws = await gw.open()
    reply = await auth(ws, gw.tokens.make("alice"))
    assert (reply["code"], reply["retry"]) == ("invalid_token", False)
    key = es256_key()
    token = bound(gw, key)
    assert (await auth(await gw.open(), token, proof=proof(key, token)))["type"] == "auth_success"


@pytest.mark.redis
async def test_a_proof_works_once_across_replicas(
    make_gateway: MakeGateway, redis_url: str
) -> None:
    one = await make_gateway(public_url=PUBLIC_URL, redis_url=redis_url)
    two = await make_gateway(public_url=PUBLIC_URL, redis_url=redis_url)
    key = es256_key()
    token = bound(one, key)
    once = proof(key, token)
    assert (await auth(await one.open(), token, proof=once))["type"] == "auth_success"
    reply = await auth(await two.open(), token, proof=once)
    assert reply["code"] == "invalid_dpop_proof"


# -- tickets, on the real two-service stack ------------------------------------------------------


@pytest.fixture
async def stack(make_stack: MakeStack) -> Stack:
    stack = await make_stack(ws={"public_url": PUBLIC_URL})
    await stack.register("alice")
    return stack


async def dpop_login(stack: Stack, key: PrivateKey) -> dict[str, Any]:
    htu = f"{stack.auth_url.rstrip('/')}/v1/login"
    resp = await stack.auth.post(
        "/v1/login",
        json={"username": "alice", "password": "correct horse battery staple"},
        headers={"DPoP": make_proof(key, "POST", htu)},
    )
    body: dict[str, Any] = await resp.json()
    assert body["token_type"] == "DPoP", body
    return body


async def test_a_ticket_of_a_bound_token_opens_a_bound_socket(stack: Stack) -> None:
    key = es256_key()
    token = (await dpop_login(stack, key))["access_token"]
    htu = f"{stack.auth_url.rstrip('/')}/v1/ws-ticket"
    resp = await stack.auth.post("/v1/ws-ticket", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 401, "a bound token without its key mints no ticket"
    resp = await stack.auth.post(
        "/v1/ws-ticket",
        headers={
            "Authorization": f"DPoP {token}",
            "DPoP": make_proof(key, "POST", htu, access_token=token),
        },
    )
    ticket = (await resp.json())["ticket"]
    ws = await stack.ws.ws_connect(f"/ws?ticket={ticket}")
    assert (await recv(ws))["type"] == "auth_success"
    await send(ws, {"type": "auth", "token": token, "id": "r1"})
    assert (await recv(ws))["code"] == "invalid_dpop_proof"
    await send(ws, {"type": "auth", "token": token, "proof": proof(key, token), "id": "r2"})
    assert (await recv(ws))["renewed"] is True


async def test_the_bearer_subprotocol_refuses_a_bound_token_before_the_upgrade(
    stack: Stack,
) -> None:
    token = (await dpop_login(stack, es256_key()))["access_token"]
    status, body = await upgrade(stack, protocols=f"realtime.v1, {BEARER}{token}")
    assert (status, body["error"]) == (401, "invalid_dpop_proof")
    assert "in-band" in body["error_description"] and "ticket" in body["error_description"]


# -- the Python client ---------------------------------------------------------------------------


@pytest.mark.parametrize("nonces", [False, True])
async def test_the_python_client_binds_its_tokens_and_renews_with_proofs(
    make_stack: MakeStack, nonces: bool
) -> None:
    stack = await make_stack(auth={"dpop_nonce": nonces})
    await stack.register("alice")
    key = DPoPKey.generate()
    client = GatewayClient(
        stack.auth_url,
        stack.ws_url,
        "alice",
        "correct horse battery staple",
        dpop=key,
        backoff_base=0.05,
        backoff_cap=0.2,
    )
    async with client:
        tokens = client._tokens
        assert tokens is not None and tokens.token_type == "DPoP"
        claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
        assert claims["cnf"] == {"jkt": thumbprint(key.public_jwk)}
        await client.subscribe("chat:lobby")
        renewed = await client.refresh()
        assert renewed.token_type == "DPoP"
        await client._renew(client._ws)  # type: ignore[arg-type]
        registry = stack.ws.app[METRICS].registry
        await wait_until(lambda: registry.get_sample_value("ws_renewals_total") == 1)
        await client.publish("chat:lobby", {"n": 1})
        message = await anext(client.messages())
        assert message["data"] == {"n": 1}


async def test_a_dpop_key_loads_from_a_pem_file(tmp_path: Path) -> None:
    key = es256_key()
    path = tmp_path / "dpop.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    loaded = DPoPKey.from_pem(path)
    assert thumbprint(loaded.public_jwk) == jkt(key)
    verifier = ProofVerifier(LocalUsedOnce())
    proven = await verifier.verify(
        loaded.proof("GET", "wss://gw.test/ws?x=1", access_token="t"),
        method="GET",
        url="https://gw.test/ws",
        access_token="t",
    )
    assert proven.jkt == jkt(key)
