"""The one way both services reach Redis: ``REDIS_URL`` names a server, a Sentinel group or a
Cluster, and every Redis user (the bus, the revocation ledger, tickets, history, presence, the
per-user slots) opens its client here.

- ``redis://[user:password@]host:port/db`` and ``rediss://...`` (TLS): one server, as redis-py's
  ``from_url`` reads it (its query options included).
- ``redis+sentinel://[user:password@]h1:26379,h2:26379/<master name>[?db=N]``: the master that
  the Sentinels name. Every new connection asks them, so after a failover the clients reconnect
  to the new master by themselves. The password is the data nodes'; Sentinels that want one of
  their own (``requirepass`` in sentinel.conf) get ``?sentinel_password=`` (or
  ``REDIS_SENTINEL_PASSWORD``).
- ``redis+cluster://[user:password@]h1:7000,h2:7001``: a Redis Cluster, any subset of its nodes as
  seeds. Keys are routed by hash slot; multi-key scripts tag their keys (``{channel}``) so that
  they share one.
- ``rediss+sentinel://`` and ``rediss+cluster://``: the same over TLS, to every Sentinel and data
  node, with redis-py's TLS options in the query as ``rediss://`` takes them: ``ssl_ca_certs``
  (the CA file; the system's CAs without it), ``ssl_certfile`` and ``ssl_keyfile`` (a client
  certificate), ``ssl_check_hostname`` (``true`` by default).

Anything else stops start-up with a :class:`~shared.config.env.ConfigError` that names the forms.
"""

from __future__ import annotations

import asyncio
import enum
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.config.env import (
    ConfigError,
    check_host_and_port,
    env_secret,
    env_secret_url,
    redact_url,
)

__all__ = [
    "RedisClient",
    "RedisTarget",
    "Topology",
    "env_redis_url",
    "node_client",
    "open_client",
    "parse_redis_url",
    "refresh_topology",
]

RedisClient = Redis | RedisCluster
"""What :func:`open_client` returns; both have the same command methods."""

_FORMS = (
    "redis://host:port/db, rediss://host:port/db, "
    "redis+sentinel://host:26379,host:26379/<master name>, redis+cluster://host:7000,host:7001, "
    "or rediss+sentinel:// and rediss+cluster:// for TLS"
)
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")
"""redis-py's TLS options a group URL may carry (``rediss+...`` only)."""


class Topology(enum.Enum):
    SERVER = "server"
    SENTINEL = "sentinel"
    CLUSTER = "cluster"


@dataclass(frozen=True)
class RedisTarget:
    """A parsed ``REDIS_URL``. ``url`` is the original (with its password), for a single server."""

    topology: Topology
    url: str
    hosts: tuple[tuple[str, int], ...] = ()
    """The Sentinels, or the Cluster's seed nodes."""
    master: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    tls: tuple[tuple[str, str | bool], ...] | None = None
    """For ``rediss+...``: the TLS options (possibly none); None without TLS."""

    def tls_options(self) -> dict[str, Any]:
        """redis-py's connection options for TLS to every node (empty without TLS)."""
        return {} if self.tls is None else {"ssl": True, **dict(self.tls)}

    def __repr__(self) -> str:
        return f"RedisTarget({self.topology.value}, {redact_url(self.url)})"


