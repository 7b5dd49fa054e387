"""What a server process tree costs, read from /proc: CPU seconds and resident memory.

A server may fork workers (``AUTH_WORKERS``/``WS_WORKERS``, Node's cluster), so every figure sums
the process and all its descendants.
"""

from __future__ import annotations

import os
import resource
import shutil
from pathlib import Path

__all__ = [
    "cpu_seconds",
    "cpu_split",
    "listen_overflows",
    "pinned",
    "raise_nofile",
    "rss_kib",
    "tree",
]

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()  # fields after the command name, from "state"


def tree(pid: int) -> list[int]:
    """``pid`` and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of the tree (fields 14 and 15 of /proc/<pid>/stat)."""
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of the tree, apart."""
    user = system = 0
    for member in tree(pid):
        try:
            fields = _stat(member)
        except OSError:
            continue
        user, system = user + int(fields[11]), system + int(fields[12])
    return user / TICKS, system / TICKS


def listen_overflows() -> int:
    """Connections refused because a listen queue was full (``TcpExtListenOverflows``), over the
    whole network namespace: the clients' TCP retries them after 1 s, then 3 s."""
    header, values = Path("/proc/net/netstat").read_text().splitlines()[:2]
    return int(dict(zip(header.split()[1:], values.split()[1:], strict=True))["ListenOverflows"])


def rss_kib(pid: int) -> int:
    total = 0
    for member in tree(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
    return total


def pinned(cores: str | None, args: list[str]) -> list[str]:
    """``args`` under ``taskset -c cores`` when taskset exists and more than one core does."""
    if cores is None or shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return args
    return ["taskset", "-c", cores, *args]


def raise_nofile() -> int:
    """Raise the soft open-files limit to the hard one (children inherit it); return it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
