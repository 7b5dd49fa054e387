"""``demo``: what a browser does with the example, as two people: alice writes a document and
shares it with bob, they chat in it, she un-shares it, bob deletes his account.

Each person talks to the example over HTTP with its session cookie, fetches gateway tokens from
``/api/token`` (what the JavaScript client's ``getToken`` does) and speaks the gateway's protocol
on a WebSocket (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import aiohttp

__all__ = ["run"]

PASSWORD = "correct horse battery"  # noqa: S105 (the demo people's)
WAIT = 10.0


class Person:
    def __init__(self, base: str, name: str) -> None:
        self.base = base
        self.name = name
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def __aenter__(self) -> Person:
        """Signed up, or logged in when a run before this one signed them up."""
        credentials = {"username": self.name, "password": PASSWORD}
        async with self.http.post(f"{self.base}/api/signup", json=credentials) as response:
            if response.status == 409:
                await self.call("POST", "/api/login", credentials)
            elif response.status != 201:
                raise RuntimeError(f"signup: {response.status} {await response.text()}")
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.http.close()

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, f"{self.base}{path}", json=body) as response:
            if response.status >= 300:
                raise RuntimeError(f"{method} {path}: {response.status} {await response.text()}")
            return None if response.status == 204 else await response.json()

    async def socket(self) -> Socket:
        tokens = await self.call("POST", "/api/token")
        ws = await self.http.ws_connect(tokens["ws_url"])
        socket = Socket(ws, self)
        welcome = await socket.send_and_wait({"type": "auth", "token": tokens["access_token"]})
        socket.user = welcome["user"]["id"]
        await socket.request({"type": "subscribe", "channel": f"user:{socket.user}"})
        return socket


class Socket:
    """One socket, read by one task: frames are matched to requests by ``id``, the rest queued."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, person: Person) -> None:
        self.ws = ws
        self.person = person
        self.user = ""
        self._ids = itertools.count(1)

    async def send_and_wait(self, frame: dict[str, Any]) -> dict[str, Any]:
        await self.ws.send_json(frame)
        return await self.next(lambda f: f["type"] in ("auth_success", "auth_error"))

    async def attempt(self, frame: dict[str, Any]) -> dict[str, Any]:
        """The reply to ``frame``, an ``error`` included."""
        request_id = next(self._ids)
        await self.ws.send_json({**frame, "id": request_id})
        return await self.next(lambda f: f.get("id") == request_id)

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        reply = await self.attempt(frame)
        if reply["type"] == "error":
            raise RuntimeError(f"{self.person.name}: {frame['type']} refused: {reply}")
        return reply

    async def renew(self) -> None:
        """A new token on the same socket: the grant now lists what was shared meanwhile."""
        tokens = await self.person.call("POST", "/api/token")
        await self.send_and_wait({"type": "auth", "token": tokens["access_token"]})

    async def next(self, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        async with asyncio.timeout(WAIT):
            while True:
                message = await self.ws.receive()
                if message.type != aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"closed: {self.ws.close_code} {message.extra}")
                frame: dict[str, Any] = message.json()
                if wanted(frame):
                    return frame

    async def closed(self) -> tuple[int | None, str]:
        async with asyncio.timeout(WAIT):
            while True:
                message = await self.ws.receive()
                if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    return self.ws.close_code, str(message.extra or "")


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(WAIT):
        while not await check():  # noqa: ASYNC110 (the webhooks arrive when they arrive)
            await asyncio.sleep(0.1)


async def run(base: str) -> int:
    async with Person(base, "alice") as alice, Person(base, "bob") as bob:
        doc = await alice.call("POST", "/api/documents", {"title": "Plan"})
        channel = doc["channel"]
        print(f"alice wrote {doc['title']!r}: its chat is {channel}")
        bobs = await bob.socket()
        reply = await bobs.attempt({"type": "subscribe", "channel": channel})
        print(f"bob may not subscribe yet: {reply['code']}")
        await alice.call("PUT", f"/api/documents/{doc['id']}/shares/bob")
        notice = await bobs.next(lambda f: f["type"] == "message")
        print(f"alice shared it; bob is told on {notice['channel']}: {notice['data']['type']}")
        await bobs.renew()
        await bobs.request({"type": "subscribe", "channel": channel})
        alices = await alice.socket()
        await alices.request({"type": "subscribe", "channel": channel})
        await alices.request({"type": "publish", "channel": channel, "data": {"text": "hi bob"}})
        got = await bobs.next(lambda f: f["type"] == "message" and f["channel"] == channel)
        print(
            f"bob got {got['data']['text']!r} from {got['from_username']} (kept as #{got['data']['id']})"
        )

        async def both_online() -> bool:
            online = (await alice.call("GET", "/api/online"))["online"]
            return {"alice", "bob"} <= set(online)

        await until(both_online)
        print("online, from the webhooks: alice, bob")
        await alice.call("DELETE", f"/api/documents/{doc['id']}/shares/bob")
        left = await bobs.next(lambda f: f["type"] == "unsubscribed" and f["channel"] == channel)
        print(f"alice un-shared it; bob's socket left {channel} at once ({left['reason']})")
        kept = await alice.call("GET", f"/api/documents/{doc['id']}/messages")
        print(
            f"the example kept the chat: {[m['author'] + ': ' + m['text'] for m in kept['messages']]}"
        )
        await bob.call("DELETE", "/api/account")
        code, reason = await bobs.closed()
        print(f"bob deleted his account; his socket was closed {code} {reason}")
        await alices.ws.close()

        async def nobody_online() -> bool:
            return not (await alice.call("GET", "/api/online"))["online"]

        await until(nobody_online)
        print("online, from the webhooks: nobody")
    return 0
