"""The load generator: ``python -m tests.bench.loadgen AGENT KEY_DIR ISSUER``, one JSON op a line.

It runs in its own process (pinned away from the server's core by the orchestrator) and keeps its
sockets between ops, so the orchestrator can hold 10k sockets, read the server's memory, then probe.
Every op is bounded: by its count, and by ``budget`` seconds (an op over budget answers an error).
Only 127.0.0.1 is ever targeted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import uvloop

from realtime_gateway_client.dpop import DPoPKey
from realtime_gateway_protocol.access_token import ALGORITHM, REQUIRED_CLAIMS
from shared.dpop import thumbprint
from tests.bench.procinfo import cpu_seconds
from tests.bench.tokens import AUDIENCE, BenchKey
from tests.bench.wsclient import HOST, WSClient, WSClosed, connect

PASSWORD = "benchmark password 123"
Result = dict[str, Any]


def quantiles(samples: list[float]) -> Result:
    """p50/p99 in milliseconds (and the count), or nulls without samples."""
    if len(samples) < 2:
        return {"p50_ms": None, "p99_ms": None, "n": len(samples)}
    cuts = statistics.quantiles(samples, n=100)
    return {"p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000, "n": len(samples)}


async def bounded(count: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> float:
    """Run ``one(i)`` for i < count over ``concurrency`` tasks; return the elapsed seconds."""
    indexes = iter(range(count))

    async def worker() -> None:
        for index in indexes:
            await one(index)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


@contextlib.contextmanager
def collector_pauses() -> Iterator[list[float]]:
    """This process's collector pauses (seconds) while the block runs: a latency figure timed
    here includes them, so a row can tell the generator's pauses from the server's."""
    pauses: list[float] = []
    began = 0.0

    def on_gc(phase: str, _: dict[str, int]) -> None:
        nonlocal began
        if phase == "start":
            began = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - began)

    gc.callbacks.append(on_gc)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(on_gc)


def per_call(seconds: float, one: Callable[[int], object]) -> Result:
    """Call ``one(n)`` for ``seconds`` (at most a million times): calls/s, and the CPU of one."""
    count, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds and count < 1_000_000:
        one(count)
        count += 1
    return {
        "rate": count / (time.perf_counter() - start),
        "cpu_us": (time.process_time() - cpu) / count * 1e6,
    }


async def until(condition: Callable[[], bool], within: float) -> None:
    """Poll a counter that protocol callbacks update, for at most ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


def auth_frame(token: str, proof: str | None = None) -> str:
    frame = {"type": "auth", "token": token}
    if proof is not None:
        frame["proof"] = proof
    return json.dumps(frame)