def env_redis_url(environ: Mapping[str, str]) -> str:
    """``REDIS_URL`` (or ``REDIS_URL_FILE``) with ``REDIS_PASSWORD(_FILE)`` and
    ``REDIS_SENTINEL_PASSWORD(_FILE)`` put in, checked at start-up: empty when unset (the
    embedded, in-process deployment)."""
    url = env_secret_url(environ, "REDIS_URL", "REDIS_PASSWORD")
    sentinel_password = env_secret(environ, "REDIS_SENTINEL_PASSWORD")
    if sentinel_password:
        if not url or parse_redis_url(url).topology is not Topology.SENTINEL:
            raise ConfigError(
                "REDIS_SENTINEL_PASSWORD is set but REDIS_URL names no Sentinel group "
                "(redis+sentinel:// or rediss+sentinel://)"
            )
        parts = urlsplit(url)
        if "sentinel_password" in parse_qs(parts.query):
            raise ConfigError(
                "REDIS_URL already holds a sentinel_password: remove it, or unset "
                "REDIS_SENTINEL_PASSWORD"
            )
        option = f"sentinel_password={quote(sentinel_password, safe='')}"
        url = parts._replace(query=f"{parts.query}&{option}" if parts.query else option).geturl()
    if url:
        parse_redis_url(url)
    return url


