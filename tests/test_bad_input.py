"""Bad input is refused before any work, with a `LandscapeError` naming the argument, the value and the fix.

Command-line options, the output folder, grid sizes and spans, models, token ids, hand-made or damaged files and
model cards: each is checked before a model is loaded or a point is evaluated, and nothing is written or changed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TEXTS, build_gpt2, build_llama, train_tokenizer
from safetensors.torch import save_file

from hf_landscape import (
    CausalLMObjective,
    ConfigError,
    Direction,
    DirectionError,
    LandscapeError,
    LandscapeProbe,
    ModelError,
    ObjectiveError,
    Surface,
    SurfaceError,
)
from hf_landscape.cli.main import main
from hf_landscape.engine.checkpoint import ARRAYS_NAME, META_NAME

IDS = [[(7 * i + 3 * j) % 97 + 1 for j in range(10 + i % 3)] for i in range(4)]


def make_probe(model=None, **kwargs) -> LandscapeProbe:
    model = model if model is not None else build_gpt2(100)
    return LandscapeProbe(model, CausalLMObjective({"input_ids": IDS}, batch_size=4), progress=False, **kwargs)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


def assert_same_weights(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    for name, t in model.state_dict().items():
        assert torch.equal(t, before[name]), name


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    tokenizer = train_tokenizer()
    build_gpt2(len(tokenizer), n_layer=1, n_embd=16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(" ".join(TEXTS * 2))
    return path


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if the command line starts loading a model."""
    import hf_landscape.hub as hub

    def loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(hub, "resolve_model", loading)
    monkeypatch.setattr(hub, "load_model", loading)


def refused(argv, capsys) -> str:
    """Run the command line; it must exit 1 with one error line, which is returned."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("hf-landscape ")]
    assert code == 1 and len(lines) == 1, err
    return lines[0]


def line_argv(model_dir, text_file, out, *extra):
    argv = ["line", model_dir, "--text-file", text_file, "--max-length", 16, "--max-examples", 3, "--steps", 3]
    return [*argv, "--out", out, "--no-progress", *extra]


# --- 5. the output folder is checked before the model is loaded ------------------------------------------------


def test_out_that_is_a_file_is_refused_before_loading_the_model(no_model_load, model_dir, text_file, tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("not a folder")
    line = refused(line_argv(model_dir, text_file, out), capsys)
    assert f"`--out` {str(out)!r} is a file" in line
    assert out.read_text() == "not a folder"


def test_out_inside_a_file_is_refused_before_loading_the_model(no_model_load, model_dir, text_file, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    line = refused(line_argv(model_dir, text_file, tmp_path / "file" / "out"), capsys)
    assert "`--out`" in line and "cannot be created" in line


def test_unwritable_out_is_refused_before_loading_the_model(
    no_model_load, model_dir, text_file, tmp_path, capsys, monkeypatch
):
    import errno

    import hf_landscape.io as io

    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)

    def read_only(folder):  # root ignores permission bits: stand in for a read-only file system as well
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(io, "_probe_write", read_only, raising=False)
    try:
        line = refused(line_argv(model_dir, text_file, out), capsys)
    finally:
        out.chmod(0o755)
    assert "`--out`" in line and "not writable" in line and "Read-only file system" in line
    assert list(out.iterdir()) == []


def test_out_without_free_space_is_refused_before_loading_the_model(
    no_model_load, model_dir, text_file, tmp_path, capsys, monkeypatch
):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    line = refused(line_argv(model_dir, text_file, tmp_path / "out"), capsys)
    assert "`--out`" in line and "1000 bytes free" in line
    assert not (tmp_path / "out").exists()


def test_names_in_out_that_are_folders_are_refused_before_loading_the_model(
    no_model_load, model_dir, text_file, tmp_path, capsys
):
    out = tmp_path / "out"
    (out / "surface.safetensors").mkdir(parents=True)
    line = refused(line_argv(model_dir, text_file, out, "--overwrite"), capsys)
    assert "surface.safetensors" in line and "is a folder" in line


# --- 7 and 8. spans and grid sizes -----------------------------------------------------------------------------


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a grid starts (directions are drawn) or a big coordinate array is allocated."""
    real = np.linspace

    def linspace(start, stop, num=50, *args, **kwargs):
        assert num <= 10**6, f"allocated {num} coordinates"
        return real(start, stop, num, *args, **kwargs)

    monkeypatch.setattr(np, "linspace", linspace)
    monkeypatch.setattr(LandscapeProbe, "_directions_for", lambda *a, **k: pytest.fail("the grid started"))


