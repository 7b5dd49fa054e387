"""When a draining replica closes its sockets: one in each slice of the window, so no second of
it closes more than its share plus one."""

from __future__ import annotations

import math
import random

import pytest

from ws_service.drain import close_times


@pytest.mark.parametrize(("count", "window"), [(2000, 30.0), (2000, 10.0), (7, 30.0), (50, 0.5)])
def test_any_stretch_of_the_window_closes_at_most_its_share_plus_one(
    count: int, window: float
) -> None:
    times = close_times(count, window, random.Random(count).random)
    assert len(times) == count
    assert all(0 <= t < window for t in times)
    assert times == sorted(times)
    for start in [window * k / 37 for k in range(37)]:
        inside = sum(start <= t < start + 1.0 for t in times)
        assert inside <= math.ceil(count / window) + 1


def test_the_extremes_of_the_random_draw_stay_in_their_slice() -> None:
    assert close_times(4, 2.0, lambda: 0.0) == [0.0, 0.5, 1.0, 1.5]
    assert close_times(4, 2.0, lambda: 0.999) == pytest.approx([0.4995, 0.9995, 1.4995, 1.9995])
    assert close_times(0, 30.0, random.random) == []
    assert close_times(3, 0.0, random.random) == [0.0, 0.0, 0.0]
