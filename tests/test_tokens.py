"""The token-level view: per-token curvature along a direction, and surfaces of a token subset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import build_gpt2

from hf_landscape import CausalLMObjective, LandscapeProbe, ObjectiveError

IDS = [[(5 * i + 3 * j) % 90 + 1 for j in range(8 + i)] for i in range(4)]


@pytest.fixture
def probe():
    torch.manual_seed(0)
    return LandscapeProbe(build_gpt2(100), CausalLMObjective({"input_ids": IDS}), progress=False)


def test_token_curvature_is_the_central_second_difference_of_token_losses(probe):
    direction = probe.directions(seed=5, axes=1)[0]
    rows = probe.token_curvature(direction, h=0.2, top=1000)
    minus = probe.evaluate((-0.2,), [direction]).token_losses
    centre = probe.evaluate().token_losses
    plus = probe.evaluate((0.2,), [direction]).token_losses
    row = next(r for r in rows if r["example"] == 2 and r["position"] == 4)
    expected = (plus[2][3] - 2 * centre[2][3] + minus[2][3]) / 0.04
    assert row["curvature"] == pytest.approx(expected, rel=1e-12)
    assert row["token_id"] == IDS[2][4]
    assert len(rows) == sum(len(x) - 1 for x in IDS)
    assert [r["curvature"] for r in rows] == sorted((r["curvature"] for r in rows), reverse=True)


def test_restricted_objective_counts_only_the_chosen_token_ids(probe):
    objective = probe.objective.restricted(token_ids=[IDS[0][3], IDS[1][5]])
    sub = LandscapeProbe(probe.model, objective, progress=False)
    full = probe.evaluate().token_losses
    kept = [
        full[i][j - 1]
        for i, seq in enumerate(IDS)
        for j in range(1, len(seq))
        if seq[j] in (IDS[0][3], IDS[1][5])
    ]
    assert objective.num_tokens == len(kept)
    assert sub.loss() == pytest.approx(float(np.mean(kept)), rel=1e-6)


def test_restricted_by_positions_and_mask(probe):
    mask = [[j % 2 == 0 for j in range(len(x))] for x in IDS]
    objective = probe.objective.restricted(positions=[2, 3, 4], mask=mask)
    assert objective.num_tokens == len(IDS) * 2  # positions 2 and 4 are even
    with pytest.raises(ObjectiveError, match="Every label token is masked"):
        probe.objective.restricted(token_ids=[12345])
    with pytest.raises(ObjectiveError, match="`mask` has 1 rows"):
        probe.objective.restricted(mask=[[True]])
