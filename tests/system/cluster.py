"""A scaled-out deployment on loopback: a private Redis, N auth replicas on one PostgreSQL schema,
M ws replicas on that Redis, and the deployment's nginx config terminating TLS in front of them.

Everything is a real process; the harness only starts, stops, kills and restarts them.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import trustme

from tests.lb import nginx_args, write_config
from tests.services import free_port

SECRET = "cluster-test-secret-0123456789"
API_KEY = "cluster-api-key-0123456789"


def _base_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH_", "WS_", "REDIS_"))}
    env.update(extra)
    return env


class Proc:
    """One process with a log file, a readiness URL, and the means to stop it every way."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: Mapping[str, str],
        log_dir: Path,
        ready_url: str | None = None,
    ) -> None:
        self.name = name
        self.args = args
        self.env = dict(env)
        self.log_path = log_dir / f"{name}.log"
        self.ready_url = ready_url
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.args, env=_base_env(self.env), stdout=log, stderr=subprocess.STDOUT
            )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            if self.ready_url is None or self._ready():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.tail()}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        assert self.ready_url is not None
        try:
            with urllib.request.urlopen(self.ready_url, timeout=1) as resp:  # noqa: S310
                return bool(resp.status == 200)
        except OSError:
            return False

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if not self.running:
            return
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Cluster:
    def __init__(
        self,
        workdir: Path,
        postgres_url: str,
        redis_binary: str,
        nginx_binary: str,
        auth_replicas: int = 2,
        ws_replicas: int = 3,
    ) -> None:
        self.workdir = workdir
        self.ca = trustme.CA()
        self.tls = ssl.create_default_context()
        self.ca.configure_trust(self.tls)
        self.lb_port = free_port()
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
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
        self.redis = Proc(
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
                },
                workdir,
                f"http://127.0.0.1:{port}/readyz",
            )
            for i, port in enumerate(self.ws_ports)
        ]
        lb_dir = workdir / "lb"
        lb_dir.mkdir()
        conf = write_config(
            lb_dir, self.ca, {"auth": self.auth_ports, "ws": self.ws_ports}, self.lb_port
        )
        self.lb = Proc(
            "nginx",
            [*nginx_args(nginx_binary, lb_dir, conf), "-g", "daemon off;"],
            {},
            workdir,
        )

    def start(self) -> None:
        self.redis.start()
        self.redis.wait_ready()
        self.auth[0].start()
        self.auth[0].wait_ready()
        for proc in [*self.auth[1:], *self.ws, self.lb]:
            proc.start()
        for proc in [*self.auth[1:], *self.ws, self.lb]:
            proc.wait_ready()
        wait_for_port(self.lb_port)
        wait_for_port(self.redis_port)

    def stop(self) -> None:
        for proc in [self.lb, *self.ws, *self.auth, self.redis]:
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
