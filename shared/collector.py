"""The garbage collector's policy of a process that holds many long-lived connections.

CPython collects its oldest generation whenever it has grown by a quarter since the last full
collection, and a full collection walks every tracked object. While a gateway adds sockets (about
70 tracked objects each, mostly aiohttp's), that is a full walk every few thousand sockets, each
longer than the last: 350 ms to 1.3 s at 10k sockets on the development machine, with the loop
stopped. Those objects are not garbage; they live as long as their sockets.

:func:`freeze_survivors` moves into the permanent generation (``gc.freeze()``) the start-up heap
and then, after every generation-1 collection, what survived it: at that moment the two young
generations have just been emptied, so only objects that lived through a collection are frozen
(most of them sockets' state), and the oldest generation never grows. Young garbage is collected as before; a frozen object is
still freed by reference counting when its last reference goes. What the policy gives up is the
collection of cycles among frozen objects: an object that survived and later becomes part of
unreachable cyclic garbage stays in memory. So it is only for a process whose long-lived state
is freed by reference counting: ws_service's sockets are (``tests/integration/
test_collector.py`` checks it, and ``shared.http.serve`` breaks the one cycle aiohttp leaves per
closed WebSocket). docs/performance.md has the measured trade-off.
"""

from __future__ import annotations

import gc
from typing import Any

__all__ = ["freeze_survivors", "release"]


def _after_collection(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info["generation"] == 1:
        gc.freeze()


def freeze_survivors() -> None:
    """Freeze the heap now (call after start-up) and what survives each generation-1 collection
    from now on. Idempotent."""
    gc.collect()  # the start-up's garbage is not frozen with it
    gc.freeze()
    if _after_collection not in gc.callbacks:
        gc.callbacks.append(_after_collection)


def release() -> None:
    """Undo :func:`freeze_survivors` (tests): the frozen objects go back to the oldest
    generation, where the next full collection looks at them again."""
    if _after_collection in gc.callbacks:
        gc.callbacks.remove(_after_collection)
    gc.unfreeze()