def parse_redis_url(url: str) -> RedisTarget:
    """Read ``REDIS_URL``; raises ``ConfigError`` (without the password) when it is malformed."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ConfigError(f"REDIS_URL must be one of {_FORMS}; got {redact_url(url)!r}")
    scheme = scheme.lower()
    if scheme in ("redis", "rediss"):
        check_host_and_port("REDIS_URL", url)
        if not urlsplit(url).hostname:
            raise ConfigError(f"REDIS_URL names no host: {redact_url(url)!r}")
        try:
            parse_url(url)  # the options redis-py reads (``?socket_timeout=abc`` raised at start)
        except ValueError as exc:
            raise ConfigError(f"REDIS_URL: {exc} {redact_url(url)!r}") from None
        return RedisTarget(Topology.SERVER, url)
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        return _parse_group(url, Topology.SENTINEL, default_port=26379, tls=scheme[5] == "s")
    if scheme in ("redis+cluster", "rediss+cluster"):
        return _parse_group(url, Topology.CLUSTER, default_port=6379, tls=scheme[5] == "s")
    raise ConfigError(f"REDIS_URL has an unknown scheme {scheme!r}: use one of {_FORMS}")


def _parse_group(url: str, topology: Topology, *, default_port: int, tls: bool) -> RedisTarget:
    parts = urlsplit(url)
    shown = redact_url(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    hosts = tuple(_host_port(item, default_port, shown) for item in hostlist.split(","))
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    path = parts.path.strip("/")
    sentinel_password = None
    if topology is Topology.SENTINEL:
        if not path or "/" in path:
            raise ConfigError(f"REDIS_URL names no Sentinel master (the path): {shown!r}")
        db = _db(options.pop("db", "0"), shown)
        sentinel_password = options.pop("sentinel_password", None) or None
    else:
        if path or "db" in options:
            raise ConfigError(f"a Redis Cluster has only database 0: {shown!r}")
        db = 0
    tls_options = _tls_options(options, tls, shown)
    if options:
        raise ConfigError(f"REDIS_URL has unknown options {sorted(options)}: {shown!r}")
    user, has_password, password = userinfo.partition(":")
    return RedisTarget(
        topology,
        url,
        hosts,
        master=unquote(path),
        db=db,
        username=unquote(user) or None,
        password=unquote(password) if has_password else None,
        sentinel_password=sentinel_password,
        tls=tls_options,
    )


def _tls_options(
    options: dict[str, str], tls: bool, shown: str
) -> tuple[tuple[str, str | bool], ...] | None:
    """Takes the TLS options out of ``options``: only a ``rediss+...`` URL may carry them."""
    taken = {key: options.pop(key) for key in _TLS_OPTIONS if key in options}
    if not tls:
        if taken:
            raise ConfigError(
                f"REDIS_URL has TLS options {sorted(taken)} without TLS: use rediss+sentinel:// "
                f"or rediss+cluster://: {shown!r}"
            )
        return None
    checked: dict[str, str | bool] = dict(taken)
    if "ssl_check_hostname" in taken:
        flag = taken["ssl_check_hostname"].lower()
        if flag not in ("true", "false"):
            raise ConfigError(f"REDIS_URL's ssl_check_hostname must be true or false: {shown!r}")
        checked["ssl_check_hostname"] = flag == "true"
    return tuple(checked.items())


def _host_port(item: str, default_port: int, shown: str) -> tuple[str, int]:
    host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
    if not host:
        raise ConfigError(f"REDIS_URL has an empty host in {shown!r}")
    if not port:
        return host, default_port
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ConfigError(f"REDIS_URL has a bad port {port!r} in {shown!r}")
    return host, int(port)


def _db(raw: str, shown: str) -> int:
    if not (raw.isascii() and raw.isdigit()):
        raise ConfigError(f"REDIS_URL's db must be a number, got {raw!r} in {shown!r}")
    return int(raw)


def open_client(
    url: str | RedisTarget,
    *,
    timeout: float,
    retries: int = 1,
    max_connections: int | None = None,
    queue_timeout: float | None = None,
) -> RedisClient:
    """A client for every topology, with the same options everywhere.

    ``timeout``: seconds to connect and to wait for a reply. ``retries``: how often redis-py
    re-sends a command after a broken connection or a timeout (fit for reads; writes that must
    not run twice go through :mod:`shared.redis.write`). ``max_connections`` with
    ``queue_timeout``: a bounded pool that makes callers queue for a connection rather than fail
    (one server or Sentinel; a Cluster caps each node at ``max_connections`` and raises past it:
    redis-py's cluster client has no blocking pool)."""
    target = url if isinstance(url, RedisTarget) else parse_redis_url(url)
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "decode_responses": True,
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), retries),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }
    bounded = max_connections is not None
    if target.topology is Topology.SERVER:
        if not bounded:
            return Redis.from_url(target.url, **options)
        pool = BlockingConnectionPool.from_url(
            target.url, max_connections=max_connections, timeout=queue_timeout, **options
        )
        return Redis.from_pool(pool)
    options.update(username=target.username, password=target.password, **target.tls_options())
    if target.topology is Topology.SENTINEL:
        sentinel = Sentinel(
            target.hosts,
            sentinel_kwargs={
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
                "decode_responses": True,
                "password": target.sentinel_password,
                **target.tls_options(),
            },
        )
        pool_options: dict[str, Any] = (
            {"max_connections": max_connections, "timeout": queue_timeout} if bounded else {}
        )
        client = sentinel.master_for(
            target.master,
            redis_class=_SentinelRedis,
            connection_pool_class=_BlockingSentinelPool if bounded else SentinelConnectionPool,
            db=target.db,
            **options,
            **pool_options,
        )
        assert isinstance(client, _SentinelRedis)
        return client
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.hosts],
        max_connections=max_connections or 100,
        **options,
    )


def node_client(target: RedisTarget, host: str, port: int, *, timeout: float) -> Redis:
    """A plain client of one Cluster node (the bus subscribes there, node by node)."""
    return Redis(
        host=host,
        port=port,
        username=target.username,
        password=target.password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 0),
        **target.tls_options(),
    )


class _SentinelRedis(Redis):
    """The master's client, which also closes its connections to the Sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        pool = self.connection_pool
        await super().aclose(close_connection_pool)
        if isinstance(pool, SentinelConnectionPool):
            for sentinel in pool.sentinel_manager.sentinels:
                await sentinel.aclose()


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool that makes callers queue for a connection, as the single server's does."""


_refreshing: weakref.WeakKeyDictionary[RedisCluster, asyncio.Task[None]] = (
    weakref.WeakKeyDictionary()
)


async def refresh_topology(cluster: RedisCluster) -> None:
    """Ask the Cluster again which node owns which slots (after a node failed or answered
    MOVED). Callers that fail together share one refresh rather than each asking every node."""
    task = _refreshing.get(cluster)
    if task is None or task.done():
        task = asyncio.get_running_loop().create_task(cluster.nodes_manager.initialize())
        _refreshing[cluster] = task
    await asyncio.shield(task)