@pytest.mark.parametrize(
    "call",
    [
        lambda p, d: p.line(steps=3, span=(-1e308, 1e308), checkpoint_dir=d),
        lambda p, d: p.line(steps=3, span=(0.0, 1e300), checkpoint_dir=d),
        lambda p, d: p.plane(steps=(3, 3), span=((-1, 1), (-1e308, 1e308)), checkpoint_dir=d),
        lambda p, d: p.interpolate(build_gpt2(100, seed=1), steps=3, span=(-1e308, 1e308), checkpoint_dir=d),
    ],
    ids=["line", "line-far", "plane", "interpolate"],
)
def test_absurd_spans_are_refused_before_any_work(call, no_work, tmp_path):
    probe = make_probe()
    before = weights(probe.model)
    with pytest.raises(ConfigError, match=r"span.*e\+30[08]"):
        call(probe, tmp_path / "grid")
    assert not (tmp_path / "grid").exists()
    assert_same_weights(probe.model, before)


def test_absurd_span_on_the_command_line_is_refused_before_loading_the_model(
    no_model_load, model_dir, text_file, tmp_path, capsys
):
    argv = [a for a in line_argv(model_dir, text_file, tmp_path / "out")]
    line = refused([*argv, "--span=-1e308:1e308"], capsys)
    assert "span" in line
    assert not (tmp_path / "out").exists()


def test_absurd_points_and_alphas_are_refused():
    probe = make_probe()
    direction = probe.directions(0, axes=1)
    before = weights(probe.model)
    with pytest.raises(ConfigError, match=r"`point` \(inf,\) must be finite"):
        probe.evaluate((float("inf"),), direction)
    with pytest.raises(ConfigError, match=r"`alphas` must lie within"):
        probe.token_loss_map([-1e308, 1e308])
    assert_same_weights(probe.model, before)


@pytest.mark.parametrize(
    "call, limit",
    [
        (lambda p: p.line(steps=10**9), None),
        (lambda p: p.plane(steps=(10**5, 10**5)), None),
        (lambda p: p.line(steps=3, seed=[0, 1]), "5"),
    ],
    ids=["line", "plane", "seeds"],
)
def test_huge_grids_are_refused_before_allocating(call, limit, no_work, monkeypatch):
    if limit is not None:
        monkeypatch.setenv("HF_LANDSCAPE_MAX_POINTS", limit)
    with pytest.raises(ConfigError, match=r"points.*HF_LANDSCAPE_MAX_POINTS"):
        call(make_probe())


def test_the_grid_limit_is_raised_by_the_environment(monkeypatch):
    monkeypatch.setenv("HF_LANDSCAPE_MAX_POINTS", "4")
    with pytest.raises(ConfigError, match=r"5 points.*limit of 4.*HF_LANDSCAPE_MAX_POINTS"):
        make_probe().line(steps=5)
    monkeypatch.setenv("HF_LANDSCAPE_MAX_POINTS", "5")
    assert make_probe().line(steps=5).values.shape == (5,)


def test_huge_steps_on_the_command_line_are_refused_before_loading_the_model(
    no_model_load, model_dir, text_file, tmp_path, capsys
):
    argv = line_argv(model_dir, text_file, tmp_path / "out")
    argv[argv.index("--steps") + 1] = str(10**9)
    assert "HF_LANDSCAPE_MAX_POINTS" in refused(argv, capsys)


