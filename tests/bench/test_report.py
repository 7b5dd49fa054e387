"""The bench's plots: drawn from a results document alone, readable at a glance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.bench import report

RAMPS = {
    name: [
        {
            "connections": n,
            "rss_kib": 60_000 + n * kib,
            "kib_per_socket": kib,
            "p50_ms": 5.0 + n / 1000,
            "p99_ms": 20.0 + n / 100,
        }
        for n in (1_000, 2_000)
    ]
    for name, kib in (("bare aiohttp", 15.6), ("ws_service", 17.6))
}
WORKERS = {"auth_service": [[1, 864.0], [2, 916.0]], "ws_service": [[1, 1278.0], [2, 1470.0]]}
DOCUMENT = {
    "when": "2026-12-06T04:00:00Z",
    "quick": True,
    "ramps": RAMPS,
    "workers": WORKERS,
    "goals": [],
}


def test_redrawn_from_a_results_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "latest.json"
    results.write_text(json.dumps(DOCUMENT))
    report.main([str(results), str(tmp_path / "plots")])
    names = {"memory.png", "handshake_latency.png", "workers.png"}
    assert {path.name for path in (tmp_path / "plots").iterdir()} == names
    for name in names:
        assert (tmp_path / "plots" / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "workers.png" in capsys.readouterr().out


def test_no_workers_plot_without_a_curve(tmp_path: Path) -> None:
    written = report.plot(tmp_path, RAMPS, {"ws_service": [[1, 1278.0]]})
    assert sorted(path.name for path in written) == ["handshake_latency.png", "memory.png"]


@pytest.fixture
def drawn() -> Any:
    import matplotlib.pyplot as plt

    made = report.figures(RAMPS, WORKERS, report.run_of(DOCUMENT))
    yield made
    for figure in made.values():
        plt.close(figure)


def test_one_quantity_per_axis_from_zero(drawn: dict[str, Any]) -> None:
    for name, figure in drawn.items():
        for axis in figure.axes:
            assert axis.get_ylim()[0] == 0, f"{name}: {axis.get_title()} does not start at zero"
            assert axis.get_ylabel(), f"{name}: {axis.get_title()} has no unit"


def test_latency_is_two_panels_of_one_line_per_server(drawn: dict[str, Any]) -> None:
    panels = drawn["handshake_latency.png"].axes
    assert [axis.get_title() for axis in panels] == [
        "p50 of a new handshake",
        "p99 of a new handshake",
    ]
    for axis in panels:
        assert len(axis.get_lines()) == len(RAMPS)


def test_legends_readable_and_off_the_data(drawn: dict[str, Any]) -> None:
    for name in ("memory.png", "handshake_latency.png"):
        figure = drawn[name]
        assert all(axis.get_legend() is None for axis in figure.axes), name
        (legend,) = figure.legends
        assert all(text.get_fontsize() >= 9 for text in legend.get_texts())
        assert [text.get_text() for text in legend.get_texts()] == list(RAMPS)


def test_workers_axis_has_whole_numbers_and_one_unit_per_panel(drawn: dict[str, Any]) -> None:
    panels = drawn["workers.png"].axes
    assert [axis.get_ylabel() for axis in panels] == ["refreshes/s", "handshakes/s"]
    for axis in panels:
        ticks = [
            tick for tick in axis.get_xticks() if axis.get_xlim()[0] <= tick <= axis.get_xlim()[1]
        ]
        assert ticks == [1, 2]


def test_each_plot_says_which_run_it_shows(drawn: dict[str, Any]) -> None:
    assert report.run_of(DOCUMENT) == "make bench-quick, 2026-12-06"
    assert report.run_of({"quick": False}) == "make bench"
    for name, figure in drawn.items():
        assert "make bench-quick, 2026-12-06" in [text.get_text() for text in figure.texts], name


def test_workers_bars_carry_their_ratio_to_one_worker(drawn: dict[str, Any]) -> None:
    auth, ws = drawn["workers.png"].axes
    assert [text.get_text() for text in auth.texts] == ["864", "916 (1.06x)"]
    assert [text.get_text() for text in ws.texts] == ["1,278", "1,470 (1.15x)"]