class Agent:
    """One generator process: its tokens, its held sockets, and the ops the orchestrator calls."""

    def __init__(self, name: str, key: BenchKey) -> None:
        self.name = name
        self.key = key
        self.pool: list[str] = []
        self.cursor = 0
        self.held: list[WSClient] = []
        self.reauthed: list[float] = []
        self.watchers: set[asyncio.Task[None]] = set()
        self.delivered = 0
        self.last_delivery = 0.0
        self.dpop = DPoPKey.generate()
        self.jkt = thumbprint(self.dpop.public_jwk)

    def sub(self, index: int) -> str:
        return f"{self.name}-u{index}"

    def token(self) -> str:
        """The next pooled token: a fresh one for every connection to one server process."""
        if self.cursor == len(self.pool):
            self.pool.append(self.key.mint(self.sub(self.cursor)))
        self.cursor += 1
        return self.pool[self.cursor - 1]

    async def op_mint(self, count: int) -> Result:
        start = time.perf_counter()
        while len(self.pool) < count:
            self.pool.append(self.key.mint(self.sub(len(self.pool))))
        return {"seconds": time.perf_counter() - start, "pool": len(self.pool)}

    async def op_reset(self) -> Result:
        self.cursor = 0
        return {}

    async def _authenticated(self, port: int, path: str, token: str) -> WSClient:
        client = await connect(port, path)
        try:
            client.send_text(auth_frame(token))
            reply = await client.recv()
            if "auth_success" not in reply:
                raise RuntimeError(f"auth refused: {reply[:200]}")
        except BaseException:
            client.abort()  # given up on (refused, timed out): its socket must not linger
            raise
        return client

    async def op_hold(
        self, port: int, path: str, count: int, concurrency: int = 100, fallback: int = 0
    ) -> Result:
        """Open ``count`` more authenticated idle sockets; with ``fallback``, each one reconnects
        there and re-authenticates once its server dies."""
        errors: list[str] = []

        async def one(_: int) -> None:
            token = self.token()
            try:
                client = await self._authenticated(port, path, token)
            except (OSError, RuntimeError, TimeoutError, WSClosed) as exc:
                errors.append(repr(exc)[:200])
                return
            self.held.append(client)
            if fallback:
                task = asyncio.create_task(self._reconnect(client, fallback, token))
                self.watchers.add(task)
                task.add_done_callback(self.watchers.discard)

        elapsed = await bounded(count, concurrency, one)
        return {"rate": (count - len(errors)) / elapsed, "errors": len(errors), "first": errors[:3]}

    async def _reconnect(self, client: WSClient, port: int, token: str) -> None:
        await client.closed
        for _ in range(20):
            try:
                fresh = await self._authenticated(port, "/ws", token)
            except (OSError, RuntimeError, TimeoutError, WSClosed):
                await asyncio.sleep(0.05)
                continue
            self.reauthed.append(time.time())
            self.held.append(fresh)
            return

    async def op_reauthed(self, expect: int, within: float) -> Result:
        await until(lambda: len(self.reauthed) >= expect, within)
        return {"count": len(self.reauthed), "last": max(self.reauthed, default=0.0)}

    async def op_close_all(self) -> Result:
        for watcher in list(self.watchers):
            watcher.cancel()  # a socket closed on purpose must not reconnect
        held, self.held = self.held, []
        self.reauthed = []

        async def one(index: int) -> None:
            try:
                await held[index].close(5)
            except (OSError, TimeoutError):
                held[index].abort()

        await bounded(len(held), 200, one)
        return {"closed": len(held)}

    async def op_handshakes(
        self,
        port: int,
        path: str,
        count: int,
        concurrency: int,
        rogue: bool = False,
        rate: float = 0,
        dpop: bool = False,
        samples: bool = False,
    ) -> Result:
        """Connect, authenticate, read the reply, close: ``count`` times, paced at ``rate``/s when
        given. With ``rogue`` every token names a distinct unknown ``kid`` (the unknown-kid flood)
        and a refusal is expected. With ``dpop`` every token is DPoP-bound to this agent's key and
        its auth frame carries a fresh ES256 proof (made before the clock starts for it).
        ``cpu_share`` is how busy this generator was meanwhile; ``samples`` adds every latency (s)."""
        latencies: list[float] = []
        errors: list[str] = []
        template = self.key.mint(self.sub(0)) if rogue else ""
        began, cpu = time.perf_counter(), time.process_time()

        async def one(index: int) -> None:
            token = rogue_token(template, index) if rogue else self.token()
            proof = None
            if dpop:
                token = self.key.mint(self.sub(index), jkt=self.jkt)
                url = f"ws://{HOST}:{port}{path}"
                proof = self.dpop.proof("GET", url, access_token=token)
            if rate:
                await asyncio.sleep(max(0.0, began + index / rate - time.perf_counter()))
            start = time.perf_counter()
            try:
                client = await connect(port, path)
                client.send_text(auth_frame(token, proof))
                reply = await client.recv()
                if ("auth_success" in reply) == rogue:
                    errors.append(reply[:200])
                latencies.append(time.perf_counter() - start)
                await client.close()
            except WSClosed:
                if not rogue:
                    errors.append("closed")
            except (OSError, TimeoutError) as exc:
                errors.append(repr(exc)[:200])

        elapsed = await bounded(count, concurrency, one)
        return {
            "rate": count / elapsed,
            "cpu_share": (time.process_time() - cpu) / elapsed,
            "errors": len(errors),
            "first": errors[:3],
            **quantiles(latencies),
            **({"samples": latencies} if samples else {}),
        }

    async def op_subscribe(self, channel: str) -> Result:
        async def one(index: int) -> None:
            client = self.held[index]
            client.send_text(json.dumps({"type": "subscribe", "channel": channel}))
            reply = await client.recv()
            assert "subscribed" in reply, reply

        await bounded(len(self.held), 200, one)
        return {"subscribed": len(self.held)}

    async def op_arm(self) -> Result:
        """Count every text frame pushed from now on, without queueing it."""
        self.delivered = 0

        def count(_: WSClient, __: str) -> None:
            self.delivered += 1
            self.last_delivery = time.time()

        for client in self.held:
            client.on_text = count
        return {}

    async def op_deliveries(self, expect: int, within: float) -> Result:
        await until(lambda: self.delivered >= expect * len(self.held), within)
        for client in self.held:
            client.on_text = None
        return {"delivered": self.delivered, "last": self.last_delivery}

    async def op_storm(
        self, port: int, count: int, exp: float, warning: float, watch_until: float
    ) -> Result:
        """Open ``count`` sockets whose tokens all expire at ``exp``; renew each in-band (same
        user, a token valid an hour) on its ``token_expiring``; watch for closes until
        ``watch_until``. Lateness is measured against the documented schedule."""
        short = [self.key.mint(self.sub(i), exp=exp) for i in range(count)]
        lateness: list[float] = []
        closes: list[int | None] = []
        renewed = 0

        async def one(index: int) -> None:
            nonlocal renewed
            try:
                client = await self._authenticated(port, "/ws", short[index])
            except (OSError, RuntimeError, TimeoutError, WSClosed):
                closes.append(-1)
                return
            authed = time.time()
            life = exp - authed
            due = exp - warning if life >= 2 * warning else authed + life / 2
            try:
                while "token_expiring" not in await client.recv(watch_until - time.time()):
                    pass
                lateness.append(max(0.0, time.time() - due))
                client.send_text(auth_frame(self.pool[index]))
                while '"renewed"' not in await client.recv(watch_until - time.time()):
                    pass
                renewed += 1
                await client.recv(max(0.01, watch_until - time.time()))
            except TimeoutError:
                pass
            except WSClosed as closed:
                closes.append(closed.code)
            self.held.append(client)

        await self.op_mint(count)
        await bounded(count, count, one)
        return {"lateness": lateness, "renewed": renewed, "closes": closes}

    async def op_cross(self, sub_port: int, pub_port: int, rate: int, seconds: float) -> Result:
        """Publish on one replica at ``rate`` msg/s, time each delivery on another."""
        channel = f"chat:cross-{time.monotonic_ns()}"
        sub = await self._authenticated(sub_port, "/ws", self.token())
        pub = await self._authenticated(pub_port, "/ws", self.token())
        sub.send_text(json.dumps({"type": "subscribe", "channel": channel}))
        assert "subscribed" in await sub.recv()
        sent: dict[int, float] = {}
        samples: list[float] = []

        def arrived(_: WSClient, text: str) -> None:
            frame = json.loads(text)
            if frame.get("type") == "message" and frame["data"] in sent:
                samples.append(time.perf_counter() - sent.pop(frame["data"]))

        refused: dict[str, int] = {}

        def answered(_: WSClient, text: str) -> None:
            frame = json.loads(text)
            if frame.get("type") == "error":
                code = str(frame.get("code"))
                refused[code] = refused.get(code, 0) + 1

        sub.on_text = arrived
        pub.on_text = answered
        total = int(rate * seconds)
        with collector_pauses() as pauses:
            start = time.perf_counter()
            for n in range(total):
                await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
                sent[n] = time.perf_counter()
                pub.send_text(json.dumps({"type": "publish", "channel": channel, "data": n}))
            await until(lambda: not sent, 5)
        await asyncio.gather(sub.close(), pub.close())
        return {**quantiles(samples), "lost": len(sent), "sent": total, "refused": refused,
                "over_5ms": sum(sample > 0.005 for sample in samples),
                "max_ms": max(samples, default=0) * 1000,
                "generator_gc_max_ms": max(pauses, default=0) * 1000}  # fmt: skip

    async def op_sign(self, seconds: float) -> Result:
        """Raw RS256 signatures/s: pyjwt over cryptography, the claims of an access token; and
        the CPU of one, which the other processes of a shared machine do not move."""
        return per_call(seconds, lambda n: self.key.mint(self.sub(n)))

    async def op_verify(self, seconds: float, count: int = 2_000) -> Result:
        """The CPU of one ``jwt.decode`` of a fresh access token, called as ws_service calls it
        (RS256, the key object, audience, issuer, the required claims): the part of an in-band
        handshake that pyjwt does, which no change to the gateway removes. The loop cycles
        through ``count`` distinct tokens; pyjwt keeps nothing between calls, so a token seen
        again costs what a fresh one does."""
        tokens = [self.key.mint(self.sub(n)) for n in range(count)]
        public = self.key.private.public_key()
        required = list(REQUIRED_CLAIMS)
        return per_call(
            seconds,
            lambda n: jwt.decode(tokens[n % count], public, algorithms=[ALGORITHM],
                                 audience=AUDIENCE, issuer=self.key.issuer, leeway=5,
                                 options={"require": required}),
        )  # fmt: skip

    async def op_refresh(
        self,
        base: str,
        logins: int,
        count: int,
        dpop: bool = False,
        warmup: int = 0,
        pid: int | None = None,
    ) -> Result:
        """Refresh grants/s over ``logins`` rotating chains on one auth process, after ``warmup``
        untimed ones; with ``dpop`` the sessions are bound and every refresh carries a fresh
        proof. With the server's ``pid``, also its CPU per timed refresh (logins excluded)."""
        signer = self.dpop if dpop else None

        def proven(path: str) -> dict[str, str]:
            return {} if signer is None else {"DPoP": signer.proof("POST", base + path)}

        async with aiohttp.ClientSession(base_url=base) as http:
            user = await register(http, f"{self.name}-refresh")
            chains = [
                (await login(http, user, proven("/v1/login")))["refresh_token"]
                for _ in range(logins)
            ]

            free = list(range(len(chains)))  # a chain is never refreshed twice at once

            async def one(_: int) -> None:
                slot = free.pop()
                form = {"grant_type": "refresh_token", "refresh_token": chains[slot]}
                async with http.post("/v1/token", data=form, headers=proven("/v1/token")) as resp:
                    assert resp.status == 200, await resp.text()
                    chains[slot] = (await resp.json())["refresh_token"]
                free.append(slot)

            await bounded(warmup, len(chains), one)
            cpu = cpu_seconds(pid) if pid else 0.0
            elapsed = await bounded(count, len(chains), one)
            spent = cpu_seconds(pid) - cpu if pid else None
        return {"rate": count / elapsed, "cpu_us": spent and spent / count * 1e6}

    async def op_login_flood(self, base: str, seconds: float, concurrency: int) -> Result:
        """Logins as fast as they go for ``seconds``, while a probe times ``GET /healthz`` every
        10 ms: its latency above the idle one is the event-loop lag a request sees."""
        async with aiohttp.ClientSession(base_url=base) as http:
            user = await register(http, f"{self.name}-flood")
            idle = [await probe(http) for _ in range(50)]
            stop = time.monotonic() + seconds
            logins = 0

            async def flood() -> None:
                nonlocal logins
                while time.monotonic() < stop:
                    await login(http, user)
                    logins += 1

            async def probes() -> list[float]:
                samples = []
                while time.monotonic() < stop:
                    samples.append(await probe(http))
                    await asyncio.sleep(0.01)
                return samples

            prober = asyncio.create_task(probes())
            await asyncio.gather(*(flood() for _ in range(concurrency)))
            loaded = await prober
        return {
            "logins_per_s": logins / seconds,
            "idle": quantiles(idle),
            "loaded": quantiles(loaded),
        }

    async def op_revocation(self, base: str, ws_port: int, sessions: int) -> Result:
        """Logout on auth -> close on a ws replica, ``sessions`` times."""
        samples: list[float] = []
        async with aiohttp.ClientSession(base_url=base) as http:
            user = await register(http, f"{self.name}-revoked")
            for _ in range(sessions):
                tokens = await login(http, user)
                client = await self._authenticated(ws_port, "/ws", tokens["access_token"])
                started = time.perf_counter()
                bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
                async with http.post("/v1/logout", headers=bearer) as resp:
                    assert resp.status == 200, await resp.text()
                async with asyncio.timeout(10):
                    await client.closed
                samples.append(time.perf_counter() - started)
        return quantiles(samples)


