"""Errors a bus raises, importable without pulling in any bus backend."""

from __future__ import annotations

__all__ = ["BusError", "BusOutcomeUnknown", "BusUnavailable"]


class BusError(Exception):
    """Root of the bus errors; ``code`` is the machine-readable reason."""

    code = "bus_error"


class BusUnavailable(BusError):
    """The message was not handed to the broker: the caller keeps it (outbox) or reports it."""

    code = "bus_unavailable"


class BusOutcomeUnknown(BusUnavailable):
    """The command reached Redis but no reply came back: it may have been applied. A caller that
    would make up for a lost message (a local delivery) must not, or it may deliver it twice."""

    code = "bus_outcome_unknown"
