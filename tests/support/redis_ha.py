"""Highly available Redis on loopback for the tests: a Redis Cluster (masters with one replica
each) or a Sentinel group (a master, a replica and three Sentinels), every node a real
``redis-server`` process on a free port that a test may kill.

Both are synchronous (subprocesses and redis-py's blocking client), so a system test uses them as
they are and an async test from a plain fixture. Failover is tuned to be quick on loopback (a node
is judged down after ``NODE_TIMEOUT_MS``); a failover then takes one to three seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tests.services import free_port, stop_process, unavailable

__all__ = [
    "NODE_TIMEOUT_MS",
    "LocalCluster",
    "LocalSentinel",
    "local_cluster",
    "local_sentinel",
    "redis_binary",
]

NODE_TIMEOUT_MS = 1500
"""How long a silent node may stay silent before the others fail it over: short enough for a
test, long enough that a loaded two-core machine does not fail over a healthy node."""

MASTER_NAME = "mymaster"


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server", "the binary is not installed (Debian package redis-server)")
        raise AssertionError("unreachable")
    return binary


def _until(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {within} s")
        time.sleep(0.05)


class _Node:
    """One redis-server process, logging to the work directory."""

    def __init__(self, workdir: Path, name: str, args: list[str], port: int) -> None:
        self.name = name
        self.port = port
        self.args = args
        self.log = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        _until(self.ping, 10, f"{self.name} answering")

    def ping(self) -> bool:
        return bool(self.client(timeout=0.5).ping())

    def client(self, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(
            port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout, protocol=2
        )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no goodbye to the replicas, clients or Sentinels, as a crashed host."""
        if self.alive:
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.alive:
            assert self.process is not None
            stop_process(self.process)


def _server_args(binary: str, port: int, workdir: Path, *extra: str) -> list[str]:
    return [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
        *extra,
    ]  # fmt: skip


class LocalCluster:
    """``masters`` masters with ``replicas`` replicas each, created with ``redis-cli --cluster``."""

    def __init__(self, workdir: Path, *, masters: int = 3, replicas: int = 1) -> None:
        self.workdir = workdir
        self.masters = masters
        binary = redis_binary()
        self.nodes: list[_Node] = []
        for i in range(masters * (1 + replicas)):
            port = free_port()
            args = _server_args(
                binary,
                port,
                workdir,
                "--cluster-enabled", "yes",
                "--cluster-port", str(free_port()),  # not port + 10000, which may be taken
                "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                "--cluster-replica-validity-factor", "0",
            )  # fmt: skip
            self.nodes.append(_Node(workdir, f"cluster-{i + 1}", args, port))
        self.replicas = replicas

    @property
    def url(self) -> str:
        """Two seeds are enough: the client learns the rest from them."""
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:2])
        return f"redis+cluster://{seeds}"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            unavailable("redis-cli", "the binary is not installed (Debian package redis-tools)")
        result = subprocess.run(
            [
                str(cli), "--cluster", "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas", str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{result.stdout.decode()}")
        _until(self._settled, 30, "the cluster settling")

    def _settled(self) -> bool:
        """Every live node says the cluster is ok and agrees that live masters own all the
        slots."""
        views = []
        for node in self.nodes:
            if not node.alive:
                continue
            client = node.client()
            if b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                return False
            views.append(self._owners(client))
        live = {node.port for node in self.nodes if node.alive}
        return all(
            view == views[0] and len(view) == 16384 and set(view.values()) <= live for view in views
        )

    @staticmethod
    def _owners(client: redis.Redis) -> dict[int, int]:
        owners = {}
        for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
            for slot in range(start, end + 1):
                owners[slot] = int(master[1])
        return owners

    def _live_client(self) -> redis.Redis:
        return next(node for node in self.nodes if node.alive).client()

    def slot(self, key: str) -> int:
        return int(self._live_client().execute_command("CLUSTER", "KEYSLOT", key))

    def owner(self, key: str) -> _Node:
        """The node that is master of ``key``'s slot now (a channel name hashes as a key)."""
        port = self._owners(self._live_client())[self.slot(key)]
        return next(node for node in self.nodes if node.port == port)

    def kill(self, node: _Node) -> None:
        node.kill()

    def wait_failover(self, within: float = 20) -> None:
        """Until a replica took over every slot of the killed masters and all nodes agree."""
        _until(self._settled, within, "the failover")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {n.name}\n{n.log.read_text()[-1500:]}" for n in self.nodes)


class LocalSentinel:
    """A master, one replica, and three Sentinels watching them under ``MASTER_NAME``."""

    def __init__(self, workdir: Path) -> None:
        binary = redis_binary()
        self.workdir = workdir
        master, replica = free_port(), free_port()
        self.data = [
            _Node(workdir, "redis-a", _server_args(binary, master, workdir), master),
            _Node(
                workdir,
                "redis-b",
                _server_args(binary, replica, workdir, "--replicaof", "127.0.0.1", str(master)),
                replica,
            ),
        ]
        self.sentinels = []
        for i in range(3):
            port = free_port()
            conf = workdir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {NODE_TIMEOUT_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            self.sentinels.append(
                _Node(workdir, f"sentinel-{i + 1}", [binary, str(conf), "--sentinel"], port)
            )

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}"

    def start(self) -> None:
        for node in [*self.data, *self.sentinels]:
            node.start()
        _until(self._settled, 30, "the sentinels agreeing on the master and its replica")

    def master(self) -> _Node:
        """The data node every Sentinel names as master now."""
        port = self._named_master()
        return next(node for node in self.data if node.port == port)

    def _named_master(self) -> int | None:
        named = set()
        for sentinel in self.sentinels:
            if not sentinel.alive:
                continue
            _, port = sentinel.client().execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME
            )
            named.add(int(port))
        return named.pop() if len(named) == 1 else None

    def _settled(self) -> bool:
        """One master named by every Sentinel, alive, and with a replica in sync."""
        port = self._named_master()
        master = next((n for n in self.data if n.port == port and n.alive), None)
        if master is None:
            return False
        info = master.client().info("replication")
        if info.get("role") != "master" or int(info.get("connected_slaves", 0)) < 1:
            return False
        replica = info["slave0"]
        return bool(replica["state"] == "online" and replica["offset"] > 0)

    def wait_failover(self, old: _Node, within: float = 30) -> _Node:
        """Until every Sentinel names a live master other than ``old``; returns it."""

        def moved() -> bool:
            port = self._named_master()
            return port is not None and port != old.port and self.master().alive

        _until(moved, within, "the Sentinel failover")
        return self.master()

    def stop(self) -> None:
        for node in [*self.sentinels, *self.data]:
            node.stop()

    def logs(self) -> str:
        nodes = [*self.data, *self.sentinels]
        return "\n".join(f"--- {n.name}\n{n.log.read_text()[-1500:]}" for n in nodes)


@contextmanager
def local_cluster(workdir: Path, *, masters: int = 3) -> Iterator[LocalCluster]:
    cluster = LocalCluster(workdir, masters=masters)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@contextmanager
def local_sentinel(workdir: Path) -> Iterator[LocalSentinel]:
    group = LocalSentinel(workdir)
    try:
        group.start()
        yield group
    finally:
        group.stop()
