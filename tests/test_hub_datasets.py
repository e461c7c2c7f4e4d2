"""Landscapes as Hub datasets: a push to a dataset repo (the default for a new repo) holds each surface's files, one
Parquet table per surface under data/ and a dataset card whose `configs:` point the Dataset Viewer and
`datasets.load_dataset` at them; all through the real `huggingface_hub` client (and `datasets`) against the local fake
Hub (tests/hub_server.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import TEXTS, build_gpt2, train_tokenizer
from hub_server import running_hub

from hf_landscape import CompareReport, ConfigError, Surface, SurfaceError
from hf_landscape.cli.main import main as cli_main
from hf_landscape.export import surface_columns

SURFACE_FILES = {"surface.json", "surface.safetensors", "plot_contour.png", "plot_heatmap.png", "plot_surface.png"}
SURFACE_FILES |= {"viewer.html"}


def make_plane(seed: int = 0, scale: float = 1.0, **meta) -> Surface:
    x = np.array([-1.0, 0.0, 1.0])
    y = np.array([-0.5, 0.0, 0.5, 1.0])
    values = scale * np.add.outer(y**2, x**2) + 1.0
    values[0, 0] = np.nan  # a diverged point stays NaN in the table
    model = {"name_or_path": "org/tiny", "commit_sha": "b" * 40}
    metadata = {"kind": "plane", "seed": seed, "model": model, "objective": {"type": "CausalLMObjective"}, **meta}
    return Surface(x, values, y=y, metrics={"accuracy": values / 10}, metadata=metadata)


def card_of(hub, repo_id: str, repo_type: str = "dataset") -> tuple[dict, str]:
    """(YAML metadata, body) of the repo's README."""
    text = hub.files(repo_id, repo_type=repo_type)["README.md"].decode()
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


@pytest.fixture
def hub():
    with running_hub() as server:
        yield server


@pytest.fixture
def load_table(hub, tmp_path, monkeypatch):
    """`load_table(repo_id, name)`: `datasets.load_dataset(repo_id, name, split="train")` over the fake Hub, online
    for this test only (HF_HUB_OFFLINE unset, HF_ENDPOINT the fake server), with every `datasets` cache in tmp_path."""
    import datasets

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(datasets.config, "HF_MODULES_CACHE", tmp_path / "modules")
    assert datasets.config.HF_ENDPOINT == hub.endpoint

    def load(repo_id: str, name: str | None = None):
        return datasets.load_dataset(repo_id, name, split="train", cache_dir=str(tmp_path / "datasets"))

    return load


def assert_table_is_the_surface(table, surface: Surface) -> None:
    """Same columns in the same order, one row per grid point, the same values (NaN where the surface has NaN)."""
    columns = surface_columns(surface)
    assert table.column_names == list(columns)
    assert table.num_rows == surface.values.size
    for name, column in columns.items():
        np.testing.assert_array_equal(np.asarray(table[name], dtype=float), column)


# --- what a push to a dataset repo holds ------------------------------------------------------------------------


def test_a_new_repo_is_a_dataset_repo_holding_one_commit_of_files_tables_and_card(hub):
    make_plane().push_to_hub("me/landscapes", token=hub.token, path_in_repo="plane")
    assert ("datasets/me/landscapes" in hub.repos) and ("me/landscapes" not in hub.repos)
    assert len(hub.history("me/landscapes", repo_type="dataset")) == 2  # the repo's initial commit, then the push
    files = set(hub.files("me/landscapes", repo_type="dataset"))
    assert files == {f"plane/{f}" for f in SURFACE_FILES} | {"data/plane.parquet", "README.md", ".gitattributes"}


def test_the_cards_configs_point_at_one_table_per_surface(hub):
    from hf_landscape.hub import push_surfaces

    push_surfaces({"plain": make_plane(1), "sam": make_plane(2)}, "me/landscapes", token=hub.token)
    meta, _ = card_of(hub, "me/landscapes")
    assert meta["configs"] == [
        {"config_name": "plain", "data_files": [{"split": "train", "path": "data/plain.parquet"}]},
        {"config_name": "sam", "data_files": [{"split": "train", "path": "data/sam.parquet"}]},
    ]
    assert {"loss-landscape", "hf-landscape", "plane"} <= set(meta["tags"])
    assert meta["pretty_name"] == "Loss landscape of org/tiny"


