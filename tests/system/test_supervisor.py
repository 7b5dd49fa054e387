"""The workers' supervisor as real processes: a worker that dies is replaced while the others
keep serving; a crash loop stops everything with the workers' status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.services import free_port

pytestmark = pytest.mark.system
ROOT = Path(__file__).resolve().parents[2]

SERVER = textwrap.dedent(
    """
    import sys
    from aiohttp import web
    from shared.http.serve import Site, run_workers

    port = int(sys.argv[1])

    def build(reuse_port):
        app = web.Application()
        app.router.add_get("/", lambda request: web.Response(text="ok"))
        if sys.argv[2] == "crash":
            raise RuntimeError("this worker cannot start")
        return [Site(app, "127.0.0.1", port, reuse_port=reuse_port)]

    sys.exit(run_workers(build, workers=2, addresses=[("127.0.0.1", port)],
                         on_listening=lambda: print("listening", flush=True)))
    """
)


def start(port: int, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port), mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def answers(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
            return bool(response.read() == b"ok")
    except OSError:
        return False


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_dead_worker_is_replaced_and_the_others_keep_serving() -> None:
    port = free_port()
    proc = start(port, "serve")
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
        first = children(proc.pid)
        assert len(first) == 2
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(children(proc.pid)) == 2 and victim not in children(proc.pid))
        assert children(proc.pid) & first == first - {victim}, "the other worker was not touched"
        wait_for(lambda: answers(port))
        for _ in range(20):
            assert answers(port)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "a worker died; started another" in err


def test_a_crash_loop_stops_the_supervisor_with_a_failure() -> None:
    proc = start(free_port(), "crash")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "workers keep dying; stopping" in err
