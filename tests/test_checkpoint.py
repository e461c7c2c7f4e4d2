"""Never lose finished work: partial grids are checkpointed and resumed exactly."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from testing_utils import build_bert_classifier, build_gpt2, interrupt_at_call

from hf_landscape import CausalLMObjective, ConfigError, Direction, GlueObjective, LandscapeProbe, SurfaceError
from hf_landscape.engine.checkpoint import ARRAYS_NAME, META_NAME, GridCheckpoint, tensor_fingerprint

IDS = [[(7 * i + 3 * j) % 97 + 1 for j in range(12 + i % 5)] for i in range(6)]


def make_probe():
    model = build_gpt2(100, seed=0)
    return LandscapeProbe(model, CausalLMObjective({"input_ids": IDS}, batch_size=4), progress=False)


def fail_on_call(probe, monkeypatch, n):
    interrupt_at_call(monkeypatch, probe.objective, "evaluate", n)


def interrupt_at_the_third_point(monkeypatch, run):
    """`run(probe)` on a fresh probe, stopped by a KeyboardInterrupt at its third evaluation (two points done)."""
    probe = make_probe()
    fail_on_call(probe, monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run(probe)
    monkeypatch.undo()


def test_interrupted_grid_resumes_to_the_uninterrupted_values(tmp_path, monkeypatch):
    reference = make_probe().plane(steps=(4, 3), seed=1)
    probe = make_probe()
    fail_on_call(probe, monkeypatch, 6)
    with pytest.raises(KeyboardInterrupt):
        probe.plane(steps=(4, 3), seed=1, checkpoint_dir=tmp_path, checkpoint_every=100)
    assert json.loads((tmp_path / META_NAME).read_text())["done"] == 5  # saved on interrupt
    monkeypatch.undo()
    resumed = make_probe().plane(steps=(4, 3), seed=1, checkpoint_dir=tmp_path)
    np.testing.assert_array_equal(resumed.values, reference.values)
    assert json.loads((tmp_path / META_NAME).read_text())["done"] == 12  # kept until the surface is saved there
    resumed.save_pretrained(tmp_path)
    assert not (tmp_path / META_NAME).exists() and not (tmp_path / ARRAYS_NAME).exists()


def test_resume_computes_only_the_missing_points(tmp_path, monkeypatch):
    probe = make_probe()
    fail_on_call(probe, monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        probe.line(steps=7, checkpoint_dir=tmp_path, checkpoint_every=1)
    monkeypatch.undo()
    again = make_probe()
    calls = {"n": 0}
    original = again.objective.evaluate

    def counting(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(again.objective, "evaluate", counting)
    again.line(steps=7, checkpoint_dir=tmp_path)
    assert calls["n"] == 7 - 3


def test_a_different_configuration_in_the_same_folder_is_refused(tmp_path, monkeypatch):
    probe = make_probe()
    fail_on_call(probe, monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        probe.plane(steps=(3, 3), seed=0, checkpoint_dir=tmp_path, checkpoint_every=1)
    monkeypatch.undo()
    before = (tmp_path / ARRAYS_NAME).read_bytes()
    with pytest.raises(SurfaceError, match=r"different configuration \(differs in \['directions'\]\)"):
        make_probe().plane(steps=(3, 3), seed=1, checkpoint_dir=tmp_path)
    assert (tmp_path / ARRAYS_NAME).read_bytes() == before


def test_a_different_autocast_in_the_same_folder_is_refused(tmp_path, monkeypatch):
    interrupt_at_the_third_point(
        monkeypatch, lambda p: p.line(steps=5, seed=0, checkpoint_dir=tmp_path, checkpoint_every=1)
    )
    mixed = make_probe()
    mixed.autocast = "bfloat16"
    with pytest.raises(SurfaceError, match=r"differs in \['autocast'\]"):
        mixed.line(steps=5, seed=0, checkpoint_dir=tmp_path)


def test_disk_full_is_a_clear_error_and_earlier_points_stay(tmp_path, monkeypatch):
    import hf_landscape.io as io

    real_write = io._write_all
    writes = {"n": 0}

    def write_all(fd, data):
        writes["n"] += 1
        if writes["n"] > 2:  # the first checkpoint (arrays, then its record) fits; the disk is full after it
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(io, "_write_all", write_all)
    with pytest.raises(SurfaceError, match="No space left on device.*free disk space.*intact"):
        make_probe().line(steps=6, checkpoint_dir=tmp_path, checkpoint_every=2)
    assert json.loads((tmp_path / META_NAME).read_text())["done"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [META_NAME, ARRAYS_NAME]  # no temporary, no lock left


def test_nan_and_inf_points_are_kept_saved_and_plotted(tmp_path):
    probe = make_probe()
    huge = Direction({n: torch.full_like(p, 1e30) for n, p in probe.model.named_parameters() if p.dim() == 2})
    line = probe.line(steps=3, direction=huge)
    assert np.isfinite(line.values[1]) and not np.isfinite(line.values[0]) and not np.isfinite(line.values[2])
    line.save_pretrained(tmp_path / "s")
    line.save_plots(tmp_path / "s")
    assert (tmp_path / "s" / "plot_curve.png").stat().st_size > 0


# --- the partial files ------------------------------------------------------------------------------------------


def test_partial_files_hold_the_finished_points_and_the_hash_of_the_arrays(tmp_path, monkeypatch):
    reference = make_probe().line(steps=6, seed=0)
    probe = make_probe()
    fail_on_call(probe, monkeypatch, 4)
    out = tmp_path / "new" / "nested"  # created, parents too
    with pytest.raises(KeyboardInterrupt):
        probe.line(steps=6, seed=0, checkpoint_dir=out, checkpoint_every=1)
    meta = json.loads((out / META_NAME).read_text())
    assert {"key", "done", "points", "arrays_sha256"} <= set(meta)
    assert (meta["done"], meta["points"]) == (3, 6)
    assert meta["arrays_sha256"] == hashlib.sha256((out / ARRAYS_NAME).read_bytes()).hexdigest()
    arrays = load_file(str(out / ARRAYS_NAME))
    assert sorted(arrays) == ["done", "values"]
    assert arrays["done"].dtype == torch.uint8 and arrays["done"].tolist() == [1, 1, 1, 0, 0, 0]
    np.testing.assert_array_equal(arrays["values"].numpy()[:3], reference.values[:3])
    assert np.isnan(arrays["values"].numpy()[3:]).all()


def test_arrays_that_do_not_match_their_hash_are_refused(tmp_path, monkeypatch):
    interrupt_at_the_third_point(
        monkeypatch, lambda p: p.line(steps=5, seed=0, checkpoint_dir=tmp_path, checkpoint_every=1)
    )
    arrays = load_file(str(tmp_path / ARRAYS_NAME))
    arrays["values"][0] += 1.0  # a valid file, other numbers
    save_file(arrays, str(tmp_path / ARRAYS_NAME))
    before = (tmp_path / ARRAYS_NAME).read_bytes(), (tmp_path / META_NAME).read_bytes()
    with pytest.raises(SurfaceError, match=re.escape(ARRAYS_NAME)):
        make_probe().line(steps=5, seed=0, checkpoint_dir=tmp_path)
    assert ((tmp_path / ARRAYS_NAME).read_bytes(), (tmp_path / META_NAME).read_bytes()) == before


def test_resumed_grid_keeps_the_metrics_of_the_saved_points(tmp_path, monkeypatch):
    data = {"input_ids": [[2, 5, 3], [2, 7, 8, 3], [2, 9, 3], [2, 11, 12, 13, 3], [2, 4, 6, 3], [2, 10, 3]]}
    data["label"] = [1, 0, 1, 0, 0, 1]

    def make():
        return LandscapeProbe(build_bert_classifier(30, seed=0), GlueObjective("sst2", data=data), progress=False)

    reference = make().plane(steps=(3, 3), span=(-5, 5), seed=0)
    assert len(np.unique(reference.metrics["accuracy"])) > 1
    probe = make()
    fail_on_call(probe, monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        probe.plane(steps=(3, 3), span=(-5, 5), seed=0, checkpoint_dir=tmp_path, checkpoint_every=2)
    assert sorted(load_file(str(tmp_path / ARRAYS_NAME))) == ["done", "metrics.accuracy", "values"]
    monkeypatch.undo()
    resumed = make().plane(steps=(3, 3), span=(-5, 5), seed=0, checkpoint_dir=tmp_path)
    np.testing.assert_array_equal(resumed.values, reference.values)
    assert sorted(resumed.metrics) == sorted(reference.metrics)
    for name, value in reference.metrics.items():
        np.testing.assert_array_equal(resumed.metrics[name], value)


def test_grid_shorter_than_the_saving_interval_is_kept_until_saved(tmp_path):
    line = make_probe().line(steps=3, seed=0, checkpoint_dir=tmp_path, checkpoint_every=10)
    assert np.isfinite(line.values).all()
    values, done, _ = GridCheckpoint(tmp_path, json.loads((tmp_path / META_NAME).read_text())["key"]).load(3)
    assert done.all() and np.array_equal(values, line.values)  # the whole grid, though fewer than 10 points
    line.save_pretrained(tmp_path)
    assert not (tmp_path / ARRAYS_NAME).exists() and not (tmp_path / META_NAME).exists()


@pytest.mark.parametrize("every", [0, -1, 1.5, "10"])
def test_saving_interval_must_be_a_positive_integer(tmp_path, every):
    with pytest.raises(ConfigError, match="`checkpoint_every`"):
        make_probe().line(steps=3, seed=0, checkpoint_dir=tmp_path, checkpoint_every=every)


def test_fresh_and_resumed_arrays(tmp_path):
    fresh = GridCheckpoint(tmp_path, {"kind": "line"})
    values, done, metrics = fresh.load(4)
    assert values.dtype == np.float64 and np.isnan(values).all()
    assert done.dtype == bool and not done.any()
    assert metrics == {} and fresh.resumed_points == 0
    saved_values = np.array([0.5, np.nan, 1.5, np.inf])
    saved_done = np.array([True, False, True, True])
    fresh.save(saved_values, saved_done, {"accuracy": np.array([1.0, np.nan, 0.0, 0.5])})
    again = GridCheckpoint(tmp_path, {"kind": "line"})
    values, done, metrics = again.load(4)
    np.testing.assert_array_equal(values, saved_values)
    assert done.dtype == bool and done.tolist() == saved_done.tolist()
    assert list(metrics) == ["accuracy"] and metrics["accuracy"].dtype == np.float64
    np.testing.assert_array_equal(metrics["accuracy"], [1.0, np.nan, 0.0, 0.5])
    assert again.resumed_points == 3


def test_refusal_names_every_field_that_differs(tmp_path):
    GridCheckpoint(tmp_path, {"a": 1, "b": 2, "same": [1, 2]}).save(np.zeros(2), np.ones(2, dtype=bool), {})
    with pytest.raises(SurfaceError, match=r"differs in \['b', 'c'\]"):
        GridCheckpoint(tmp_path, {"a": 1, "c": 3, "same": [1, 2]}).load(2)


def test_a_key_of_values_json_cannot_hold_is_kept_as_text(tmp_path):
    key = {"dtype": torch.float32, "folder": Path("a/b"), "n": 3}
    checkpoint = GridCheckpoint(tmp_path, key)
    assert checkpoint.key == {"dtype": "torch.float32", "folder": "a/b", "n": 3}
    checkpoint.save(np.zeros(2), np.ones(2, dtype=bool), {})
    assert GridCheckpoint(tmp_path, dict(key)).load(2)[1].all()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_key_holding_nan_or_inf_is_refused(tmp_path, value):
    with pytest.raises(ConfigError, match="NaN or inf"):  # it would never equal itself, so it could not resume
        GridCheckpoint(tmp_path, {"span": [value, 1.0]})


def saved_grid(folder, key=None):
    """A checkpoint of 3 points, 2 of them done, saved in `folder`; its record as written."""
    GridCheckpoint(folder, key or {"kind": "line"}).save(np.arange(3.0), np.array([True, True, False]), {})
    return json.loads((folder / META_NAME).read_text())


def test_save_creates_nested_folders(tmp_path):
    folder = tmp_path / "a" / "b"
    saved_grid(folder)
    assert GridCheckpoint(folder, {"kind": "line"}).load(3)[1].tolist() == [True, True, False]


def test_saves_are_durable_unless_asked_otherwise(tmp_path, monkeypatch):
    import hf_landscape.io as io

    calls = []
    for name in ("write_safetensors", "write_json"):
        real = getattr(io, name)
        monkeypatch.setattr(io, name, lambda *a, _n=name, _f=real, **kw: calls.append((_n, kw)) or _f(*a, **kw))
    checkpoint = GridCheckpoint(tmp_path, {"kind": "line"})
    checkpoint.save(np.zeros(2), np.ones(2, dtype=bool), {})
    checkpoint.save(np.zeros(2), np.ones(2, dtype=bool), {}, durable=False)
    assert calls == [
        ("write_safetensors", {"durable": True}),
        ("write_json", {"durable": True}),
        ("write_safetensors", {"durable": False}),
        ("write_json", {"durable": False}),
    ]


def assert_damaged(folder, match):
    with pytest.raises(SurfaceError, match=match) as info:
        GridCheckpoint(folder, {"kind": "line"}).load(3)
    assert repr(str(folder)) in str(info.value) and "damaged" in str(info.value)


@pytest.mark.parametrize("name", ["done", "points"])
@pytest.mark.parametrize("value", ["2", True, None, 2.0])
def test_a_count_that_is_not_an_integer_is_damage(tmp_path, name, value):
    record = saved_grid(tmp_path)
    (tmp_path / META_NAME).write_text(json.dumps({**record, name: value}))
    assert_damaged(tmp_path, f"point count `{name}`")


@pytest.mark.parametrize("record", [[1, 2], {"done": 2, "points": 3}, {"key": "line", "done": 2, "points": 3}])
def test_a_record_without_its_key_is_damage(tmp_path, record):
    saved_grid(tmp_path)
    (tmp_path / META_NAME).write_text(json.dumps(record))
    assert_damaged(tmp_path, "no configuration `key`")


def test_a_record_whose_counts_disagree_with_its_arrays_is_damage(tmp_path):
    record = saved_grid(tmp_path)
    (tmp_path / META_NAME).write_text(json.dumps({**record, "points": 4}))  # arrays of 3 points, 2 done
    assert_damaged(tmp_path, "counts 2 of 4 points, its arrays 2 of 3")
    (tmp_path / META_NAME).write_text(json.dumps({**record, "done": 3}))
    assert_damaged(tmp_path, "counts 3 of 3 points, its arrays 2 of 3")


@pytest.mark.parametrize("linked", [META_NAME, ARRAYS_NAME])
def test_either_file_as_a_link_is_refused(tmp_path, linked):
    folder = tmp_path / "grid"
    saved_grid(folder)
    (folder / linked).rename(tmp_path / linked)
    (folder / linked).symlink_to(tmp_path / linked)
    assert_damaged(folder, "is a link")


def test_tensor_fingerprint_sees_small_changes_and_equal_sums():
    base = tensor_fingerprint({"w": torch.tensor([1e8, 1.0])})
    assert re.fullmatch(r"[0-9a-f]{32}", base)
    assert tensor_fingerprint({"w": torch.tensor([1e8, 1.0])}) == base
    # an entry small next to the total: float32 sums would not see it
    assert tensor_fingerprint({"w": torch.tensor([1e8, 0.0])}) != base
    # the same sum and count, other values: the sums of squares differ
    assert tensor_fingerprint({"w": torch.tensor([1.0, 2.0])}) != tensor_fingerprint({"w": torch.tensor([0.5, 2.5])})
    # names, shapes and dtypes count
    ones = torch.ones(2, 2)
    prints = {
        tensor_fingerprint({"w": ones}),
        tensor_fingerprint({"v": ones}),
        tensor_fingerprint({"w": ones.reshape(4)}),
        tensor_fingerprint({"w": ones.double()}),
    }
    assert len(prints) == 4


# --- the grid loop around the checkpoint ----------------------------------------------------------------------


def test_an_interrupt_right_after_a_save_writes_nothing_more(tmp_path, monkeypatch):
    probe = make_probe()
    saves = record_saves(monkeypatch)
    fail_on_call(probe, monkeypatch, 5)  # points 1-4 done and saved (every 2), the 5th stops the grid
    with pytest.raises(KeyboardInterrupt):
        probe.line(steps=6, seed=0, checkpoint_dir=tmp_path, checkpoint_every=2)
    assert saves == [(2, False), (4, False), (4, True)]  # stopping makes the last save durable, with no new point


def test_progress_bar_counts_points_from_those_already_saved(tmp_path, monkeypatch, capsys):
    probe = make_probe()
    fail_on_call(probe, monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        probe.line(steps=4, seed=0, checkpoint_dir=tmp_path, checkpoint_every=1)
    monkeypatch.undo()
    assert capsys.readouterr().err == ""  # progress=False: silent
    probe.progress = True
    probe.line(steps=4, seed=0, checkpoint_dir=tmp_path)
    err = capsys.readouterr().err
    assert "line" in err and "pt/s" in err
    assert "2/4" in err and "0/4" not in err  # the 2 points saved count from the start
    assert "4/4" not in err  # and the bar is cleared when the grid is done


def test_an_interrupt_without_a_checkpoint_logs_no_saving_error(monkeypatch, caplog):
    probe = make_probe()
    fail_on_call(probe, monkeypatch, 3)
    with caplog.at_level(logging.ERROR, logger="hf_landscape.engine"), pytest.raises(KeyboardInterrupt):
        probe.line(steps=5, seed=0)
    assert caplog.text == ""


def test_wall_time_is_the_grids(monkeypatch):
    start = time.time()
    line = make_probe().line(steps=3, seed=0)
    assert 0 < line.metadata["wall_time_s"] <= time.time() - start


def test_non_finite_points_are_counted_in_a_warning(caplog):
    probe = make_probe()
    huge = Direction({n: torch.full_like(p, 1e30) for n, p in probe.model.named_parameters() if p.dim() == 2})
    with caplog.at_level(logging.WARNING, logger="hf_landscape.engine"):
        probe.line(steps=3, span=(-1, 1), seed=0)
    assert "non-finite" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="hf_landscape.engine"):
        probe.line(steps=3, direction=huge)
    assert "2 of 3 points gave a non-finite loss" in caplog.text


def test_one_point_per_forward_ignores_a_chunk_size(monkeypatch):
    from hf_landscape.engine import run_grid

    probe = make_probe()
    points = [(0.0,), (0.5,), (1.0,)]
    probe.model.eval()
    values, _, _ = run_grid(probe.model, probe.objective, points, lambda point: None, progress=False, chunk=3)
    assert values.tolist() == [probe.loss()] * 3  # every point evaluated (the weights were left as they are)


SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    import torch
    torch.set_num_threads(1)
    from test_checkpoint import make_probe
    probe = make_probe()
    original = probe.objective.evaluate
    def slow(*args, **kwargs):
        time.sleep(0.1)
        return original(*args, **kwargs)
    probe.objective.evaluate = slow
    probe.plane(steps=(5, 4), seed=2, checkpoint_dir={out!r}, checkpoint_every=1)
    """
)


