"""``python -P tests/bench/gcprobe.py OUT MODULE [ARGS]``: run ``python -m MODULE`` with its
collector's pauses recorded through ``gc.callbacks``; SIGUSR1 writes what was recorded since the
last signal to ``OUT`` (JSON, replaced atomically) and starts afresh; SIGUSR2 runs a full
collection first and adds how many unreachable objects it found (``collected``): after the
clients closed their sockets, that is the cyclic garbage the closed sockets left.

The service's code is not touched: the bench wraps the process instead (standard library only, run
by path so that it works beside any checkout of the services, an older one in an A/B run too).
"""

from __future__ import annotations

import gc
import json
import os
import runpy
import signal
import sys
import time
from types import FrameType
from typing import Any

__all__ = ["summary"]


def summary(pauses: list[tuple[int, float, float]]) -> dict[str, Any]:
    """Count, total and longest pause (ms), overall and per generation. A pause is wall-clock
    time; ``max_cpu_ms`` is the longest in the thread's CPU time, which leaves out the time the
    process was not running (on a shared machine, a pause can include another process's turn)."""
    by_gen: dict[str, dict[str, float]] = {}
    for generation, seconds, _ in pauses:
        row = by_gen.setdefault(str(generation), {"count": 0, "total_ms": 0.0, "max_ms": 0.0})
        row["count"] += 1
        row["total_ms"] += seconds * 1000
        row["max_ms"] = max(row["max_ms"], seconds * 1000)
    return {
        "count": len(pauses),
        "total_ms": sum(seconds for _, seconds, _ in pauses) * 1000,
        "max_ms": max((seconds for _, seconds, _ in pauses), default=0.0) * 1000,
        "max_cpu_ms": max((cpu for _, _, cpu in pauses), default=0.0) * 1000,
        "by_generation": by_gen,
        "tracked_objects": len(gc.get_objects()),
    }


def main() -> None:
    out, module = sys.argv[1], sys.argv[2]
    pauses: list[tuple[int, float, float]] = []
    started = [0.0, 0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[:] = time.perf_counter(), time.thread_time()
        else:
            wall, cpu = time.perf_counter() - started[0], time.thread_time() - started[1]
            pauses.append((info["generation"], wall, cpu))

    def dump(signum: int, frame: FrameType | None) -> None:
        extra = {}
        if signum == signal.SIGUSR2:
            gc.unfreeze()  # what a service froze is looked at too
            extra["collected"] = gc.collect()
        taken = pauses[:]
        pauses.clear()
        with open(out + ".tmp", "w") as file:
            json.dump(summary(taken) | extra, file)
        os.replace(out + ".tmp", out)

    gc.callbacks.append(on_gc)
    signal.signal(signal.SIGUSR1, dump)
    signal.signal(signal.SIGUSR2, dump)
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
