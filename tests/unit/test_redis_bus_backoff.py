from __future__ import annotations

from shared.redis_bus import backoff_delay


def test_backoff_grows_then_stays_under_the_cap() -> None:
    for failures, ceiling in [(1, 0.2), (2, 0.4), (3, 0.8), (10, 5.0), (1000, 5.0)]:
        delays = {backoff_delay(failures, 0.1, 5.0) for _ in range(200)}
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays), (failures, delays)
        assert len(delays) > 1, "no jitter"