def test_sigkill_mid_grid_then_rerun_equals_uninterrupted(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "out"
    script = SCRIPT.format(tests=str(Path(__file__).parent), out=str(out))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            meta = out / META_NAME
            if meta.is_file() and json.loads(meta.read_text())["done"] >= 5:
                break
            if proc.poll() is not None:
                pytest.fail(f"the child exited early with {proc.returncode}")
            time.sleep(0.02)
        else:
            pytest.fail("the child saved no checkpoint in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = json.loads((out / META_NAME).read_text())["done"]
    assert 5 <= done < 20
    resumed = make_probe().plane(steps=(5, 4), seed=2, checkpoint_dir=out)
    reference = make_probe().plane(steps=(5, 4), seed=2)
    np.testing.assert_array_equal(resumed.values, reference.values)


# --- deferred loss reads (the GPU path of the one-point loop, forced here on the CPU) ---------------------------


@pytest.fixture
def deferred(monkeypatch):
    import hf_landscape.engine as engine

    monkeypatch.setattr(engine.POLICY, "defers_reads", lambda model, objective: hasattr(objective, "loss_tensor"))
    monkeypatch.setattr(engine.POLICY, "deferred_points", 5)
    return engine.POLICY


def test_deferred_reads_of_a_last_single_point(deferred, capsys):
    reference = make_probe().line(steps=6, seed=1)
    reads = []
    original = torch.Tensor.tolist
    probe = make_probe()
    probe.progress = True  # the bar advances at every read
    with mock.patch.object(torch.Tensor, "tolist", lambda t: reads.append(t.numel()) or original(t)):
        line = probe.line(steps=6, seed=1)
    np.testing.assert_array_equal(line.values, reference.values)
    assert reads == [5, 1]


def record_saves(monkeypatch) -> list[tuple[int, bool]]:
    """The number of finished points at every checkpoint save, and whether that save was durable (fsync)."""
    saves: list[tuple[int, bool]] = []
    real_save = GridCheckpoint.save

    def save(self, *args, durable=True, **options):
        saves.append((int(args[1].sum()), durable))
        return real_save(self, *args, durable=durable, **options)

    monkeypatch.setattr(GridCheckpoint, "save", save)
    return saves


@pytest.mark.parametrize(("every", "expected"), [(3, [3, 6, 9, 12]), (12, [12])])
def test_deferred_reads_count_toward_the_saving_interval(deferred, monkeypatch, tmp_path, every, expected):
    saves = record_saves(monkeypatch)  # DEFERRED_POINTS = 5: reads at 5 and 10 points, or at a save
    make_probe().plane(steps=(4, 3), seed=1, checkpoint_dir=tmp_path, checkpoint_every=every)
    assert saves == [(k, False) for k in expected] + [(12, True)]  # quick saves (no fsync), then the grid durably


def test_deferred_stacked_reads_count_toward_the_saving_interval(monkeypatch, tmp_path):
    import hf_landscape.engine as engine

    monkeypatch.setattr(engine.POLICY, "defers_reads", lambda model, objective: True)
    monkeypatch.setattr(engine.POLICY, "deferred_points", 2)  # two chunks of 3 points per read
    saves = record_saves(monkeypatch)
    stacked_probe().plane(steps=(4, 3), seed=1, checkpoint_dir=tmp_path, checkpoint_every=12)
    assert saves == [(12, False), (12, True)]


def test_deferred_reads_give_the_same_values_bitwise(deferred):
    reference = make_probe().plane(steps=(4, 3), seed=1)
    probe = make_probe()
    reads = []
    original = torch.Tensor.tolist
    with mock.patch.object(torch.Tensor, "tolist", lambda t: reads.append(t.numel()) or original(t)):
        plane = probe.plane(steps=(4, 3), seed=1)
    np.testing.assert_array_equal(plane.values, reference.values)
    assert reads == [5, 5, 2]  # 12 points read in three syncs


def interrupted_then_resumed(tmp_path, monkeypatch, deferred, make, method, n, **engine_settings):
    """Stop a deferred 4 x 3 plane at the n-th call of `objective.method` (checkpointing to `tmp_path`), then resume
    it, deferred again: the resumed surface and how often the resumed run called `method`."""
    interrupt_at_call(monkeypatch, (probe := make()).objective, method, n)
    with pytest.raises(KeyboardInterrupt):
        probe.plane(steps=(4, 3), seed=1, checkpoint_dir=tmp_path, checkpoint_every=100)
    monkeypatch.undo()  # also undoes the fixture: defer again for the resumed run
    monkeypatch.setattr(deferred, "defers_reads", lambda model, objective: True)
    for name, value in engine_settings.items():
        monkeypatch.setattr(deferred, name, value)
    again = make()
    calls = []
    original = getattr(again.objective, method)
    monkeypatch.setattr(again.objective, method, lambda *args: calls.append(1) or original(*args))
    return again.plane(steps=(4, 3), seed=1, checkpoint_dir=tmp_path), len(calls)


def test_deferred_reads_keep_queued_points_when_interrupted(tmp_path, monkeypatch, deferred):
    reference = make_probe().plane(steps=(4, 3), seed=1)
    resumed, calls = interrupted_then_resumed(
        tmp_path, monkeypatch, deferred, make_probe, "loss_tensor", 8, deferred_points=5
    )
    np.testing.assert_array_equal(resumed.values, reference.values)
    assert calls == 12 - 7  # 5 read at the first sync and 2 queued when it stopped were saved


def stacked_probe():
    model = build_gpt2(100, seed=0)
    objective = CausalLMObjective({"input_ids": IDS}, batch_size=4)
    return LandscapeProbe(model, objective, progress=False, points_per_forward=3)


def test_deferred_stacked_reads_give_the_same_values_bitwise(monkeypatch):
    import hf_landscape.engine as engine

    reference = stacked_probe().plane(steps=(4, 3), seed=1)  # on the CPU: every chunk read at once
    monkeypatch.setattr(engine.POLICY, "defers_reads", lambda model, objective: True)
    monkeypatch.setattr(engine.POLICY, "deferred_points", 2)
    reads = []
    original = torch.Tensor.tolist
    with mock.patch.object(torch.Tensor, "tolist", lambda t: reads.append(t.numel()) or original(t)):
        plane = stacked_probe().plane(steps=(4, 3), seed=1)
    np.testing.assert_array_equal(plane.values, reference.values)
    assert reads == [6, 6]  # four chunks of 3 points, read two chunks per sync


def test_deferred_stacked_reads_keep_queued_chunks_when_interrupted(tmp_path, monkeypatch, deferred):
    reference = stacked_probe().plane(steps=(4, 3), seed=1)
    resumed, calls = interrupted_then_resumed(tmp_path, monkeypatch, deferred, stacked_probe, "loss_points", 3)
    np.testing.assert_array_equal(resumed.values, reference.values)
    assert calls == 2  # the 2 chunks queued when it stopped were saved; 2 of 4 are computed again


def interrupted_interpolation(tmp_path, monkeypatch, other):
    """An interpolation to `other` stopped at its third point, points 1-2 saved in `tmp_path`."""
    interrupt_at_the_third_point(
        monkeypatch, lambda p: p.interpolate(other, steps=5, checkpoint_dir=tmp_path, checkpoint_every=1)
    )


def test_an_interrupted_interpolation_resumes_to_the_uninterrupted_values(tmp_path, monkeypatch):
    other = build_gpt2(100, seed=1)
    reference = make_probe().interpolate(other, steps=5)
    interrupted_interpolation(tmp_path, monkeypatch, other)
    saved = json.loads((tmp_path / META_NAME).read_text())
    assert saved["done"] == 2 and saved["key"]["kind"] == "interpolation"
    resumed = make_probe().interpolate(other, steps=5, checkpoint_dir=tmp_path)
    np.testing.assert_array_equal(resumed.values, reference.values)
    assert resumed.metadata["resumed"] == {"points": 2}
    resumed.save_pretrained(tmp_path)  # the partial grid goes once the surface is saved in its folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["surface.json", "surface.safetensors"]


def test_an_interpolation_to_another_model_is_refused_the_partial_grid(tmp_path, monkeypatch):
    interrupted_interpolation(tmp_path, monkeypatch, build_gpt2(100, seed=1))
    before = (tmp_path / ARRAYS_NAME).read_bytes()
    with pytest.raises(SurfaceError, match=r"differs in \['other_model'\]"):
        make_probe().interpolate(build_gpt2(100, seed=2), steps=5, checkpoint_dir=tmp_path)
    assert (tmp_path / ARRAYS_NAME).read_bytes() == before


def test_the_interpolation_progress_bar_names_it(capsys):
    probe = make_probe()
    probe.progress = True
    probe.interpolate(build_gpt2(100, seed=1), steps=3)
    assert re.search(r"^\s*interpolate: ", capsys.readouterr().err, flags=re.MULTILINE)


def test_a_resumed_grid_counts_the_compute_time_of_the_earlier_runs(tmp_path, monkeypatch):
    interrupt_at_the_third_point(
        monkeypatch, lambda p: p.line(steps=5, seed=0, checkpoint_dir=tmp_path, checkpoint_every=1)
    )
    meta = json.loads((tmp_path / META_NAME).read_text())
    meta["compute_s"] = 100.0  # as if the earlier runs had taken 100 s
    (tmp_path / META_NAME).write_text(json.dumps(meta))
    resumed = make_probe().line(steps=5, seed=0, checkpoint_dir=tmp_path).metadata
    assert resumed["compute_time_s"] == pytest.approx(100.0 + resumed["wall_time_s"], abs=1e-3)
    assert resumed["wall_time_s"] > 1e-3


def test_the_checkpoint_folder_is_locked_while_the_grid_runs(tmp_path, monkeypatch):
    import threading

    from hf_landscape import io

    probe = make_probe()
    outcomes = []
    original = probe.objective.evaluate

    def try_lock():  # from another thread, as another run of this process would
        try:
            with io.folder_lock(tmp_path, argument="checkpoint_dir"):
                outcomes.append("taken")
        except SurfaceError:
            outcomes.append("refused")

    def evaluate(*args, **kwargs):
        thread = threading.Thread(target=try_lock)
        thread.start()
        thread.join()
        return original(*args, **kwargs)

    monkeypatch.setattr(probe.objective, "evaluate", evaluate)
    probe.line(steps=3, seed=0, checkpoint_dir=tmp_path, checkpoint_every=1)
    assert outcomes == ["refused"] * 3
    assert json.loads((tmp_path / META_NAME).read_text())["key"]["kind"] == "line"


def test_an_interpolation_saves_every_checkpoint_every_points(tmp_path, monkeypatch):
    saves = record_saves(monkeypatch)
    make_probe().interpolate(build_gpt2(100, seed=1), steps=5, checkpoint_dir=tmp_path, checkpoint_every=2)
    assert [done for done, _ in saves] == [2, 4, 5]


def saved_compute_s(folder) -> object:
    return json.loads((folder / META_NAME).read_text())["compute_s"]


def test_a_checkpoint_records_the_compute_seconds_of_its_run_to_the_millisecond(tmp_path):
    GridCheckpoint(tmp_path, {"kind": "line"}).save(np.zeros(2), np.ones(2, dtype=bool), {}, elapsed=1.23456)
    assert saved_compute_s(tmp_path) == 1.235


def test_a_checkpoint_saved_without_elapsed_seconds_records_none(tmp_path):
    GridCheckpoint(tmp_path, {"kind": "line"}).save(np.zeros(2), np.ones(2, dtype=bool), {})
    assert saved_compute_s(tmp_path) == 0.0


def test_a_resumed_checkpoint_adds_its_run_to_the_compute_seconds_of_the_earlier_ones(tmp_path):
    GridCheckpoint(tmp_path, {"kind": "line"}).save(np.zeros(2), np.array([True, False]), {}, elapsed=0.5)
    resumed = GridCheckpoint(tmp_path, {"kind": "line"})
    resumed.load(2)
    assert resumed.previous_compute_s == 0.5
    resumed.save(np.zeros(2), np.ones(2, dtype=bool), {}, elapsed=0.25)
    assert saved_compute_s(tmp_path) == 0.75


@pytest.mark.parametrize("compute_s", ["absent", None, -2.0, "12", [1.0]])
def test_compute_seconds_a_record_lacks_or_holds_as_no_number_count_as_none(tmp_path, compute_s):
    GridCheckpoint(tmp_path, {"kind": "line"}).save(np.zeros(2), np.array([True, False]), {}, elapsed=3.0)
    record = json.loads((tmp_path / META_NAME).read_text())
    if compute_s == "absent":  # a record of an older version
        del record["compute_s"]
    else:
        record["compute_s"] = compute_s
    (tmp_path / META_NAME).write_text(json.dumps(record))
    resumed = GridCheckpoint(tmp_path, {"kind": "line"})
    assert resumed.load(2)[1].tolist() == [True, False]
    assert resumed.previous_compute_s == 0.0


def test_a_resumed_grid_result_counts_its_compute_seconds_to_the_millisecond():
    from types import SimpleNamespace

    from hf_landscape.engine.runner import GridResult

    earlier = SimpleNamespace(previous_compute_s=2.0, resumed_points=3)  # what the checkpoint found
    result = GridResult.of(np.zeros(4), {}, 0.00049, [], earlier)
    assert (result.compute, result.resumed, result.wall) == (2.0, 3, 0.00049)


def test_a_grid_run_again_on_its_complete_checkpoint_writes_nothing(tmp_path, monkeypatch):
    make_probe().line(steps=3, seed=0, checkpoint_dir=tmp_path, checkpoint_every=1)
    saves = record_saves(monkeypatch)
    make_probe().line(steps=3, seed=0, checkpoint_dir=tmp_path, checkpoint_every=1)
    assert saves == []


def record_elapsed(monkeypatch) -> list[float]:
    """The `elapsed` seconds handed to every checkpoint save."""
    found: list[float] = []
    real_save = GridCheckpoint.save

    def save(self, *args, **options):
        found.append(options["elapsed"])
        return real_save(self, *args, **options)

    monkeypatch.setattr(GridCheckpoint, "save", save)
    return found


def test_every_save_of_a_running_grid_records_the_seconds_since_it_started(tmp_path, monkeypatch):
    found = record_elapsed(monkeypatch)
    start = time.perf_counter()
    make_probe().line(steps=3, seed=0, checkpoint_dir=tmp_path, checkpoint_every=1)
    wall = time.perf_counter() - start
    assert len(found) >= 3  # one after each point at least (and the durable save of the whole grid)
    assert all(0.0 < e <= wall for e in found) and found == sorted(found)


def test_the_save_of_an_interrupted_grid_records_the_seconds_since_it_started(tmp_path, monkeypatch):
    probe = make_probe()
    fail_on_call(probe, monkeypatch, 3)
    found = record_elapsed(monkeypatch)
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        probe.line(steps=5, seed=0, checkpoint_dir=tmp_path, checkpoint_every=10)
    wall = time.perf_counter() - start
    assert len(found) == 1 and 0.0 < found[0] <= wall


@pytest.mark.parametrize("folder", [123, ""])
def test_a_checkpoint_dir_that_is_no_folder_path_is_refused(folder):
    with pytest.raises(ConfigError, match=r"^`checkpoint_dir` must be a folder path, got"):
        make_probe().line(steps=3, seed=0, checkpoint_dir=folder)


def test_a_checkpoint_is_keyed_by_everything_that_decides_the_values(tmp_path):
    from hf_landscape.engine.runner import direction_fingerprint

    probe = make_probe()
    direction = probe.directions(axes=1, seed=0)[0]
    probe.line(steps=3, span=(-0.5, 0.5), direction=direction, checkpoint_dir=tmp_path)
    key = json.loads((tmp_path / META_NAME).read_text())["key"]
    assert key == {
        "kind": "line",
        "axes": [[-0.5, 0.0, 0.5]],
        "model": tensor_fingerprint(dict(probe.model.named_parameters())),
        "objective": json.loads(json.dumps(probe.objective.describe())),
        "autocast": probe.runner.config.autocast,
        "directions": [direction_fingerprint(direction)],
        "other_model": None,
    }
