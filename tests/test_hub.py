"""Publishing and loading through the real `huggingface_hub` client against a local fake Hub (tests/hub_server.py).

A push goes to a dataset repo unless the repo exists as a model repo or `repo_type="model"` says so; the model card's
tests push to model repos, the dataset card's live in tests/test_hub_datasets.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from conftest import TEXTS, build_gpt2, train_tokenizer
from hub_server import running_hub

from hf_landscape import CausalLMObjective, HubError, LandscapeProbe, Surface, SurfaceError
from hf_landscape.cli.main import main as cli_main

SURFACE_FILES = {
    "surface.json",
    "surface.safetensors",
    "plot_contour.png",
    "plot_heatmap.png",
    "plot_surface.png",
    "viewer.html",
}


def make_plane(**meta) -> Surface:
    x = np.array([-1.0, 0.0, 1.0])
    values = np.array([[3.0, 2.0, 3.5], [2.5, 1.0, 2.0], [np.nan, 2.2, np.inf]])
    metadata = {
        "kind": "plane",
        "model": {"name_or_path": "org/tiny", "commit_sha": "a" * 40},
        "grid": {"steps": [3, 3], "span": [[-1.0, 1.0], [-1.0, 1.0]]},
        "directions": [{"kind": "random", "seed": 0, "normalization": "filter"}] * 2,
        "seed": 0,
        "objective": {"type": "CausalLMObjective", "num_tokens": 42, "fingerprint": "f00d"},
        "wall_time_s": 1.5,
    }
    metadata.update(meta)
    return Surface(x, values, y=x.copy(), metrics={"accuracy": values / 10}, metadata=metadata)


def card_metadata(readme: bytes) -> dict:
    text = readme.decode()
    return yaml.safe_load(text.split("---")[1])


@pytest.fixture
def hub():
    with running_hub() as server:
        yield server


def test_push_then_load_by_repo_id_gives_identical_surface(hub):
    surface = make_plane()
    surface.push_to_hub("me/landscape", token=hub.token)
    again = Surface.from_pretrained("me/landscape")
    np.testing.assert_array_equal(again.values, surface.values)
    np.testing.assert_array_equal(again.x, surface.x)
    np.testing.assert_array_equal(again.y, surface.y)
    np.testing.assert_array_equal(again.metrics["accuracy"], surface.metrics["accuracy"])
    assert again.metadata == surface.metadata


def test_push_is_one_commit_with_surface_plots_and_card(hub):
    hub.create_repo("me/landscape")
    before = len(hub.history("me/landscape"))
    make_plane().push_to_hub("me/landscape", token=hub.token)
    assert len(hub.history("me/landscape")) == before + 1
    assert set(hub.files("me/landscape")) == SURFACE_FILES | {"README.md", ".gitattributes"}


def test_load_at_a_pinned_revision(hub):
    make_plane().push_to_hub("me/landscape", token=hub.token)
    first = hub.history("me/landscape", repo_type="dataset")[-1]
    make_plane(seed=7).push_to_hub("me/landscape", token=hub.token)
    assert Surface.from_pretrained("me/landscape", revision=first).metadata["seed"] == 0
    assert Surface.from_pretrained("me/landscape").metadata["seed"] == 7


def test_load_a_private_repo_with_a_token_into_a_chosen_cache(hub, tmp_path):
    make_plane(seed=5).push_to_hub("me/private", token=hub.token, private=True)
    with pytest.raises(SurfaceError):
        Surface.from_pretrained("me/private")  # no token: the repo cannot be read
    cache = tmp_path / "cache"
    loaded = Surface.from_pretrained("me/private", token=hub.token, cache_dir=cache)
    assert loaded.metadata["seed"] == 5
    assert {p.name for p in cache.rglob("surface.*")} == {"surface.json", "surface.safetensors"}


def test_card_has_hub_metadata_and_numbers(hub):
    make_plane().push_to_hub("me/landscape", token=hub.token, repo_type="model")
    readme = hub.files("me/landscape")["README.md"]
    meta = card_metadata(readme)
    assert meta["library_name"] == "hf_landscape"
    assert meta["base_model"] == "org/tiny"
    assert {"loss-landscape", "plane"} <= set(meta["tags"])
    body = readme.decode()
    assert "| centre loss | 1 |" in body
    assert "| accuracy at centre | 0.1 |" in body
    assert "![contour](plot_contour.png)" in body
    assert "hf-landscape plane org/tiny --revision " + "a" * 40 in body


def test_several_surfaces_each_in_its_folder_listed_in_card(hub):
    from hf_landscape.hub_push import push_surfaces

    push_surfaces({"plain": make_plane(seed=1), "sam": make_plane(seed=2)}, "me/compare", token=hub.token)
    files = set(hub.files("me/compare", repo_type="dataset"))
    assert {f"plain/{f}" for f in SURFACE_FILES} | {f"sam/{f}" for f in SURFACE_FILES} <= files
    body = hub.files("me/compare", repo_type="dataset")["README.md"].decode()
    assert "### plain" in body and "### sam" in body
    assert Surface.from_pretrained("me/compare", subfolder="sam").metadata["seed"] == 2


def test_existing_card_is_updated_not_clobbered(hub):
    hub.add_files("me/landscape", {"README.md": "---\nlicense: mit\ntags:\n- mine\n---\n\n# My notes\n\nKeep me.\n"})
    make_plane().push_to_hub("me/landscape", token=hub.token, path_in_repo="a")
    make_plane(seed=3).push_to_hub("me/landscape", token=hub.token, path_in_repo="b")
    make_plane(seed=4).push_to_hub("me/landscape", token=hub.token, path_in_repo="a")
    readme = hub.files("me/landscape")["README.md"]
    body = readme.decode()
    meta = card_metadata(readme)
    assert "Keep me." in body
    assert meta["license"] == "mit"
    assert {"mine", "loss-landscape"} <= set(meta["tags"])
    assert body.count("<!-- surface:a -->") == 1 and body.count("<!-- surface:b -->") == 1
    assert "| seed | 4 |" in body and "| seed | 3 |" in body and "| seed | 0 |" not in body


def test_token_never_in_metadata_card_logs_or_errors(hub, caplog):
    caplog.set_level("DEBUG")
    make_plane().push_to_hub("me/landscape", token=hub.token)
    files = hub.files("me/landscape", repo_type="dataset")
    assert all(hub.token.encode() not in content for content in files.values())
    hub.assert_secret_not_logged(hub.token)
    hub.fail_next(r"/commit/", 500)
    with pytest.raises(HubError) as err:
        make_plane(seed=9).push_to_hub("me/landscape", token=hub.token)
    assert hub.token not in str(err.value)
    assert hub.token not in caplog.text


def test_refused_push_401_leaves_no_commit_and_local_files(hub, tmp_path):
    surface = make_plane()
    surface.save_pretrained(tmp_path / "local")
    before = {p.name: p.read_bytes() for p in (tmp_path / "local").iterdir()}
    hub.create_repo("me/landscape")
    history = hub.history("me/landscape")
    with pytest.raises(HubError, match="token"):
        surface.push_to_hub("me/landscape", token="hf_wrong_token")
    assert hub.history("me/landscape") == history
    assert {p.name: p.read_bytes() for p in (tmp_path / "local").iterdir()} == before


def test_push_failing_mid_commit_500_leaves_no_commit(hub):
    hub.create_repo("me/landscape")
    history = hub.history("me/landscape")
    hub.fail_next(r"/api/models/me/landscape/commit/", 500)
    with pytest.raises(HubError, match="nothing was committed"):
        make_plane().push_to_hub("me/landscape", token=hub.token)
    assert hub.history("me/landscape") == history
    assert set(hub.files("me/landscape")) == {".gitattributes"}


def test_loading_a_repo_that_does_not_exist_is_a_surface_error(hub):
    with pytest.raises(SurfaceError, match="neither a local folder nor a Hub repo"):
        Surface.from_pretrained("me/does-not-exist")


def test_loading_a_corrupted_surface_from_the_hub_is_refused(hub, tmp_path):
    make_plane().save_pretrained(tmp_path / "s")
    arrays = bytearray((tmp_path / "s" / "surface.safetensors").read_bytes())
    arrays[-1] ^= 0xFF
    hub.add_files(
        "me/broken",
        {"surface.json": (tmp_path / "s" / "surface.json").read_bytes(), "surface.safetensors": bytes(arrays)},
    )
    with pytest.raises(SurfaceError, match="corrupted"):
        Surface.from_pretrained("me/broken")


def seed_tiny_model(hub, repo_id: str, tmp_path) -> str:
    model = build_gpt2(len(train_tokenizer()))
    model.save_pretrained(tmp_path / "model")
    train_tokenizer().save_pretrained(tmp_path / "model")
    files = {p.name: p.read_bytes() for p in (tmp_path / "model").iterdir() if p.is_file()}
    return hub.add_files(repo_id, files)


def test_probe_from_pretrained_by_name_records_commit_sha(hub, tmp_path):
    sha = seed_tiny_model(hub, "org/tiny-gpt2", tmp_path)
    objective = CausalLMObjective({"input_ids": [[1, 2, 3, 4, 5, 6]]})
    probe = LandscapeProbe.from_pretrained("org/tiny-gpt2", revision="main", objective=objective, progress=False)
    line = probe.line(steps=3)
    assert line.metadata["model"]["commit_sha"] == sha
    assert line.metadata["model"]["name_or_path"] == "org/tiny-gpt2"
    reference = build_gpt2(len(train_tokenizer()))
    for name, param in reference.named_parameters():
        assert torch.equal(param, dict(probe.model.named_parameters())[name])


def test_cli_plane_by_name_pushes_to_hub(hub, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", hub.token)
    sha = seed_tiny_model(hub, "org/tiny-gpt2", tmp_path)
    (tmp_path / "text.txt").write_text(" ".join(TEXTS))
    argv = ["plane", "org/tiny-gpt2", "--text-file", str(tmp_path / "text.txt"), "--max-length", "16"]
    argv += ["--max-examples", "2", "--steps", "3", "--out", str(tmp_path / "out"), "--no-progress"]
    argv += ["--push-to-hub", "me/cli-landscape", "--repo-type", "model"]
    assert cli_main(argv) == 0
    assert json.loads(capsys.readouterr().out)["pushed"].startswith(hub.endpoint)
    pushed = Surface.from_pretrained("me/cli-landscape")
    assert pushed.metadata["model"]["commit_sha"] == sha
    assert card_metadata(hub.files("me/cli-landscape")["README.md"])["base_model"] == "org/tiny-gpt2"


def test_cli_push_folder_of_surfaces(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", hub.token)
    make_plane(seed=1).save_pretrained(tmp_path / "out" / "plain")
    make_plane(seed=2).save_pretrained(tmp_path / "out" / "sam")
    assert cli_main(["push", str(tmp_path / "out"), "me/pushed"]) == 0
    assert Surface.from_pretrained("me/pushed", subfolder="plain").metadata["seed"] == 1
    assert Surface.from_pretrained("me/pushed", subfolder="sam").metadata["seed"] == 2
