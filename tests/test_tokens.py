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
    kept = [full[i][j - 1] for i, seq in enumerate(IDS) for j in range(1, len(seq)) if seq[j] in (IDS[0][3], IDS[1][5])]
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


# --- per-token loss maps ------------------------------------------------------------------------------


def test_token_loss_map_holds_each_tokens_loss_at_each_point(probe):
    direction = probe.directions(seed=5, axes=1)[0]
    token_map = probe.token_loss_map([-0.5, 0.5], direction)
    assert token_map.alphas.tolist() == [-0.5, 0.0, 0.5]
    expected = probe.evaluate((0.5,), [direction]).token_losses
    for i, seq in enumerate(IDS):
        np.testing.assert_array_equal(token_map.losses[i][2], expected[i])
        np.testing.assert_array_equal(token_map.losses[i][1], probe.evaluate().token_losses[i])
        assert token_map.token_ids[i] == seq[1:]


def test_token_loss_map_default_direction_is_the_lines(probe):
    token_map = probe.token_loss_map([1.0], seed=3)
    line = probe.line(steps=3, span=(-1, 1), seed=3)
    counts = [len(x) - 1 for x in IDS]
    mean_at_one = sum(float(np.sum(x[1])) for x in token_map.losses) / sum(counts)  # rows: α = 0, 1
    assert mean_at_one == pytest.approx(line.values[2], rel=1e-6)


def test_top_tokens_are_sorted_by_rise_at_the_chosen_point(probe):
    token_map = probe.token_loss_map([-1.0, 1.0], seed=1)
    rows = token_map.top(5, alpha=-1.0)
    rises = token_map.rise()
    assert [r["rise"] for r in rows] == sorted((r["rise"] for r in rows), reverse=True)
    best = max((float(r[0, j]), i, j) for i, r in enumerate(rises) for j in range(r.shape[1]))
    assert (rows[0]["example"], rows[0]["position"], rows[0]["rise"]) == (best[1], best[2] + 1, best[0])
    assert rows[0]["token_id"] == IDS[best[1]][best[2] + 1]


def test_token_map_plot_has_a_row_per_point_and_a_column_per_token(probe):
    token_map = probe.token_loss_map([-1.0, 1.0], seed=1)
    fig = token_map.plot(example=2)
    ax = fig.axes[0]
    mesh = ax.collections[0]
    assert mesh.get_array().shape == (3, len(IDS[2]) - 1)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["-1", "0", "1"]
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(t) for t in IDS[2][1:]]
    assert np.ma.getdata(mesh.get_array())[1].tolist() == [0.0] * (len(IDS[2]) - 1)  # the centre row


def test_token_map_bad_input(probe):
    from hf_landscape import ConfigError

    with pytest.raises(ConfigError, match="`alphas`"):
        probe.token_loss_map(["far"])
    with pytest.raises(ConfigError, match="not both"):
        probe.token_loss_map([1.0], probe.directions(seed=0, axes=1)[0], normalization="layer")
    token_map = probe.token_loss_map([1.0])
    with pytest.raises(ConfigError, match="`example`"):
        token_map.plot(example=9)
    with pytest.raises(ConfigError, match="`alpha`"):
        token_map.top(alpha=0.3)