def rogue_token(template: str, index: int) -> str:
    """``template`` with a header naming the unknown kid ``rogue-<index>``; signature unchanged
    (the server must refuse on the kid before it could check the signature)."""
    header = {"alg": "RS256", "typ": "at+jwt", "kid": f"rogue-{index}"}
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return encoded + template[template.index(".") :]


async def register(http: aiohttp.ClientSession, username: str) -> str:
    creds = {"username": username, "password": PASSWORD}
    async with http.post("/v1/register", json=creds) as resp:
        assert resp.status in (201, 409), await resp.text()
    return username


async def login(
    http: aiohttp.ClientSession, username: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    creds = {"username": username, "password": PASSWORD}
    async with http.post("/v1/login", json=creds, headers=headers or {}) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def probe(http: aiohttp.ClientSession) -> float:
    start = time.perf_counter()
    async with http.get("/healthz") as resp:
        await resp.read()
    return time.perf_counter() - start


async def serve(agent: Agent) -> None:
    """Answer ops from stdin until it closes: ``{"op", "budget", ...args}`` -> one JSON line."""
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        request = json.loads(line)
        name, budget = request.pop("op"), request.pop("budget", 300)
        try:
            async with asyncio.timeout(budget):
                result = await getattr(agent, f"op_{name}")(**request)
        except Exception as exc:  # reported to the orchestrator, which names the figure it spoils
            result = {"error": f"{name}: {exc!r}"[:500]}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    name, key_dir, issuer = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(Agent(name, BenchKey(key_dir, issuer))))
