"""A Python client for the gateway, separate from the servers: it imports aiohttp, the stdlib and
the stdlib-only wire-contract modules of ``shared`` (close codes, backoff), nothing else of ours.
"""

from realtime_gateway_client.client import (
    AuthApi,
    AuthenticationFailed,
    ClientError,
    GatewayClient,
    ProtocolViolation,
    RequestFailed,
    TemporaryFailure,
    TokenPair,
)

__all__ = [
    "AuthApi",
    "AuthenticationFailed",
    "ClientError",
    "GatewayClient",
    "ProtocolViolation",
    "RequestFailed",
    "TemporaryFailure",
    "TokenPair",
]
