"""examples/app_backend against real processes: auth_service on PostgreSQL, two ws replicas on a
private Redis (the proxies and webhooks pointed at the example), and the example itself, driven
by aiohttp clients as its users' browsers, and once by the JavaScript client in Node fetching
its tokens from the example (``getToken``).

Sharing a document lets the second user subscribe, un-sharing plus ``/v1/unsubscribe`` removes
them at once, deleting the user ends their sessions and closes their sockets on both replicas,
and the example's webhook log holds every connect and disconnect exactly once, a replayed batch
included."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from realtime_gateway_protocol.signatures import HEADER, sign
from tests.services import free_port
from tests.support.js_package import install_packed, run
from tests.support.poll import poll
from tests.system.cluster import API_KEY, Cluster, running_cluster
from tests.system.procs import Proc, run_cli
from tests.system.wire import expect_close, frame, request

pytestmark = [pytest.mark.system, pytest.mark.postgres, pytest.mark.redis]
ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"
REGISTER = [
    "clients",
    "create",
    "notes",
    "--grant",
    "token-exchange",
    "--namespaces",
    "doc",
    "--json",
]


@dataclass
class Notes:
    url: str
    data_dir: Path
    cluster: Cluster
    people: list[Person] = field(default_factory=list)

    def webhook_log(self) -> list[dict[str, Any]]:
        with sqlite3.connect(self.data_dir / "notes.db") as conn:
            rows = conn.execute("SELECT event FROM webhook_events").fetchall()
        return [json.loads(row[0]) for row in rows]

    def connections(self) -> dict[str, int]:
        """Open sockets per user, as the example counted them from the webhooks."""
        with sqlite3.connect(self.data_dir / "notes.db") as conn:
            rows = conn.execute("SELECT user_id, connections FROM online").fetchall()
        return {f"notes:{user}": n for user, n in rows}

    @property
    def webhook_secret(self) -> str:
        return (self.data_dir / "webhook-secret").read_text().strip()


def example_env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {"NOTES_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT), **extra}


@pytest.fixture(scope="module")
def notes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Notes]:
    work = tmp_path_factory.mktemp("example")
    data_dir = work / "notes"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    run_cli("examples.app_backend", ["init"], example_env(data_dir))
    ws_env = {
        "WS_PROXY": f"doc.subscribe={base}/rt/subscribe doc.publish={base}/rt/publish",
        "WS_PROXY_SECRET_FILE": str(data_dir / "proxy-secret"),
        "WS_PROXY_CACHE_TTL": "1",
        "WS_WEBHOOK_URL": f"{base}/rt/webhooks",
        "WS_WEBHOOK_SECRET_FILE": str(data_dir / "webhook-secret"),
        "WS_WEBHOOK_RETRY_CAP": "0.5",
    }
    with running_cluster(work, ws_env=ws_env, auth_replicas=1, ws_replicas=2) as cluster:
        registered = run_cli("auth_service", REGISTER, cluster.auth_env)
        (data_dir / "client.json").write_text(registered)
        (work / "api-key").write_text(API_KEY)
        env = example_env(
            data_dir,
            NOTES_PORT=str(port),
            NOTES_AUTH_URL=cluster.auth_url(0),
            NOTES_AUTH_ISSUER=cluster.issuer,
            NOTES_GATEWAY_URL=f"http://127.0.0.1:{cluster.ws_ports[1]}",
            NOTES_GATEWAY_API_KEY_FILE=str(work / "api-key"),
            NOTES_WS_URL=cluster.ws_url(0),
        )
        proc = Proc(
            "notes", [sys.executable, "-m", "examples.app_backend"], env, work, f"{base}/healthz"
        )
        proc.start()
        try:
            proc.wait_ready()
            yield Notes(base, data_dir, cluster)
        finally:
            proc.stop()


class Person:
    """A user of the example, as their browser: its cookie, its tokens, its sockets (counted,
    to check the webhook log against)."""

    def __init__(self, notes: Notes, http: aiohttp.ClientSession, name: str) -> None:
        self.notes = notes
        self.http = http
        self.name = f"{name}{uuid.uuid4().hex[:8]}"
        self.sub = ""
        self.sockets = 0

    async def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        async with self.http.request(method, f"{self.notes.url}{path}", json=body) as response:
            assert response.status == status, await response.text()
            return None if status == 204 else await response.json()

    async def token(self) -> str:
        token: str = (await self.call("POST", "/api/token"))["access_token"]
        return token

    @property
    def cookie(self) -> str:
        return self.http.cookie_jar.filter_cookies(URL(self.notes.url))["notes_session"].value

    @asynccontextmanager
    async def socket(self, replica: int) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
        async with self.http.ws_connect(self.notes.cluster.ws_url(replica)) as ws:
            self.sockets += 1
            await ws.send_json({"type": "auth", "token": await self.token()})
            welcome = await frame(ws)
            assert welcome["type"] == "auth_success", welcome
            self.sub = welcome["user"]["id"]
            yield ws


@asynccontextmanager
async def people(notes: Notes, *names: str) -> AsyncIterator[list[Person]]:
    """Signed up, each with a cookie jar of its own."""
    async with AsyncExitStack() as stack:
        found = []
        for name in names:
            jar = aiohttp.CookieJar(unsafe=True)  # the example is on an IP address
            http = await stack.enter_async_context(aiohttp.ClientSession(cookie_jar=jar))
            person = Person(notes, http, name)
            body = {"username": person.name, "password": PASSWORD}
            person.sub = f"notes:{(await person.call('POST', '/api/signup', body, 201))['id']}"
            found.append(person)
        notes.people.extend(found)
        yield found


async def test_sharing_lets_the_second_user_in_and_unsharing_removes_them_at_once(
    notes: Notes,
) -> None:
    async with people(notes, "alice", "bob") as (alice, bob):
        doc = await alice.call("POST", "/api/documents", {"title": "Plan"}, 201)
        channel, shares = doc["channel"], f"/api/documents/{doc['id']}/shares/{bob.name}"
        subscribe = {"type": "subscribe", "channel": channel}
        async with bob.socket(1) as bobs:
            reply = await request(bobs, subscribe)
            assert (reply["type"], reply["code"]) == ("error", "forbidden"), "not in his grant"
            await request(bobs, {"type": "subscribe", "channel": f"user:{bob.sub}"})
            await alice.call("PUT", shares, status=204)
            notice = await frame(bobs)
            assert (notice["channel"], notice["data"]["type"]) == (f"user:{bob.sub}", "shared")
            await bobs.send_json({"type": "auth", "token": await bob.token()})
            assert (await frame(bobs))["renewed"] is True
            assert (await request(bobs, subscribe))["type"] == "subscribed"
            async with alice.socket(0) as alices:
                await request(alices, subscribe)
                publish = {"type": "publish", "channel": channel}
                sent = {**publish, "data": {"text": "hello", "from": "forged"}}
                assert (await request(alices, sent))["type"] == "published"
                got = await frame(bobs)
                assert (got["from"], got["data"]["author"], got["data"]["text"]) == (
                    alice.sub,
                    alice.name,
                    "hello",
                )
                assert set(got["data"]) == {"id", "author", "text"}, "delivered as the app kept it"
                kept = await bob.call("GET", f"/api/documents/{doc['id']}/messages")
                assert [(m["id"], m["text"]) for m in kept["messages"]] == [
                    (got["data"]["id"], "hello")
                ]

                await alice.call("DELETE", shares, status=204)
                assert await frame(bobs, within=2) == {
                    "type": "unsubscribed",
                    "channel": channel,
                    "reason": "server",
                }

                async def refused() -> bool:
                    """His token still lists the channel; the proxy's 1 s allow runs out."""
                    reply = await request(bobs, subscribe)
                    if reply["type"] == "subscribed":
                        await request(bobs, {"type": "unsubscribe", "channel": channel})
                        return False
                    return reply["message"] == "this document is not shared with you"

                await poll(refused, within=5, interval=0.2)
                reply = await request(bobs, {**publish, "data": {"text": "still here?"}})
                assert (reply["code"], reply["message"]) == (
                    "forbidden",
                    "this document is not shared with you",
                )
                await bobs.send_json({"type": "auth", "token": await bob.token()})
                assert (await frame(bobs))["renewed"] is True
                reply = await request(bobs, subscribe)
                assert reply["code"] == "forbidden", "a new token no longer lists it"


