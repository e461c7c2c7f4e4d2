"""Optional packages (`hf_landscape.dependencies`): a feature whose package is missing raises `DependencyError` naming
the extra that installs it, before any work; the extras of pyproject.toml install what the table promises."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from testing_utils import build_bert_classifier, train_tokenizer
from transformers import BertTokenizerFast

from hf_landscape import DependencyError, LandscapeError, TextClassificationObjective
from hf_landscape.cli.main import main
from hf_landscape.dependencies import EXTRAS, require

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def without_datasets(monkeypatch):
    """`import datasets` fails, as on a machine without the `data` extra."""
    for name in [m for m in sys.modules if m == "datasets" or m.startswith("datasets.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "datasets", None)


def test_a_missing_package_names_its_extra(without_datasets):
    with pytest.raises(DependencyError, match=r"Reading rows needs the `datasets` package.*hf_landscape\[data\]"):
        require("datasets", "Reading rows")


def test_a_dependency_error_is_a_landscape_error_and_an_import_error(without_datasets):
    with pytest.raises(LandscapeError) as info:
        require("datasets.arrow_dataset", "Reading rows")
    assert isinstance(info.value, ImportError)


def test_a_package_of_no_extra_is_named_itself():
    with pytest.raises(DependencyError, match=r"`pip install no_such_package_xyz`"):
        require("no_such_package_xyz.sub", "Something")


def test_an_objective_without_datasets_is_refused_when_made(without_datasets, tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]) + "\n")
    with pytest.raises(DependencyError, match=r"hf_landscape\[data\]"):
        TextClassificationObjective({"text": ["good", "bad"], "label": [1, 0]}, BertTokenizerFast(str(vocab)))


def test_the_cli_refuses_a_dataset_without_datasets_in_one_line(without_datasets, tmp_path, capsys):
    tokenizer = train_tokenizer()
    build_bert_classifier(len(tokenizer)).save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    data = tmp_path / "rows.tsv"
    data.write_text("good\t1\nbad\t0\n")
    code = main(
        [
            "line",
            str(tmp_path / "bert"),
            "--objective",
            "classification",
            "--dataset",
            str(data),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "hf_landscape[data]" in err and "Traceback" not in err


def test_each_optional_package_is_in_its_extra_and_not_in_the_core():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {spec.split(">")[0].split("=")[0] for spec in project["dependencies"]}
    for package, extra in EXTRAS.items():
        assert package not in core
        extra_packages = {spec.split(">")[0].split("=")[0] for spec in project["optional-dependencies"][extra]}
        assert package in extra_packages
        dev = {spec.split(">")[0].split("=")[0] for spec in project["optional-dependencies"]["dev"]}
        assert package in dev
