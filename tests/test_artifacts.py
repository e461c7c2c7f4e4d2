"""One Hub/IO layer: surfaces, comparisons and direction sets share save_pretrained / from_pretrained / push_to_hub.

A push holds exactly the files `save_pretrained` writes with the same options (plus the card), through the real
`huggingface_hub` client against the local fake Hub (tests/hub_server.py); every Hub failure is a `HubError`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TEXTS, build_gpt2, train_tokenizer
from hub_server import running_hub

from hf_landscape import (
    CompareReport,
    ConfigError,
    Direction,
    DirectionError,
    DirectionSet,
    HubDirectionError,
    HubError,
    HubModelError,
    HubSurfaceError,
    LowRankDirection,
    ModelError,
    Surface,
    SurfaceError,
)
from hf_landscape.cli.main import main as cli_main


@pytest.fixture
def hub():
    with running_hub() as server:
        yield server


def make_plane(scale: float = 1.0, **meta) -> Surface:
    x = np.linspace(-1.0, 1.0, 5)
    values = scale * np.add.outer(x**2, x**2) + 1.0
    metadata = {"kind": "plane", "seed": 0, **meta}
    return Surface(x, values, y=x.copy(), metrics={"accuracy": values / 10}, metadata=metadata)


def local_files(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def pushed(hub, repo_id: str, repo_type: str = "dataset") -> dict[str, bytes]:
    """The files of a push besides its card: README.md, .gitattributes and a dataset's tables (data/*.parquet)."""
    files = hub.files(repo_id, repo_type=repo_type)
    return {k: v for k, v in files.items() if k not in ("README.md", ".gitattributes") and not k.startswith("data/")}


# --- the push holds what save_pretrained writes, with the user's options ---------------------------------------


def test_push_uploads_exactly_what_save_pretrained_writes_with_the_same_options(hub, tmp_path):
    surface = make_plane()
    options = {"formats": ("png", "svg"), "log_scale": True, "viewer": False}
    surface.save_pretrained(tmp_path / "local", **options)
    surface.push_to_hub("me/options", token=hub.token, **options)
    local, remote = local_files(tmp_path / "local"), pushed(hub, "me/options")
    assert (
        set(remote)
        == set(local)
        == {
            "surface.json",
            "surface.safetensors",
            *(f"plot_{k}.{f}" for k in ("contour", "heatmap", "surface") for f in ("png", "svg")),
        }
    )
    for name in ("surface.json", "surface.safetensors", "plot_contour.png", "plot_surface.png"):
        assert remote[name] == local[name], name


@pytest.mark.parametrize("repo_type", ["dataset", "model"])
def test_push_without_options_carries_the_png_plots_and_the_viewer(hub, tmp_path, repo_type):
    make_plane().save_pretrained(tmp_path / "local", formats=("png",), viewer=True)
    make_plane().push_to_hub("me/default", token=hub.token, repo_type=repo_type)
    assert pushed(hub, "me/default", repo_type) == local_files(tmp_path / "local")
    assert "viewer.html" in local_files(tmp_path / "local")


def test_save_pretrained_writes_the_viewer_page_in_log_scale_on_request(tmp_path):
    make_plane().save_pretrained(tmp_path / "lin", viewer=True)
    make_plane().save_pretrained(tmp_path / "log", viewer=True, log_scale=True)
    assert sorted(local_files(tmp_path / "lin")) == ["surface.json", "surface.safetensors", "viewer.html"]
    assert (tmp_path / "lin" / "viewer.html").read_bytes() != (tmp_path / "log" / "viewer.html").read_bytes()
    assert (tmp_path / "log" / "viewer.html").read_text("utf-8") == make_plane().to_html(
        tmp_path / "page.html", log_scale=True
    ).read_text("utf-8")


def test_log_scale_changes_the_pushed_plots(hub, tmp_path):
    make_plane().push_to_hub("me/linear", token=hub.token)
    make_plane().push_to_hub("me/log", token=hub.token, log_scale=True)
    assert pushed(hub, "me/linear")["plot_contour.png"] != pushed(hub, "me/log")["plot_contour.png"]


