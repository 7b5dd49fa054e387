"""Errors a bus raises, importable without pulling in any bus backend."""

from __future__ import annotations

__all__ = ["BusError", "BusUnavailable"]


class BusError(Exception):
    """Root of the bus errors; ``code`` is the machine-readable reason."""

    code = "bus_error"


class BusUnavailable(BusError):
    """The message was not handed to the broker: the caller keeps it (outbox) or reports it."""

    code = "bus_unavailable"
