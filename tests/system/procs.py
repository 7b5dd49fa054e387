"""Start real service processes on free loopback ports, stop them every way, wait until ready."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tests.services import free_port, stop_process

__all__ = ["Proc", "embedded_env", "run_cli", "service"]


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
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.args = args
        self.env = dict(env)
        self.log_path = log_dir / f"{name}.log"
        self.ready_url = ready_url
        self.tls = tls
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
            if (self.ready_url is None or self._ready()) and self._all_workers_listen():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.tail()}")
            time.sleep(0.05)

    def _all_workers_listen(self) -> bool:
        """With workers, /readyz answers as soon as one of them listens, while the kernel would
        still give every new connection to it: the parent's "listening on" line comes once all do."""
        workers = any(
            k.endswith("_WORKERS") and v.strip() not in ("", "1") for k, v in self.env.items()
        )
        return not workers or "listening on" in self.tail(1_000_000)

    def _ready(self) -> bool:
        assert self.ready_url is not None
        try:
            with urllib.request.urlopen(self.ready_url, timeout=1, context=self.tls) as resp:  # noqa: S310
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
        stop_process(self.process)


@contextmanager
def service(
    module: str,
    env: Mapping[str, str],
    port: int,
    log_dir: Path,
    timeout: float = 20,
    tls: ssl.SSLContext | None = None,
) -> Iterator[Proc]:
    """Run ``python -m module`` until the block ends; fail with its log if it never gets ready."""
    scheme = "https" if tls else "http"
    proc = Proc(
        f"{module}-{port}",
        [sys.executable, "-m", module],
        env,
        log_dir,
        f"{scheme}://localhost:{port}/readyz",
        tls,
    )
    proc.start()
    try:
        proc.wait_ready(timeout)
        yield proc
    finally:
        proc.stop()


def run_cli(module: str, args: list[str], env: Mapping[str, str], stdin: str = "") -> str:
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        env=_base_env(env),
        input=stdin.encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def embedded_env(data_dir: Path, **extra: str) -> tuple[dict[str, str], int, int]:
    """What `make run` reads, for the embedded stack (``python -m services``) on two free ports:
    ``(env, auth port, ws port)``; ``extra`` adds or overrides variables."""
    auth_port, ws_port = free_port(), free_port()
    env = {
        "AUTH_DEV": "1",
        "AUTH_DATA_DIR": str(data_dir),
        "AUTH_PORT": str(auth_port),
        "WS_PORT": str(ws_port),
        **extra,
    }
    return env, auth_port, ws_port