def test_the_card_links_models_tables_viewers_plots_and_the_reproduce_command(hub):
    make_plane().push_to_hub("me/landscapes", token=hub.token, path_in_repo="plane")
    _, body = card_of(hub, "me/landscapes")
    model = f"[org/tiny @ `{'b' * 12}`]({hub.endpoint}/org/tiny/tree/{'b' * 40})"
    row = f"| `plane` | plane: plane, 3 × 4 | {model} | [data/plane.parquet](data/plane.parquet) | "
    assert row + "[viewer.html](plane/viewer.html) |" in body
    assert "![contour](plane/plot_contour.png)" in body
    assert "hf-landscape plane org/tiny --revision " + "b" * 40 in body
    assert 'load_dataset("me/landscapes", "plane", split="train")' in body
    assert 'Surface.from_pretrained("me/landscapes", repo_type="dataset", subfolder="plane")' in body


def test_the_table_of_a_pushed_surface_is_its_long_table(hub):
    import io

    import pyarrow.parquet as pq

    surface = make_plane()
    surface.push_to_hub("me/landscapes", token=hub.token)
    table = pq.read_table(io.BytesIO(hub.files("me/landscapes", repo_type="dataset")["data/default.parquet"]))
    assert table.column_names == ["alpha", "beta", "loss", "accuracy"] and table.num_rows == 12
    assert_table_is_the_surface(table, surface)
    assert json.loads(table.schema.metadata[b"hf_landscape"])["metadata"] == surface.metadata


# --- loading back -----------------------------------------------------------------------------------------------


def test_load_dataset_reads_each_subset_with_its_rows_and_columns(hub, load_table):
    flat, sharp = make_plane(1, scale=1.0), make_plane(2, scale=4.0)
    flat.push_to_hub("me/landscapes", token=hub.token, path_in_repo="flat")
    sharp.push_to_hub("me/landscapes", token=hub.token, path_in_repo="sharp")
    assert_table_is_the_surface(load_table("me/landscapes", "flat"), flat)
    assert_table_is_the_surface(load_table("me/landscapes", "sharp"), sharp)


def test_load_dataset_without_a_name_reads_the_surface_at_the_root(hub, load_table):
    surface = make_plane()
    surface.push_to_hub("me/landscapes", token=hub.token)
    assert_table_is_the_surface(load_table("me/landscapes"), surface)


def test_load_dataset_reads_a_surface_over_seeds_with_its_spread_and_each_seed(hub, load_table):
    samples = np.stack([make_plane().values, make_plane(scale=2.0).values])
    surface = Surface(
        make_plane().x,
        samples.mean(axis=0),
        y=make_plane().y,
        spread=samples.std(axis=0, ddof=1),
        samples=samples,
        metadata={"kind": "plane", "seeds": [3, 8]},
    )
    surface.push_to_hub("me/seeds", token=hub.token, path_in_repo="plane")
    table = load_table("me/seeds", "plane")
    assert table.column_names == ["alpha", "beta", "loss", "loss_spread", "loss_seed_3", "loss_seed_8"]
    assert_table_is_the_surface(table, surface)


def test_from_pretrained_reads_a_dataset_repo_with_or_without_its_type(hub):
    surface = make_plane(seed=4)
    surface.push_to_hub("me/landscapes", token=hub.token, path_in_repo="plane")
    for again in (
        Surface.from_pretrained("me/landscapes", repo_type="dataset", subfolder="plane"),
        Surface.from_pretrained("me/landscapes", subfolder="plane"),
    ):
        np.testing.assert_array_equal(again.values, surface.values)
        assert again.metadata == surface.metadata
    with pytest.raises(SurfaceError, match="neither a local folder nor a Hub repo"):
        Surface.from_pretrained("me/landscapes", repo_type="model", subfolder="plane")


def test_a_comparison_is_one_subset_per_model_and_loads_back(hub, load_table):
    report = CompareReport({"flat": make_plane(1), "sharp": make_plane(2, scale=4.0)})
    report.push_to_hub("me/cola", token=hub.token, path_in_repo="cola")
    meta, _ = card_of(hub, "me/cola")
    assert [c["config_name"] for c in meta["configs"]] == ["cola--flat", "cola--sharp"]
    assert_table_is_the_surface(load_table("me/cola", "cola--sharp"), report.surfaces["sharp"])
    again = CompareReport.from_pretrained("me/cola", subfolder="cola", repo_type="dataset")
    assert again.table() == report.table()


# --- which repo a push goes to ----------------------------------------------------------------------------------


def test_an_existing_model_repo_keeps_its_type_and_card(hub):
    hub.create_repo("me/gpt2-landscape")
    make_plane().push_to_hub("me/gpt2-landscape", token=hub.token)
    assert "datasets/me/gpt2-landscape" not in hub.repos
    files = set(hub.files("me/gpt2-landscape"))
    assert files == SURFACE_FILES | {"README.md", ".gitattributes"}  # no tables in a model repo
    meta, _ = card_of(hub, "me/gpt2-landscape", "model")
    assert meta["library_name"] == "hf_landscape" and "configs" not in meta


