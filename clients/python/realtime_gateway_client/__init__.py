"""A Python client for the gateway, separate from the servers: it imports aiohttp, the stdlib and
the protocol package (close codes, backoff), nothing else of ours.
"""

from realtime_gateway_client.client import (
    AuthApi,
    AuthenticationFailed,
    ClientError,
    ConnectionLost,
    FrameTooLarge,
    GatewayClient,
    ProofSigner,
    ProtocolViolation,
    RequestFailed,
    RequestTimeout,
    ServerProtocolError,
    TemporaryFailure,
    TokenPair,
    Unreachable,
    refusing_redirects,
)

__all__ = [
    "AuthApi",
    "AuthenticationFailed",
    "ClientError",
    "ConnectionLost",
    "FrameTooLarge",
    "GatewayClient",
    "ProofSigner",
    "ProtocolViolation",
    "RequestFailed",
    "RequestTimeout",
    "ServerProtocolError",
    "TemporaryFailure",
    "TokenPair",
    "Unreachable",
    "refusing_redirects",
]
