"""`LandscapeCallback` on a real `transformers.Trainer` run, and the trajectory PCA against numpy's SVD of the
stacked differences."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hf_landscape import CausalLMObjective, ConfigError, DirectionError, LandscapeProbe
from hf_landscape.callbacks import LandscapeCallback
from hf_landscape.directions.trajectory import (
    path_losses,
    read_trajectory,
    trajectory_directions,
    trajectory_span,
)

MAX_STEPS, EVERY = 24, 5
SAVED = [0, 5, 10, 15, 20, 24]  # the initial weights, every 5 steps, and the last step


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Train a tiny GPT-2 for 24 steps with the callback; return (trained model, run folder, tokenizer)."""
    from conftest import TEXTS, build_gpt2, train_tokenizer
    from transformers import Trainer, TrainingArguments

    tokenizer = train_tokenizer()
    ids = [i for text in TEXTS for i in tokenizer(text)["input_ids"]]
    data = [
        {"input_ids": torch.tensor(ids[i : i + 12]), "labels": torch.tensor(ids[i : i + 12])}
        for i in range(0, len(ids) - 11, 12)
    ]
    model = build_gpt2(len(tokenizer), seed=0, n_layer=1, n_embd=16)
    folder = tmp_path_factory.mktemp("trajectory")
    args = TrainingArguments(
        output_dir=str(folder / "out"),
        max_steps=MAX_STEPS,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=EVERY,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    callback = LandscapeCallback(folder / "run", every_n_steps=EVERY)
    Trainer(model=model, args=args, train_dataset=data, callbacks=[callback]).train()
    return model.eval(), folder / "run", tokenizer


def stacked(run_dir, names, final):
    """The T × P matrix of θ_i − θ_final (rows: every saved step but the last), built the obvious way."""
    snaps = [load_file(str(run_dir / f"step_{s:08d}.safetensors")) for s in SAVED[:-1]]
    ref = torch.cat([final[n].double().reshape(-1) for n in names])
    return torch.stack([torch.cat([s[n].double().reshape(-1) for n in names]) - ref for s in snaps]).numpy()


def flat(direction, names):
    return torch.cat([direction[n].double().reshape(-1) for n in names]).numpy()


def test_callback_writes_one_file_per_snapshot_and_an_index(run):
    _, run_dir, _ = run
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        [f"step_{s:08d}.safetensors" for s in SAVED] + ["trajectory.json"]
    )
    index = read_trajectory(run_dir)
    assert [e["step"] for e in index["snapshots"]] == SAVED
    assert index["every_n_steps"] == EVERY


def test_callback_records_the_logged_losses(run):
    _, run_dir, _ = run
    index = json.loads((run_dir / "trajectory.json").read_text())
    assert [e["step"] for e in index["train_losses"]] == [5, 10, 15, 20]
    by_step = {e["step"]: e["loss"] for e in index["snapshots"]}
    assert by_step[0] is None and by_step[24] is None
    assert all(isinstance(by_step[s], float) for s in (5, 10, 15, 20))


def test_last_snapshot_is_the_trained_model(run):
    model, run_dir, _ = run
    last = load_file(str(run_dir / f"step_{MAX_STEPS:08d}.safetensors"))
    params = dict(model.named_parameters())
    assert set(last) == set(params)  # every parameter, the tied embedding once
    assert all(torch.equal(last[n], p.detach()) for n, p in params.items())


def test_pca_matches_numpy_svd_of_the_stacked_differences(run):
    model, run_dir, _ = run
    dirs, info = trajectory_directions(run_dir, chunk_elements=1000)  # small chunks: many slices per tensor
    names = list(dirs[0].keys())
    final = load_file(str(run_dir / f"step_{MAX_STEPS:08d}.safetensors"))
    m = stacked(run_dir, names, final)
    _, s, vt = np.linalg.svd(m, full_matrices=False)
    np.testing.assert_allclose(info["singular_values"], s[:2], rtol=1e-9)
    np.testing.assert_allclose(info["explained_variance_ratio"], s[:2] ** 2 / (s**2).sum(), rtol=1e-9)
    for k in range(2):
        np.testing.assert_allclose(np.abs(flat(dirs[k], names) @ vt[k]), 1.0, rtol=1e-6)
    coords = np.asarray(info["coordinates"])
    np.testing.assert_allclose(coords[:-1], m @ np.stack([flat(d, names) for d in dirs]).T, rtol=1e-6, atol=1e-8)
    assert coords[-1].tolist() == [0.0, 0.0] and info["steps"] == SAVED and info["pca_steps"] == SAVED[:-1]
    assert coords[0, 0] > 0 and coords[0, 1] > 0  # the sign convention


def test_centered_pca_matches_numpy_on_centered_differences(run):
    _, run_dir, _ = run
    dirs, info = trajectory_directions(run_dir, center=True)
    names = list(dirs[0].keys())
    m = stacked(run_dir, names, load_file(str(run_dir / f"step_{MAX_STEPS:08d}.safetensors")))
    mc = m - m.mean(axis=0)
    _, s, vt = np.linalg.svd(mc, full_matrices=False)
    np.testing.assert_allclose(info["explained_variance_ratio"], s[:2] ** 2 / (s**2).sum(), rtol=1e-9)
    for k in range(2):
        np.testing.assert_allclose(np.abs(flat(dirs[k], names) @ vt[k]), 1.0, rtol=1e-6)
    # Coordinates are projections of the *uncentered* differences, as in Li et al.'s project_trajectory.
    np.testing.assert_allclose(
        np.asarray(info["coordinates"])[:-1], m @ np.stack([flat(d, names) for d in dirs]).T, rtol=1e-6, atol=1e-8
    )


