"""A scaled-out deployment on loopback: a private Redis, N auth replicas on one PostgreSQL schema,
M ws replicas on that Redis, and the deployment's nginx config terminating TLS in front of them.

Everything is a real process; the harness only starts, stops, kills and restarts them.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import trustme

from tests.lb import find_nginx, nginx_args, write_config
from tests.services import create_schema, drop_schema, free_port, unavailable
from tests.system.procs import Proc

SECRET = "cluster-test-secret-0123456789"
API_KEY = "cluster-api-key-0123456789"


class Cluster:
    def __init__(
        self,
        workdir: Path,
        postgres_url: str,
        redis_binary: str,
        nginx_binary: str,
        auth_replicas: int = 2,
        ws_replicas: int = 3,
        ws_env: Mapping[str, str] | None = None,
        redis_url: str | None = None,
    ) -> None:
        """``redis_url``: a Redis started elsewhere (a Sentinel group, a Cluster) instead of the
        private redis-server."""
        self.workdir = workdir
        self.ca = trustme.CA()
        self.tls = ssl.create_default_context()
        self.ca.configure_trust(self.tls)
        self.lb_port = free_port()
        self.redis_port = free_port()
        self.redis_url = redis_url or f"redis://127.0.0.1:{self.redis_port}/0"
        self.issuer = f"https://localhost:{self.lb_port}/auth"
        self.auth_ports = [free_port() for _ in range(auth_replicas)]
        self.ws_ports = [free_port() for _ in range(ws_replicas)]
        self.auth_env = {
            "AUTH_DATABASE_URL": postgres_url,
            "AUTH_KEY_ENCRYPTION_SECRETS": SECRET,
            "AUTH_ISSUER": self.issuer,
            "AUTH_JWKS_MAX_AGE": "2",
            "AUTH_FORWARDED_ALLOW_IPS": "127.0.0.1",
            "REDIS_URL": self.redis_url,
        }
        self.redis = None if redis_url else Proc(
            "redis",
            [redis_binary, "--port", str(self.redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            {},
            workdir,
        )  # fmt: skip
        self.auth = [
            Proc(
                f"auth-{i + 1}",
                [sys.executable, "-m", "auth_service"],
                {**self.auth_env, "AUTH_PORT": str(port)},
                workdir,
                f"http://127.0.0.1:{port}/readyz",
            )
            for i, port in enumerate(self.auth_ports)
        ]
        self.ws = [
            Proc(
                f"ws-{i + 1}",
                [sys.executable, "-m", "ws_service"],
                {
                    "WS_PORT": str(port),
                    "WS_ISSUER": self.issuer,
                    "WS_JWKS_URL": f"http://127.0.0.1:{self.auth_ports[0]}/.well-known/jwks.json",
                    "WS_JWKS_MIN_TTL": "1",
                    "WS_API_KEYS": API_KEY,
                    "REDIS_URL": self.redis_url,
                    "WS_DRAIN_SECONDS": "1",  # a replica stopped by a test drains quickly
                    **(ws_env or {}),
                },
                workdir,
                f"http://127.0.0.1:{port}/readyz",
            )
            for i, port in enumerate(self.ws_ports)
        ]
        lb_dir = workdir / "lb"
        lb_dir.mkdir()
        conf = write_config(
            lb_dir,
            self.ca,
            {"auth": self.auth_ports, "ws": self.ws_ports},
            self.lb_port,
            publish=True,
        )
        self.lb = Proc(
            "nginx",
            [*nginx_args(nginx_binary, lb_dir, conf), "-g", "daemon off;"],
            {},
            workdir,
        )

    def start(self) -> None:
        if self.redis is not None:
            self.redis.start()
            self.redis.wait_ready()
            wait_for_port(self.redis_port)
        self.auth[0].start()
        self.auth[0].wait_ready()
        for proc in [*self.auth[1:], *self.ws, self.lb]:
            proc.start()
        for proc in [*self.auth[1:], *self.ws, self.lb]:
            proc.wait_ready()
        wait_for_port(self.lb_port)

    def stop(self) -> None:
        for proc in [self.lb, *self.ws, *self.auth, self.redis]:
            if proc is not None:
                proc.stop()

    def restart(self, proc: Proc) -> None:
        proc.stop()
        proc.start()
        proc.wait_ready()
        if proc is self.redis:
            wait_for_port(self.redis_port)

    def auth_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.auth_ports[index]}"

    def ws_url(self, index: int) -> str:
        return f"ws://127.0.0.1:{self.ws_ports[index]}/ws"

    @property
    def lb_auth(self) -> str:
        return f"https://localhost:{self.lb_port}/auth"

    @property
    def lb_ws(self) -> str:
        return f"wss://localhost:{self.lb_port}/ws"

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail(1500)}" for p in [*self.auth, *self.ws, self.lb])


@contextmanager
def running_cluster(
    workdir: Path,
    ws_env: Mapping[str, str] | None = None,
    auth_replicas: int = 2,
    ws_replicas: int = 3,
    redis_url: str | None = None,
) -> Iterator[Cluster]:
    """A started cluster on a fresh PostgreSQL schema, stopped and dropped afterwards. Skipped
    (failed under CI) where redis-server or nginx is missing."""
    redis_binary = shutil.which("redis-server")
    if redis_binary is None:
        unavailable("redis-server", "the binary is not installed (Debian package redis-server)")
        raise AssertionError("unreachable")
    nginx = find_nginx()
    postgres_url, schema = asyncio.run(create_schema())
    cluster = Cluster(
        workdir,
        postgres_url,
        redis_binary,
        nginx,
        auth_replicas=auth_replicas,
        ws_replicas=ws_replicas,
        ws_env=ws_env,
        redis_url=redis_url,
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        asyncio.run(drop_schema(schema))


@contextmanager
def redis_server(log_dir: Path, *options: str) -> Iterator[int]:
    """A private redis-server on a free loopback port, keeping nothing on disk; its port.
    Skipped (failed under CI) where redis-server is missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server", "the binary is not installed (Debian package redis-server)")
    port = free_port()
    proc = Proc(
        f"redis-{port}",
        [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", *options],
        {},
        log_dir,
    )  # fmt: skip
    proc.start()
    try:
        wait_for_port(port)
        yield port
    finally:
        proc.stop()


def wait_for_port(port: int, timeout: float = 10) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
