"""The workers' supervisor as real processes: a worker that dies is replaced while the others
keep serving; a crash loop stops everything with the workers' status; a start that fails stops
everything at once, in one line per worker when the service can say why."""

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
    import asyncio, os, sys
    from aiohttp import web
    from shared.http.serve import Site, run_workers

    port, mode = int(sys.argv[1]), sys.argv[2]

    class Refused(Exception):
        pass

    async def die_soon(app):
        asyncio.get_running_loop().call_later(0.3, os._exit, 1)

    def build(reuse_port):
        app = web.Application()
        app.router.add_get("/", lambda request: web.Response(text="ok"))
        if mode == "crash":
            raise RuntimeError("this worker cannot start")
        if mode == "refused":
            raise Refused("the database cannot be reached")
        if mode == "die":
            app.on_startup.append(die_soon)
        return [Site(app, "127.0.0.1", port, reuse_port=reuse_port)]

    def refusal(exc):
        return (f"cannot start: {exc}", 3) if isinstance(exc, Refused) else None

    sys.exit(run_workers(build, workers=2, addresses=[("127.0.0.1", port)],
                         on_listening=lambda: print("listening", flush=True), refusal=refusal))
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
    proc = start(free_port(), "die")
    out, err = proc.communicate(timeout=60)
    assert out.strip() == "listening", err
    assert proc.returncode == 1, err
    assert err.count("a worker died; started another") >= 3, err
    assert "workers keep dying; stopping" in err


def test_a_start_the_service_refuses_stops_every_worker_at_once_in_one_line_each() -> None:
    """The database down at start: each worker says so in one line and the service exits with the
    status one process would (no traceback, no restarts that would fail the same way)."""
    started = time.monotonic()
    proc = start(free_port(), "refused")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, err
    assert out == "", "it never listened"
    lines = err.splitlines()
    assert len(lines) == 3, err
    assert sum("cannot start: the database cannot be reached" in line for line in lines) == 2
    assert "a worker could not start; stopping" in lines[-1]
    assert "Traceback" not in err and "started another" not in err
    assert time.monotonic() - started < 10


def test_a_start_that_crashes_stops_at_once_with_the_traceback() -> None:
    proc = start(free_port(), "crash")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert "RuntimeError: this worker cannot start" in err
    assert "a worker could not start; stopping" in err
    assert "started another" not in err
