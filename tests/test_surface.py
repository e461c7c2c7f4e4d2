"""Surface: save / load round trips, the no-clobber rule, corruption detection, no pickle."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import torch

from hf_landscape import CausalLMObjective, ConfigError, LandscapeProbe, Surface, SurfaceError
from hf_landscape.surface import combine_draws, grid_surface


def make_plane(scale: float = 1.0) -> Surface:
    x = np.linspace(-1.0, 1.0, 4)
    y = np.linspace(-2.0, 2.0, 3)
    values = scale * (np.add.outer(y**2, x**2) + 1.0)
    values[0, 0] = np.nan
    values[2, 3] = np.inf
    values[1, 0] = -np.inf
    accuracy = np.arange(12, dtype=np.float64).reshape(3, 4) / 12
    accuracy[2, 2] = np.nan
    metadata = {
        "kind": "plane",
        "seed": 3,
        "model": {"name_or_path": "tiny/gpt2", "class": "GPT2LMHeadModel", "revision": None},
        "grid": {"steps": [4, 3], "span": [[-1.0, 1.0], [-2.0, 2.0]]},
        "directions": [{"axis": 0, "normalization": "filter"}, {"axis": 1, "normalization": "filter"}],
        "zeta": "last key",
        "alpha": 0.5,
    }
    return Surface(x, values, y=y, metrics={"accuracy": accuracy}, metadata=metadata)


def make_line() -> Surface:
    x = np.linspace(-1.0, 1.0, 5)
    return Surface(x, np.array([3.0, 2.0, 1.5, np.nan, 4.0]), metadata={"kind": "line", "seed": 0})


def assert_same_surface(a: Surface, b: Surface) -> None:
    np.testing.assert_array_equal(a.x, b.x)
    assert (a.y is None) == (b.y is None)
    if a.y is not None:
        np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.values, b.values)  # NaN == NaN here, inf kept with its sign
    assert sorted(a.metrics) == sorted(b.metrics)
    for name in a.metrics:
        np.testing.assert_array_equal(a.metrics[name], b.metrics[name])
    assert a.metadata == b.metadata


def folder_bytes(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --- construction ---------------------------------------------------------------------------------


def test_values_shape_must_match_coordinates():
    with pytest.raises(SurfaceError, match="shape"):
        Surface(np.zeros(3), np.zeros(4))
    with pytest.raises(SurfaceError, match="shape"):
        Surface(np.zeros(3), np.zeros((3, 2)), y=np.zeros(2))  # must be (len(y), len(x)) = (2, 3)


def test_kind_ndim_and_centre():
    plane = make_plane()
    assert plane.kind == "plane" and plane.ndim == 2
    assert math.isnan(plane.centre)  # x = linspace(-1, 1, 4) has no 0
    line = make_line()
    assert line.kind == "line" and line.ndim == 1
    assert line.centre == 1.5
    odd = Surface(np.array([-1.0, 0.0, 1.0]), np.arange(6.0).reshape(2, 3), y=np.array([0.0, 1.0]))
    assert odd.centre == 1.0 and odd.kind == "plane"


@pytest.mark.parametrize(
    ("x", "samples"), [(np.array([-1.0, 0.0, 1.0]), np.zeros(4)), (np.zeros(0), np.zeros(0))], ids=["4 of 3", "empty"]
)
def test_samples_that_are_not_whole_draws_of_the_grid_are_refused(x, samples):
    with pytest.raises(SurfaceError, match="`samples`"):
        Surface(x, np.zeros_like(x), samples=samples)


@pytest.mark.parametrize("draws", [1, 2])
def test_a_one_point_grid_takes_samples_of_any_number_of_draws(draws):
    samples = np.arange(1.0, draws + 1.0)
    surface = Surface(np.array([0.0]), np.array([samples.mean()]), samples=samples)
    np.testing.assert_array_equal(surface.samples, samples.reshape(draws, 1))


@pytest.mark.parametrize("argument", ["values", "spread"])
def test_an_array_of_no_numbers_is_refused_naming_its_argument(argument):
    arrays = {"values": np.zeros(3), argument: ["a", "b", "c"]}
    with pytest.raises(SurfaceError, match=f"`{argument}` must be an array of numbers"):
        Surface(np.array([-1.0, 0.0, 1.0]), **arrays)


# --- save / load ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", [make_plane, make_line])
def test_round_trip(tmp_path, factory):
    surface = factory()
    surface.save_pretrained(tmp_path / "s")
    loaded = Surface.from_pretrained(tmp_path / "s")
    assert_same_surface(surface, loaded)
    assert loaded.kind == surface.kind
    assert loaded.values.dtype == np.float64


def test_round_trip_keeps_nan_and_signed_inf(tmp_path):
    Surface.save_pretrained(make_plane(), tmp_path)
    loaded = Surface.from_pretrained(tmp_path)
    assert np.isnan(loaded.values[0, 0])
    assert loaded.values[2, 3] == np.inf
    assert loaded.values[1, 0] == -np.inf
    assert np.isnan(loaded.metrics["accuracy"][2, 2])
    assert np.isfinite(loaded.values).sum() == 9


def test_round_trip_of_a_probe_surface(gpt2_model, tokenizer, texts, tmp_path):
    probe = LandscapeProbe(gpt2_model(), CausalLMObjective(texts[:3], tokenizer), progress=False)
    plane = probe.plane(steps=(3, 2), span=(-1, 1), seed=1)
    plane.save_pretrained(tmp_path)
    loaded = Surface.from_pretrained(tmp_path)
    np.testing.assert_array_equal(loaded.values, plane.values)
    assert loaded.metadata["objective"]["fingerprint"] == probe.objective.fingerprint()
    assert loaded.metadata["seed"] == 1
    assert loaded.metadata["grid"] == {"steps": [3, 2], "span": [[-1.0, 1.0], [-1.0, 1.0]]}
    assert loaded.surface_id() == plane.surface_id()


def test_files_written(tmp_path):
    folder = tmp_path / "new" / "nested"
    make_plane().save_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["surface.json", "surface.safetensors"]


def test_json_is_sorted(tmp_path):
    make_plane().save_pretrained(tmp_path)
    text = (tmp_path / "surface.json").read_text()

    def check(pairs):
        keys = [k for k, _ in pairs]
        assert keys == sorted(keys), keys
        return dict(pairs)

    record = json.loads(text, object_pairs_hook=check)
    assert record["metadata"]["zeta"] == "last key"
    assert record["kind"] == "plane"
    assert record["metrics"] == ["accuracy"]
    assert text == json.dumps(record, sort_keys=True, indent=2) + "\n"


def test_json_records_hash_of_arrays(tmp_path):
    import hashlib

    make_line().save_pretrained(tmp_path)
    record = json.loads((tmp_path / "surface.json").read_text())
    assert record["arrays_sha256"] == hashlib.sha256((tmp_path / "surface.safetensors").read_bytes()).hexdigest()


def test_different_surface_in_same_folder_is_refused(tmp_path):
    make_plane().save_pretrained(tmp_path)
    before = folder_bytes(tmp_path)
    with pytest.raises(SurfaceError, match="different surface") as info:
        make_plane(scale=2.0).save_pretrained(tmp_path)
    assert isinstance(info.value, ValueError)
    assert folder_bytes(tmp_path) == before
    with pytest.raises(SurfaceError):
        make_line().save_pretrained(tmp_path)
    assert folder_bytes(tmp_path) == before


def test_metadata_change_alone_is_a_different_surface(tmp_path):
    a = make_line()
    a.save_pretrained(tmp_path)
    b = make_line()
    b.metadata["seed"] = 1
    with pytest.raises(SurfaceError):
        b.save_pretrained(tmp_path)


def test_same_surface_again_is_allowed(tmp_path):
    make_plane().save_pretrained(tmp_path)
    before = folder_bytes(tmp_path)
    make_plane().save_pretrained(tmp_path)
    Surface.from_pretrained(tmp_path).save_pretrained(tmp_path)
    assert folder_bytes(tmp_path) == before


def test_overwrite_replaces(tmp_path):
    make_plane().save_pretrained(tmp_path)
    other = make_plane(scale=2.0)
    other.save_pretrained(tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["surface.json", "surface.safetensors"]
    assert_same_surface(other, Surface.from_pretrained(tmp_path))


def test_saving_into_a_file_path_is_refused(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(SurfaceError, match="is a file"):
        make_line().save_pretrained(target)


def test_corrupted_arrays_file_is_detected(tmp_path):
    make_plane().save_pretrained(tmp_path)
    path = tmp_path / "surface.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # flip a byte inside the array data
    path.write_bytes(bytes(data))
    with pytest.raises(SurfaceError, match="corrupted"):
        Surface.from_pretrained(tmp_path)


def test_corrupted_json_is_detected(tmp_path):
    make_line().save_pretrained(tmp_path)
    (tmp_path / "surface.json").write_text("{not json")
    with pytest.raises(SurfaceError, match="not valid surface JSON"):
        Surface.from_pretrained(tmp_path)


def test_json_of_another_format_is_refused(tmp_path):
    make_line().save_pretrained(tmp_path)
    (tmp_path / "surface.json").write_text(json.dumps({"format_version": 999}))
    with pytest.raises(SurfaceError, match="format"):
        Surface.from_pretrained(tmp_path)


def test_arrays_of_another_surface_are_refused(tmp_path):
    make_plane().save_pretrained(tmp_path / "a")
    make_plane(scale=2.0).save_pretrained(tmp_path / "b")
    (tmp_path / "a" / "surface.safetensors").write_bytes((tmp_path / "b" / "surface.safetensors").read_bytes())
    with pytest.raises(SurfaceError):
        Surface.from_pretrained(tmp_path / "a")


def test_folder_without_surface(tmp_path):
    with pytest.raises(SurfaceError, match="holds no surface"):
        Surface.from_pretrained(tmp_path)
    make_line().save_pretrained(tmp_path / "half")
    (tmp_path / "half" / "surface.safetensors").unlink()
    with pytest.raises(SurfaceError, match="holds no surface"):
        Surface.from_pretrained(tmp_path / "half")


def test_missing_path_offline_is_a_surface_error(tmp_path):
    with pytest.raises(SurfaceError):
        Surface.from_pretrained("no-such-user/no-such-surface")


def test_loading_never_unpickles(tmp_path, monkeypatch):
    make_plane().save_pretrained(tmp_path)

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling is not allowed")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(np, "load", forbidden)
    assert_same_surface(make_plane(), Surface.from_pretrained(tmp_path))


def test_surface_id_depends_on_arrays_and_metadata():
    assert make_plane().surface_id() == make_plane().surface_id()
    assert make_plane().surface_id() != make_plane(scale=2.0).surface_id()
    changed = make_plane()
    changed.metadata["seed"] = 4
    assert changed.surface_id() != make_plane().surface_id()


def test_metadata_is_stored_as_plain_json(tmp_path):
    surface = Surface(
        np.array([0.0, 1.0]),
        np.array([1.0, 2.0]),
        metadata={"tuple": (1, 2), "numpy": np.float32(0.5), "array": np.array([1, 2]), "path": tmp_path},
    )
    surface.save_pretrained(tmp_path / "s")
    meta = Surface.from_pretrained(tmp_path / "s").metadata
    assert meta == {"tuple": [1, 2], "numpy": 0.5, "array": [1, 2], "path": str(tmp_path)}


def test_repr_mentions_kind_and_shape():
    text = repr(make_plane())
    assert "plane" in text and "3x4" in text and "accuracy" in text


# --- what a surface holds -------------------------------------------------------------------------------------


def test_arrays_are_float64_whatever_they_came_as(tmp_path):
    x = np.array([-1, 0, 1], dtype=np.int64)
    y = np.array([-0.5, 0.5], dtype=np.float32)
    values = np.arange(6, dtype=np.float32).reshape(2, 3) / 3
    metrics = {"accuracy": [0.5, 1, 0, 1, 0.25, 0.75], "count": np.arange(6, dtype=np.int64)}
    s = Surface(x, values, y=y, metrics=metrics, spread=values, samples=[values])
    for array in (s.x, s.y, s.values, s.metrics["accuracy"], s.metrics["count"], s.spread, s.samples):
        assert array.dtype == np.float64
    assert s.metrics["accuracy"].shape == (2, 3)  # a flat metric takes the plane's shape
    np.testing.assert_array_equal(s.metrics["accuracy"], [[0.5, 1, 0], [1, 0.25, 0.75]])
    s.save_pretrained(tmp_path)
    loaded = Surface.from_pretrained(tmp_path)
    np.testing.assert_array_equal(loaded.values, values.astype(np.float64))
    assert loaded.values.dtype == np.float64


def test_spread_and_samples_of_several_seeds_round_trip(tmp_path):
    x = np.linspace(-1.0, 1.0, 3)
    samples = np.stack([np.array([2.0, 1.0, 2.5]), np.array([3.0, 1.0, 2.0]), np.array([2.5, 1.0, 1.5])])
    line = Surface(x, samples.mean(axis=0), spread=samples.std(axis=0), samples=samples, metadata={"kind": "line"})
    assert line.samples.shape == (3, 3) and line.spread.shape == (3,)
    flat = Surface(x, samples.mean(axis=0), samples=samples.reshape(-1))  # stacked again: one row per seed
    np.testing.assert_array_equal(flat.samples, samples)
    line.save_pretrained(tmp_path)
    loaded = Surface.from_pretrained(tmp_path)
    np.testing.assert_array_equal(loaded.samples, samples)
    np.testing.assert_array_equal(loaded.spread, samples.std(axis=0))
    plane = Surface(x, np.ones((2, 3)), y=np.array([0.0, 1.0]), samples=np.ones((4, 2, 3)), spread=np.zeros(6))
    assert plane.samples.shape == (4, 2, 3) and plane.spread.shape == (2, 3)


def test_a_surface_without_seeds_has_no_spread_or_samples(tmp_path):
    make_line().save_pretrained(tmp_path)
    loaded = Surface.from_pretrained(tmp_path)
    assert loaded.spread is None and loaded.samples is None


def test_directions_are_kept_in_memory():
    directions = [object()]
    assert make_line().directions is None
    assert Surface(np.zeros(2) + [0, 1], np.zeros(2), directions=directions).directions is directions


def test_arrays_file_says_what_it_holds(tmp_path):
    from safetensors import safe_open

    make_plane().save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "surface.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "hf_landscape.surface"}


def test_metadata_with_nan_and_inf_round_trips(tmp_path):
    surface = make_line()
    surface.metadata["base_loss"] = float("nan")
    surface.metadata["bounds"] = [float("-inf"), 1.0]
    surface.save_pretrained(tmp_path)
    loaded = Surface.from_pretrained(tmp_path)
    assert math.isnan(loaded.metadata["base_loss"]) and loaded.metadata["bounds"] == [float("-inf"), 1.0]


@pytest.mark.parametrize("text", ["[1, 2]", '"surface"', "3"])
def test_json_that_is_not_an_object_is_refused(tmp_path, text):
    make_line().save_pretrained(tmp_path)
    (tmp_path / "surface.json").write_text(text)
    with pytest.raises(SurfaceError, match="not an hf_landscape surface"):
        Surface.from_pretrained(tmp_path)


def test_save_plots_passes_its_formats_and_options(tmp_path):
    written = make_plane().save_plots(tmp_path, formats=("svg",), kinds=["heatmap"])
    assert [p.name for p in written] == ["plot_heatmap.svg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot_heatmap.svg"]


def test_push_to_hub_passes_every_option_to_the_pusher(monkeypatch):
    import hf_landscape.hub.mixin as hub_push

    calls = []
    monkeypatch.setattr(hub_push, "push_artifacts", lambda *args, **kwargs: calls.append((args, kwargs)) or "url")
    surface = make_line()
    options = dict(
        repo_type="model", token="t", private=True, revision="dev", commit_message="a landscape", create_pr=True
    )
    assert surface.push_to_hub("me/repo", path_in_repo="sub", **options) == "url"
    ((args, kwargs),) = calls
    assert args == ({"sub": surface}, "me/repo") and kwargs == options


def test_plot_passes_its_kind_and_options(monkeypatch):
    import hf_landscape.plotting as plotting

    calls = []
    monkeypatch.setattr(plotting, "plot_surface", lambda *args, **kwargs: calls.append((args, kwargs)) or "figure")
    plane = make_plane()
    assert plane.plot("heatmap", log_scale=True) == "figure"
    assert calls == [((plane,), {"kind": "heatmap", "log_scale": True})]


def test_an_unknown_plot_format_is_refused_naming_formats_before_writing(tmp_path):
    with pytest.raises(ConfigError, match="`formats`"):
        make_line().save_pretrained(tmp_path / "out", formats=("bmp",))
    assert not (tmp_path / "out").exists()


def test_a_folder_named_like_the_viewer_page_is_refused_before_writing(tmp_path):
    (tmp_path / "viewer.html").mkdir()
    with pytest.raises(SurfaceError, match="`save_directory` .* holds 'viewer.html', which is a folder"):
        make_line().save_pretrained(tmp_path, viewer=True)
    assert [p.name for p in tmp_path.iterdir()] == ["viewer.html"]


def test_a_folder_that_cannot_be_written_is_refused_naming_save_directory(tmp_path, monkeypatch):
    import errno

    import hf_landscape.io as io

    def read_only(folder):  # root ignores permission bits: stand in for a read-only file system
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(io, "_probe_write", read_only)
    with pytest.raises(SurfaceError, match=r"`save_directory` .* is not writable \(Read-only file system\)"):
        make_line().save_pretrained(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_named_like_the_viewer_page_is_left_alone_without_the_viewer(tmp_path):
    (tmp_path / "viewer.html").mkdir()
    make_line().save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["surface.json", "surface.safetensors", "viewer.html"]


# --- a grid's surface, and draws over several seeds ------------------------------------------------------------


def test_a_grid_surface_lays_its_metrics_out_as_its_values():
    x, y = np.array([-1.0, 0.0, 1.0]), np.array([0.0, 1.0])
    plane = grid_surface([x, y], np.arange(6.0), {"accuracy": np.arange(6.0) / 8}, {"kind": "plane"})
    np.testing.assert_array_equal(plane.values, [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    np.testing.assert_array_equal(plane.metrics["accuracy"], [[0.0, 0.125, 0.25], [0.375, 0.5, 0.625]])


def one_draw(seed: int, values: list[float], accuracy: list[float], **metadata) -> Surface:
    """A line of one direction seed, as `LandscapeProbe.line` makes it (directions, wall time)."""
    meta = {"kind": "line", "seed": seed, "directions": [{"seed": seed}], "wall_time_s": 1.0, **metadata}
    x = np.array([-1.0, 0.0, 1.0])
    return Surface(x, np.array(values), metrics={"accuracy": np.array(accuracy)}, metadata=meta, directions=[seed])


def test_draws_combine_into_their_mean_spread_and_samples():
    draws = [one_draw(4, [1.0, 2.0, 3.0], [0.0, 1.0, 0.5]), one_draw(5, [3.0, 6.0, 5.0], [1.0, 0.0, 0.25])]
    combined = combine_draws(draws, [4, 5])
    np.testing.assert_array_equal(combined.x, [-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(combined.values, [2.0, 4.0, 4.0])
    np.testing.assert_array_equal(combined.spread, np.sqrt([2.0, 8.0, 2.0]))  # ddof=1: |a - b| / sqrt(2)
    np.testing.assert_array_equal(combined.samples, [[1.0, 2.0, 3.0], [3.0, 6.0, 5.0]])


def test_draws_combine_into_the_mean_of_each_metric():
    draws = [one_draw(4, [1.0, 2.0, 3.0], [0.0, 1.0, 0.5]), one_draw(5, [3.0, 6.0, 5.0], [1.0, 0.0, 0.25])]
    combined = combine_draws(draws, [4, 5])
    assert list(combined.metrics) == ["accuracy"]
    np.testing.assert_array_equal(combined.metrics["accuracy"], [0.5, 0.5, 0.375])


def test_combined_draws_keep_the_first_draws_metadata_with_every_seed_and_direction():
    draws = [one_draw(4, [1.0] * 3, [0.0] * 3, model="a"), one_draw(5, [2.0] * 3, [0.0] * 3, model="b")]
    combined = combine_draws(draws, [4, 5])
    assert combined.metadata == {
        "kind": "line",
        "model": "a",
        "seed": None,
        "seeds": [4, 5],
        "directions": [{"seed": 4}, {"seed": 5}],
        "wall_time_s": 2.0,
        "compute_time_s": 2.0,
        "resumed": None,
    }
    assert combined.directions == [4, 5]


def test_combined_draws_sum_wall_and_compute_times_to_the_millisecond():
    first = one_draw(4, [1.0] * 3, [0.0] * 3, wall_time_s=1.23456, compute_time_s=0.1111)
    second = one_draw(5, [2.0] * 3, [0.0] * 3, wall_time_s=2.0)  # no compute time: its wall time counts
    combined = combine_draws([first, second], [4, 5])
    assert combined.metadata["wall_time_s"] == 3.235
    assert combined.metadata["compute_time_s"] == 2.111


def test_combined_draws_count_the_points_resumed_from_partial_grids():
    first = one_draw(4, [1.0] * 3, [0.0] * 3, resumed={"points": 2})
    second = one_draw(5, [2.0] * 3, [0.0] * 3, resumed={"points": 3})
    assert combine_draws([first, second], [4, 5]).metadata["resumed"] == {"points": 5}


def test_combined_draws_of_which_none_resumed_record_no_resumed_points():
    first = one_draw(4, [1.0] * 3, [0.0] * 3)  # no `resumed` key
    second = one_draw(5, [2.0] * 3, [0.0] * 3, resumed=None)
    assert combine_draws([first, second], [4, 5]).metadata["resumed"] is None


def test_combined_draws_keep_the_directions_of_the_draws_that_have_them():
    first, second = one_draw(4, [1.0] * 3, [0.0] * 3), one_draw(5, [2.0] * 3, [0.0] * 3)
    second.directions = None
    assert combine_draws([first, second], [4, 5]).directions == [4]
