"""``python -m tests.bench.ab [--old PATH] [--new PATH] [--rounds N] [--count N] [--gc N]
[--refresh]``: the handshake section, or the refresh grant, against two checkouts of the services,
alternately, with medians.

The machine's noise moves absolute figures by 30% from one minute to the next, so a change is
judged by alternating rounds: each round measures the bare server, then the old and the new
ws_service (their order swapped every round), each a fresh process on the same core with the same
tokens. ``--gc N`` then also opens N sockets on a fresh process and reports the collector's pauses
meanwhile and the p99 of a new handshake (``tests/bench/gcprobe.py``).

``--refresh``: each round measures the raw RS256 signing rate (and one signature's CPU), then on
SQLite and on PostgreSQL (a fresh schema each, where the machine has a server) the old and the new
auth_service (order swapped every round) refreshing 16 chains, ``--count`` refreshes after 200 of
warm-up: refreshes/s over signatures/s (the bench's figure, moved by whatever else the machine
runs), and a signature's CPU over a refresh's server CPU (what that ratio would be on quiet cores).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.bench.__main__ import PY, Bench, Plan, Target
from tests.bench.harness import ROOT, BenchError, launch
from tests.bench.procinfo import raise_nofile
from tests.services import postgres_schema

T = TypeVar("T")

FIGURES = (
    ("cpu_us_per_conn", "CPU us/handshake"),
    ("handshake_p50_ms", "p50 ms"),
    ("gc_max_ms", "longest GC pause ms"),
    ("gc_max_cpu_ms", "  the same, CPU time"),
    ("gc_total_ms", "GC total ms"),
    ("gc_count", "collections"),
    ("probe_p99_ms", "new handshake p99 ms"),
    ("kib", "KiB per idle socket"),
    ("fanout", "fan-out deliveries/s"),
    ("fanout_cpu_us", "fan-out server CPU us/delivery"),
)


def checkout_path(root: Path) -> str:
    """What a checkout's processes import: its services, its protocol package, its client."""
    return ":".join(str(root / part) for part in ("protocol", "clients/python", "."))


def flatten(figures: dict[str, Any]) -> dict[str, float]:
    flat = {k: figures[k] for k in ("cpu_us_per_conn", "handshake_p50_ms") if k in figures}
    ramp = figures.get("gc_ramp")
    if ramp:
        flat |= {"gc_max_ms": ramp["max_ms"], "gc_max_cpu_ms": ramp.get("max_cpu_ms"),
                 "gc_total_ms": ramp["total_ms"],
                 "gc_count": ramp["count"], "probe_p99_ms": ramp["probe_p99_ms"]}  # fmt: skip
    if "kib_per_socket_10k" in figures:
        flat["kib"] = figures["kib_per_socket_10k"]
    if figures.get("fanout_per_s"):
        flat["fanout"] = figures["fanout_per_s"]
    if figures.get("fanout_cpu_us"):
        flat["fanout_cpu_us"] = figures["fanout_cpu_us"]
    return flat


def new_env(args: argparse.Namespace) -> dict[str, str]:
    """``--new-env`` as a mapping: variables for the new checkout's processes only."""
    return dict(kv.split("=", 1) for kv in args.new_env or [])


async def retried(name: str, measure: Callable[[], Awaitable[T]], attempts: int = 3) -> T:
    """``measure()``, again when the server could not start (a free port taken meanwhile by
    another process of the shared machine)."""
    for attempt in range(attempts):
        try:
            return await measure()
        except BenchError as exc:
            if attempt == attempts - 1:
                raise
            print(f"  {name}: {str(exc)[-120:]!r}; again", flush=True)
    raise AssertionError("unreachable")


async def measure(bench: Bench, target: Target) -> dict[str, Any]:
    return await retried(target.name, lambda: bench.measure(target))


async def refreshes(
    bench: Bench, checkout: Path, count: int, database_url: str | None, more: dict[str, str]
) -> Any:
    """One auth_service of ``checkout`` on the server core: refreshes/s and CPU per refresh."""
    extra = {"AUTH_DATABASE_URL": database_url} if database_url else {}
    env = {**bench.auth_env(**extra), "PYTHONPATH": checkout_path(checkout), **more}
    server = launch("auth", [PY, "-P", "-m", "auth_service"], env, bench.tmp)
    try:
        return await bench.lead.call(
            "refresh", base=server.url, logins=16, count=count, warmup=200, pid=server.pid
        )
    finally:
        server.proc.stop()


