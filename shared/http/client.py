"""Reading what another server answers, within bounds: the application's proxy and an issuer's
key set are both servers whose answer this process parses, and neither may make it hold more
than it asked for."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
from aiohttp import hdrs

__all__ = ["IDENTITY", "read_capped"]

IDENTITY: Mapping[str, str] = {hdrs.ACCEPT_ENCODING: "identity"}
"""Headers asking for an uncompressed answer: the session or request reads with
``auto_decompress`` off, so a small compressed answer never unpacks into a large one."""


async def read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The body, or ``ValueError`` as soon as it passes ``max_bytes`` (announced or sent), or
    when it comes compressed anyway."""
    coding = response.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
    if coding != "identity":
        raise ValueError(f"a {coding}-encoded answer (identity was asked for)")
    if (response.content_length or 0) > max_bytes:
        raise ValueError(f"an answer of {response.content_length} bytes")
    answer = bytearray()
    async for chunk in response.content.iter_any():
        answer += chunk
        if len(answer) > max_bytes:
            raise ValueError(f"an answer over {max_bytes} bytes")
    return bytes(answer)
