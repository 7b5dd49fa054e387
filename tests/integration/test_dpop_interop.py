"""DPoP interoperability: proofs made by independent implementations are accepted by auth_service
and ws_service on the real stack, and auth_service's bound tokens verify with cnf intact in an
independent JOSE library.

- Node: panva's ``dpop`` (proofs, thumbprints) and ``jose`` (token verification), at the versions
  of tests/interop/node/package-lock.json, installed by ``make test`` with npm ci into
  .venv/interop-node; without Node or those packages the Node tests skip with the reason (and
  fail under CI=true).
- Python: ``pydpop`` from PyPI (a dev dependency), which signs its ES256 proofs with
  ``cryptography`` alone.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pydpop
import pytest

from shared.dpop import thumbprint
from tests.integration.stack import PASSWORD, MakeStack, Stack
from tests.integration.ws.harness import auth
from tests.services import unavailable

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "interop" / "node" / "interop.mjs"
MODULES = ROOT / ".venv" / "interop-node"


def node(request: dict[str, Any]) -> dict[str, Any]:
    """One request to tests/interop/node/interop.mjs, run beside the locked packages."""
    binary = shutil.which("node")
    if binary is None:
        unavailable("Node.js", "no node on PATH")
    if not (MODULES / "node_modules" / ".package-lock.json").exists():
        unavailable(
            "the npm registry",
            f"{MODULES} has no dpop and jose; `make test` installs them there with npm ci",
        )
    shutil.copy(SCRIPT, MODULES / SCRIPT.name)
    result = subprocess.run(
        [str(binary), str(MODULES / SCRIPT.name)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


@pytest.fixture
async def stack(make_stack: MakeStack) -> Stack:
    stack = await make_stack()
    await stack.register("alice")
    return stack


def public_url(stack: Stack, path: str) -> str:
    return stack.auth_url.rstrip("/") + path


async def login(stack: Stack, proof: str) -> dict[str, Any]:
    resp = await stack.auth.post(
        "/v1/login", json={"username": "alice", "password": PASSWORD}, headers={"DPoP": proof}
    )
    assert resp.status == 200, await resp.text()
    tokens: dict[str, Any] = await resp.json()
    assert tokens["token_type"] == "DPoP", tokens
    return tokens


@pytest.mark.parametrize("alg", ["ES256", "PS256", "RS256"])
async def test_panva_dpop_proofs_are_accepted_by_both_services(stack: Stack, alg: str) -> None:
    made = node({"op": "key", "alg": alg})
    key, jkt = made["key"], made["jkt"]
    public = {k: v for k, v in key.items() if k in ("kty", "crv", "x", "y", "n", "e")}
    assert thumbprint(public) == jkt, "both sides compute one RFC 7638 thumbprint"

    def proof(htm: str, htu: str, access_token: str | None = None) -> str:
        request = {"op": "proof", "key": key, "alg": alg, "htm": htm, "htu": htu}
        if access_token is not None:
            request["accessToken"] = access_token
        return str(node(request)["proof"])

    tokens = await login(stack, proof("POST", public_url(stack, "/v1/login")))
    jwks = await (await stack.auth.get("/.well-known/jwks.json")).json()
    verified = node(
        {
            "op": "verify",
            "token": tokens["access_token"],
            "jwks": jwks,
            "issuer": stack.auth_url.rstrip("/"),
            "audience": "ws",
        }
    )
    assert verified["payload"]["cnf"] == {"jkt": jkt}
    assert verified["header"]["typ"] == "at+jwt"

    resp = await stack.auth.post(
        "/v1/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers={"DPoP": proof("POST", public_url(stack, "/v1/token"))},
    )
    assert resp.status == 200, await resp.text()
    token = (await resp.json())["access_token"]
    resp = await stack.auth.post(
        "/v1/ws-ticket",
        headers={
            "Authorization": f"DPoP {token}",
            "DPoP": proof("POST", public_url(stack, "/v1/ws-ticket"), token),
        },
    )
    assert resp.status == 200, await resp.text()

    socket_proof = proof("GET", stack.ws_url, token)
    reply = await auth(await stack.open(), token, proof=socket_proof)
    assert reply["type"] == "auth_success", reply
    replayed = await auth(await stack.open(), token, proof=socket_proof)
    assert replayed["code"] == "invalid_dpop_proof"


async def test_pydpop_proofs_are_accepted_by_both_services(stack: Stack) -> None:
    key = pydpop.generate_key()
    tokens = await login(
        stack,
        pydpop.generate_proof(private_key=key, htm="POST", htu=public_url(stack, "/v1/login")),
    )
    token = tokens["access_token"]
    proof = pydpop.generate_proof(private_key=key, htm="GET", htu=stack.ws_url, access_token=token)
    reply = await auth(await stack.open(), token, proof=proof)
    assert reply["type"] == "auth_success", reply
    assert pydpop.jwk_thumbprint(pydpop.public_jwk(key)) == thumbprint(pydpop.public_jwk(key))
