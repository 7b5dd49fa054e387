"""shared/http/serve.py leans on private parts of aiohttp's connection handler (there is no public
hook to answer unparsable requests with JSON or to count keep-alive timeouts). aiohttp is pinned
to the tested minor in pyproject.toml and the lock; these checks fail loudly, naming the hook,
when an upgrade moves one, instead of the behaviour silently changing."""

from __future__ import annotations

import inspect

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from shared.http.serve import JsonErrorRequestHandler

TESTED_MINOR = (3, 14)


def test_aiohttp_is_the_minor_these_hooks_were_checked_against() -> None:
    version = tuple(int(part) for part in aiohttp.__version__.split(".")[:2])
    assert version == TESTED_MINOR, (
        f"aiohttp {aiohttp.__version__}: re-check every private hook shared/http/serve.py uses "
        f"(this file lists them), then move TESTED_MINOR and the pin in pyproject.toml"
    )


def test_the_private_hooks_are_still_there() -> None:
    slots = set(RequestHandler.__slots__)
    missing = {"_force_close", "_manager"} - slots
    assert not missing, f"RequestHandler lost {missing}"
    assert callable(getattr(RequestHandler, "_process_keepalive", None)), "_process_keepalive"
    parameters = list(inspect.signature(RequestHandler.handle_error).parameters)
    assert parameters == ["self", "request", "status", "exc", "message"], parameters
    assert "__call__" in vars(web.Server), "web.Server makes the connection handlers"


def test_the_subclass_adds_no_state_so_swapping_the_class_is_safe() -> None:
    assert JsonErrorRequestHandler.__slots__ == ()
    assert JsonErrorRequestHandler.__mro__[1] is RequestHandler
