"""Start real service processes on free loopback ports and wait until they are ready."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

__all__ = ["run_cli", "service"]


def _env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH_", "WS_", "REDIS_"))}
    env.update(extra)
    return env


@contextmanager
def service(
    module: str,
    env: Mapping[str, str],
    port: int,
    log_dir: Path,
    timeout: float = 20,
    tls: ssl.SSLContext | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m module`` until the block ends; fail with its log if it never gets ready."""
    log_path = log_dir / f"{module}-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", module], env=_env(env), stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{module} exited: {log_path.read_text()[-2000:]}")
                try:
                    scheme = "https" if tls else "http"
                    url = f"{scheme}://localhost:{port}/readyz"
                    with urllib.request.urlopen(url, timeout=1, context=tls) as r:  # noqa: S310
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{module} not ready: {log_path.read_text()[-2000:]}")
                time.sleep(0.1)
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def run_cli(module: str, args: list[str], env: Mapping[str, str], stdin: str = "") -> str:
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        env=_env(env),
        input=stdin.encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()
