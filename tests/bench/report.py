"""The bench's output: one goals table on stdout, the same as JSON, and PNG plots."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["PEER_COLUMNS", "Row", "plot", "print_tables", "write_json"]

PEER_COLUMNS = (
    ("handshakes_per_s", "handshakes/s", "{:.0f}"),
    ("per_core_per_s", "per core/s", "{:.0f}"),
    ("cpu_us_per_conn", "CPU us/conn", "{:.0f}"),
    ("handshake_p50_ms", "p50 ms", "{:.2f}"),
    ("kib_per_socket_10k", "KiB/socket", "{:.1f}"),
    ("fanout_per_s", "fan-out/s", "{:.0f}"),
)


@dataclass
class Row:
    """One figure of the performance issue: its value beside the baseline of the same run."""

    goal: int
    figure: str
    value: float | None = None
    baseline: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def print_tables(rows: list[Row], peers: dict[str, dict[str, Any]]) -> None:
    header = f"{'goal':<5}{'figure':<58}{'value':>11}{'baseline':>11}{'ratio':>7}  {'goal':<12}{'met':<5}"
    print(header)
    print("-" * len(header))
    for row in rows:
        met = {True: "yes", False: "NO", None: "-"}[row.met]
        if row.value is None:
            met = "n/a"
        ratio = f"{row.ratio:.2f}" if row.ratio is not None else "-"
        print(
            f"{row.goal:<5}{row.figure[:57]:<58}{_num(row.value):>11}{_num(row.baseline):>11}"
            f"{ratio:>7}  {row.target:<12}{met:<5}"
        )
        if row.note:
            print(f"{'':<5}  ({row.note})")
    print()
    print(f"{'peers (goal 9)':<34}" + "".join(f"{title:>14}" for _, title, _ in PEER_COLUMNS))
    for name, figures in peers.items():
        cells = []
        for key, _, fmt in PEER_COLUMNS:
            value = figures.get(key)
            cells.append(f"{fmt.format(value) if value is not None else '-':>14}")
        print(f"{name:<34}" + "".join(cells))
        if figures.get("note"):
            print(f"{'':<2}({figures['note']})")


def write_json(
    path: Path, rows: list[Row], peers: dict[str, Any], ramps: dict[str, Any], extra: dict[str, Any]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "goals": [{**asdict(row), "ratio": row.ratio} for row in rows],
        "peers": peers,
        "ramps": ramps,
        **extra,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def plot(out: Path, ramps: dict[str, list[dict[str, Any]]], workers: dict[str, Any]) -> list[Path]:
    """Memory and handshake latency against held connections; throughput against workers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    figure, (memory, per_socket) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, ramp in ramps.items():
        counts = [point["connections"] for point in ramp]
        memory.plot(counts, [p["rss_kib"] / 1024 for p in ramp], marker="o", label=name)
        per_socket.plot(counts, [p["kib_per_socket"] for p in ramp], marker="o", label=name)
    memory.set(xlabel="idle authenticated sockets", ylabel="server RSS (MiB)", title="Memory")
    per_socket.set(xlabel="idle authenticated sockets", ylabel="KiB per socket", title="Per socket")
    memory.legend()
    figure.tight_layout()
    written.append(out / "memory.png")
    figure.savefig(written[-1], dpi=100)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, ramp in ramps.items():
        counts = [point["connections"] for point in ramp]
        line = axis.plot(counts, [p["p50_ms"] for p in ramp], marker="o", label=f"{name} p50")
        axis.plot(
            counts, [p["p99_ms"] for p in ramp], marker="x", linestyle="--",
            color=line[0].get_color(), label=f"{name} p99",
        )  # fmt: skip
    axis.set(
        xlabel="idle authenticated sockets held", ylabel="new handshake latency (ms)",
        title="Connect + auth + reply while holding N sockets",
    )  # fmt: skip
    axis.legend(fontsize=7)
    figure.tight_layout()
    written.append(out / "handshake_latency.png")
    figure.savefig(written[-1], dpi=100)
    plt.close(figure)

    curves = {name: points for name, points in workers.items() if len(points) > 1}
    if curves:
        figure, axis = plt.subplots(figsize=(7, 4.5))
        for name, points in curves.items():
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
        axis.set(xlabel="worker processes", ylabel="per second", title="Scaling with workers")
        axis.legend()
        figure.tight_layout()
        written.append(out / "workers.png")
        figure.savefig(written[-1], dpi=100)
        plt.close(figure)
    return written
