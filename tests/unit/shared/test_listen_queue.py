"""A burst of connections larger than the kernel's listen queue, arriving while the event loop is
busy, is neither dropped nor stalled: a dropped connection attempt is retried by the client's TCP
only after 1 s, then 3 s (a reconnect storm of 10,000 clients onto one replica read up to 42,000
drops and 8 s of waiting with a queue of 1,024). Every site asks for the deepest queue the kernel
allows, and its acceptor thread empties the queue while the loop is behind."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
import time
from pathlib import Path

import trustme
from aiohttp import web

from shared.http.acceptor import PERIOD
from shared.http.serve import Site, start_site

BURST = 5000


def somaxconn() -> int:
    return int(Path("/proc/sys/net/core/somaxconn").read_text())


def connect_all(port: int, count: int) -> list[socket.socket]:
    clients = []
    for _ in range(count):
        client = socket.socket()
        client.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            client.connect(("127.0.0.1", port))
        clients.append(client)
    return clients


def established(clients: list[socket.socket], seconds: float) -> int:
    """How many of ``clients`` finish connecting within ``seconds`` (a dropped attempt would be
    retried only after 1 s)."""
    by_fd = {client.fileno(): client for client in clients}
    poll = select.poll()
    for fd in by_fd:
        poll.register(fd, select.POLLOUT)
    count, deadline = 0, time.monotonic() + seconds
    while by_fd and time.monotonic() < deadline:
        for fd, _ in poll.poll(10):
            poll.unregister(fd)
            client = by_fd.pop(fd)
            count += client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    return count


def taken_by_acceptors(runner: web.AppRunner) -> int:
    """Connections the sites' acceptor threads took off the kernel's queue."""
    return sum(acceptor.taken for site in runner.sites for acceptor in site.acceptors)  # type: ignore[attr-defined]


async def test_a_burst_beyond_the_listen_queue_waits_for_a_busy_loop_and_is_served() -> None:
    runner, port = await start_site(Site(web.Application(), "127.0.0.1", 0))
    clients: list[socket.socket] = []
    try:
        # This coroutine never yields while the burst arrives: the loop accepts nothing, as in
        # one long iteration of a storm.
        assert somaxconn() < BURST or BURST > 4096
        clients = connect_all(port, BURST)
        assert established(clients, 0.5) == BURST
        taken = taken_by_acceptors(runner)
        assert taken > 0
        loop = asyncio.get_running_loop()
        for client in clients[:: BURST // 5]:  # the loop, free again, serves what was handed over
            await loop.sock_sendall(client, b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = await asyncio.wait_for(loop.sock_recv(client, 1024), 5)
            assert reply.startswith(b"HTTP/1.1 404"), reply[:100]
    finally:
        for client in clients:
            client.close()
        await runner.cleanup()


async def test_a_stopped_site_no_longer_accepts() -> None:
    runner, port = await start_site(Site(web.Application(), "127.0.0.1", 0))
    try:
        for site in list(runner.sites):
            await site.stop()
        await asyncio.sleep(PERIOD * 3)
        with socket.socket() as client, contextlib.suppress(ConnectionRefusedError):
            client.settimeout(1)
            client.connect(("127.0.0.1", port))
            raise AssertionError("a stopped site still accepted a connection")
    finally:
        await runner.cleanup()


async def test_connections_the_acceptor_takes_are_served_over_the_sites_tls() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    site = Site(web.Application(), "127.0.0.1", 0, ssl_context=server_context)
    runner, port = await start_site(site)
    clients: list[socket.socket] = []
    try:
        clients = connect_all(port, 20)
        time.sleep(PERIOD * 5)  # noqa: ASYNC251  # the loop held on purpose: the acceptor takes them
        assert established(clients, 0.5) == 20
        taken = taken_by_acceptors(runner)
        assert taken == 20
        for client in clients[:3]:
            reader, writer = await asyncio.open_connection(
                sock=client, ssl=client_context, server_hostname="127.0.0.1"
            )
            writer.write(b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = await asyncio.wait_for(reader.read(1024), 5)
            assert reply.startswith(b"HTTP/1.1 404"), reply[:100]
            writer.close()
    finally:
        for client in clients:
            client.close()
        await runner.cleanup()
