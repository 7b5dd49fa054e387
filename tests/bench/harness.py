"""Processes of a bench run: servers pinned to one core, load-generator agents pinned to the other.

Servers start only through their command lines and environment (``python -m ws_service``, ...),
so the bench survives any restructuring inside the services.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tests.bench.procinfo import pinned
from tests.services import REDIS_URL, free_port
from tests.system.procs import Proc

__all__ = [
    "API_KEY",
    "GENERATOR_CORES",
    "ROOT",
    "SERVER_CORES",
    "AgentProc",
    "BenchError",
    "Launched",
    "launch",
    "node_modules",
    "redis_url",
]

SERVER_CORES = "0"
GENERATOR_CORES = "1"
API_KEY = "bench-api-key-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[2]
IMPORT_PATH = ":".join(str(ROOT / part) for part in ("protocol", "clients/python", "."))
"""This checkout's services, protocol package and client, ahead of the editable installs (which
may point at another checkout of the same venv)."""


class BenchError(Exception):
    """A figure could not be measured; the message says why and ends up in the report."""


class AgentProc:
    """One ``tests.bench.loadgen`` process and its line-per-op JSON channel."""

    def __init__(self, name: str, key_dir: Path, issuer: str) -> None:
        self.name = name
        self.args = [sys.executable, "-m", "tests.bench.loadgen", name, str(key_dir), issuer]
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *pinned(GENERATOR_CORES, self.args),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            limit=1 << 26,
        )

    async def call(self, op: str, budget: float = 300, **args: Any) -> dict[str, Any]:
        process = self.process
        assert process is not None and process.stdin is not None and process.stdout is not None
        process.stdin.write(json.dumps({"op": op, "budget": budget, **args}).encode() + b"\n")
        await process.stdin.drain()
        line = await asyncio.wait_for(process.stdout.readline(), budget + 30)
        if not line:
            raise BenchError(f"agent {self.name} exited during {op}")
        result: dict[str, Any] = json.loads(line)
        if "error" in result:
            raise BenchError(result["error"])
        return result

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@dataclass
class Launched:
    """A running server under test."""

    proc: Proc
    port: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        assert self.proc.process is not None
        return self.proc.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def launch(
    name: str,
    args: list[str],
    env: dict[str, str],
    log_dir: Path,
    cores: str | None = SERVER_CORES,
    ready_path: str = "/readyz",
    port: int | None = None,
) -> Launched:
    """Start ``args`` (with ``{port}`` filled in) pinned to ``cores``; return once it is ready."""
    port = port or free_port()
    argv = [arg.format(port=port) for arg in args]
    filled = {key: value.format(port=port) for key, value in env.items()}
    proc = Proc(
        name, pinned(cores, argv), {"PYTHONPATH": IMPORT_PATH, **filled}, log_dir,
        f"http://127.0.0.1:{port}{ready_path}",
    )  # fmt: skip
    proc.start()
    try:
        proc.wait_ready(60)
    except RuntimeError as exc:
        proc.stop()
        raise BenchError(str(exc)[-600:]) from exc
    return Launched(proc, port)


def redis_url() -> str | None:
    """The machine's Redis (``TEST_REDIS_URL`` as for the tests), or None when unreachable."""
    parsed = urlparse(REDIS_URL)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), 2):
            return REDIS_URL
    except OSError:
        return None


def node_modules() -> Path | None:
    """Where ``make bench`` installed the Node peer's packages (``BENCH_NODE_MODULES``)."""
    configured = os.environ.get("BENCH_NODE_MODULES")
    path = Path(configured) if configured else ROOT / ".venv" / "bench-node" / "node_modules"
    return path if (path / "ws").is_dir() else None
