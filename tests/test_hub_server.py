"""The fake Hub server of `hub_server.py` against the real `huggingface_hub` client."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from hub_server import DEFAULT_TOKEN, running_hub

REPO = "test-user/tiny-model"


@pytest.fixture
def hub():
    with running_hub() as server:
        yield server


@pytest.fixture
def local_folder(tmp_path: Path) -> Path:
    from safetensors.torch import save_file

    folder = tmp_path / "upload"
    (folder / "weights").mkdir(parents=True)
    (folder / "notes.txt").write_text("a small text file\n")
    (folder / "config.json").write_text(json.dumps({"hidden_size": 4, "layers": 2}))
    save_file({"w": torch.arange(12, dtype=torch.float32).reshape(3, 4)}, folder / "weights" / "model.safetensors")
    return folder


def _push(folder: Path, message: str = "upload"):
    from huggingface_hub import HfApi

    api = HfApi(token=DEFAULT_TOKEN)
    api.create_repo(REPO, repo_type="model", private=False, exist_ok=True)
    return api.upload_folder(repo_id=REPO, folder_path=folder, commit_message=message)


def test_environment_is_patched_and_restored():
    import huggingface_hub.constants as C

    before = (C.ENDPOINT, C.HF_HUB_OFFLINE, C.HF_HUB_CACHE, os.environ.get("HF_ENDPOINT"))
    with running_hub() as server:
        assert C.ENDPOINT == server.endpoint == os.environ["HF_ENDPOINT"]
        assert server.endpoint.startswith("http://127.0.0.1:")
        assert C.HF_HUB_OFFLINE is False and C.HF_HUB_DISABLE_XET is True
        assert C.HF_HUB_CACHE.startswith(server.home) and os.path.isdir(server.home)
        assert C.HUGGINGFACE_CO_URL_TEMPLATE.startswith(server.endpoint + "/")
    assert (C.ENDPOINT, C.HF_HUB_OFFLINE, C.HF_HUB_CACHE, os.environ.get("HF_ENDPOINT")) == before
    assert not os.path.exists(server.home)


def test_upload_and_download_roundtrip(hub, local_folder: Path):
    from huggingface_hub import HfApi, hf_hub_download

    info = _push(local_folder)
    sha = info.oid
    repo = hub.get_repo(REPO)
    assert len(sha) == 40 and repo.branches["main"] == sha
    # the Hub way: text goes inline, the .safetensors through LFS (batch, upload, verify)
    assert repo.head.lfs_paths == {"weights/model.safetensors"}
    assert hub.requests_matching(r"\.git/info/lfs/objects/batch$", "POST")
    assert hub.requests_matching(r"^/_fake_lfs/upload/", "PUT")
    assert hub.requests_matching(r"/info/lfs/objects/verify$", "POST")
    # writes were authenticated; the token never shows up in a URL
    assert all(r.has_auth for r in hub.requests_matching(r"/(preupload|commit)/main$"))
    hub.assert_secret_not_logged(DEFAULT_TOKEN)

    expected = {
        ("notes.txt", None): (local_folder / "notes.txt").read_bytes(),
        ("config.json", None): (local_folder / "config.json").read_bytes(),
        ("model.safetensors", "weights"): (local_folder / "weights" / "model.safetensors").read_bytes(),
    }
    for revision in ("main", sha):
        for (filename, subfolder), data in expected.items():
            path = hf_hub_download(REPO, filename, subfolder=subfolder, revision=revision)
            assert Path(path).read_bytes() == data, (filename, revision)

    from safetensors.torch import load_file

    weights = load_file(hf_hub_download(REPO, "model.safetensors", subfolder="weights", revision=sha))
    assert torch.equal(weights["w"], torch.arange(12, dtype=torch.float32).reshape(3, 4))

    api = HfApi()
    assert api.model_info(REPO).sha == sha
    assert set(api.list_repo_files(REPO)) == {".gitattributes", "notes.txt", "config.json", "weights/model.safetensors"}
    assert api.file_exists(REPO, "weights/model.safetensors") and not api.file_exists(REPO, "missing.bin")


def test_revisions_and_snapshot_download(hub, local_folder: Path, tmp_path: Path):
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    first = _push(local_folder).oid
    (local_folder / "notes.txt").write_text("changed\n")
    second = (
        HfApi(token=DEFAULT_TOKEN)
        .upload_file(path_or_fileobj=local_folder / "notes.txt", path_in_repo="notes.txt", repo_id=REPO)
        .oid
    )
    assert first != second and hub.history(REPO)[-2:] == [first, second]
    assert Path(hf_hub_download(REPO, "notes.txt", revision=first)).read_text() == "a small text file\n"
    assert Path(hf_hub_download(REPO, "notes.txt")).read_text() == "changed\n"

    hub.tree_page_size = 2  # make the client follow the Link header
    hub.clear_requests()
    cache = tmp_path / "fresh-cache"
    folder = Path(snapshot_download(REPO, revision=first, allow_patterns=["*.json", "weights/*"], cache_dir=cache))
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == ["config.json", "weights/model.safetensors"]
    assert len(hub.requests_matching(r"/tree/" + first)) >= 2
    assert not hub.requests_matching(r"/resolve/.*notes\.txt")
    main_folder = Path(snapshot_download(REPO, allow_patterns=["*.txt"], cache_dir=cache))
    assert main_folder.name == second and (main_folder / "notes.txt").read_text() == "changed\n"
    assert (folder / "weights" / "model.safetensors").read_bytes() == (
        local_folder / "weights" / "model.safetensors"
    ).read_bytes()


def test_seeded_repo_and_model_card(hub):
    from huggingface_hub import ModelCard, hf_hub_download

    sha = hub.add_files(
        "org/seeded", {"README.md": "---\nlicense: mit\n---\n# Seeded\n", "image.png": b"\x89PNG\r\n\x1a\n\0\0"}
    )
    assert hub.get_repo("org/seeded").commit(sha).lfs_paths == {"image.png"}
    card = ModelCard.load("org/seeded")
    assert card.data.license == "mit" and "# Seeded" in card.text
    assert Path(hf_hub_download("org/seeded", "image.png")).read_bytes() == b"\x89PNG\r\n\x1a\n\0\0"
    assert not any(r.has_auth for r in hub.requests)  # public reads need no token


def test_png_goes_through_lfs_on_push(hub, tmp_path: Path):
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=DEFAULT_TOKEN)
    api.create_repo(REPO, exist_ok=True)
    png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256))
    api.create_commit(REPO, operations=[CommitOperationAdd("plots/plane.png", png)], commit_message="plot")
    assert "plots/plane.png" in hub.get_repo(REPO).head.lfs_paths
    assert hub.files(REPO)["plots/plane.png"] == png


def test_wrong_or_missing_token_is_rejected(hub, local_folder: Path):
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    _push(local_folder)
    history = hub.history(REPO)
    for token in ("hf_wrong_token", False):
        with pytest.raises(HfHubHTTPError) as err:
            HfApi(token=token).create_commit(
                REPO, operations=[CommitOperationAdd("x.txt", b"x")], commit_message="nope"
            )
        assert err.value.response.status_code == 401
    assert hub.history(REPO) == history
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="hf_wrong_token").create_repo("test-user/other", exist_ok=True)
    assert err.value.response.status_code == 401
    assert "test-user/other" not in hub.repos


def test_failed_commit_leaves_history_unchanged(hub, local_folder: Path):
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    _push(local_folder)
    repo = hub.get_repo(REPO)
    history, commits, files = hub.history(REPO), len(repo.commits), dict(repo.files)
    hub.fail_next(r"/commit/main$", 500)
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token=DEFAULT_TOKEN).create_commit(
            REPO,
            operations=[CommitOperationAdd("new.bin", os.urandom(64)), CommitOperationAdd("new.txt", b"hello")],
            commit_message="will fail",
        )
    assert err.value.response.status_code == 500
    assert hub.history(REPO) == history and len(repo.commits) == commits and repo.files == files
    assert hub.requests[-1].status == 500 and hub.requests[-1].method == "POST"


def test_not_found_errors(hub, local_folder: Path):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    _push(local_folder)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("test-user/does-not-exist", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("test-user/does-not-exist")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        HfApi().model_info(REPO, revision="f" * 40)


def test_private_repo_needs_token(hub):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import RepositoryNotFoundError

    HfApi(token=DEFAULT_TOKEN).create_repo("test-user/secret", private=True)
    hub.add_files("test-user/secret", {"config.json": "{}"})
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("test-user/secret", "config.json")
    assert Path(hf_hub_download("test-user/secret", "config.json", token=DEFAULT_TOKEN)).read_text() == "{}"


def test_a_space_is_created_with_its_sdk_which_its_readme_can_change(hub):
    from huggingface_hub import HfApi

    api = HfApi(token=DEFAULT_TOKEN)
    api.create_repo("test-user/app", repo_type="space", space_sdk="gradio")
    assert api.space_info("test-user/app").sdk == "gradio"
    readme = b"---\ntitle: App\nsdk: static\n---\n"
    api.upload_file(path_or_fileobj=readme, path_in_repo="README.md", repo_id="test-user/app", repo_type="space")
    assert api.space_info("test-user/app").sdk == "static"


def test_a_space_without_an_sdk_is_refused_as_the_hub_does(hub):
    import requests

    response = requests.post(
        f"{hub.endpoint}/api/repos/create",
        json={"name": "no-sdk", "type": "space"},
        headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"},
        timeout=10,
    )
    assert response.status_code == 400 and "sdk" in response.json()["error"]
    assert hub.repos == {}


def test_datasets_load_dataset_reads_a_config_of_a_dataset_repo(hub, tmp_path, monkeypatch):
    import io

    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table({"alpha": [0.0, 1.0], "loss": [2.0, 3.0]}), buffer)
    card = "---\nconfigs:\n- config_name: line\n  data_files:\n  - split: train\n    path: data/line.parquet\n---\n"
    hub.add_files("test-user/tables", {"README.md": card, "data/line.parquet": buffer.getvalue()}, repo_type="dataset")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(datasets.config, "HF_MODULES_CACHE", tmp_path / "modules")
    table = datasets.load_dataset("test-user/tables", "line", split="train", cache_dir=str(tmp_path / "datasets"))
    assert table.to_dict() == {"alpha": [0.0, 1.0], "loss": [2.0, 3.0]}
    # what it asked: the card, the repo at its commit, the tree of data/, the table
    assert hub.requests_matching(r"^/datasets/test-user/tables/resolve/main/README\.md$", "GET")
    assert hub.requests_matching(r"^/api/datasets/test-user/tables/tree/[0-9a-f]{40}/data", "GET")
    assert hub.requests_matching(r"^/datasets/test-user/tables/resolve/[0-9a-f]{40}/data/line\.parquet$", "GET")
