"""Highly available Redis on loopback for the tests: a Redis Cluster (masters with one replica
each) or a Sentinel group (a master, a replica and three Sentinels), every node a real
``redis-server`` process on a free port that a test may kill. Either may be :class:`Secured`:
TLS on every port (a throwaway CA), a password on the data nodes, one on the Sentinels.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import trustme

from tests.services import free_port, stop_process, unavailable

__all__ = [
    "NODE_TIMEOUT_MS",
    "LocalCluster",
    "LocalSentinel",
    "Secured",
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


@dataclass(frozen=True)
class Secured:
    """What a secured group asks of its clients: TLS with ``ca`` (when ``tls``), ``password`` on
    the data nodes, ``sentinel_password`` on the Sentinels."""

    workdir: Path
    tls: bool = True
    password: str | None = None
    sentinel_password: str | None = None

    @property
    def ca(self) -> Path:
        return self.workdir / "tls-ca.pem"

    def write_files(self) -> None:
        """A CA, and one certificate for every node (they all listen on 127.0.0.1)."""
        if not self.tls:
            return
        authority = trustme.CA()
        authority.cert_pem.write_to_path(str(self.ca))
        issued = authority.issue_cert("127.0.0.1", "localhost")
        issued.private_key_and_cert_chain_pem.write_to_path(str(self.workdir / "tls-cert.pem"))
        issued.private_key_pem.write_to_path(str(self.workdir / "tls-key.pem"))

    def settings(self, port: int, *, sentinel: bool = False) -> list[tuple[str, str]]:
        """How a node listens and authenticates: ``--name value`` arguments, or a Sentinel's
        config lines."""
        pairs = [("port", str(port))]
        if self.tls:
            pairs = [
                ("port", "0"),
                ("tls-port", str(port)),
                ("tls-cert-file", str(self.workdir / "tls-cert.pem")),
                ("tls-key-file", str(self.workdir / "tls-key.pem")),
                ("tls-ca-cert-file", str(self.ca)),
                ("tls-auth-clients", "no"),
                ("tls-replication", "yes"),
            ]
        password = self.sentinel_password if sentinel else self.password
        if password:
            pairs.append(("requirepass", password))
        if self.password and not sentinel:
            pairs.append(("masterauth", self.password))
        return pairs

    def client_options(self, *, sentinel: bool = False) -> dict[str, Any]:
        options: dict[str, Any] = {
            "password": self.sentinel_password if sentinel else self.password
        }
        if self.tls:
            options |= {"ssl": True, "ssl_ca_certs": str(self.ca)}
        return options

    def cli_args(self) -> list[str]:
        args = ["--tls", "--cacert", str(self.ca)] if self.tls else []
        return [*args, "-a", self.password, "--no-auth-warning"] if self.password else args


class _Node:
    """One redis-server process, logging to the work directory."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        args: list[str],
        port: int,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.args = args
        self.log = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.client_options = client_options or {}

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        _until(self.ping, 10, f"{self.name} answering")

    def ping(self) -> bool:
        return bool(self.client(timeout=0.5).ping())

    def client(self, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(
            port=self.port,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            protocol=2,
            **self.client_options,
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


def _listening(
    port: int, secured: Secured | None, *, sentinel: bool = False
) -> list[tuple[str, str]]:
    return secured.settings(port, sentinel=sentinel) if secured else [("port", str(port))]


def _server_args(
    binary: str, port: int, workdir: Path, *extra: str, secured: Secured | None = None
) -> list[str]:
    return [
        binary,
        *(arg for name, value in _listening(port, secured) for arg in (f"--{name}", value)),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
        *extra,
    ]  # fmt: skip


class LocalCluster:
    """``masters`` masters with ``replicas`` replicas each, created with ``redis-cli --cluster``."""

    def __init__(
        self,
        workdir: Path,
        *,
        masters: int = 3,
        replicas: int = 1,
        secured: Secured | None = None,
    ) -> None:
        self.workdir = workdir
        self.masters = masters
        self.secured = secured
        if secured:
            secured.write_files()
        binary = redis_binary()
        self.nodes: list[_Node] = []
        tls_cluster = ("--tls-cluster", "yes") if secured and secured.tls else ()
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
                *tls_cluster,
                secured=secured,
            )  # fmt: skip
            options = secured.client_options() if secured else None
            self.nodes.append(_Node(workdir, f"cluster-{i + 1}", args, port, options))
        self.replicas = replicas

    @property
    def url(self) -> str:
        """Two seeds are enough: the client learns the rest from them."""
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:2])
        return _group_url("cluster", seeds, "", self.secured)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            unavailable("redis-cli", "the binary is not installed (Debian package redis-tools)")
        result = subprocess.run(
            [
                str(cli), *(self.secured.cli_args() if self.secured else []), "--cluster", "create",
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

    def __init__(self, workdir: Path, secured: Secured | None = None) -> None:
        binary = redis_binary()
        self.workdir = workdir
        self.secured = secured
        if secured:
            secured.write_files()
        master, replica = free_port(), free_port()
        options = secured.client_options() if secured else None
        self.data = [
            _Node(
                workdir,
                "redis-a",
                _server_args(binary, master, workdir, secured=secured),
                master,
                options,
            ),
            _Node(
                workdir,
                "redis-b",
                _server_args(
                    binary,
                    replica,
                    workdir,
                    "--replicaof",
                    "127.0.0.1",
                    str(master),
                    secured=secured,
                ),
                replica,
                options,
            ),
        ]
        self.sentinels = []
        for i in range(3):
            port = free_port()
            conf = workdir / f"sentinel-{port}.conf"
            lines = [f"{name} {value}" for name, value in _listening(port, secured, sentinel=True)]
            if secured and secured.password:
                lines.append(f"sentinel auth-pass {MASTER_NAME} {secured.password}")
            conf.write_text(
                "\n".join(lines) + f"\nbind 127.0.0.1\ndir {workdir}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {NODE_TIMEOUT_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            self.sentinels.append(
                _Node(
                    workdir,
                    f"sentinel-{i + 1}",
                    [binary, str(conf), "--sentinel"],
                    port,
                    secured.client_options(sentinel=True) if secured else None,
                )
            )

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.sentinels)
        return _group_url("sentinel", hosts, f"/{MASTER_NAME}", self.secured)

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


def _group_url(kind: str, hosts: str, path: str, secured: Secured | None) -> str:
    """The ``REDIS_URL`` of a group, with what a secured one asks for."""
    if secured is None:
        return f"redis+{kind}://{hosts}{path}"
    userinfo = f":{secured.password}@" if secured.password else ""
    options = []
    if secured.sentinel_password:
        options.append(f"sentinel_password={secured.sentinel_password}")
    if secured.tls:
        options.append(f"ssl_ca_certs={secured.ca}")
    query = f"?{'&'.join(options)}" if options else ""
    return f"redis{'s' if secured.tls else ''}+{kind}://{userinfo}{hosts}{path}{query}"


@contextmanager
def local_cluster(
    workdir: Path, *, masters: int = 3, secured: Secured | None = None
) -> Iterator[LocalCluster]:
    cluster = LocalCluster(workdir, masters=masters, secured=secured)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@contextmanager
def local_sentinel(workdir: Path, secured: Secured | None = None) -> Iterator[LocalSentinel]:
    group = LocalSentinel(workdir, secured)
    try:
        group.start()
        yield group
    finally:
        group.stop()
