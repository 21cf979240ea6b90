"""The adaptation benchmark's pieces on synthetic embeddings (the real runs need
../shared/data and take tens of minutes): seeded episodes, and a table row per collection kind
with the decision's accuracy never below the unadapted one's where nothing is adopted."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks import adaptation


def test_episodes_take_shot_examples_as_support_and_every_other_as_queries():
    labels = np.repeat(np.arange(30), 7)
    drawn = adaptation.episodes(labels, way=20, shot=5, count=3, seed=0)
    again = adaptation.episodes(labels, way=20, shot=5, count=3, seed=0)  # seeded
    assert all(
        np.array_equal(a, b)
        for pair in zip(drawn, again, strict=True)
        for a, b in zip(*pair, strict=True)
    )
    for support, queries in drawn:
        assert len(support) == 100 and len(queries) == 40
        assert not set(support) & set(queries)
        assert set(labels[support]) == set(labels[queries])


def test_a_row_reports_unadapted_decided_and_always():
    generator = torch.Generator().manual_seed(0)
    labels = np.repeat(np.arange(25), 6)
    embeddings = 10 * torch.eye(25)[labels] + 0.1 * torch.randn(
        len(labels), 25, generator=generator
    )
    tally = adaptation.image_episodes(embeddings, labels, count=2)
    assert tally.adopted == 0  # every class apart already: nothing to win
    assert tally.decided == tally.unadapted == [1.0, 1.0]
    row = tally.row("separated")
    assert row.startswith("| separated | 2 | 100.00 ± 0.00 | 100.00 ± 0.00 | 0 of 2 |")
    assert row.split(" | ")[6] == "+0.00"
