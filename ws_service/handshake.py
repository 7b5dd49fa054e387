"""Authentication before the upgrade, for clients that cannot or will not send the ``auth`` message
first: the bearer subprotocol and single-use tickets. Also the versioned subprotocol the gateway
speaks, which every offer of subprotocols must include.

Both ways verify exactly as the in-band message does (the same keys, claims and revocations); what
they add is that a bad credential is refused with HTTP 401 before any socket exists. An access token
is never read from the URL: only a ticket may travel there, and it works once.
"""

from __future__ import annotations

from aiohttp import hdrs, web

from realtime_gateway_protocol.access_token import Claims
from realtime_gateway_protocol.frames import BEARER_PREFIX, SUBPROTOCOL
from realtime_gateway_protocol.tickets import TICKET_CLAIMS, TICKET_TYP, TOKEN_EXP, TOKEN_IAT
from shared.bus import BusUnavailable
from shared.http.dpop import challenge
from shared.http.responses import json_error
from shared.jsonlog import audit
from ws_service.appkeys import GATEWAY, USED_ONCE
from ws_service.domain.errors import AuthError, InvalidProof, InvalidToken, KeysUnavailable
from ws_service.domain.verify import claims_from

__all__ = [
    "PROTOCOLS",
    "TICKET_PREFIX",
    "authenticate",
    "carries_credential",
    "refusal",
    "unanswerable_offer",
]

PROTOCOLS = (SUBPROTOCOL,)


TICKET_PREFIX = "gateway:ticket:"
"""A redeemed ticket's key in the used-once store."""


def _offered(request: web.Request) -> list[str]:
    header = ",".join(request.headers.getall(hdrs.SEC_WEBSOCKET_PROTOCOL, ()))
    return [proto.strip() for proto in header.split(",") if proto.strip()]


def unanswerable_offer(request: web.Request) -> str | None:
    """Why the offered subprotocols are refused (HTTP 400) before aiohttp reads them, if they
    are: aiohttp logs every offer that shares nothing with the server's, and a bearer entry is
    an access token. It reads only the first header line, so the offer must be one line."""
    lines = request.headers.getall(hdrs.SEC_WEBSOCKET_PROTOCOL, ())
    if len(lines) > 1:
        return "offer every subprotocol in one Sec-WebSocket-Protocol header"
    if lines and SUBPROTOCOL not in _offered(request):
        return f"offer {SUBPROTOCOL} with any other subprotocol, the bearer one included"
    return None


def carries_credential(request: web.Request) -> bool:
    """Whether :func:`authenticate` has anything to check (or refuse) in the upgrade request."""
    return bool(request.query_string) or any(p.startswith(BEARER_PREFIX) for p in _offered(request))


async def authenticate(request: web.Request) -> Claims | None:
    """The claims the upgrade request's credential authenticates (asked only of a request that
    :func:`carries_credential`: a parsed query is cached on the request for as long as its socket
    lives); raises ``AuthError`` (HTTP 401) for a bad credential."""
    if "token" in request.query or "access_token" in request.query:
        raise InvalidToken("tokens are never accepted in the URL; use a ticket")
    bearers = [p[len(BEARER_PREFIX) :] for p in _offered(request) if p.startswith(BEARER_PREFIX)]
    tickets = request.query.getall("ticket", ())
    if len(bearers) + len(tickets) > 1:  # ?ticket=a&ticket=b took the first
        raise InvalidToken("send one credential: a bearer subprotocol or a ticket")
    ticket = tickets[0] if tickets else None
    gateway = request.app[GATEWAY]
    if bearers:
        claims = await gateway.verifier.verify(bearers[0])
        if claims.jkt is not None:
            raise InvalidProof(
                "this token is DPoP-bound and a subprotocol cannot carry its proof: "
                'authenticate in-band ({"type": "auth", "token", "proof"}) or with a ticket '
                "(POST /v1/ws-ticket with a proof, then /ws?ticket=)"
            )
        return await gateway.confirm(claims)
    if ticket is None:
        return None
    payload, kid = await gateway.verifier.decode(ticket, TICKET_TYP, TICKET_CLAIMS, "a ticket")
    # The socket lives as long as the access token the ticket came from, and is covered by
    # every revocation of that token.
    claims = claims_from({**payload, "iat": payload[TOKEN_IAT], "exp": payload[TOKEN_EXP]}, kid)
    until = gateway.verifier.accepted_until(payload["exp"])
    try:
        first_use = await request.app[USED_ONCE].burn(TICKET_PREFIX + str(payload["jti"]), until)
    except BusUnavailable:
        raise KeysUnavailable("tickets cannot be checked right now; try again") from None
    if not first_use:
        raise InvalidToken("the ticket was already used")
    return await gateway.confirm(gateway.verifier.checked(claims))


def refusal(request: web.Request, err: AuthError, remote: str) -> web.Response:
    """The 401 of a refused handshake credential, audited under the client's ``remote`` (behind
    a trusted proxy, the forwarded address)."""
    audit(
        "ws_handshake_refused",
        code=err.code,
        detail=err.message,
        sub=err.subject,
        remote=remote,
    )
    request.app[GATEWAY].metrics.auth.labels(err.code).inc()
    scheme = challenge(err.code) if isinstance(err, InvalidProof) else "Bearer"
    return json_error(401, err.code, err.message, {"WWW-Authenticate": scheme})