async def run_refresh(args: argparse.Namespace) -> None:
    plan = replace(Plan.for_run(True, raise_nofile()), handshakes=0, steps=(1,), probes=0, storm=0)
    checkouts = {"old": Path(args.old), "new": Path(args.new)}
    rows: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        bench = Bench(plan, Path(tmp))
        await bench.start()
        try:
            for round_ in range(args.rounds):
                sign = await bench.lead.call("sign", seconds=2)
                print(f"round {round_ + 1}: {sign['rate']:.0f} signatures/s, "
                      f"{sign['cpu_us']:.0f} us CPU each", flush=True)  # fmt: skip
                order = ["old", "new"] if round_ % 2 == 0 else ["new", "old"]
                for backend in ("sqlite", "postgres"):
                    for name in order:
                        try:
                            more = new_env(args) if name == "new" else {}
                            got = await one_refresh_run(bench, checkouts[name], args, backend, more)
                        except pytest.skip.Exception as exc:  # no PostgreSQL server here
                            print(f"  {backend}: not measured: {exc}", flush=True)
                            break
                        figures = {
                            "rate": got["rate"],
                            "cpu_us": got["cpu_us"],
                            "rate_ratio": got["rate"] / sign["rate"],
                            "cpu_ratio": sign["cpu_us"] / got["cpu_us"],
                        }
                        rows.setdefault(f"{backend} {name}", []).append(figures)
                        print(f"  {backend} {name}: {got['rate']:.0f}/s "
                              f"({figures['rate_ratio']:.2f}x signing), {got['cpu_us']:.0f} us "
                              f"CPU ({figures['cpu_ratio']:.2f}x)", flush=True)  # fmt: skip
        finally:
            await bench.stop()
    print(f"\nmedians of {args.rounds} alternating rounds (old = {checkouts['old']}):")
    print(f"  {'':<16}{'refreshes/s':>12}{'vs signing':>12}{'CPU us':>9}{'CPU ratio':>11}")
    for key, runs in rows.items():
        cells = [statistics.median(r[k] for r in runs) for k in ("rate", "rate_ratio", "cpu_us")]
        ratio = statistics.median(r["cpu_ratio"] for r in runs)
        print(f"  {key:<16}{cells[0]:12.0f}{cells[1]:11.2f}x{cells[2]:9.0f}{ratio:10.2f}x")


async def one_refresh_run(
    bench: Bench, checkout: Path, args: argparse.Namespace, backend: str, more: dict[str, str]
) -> Any:
    if backend == "sqlite":
        return await retried("auth", lambda: refreshes(bench, checkout, args.count, None, more))
    async with postgres_schema() as url:
        return await retried("auth", lambda: refreshes(bench, checkout, args.count, url, more))


async def run(args: argparse.Namespace) -> None:
    nofile = raise_nofile()
    plan = replace(
        Plan.for_run(True, nofile),
        handshakes=args.count,
        steps=(args.hold or args.gc,) if args.hold or args.gc else (1,),
        fanout_at=args.hold,
        probes=20,
    )
    checkouts = {"old": Path(args.old), "new": Path(args.new)}
    results: dict[str, list[dict[str, float]]] = {"bare": [], "old": [], "new": []}
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        bench = Bench(plan, Path(tmp))
        await bench.start()
        try:
            bare = Target("bare", [PY, "-m", "tests.bench.bare", "{port}"], {}, hold=False)
            for round_ in range(args.rounds):
                order = ["old", "new"] if round_ % 2 == 0 else ["new", "old"]
                for name in ["bare", *order] if not args.gc else order:
                    if name == "bare":
                        target = bare
                    else:
                        env = {**bench.ws_env(), "PYTHONPATH": checkout_path(checkouts[name])}
                        if name == "new":
                            env |= new_env(args)
                        # -P: the checkout on PYTHONPATH, not the current directory, is imported
                        target = Target(name, [PY, "-P", "-m", "ws_service"], env,
                                        hold=bool(args.hold), push="gateway",
                                        gc_probe=bool(args.gc))  # fmt: skip
                    measured = await measure(bench, target)
                    figures = flatten(measured)
                    results[name].append(figures)
                    shown = ", ".join(f"{k} {v:.1f}" for k, v in figures.items() if v is not None)
                    print(f"round {round_ + 1} {name}: {shown}", flush=True)
                    if "gc_ramp" in measured:
                        ramp = measured["gc_ramp"]
                        print(f"  by generation {ramp['by_generation']}, "
                              f"{ramp['tracked_objects']} objects tracked", flush=True)  # fmt: skip
        finally:
            await bench.stop()
    print(f"\nmedians of {args.rounds} alternating rounds (old = {checkouts['old']}):")
    for key, title in FIGURES:
        cells = []
        for name in ("bare", "old", "new"):
            values = [r[key] for r in results[name] if r.get(key) is not None]
            cells.append(f"{name} {statistics.median(values):9.1f}" if values else "")
        if any(cells):
            print(f"  {title:<22}" + "   ".join(cells))
    cpu = {n: [r["cpu_us_per_conn"] for r in results[n] if "cpu_us_per_conn" in r] for n in results}
    if cpu["bare"] and cpu["old"] and cpu["new"]:
        ratios = {
            n: statistics.median(cpu[n]) / statistics.median(cpu["bare"]) for n in ("old", "new")
        }
        print(f"  CPU vs bare            old {ratios['old']:.2f}x   new {ratios['new']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.ab", description=__doc__)
    parser.add_argument("--old", default="/work/main", help="the checkout to compare against")
    parser.add_argument("--new", default=str(ROOT))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--count", type=int, default=2000, help="handshakes (refreshes) per server and round"
    )
    parser.add_argument(
        "--refresh", action="store_true", help="the refresh grant on SQLite and PostgreSQL"
    )
    parser.add_argument("--gc", type=int, default=0, help="also hold this many sockets")
    parser.add_argument(
        "--hold", type=int, default=0, help="also hold this many: memory per socket and fan-out"
    )
    parser.add_argument(
        "--new-env",
        action="append",
        metavar="NAME=VALUE",
        help="an environment variable for the new checkout's processes only",
    )
    args = parser.parse_args()
    args.old, args.new = Path(args.old).resolve(), Path(args.new).resolve()
    asyncio.run(run_refresh(args) if args.refresh else run(args))


if __name__ == "__main__":
    main()
