"""The README's own command blocks, and those of the docs pages it sends a newcomer to, work as
printed: against a fresh `make run` (on free ports), then, in the same checkout with `make run`
stopped, the PostgreSQL section (its auth_service, the blocks against it, then the whole stack on
it), each walked twice in fresh shells. Every line the services write, but for `make run`'s
banner, parses as JSON.

The blocks are extracted from the pages in ``WALKED`` (see ``readme_walk``), in that order, so the
pages and the walk cannot drift; a page outside it with a block marked for these runs fails here.
Only the ports (and the scratch file ``/tmp/tokens.json``) are substituted; every shell starts in a
checkout directory whose ``.venv`` is this one and whose Makefile is this one's.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from shared.config.env import redact_url
from tests.services import create_schema, drop_schema, find_postgres, free_port, unavailable
from tests.system.readme_walk import Block, Rule, Terminal, assert_json_but_the_banner, blocks

pytestmark = pytest.mark.system
ROOT = Path(__file__).resolve().parents[2]
WALKED = ("README.md", "docs/getting-started.md", "docs/operations.md")
"""The pages walked, in the order a newcomer reads them: the README, then where it sends them."""
RUNS = ("embedded", "postgres", "postgres-stack")
PASSWORD = "correct horse battery"
POSTGRES_IN_DOCS = "postgresql://postgres@127.0.0.1:5432/test"

# What a person types at the prompts and in the interactive examples.
RULES = [
    Rule(r"password(?: for \w+)?: $|again: $", PASSWORD + "\n"),
    Rule(r"type to chat, Ctrl-D to quit", "hello from the README\n"),
    Rule(r"\] \w+: hello from the README", "\x04"),  # our line came back: Ctrl-D
    Rule(r"\w+ \{'text': 'hello'\}", "\x03"),  # the client example printed: Ctrl-C
]


# The files `make run`'s .venv stamp depends on.
STAMP_SOURCES = [
    "pyproject.toml",
    "protocol/pyproject.toml",
    "clients/python/pyproject.toml",
    "requirements/dev.txt",
]


def checkout(tmp_path: Path, name: str) -> Path:
    """A fresh directory to run in, as a new clone with `make run`'s .venv already built: the
    stamp's sources are copies older than it, whatever this checkout's own times are."""
    workdir = tmp_path / name
    workdir.mkdir()
    (workdir / ".venv").symlink_to(ROOT / ".venv")
    (workdir / "Makefile").symlink_to(ROOT / "Makefile")
    for source in STAMP_SOURCES:
        (workdir / source).parent.mkdir(parents=True, exist_ok=True)
        (workdir / source).write_bytes((ROOT / source).read_bytes())
        os.utime(workdir / source, (0, 0))
    return workdir


def shell_env(auth_port: int, ws_port: int) -> dict[str, str]:
    """A new terminal's: none of the services' variables, and not inside `make test`'s make."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AUTH_", "WS_", "REDIS_", "MAKE")) and k != "MFLAGS"
    }
    env.update({"AUTH_PORT": str(auth_port), "WS_PORT": str(ws_port), "TERM": "dumb"})
    return env


def walk(block: Block, workdir: Path, env: dict[str, str], replacements: dict[str, str]) -> str:
    terminal = Terminal(block.script(replacements, workdir), env, workdir, RULES)
    status = terminal.finish(timeout=60)
    output = terminal.output
    assert status == 0, f"exit {status}:\n{block.text}\n---\n{output}"
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if '"error"' in line]
    assert all("username_taken" in line for line in errors), output
    return output


def wait_ready(terminal: Terminal, url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert terminal.process.poll() is None, f"exited:\n{terminal.output}"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (loopback)
                if response.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} not ready:\n{terminal.output}"
        time.sleep(0.1)


def replacements(auth_port: int, ws_port: int, tmp_path: Path) -> dict[str, str]:
    return {
        "127.0.0.1:8081": f"127.0.0.1:{auth_port}",
        "127.0.0.1:8082": f"127.0.0.1:{ws_port}",
        "/tmp/tokens.json": str(tmp_path / "tokens.json"),  # noqa: S108 (replaced, not used)
        # The banner's chat command off the default ports names them (a new shell has no
        # AUTH_PORT); only the banner has this line.
        "chat --user bob   (and": f"chat --user bob --auth-url http://127.0.0.1:{auth_port} "
        f"--ws-url ws://127.0.0.1:{ws_port}/ws   (and",
    }


