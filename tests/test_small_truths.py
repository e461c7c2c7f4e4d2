"""Smaller things a user sees: the other method's spelling of `direction(s)`, a rise radius beyond the grid, file
modes, `hf-landscape env`, and the default span of LoRA directions."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from conftest import build_gpt2, train_tokenizer

from hf_landscape import CausalLMObjective, CompareReport, ConfigError, LandscapeProbe, Surface
from hf_landscape.cli.main import main
from hf_landscape.directions.registry import default_span


@pytest.fixture(scope="module")
def probe():
    tokenizer = train_tokenizer()
    objective = CausalLMObjective({"input_ids": [[1, 2, 3, 4, 5, 6]]})
    return LandscapeProbe(build_gpt2(len(tokenizer)), objective, progress=False)


@pytest.mark.parametrize(
    ("method", "wrong", "right"), [("line", "directions", "direction"), ("plane", "direction", "directions")]
)
def test_the_other_spelling_of_directions_is_a_did_you_mean_error(probe, method, wrong, right):
    with pytest.raises(
        ConfigError, match=rf"`{method}` takes `{right}=`, not `{wrong}=` \(did you mean `{right}='lora'`"
    ):
        getattr(probe, method)(steps=3, **{wrong: "lora"})


def flat_plane() -> Surface:
    x = np.linspace(-1, 1, 3)
    values = np.full((3, 3), 2.0)
    return Surface(x, values, y=x.copy(), metadata={"kind": "plane", "model": {"name_or_path": "org/a"}})


def test_a_rise_radius_never_reached_reads_beyond_the_grid():
    table = CompareReport({"flat": flat_plane()}).table_markdown()
    row = table.splitlines()[2]
    assert "> 1.414" in row
    assert "inf" not in row and "nan" not in row


def test_surface_arrays_get_the_same_file_mode_as_the_json(tmp_path):
    flat_plane().save_pretrained(tmp_path / "s")
    modes = {p.name: stat.S_IMODE(os.stat(p).st_mode) for p in (tmp_path / "s").iterdir()}
    assert modes["surface.safetensors"] == modes["surface.json"]


def test_compare_report_saves_its_figure_and_markdown_table(tmp_path):
    report = CompareReport({"a": flat_plane(), "b": flat_plane()})
    report.save_pretrained(tmp_path / "r")
    assert (tmp_path / "r" / "compare.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "r" / "report.md").read_text(encoding="utf-8") == report.table_markdown()


def test_env_lists_the_versions_a_bug_report_needs(capsys):
    assert main(["env"]) == 0
    versions = json.loads(capsys.readouterr().out)
    assert {"torch", "transformers", "datasets", "peft", "accelerate", "gguf", "matplotlib"} <= set(versions)


def test_lora_directions_default_to_a_narrower_span_than_random_ones():
    low, high = default_span("lora")
    assert default_span("random") == (-1.0, 1.0)
    assert 0 < high < 1.0 and low == -high
