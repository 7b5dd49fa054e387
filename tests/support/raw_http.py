"""Raw HTTP over a socket: for what aiohttp's client refuses to send (undecodable header bytes,
obs-fold, oversized request lines, requests dribbled byte by byte)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

__all__ = ["RawResponse", "raw_request"]


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_request(host: str, port: int, data: bytes, wait: float = 5.0) -> RawResponse:
    """Send ``data`` as is and read one response (the server closes or sends Content-Length)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(wait):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            length = int(headers.get("content-length", "-1"))
            body = await (reader.readexactly(length) if length >= 0 else reader.read())
        return RawResponse(status, headers, body)
    finally:
        writer.close()
