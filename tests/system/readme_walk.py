"""Walk the README's own command blocks: extract the marked ones, run each in a fresh shell on a
pseudo-terminal (so prompts, Ctrl-C and Ctrl-D behave as for a person), and answer the prompts.

A block is walked when an HTML comment right before its fence names the run it belongs to::

    <!-- walk: embedded postgres -->      run to completion against that run
    <!-- walk: postgres background -->    start it, keep it serving, Ctrl-C it at the end
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BANNER_RULE", "Block", "Rule", "Terminal", "assert_json_but_the_banner", "blocks"]

_BLOCK = re.compile(r"<!-- walk: ([^>]*?) -->\n```(\w+)\n(.*?)```", re.DOTALL)
BANNER_RULE = "-" * 72
"""The lines of dashes above and below `make run`'s banner."""


def assert_json_but_the_banner(output: str, commands: tuple[str, ...] = ()) -> None:
    """Every line a service wrote parses as JSON, but for `make run`'s one banner, framed by lines
    of dashes. A terminal's own echo of Ctrl-C (``^C``) is no line of theirs, nor are the lines
    starting with ``commands``, what a block's commands print for the person before it serves."""
    banners, inside = 0, False
    for line in output.splitlines():
        line = line.removeprefix("^C")
        if line == BANNER_RULE:
            banners += not inside
            inside = not inside
            continue
        if inside or not line or line.startswith(commands):
            continue
        try:
            json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}\n---\n{output}") from None
    assert banners <= 1 and not inside, output


@dataclass(frozen=True)
class Block:
    runs: frozenset[str]
    language: str
    text: str
    background: bool

    def script(self, replacements: Mapping[str, str], workdir: Path) -> list[str]:
        """The command line that runs this block as printed, after the replacements."""
        text = self.text
        for old, new in replacements.items():
            text = text.replace(old, new)
        if self.language == "python":
            path = workdir / f"block-{abs(hash(text))}.py"
            path.write_text(text)
            return [".venv/bin/python", str(path)]
        assert self.language == "sh", self.language
        return ["bash", "-c", "set -eo pipefail\n" + text]


def blocks(readme: str, run: str) -> list[Block]:
    found = []
    for match in _BLOCK.finditer(readme):
        words = set(match.group(1).split())
        runs = frozenset(words - {"background"})
        if run in runs:
            found.append(Block(runs, match.group(2), match.group(3), "background" in words))
    return found


@dataclass(frozen=True)
class Rule:
    """When ``pattern`` appears in the output, type ``keys`` (once per appearance)."""

    pattern: str
    keys: str


class Terminal:
    """One command on its own pseudo-terminal, as in a fresh terminal window."""

    def __init__(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, rules: Sequence[Rule] = ()
    ) -> None:
        master, slave = os.openpty()
        self.process = subprocess.Popen(
            ["setsid", "--ctty", *argv],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=dict(env),
            cwd=cwd,
        )
        os.close(slave)
        self._master = master
        self._rules = [(re.compile(rule.pattern), rule.keys) for rule in rules]
        self._seen = [0] * len(self._rules)
        self._chunks: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def output(self) -> str:
        return "".join(self._chunks).replace("\r\n", "\n")

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._master, 4096)
            except OSError:
                return
            if not data:
                return
            self._chunks.append(data.decode(errors="replace"))

    def type(self, keys: str) -> None:
        os.write(self._master, keys.encode())

    def _answer(self) -> None:
        output = self.output
        for index, (pattern, keys) in enumerate(self._rules):
            match = pattern.search(output, self._seen[index])
            if match is not None:
                self._seen[index] = match.end()
                self.type(keys)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            self._answer()
            assert self.process.poll() is None, f"exited before {text!r}:\n{self.output}"
            assert time.monotonic() < deadline, f"no {text!r} after {timeout}s:\n{self.output}"
            time.sleep(0.05)

    def finish(self, timeout: float) -> int:
        """Answer prompts until the command exits; its exit status."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            self._answer()
            if time.monotonic() > deadline:
                self.process.kill()
                raise AssertionError(f"still running after {timeout}s:\n{self.output}")
            time.sleep(0.05)
        self._reader.join(2)
        os.close(self._master)
        return self.process.returncode
