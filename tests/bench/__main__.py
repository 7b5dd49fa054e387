"""``python -m tests.bench [--quick]``: goals 1-9 of the performance issue, measured in one run.

Every figure is divided by a baseline measured in the same run on the same machine (a bare aiohttp
server, or the raw RS256 signing rate), so ratios compare across machines while absolute numbers do
not. Servers run on core 0 and the load-generator agents on core 1 (when taskset exists). Writes
``bench/results/latest.json`` and PNG plots beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.bench.harness import (
    API_KEY,
    GENERATOR_CORES,
    ROOT,
    AgentProc,
    BenchError,
    Launched,
    launch,
    node_modules,
    redis_url,
)
from tests.bench.procinfo import (
    cpu_seconds,
    cpu_split,
    listen_overflows,
    raise_nofile,
    rss_kib,
    tree,
)
from tests.bench.report import Row, plot, print_tables, run_of, write_json
from tests.bench.tokens import BenchKey
from tests.services import free_port, postgres_schema

RESULTS = ROOT / "bench" / "results"
SECRET = "benchmark-secret-0123456789"
FLOOD_RATE = 500  # unknown-kid tokens/s: well under one core's capacity, so a stall would show
PY = sys.executable


@dataclass(frozen=True)
class Plan:
    """How much load each figure gets; ``--quick`` shrinks every count and duration."""

    steps: tuple[int, ...]
    handshakes: int
    probes: int
    fanout_at: int
    publishes: int
    storm: int
    warning: int
    reconnect: int
    rogue: int
    cross_seconds: float
    refreshes: int
    flood_seconds: float
    revocations: int
    sign_seconds: float

    @classmethod
    def for_run(cls, quick: bool, nofile: int) -> Plan:
        # one process cannot hold more sockets than its open-files limit, less some slack
        big = min(20_000, nofile - 400)
        if quick:
            return cls((1000, 2000), 1000, 100, 2000, 3, 1000, 4, 1000, 2000, 2, 300, 2, 10, 1)
        return cls(
            (2500, 5000, 10_000, big), 5000, 300, 10_000, 5, 10_000, 60, 10_000, 10_000, 5,
            2000, 5, 30, 3,
        )  # fmt: skip


@dataclass(frozen=True)
class Target:
    """A server under test: how to start it and which of the measurements apply."""

    name: str
    args: list[str]
    env: dict[str, str]
    hold: bool = True
    push: str | None = None  # "gateway" (POST /v1/publish after subscribing) or "bare" (/push)
    note: str = ""
    dpop: bool = False
    """Handshakes with DPoP-bound tokens, each auth frame carrying a fresh ES256 proof."""
    gc_probe: bool = False
    """Also measure the collector's pauses while 10k sockets connect, on a fresh process run
    under ``tests/bench/gcprobe.py`` (``args`` must be ``[python, ..., "-m", module, ...]``)."""

    def launched_args(self, gc_file: Path) -> list[str]:
        if not self.gc_probe:
            return self.args
        at = self.args.index("-m")
        python, module, rest = self.args[0], self.args[at + 1], self.args[at + 2 :]
        return [python, "-P", str(ROOT / "tests/bench/gcprobe.py"), str(gc_file), module, *rest]


class Bench:
    def __init__(self, plan: Plan, tmp: Path) -> None:
        self.plan = plan
        self.tmp = tmp
        self.rows: list[Row] = []
        self.peers: dict[str, dict[str, Any]] = {}
        self.ramps: dict[str, list[dict[str, Any]]] = {}
        self.workers: dict[str, list[tuple[int, float]]] = {}
        self.extra: dict[str, Any] = {}
        self.issuer = ""
        self.agents: list[AgentProc] = []
        self.prober: AgentProc | None = None
        """A third agent: new handshakes while the other two open the ramp's sockets."""
        self.sign_rate = 0.0
        self.verify_us = 0.0
        self.failures: list[str] = []

    @property
    def lead(self) -> AgentProc:
        return self.agents[0]

    def row(self, goal: int, figure: str, **fields: Any) -> Row:
        self.rows.append(Row(goal, figure, **fields))
        return self.rows[-1]

    def skipped(self, goal: int, figures: list[str], why: str) -> None:
        for figure in figures:
            self.row(goal, figure, note=f"not measured: {why}")
        print(f"  goal {goal}: not measured: {why}", flush=True)

    def ws_env(self, **extra: str) -> dict[str, str]:
        return {
            "WS_PORT": "{port}",
            "WS_JWKS_URL": f"{self.issuer}/.well-known/jwks.json",
            "WS_ISSUER": self.issuer,
            "WS_MAX_CONNECTIONS_PER_USER": "100000",
            "WS_API_KEYS": API_KEY,
            # The bench is its own issuer (no auth_service to hear revocations from), and every
            # load-generator socket comes from one address: lift the per-address pre-auth cap.
            "WS_LOCAL_BUS": "1",
            "WS_MAX_UNAUTHENTICATED_PER_ADDRESS": "1000000",
            **extra,
        }

    async def both(self, op: str, budget: float = 300, **args: Any) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(a.call(op, budget, **args) for a in self.agents)))

    async def split(self, op: str, count: int, budget: float = 300, **args: Any) -> list[Any]:
        """Run ``op`` with ``count`` shared between the agents."""
        n = len(self.agents)
        shares = [count // n + (i < count % n) for i in range(n)]
        calls = [
            a.call(op, budget, count=n, **args) for a, n in zip(self.agents, shares, strict=True)
        ]
        return list(await asyncio.gather(*calls))

    # -- setup ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """The JWKS issuer, two agents, and their token pools (minted before anything is timed)."""
        issuer_port = free_port()
        self.issuer = f"http://127.0.0.1:{issuer_port}"
        BenchKey(self.tmp, self.issuer)
        self.issuer_proc = launch(
            "issuer", [PY, "-m", "tests.bench.issuer", "{port}", str(self.tmp), self.issuer], {},
            self.tmp, cores=GENERATOR_CORES, port=issuer_port,
        )  # fmt: skip
        self.agents = [AgentProc(f"a{i}", self.tmp, self.issuer) for i in range(2)]
        self.prober = AgentProc("probe", self.tmp, self.issuer)
        for agent in [*self.agents, self.prober]:
            await agent.start()
        plan = self.plan
        pool = 200 + plan.handshakes + plan.probes * len(plan.steps) + max(plan.steps) // 2
        started = time.perf_counter()
        await self.both("mint", budget=900, count=max(pool, plan.storm // 2) + 10)
        await self.prober.call("mint", budget=900, count=PROBE_POOL)
        print(f"  token pools minted in {time.perf_counter() - started:.1f} s", flush=True)

    async def stop(self) -> None:
        for agent in [*self.agents, *([self.prober] if self.prober else [])]:
            await agent.stop()
        self.issuer_proc.proc.stop()

    async def auth_outcomes(self, server: Launched) -> dict[str, int]:
        """The ws process's ``ws_auth_total`` by outcome, from its ``/metrics``."""
        async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as resp:
            text = await resp.text()
        found = re.findall(r'^ws_auth_total\{outcome="([^"]+)"\} (\S+)$', text, re.MULTILINE)
        return {outcome: int(float(value)) for outcome, value in found}

    async def jwks_fetches(self) -> int:
        async with aiohttp.ClientSession() as http, http.get(f"{self.issuer}/stats") as resp:
            return int((await resp.json())["jwks_fetches"])

    # -- goals 1, 2, 5 (fan-out) and 9: one server at a time ---------------------------------

    async def measure(self, target: Target) -> dict[str, Any]:
        """Handshakes with CPU per connection, then a ramp of held sockets (memory, latency,
        fan-out at ``fanout_at``) on one server process."""
        plan, lead = self.plan, self.lead
        print(f"  {target.name}: handshakes", flush=True)
        server = launch(target.name, target.args, target.env, self.tmp)
        figures: dict[str, Any] = {"note": target.note} if target.note else {}
        try:
            await self.both("reset")
            await lead.call("handshakes", port=server.port, path="/ws", count=200, concurrency=20,
                            dpop=target.dpop)  # fmt: skip
            before = cpu_seconds(server.pid)
            shakes = await lead.call(
                "handshakes", port=server.port, path="/ws", count=plan.handshakes, concurrency=50,
                dpop=target.dpop,
            )  # fmt: skip
            spent = cpu_seconds(server.pid) - before
            figures |= {
                "handshakes_per_s": shakes["rate"],
                "generator_cpu_share": shakes["cpu_share"],
                "cpu_us_per_conn": spent / plan.handshakes * 1e6,
                "per_core_per_s": plan.handshakes / spent if spent else None,
                "handshake_p50_ms": shakes["p50_ms"],
                "handshake_p99_ms": shakes["p99_ms"],
                "handshake_errors": shakes["errors"],
            }
            if target.hold:
                figures |= await self.ramp(target, server)
        finally:
            await self.both("close_all", budget=120)
            server.proc.stop()
        if target.gc_probe:
            figures["gc_ramp"] = await self.gc_ramp(target)
        self.peers[target.name] = figures
        return figures

    async def gc_ramp(self, target: Target) -> dict[str, Any]:
        """A fresh process under ``tests/bench/gcprobe.py``: its collector's pauses while the two
        agents open ``GC_RAMP`` sockets (the largest step below it in a quick run) and a third makes
        new handshakes beside them. Apart from the memory ramp, whose figures it would move."""
        count = max((n for n in self.plan.steps if n <= GC_RAMP), default=self.plan.steps[0])
        print(f"  {target.name}: collector pauses while {count} sockets connect", flush=True)
        gc_file = self.tmp / f"gc-{time.monotonic_ns()}.json"
        server = launch(f"{target.name}-gc", target.launched_args(gc_file), target.env, self.tmp)
        stop = asyncio.Event()
        try:
            await self.both("reset")
            await gc_pauses(server, gc_file)  # from here on
            probing = asyncio.create_task(self.probe_handshakes(server, stop))
            try:
                opened = await self.split("hold", count, port=server.port, path="/ws")
                pauses = await gc_pauses(server, gc_file)
            finally:
                stop.set()
                samples = sorted(await probing)
        finally:
            await self.both("close_all", budget=120)
            server.proc.stop()
        errors = sum(part["errors"] for part in opened)
        if errors:
            raise BenchError(f"{errors} of {count} sockets refused: {opened[0]['first']}")
        p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000 if samples else None
        return {"sockets": count, "probes": len(samples), "probe_p99_ms": p99, **pauses}

    async def ramp(self, target: Target, server: Launched) -> dict[str, Any]:
        plan, held, points = self.plan, 0, []
        figures: dict[str, Any] = {}
        base = rss_kib(server.pid)
        for count in plan.steps:
            print(f"  {target.name}: holding {count} sockets", flush=True)
            opened = await self.split("hold", count - held, port=server.port, path="/ws")
            errors = sum(part["errors"] for part in opened)
            if errors:
                raise BenchError(
                    f"{errors} of {count - held} sockets refused: {opened[0]['first']}"
                )
            held = count
            await asyncio.sleep(1.0)
            rss = rss_kib(server.pid)
            probe = await self.lead.call(
                "handshakes", port=server.port, path="/ws", count=plan.probes, concurrency=10
            )
            points.append({
                "connections": count, "rss_kib": rss, "kib_per_socket": (rss - base) / count,
                "p50_ms": probe["p50_ms"], "p99_ms": probe["p99_ms"],
            })  # fmt: skip
            if count == plan.fanout_at and target.push:
                figures["fanout_per_s"], figures["fanout_cpu_us"] = await self.fanout(
                    target, server
                )
        self.ramps[target.name] = points
        by_count = {point["connections"]: point["kib_per_socket"] for point in points}
        figures["kib_per_socket_10k"] = by_count.get(10_000, points[-1]["kib_per_socket"])
        figures["kib_per_socket"] = by_count
        return figures

    async def probe_handshakes(self, server: Launched, stop: asyncio.Event) -> list[float]:
        """New handshakes, a few at a time, until ``stop``: their latencies (s). A batch is never
        cancelled midway (its answer would be read as the next op's)."""
        assert self.prober is not None
        samples: list[float] = []
        await self.prober.call("reset")
        while not stop.is_set() and len(samples) < PROBE_POOL - 100:
            got = await self.prober.call("handshakes", port=server.port, path="/ws",
                                         count=20, concurrency=2, samples=True)  # fmt: skip
            samples += got["samples"]
        return samples

    async def fanout(self, target: Target, server: Launched) -> tuple[float, float]:
        """Deliveries/s of ``publishes`` messages, each to every held socket, and the server's
        CPU per delivery: the rate is also bound by the generators that count the deliveries
        (on their one core), the CPU by the server alone."""
        channel = "chat:fanout"
        if target.push == "gateway":
            await self.both("subscribe", channel=channel)
        await self.both("arm")
        path, headers = ("/v1/publish", {"Authorization": f"Bearer {API_KEY}"})
        if target.push == "bare":
            path, headers = "/push", {}
        started = time.time()
        cpu = cpu_seconds(server.pid)
        async with aiohttp.ClientSession() as http:
            for n in range(self.plan.publishes):
                body = {"channel": channel, "data": {"n": n, "text": "fan-out " * 8}}
                async with http.post(f"{server.url}{path}", json=body, headers=headers) as resp:
                    assert resp.status == 202, await resp.text()
        got = await self.both("deliveries", expect=self.plan.publishes, within=120)
        spent = cpu_seconds(server.pid) - cpu
        delivered = sum(part["delivered"] for part in got)
        expected = self.plan.publishes * self.plan.fanout_at
        if delivered < expected:
            raise BenchError(f"fan-out delivered {delivered} of {expected}")
        rate = float(delivered / (max(part["last"] for part in got) - started))
        return rate, spent / delivered * 1e6

    async def handshake_targets(self) -> None:
        gateway_env = self.ws_env()
        key_args = ["{port}", str(self.tmp / "bench-key.pub.pem"), self.issuer]
        bare = [PY, "-m", "tests.bench.bare", "{port}"]
        targets = [
            Target("bare aiohttp", bare, {}, push="bare"),
            Target("bare aiohttp, GC tuned", bare, {"BENCH_GC": "tuned"}, hold=False,
                   note="gc.freeze() + gen-0 threshold 100k: the GC variant, handshakes only"),
            Target("ws_service", [PY, "-m", "ws_service"], gateway_env, push="gateway",
                   gc_probe=True),
            Target("ws_service, DPoP", [PY, "-m", "ws_service"], gateway_env, hold=False,
                   dpop=True, note="DPoP-bound tokens, an ES256 proof in every auth frame"),
        ]  # fmt: skip
        django = [PY, "-m", "tests.bench.peers.django_peer", *key_args]
        if _importable("channels") and _importable("uvicorn"):
            targets += [
                Target("Django Channels (uvicorn)", django, {}, push="bare",
                       note="fan-out: a loop over consumers, no channel layer"),
                Target("Django Channels, GC tuned", django, {"BENCH_GC": "tuned"}, hold=False),
            ]  # fmt: skip
        else:
            self.peers["Django Channels (uvicorn)"] = {"note": "not installed: make bench does it"}
        modules = node_modules()
        if modules is not None:
            node = ["node", str(ROOT / "tests/bench/peers/node/server.js"), *key_args]
            targets.append(Target("Node ws + jsonwebtoken", node, {"NODE_PATH": str(modules)},
                                  push="bare"))  # fmt: skip
        else:
            self.peers["Node ws + jsonwebtoken"] = {"note": "node_modules missing: make bench"}
        for target in targets:
            try:
                await self.measure(target)
            except BenchError as exc:
                self.peers[target.name] = {"note": f"failed: {exc}"}
                print(f"  {target.name}: failed: {exc}", flush=True)
        print("  pyjwt verification alone (one process)", flush=True)
        self.verify_us = float(
            (await self.lead.call("verify", seconds=self.plan.sign_seconds))["cpu_us"]
        )
        self.goal_rows_1_2_5()

    def goal_rows_1_2_5(self) -> None:
        bare, gateway = self.peers.get("bare aiohttp", {}), self.peers.get("ws_service", {})

        def pair(
            goal: int, figure: str, key: str, target: str, check: Callable[[float], bool]
        ) -> None:
            value, base = gateway.get(key), bare.get(key)
            row = self.row(goal, figure, value=value, baseline=base, target=target)
            if row.ratio is not None:
                row.met = check(row.ratio)

        pair(1, "in-band handshakes/s per server core, fresh token (1/CPU)",
             "per_core_per_s", ">= 0.71x", lambda r: r >= 0.71)  # fmt: skip
        pair(1, "server CPU us per connection", "cpu_us_per_conn", "<= 1.4x", lambda r: r <= 1.4)
        if bare.get("cpu_us_per_conn") and self.verify_us:
            self.row(1, "floor while pyjwt verifies: bare server CPU us + one jwt.decode",
                     value=bare["cpu_us_per_conn"] + self.verify_us,
                     baseline=bare["cpu_us_per_conn"], target="report",
                     note=f"jwt.decode {self.verify_us:.0f} us of CPU on the generator core, "
                          "called as ws_service calls it: no gateway code under this ratio")  # fmt: skip
        wall = self.row(1, "in-band handshakes/s, wall clock, 50 concurrent clients",
                        value=gateway.get("handshakes_per_s"), baseline=bare.get("handshakes_per_s"),
                        target="report")  # fmt: skip
        if "generator_cpu_share" in gateway and "generator_cpu_share" in bare:
            wall.note = (f"generator core busy {gateway['generator_cpu_share']:.0%} / "
                         f"{bare['generator_cpu_share']:.0%}: wall-clock rates are generator- and "
                         "noise-bound on 2 cores; the per-core figure above is not")  # fmt: skip
        for count in sorted(set(self.plan.steps) & {10_000, max(self.plan.steps)}):
            value = gateway.get("kib_per_socket", {}).get(count)
            base = bare.get("kib_per_socket", {}).get(count)
            row = self.row(
                2,
                f"KiB per idle authenticated socket at {count} (deflate offered)",
                value=value,
                baseline=base,
                target="<= 1.15x",
            )
            if row.ratio is not None:
                row.met = row.ratio <= 1.15
        ramp = gateway.get("gc_ramp")
        if ramp:
            self.row(10, f"longest GC pause (ms) while {ramp['sockets']} sockets connect",
                     value=ramp["max_ms"], target="<= 50 ms", met=ramp["max_ms"] <= 50,
                     note=f"{ramp['count']} collections, {ramp['total_ms']:.0f} ms in all, the "
                          f"longest {ramp['max_cpu_ms']:.0f} ms of CPU time; new "
                          f"handshake p99 during the ramp {ramp['probe_p99_ms'] or 0:.1f} ms "
                          f"({ramp['probes']} probes)")  # fmt: skip
        pair(5, f"fan-out deliveries/s, 1 publish -> {self.plan.fanout_at} local subscribers",
             "fanout_per_s", ">= 0.85x", lambda r: r >= 0.85)  # fmt: skip
        self.row(5, "server CPU us per fan-out delivery (the rate above, server side alone)",
                 value=gateway.get("fanout_cpu_us"), baseline=bare.get("fanout_cpu_us"),
                 target="report",
                 note="the rate is also bound by the generators counting the deliveries on "
                      "their one core; this is the server's own cost")  # fmt: skip
        dpop = self.peers.get("ws_service, DPoP", {})
        for key, figure in (
            ("cpu_us_per_conn", "server CPU us per connection"),
            ("per_core_per_s", "in-band handshakes/s per server core"),
        ):
            self.row(1, f"{figure}, DPoP-bound token + ES256 proof (vs bearer ws_service)",
                     value=dpop.get(key), baseline=gateway.get(key), target="report",
                     note="the bare aiohttp figure is in the rows above")  # fmt: skip

    # -- goal 6: expiry and refresh storm -------------------------------------------------------

    async def storm(self) -> None:
        plan = self.plan
        handshake_rate = self.peers.get("ws_service", {}).get("handshakes_per_s", 500.0)
        figures = [
            f"expiry warning lateness p99 (ms), {plan.storm} sockets, distinct users",
            "sockets renewed in-band",
            "unintended closes",
        ]
        warning = plan.warning
        server = launch(
            "ws-storm", [PY, "-m", "ws_service"],
            self.ws_env(WS_EXPIRY_WARNING=str(warning), WS_LEEWAY="1"), self.tmp,
        )  # fmt: skip
        try:
            mint = plan.storm / max(self.sign_rate, 100.0)
            opening = plan.storm / max(handshake_rate, 100.0)
            exp = math.ceil(time.time() + 1.3 * mint + 2 * opening + 2 * warning + 3)
            watch_until = exp + 1 + 3  # past exp + WS_LEEWAY: an unrenewed socket would close
            print(f"  storm: {plan.storm} tokens expiring in {exp - time.time():.0f} s", flush=True)
            parts = await self.split(
                "storm", plan.storm, budget=watch_until - time.time() + 120,
                port=server.port, exp=exp, warning=warning, watch_until=watch_until,
            )  # fmt: skip
        except BenchError as exc:
            self.skipped(6, figures, str(exc))
            return
        finally:
            await self.both("close_all", budget=120)
            server.proc.stop()
        lateness = sorted(sample for part in parts for sample in part["lateness"])
        renewed = sum(part["renewed"] for part in parts)
        closes = [code for part in parts for code in part["closes"]]
        p99 = (
            lateness[min(len(lateness) - 1, int(len(lateness) * 0.99))] * 1000 if lateness else None
        )
        latest = lateness[-1] * 1000 if lateness else 0.0
        self.row(6, figures[0], value=p99, target="<= 100 ms", met=p99 is not None and p99 <= 100,
                 note=f"{len(lateness)} warnings seen, the latest {latest:.0f} ms after exp - "
                      f"WS_EXPIRY_WARNING ({warning} s; the jitter sends most earlier)")  # fmt: skip
        self.row(6, figures[1], value=renewed, baseline=plan.storm, target="all",
                 met=renewed == plan.storm)  # fmt: skip
        self.row(6, figures[2], value=len(closes), target="0", met=not closes,
                 note=f"close codes {sorted(set(map(str, closes)))}" if closes else "")  # fmt: skip

    # -- goals 5 (cross-replica), 7 and 8 (unknown kid): two ws replicas over Redis ---------------

    async def replicas(self) -> None:
        plan, redis = self.plan, redis_url()
        cross = "cross-replica publish -> deliver p99 (ms) at 1k msg/s"
        storm = [f"reconnect storm: s until {plan.reconnect} clients re-authenticated",
                 "JWKS fetches during the reconnect storm"]  # fmt: skip
        if redis is None:
            self.skipped(5, [cross], "Redis is not reachable (TEST_REDIS_URL or 127.0.0.1:6379)")
            self.skipped(7, storm, "needs two replicas on Redis")
        # One user publishes 5,000 messages into a channel with history: lift the per-user
        # history budget (1 MiB by default, about 2,700 of them), or the rest are refused
        # history_full and the latency figure covers only the first half.
        env = self.ws_env(WS_RATE_PER_SECOND="5000", WS_RATE_BURST="5000",
                          WS_HISTORY_USER_BYTES="0",
                          **({"REDIS_URL": redis} if redis else {}))  # fmt: skip
        first = launch("ws-replica-1", [PY, "-m", "ws_service"], env, self.tmp)
        second = launch("ws-replica-2", [PY, "-m", "ws_service"], env, self.tmp)
        try:
            await self.both("reset")
            if redis is not None:
                await self.cross_replica(first, second, cross)
                await self.reconnect_storm(first, second, storm)
            await self.unknown_kid(second)
        finally:
            await self.both("close_all", budget=120)
            first.proc.stop()
            second.proc.stop()

    async def cross_replica(self, first: Launched, second: Launched, figure: str) -> None:
        print("  cross-replica latency", flush=True)
        got = await self.lead.call(
            "cross", sub_port=second.port, pub_port=first.port, rate=1000,
            seconds=self.plan.cross_seconds,
        )  # fmt: skip
        p99, p50 = got["p99_ms"], got["p50_ms"]
        delivered = f"{got['n']} of {got['sent']} delivered"
        if got["refused"]:
            delivered += ", refused: " + ", ".join(f"{n} {c}" for c, n in got["refused"].items())
        every = got["n"] == got["sent"]  # a latency over half the messages is not the figure
        note = delivered if p50 is None else f"p50 {p50:.2f} ms, {delivered}"
        note += (
            f"; {got['over_5ms']} over 5 ms, the slowest {got['max_ms']:.1f} ms; the "
            f"generator's longest collector pause {got['generator_gc_max_ms']:.1f} ms"
        )
        self.row(5, figure, value=p99, target="<= 5 ms", met=every and p99 is not None and p99 <= 5,
                 note=note)  # fmt: skip

    async def reconnect_storm(self, first: Launched, second: Launched, figures: list[str]) -> None:
        plan = self.plan
        print(f"  reconnect storm: {plan.reconnect} clients", flush=True)
        await self.split("hold", plan.reconnect, port=first.port, path="/ws", fallback=second.port)
        fetched = await self.jwks_fetches()
        overflows, cpu = listen_overflows(), cpu_split(second.pid)
        outcomes = await self.auth_outcomes(second)
        killed = time.time()
        assert first.proc.process is not None
        first.proc.process.send_signal(signal.SIGKILL)
        share = plan.reconnect // 2
        got = await self.both("reauthed", budget=200, expect=share, within=180)
        user, system = (
            after - before for after, before in zip(cpu_split(second.pid), cpu, strict=True)
        )
        spent, overflows = user + system, listen_overflows() - overflows
        done = sum(part["count"] for part in got)
        after = await self.auth_outcomes(second)
        answered = ", ".join(
            f"{after[k] - outcomes.get(k, 0)} {k}"
            for k in sorted(after)
            if after[k] != outcomes.get(k, 0)
        )
        fetches = await self.jwks_fetches() - fetched
        seconds = max(part["last"] for part in got) - killed
        # Issue 22's goal is stated for 10,000 clients; a quick run's smaller storm only reports.
        judged = plan.reconnect >= 10_000
        self.row(7, figures[0], value=seconds, target="<= 5 s" if judged else "report",
                 met=(seconds <= 5 and done == 2 * share) if judged else None,
                 note=f"{done} of {2 * share} re-authenticated on the surviving replica; its CPU "
                      f"meanwhile {spent:.2f} s ({spent / max(done, 1) * 1e6:.0f} us each, "
                      f"{system / max(spent, 1e-9):.0%} in the kernel); "
                      f"connections the kernel's full listen queues refused: {overflows}; the server's "
                      f"auth outcomes: {answered}")  # fmt: skip
        self.row(7, figures[1], value=fetches, target="0 or 1", met=fetches <= 1)
        await self.both("close_all", budget=120)

    async def unknown_kid(self, server: Launched) -> None:
        plan = self.plan
        print(f"  unknown-kid flood: {plan.rogue} tokens", flush=True)
        genuine: dict[str, Any] = {
            "port": server.port,
            "path": "/ws",
            "count": 300,
            "concurrency": 4,
        }
        before = await self.lead.call("handshakes", **genuine)
        fetched = await self.jwks_fetches()
        started = time.monotonic()
        flood, during = await asyncio.gather(
            self.agents[1].call("handshakes", port=server.port, path="/ws", count=plan.rogue,
                                concurrency=50, rogue=True, rate=FLOOD_RATE),
            self.lead.call("handshakes", **genuine),
        )  # fmt: skip
        seconds = time.monotonic() - started
        fetches = await self.jwks_fetches() - fetched
        allowed = seconds // 10 + 1
        self.row(
            8,
            f"JWKS fetches in a {plan.rogue}-token unknown-kid flood",
            value=fetches,
            target="<= 1 / 10 s",
            met=fetches <= allowed,
            note=f"{flood['rate']:.0f} tokens/s for {seconds:.1f} s, {flood['errors']} errors",
        )
        self.row(8, "genuine handshake p50 (ms) during the flood, vs before",
                 value=during["p50_ms"], baseline=before["p50_ms"], target="<= 1.5x",
                 met=during["p50_ms"] <= 1.5 * before["p50_ms"],
                 note=f"p99 {during['p99_ms']:.1f} vs {before['p99_ms']:.1f} ms; "
                      "'unchanged' read as within 1.5x")  # fmt: skip

    # -- goals 3, 4 and 8 (revocation): auth_service ---------------------------------------------

    def auth_env(self, **extra: str) -> dict[str, str]:
        return {"AUTH_PORT": "{port}", "AUTH_KEY_ENCRYPTION_SECRETS": SECRET,
                "AUTH_DATA_DIR": str(self.tmp / f"auth-{time.monotonic_ns()}"), **extra}  # fmt: skip

    async def refreshes(self, env: dict[str, str], name: str) -> float:
        plan = self.plan
        server = launch(name, [PY, "-m", "auth_service"], env, self.tmp)
        try:
            got = await self.lead.call("refresh", base=server.url, logins=16, count=plan.refreshes)
            rate = float(got["rate"])
            if name == "auth-sqlite":
                print("  refreshes on SQLite, DPoP-bound", flush=True)
                bound = await self.lead.call(
                    "refresh", base=server.url, logins=16, count=plan.refreshes, dpop=True
                )
                self.row(3, "refresh grants/s on one auth process, SQLite, DPoP-bound (vs bearer)",
                         value=bound["rate"], baseline=rate, target="report",
                         note="each refresh carries a fresh ES256 proof")  # fmt: skip
            if name == "auth-sqlite":
                print("  login flood with a lag probe", flush=True)
                flood = await self.lead.call(
                    "login_flood", base=server.url, seconds=plan.flood_seconds, concurrency=8
                )
                p99 = flood["loaded"]["p99_ms"]
                self.row(3, "event-loop lag p99 (ms) during a login flood (GET /healthz probe)",
                         value=p99, baseline=flood["idle"]["p99_ms"], target="<= 20 ms",
                         met=p99 is not None and p99 <= 20,
                         note=f"{flood['logins_per_s']:.1f} logins/s; baseline = idle probe p99; "
                              "lag seen from outside, service code untouched")  # fmt: skip
            return rate
        finally:
            server.proc.stop()

    async def auth(self) -> None:
        print("  raw RS256 signatures/s (one process)", flush=True)
        self.sign_rate = float(
            (await self.lead.call("sign", seconds=self.plan.sign_seconds))["rate"]
        )
        figure = "refresh grants/s on one auth process, {} (vs raw RS256 signs/s)"
        print("  refreshes on SQLite", flush=True)
        rate = await self.refreshes(self.auth_env(), "auth-sqlite")
        self.row(3, figure.format("SQLite"), value=rate, baseline=self.sign_rate,
                 target=">= 0.5x", met=rate / self.sign_rate >= 0.5)  # fmt: skip
        try:
            async with postgres_schema() as url:
                print("  refreshes on PostgreSQL", flush=True)
                rate = await self.refreshes(self.auth_env(AUTH_DATABASE_URL=url), "auth-pg")
                self.row(3, figure.format("PostgreSQL"), value=rate, baseline=self.sign_rate,
                         target=">= 0.5x", met=rate / self.sign_rate >= 0.5)  # fmt: skip
                await self.scaling(url)
                await self.revocation(url)
        except (Exception, pytest.skip.Exception) as exc:  # postgres_schema skips without a server
            if not any(row.figure == figure.format("PostgreSQL") for row in self.rows):
                self.skipped(3, [figure.format("PostgreSQL")], str(exc)[:200])

    async def scaling(self, database_url: str) -> None:
        """Goal 4: workers on one port. Detected from the process tree, so the bench measures the
        curve as soon as the services grow the feature, and says "not available" until then."""
        redis = redis_url()
        names = {"auth_service": "AUTH_WORKERS", "ws_service": "WS_WORKERS"}
        for module, variable in names.items():
            figure = f"{variable}=2: {'refreshes' if module == 'auth_service' else 'handshakes'}/s"
            if redis is None:
                self.skipped(4, [figure], "Redis is not reachable")
                continue
            env = (self.auth_env(AUTH_DATABASE_URL=database_url, REDIS_URL=redis)
                   if module == "auth_service" else self.ws_env(REDIS_URL=redis))  # fmt: skip
            curve: list[tuple[int, float]] = []
            for workers in (1, 2):
                server = launch(f"{module}-workers-{workers}", [PY, "-m", module],
                                {**env, variable: str(workers)}, self.tmp, cores=None)  # fmt: skip
                try:
                    await asyncio.sleep(1.0)
                    if workers == 2 and len(tree(server.pid)) < 2:
                        break
                    curve.append((workers, await self.worker_rate(module, server)))
                finally:
                    await self.both("close_all")
                    server.proc.stop()
            if len(curve) < 2:
                self.row(4, figure, target=">= 1x", note=f"not available: {variable} is not "
                         "implemented yet (one process after start-up)")  # fmt: skip
                continue
            self.workers[module] = curve
            self.row(4, figure, value=curve[1][1], baseline=curve[0][1], target="> 1x",
                     met=curve[1][1] > curve[0][1], note="unpinned, both cores shared")  # fmt: skip

    async def worker_rate(self, module: str, server: Launched) -> float:
        await self.both("reset")
        if module == "auth_service":
            got = await self.lead.call(
                "refresh", base=server.url, logins=16, count=self.plan.refreshes
            )
        else:
            got = await self.lead.call("handshakes", port=server.port, path="/ws",
                                       count=self.plan.handshakes, concurrency=50)  # fmt: skip
        return float(got["rate"])

    async def revocation(self, database_url: str) -> None:
        figure = "logout -> close across processes p99 (ms)"
        redis = redis_url()
        if redis is None:
            self.skipped(8, [figure], "Redis is not reachable")
            return
        auth = launch("auth-revoke", [PY, "-m", "auth_service"],
                      self.auth_env(AUTH_DATABASE_URL=database_url, REDIS_URL=redis), self.tmp)  # fmt: skip
        try:
            auth_url = auth.url
            env = {"WS_PORT": "{port}", "REDIS_URL": redis, "WS_ISSUER": auth_url,
                   "WS_JWKS_URL": f"{auth_url}/.well-known/jwks.json"}  # fmt: skip
            # AUTH_ISSUER defaults to http://AUTH_HOST:AUTH_PORT, which is auth.url
            gateway = launch("ws-revoke", [PY, "-m", "ws_service"], env, self.tmp)
            try:
                print("  logout -> close latency", flush=True)
                got = await self.lead.call("revocation", base=auth_url, ws_port=gateway.port,
                                           sessions=self.plan.revocations)  # fmt: skip
            finally:
                gateway.proc.stop()
        finally:
            auth.proc.stop()
        p99 = got["p99_ms"]
        self.row(8, figure, value=p99, target="<= 50 ms", met=p99 is not None and p99 <= 50,
                 note=f"p50 {got['p50_ms']:.1f} ms over {got['n']} logouts (auth -> Redis -> ws)")  # fmt: skip


GC_RAMP = 10_000
"""The collector's pauses are reported while the ramp opens this many sockets (or its largest step
below it in a quick run)."""
PROBE_POOL = 3000


async def gc_pauses(server: Launched, gc_file: Path, within: float = 10) -> dict[str, Any]:
    """What ``tests/bench/gcprobe.py`` recorded in ``server`` since the last call."""
    before = _written(gc_file)
    assert server.proc.process is not None
    server.proc.process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + within
    while _written(gc_file) == before:
        if time.monotonic() > deadline:
            raise BenchError("the GC probe did not answer SIGUSR1")
        await asyncio.sleep(0.02)
    return _read_json(gc_file)


def _read_json(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(path.read_bytes())
    return result


def _written(path: Path) -> int:
    """When ``path`` was last replaced (0: not yet)."""
    return path.stat().st_mtime_ns if path.exists() else 0


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


SECTIONS = ("auth", "handshakes", "replicas", "storm")


async def run(quick: bool, only: frozenset[str] = frozenset(SECTIONS)) -> int:
    nofile = raise_nofile()
    plan = Plan.for_run(quick, nofile)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        bench = Bench(plan, Path(tmp))
        print(f"bench ({'quick' if quick else 'full'}): servers on core 0, load generators on "
              f"core 1; open-files limit {nofile}; logs in {tmp}", flush=True)  # fmt: skip
        await bench.start()
        try:
            sections = dict(zip(SECTIONS, (bench.auth, bench.handshake_targets, bench.replicas,
                                           bench.storm), strict=True))  # fmt: skip
            for name, section in sections.items():
                if name not in only:
                    continue
                try:
                    await section()
                except BenchError as exc:
                    bench.failures.append(f"{section.__name__}: {exc}")
                    print(f"  {section.__name__} stopped: {exc}", flush=True)
        finally:
            await bench.stop()
    rows = sorted(bench.rows, key=lambda row: row.goal)
    print()
    print_tables(rows, bench.peers)
    for failure in bench.failures:
        print(f"not measured, section stopped: {failure}")
    extra = {"quick": quick, "seconds": time.monotonic() - started, "plan": plan.__dict__,
             "workers": bench.workers, "failures": bench.failures}  # fmt: skip
    document = write_json(RESULTS / "latest.json", rows, bench.peers, bench.ramps, extra)
    written = (plot(RESULTS, bench.ramps, bench.workers, run_of(document))
               if _importable("matplotlib") else [])  # fmt: skip
    print(f"\nwrote {RESULTS / 'latest.json'}" + "".join(f", {p.name}" for p in written))
    print(f"took {time.monotonic() - started:.0f} s. Figures are noisy on a shared 2-core machine.")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a reduced set, under two minutes")
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="run only this section (repeatable): auth (goal 3, 4 for auth), handshakes "
        "(goals 1, 2, 5, 9), replicas (5, 7, 8), storm (6)",
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args.quick, frozenset(args.only or SECTIONS))))


if __name__ == "__main__":
    main()