def test_an_existing_dataset_repo_is_chosen_before_a_model_repo_of_the_same_id(hub):
    hub.create_repo("me/both")
    hub.create_repo("me/both", repo_type="dataset")
    make_plane().push_to_hub("me/both", token=hub.token)
    assert set(hub.files("me/both")) == {".gitattributes"}
    assert "data/default.parquet" in hub.files("me/both", repo_type="dataset")


def test_repo_type_model_creates_a_model_repo(hub):
    make_plane().push_to_hub("me/model-side", token=hub.token, repo_type="model")
    assert "me/model-side" in hub.repos and "datasets/me/model-side" not in hub.repos


def test_repo_type_dataset_creates_a_dataset_repo_beside_a_model_repo_of_the_same_id(hub):
    hub.create_repo("me/gpt2")
    make_plane().push_to_hub("me/gpt2", token=hub.token, repo_type="dataset")
    assert "data/default.parquet" in hub.files("me/gpt2", repo_type="dataset")
    assert set(hub.files("me/gpt2")) == {".gitattributes"}


# --- pushing again, into a card already there -------------------------------------------------------------------


def test_pushing_again_replaces_its_subset_and_keeps_the_others(hub, load_table):
    make_plane(1).push_to_hub("me/landscapes", token=hub.token, path_in_repo="a")
    make_plane(2).push_to_hub("me/landscapes", token=hub.token, path_in_repo="b")
    newer = make_plane(3, scale=3.0)
    newer.push_to_hub("me/landscapes", token=hub.token, path_in_repo="a")
    meta, body = card_of(hub, "me/landscapes")
    assert [c["config_name"] for c in meta["configs"]] == ["a", "b"]
    assert body.count("| `a` |") == 1 and body.count("| `b` |") == 1
    assert body.count("<!-- surface:a -->") == 1 and "| seed | 3 |" in body and "| seed | 1 |" not in body
    assert_table_is_the_surface(load_table("me/landscapes", "a"), newer)


def test_a_users_own_dataset_card_is_kept_and_gets_the_landscapes(hub):
    card = "---\nlicense: mit\ntags:\n- mine\nconfigs:\n- config_name: raw\n  data_files: raw/*.csv\n---\n\n# Notes\n\nKeep me.\n"
    hub.add_files("me/mixed", {"README.md": card, "raw/a.csv": "x\n1\n"}, repo_type="dataset")
    make_plane().push_to_hub("me/mixed", token=hub.token, path_in_repo="plane")
    meta, body = card_of(hub, "me/mixed")
    assert meta["license"] == "mit" and {"mine", "loss-landscape"} <= set(meta["tags"])
    assert meta["configs"][0] == {"config_name": "raw", "data_files": "raw/*.csv"}
    assert [c["config_name"] for c in meta["configs"]] == ["raw", "plane"]
    assert body.index("Keep me.") < body.index("<!-- hf_landscape:subsets -->") < body.index("<!-- surface:plane -->")


def test_a_subset_of_the_same_name_reading_other_files_refuses_the_push(hub):
    card = "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n---\n"
    hub.add_files("me/theirs", {"README.md": card}, repo_type="dataset")
    history = hub.history("me/theirs", repo_type="dataset")
    with pytest.raises(ConfigError, match="already has a subset 'default' that reads"):
        make_plane().push_to_hub("me/theirs", token=hub.token)  # the repo root is the subset `default`
    assert hub.history("me/theirs", repo_type="dataset") == history
    make_plane().push_to_hub("me/theirs", token=hub.token, path_in_repo="plane")  # another folder is fine
    assert "data/plane.parquet" in hub.files("me/theirs", repo_type="dataset")


# --- refused before anything is sent ----------------------------------------------------------------------------


@pytest.mark.parametrize("repo_type", ["space", "datasets", "Dataset", 3])
def test_a_repo_type_that_is_not_dataset_or_model_is_refused_before_anything(hub, repo_type):
    with pytest.raises(ConfigError, match=r"`repo_type` must be 'dataset' or 'model'") as info:
        make_plane().push_to_hub("me/landscapes", token=hub.token, repo_type=repo_type)
    assert repr(repo_type) in str(info.value)
    with pytest.raises(ConfigError, match=r"`repo_type` must be"):
        Surface.from_pretrained("me/landscapes", repo_type=repo_type)
    assert hub.requests == [] and hub.repos == {}


def test_a_space_repo_type_points_at_publish_space(hub):
    with pytest.raises(ConfigError, match="publish_space"):
        make_plane().push_to_hub("me/landscapes", token=hub.token, repo_type="space")