async def test_deleting_a_user_closes_their_sockets_on_every_replica(notes: Notes) -> None:
    async with people(notes, "carol") as (carol,):
        async with carol.socket(0) as first, carol.socket(1) as second:
            answer = await carol.call("DELETE", "/api/account")
            assert answer == {"deleted": carol.name, "gateway_sessions_ended": 1}
            for ws in (first, second):
                assert await expect_close(ws) == (4403, "session_revoked")
        await carol.call("POST", "/api/token", status=401)


async def test_logging_out_of_the_app_closes_that_sessions_sockets(notes: Notes) -> None:
    async with people(notes, "frank") as (frank,), frank.socket(0) as ws:
        answer = await frank.call("POST", "/api/logout")
        assert answer == {"logged_out": True, "gateway_session_ended": True}
        assert await expect_close(ws) == (4403, "session_revoked")


async def test_the_js_client_fetches_its_tokens_from_the_example(
    notes: Notes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    app = await asyncio.to_thread(install_packed, tmp_path_factory.mktemp("js"))
    async with people(notes, "erin") as (erin,):
        doc = await erin.call("POST", "/api/documents", {"title": "Node"}, 201)
        (app / "notes.mjs").write_text(NODE_SCRIPT)
        env = {
            "NOTES_URL": notes.url,
            "NOTES_COOKIE": f"notes_session={erin.cookie}",
            "WS_URL": notes.cluster.ws_url(1),
            "CHANNEL": doc["channel"],
        }
        result = await asyncio.to_thread(run, ["node", "notes.mjs"], app, env, 60)
    printed = json.loads(result.stdout)
    assert printed["data"] == {
        "id": printed["data"]["id"],
        "author": erin.name,
        "text": "from Node",
    }
    assert printed["from"] == erin.sub and printed["calls"] >= 1


NODE_SCRIPT = """
import WebSocket from "ws";
import { GatewayClient } from "realtime-gateway-client";

const { NOTES_URL, NOTES_COOKIE, WS_URL, CHANNEL } = process.env;
let calls = 0;

async function getToken() {
  calls += 1;
  const response = await fetch(`${NOTES_URL}/api/token`, {
    method: "POST",
    headers: { Cookie: NOTES_COOKIE },
  });
  return (await response.json()).access_token;
}

const client = new GatewayClient({ wsUrl: WS_URL, WebSocket, getToken });
client.addEventListener("message", ({ detail }) => {
  if (detail.channel !== CHANNEL) return;
  console.log(JSON.stringify({ from: detail.from, data: detail.data, calls }));
  client.close();
});
await client.connect();
await client.subscribe(CHANNEL);
await client.publish(CHANNEL, { text: "from Node" });
"""


async def test_the_webhook_log_holds_every_connect_and_disconnect_once(notes: Notes) -> None:
    """Every socket this module's people opened from Python, once each, whichever replica
    reported it; then every event the log holds sent again, signed: nothing changes."""
    async with people(notes, "dave") as (dave,):
        for replica in (0, 1, 0):
            async with dave.socket(replica):
                pass
        opened = {person.sub: person.sockets for person in notes.people if person.sockets}

        def tally() -> Counter[tuple[str, str]]:
            return Counter(
                (e["user"], e["type"])
                for e in notes.webhook_log()
                if e["type"] in ("connect", "disconnect") and e["user"] in opened
            )

        expected = Counter(
            {(sub, kind): n for sub, n in opened.items() for kind in ("connect", "disconnect")}
        )

        async def all_in() -> bool:
            return tally() == expected

        await poll(all_in, within=15, interval=0.2)
        assert dave.name not in (await dave.call("GET", "/api/online"))["online"]
    log = notes.webhook_log()
    connects = [e for e in log if e["type"] == "connect"]
    async with aiohttp.ClientSession() as http:
        for batch in [log[i : i + 50] for i in range(0, len(log), 50)] + [connects]:
            body = json.dumps({"events": batch}).encode()
            signed = {
                HEADER: sign(body, [notes.webhook_secret]),
                "Content-Type": "application/json",
            }
            async with http.post(f"{notes.url}/rt/webhooks", data=body, headers=signed) as resp:
                assert resp.status == 204
        async with http.post(f"{notes.url}/rt/webhooks", data=body) as resp:
            assert resp.status == 401, "unsigned"
    assert tally() == expected and len(notes.webhook_log()) == len(log)
    counts = notes.connections()
    assert {sub: counts[sub] for sub in opened} == dict.fromkeys(opened, 0), "nobody counted in"
