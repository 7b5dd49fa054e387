"""A per-connection token bucket: small enough to live in every connection's slots."""

from __future__ import annotations

from functools import lru_cache

__all__ = ["TokenBucket"]


@lru_cache(maxsize=64)
def _shared(burst: int) -> float:
    """One float per distinct burst, shared by every bucket: ``float(burst)`` per bucket made a
    24-byte object per socket (its pre-auth frame budget lives as long as it does)."""
    return float(burst)


class TokenBucket:
    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = self._tokens = _shared(burst)
        self._stamp = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; ``now`` is a monotonic time in seconds."""
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    @property
    def full(self) -> bool:
        return self._tokens >= self._burst - 1.0
