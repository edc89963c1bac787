"""cell.png's edge labels keep off each other and off the node names; cell.png and search.png render."""

from __future__ import annotations

import math
from pathlib import Path

from modules.adabert_ops import DerivedArchitecture, cell_edges
from reports.adabert import cell_layout, draw_cell, place_labels, plot_search


def test_labels_of_crossing_edges_are_placed_apart() -> None:
    # two edges crossing at (1, 0): both midpoints coincide, so one label must move along its edge
    edges = [((0.0, -1.0), (2.0, 1.0)), ((0.0, 1.0), (2.0, -1.0))]
    first, second = place_labels(edges, avoid=[], size=(0.75, 0.22))
    assert first == (1.0, 0.0) and second != first
    assert abs(second[0] - first[0]) >= 0.75 or abs(second[1] - first[1]) >= 0.22


def test_no_edge_of_the_cell_runs_through_a_third_node() -> None:
    # before: nodes alternated top/bottom, and c_{k-2} -> node 2 ran through node 0's box, hiding its label
    pos = cell_layout(3)
    for node, j in cell_edges(3):
        (x0, y0), (x1, y1) = pos[j], pos[2 + node]
        for k, (x, y) in pos.items():
            if k in (j, 2 + node):
                continue
            t = max(0.0, min(1.0, ((x - x0) * (x1 - x0) + (y - y0) * (y1 - y0)) / ((x1 - x0) ** 2 + (y1 - y0) ** 2)))
            assert math.hypot(x - (x0 + t * (x1 - x0)), y - (y0 + t * (y1 - y0))) > 0.3, (j, node, k)


def test_cell_and_search_plots_render(tmp_path: Path) -> None:
    genotype = ["std_conv_3", "dil_conv_5", "std_conv_7", "avg_pool_3", "max_pool_3", "skip", "zero",
                "dil_conv_3", "std_conv_3"]  # fmt: skip
    draw_cell(DerivedArchitecture(num_cells=2, genotype=genotype), 3, tmp_path / "cell.png")
    plot_search([{"val/score": 50.0 + i, "num_cells": 1} for i in range(4)], [0.6, 0.7], tmp_path / "search.png")
    assert (tmp_path / "cell.png").stat().st_size > 1000 and (tmp_path / "search.png").stat().st_size > 1000
