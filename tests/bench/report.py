"""The bench's output: one goals table on stdout, the same as JSON, and PNG plots."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["PEER_COLUMNS", "Row", "figures", "plot", "print_tables", "run_of", "write_json"]

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
) -> dict[str, Any]:
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
    return document


# What each service's curve in ``workers`` counts (the bench's goal 4), for its y-axis.
WORKER_UNITS = {"auth_service": "refreshes/s", "ws_service": "handshakes/s"}

LEGEND_FONT = 10


def figures(
    ramps: dict[str, list[dict[str, Any]]], workers: dict[str, Any], run: str = ""
) -> dict[str, Any]:
    """The plots as matplotlib figures, by file name: one quantity per axis, every y-axis from
    zero (the reader compares servers by ratio), whole numbers of workers, legends off the data.
    ``run`` (which run, when) is printed in a corner of each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def from_zero(axis: Any) -> None:
        axis.set_xlim(left=0)
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.3)

    def legend_below(figure: Any, axis: Any) -> None:
        handles, labels = axis.get_legend_handles_labels()
        # two columns keep the legend clear of the run's name in the lower right corner
        figure.legend(handles, labels, loc="lower center", ncols=min(len(labels), 2),
                      fontsize=LEGEND_FONT, frameon=False)  # fmt: skip
        figure.tight_layout(rect=(0, 0.06 * ((len(labels) + 1) // 2) + 0.04, 1, 1))

    made: dict[str, Any] = {}
    figure, (rss, per_socket) = plt.subplots(1, 2, figsize=(11, 4.8))
    for name, ramp in ramps.items():
        counts = [point["connections"] for point in ramp]
        rss.plot(counts, [p["rss_kib"] / 1024 for p in ramp], marker="o", label=name)
        per_socket.plot(counts, [p["kib_per_socket"] for p in ramp], marker="o", label=name)
    rss.set(xlabel="idle authenticated sockets held", ylabel="MiB", title="Server RSS")
    per_socket.set(xlabel="idle authenticated sockets held", ylabel="KiB",
                   title="Memory per socket (RSS growth / sockets)")  # fmt: skip
    for axis in (rss, per_socket):
        from_zero(axis)
    legend_below(figure, rss)
    made["memory.png"] = figure

    figure, panels = plt.subplots(1, 2, figsize=(11, 4.8))
    for quantile, axis in zip(("p50", "p99"), panels, strict=True):
        for name, ramp in ramps.items():
            shown = [p for p in ramp if p.get(f"{quantile}_ms") is not None]
            axis.plot([p["connections"] for p in shown], [p[f"{quantile}_ms"] for p in shown],
                      marker="o", label=name)  # fmt: skip
        axis.set(xlabel="idle authenticated sockets held", title=f"{quantile} of a new handshake")
        from_zero(axis)
    for axis in panels:
        axis.set_ylabel("ms (connect, auth frame, reply)")
    legend_below(figure, panels[0])
    made["handshake_latency.png"] = figure

    curves = {name: points for name, points in workers.items() if len(points) > 1}
    if curves:
        figure, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4.5), squeeze=False)
        for axis, (name, points) in zip(axes[0], curves.items(), strict=True):
            counts = [int(p[0]) for p in points]
            rates = [p[1] for p in points]
            bars = axis.bar(counts, rates, width=0.5)
            labels = [f"{rates[0]:,.0f}"] + [f"{r:,.0f} ({r / rates[0]:.2f}x)" for r in rates[1:]]
            axis.bar_label(bars, labels=labels, fontsize=LEGEND_FONT)
            unit = WORKER_UNITS.get(name, "per second")
            axis.set(xlabel="worker processes", ylabel=unit, title=f"{name}: {unit}")
            axis.set_xticks(counts)
            axis.set_xlim(min(counts) - 0.6, max(counts) + 0.6)
            axis.set_ylim(bottom=0, top=max(rates) * 1.15)
        figure.tight_layout(rect=(0, 0.05, 1, 1))
        made["workers.png"] = figure
    for figure in made.values():
        figure.text(0.99, 0.01, run, ha="right", va="bottom", fontsize=8, color="0.4")
    return made


def plot(
    out: Path, ramps: dict[str, list[dict[str, Any]]], workers: dict[str, Any], run: str = ""
) -> list[Path]:
    """Write the plots as PNGs into ``out``; returns the paths written."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, figure in figures(ramps, workers, run).items():
        written.append(out / name)
        figure.savefig(written[-1], dpi=100)
        plt.close(figure)
    return written


def run_of(document: dict[str, Any]) -> str:
    """Which run a results document holds, for the plots' corner: the target and the date."""
    target = "make bench-quick" if document.get("quick") else "make bench"
    return f"{target}, {str(document.get('when', ''))[:10]}".rstrip(", ")


def main(argv: list[str] | None = None) -> None:
    """Redraw the plots from a results document, without running the bench again."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.report", description=main.__doc__)
    parser.add_argument(
        "results", type=Path, help="a results document, e.g. bench/results/latest.json"
    )
    parser.add_argument("out", type=Path, help="the folder for the PNGs, e.g. docs/performance")
    args = parser.parse_args(argv)
    document = json.loads(args.results.read_text())
    written = plot(
        args.out, document.get("ramps", {}), document.get("workers", {}), run_of(document)
    )
    print("wrote " + ", ".join(str(path) for path in written))


if __name__ == "__main__":
    main()