def test_two_folders_of_one_subset_name_are_refused_before_anything(hub):
    from hf_landscape.hub import push_surfaces

    with pytest.raises(ConfigError, match="'a/b' and 'a--b' would both be the dataset subset 'a--b'"):
        push_surfaces({"a/b": make_plane(1), "a--b": make_plane(2)}, "me/landscapes", token=hub.token)
    assert hub.requests == [] and hub.repos == {}


@pytest.mark.parametrize("repo_type", ["dataset", "model"])
def test_a_surface_with_no_values_is_not_pushed(hub, repo_type):
    x = np.array([-1.0, 0.0, 1.0])
    empty = Surface(x, np.full((3, 3), np.nan), y=x)
    with pytest.raises(SurfaceError, match="has no values"):
        empty.push_to_hub("me/landscapes", token=hub.token, repo_type=repo_type)
    assert hub.requests == [] and hub.repos == {}


@pytest.mark.parametrize("repo_id", [None, "", "me/a/b", "me/bad name"])
def test_a_repo_id_that_is_not_one_is_refused_before_anything(hub, repo_id):
    with pytest.raises(ConfigError, match="is not a valid Hub repo id"):
        make_plane().push_to_hub(repo_id, token=hub.token)
    assert hub.requests == [] and hub.repos == {}


def test_the_cli_refuses_another_repo_type(tmp_path, capsys):
    make_plane().save_pretrained(tmp_path / "plane")
    with pytest.raises(SystemExit):
        cli_main(["push", str(tmp_path / "plane"), "me/landscapes", "--repo-type", "space"])
    assert "invalid choice: 'space'" in capsys.readouterr().err


# --- the command line, end to end -------------------------------------------------------------------------------


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "model"
    build_gpt2(len(train_tokenizer())).save_pretrained(folder)
    train_tokenizer().save_pretrained(folder)
    return folder


def test_cli_plane_push_to_hub_makes_a_dataset_that_load_dataset_reads(hub, model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", hub.token)
    (tmp_path / "text.txt").write_text(" ".join(TEXTS))
    out = tmp_path / "out"
    argv = ["plane", model_dir, "--text-file", tmp_path / "text.txt", "--max-length", 16, "--max-examples", 2]
    argv += ["--steps", 3, 3, "--out", out, "--no-progress", "--push-to-hub", "me/landscapes", "--path-in-repo", "gpt2"]
    assert cli_main([str(a) for a in argv]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pushed"].startswith(f"{hub.endpoint}/datasets/me/landscapes/commit/")
    local = Surface.from_pretrained(out)
    files = hub.files("me/landscapes", repo_type="dataset")
    assert files["gpt2/viewer.html"] == (out / "viewer.html").read_bytes()
    meta, _ = card_of(hub, "me/landscapes")
    assert meta["configs"] == [{"config_name": "gpt2", "data_files": [{"split": "train", "path": "data/gpt2.parquet"}]}]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import datasets

    monkeypatch.setattr(datasets.config, "HF_MODULES_CACHE", tmp_path / "modules")
    table = datasets.load_dataset("me/landscapes", "gpt2", split="train", cache_dir=str(tmp_path / "ds"))
    assert_table_is_the_surface(table, local)


def test_cli_push_with_repo_type_model(hub, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", hub.token)
    make_plane().save_pretrained(tmp_path / "out" / "plane")
    assert cli_main(["push", str(tmp_path / "out"), "me/gpt2", "--repo-type", "model"]) == 0
    assert capsys.readouterr().out.startswith(f"{hub.endpoint}/me/gpt2/commit/")
    assert "plane/viewer.html" in hub.files("me/gpt2") and "datasets/me/gpt2" not in hub.repos


def test_cli_view_of_a_dataset_repo_is_the_page_of_its_surfaces(hub, tmp_path, monkeypatch, capsys):
    from hf_landscape.hub import push_surfaces
    from hf_landscape.viewer import compare_html, surface_html

    monkeypatch.setenv("HF_TOKEN", hub.token)
    surfaces = {"flat": make_plane(1), "sharp": make_plane(2, scale=4.0)}
    push_surfaces(surfaces, "me/landscapes", formats=())
    assert cli_main(["view", "me/landscapes", "--html", str(tmp_path / "both.html")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "both.html")
    assert (tmp_path / "both.html").read_text(encoding="utf-8") == compare_html(CompareReport(surfaces))
    assert cli_main(["view", "me/landscapes/sharp", "--html", str(tmp_path / "sharp.html")]) == 0
    assert (tmp_path / "sharp.html").read_text(encoding="utf-8") == surface_html(surfaces["sharp"])