@contextmanager
def terminal_serving(
    terminal: Terminal, urls: list[str], commands: tuple[str, ...] = ()
) -> Iterator[Terminal]:
    """Keep a serving command up for the block, then stop it with Ctrl-C: a clean stop, and
    nothing but JSON lines and `make run`'s banner written, besides what the block's ``commands``
    print first. (make itself ends by the SIGINT it passed on, silently, as in a terminal.)"""
    try:
        for url in urls:
            wait_ready(terminal, url)
        yield terminal
    finally:
        if terminal.process.poll() is None:
            terminal.type("\x03")
    status = terminal.finish(timeout=30)
    assert status in (0, -signal.SIGINT), terminal.output
    assert "Traceback" not in terminal.output, terminal.output
    assert_json_but_the_banner(terminal.output, commands)


def make_run(workdir: Path, env: dict[str, str]) -> Terminal:
    return Terminal(["make", "run"], env, workdir)


def ready_urls(*ports: int) -> list[str]:
    return [f"http://127.0.0.1:{port}/readyz" for port in ports]


def walked_blocks(run: str) -> list[Block]:
    return [block for page in WALKED for block in blocks((ROOT / page).read_text(), run)]


def test_every_page_with_walked_blocks_is_walked() -> None:
    """A block marked for these runs on a page the walk does not read would never run."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    marked = {
        str(page.relative_to(ROOT))
        for page in pages
        if any(blocks(page.read_text(), run) for run in RUNS)
    }
    assert marked == set(WALKED)


def printed_banner(replacements: dict[str, str]) -> re.Pattern[str]:
    """The banner as the README shows it (its one ``text`` block), on the walk's ports; its "..."
    stands for the generated key."""
    shown = (ROOT / "README.md").read_text().split("```text\n", 1)[1].split("```", 1)[0]
    for old, new in replacements.items():
        shown = shown.replace(old, new)
    return re.compile(re.escape(shown).replace(re.escape("..."), "[^ ]+"))


def test_readme_walks_on_the_embedded_stack_twice(tmp_path: Path) -> None:
    walked = walked_blocks("embedded")
    assert len(walked) >= 6, "the walk markers went missing"
    for attempt in ("first", "second"):
        workdir = checkout(tmp_path, attempt)
        auth_port, ws_port = free_port(), free_port()
        env = shell_env(auth_port, ws_port)
        subs = replacements(auth_port, ws_port, tmp_path)
        stack = make_run(workdir, env)
        with terminal_serving(stack, ready_urls(auth_port, ws_port)):
            stack.wait_for("realtime gateway is up", timeout=30)
            stack.wait_for("docs/rest.md (every endpoint)", timeout=5)
            assert printed_banner(subs).search(stack.output), "the README shows another banner"
            for block in walked:
                walk(block, workdir, env, subs)


def test_readme_walks_make_run_then_postgresql_twice_in_one_checkout(tmp_path: Path) -> None:
    """The first hour's order: `make run`, stopped, then the PostgreSQL section with its secret,
    then the whole stack on PostgreSQL (which the first-hour report found refusing to start: its
    dev secret was another file than the one `auth_service secret` made)."""
    try:
        asyncio.run(find_postgres())
    except Exception as exc:
        unavailable("PostgreSQL", str(exc))
    url, schema = asyncio.run(create_schema())
    try:
        server = [b for b in walked_blocks("postgres") if b.background]
        walked = [b for b in walked_blocks("postgres") if not b.background]
        stack_on_it = walked_blocks("postgres-stack")
        assert len(server) == 1 and walked, "the walk markers went missing"
        assert len(stack_on_it) == 1 and stack_on_it[0].background, "the stack on PostgreSQL"
        workdir = checkout(tmp_path, "checkout")
        for _ in ("first", "second"):
            auth_port, ws_port = free_port(), free_port()
            env = shell_env(auth_port, ws_port)
            subs = {**replacements(auth_port, ws_port, tmp_path), POSTGRES_IN_DOCS: url}
            with terminal_serving(make_run(workdir, env), ready_urls(auth_port, ws_port)) as stack:
                stack.wait_for("realtime gateway is up", timeout=30)
            terminal = Terminal(server[0].script(subs, workdir), env, workdir)
            with terminal_serving(terminal, ready_urls(auth_port), ("auth_service: ",)):
                for block in walked:
                    walk(block, workdir, env, subs)
            terminal = Terminal(stack_on_it[0].script(subs, workdir), env, workdir)
            with terminal_serving(terminal, ready_urls(auth_port, ws_port)) as stack:
                stack.wait_for("docs/rest.md (every endpoint)", timeout=30)
            assert f"database      {redact_url(url)}\n" in stack.output, stack.output
            assert "key encryption from .data/key-encryption-secret (AUTH_DEV=1)" in stack.output
    finally:
        asyncio.run(drop_schema(schema))
