"""What stock OAuth/JOSE libraries check, checked with one of them (authlib/joserfc): RFC 9068
access tokens, RFC 8414 metadata, RFC 6749 client authentication and errors, /metrics access."""

from __future__ import annotations

import re

import pytest
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oauth2.rfc9068 import JWTBearerTokenValidator
from joserfc.jwk import KeySet

from tests.integration.auth.conftest import AuthClient, MakeClient, login, refresh, register
from tests.integration.auth.test_bad_input import assert_error


async def test_access_tokens_pass_an_rfc9068_validator(client: AuthClient) -> None:
    await register(client)
    tokens = await login(client)
    jwks = await (await client.get("/.well-known/jwks.json")).json()

    class Validator(JWTBearerTokenValidator):  # type: ignore[misc]
        def get_jwks(self) -> KeySet:
            return KeySet.import_key_set(jwks)

    claims = Validator("http://auth.test", "ws").authenticate_token(tokens["access_token"])
    claims.validate()
    assert claims["client_id"] == "realtime-gateway"


async def test_the_client_id_is_configurable(make_client: MakeClient) -> None:
    client = await make_client(client_id="my-app")
    await register(client)
    tokens = await login(client)
    import jwt

    assert (
        jwt.decode(tokens["access_token"], options={"verify_signature": False})["client_id"]
        == "my-app"
    )


async def test_metadata_passes_authlibs_rfc8414_validation(
    client: AuthClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # the test issuer is http://
    body = await (await client.get("/.well-known/oauth-authorization-server")).json()
    AuthorizationServerMetadata(body).validate()
    assert body["response_types_supported"] == ["none"]


@pytest.mark.parametrize("path", ["/v1/token", "/v1/revoke"])
@pytest.mark.parametrize(
    ("headers", "extra", "challenge"),
    [
        ({"Authorization": "Basic cmVhbHRpbWUtZ2F0ZXdheTpzZWNyZXQ="}, {}, "Basic"),
        ({}, {"client_id": "realtime-gateway", "client_secret": "secret"}, None),
        ({}, {"client_assertion": "x.y.z"}, None),
        ({}, {"client_id": "someone-else"}, None),
    ],
    ids=["basic", "client_secret_post", "assertion", "unknown-client"],
)
async def test_client_credentials_are_refused_not_ignored(
    client: AuthClient,
    path: str,
    headers: dict[str, str],
    extra: dict[str, str],
    challenge: str | None,
) -> None:
    data = {"grant_type": "refresh_token", "refresh_token": "x", "token": "x", **extra}
    resp = await client.post(path, data=data, headers=headers)
    await assert_error(resp, 401, "invalid_client")
    assert (
        resp.headers.get("WWW-Authenticate", "").startswith(challenge or "")
        == (challenge is not None)
        or challenge is None
    )


async def test_the_public_client_id_is_accepted(client: AuthClient) -> None:
    await register(client)
    tokens = await login(client)
    resp = await client.post(
        "/v1/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": "realtime-gateway",
        },
    )
    assert resp.status == 200, await resp.text()


async def test_metrics_can_require_a_bearer(make_client: MakeClient) -> None:
    client = await make_client(metrics_token="metrics-token-0123456789")
    await assert_error(await client.get("/metrics"), 401, "invalid_token")
    resp = await client.get(
        "/metrics", headers={"Authorization": "Bearer metrics-token-0123456789"}
    )
    assert resp.status == 200
    open_client = await make_client()
    assert (await open_client.get("/metrics")).status == 200


async def test_a_form_parameter_without_a_value_is_as_if_omitted(client: AuthClient) -> None:
    """RFC 6749 section 3.2: parameters sent without a value MUST be treated as omitted. An
    empty client_id was an unknown client (401). Only an empty scope keeps its meaning, no
    rights (test_an_empty_scope_asks_for_none): read as omitted it would grant the default."""
    await register(client)
    tokens = await login(client)
    status, body = await refresh(
        client, tokens["refresh_token"], client_id="", authorization_details=""
    )
    assert status == 200, body
    status, body = await refresh(client, "")
    assert (status, body["error"]) == (400, "invalid_request")  # a required one, empty, is missing
    resp = await client.post(
        "/v1/token",
        data="grant_type=&grant_type=refresh_token",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    await assert_error(resp, 400, "invalid_request")  # and still counts as sent twice


@pytest.mark.parametrize(("path", "method"), [("/v1/ws-ticket", "POST"), ("/metrics", "GET")])
async def test_a_request_without_credentials_is_challenged_without_an_error_code(
    make_client: MakeClient, path: str, method: str
) -> None:
    """RFC 6750 section 3.1: a request that lacks any authentication information SHOULD NOT get
    an error code in its challenge; one with a bad token does."""
    client = await make_client(metrics_token="metrics-token-0123456789")
    resp = await client.request(method, path)
    await assert_error(resp, 401, "invalid_token")
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="auth_service"'
    resp = await client.request(method, path, headers={"Authorization": "Bearer nope"})
    await assert_error(resp, 401, "invalid_token")
    assert resp.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/token", {"grant_type": 'x"y\\z'}),
        ("/v1/token", {"grant_type": "caf\u00e9\u3000\n"}),
        ("/v1/token", {"grant_type": "refresh_token", "scope": "a\tb"}),
        ("/v1/login", {"username": "alice", "password": "x" * 12, "session": "x"}),
    ],
    ids=["quote-backslash", "non-ascii-and-controls", "scope-rule", "session-rule"],
)
async def test_error_descriptions_keep_to_rfc6749s_alphabet(
    client: AuthClient, path: str, body: dict[str, str]
) -> None:
    """RFC 6749 section 5.2: ``error_description`` holds printable ASCII but ``"`` and ``\\``.
    Descriptions quoting the request held whatever it sent, and two rules quoted ``"``."""
    if path == "/v1/login":
        resp = await client.post(path, json=body)
    else:
        if body["grant_type"] == "refresh_token":
            await register(client)
            body = {**body, "refresh_token": (await login(client))["refresh_token"]}
        resp = await client.post(path, data=body)
    error = await resp.json()
    await assert_error(resp, 400, error["error"])
    assert re.fullmatch(r"[\x20\x21\x23-\x5b\x5d-\x7e]+", error["error_description"]), error