def test_cli_push_carries_the_log_scale_pdf_plots_written_to_out(hub, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", hub.token)
    model = tmp_path / "model"
    build_gpt2(len(train_tokenizer())).save_pretrained(model)
    train_tokenizer().save_pretrained(model)
    (tmp_path / "text.txt").write_text(" ".join(TEXTS))
    out = tmp_path / "out"
    argv = ["plane", model, "--text-file", tmp_path / "text.txt", "--max-length", "16", "--max-examples", "2"]
    argv += ["--steps", "3", "--out", out, "--no-progress", "--log-scale", "--formats", "pdf", "png"]
    assert cli_main([str(a) for a in [*argv, "--push-to-hub", "me/cli-log"]]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert sorted(summary["plots"]) == sorted(
        str(out / f"plot_{k}.{f}") for k in ("contour", "heatmap", "surface") for f in ("pdf", "png")
    )
    local = local_files(out)
    remote = pushed(hub, "me/cli-log")
    assert set(remote) == set(local) and "viewer.html" in remote
    assert remote["viewer.html"] == local["viewer.html"]  # the page of the log-scale surface written to --out
    assert {n for n in remote if n.endswith(".pdf")} == {"plot_contour.pdf", "plot_heatmap.pdf", "plot_surface.pdf"}
    for name in ("plot_contour.png", "plot_heatmap.png", "plot_surface.png"):
        assert remote[name] == local[name], name  # log-scale PNGs, the bytes written to --out
    card = hub.files("me/cli-log", repo_type="dataset")["README.md"].decode()
    assert "![contour](plot_contour.png)" in card and "[contour (pdf)](plot_contour.pdf)" in card


def test_a_pdf_only_push_links_its_plots_in_the_card(hub):
    make_plane().push_to_hub("me/pdf", token=hub.token, formats=("pdf",))
    card = hub.files("me/pdf", repo_type="dataset")["README.md"].decode()
    assert "[contour (pdf)](plot_contour.pdf)" in card and "plot_contour.png" not in card


def test_plot_options_without_formats_are_refused_before_writing(tmp_path):
    with pytest.raises(ConfigError, match="formats="):
        make_plane().save_pretrained(tmp_path / "s", log_scale=True)
    assert not (tmp_path / "s").exists()


# --- comparisons ------------------------------------------------------------------------------------------------


def test_compare_report_pushes_and_loads_by_repo_id(hub, tmp_path):
    report = CompareReport({"flat": make_plane(1.0), "sharp": make_plane(4.0)}, metadata={"seed": 0})
    report.save_pretrained(tmp_path / "local", viewer=True)
    report.push_to_hub("me/compare", token=hub.token, path_in_repo="cola", formats=())
    remote = pushed(hub, "me/compare")
    assert remote == {f"cola/{k}": v for k, v in local_files(tmp_path / "local").items()}
    assert {"cola/viewer.html", "cola/flat/viewer.html", "cola/sharp/viewer.html"} <= set(remote)
    assert b"Loss landscapes compared: flat, sharp" in remote["cola/viewer.html"]
    again = CompareReport.from_pretrained("me/compare", subfolder="cola")
    assert list(again.surfaces) == ["flat", "sharp"] and again.table() == report.table()
    np.testing.assert_array_equal(again.surfaces["sharp"].values, report.surfaces["sharp"].values)
    card = hub.files("me/compare", repo_type="dataset")["README.md"].decode()
    assert "### cola/flat" in card and "### cola/sharp" in card and "CompareReport.from_pretrained" in card


def test_a_comparisons_viewer_of_mixed_kinds_is_refused_before_writing(tmp_path):
    x = np.linspace(-1.0, 1.0, 5)
    line = Surface(x, x**2, metadata={"kind": "line"})
    interp = Surface(x, x**4, metadata={"kind": "interpolation"})
    report = CompareReport({"line": line, "interp": interp})  # both 1-D, but their axes mean different things
    with pytest.raises(ConfigError, match=r"mixes kinds \('line' is a line, 'interp' is an interpolation\)"):
        report.save_pretrained(tmp_path / "both", viewer=True)
    assert not (tmp_path / "both").exists()


def test_compare_report_push_carries_each_surfaces_plots(hub):
    CompareReport({"a": make_plane(1.0), "b": make_plane(2.0)}).push_to_hub("me/plots", token=hub.token)
    assert {"a/plot_contour.png", "b/plot_surface.png", "report.json"} <= set(pushed(hub, "me/plots"))


# --- direction sets ---------------------------------------------------------------------------------------------


def two_directions() -> list[Direction]:
    g = torch.Generator().manual_seed(0)
    return [
        Direction({"a.weight": torch.randn(3, 4, generator=g), "b": torch.randn(2, generator=g)}, {"kind": "custom"}),
        Direction({"a.weight": torch.randn(3, 4, generator=g)}, {"kind": "random", "seed": 3, "axis": 1}),
    ]


def test_direction_set_round_trips_bitwise(tmp_path):
    dirs = two_directions()
    DirectionSet(dirs, {"model": "tiny"}).save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["directions.json", "directions.safetensors"]
    again = DirectionSet.from_pretrained(tmp_path)
    assert len(again) == 2 and again.metadata == {"model": "tiny"}
    for old, new in zip(dirs, again):
        assert new.config == old.config and new.tensors.keys() == old.tensors.keys()
        assert all(torch.equal(new[n], old[n]) for n in old.keys())


def test_low_rank_direction_set_round_trips_bitwise(tmp_path):
    d = LowRankDirection({"w": (torch.ones(3, 1), torch.arange(2.0).reshape(1, 2))}, {"kind": "low_rank", "rank": 1})
    DirectionSet([d]).save_pretrained(tmp_path)
    (again,) = DirectionSet.from_pretrained(tmp_path)
    assert isinstance(again, LowRankDirection) and again.config == d.config
    assert all(torch.equal(x, y) for x, y in zip(again.factors["w"], d.factors["w"]))


def test_a_different_direction_set_is_not_overwritten(tmp_path):
    DirectionSet(two_directions()).save_pretrained(tmp_path)
    DirectionSet(two_directions()).save_pretrained(tmp_path)  # the same set again: allowed
    other = DirectionSet(two_directions()[:1])
    with pytest.raises(DirectionError, match="overwrite=True"):
        other.save_pretrained(tmp_path)
    other.save_pretrained(tmp_path, overwrite=True)
    assert len(DirectionSet.from_pretrained(tmp_path)) == 1


def test_a_corrupted_direction_set_is_refused(tmp_path):
    DirectionSet(two_directions()).save_pretrained(tmp_path)
    data = bytearray((tmp_path / "directions.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "directions.safetensors").write_bytes(bytes(data))
    with pytest.raises(DirectionError, match="corrupted"):
        DirectionSet.from_pretrained(tmp_path)


def test_direction_set_pushes_and_loads_by_repo_id(hub, tmp_path):
    dirs = DirectionSet(two_directions())
    dirs.save_pretrained(tmp_path / "local")
    dirs.push_to_hub("me/dirs", token=hub.token, path_in_repo="plane")
    assert pushed(hub, "me/dirs") == {f"plane/{k}": v for k, v in local_files(tmp_path / "local").items()}
    again = DirectionSet.from_pretrained("me/dirs", subfolder="plane")
    assert torch.equal(again[1]["a.weight"], dirs[1]["a.weight"])
    assert "DirectionSet.from_pretrained" in hub.files("me/dirs", repo_type="dataset")["README.md"].decode()


def test_a_direction_set_is_used_as_the_planes_directions(gpt2_model, tokenizer, texts):
    from hf_landscape import CausalLMObjective, LandscapeProbe

    probe = LandscapeProbe(gpt2_model(), CausalLMObjective(texts[:2], tokenizer, max_length=16), progress=False)
    drawn = probe.directions(seed=4)
    plane = probe.plane(steps=(3, 3), directions=DirectionSet(drawn))
    np.testing.assert_array_equal(plane.values, probe.plane(steps=(3, 3), directions=drawn).values)


# --- one error family for the Hub -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("load", "family"),
    [
        (lambda: Surface.from_pretrained("me/missing"), (HubSurfaceError, SurfaceError)),
        (lambda: CompareReport.from_pretrained("me/missing"), (HubSurfaceError, SurfaceError)),
        (lambda: DirectionSet.from_pretrained("me/missing"), (HubDirectionError, DirectionError)),
    ],
    ids=["surface", "comparison", "direction set"],
)
def test_a_failed_download_is_a_hub_error_and_the_artifacts_own(hub, load, family):
    with pytest.raises(HubError) as info:
        load()
    assert isinstance(info.value, family)


def test_a_model_that_cannot_be_fetched_is_a_hub_error_and_a_model_error(hub):
    from hf_landscape.hub import load_model

    with pytest.raises(HubModelError) as info:
        load_model("me/no-such-model")
    assert isinstance(info.value, HubError) and isinstance(info.value, ModelError)


def test_glue_data_that_cannot_be_loaded_by_name_is_a_hub_error_and_an_objective_error():
    from hf_landscape import GlueObjective, HubObjectiveError, ObjectiveError

    with pytest.raises(HubObjectiveError) as info:  # offline here: the Hub cannot be reached
        GlueObjective("cola")
    assert isinstance(info.value, HubError) and isinstance(info.value, ObjectiveError)


def test_a_refused_push_of_any_artifact_is_a_hub_error(hub):
    for artifact in (make_plane(), CompareReport({"a": make_plane()}), DirectionSet(two_directions())):
        with pytest.raises(HubError, match="token"):
            artifact.push_to_hub("me/refused", token="hf_wrong_token")
