"""Metrics summed over worker processes: real processes writing to one directory, merged by the
scrape, a dead worker's live gauges dropped."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.metrics import workers as worker_metrics

WORKER = """
import sys
from pathlib import Path
from prometheus_client import CollectorRegistry, Counter, Gauge
from shared.metrics import workers as worker_metrics

worker_metrics.enable(Path(sys.argv[1]))
registry = CollectorRegistry()
n = int(sys.argv[2])
Counter("jobs", "jobs done", registry=registry).inc(n)
Gauge("open", "open sockets", registry=registry, multiprocess_mode="livesum").set(n)
"""


@pytest.fixture
def directory() -> Iterator[Path]:
    made = worker_metrics.make_directory()
    yield made
    worker_metrics.remove_directory(made)
    assert not made.exists()


def merged(directory: Path) -> dict[str, float]:
    text = worker_metrics.collect(directory).decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_counters_and_gauges_of_every_worker_are_summed_and_a_dead_ones_gauges_dropped(
    directory: Path,
) -> None:
    assert list(directory.iterdir()) == [], "a fresh directory: nothing from an earlier run"
    pids = []
    for n in (1, 2):
        with subprocess.Popen([sys.executable, "-c", WORKER, str(directory), str(n)]) as worker:
            assert worker.wait(timeout=30) == 0
        pids.append(worker.pid)
    assert merged(directory) == {"jobs_total": 3, "open": 3}
    worker_metrics.worker_exited(directory, pids[0])
    assert merged(directory) == {"jobs_total": 3, "open": 2}


RENDERING_WORKER = """
import sys
from pathlib import Path
from prometheus_client import CollectorRegistry, Counter
from shared.metrics import workers as worker_metrics

worker_metrics.enable(Path(sys.argv[1]))
registry = CollectorRegistry()
Counter("jobs", "jobs done", registry=registry).inc(2)
runtime = worker_metrics.runtime_collectors(registry)
sys.stdout.write(worker_metrics.render(registry, runtime).decode())
"""


def test_a_workers_scrape_adds_its_own_process_metrics_to_the_merged_ones(
    directory: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", RENDERING_WORKER, str(directory)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    names = {f.name for f in text_string_to_metric_families(result.stdout)}
    assert {"jobs", "process_resident_memory_bytes", "process_cpu_seconds", "python_info"} <= names