# --- 9. raw errors for bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--max-length", "0"], "`--max-length` must be an integer >= 2, got 0"),
        (["--batch-size", "0"], "`--batch-size` must be an integer >= 1, got 0"),
        (["--device", "bogus"], "`--device` 'bogus'"),
        (["--device", "cuda"], "`--device` 'cuda'"),
        (["--device", "meta"], "`--device` 'meta'"),
        (["--checkpoint-every", "0"], "`--checkpoint-every` must be"),
        (["--normalization", "sideways"], "`normalization`"),
        (["--include", "("], "invalid regular expression"),
    ],
)
def test_bad_options_are_refused_before_loading_the_model(
    extra, words, no_model_load, model_dir, text_file, tmp_path, capsys
):
    if extra[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    line = refused([*line_argv(model_dir, text_file, tmp_path / "out"), *extra], capsys)
    assert words in line
    assert not (tmp_path / "out").exists()


def test_a_binary_text_file_is_refused_before_loading_the_model(no_model_load, model_dir, tmp_path, capsys):
    binary = tmp_path / "data.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    line = refused(line_argv(model_dir, binary, tmp_path / "out"), capsys)
    assert f"`--text-file` {str(binary)!r} is not UTF-8 text" in line


def test_max_length_of_a_long_text_is_checked():
    with pytest.raises(ConfigError, match=r"`max_length` must be an integer >= 2, got 0"):
        CausalLMObjective.from_long_text("a b c d e f", train_tokenizer(), max_length=0)


@pytest.mark.parametrize(
    "kwargs",
    [{"direction": ["a"]}, {"direction": "a"}, {"direction": [torch.zeros(2)]}, {"direction": {1: torch.zeros(2)}}],
    ids=["list", "unknown-kind", "list-of-tensors", "int-keys"],
)
def test_directions_that_are_not_directions_are_refused(kwargs):
    probe = make_probe()
    before = weights(probe.model)
    with pytest.raises(LandscapeError, match="`direction"):
        probe.line(steps=3, **kwargs)
    assert_same_weights(probe.model, before)


def test_plane_directions_that_are_not_directions_are_refused():
    with pytest.raises(DirectionError, match=r"`directions\[0\]` must be a `Direction`"):
        make_probe().plane(steps=(2, 2), directions=["a", "b"])


def test_a_model_on_the_meta_device_is_refused():
    with torch.device("meta"):
        model = build_gpt2(100)
    with pytest.raises(ModelError, match="meta device"):
        make_probe(model)


def test_an_interpolation_target_on_the_meta_device_is_refused():
    with torch.device("meta"):
        other = build_gpt2(100)
    probe = make_probe()
    before = weights(probe.model)
    with pytest.raises(ModelError, match=r"`other_model`.*meta device"):
        probe.interpolate(other, steps=3)
    assert_same_weights(probe.model, before)


def test_a_direction_on_the_meta_device_is_refused():
    probe = make_probe()
    with torch.device("meta"):
        meta = {n: torch.zeros_like(p, device="meta") for n, p in probe.model.named_parameters() if p.dim() == 2}
    with pytest.raises(DirectionError, match="meta device"):
        probe.line(steps=3, direction=meta)


@pytest.mark.parametrize(
    "data, words",
    [
        ({"input_ids": [[1, -3, 4]], "labels": [[1, -100, 4]]}, "input id -3"),
        ({"input_ids": [[1, "a", 4]]}, "input id 'a'"),
        ({"input_ids": [[1, 2.5, 4]]}, "input id 2.5"),
        ({"input_ids": [[1, 200, 4]], "labels": [[1, -100, 4]]}, "input id 200"),
    ],
    ids=["negative", "string", "float", "beyond-vocabulary"],
)
def test_bad_input_ids_are_objective_errors(data, words):
    with pytest.raises(ObjectiveError, match=words):
        LandscapeProbe(build_gpt2(100), CausalLMObjective(data), progress=False).loss()


def test_a_half_precision_model_with_autocast_to_the_other_half_is_refused():
    with pytest.raises(
        ConfigError,
        match=r"^`autocast` 'bfloat16' cannot evaluate a model whose weights are float16; pass autocast='float16' ",
    ):
        make_probe(build_gpt2(100).half(), autocast="bfloat16")


def test_a_vocabulary_changed_after_the_probe_was_made_is_an_objective_error():
    tokenizer = train_tokenizer()
    model = build_gpt2(len(tokenizer))
    probe = LandscapeProbe(model, CausalLMObjective(TEXTS, tokenizer), progress=False)
    probe.loss()
    model.resize_token_embeddings(50)
    with pytest.raises(ObjectiveError, match=r"vocabulary of 50"):
        probe.loss()
    with pytest.raises(ObjectiveError, match=r"vocabulary of 50"):
        probe.line(steps=3)


# --- 10. hand-made or damaged files ----------------------------------------------------------------------------


def saved_surface(folder: Path, *, record=None, arrays=None) -> Path:
    """A surface folder, then its JSON record and arrays edited by hand (hash kept consistent)."""
    import hashlib

    Surface(np.array([-1.0, 0.0, 1.0]), np.array([2.0, 1.0, 2.0]), metadata={"kind": "line"}).save_pretrained(folder)
    if arrays is not None:
        save_file({k: torch.as_tensor(v) for k, v in arrays.items()}, str(folder / "surface.safetensors"))
    data = json.loads((folder / "surface.json").read_text())
    data["arrays_sha256"] = hashlib.sha256((folder / "surface.safetensors").read_bytes()).hexdigest()
    for key, value in (record or {}).items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    (folder / "surface.json").write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize(
    "edit, words",
    [
        ({"record": {"metadata": None}}, "metadata"),
        ({"record": {"metadata": "a string"}}, "metadata"),
        ({"arrays": {"x": np.array([-1.0, 0.0, 1.0])}}, "values"),
        ({"arrays": {"values": np.array([2.0, 1.0, 2.0])}}, "`x`"),
        ({"arrays": {"x": np.zeros((3, 1)), "values": np.zeros(3)}}, "1-D"),
        ({"arrays": {"x": np.zeros(3), "values": np.zeros(3), "metrics.acc": np.zeros(4)}}, "acc"),
    ],
    ids=["no-metadata", "str-metadata", "no-values", "no-x", "2d-x", "bad-metric"],
)
def test_damaged_surface_files_are_surface_errors(edit, words, tmp_path):
    folder = saved_surface(tmp_path / "s", **edit)
    with pytest.raises(SurfaceError, match=words):
        Surface.from_pretrained(folder)


def test_surface_from_none_is_a_surface_error():
    with pytest.raises(SurfaceError, match=r"`repo_id_or_path`.*None"):
        Surface.from_pretrained(None)


def test_a_two_dimensional_x_without_y_is_refused():
    with pytest.raises(SurfaceError, match=r"`x` must be 1-D"):
        Surface(np.zeros((3, 1)), np.zeros(3))
    with pytest.raises(SurfaceError, match=r"`y` must be 1-D"):
        Surface(np.zeros(3), np.zeros((2, 3)), y=np.zeros((2, 1)))


def test_metadata_that_is_not_a_mapping_is_refused():
    with pytest.raises(SurfaceError, match="`metadata` must be a dict"):
        Surface(np.zeros(3), np.zeros(3), metadata="line")


@pytest.mark.parametrize(
    "content",
    [b"not a safetensors file at all", "json"],
    ids=["not-safetensors", "bad-json-metadata"],
)
def test_damaged_direction_files_are_direction_errors(content, tmp_path):
    path = tmp_path / "d.safetensors"
    if content == "json":
        save_file({"w": torch.zeros(2)}, str(path), metadata={"hf_landscape_direction": "{not json"})
    else:
        path.write_bytes(content)
    with pytest.raises(DirectionError, match=str(path)):
        Direction.from_pretrained(path)


def test_a_direction_config_that_is_a_list_is_refused(tmp_path):
    with pytest.raises(DirectionError, match="`config` must be a dict"):
        Direction({"w": torch.zeros(2)}, ["kind"])
    path = tmp_path / "d.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"hf_landscape_direction": '["kind"]'})
    with pytest.raises(DirectionError, match="config"):
        Direction.from_pretrained(path)


def interrupted_line(folder: Path, monkeypatch) -> None:
    from conftest import interrupt_at_call

    probe = make_probe()
    interrupt_at_call(monkeypatch, probe.objective, "evaluate", 3)
    with pytest.raises(KeyboardInterrupt):
        probe.line(steps=5, checkpoint_dir=folder, checkpoint_every=1)
    monkeypatch.undo()


@pytest.mark.parametrize("damage", ["no-done", "string-key", "no-key"])
def test_damaged_checkpoints_are_surface_errors(damage, tmp_path, monkeypatch):
    import hashlib

    interrupted_line(tmp_path, monkeypatch)
    meta = json.loads((tmp_path / META_NAME).read_text())
    if damage == "no-done":
        save_file({"values": torch.zeros(5, dtype=torch.float64)}, str(tmp_path / ARRAYS_NAME))
        meta["arrays_sha256"] = hashlib.sha256((tmp_path / ARRAYS_NAME).read_bytes()).hexdigest()
    elif damage == "string-key":
        meta["key"] = "line"
    else:
        meta.pop("key")
    (tmp_path / META_NAME).write_text(json.dumps(meta))
    with pytest.raises(SurfaceError, match=rf"damaged .*; delete {re.escape(META_NAME)}"):
        make_probe().line(steps=5, checkpoint_dir=tmp_path)


def trajectory_run(folder: Path, files: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model = build_gpt2(100)
    snapshot = {n: p.detach().clone() for n, p in model.named_parameters() if p.dim() == 2}
    for name in ("step_00000000.safetensors", "step_00000001.safetensors", "step_00000002.safetensors"):
        save_file(snapshot, str(folder / name))
    entries = [{"step": i, "file": f} for i, f in enumerate(files)]
    (folder / "trajectory.json").write_text(json.dumps({"format": "hf_landscape.trajectory", "snapshots": entries}))
    return folder


@pytest.mark.parametrize("where", ["parent", "absolute", "link"])
def test_trajectory_snapshots_outside_the_run_folder_are_refused(where, tmp_path):
    outside = tmp_path / "outside.safetensors"
    model = build_gpt2(100)
    save_file({n: p.detach().clone() for n, p in model.named_parameters() if p.dim() == 2}, str(outside))
    run = tmp_path / "run"
    run.mkdir()
    if where == "link":
        os.symlink(outside, run / "linked.safetensors")
    name = {"parent": "../outside.safetensors", "absolute": str(outside), "link": "linked.safetensors"}[where]
    trajectory_run(run, ["step_00000000.safetensors", "step_00000001.safetensors", name])
    with pytest.raises(DirectionError, match="outside the run folder"):
        make_probe(model).trajectory_plane(run, steps=(2, 2))


@pytest.mark.parametrize(
    "entry", [{"step": "two", "file": "step_00000002.safetensors"}, {"step": 2}, {"step": True, "file": "x"}, "step 2"]
)
def test_a_damaged_trajectory_index_is_a_direction_error(entry, tmp_path):
    from hf_landscape.directions.trajectory import read_trajectory

    run = trajectory_run(tmp_path / "run", ["step_00000000.safetensors", "step_00000001.safetensors"])
    index = json.loads((run / "trajectory.json").read_text())
    index["snapshots"].append(entry)
    (run / "trajectory.json").write_text(json.dumps(index))
    with pytest.raises(DirectionError, match="trajectory.json"):
        read_trajectory(run)


def test_the_callback_never_deletes_outside_its_folder(tmp_path):
    from types import SimpleNamespace

    from hf_landscape.callbacks import LandscapeCallback

    outside = tmp_path / "precious.safetensors"
    outside.write_bytes(b"keep me")
    run = trajectory_run(tmp_path / "run", ["step_00000000.safetensors", "../precious.safetensors"])
    callback = LandscapeCallback(run, every_n_steps=1, overwrite=True)
    state = SimpleNamespace(global_step=0, is_world_process_zero=True, epoch=0.0, max_steps=1)
    with pytest.raises(LandscapeError, match="outside the run folder"):
        callback.on_train_begin(None, state, None, model=build_gpt2(100))
    assert outside.read_bytes() == b"keep me"


# --- 11. every option is checked before any work ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["bmp", "../../x", "png/../../x"])
def test_bad_plot_formats_are_refused_before_loading_the_model(
    fmt, no_model_load, model_dir, text_file, tmp_path, capsys
):
    line = refused([*line_argv(model_dir, text_file, tmp_path / "out"), "--formats", "png", fmt], capsys)
    assert f"`--formats` may hold ['png', 'pdf', 'svg'], got {fmt!r}" in line
    assert not (tmp_path / "out").exists()


def test_bad_hub_options_are_refused_before_loading_the_model(no_model_load, model_dir, text_file, tmp_path, capsys):
    argv = line_argv(model_dir, text_file, tmp_path / "out")
    assert "`--push-to-hub`" in refused([*argv, "--push-to-hub", "not a repo id!"], capsys)
    assert "`--path-in-repo`" in refused([*argv, "--push-to-hub", "me/x", "--path-in-repo", "../up"], capsys)


# --- 12. the model card's own markers --------------------------------------------------------------------------


def card_surface(command: str, seed: int = 0) -> Surface:
    metadata = {"kind": "line", "seed": seed, "command": command, "model": {"name_or_path": "org/<!-- x -->"}}
    return Surface(np.array([-1.0, 0.0, 1.0]), np.array([2.0, 1.0, 2.0]), metadata=metadata)


HOSTILE = (
    "hf-landscape line m --text-file 'a ```\n<!-- /surface:a -->\n<!-- /hf_landscape:surfaces -->\n"
    "<!-- surface:b -->' --out o"
)


def test_embedded_fences_and_markers_cannot_break_the_card():
    import html

    from hf_landscape.hub_push import render_card

    first = render_card("me/x", {"a": card_surface(HOSTILE)})
    section_a = first[first.index("<!-- surface:a -->") : first.index("<!-- /surface:a -->")]
    second = render_card("me/x", {"b": card_surface("hf-landscape line n", seed=1)}, existing=first)
    assert second.count("<!-- surface:a -->") == 1 and second.count("<!-- surface:b -->") == 1
    assert section_a in second  # the first surface's section is kept whole
    third = render_card("me/x", {"b": card_surface("hf-landscape line n", seed=2)}, existing=second)
    assert section_a in third and third.count("<!-- surface:b -->") == 1
    shown = html.unescape(section_a.split("<pre><code>", 1)[1].split("</code></pre>", 1)[0])
    assert shown == HOSTILE  # escaped in the card, exact when rendered


@pytest.mark.parametrize(
    "damaged",
    [
        "# Notes\n\n<!-- /hf_landscape:surfaces -->\nmine\n<!-- hf_landscape:surfaces -->\nalso mine\n",
        "# Notes\n\n<!-- hf_landscape:surfaces -->\nmine, and no end marker\n",
        "# Notes\n\n<!-- /hf_landscape:surfaces -->\nmine, and no start marker\n",
    ],
    ids=["reversed", "no-end", "no-start"],
)
def test_a_damaged_card_is_kept_as_foreign_text(damaged):
    from hf_landscape.hub_push import render_card

    card = render_card("me/x", {"a": card_surface("hf-landscape line m")}, existing=damaged)
    assert damaged.strip() in card and card.count("<!-- surface:a -->") == 1
    again = render_card("me/x", {"a": card_surface("hf-landscape line m", seed=3)}, existing=card)
    assert damaged.strip() in again and again.count("<!-- surface:a -->") == 1 and "| seed | 3 |" in again


def test_embedded_fences_and_markers_cannot_break_the_dataset_card():
    from hf_landscape.hub import render_dataset_card

    hostile = card_surface(HOSTILE)
    hostile.metadata["model"] = {"name_or_path": "org/x | `y` <!-- /hf_landscape:subsets -->", "commit_sha": "a" * 40}
    first = render_dataset_card("me/x", {"a": hostile}, subsets={"a": "a"})
    section_a = first[first.index("<!-- surface:a -->") : first.index("<!-- /surface:a -->")]
    (row_a,) = [line for line in first.splitlines() if line.startswith("| `a` |")]
    assert row_a.count(" | ") == 4 and "<!--" not in row_a  # five cells, no marker
    second = render_dataset_card("me/x", {"b": card_surface("hf-landscape line n", seed=1)}, first, subsets={"b": "b"})
    third = render_dataset_card("me/x", {"b": card_surface("hf-landscape line n", seed=2)}, second, subsets={"b": "b"})
    assert section_a in third and row_a in third.splitlines()
    assert third.count("<!-- surface:b -->") == 1 and third.count("| `b` |") == 1 and "| seed | 2 |" in third


@pytest.mark.parametrize(
    "damaged",
    [
        "# Notes\n\n<!-- /hf_landscape:subsets -->\nmine\n<!-- hf_landscape:subsets -->\nalso mine\n",
        "# Notes\n\n<!-- hf_landscape:subsets -->\nmine, and no end marker\n",
        "# Notes\n\n<!-- /hf_landscape:subsets -->\nmine, and no start marker\n",
    ],
    ids=["reversed", "no-end", "no-start"],
)
def test_a_damaged_dataset_card_is_kept_as_foreign_text(damaged):
    from hf_landscape.hub import render_dataset_card

    card = render_dataset_card("me/x", {"a": card_surface("hf-landscape line m")}, damaged, subsets={"a": "a"})
    assert damaged.strip() in card and card.count("| `a` |") == 1
    again = render_dataset_card("me/x", {"b": card_surface("hf-landscape line m", seed=3)}, card, subsets={"b": "b"})
    assert damaged.strip() in again and again.count("| `a` |") == 1 and again.count("| `b` |") == 1


# --- 13. messages that say what happened -----------------------------------------------------------------------


def test_the_bad_item_of_a_text_list_is_the_one_named():
    with pytest.raises(ObjectiveError, match=r"`data\[1\]` is None"):
        CausalLMObjective(["abc", None], train_tokenizer())


def test_an_unreachable_hub_repo_is_not_said_to_hold_no_surface():
    with pytest.raises(SurfaceError) as info:
        Surface.from_pretrained("user/does-not-exist")
    text = str(info.value)
    assert "holds no surface" not in text and "could not be reached" in text and "HF_HUB_OFFLINE" in text


def test_a_checkpoint_of_another_length_is_called_damaged(tmp_path, monkeypatch):
    interrupted_line(tmp_path, monkeypatch)
    meta = json.loads((tmp_path / META_NAME).read_text())
    save_file(
        {"values": torch.zeros(20, dtype=torch.float64), "done": torch.ones(20, dtype=torch.uint8)},
        str(tmp_path / ARRAYS_NAME),
    )
    import hashlib

    meta["arrays_sha256"] = hashlib.sha256((tmp_path / ARRAYS_NAME).read_bytes()).hexdigest()
    (tmp_path / META_NAME).write_text(json.dumps(meta))
    with pytest.raises(SurfaceError, match=r"20 points.*5") as info:
        make_probe().line(steps=5, checkpoint_dir=tmp_path)
    assert "already done" not in str(info.value)


def test_a_quantized_model_is_refused_rather_than_half_perturbed():
    model = torch.ao.quantization.quantize_dynamic(build_llama(100), {torch.nn.Linear}, dtype=torch.qint8)
    probe = make_probe(model)
    with pytest.raises(DirectionError, match=r"quantized.*q_proj.*unquantized"):
        probe.line(steps=3)
    with pytest.raises(DirectionError, match=r"quantized"):
        probe.plane(steps=(2, 2), directions="lora")
