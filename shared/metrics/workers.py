"""Prometheus metrics of a service run as several worker processes (``run_workers``): a scrape
reaches one worker, and answers with the sum over all of them.

This is prometheus_client's multiprocess mode: each worker writes its metric values to files of
its own in one directory, and a scrape reads and merges every file there (counters and histograms
summed; a gauge as its ``multiprocess_mode`` says). The mode is a process-wide switch in
prometheus_client (the class every metric value is made of), so it is thrown in each worker just
after the fork, before the worker builds its app, and never at import: a single-process service and
the tests keep plain in-memory metrics. The supervising parent makes a fresh directory before the
fork (so nothing from an earlier run is counted), drops a dead worker's live gauges, and removes the
directory when it exits.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

__all__ = [
    "collect",
    "enable",
    "make_directory",
    "remove_directory",
    "render",
    "runtime_collectors",
    "single_process",
    "worker_exited",
]

_ENV = "PROMETHEUS_MULTIPROC_DIR"
_shared: Path | None = None
"""Where this worker's metrics live, once :func:`enable` switched it to multiprocess mode."""


def single_process() -> str | None:
    """At a service's start, before any metric is made: plain in-memory metrics, whatever
    ``PROMETHEUS_MULTIPROC_DIR`` the process inherited (prometheus_client reads it at import, and
    one naming a missing directory made the service's start a traceback: an outside probe). The
    workers' mode is this module's to switch on (:func:`enable`). Returns the ignored value."""
    inherited = os.environ.pop(_ENV, None)
    values.ValueClass = values.MutexValue
    return inherited


def make_directory() -> Path:
    """In the parent, before the fork: an empty private directory for the workers' files, named
    after the parent (``$TMPDIR/metrics-<pid>-*``)."""
    return Path(tempfile.mkdtemp(prefix=f"metrics-{os.getpid()}-"))


def enable(directory: Path) -> None:
    """In a worker, before any metric is made: write values to ``directory``, and scrape it."""
    global _shared
    os.environ[_ENV] = str(directory)  # where prometheus_client opens this worker's files
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    _shared = directory


def worker_exited(directory: Path, pid: int) -> None:
    """In the parent: a dead worker's sockets no longer count in ``livesum`` gauges (its counters
    do: they count what happened)."""
    mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def remove_directory(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def collect(directory: Path) -> bytes:
    """Every worker's metrics in ``directory``, merged, in the text exposition format."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def runtime_collectors(registry: CollectorRegistry) -> tuple[Collector, ...]:
    """prometheus_client's default collectors on an app's own registry: the process
    (``process_cpu_seconds_total``, ``process_resident_memory_bytes``, open files, start time),
    the interpreter (``python_info``) and its garbage collector (``python_gc_*``; not in a
    worker, where prometheus_client leaves it out)."""
    return (
        ProcessCollector(registry=registry),
        PlatformCollector(registry=registry),
        GCCollector(registry=registry),
    )


def render(registry: CollectorRegistry, runtime: Sequence[Collector] = ()) -> bytes:
    """What ``/metrics`` answers: this process's own metrics, or every worker's merged plus
    the ``runtime`` collectors of the worker that answers (a process's CPU and memory cannot be
    summed in files: they describe that worker alone)."""
    if _shared is None:
        return generate_latest(registry)
    own = CollectorRegistry(auto_describe=True)
    for collector in runtime:
        own.register(collector)
    return collect(_shared) + generate_latest(own)