def test_directions_are_orthonormal_name_keyed_and_skip_1d_by_default(run):
    model, run_dir, _ = run
    dirs, _ = trajectory_directions(run_dir)
    names = list(dirs[0].keys())
    assert names == [n for n, p in model.named_parameters() if p.dim() >= 2]
    gram = np.array([[a.dot(b) for b in dirs] for a in dirs])
    np.testing.assert_allclose(gram, np.eye(2), atol=1e-6)
    assert dirs[0].config["kind"] == "trajectory" and dirs[1].config["component"] == 1


def test_final_model_as_centre_gives_the_same_plane(run):
    model, run_dir, _ = run
    from_file, _ = trajectory_directions(run_dir)
    from_model, info = trajectory_directions(run_dir, model)
    assert info["pca_steps"] == SAVED  # the final weights' own (zero) row adds nothing to an uncentered PCA
    assert np.allclose(info["coordinates"][-1], 0.0)
    for a, b in zip(from_file, from_model):
        assert list(a.keys()) == list(b.keys())
        for name in a.keys():
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)


def test_directions_follow_the_models_dtype_and_include_1d(run):
    model, run_dir, _ = run
    dirs, _ = trajectory_directions(run_dir, model, include_1d=True)
    assert list(dirs[0].keys()) == [n for n, _ in model.named_parameters()]
    assert all(dirs[0][n].dtype == p.dtype and dirs[0][n].device == p.device for n, p in model.named_parameters())


def test_path_losses_are_the_losses_of_the_snapshots(run):
    model, run_dir, tokenizer = run
    from conftest import TEXTS, build_gpt2

    objective = CausalLMObjective(TEXTS[:4], tokenizer)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    losses = path_losses(model, objective, run_dir, steps=[0, 10, 24], progress=False)
    assert all(torch.equal(t, before[n]) for n, t in model.state_dict().items())
    fresh = build_gpt2(len(tokenizer), seed=1, n_layer=1, n_embd=16).eval()
    for step, loss in zip([0, 10, 24], losses):
        fresh.load_state_dict(load_file(str(run_dir / f"step_{step:08d}.safetensors")), strict=False)
        assert loss == objective.evaluate(fresh).loss


def test_plane_through_three_snapshots_reproduces_their_losses(run):
    # With two rows besides the centre the plane holds every snapshot, so the surface at a snapshot's
    # coordinates is that snapshot's true loss (up to float32 rounding of θ_n + x·c₁ + y·c₂).
    model, run_dir, tokenizer = run
    from conftest import TEXTS

    probe = LandscapeProbe(model, CausalLMObjective(TEXTS[:4], tokenizer), progress=False)
    dirs, info = trajectory_directions(run_dir, model, steps=[0, 10], include_1d=True)
    truth = path_losses(model, probe.objective, run_dir, steps=[0, 10], progress=False)
    for point, loss in zip(info["coordinates"], truth):
        assert probe.evaluate(point, dirs, details=False).loss == pytest.approx(loss, rel=1e-4)
    plane = probe.plane(steps=(3, 3), span=trajectory_span(info["coordinates"]), directions=dirs)
    assert plane.values.shape == (3, 3) and plane.metadata["directions"][0]["kind"] == "trajectory"


def test_too_few_snapshots_for_the_components_is_a_direction_error(run):
    _, run_dir, _ = run
    with pytest.raises(DirectionError, match="n_components=2"):
        trajectory_directions(run_dir, steps=[0, 24])


def test_unsaved_step_is_a_config_error(run):
    _, run_dir, _ = run
    with pytest.raises(ConfigError, match="did not save"):
        trajectory_directions(run_dir, steps=[0, 3, 24])


def test_missing_index_is_a_direction_error(tmp_path):
    with pytest.raises(DirectionError, match="trajectory.json"):
        trajectory_directions(tmp_path)


def fake_state(step):
    return SimpleNamespace(global_step=step, is_world_process_zero=True, epoch=0.0, max_steps=100)


def test_fresh_run_into_a_used_folder_is_refused(tmp_path, gpt2_model):
    model = gpt2_model(n_layer=1, n_embd=8)
    first = LandscapeCallback(tmp_path, every_n_steps=1)
    first.on_train_begin(None, fake_state(0), None, model=model)
    with pytest.raises(ConfigError, match="overwrite=True"):
        LandscapeCallback(tmp_path, every_n_steps=1).on_train_begin(None, fake_state(0), None, model=model)


def test_resumed_run_keeps_the_snapshots_before_its_step(tmp_path, gpt2_model):
    model = gpt2_model(n_layer=1, n_embd=8)
    first = LandscapeCallback(tmp_path, every_n_steps=2)
    first.on_train_begin(None, fake_state(0), None, model=model)
    for step in (2, 4, 6):
        first.on_step_end(None, fake_state(step), None, model=model)
    resumed = LandscapeCallback(tmp_path, every_n_steps=2)
    resumed.on_train_begin(None, fake_state(4), None, model=model)
    resumed.on_step_end(None, fake_state(6), None, model=model)
    assert [e["step"] for e in read_trajectory(tmp_path)["snapshots"]] == [0, 2, 4, 6]


def test_bad_every_n_steps_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="`every_n_steps`"):
        LandscapeCallback(tmp_path, every_n_steps=0)


def test_trajectory_span_covers_the_path_and_the_centre():
    assert trajectory_span([[2.0, 1.0], [1.0, 0.5], [0.0, 0.0]], margin=0.0) == [[0.0, 2.0], [0.0, 1.0]]
