"""Static Spaces whose page is the viewer (`hf_landscape.hub.space.publish_space`, `hf-landscape space`), through the
real `huggingface_hub` client against the local fake Hub (tests/hub_server.py)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from hub_server import running_hub

from hf_landscape import CompareReport, ConfigError, Surface, SurfaceError
from hf_landscape.cli.main import main as cli_main
from hf_landscape.hub.space import check_space_id, publish_space
from hf_landscape.viewer import compare_html, surface_html


def make_plane(seed: int = 0, scale: float = 1.0) -> Surface:
    x = np.linspace(-1.0, 1.0, 3)
    values = scale * np.add.outer(x**2, x**2) + 1.0
    model = {"name_or_path": "org/tiny", "commit_sha": "c" * 40}
    objective = {"type": "CausalLMObjective"}  # the command line builds it, so the card can say how to make it again
    return Surface(
        x, values, y=x.copy(), metadata={"kind": "plane", "seed": seed, "model": model, "objective": objective}
    )


def make_line() -> Surface:
    return Surface(np.array([-1.0, 0.0, 1.0]), np.array([2.0, 1.0, 2.0]), metadata={"kind": "line"})


def space_readme(hub, space_id: str) -> tuple[dict, str]:
    text = hub.files(space_id, repo_type="space")["README.md"].decode()
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


@pytest.fixture
def hub():
    with running_hub() as server:
        yield server


def test_a_space_of_one_surface_serves_its_viewer_page(hub):
    surface = make_plane()
    url = publish_space("me/landscape-space", surface, token=hub.token)
    assert url == f"{hub.endpoint}/spaces/me/landscape-space"
    repo = hub.get_repo("me/landscape-space", "space")
    assert repo.sdk == "static" and len(hub.history("me/landscape-space", repo_type="space")) == 2  # one commit
    files = hub.files("me/landscape-space", repo_type="space")
    assert set(files) == {"index.html", "README.md", ".gitattributes"}
    assert files["index.html"].decode() == surface_html(surface)


def test_the_space_readme_declares_a_static_space_and_links_its_sources(hub):
    publish_space("me/space", make_plane(), token=hub.token, sources=[("me/landscapes", "dataset")])
    meta, body = space_readme(hub, "me/space")
    assert meta["sdk"] == "static" and meta["app_file"] == "index.html"
    assert {"loss-landscape", "hf-landscape"} <= set(meta["tags"])
    assert meta["datasets"] == ["me/landscapes"] and meta["models"] == ["org/tiny"]
    assert meta["title"] == "Loss landscape of org/tiny"
    assert f"[me/landscapes]({hub.endpoint}/datasets/me/landscapes) (dataset repo)" in body
    assert f"model [org/tiny]({hub.endpoint}/org/tiny/tree/{'c' * 40}) at revision `{'c' * 12}`" in body
    assert "hf-landscape plane org/tiny --revision " + "c" * 40 in body


def test_the_space_readme_of_a_surface_the_command_line_cannot_make_says_so(hub):
    surface = make_plane()
    del surface.metadata["objective"]  # an objective built in Python only
    publish_space("me/space", surface, token=hub.token)
    _, body = space_readme(hub, "me/space")
    assert "hf-landscape plane" not in body
    assert "The command line cannot make this surface; its metadata (`surface.json`) holds every setting." in body


def test_several_surfaces_make_the_comparison_page(hub):
    surfaces = {"flat": make_plane(1), "sharp": make_plane(2, scale=4.0)}
    publish_space("me/compare", surfaces, token=hub.token, title="Flat and sharp")
    page = hub.files("me/compare", repo_type="space")["index.html"].decode()
    assert page == compare_html(CompareReport(surfaces), title="Flat and sharp")
    meta, body = space_readme(hub, "me/compare")
    assert meta["title"] == "Flat and sharp" and "flat:" in body and "sharp:" in body


def test_a_long_title_is_shortened_in_the_yaml_only(hub):
    title = "The loss landscape of a small model fine-tuned on CoLA"
    publish_space("me/space", make_plane(), token=hub.token, title=title)
    meta, body = space_readme(hub, "me/space")
    assert meta["title"] == "The loss landscape of a small…" and body.startswith(f"\n# {title}")


def test_publishing_again_replaces_the_page_and_keeps_the_readme(hub):
    hub.add_files("me/space", {"README.md": "---\nsdk: static\ntitle: Mine\n---\n\nMy words.\n"}, repo_type="space")
    publish_space("me/space", make_plane(scale=3.0), token=hub.token)
    files = hub.files("me/space", repo_type="space")
    assert files["README.md"].decode().endswith("My words.\n")
    assert files["index.html"].decode() == surface_html(make_plane(scale=3.0))


def test_a_space_may_share_the_name_of_a_dataset_repo(hub):
    hub.create_repo("me/landscapes", repo_type="dataset")
    publish_space("me/landscapes", make_plane(), token=hub.token)
    assert hub.get_repo("me/landscapes", "space").sdk == "static"


# --- refused, with nothing pushed -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("space_id", "says"),
    [
        ("datasets/me/landscapes", "names a dataset repo, not a Space"),
        ("https://huggingface.co/datasets/me/landscapes", "names a dataset repo, not a Space"),
        ("https://huggingface.co/me/gpt2", "names a model repo, not a Space"),
        ("models/me/gpt2", "names a model repo, not a Space"),
        ("me/a/b/c", "is not a valid Hub repo id"),
        ("me/bad name", "is not a valid Hub repo id"),
        ("", "is not a valid Hub repo id"),
        (None, "is not a valid Hub repo id"),
    ],
)
def test_an_id_that_is_not_a_space_is_refused_before_anything(hub, space_id, says):
    with pytest.raises(ConfigError, match=says):
        publish_space(space_id, make_plane(), token=hub.token)
    assert hub.requests == [] and hub.repos == {}


@pytest.mark.parametrize("space_id", ["me/space", "spaces/me/space", "https://huggingface.co/spaces/me/space"])
def test_a_space_is_named_by_its_id_its_prefix_or_its_url(space_id):
    assert check_space_id(space_id) == "me/space"


def test_an_existing_space_of_another_sdk_is_refused_and_left_alone(hub):
    hub.create_repo("me/app", repo_type="space", sdk="gradio")
    history = hub.history("me/app", repo_type="space")
    with pytest.raises(ConfigError, match="is a Space of the 'gradio' SDK, not a static one"):
        publish_space("me/app", make_plane(), token=hub.token)
    assert hub.history("me/app", repo_type="space") == history


def test_surfaces_of_different_kinds_are_refused_before_anything(hub):
    with pytest.raises(ConfigError, match="mixes kinds"):
        publish_space("me/space", {"plane": make_plane(), "line": make_line()}, token=hub.token)
    assert hub.requests == [] and hub.repos == {}


def test_a_surface_with_no_values_is_refused_before_anything(hub):
    x = np.array([-1.0, 0.0, 1.0])
    with pytest.raises(SurfaceError, match="has no values"):
        publish_space("me/space", Surface(x, np.full(3, np.nan)), token=hub.token)
    assert hub.requests == [] and hub.repos == {}


# --- the command line: local folders and Hub repos --------------------------------------------------------------


def run(argv, capsys):
    code = cli_main([str(a) for a in argv])
    return code, capsys.readouterr()


def test_cli_space_of_a_dataset_repo_shows_its_surfaces(hub, monkeypatch, capsys):
    from hf_landscape.hub import push_surfaces

    monkeypatch.setenv("HF_TOKEN", hub.token)
    surfaces = {"flat": make_plane(1), "sharp": make_plane(2, scale=4.0)}
    push_surfaces(surfaces, "me/landscapes", formats=())
    code, io = run(["space", "me/landscapes-space", "me/landscapes"], capsys)
    assert code == 0 and io.out.strip() == f"{hub.endpoint}/spaces/me/landscapes-space"
    page = hub.files("me/landscapes-space", repo_type="space")["index.html"].decode()
    assert page == compare_html(CompareReport(surfaces))
    meta, _ = space_readme(hub, "me/landscapes-space")
    assert meta["datasets"] == ["me/landscapes"]


def test_cli_space_of_one_folder_of_a_repo(hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", hub.token)
    make_plane(1).push_to_hub("me/landscapes", path_in_repo="runs/flat", formats=())
    make_line().push_to_hub("me/landscapes", path_in_repo="line", formats=())
    code, io = run(["space", "me/space", "me/landscapes/runs/flat"], capsys)
    assert code == 0
    assert hub.files("me/space", repo_type="space")["index.html"].decode() == surface_html(make_plane(1))
    code, io = run(["space", "me/space", "me/landscapes"], capsys)  # a plane and a line: no one page
    assert code == 1 and "mixes kinds" in io.err


def test_cli_space_of_a_model_repo_and_a_local_folder(hub, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", hub.token)
    make_plane(1).push_to_hub("me/gpt2", repo_type="model", formats=())
    make_plane(2, scale=2.0).save_pretrained(tmp_path / "mine")
    code, _ = run(["space", "me/space", "me/gpt2", tmp_path / "mine", "--title", "Two"], capsys)
    assert code == 0
    page = hub.files("me/space", repo_type="space")["index.html"].decode()
    assert page == compare_html(CompareReport({"gpt2": make_plane(1), "mine": make_plane(2, scale=2.0)}), title="Two")
    meta, _ = space_readme(hub, "me/space")
    assert "datasets" not in meta


def test_cli_space_refuses_a_dataset_id_as_the_space_before_reading_anything(hub, tmp_path, capsys):
    code, io = run(["space", "datasets/me/landscapes", tmp_path / "missing"], capsys)
    assert code == 1 and "`SPACE_ID` 'datasets/me/landscapes' names a dataset repo, not a Space" in io.err
    assert hub.requests == []


def test_cli_space_names_a_source_that_is_nothing(hub, tmp_path, capsys):
    code, io = run(["space", "me/space", "me/nothing-here"], capsys)
    assert code == 1 and "the Hub has no dataset or model repo 'me/nothing-here'" in io.err
    code, io = run(["space", "me/space", tmp_path], capsys)
    assert code == 1 and "holds no surface" in io.err
    assert hub.repos == {}
