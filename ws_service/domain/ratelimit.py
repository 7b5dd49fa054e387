"""A per-connection token bucket: small enough to live in every connection's slots."""

from __future__ import annotations

from functools import lru_cache

__all__ = ["STALL_CREDIT", "TokenBucket"]

STALL_CREDIT = 15.0
"""Seconds of refill a bucket may hold beyond its burst after the server stalled: enough for
the frames a client pacing by the bucket sent during a 15 s wait (a publish on a hung Redis
retries for 10 to 12 s). Without it a client whose own frames each stalled the server (a slow
application proxy) saved the refill of every stall: 60 publishes through a proxy answering in
0.5 s bought 633 frames back to back against a burst of 40 (an outside probe)."""


@lru_cache(maxsize=64)
def _shared(burst: int) -> float:
    """One float per distinct burst, shared by every bucket: ``float(burst)`` per bucket made a
    24-byte object per socket (its pre-auth frame budget lives as long as it does)."""
    return float(burst)


class TokenBucket:
    __slots__ = ("_burst", "_rate", "_stamp", "_tokens", "_uncapped")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = self._tokens = _shared(burst)
        self._stamp = self._uncapped = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; ``now`` is a monotonic time in seconds."""
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def stalled(self, since: float, now: float) -> None:
        """The server spent ``since`` to ``now`` on one frame, reading none of those behind it:
        they queued meanwhile and come back to back. Charged then against a bucket capped at the
        burst, a client that paced them by the bucket was refused for the server's time. So the
        refill over a stall is not capped, nor any until as long again has passed (the queue
        is handled long before), beyond the burst plus :data:`STALL_CREDIT` seconds of refill.
        The rate still holds: counted from before the stall, no more pass than the burst and
        the rate times the time since."""
        self._refill(since)
        self._uncapped = max(self._uncapped, now + (now - since))
        self._refill(now)

    def _refill(self, now: float) -> None:
        cap = self._burst + self._rate * STALL_CREDIT if now < self._uncapped else self._burst
        self._tokens = min(cap, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    @property
    def full(self) -> bool:
        return self._tokens >= self._burst - 1.0
