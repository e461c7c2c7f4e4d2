"""What the command line shows must be true: `--objective` for every head, refusing a model whose head does not fit,
`--dry-run`, cards whose Reproduce command runs, one line on Ctrl-C, and no local path in anything published."""

from __future__ import annotations

import html
import importlib.util
import json
import re
import shlex
from pathlib import Path

import pytest
import torch
from conftest import TEXTS, build_gpt2, interrupt_at_call, train_tokenizer
from testing_utils import build_bert_classifier

from hf_landscape import Surface
from hf_landscape.cli.main import main
from hf_landscape.cli.objectives import CLI_OBJECTIVES, CliObjective, cli_objective, register_cli_objective
from hf_landscape.cli.reproduce import command_for
from hf_landscape.errors import ConfigError
from hf_landscape.hub.card import surface_section

QUICK = ["--no-progress", "--no-plots", "--max-length", "16"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Folder with two tiny GPT-2 LMs, a tiny BERT classifier, a text, a headerless TSV and a GLUE-shaped TSV."""
    root = tmp_path_factory.mktemp("files")
    tokenizer = train_tokenizer()
    for name, model in (
        ("gpt", build_gpt2(len(tokenizer))),
        ("gpt-b", build_gpt2(len(tokenizer), seed=1)),
        ("bert", build_bert_classifier(len(tokenizer))),
    ):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    (root / "text.txt").write_text(" ".join(TEXTS * 2))
    if importlib.util.find_spec("peft") is not None:  # a LoRA adapter of "gpt", for `--directions adapter`
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(0)
        config = LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False)
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(root / "gpt")  # the adapter names its base by this path
        get_peft_model(base, config).save_pretrained(root / "adapter")
        tokenizer.save_pretrained(root / "adapter")
    (root / "dev.tsv").write_text("".join(f"{i % 2}\t{t}\n" for i, t in enumerate(TEXTS)))
    (root / "sst2.tsv").write_text("".join(f"{t}\t{i % 2}\n" for i, t in enumerate(TEXTS)))
    return root


def run(argv, capsys):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr()


# --- the head must fit the objective ---------------------------------------------------------------------------------


def test_cli_refuses_a_classifier_without_objective_classification(files, tmp_path, capsys):
    out = tmp_path / "out"
    code, io = run(["plane", files / "bert", "--text-file", files / "text.txt", "--out", out, *QUICK], capsys)
    assert code == 1
    assert "BertForSequenceClassification" in io.err and "newly initialized head" in io.err
    assert "`--objective classification`" in io.err
    assert not out.exists()


def test_cli_refuses_a_causal_lm_under_objective_classification(files, tmp_path, capsys):
    argv = ["line", files / "gpt", "--objective", "classification", "--dataset", files / "dev.tsv"]
    code, io = run([*argv, "--column-names", "label", "text", "--out", tmp_path / "out", *QUICK], capsys)
    assert code == 1
    assert "`--objective causal-lm`" in io.err
    assert not (tmp_path / "out").exists()


def test_option_an_objective_does_not_read_is_refused(files, tmp_path, capsys):
    argv = ["line", files / "gpt", "--text-file", files / "text.txt", "--label-column", "y"]
    code, io = run([*argv, "--out", tmp_path / "out", *QUICK], capsys)
    assert code == 1
    assert "`--label-column` does not apply to `--objective causal-lm`" in io.err


def test_unknown_objective_names_the_closest_choice(files, tmp_path, capsys):
    code, io = run(["line", files / "bert", "--objective", "clasification", "--out", tmp_path / "o", *QUICK], capsys)
    assert code == 1
    assert "did you mean 'classification'" in io.err


# --- classification on a headerless TSV -----------------------------------------------------------------------------


def test_plane_of_a_classifier_on_a_headerless_tsv_records_its_own_task(files, tmp_path, capsys):
    out = tmp_path / "subj"
    argv = ["plane", files / "bert", "--objective", "classification", "--task", "subj", "--dataset", files / "dev.tsv"]
    argv += ["--column-names", "label", "text", "--label-names", "objective", "subjective", "--metrics", "accuracy"]
    code, io = run([*argv, "--steps", 3, "--out", out, *QUICK], capsys)
    assert code == 0, io.err
    surface = Surface.from_pretrained(out)
    objective = surface.metadata["objective"]
    assert objective["type"] == "TextClassificationObjective"
    assert objective["config"]["task_name"] == "subj"
    assert objective["config"]["label_names"] == ["objective", "subjective"]
    assert objective["num_examples"] == len(TEXTS)
    assert set(surface.metrics) == {"accuracy"}
    assert "glue" not in json.dumps(objective).lower()


def test_glue_preset_reads_a_local_file_with_glue_columns(files, tmp_path, capsys):
    out = tmp_path / "sst2"
    argv = ["line", files / "bert", "--objective", "glue", "--task", "sst2", "--dataset", files / "sst2.tsv"]
    code, io = run([*argv, "--column-names", "sentence", "label", "--steps", 3, "--out", out, *QUICK], capsys)
    assert code == 0, io.err
    objective = Surface.from_pretrained(out).metadata["objective"]
    assert objective["type"] == "GlueObjective" and objective["config"]["task"] == "sst2"


# --- --dry-run --------------------------------------------------------------------------------------------------------


def test_dry_run_prints_the_plan_reads_no_weights_and_writes_nothing(files, tmp_path, capsys):
    model = tmp_path / "bert"
    model.mkdir()
    for path in (files / "bert").iterdir():  # everything but the weights
        if path.suffix != ".safetensors":
            (model / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "out"
    argv = ["plane", model, "--objective", "classification", "--dataset", files / "dev.tsv", "--column-names"]
    argv += ["label", "text", "--directions", "lora", "--rank", 2, "--seed", 0, 1, "--steps", 3, 4, "--out", out]
    code, io = run([*argv, "--dry-run", *QUICK], capsys)
    assert code == 0, io.err
    plan = json.loads(io.out)
    assert plan["dry_run"] is True and plan["loads_as"] == "BertForSequenceClassification"
    assert plan["objective"]["type"] == "TextClassificationObjective"
    assert plan["directions"] == "lora --rank=2" and plan["seed"] == [0, 1]
    assert plan["points"] == 2 * 3 * 4
    assert not out.exists()


def test_max_length_defaults_to_128_tokens_for_an_objective_that_reads_it(files, tmp_path, capsys):
    argv = ["line", files / "gpt", "--text-file", files / "text.txt", "--out", tmp_path / "out", "--dry-run"]
    plans = []
    for extra in ([], ["--max-length", 128], ["--max-length", 64]):
        code, io = run([*argv, *extra], capsys)
        assert code == 0, io.err
        plans.append(json.loads(io.out)["objective"])
    assert plans[0] == plans[1] != plans[2]


def test_dry_run_refuses_what_the_run_would_refuse(files, tmp_path, capsys):
    argv = ["line", files / "gpt", "--text-file", files / "text.txt", "--directions", "random", "--rank", 4]
    code, io = run([*argv, "--out", tmp_path / "out", "--dry-run", *QUICK], capsys)
    assert code == 1
    assert "`--rank` does not apply to `--directions random`" in io.err


# --- cards whose Reproduce command runs ------------------------------------------------------------------------------

SURFACES = {
    "line": ["line", "gpt", "--text-file", "text.txt", "--steps", 3],
    "plane": ["plane", "gpt", "--text-file", "text.txt", "--steps", 3, "--seed", 1, 2],
    "interpolation": ["interpolate", "gpt", "gpt-b", "--text-file", "text.txt", "--steps", 3],
    "lora": ["plane", "gpt", "--text-file", "text.txt", "--directions", "lora", "--rank", 2, "--steps", 3],
    "adapter": ["plane", "adapter", "--text-file", "text.txt", "--directions", "adapter", "--seed", 0, 1, "--steps", 3],
    "glue": ["line", "bert", "--objective", "glue", "--task", "sst2", "--dataset", "sst2.tsv", "--column-names"]
    + ["sentence", "label", "--steps", 3],
    "classification": ["plane", "bert", "--objective", "classification", "--dataset", "dev.tsv", "--column-names"]
    + ["label", "text", "--task", "subj", "--steps", 3],
}


def card_command(surface: Surface) -> list[str]:
    """The argv of the card's Reproduce command (what a reader copies from the card)."""
    section = surface_section("", surface)
    match = re.search(r"Reproduce:\n\n<pre><code>(.*?)</code></pre>", section, re.S)
    assert match, section
    argv = shlex.split(html.unescape(match.group(1)))
    assert argv[0] == "hf-landscape"
    return argv[1:]


@pytest.mark.parametrize("source", ["recorded", "written"])
@pytest.mark.parametrize("name", sorted(SURFACES))
def test_card_reproduce_command_passes_dry_run(name, source, files, tmp_path, monkeypatch, capsys):
    """The author runs with absolute paths; a reader with the models and data beside them runs the card's line."""
    if name == "adapter" and not (files / "adapter").exists():
        pytest.skip("needs peft")
    given = SURFACES[name]
    argv = [
        files / a if isinstance(a, str) and (files / a).exists() and given[k - 1] != "--directions" else a
        for k, a in enumerate(given)
    ]
    code, io = run([*argv, "--out", tmp_path / "author" / "out", *QUICK], capsys)
    assert code == 0, io.err
    surface = Surface.from_pretrained(tmp_path / "author" / "out")
    if source == "written":  # as if made with the Python API: the command comes from the metadata
        surface.metadata.pop("command")
    command = card_command(surface)
    assert command[0] == SURFACES[name][0]
    assert not any(str(tmp_path) in a or str(files) in a for a in command), command
    reader = tmp_path / "reader"
    reader.mkdir()
    for entry in files.iterdir():
        (reader / entry.name).symlink_to(entry)
    monkeypatch.chdir(reader)
    code, io = run([*command, "--dry-run"], capsys)
    assert code == 0, (command, io.err)
    plan = json.loads(io.out)
    assert plan["points"] == surface.values.size * len(surface.metadata.get("seeds") or [0])
    assert plan["objective"]["type"] == surface.metadata["objective"]["type"]
    if name == "lora":
        assert plan["directions"] == "lora --rank=2"
    if name == "interpolation":
        assert plan["others"] == ["gpt-b"]
    if name == "adapter":
        assert plan["directions"].startswith("adapter") and plan["seed"] == [0, 1]


def test_written_command_of_a_lora_plane_keeps_its_rank_and_kind():
    metadata = {
        "kind": "plane",
        "model": {"name_or_path": "org/llm", "commit_sha": "a" * 40},
        "objective": {"type": "CausalLMObjective", "config": {"max_length": 64}, "source": {"file": "t.txt"}},
        "directions": [{"kind": "low_rank", "seed": 0, "rank": 4, "target_modules": ["q_proj"]}] * 2,
        "grid": {"steps": [5, 5], "span": [[-0.5, 0.5], [-0.5, 0.5]]},
        "seed": 0,
    }
    argv, notes = command_for(metadata)
    assert argv is not None and notes == []
    assert argv[:4] == ["plane", "org/llm", "--revision", "a" * 40]
    assert argv[argv.index("--directions") : argv.index("--directions") + 6] == [
        "--directions",
        "lora",
        "--rank",
        "4",
        "--target-modules",
        "q_proj",
    ]


def test_card_names_both_ends_of_an_interpolation_objective_dataset_and_loss(files, tmp_path, capsys):
    argv = ["interpolate", files / "gpt", files / "gpt-b", "--text-file", files / "text.txt", "--steps", 3]
    assert run([*argv, "--out", tmp_path / "o", *QUICK], capsys)[0] == 0
    section = surface_section("", Surface.from_pretrained(tmp_path / "o"))
    rows = dict(re.findall(r"^\| (.+?) \| (.+?) \|$", section, re.M))
    assert "gpt" in rows["model"] and "gpt-b" in rows["to"]
    assert "causal" in rows["objective"].lower()
    assert "text.txt" in rows["dataset"]
    assert rows["loss"] != "—"
    assert str(tmp_path) not in section and str(files) not in section


# --- Ctrl-C and resuming ---------------------------------------------------------------------------------------------


def test_ctrl_c_prints_one_line_and_the_same_command_resumes(files, tmp_path, monkeypatch, capsys):
    from hf_landscape.objectives.causal_lm import CausalLMObjective

    out = tmp_path / "out"
    argv = ["line", files / "gpt", "--text-file", files / "text.txt", "--steps", 5, "--out", out, *QUICK]
    interrupt_at_call(monkeypatch, CausalLMObjective, "evaluate", 4)
    code, io = run(argv, capsys)
    monkeypatch.undo()
    assert code == 130
    lines = io.err.strip().splitlines()
    assert len(lines) == 1, io.err
    saved = int(re.fullmatch(rf"hf-landscape line: interrupted: (\d+) of 5 points saved in {re.escape(str(out))}; "
                             r"run the same command to resume\.", lines[0]).group(1))  # fmt: skip
    assert 1 <= saved < 5
    code, io = run(argv, capsys)
    assert code == 0, io.err
    assert json.loads(io.out)["resumed_points"] == saved
    surface = Surface.from_pretrained(out)
    assert surface.metadata["resumed"]["points"] == saved
    assert surface.metadata["compute_time_s"] >= surface.metadata["wall_time_s"]


# --- nothing local published -----------------------------------------------------------------------------------------


def test_no_absolute_path_in_any_pushed_file(files, tmp_path, monkeypatch, capsys):
    from hub_server import running_hub

    with running_hub() as hub:
        monkeypatch.setenv("HF_TOKEN", hub.token)
        argv = ["interpolate", files / "gpt", files / "gpt-b", "--text-file", files / "text.txt", "--steps", 3]
        argv += ["--out", tmp_path / "o", "--push-to-hub", "me/interp", "--no-progress", "--max-length", "16"]
        code, io = run(argv, capsys)
        assert code == 0, io.err
        pushed = hub.files("me/interp", repo_type="dataset")
    assert "README.md" in pushed and "surface.json" in pushed
    for name, content in pushed.items():
        text = content.decode("utf-8", errors="replace")
        for local in {str(tmp_path), str(files), str(Path.home()), "/tmp/"}:
            assert local not in text, (name, local)


# --- registering an objective ---------------------------------------------------------------------------------------


def test_a_registered_objective_is_a_choice_of_every_grid_command(files, tmp_path, monkeypatch, capsys):
    """What `cli/objectives_<name>.py` does: register an entry; `--objective NAME`, its options and checks follow."""
    from hf_landscape.cli import objective_registry
    from hf_landscape.objectives.causal_lm import CausalLMObjective

    monkeypatch.setattr(objective_registry, "CLI_OBJECTIVES", dict(CLI_OBJECTIVES))
    entry = CliObjective(
        name="toy",
        objective_type="ToyObjective",
        auto_class="AutoModelForCausalLM",
        help="next-token loss on the first --max-examples windows",
        read=lambda args: objective_registry.read_text_file(args.text_file),
        build=lambda args, tokenizer, text: CausalLMObjective.from_long_text(
            text, tokenizer, max_length=args.max_length, num_sequences=args.max_examples or 2
        ),
        options=("text_file", *objective_registry.COMMON),
        reproduce=lambda meta: (["--objective", "toy"], []),
    )
    register_cli_objective(entry)
    assert cli_objective("toy") is entry
    with pytest.raises(ConfigError, match="registered already"):
        register_cli_objective(entry)
    argv = ["line", files / "gpt", "--objective", "toy", "--text-file", files / "text.txt", "--out", tmp_path / "o"]
    code, io = run([*argv, "--dry-run", *QUICK], capsys)
    assert code == 0, io.err
    assert json.loads(io.out)["objective"]["name"] == "toy"
    code, io = run([*argv, "--label-column", "y", "--dry-run", *QUICK], capsys)
    assert code == 1 and "`--label-column` does not apply to `--objective toy`" in io.err


# --- the commands the README and docs show ---------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def documented_commands() -> list[tuple[str, list[str]]]:
    """(page, argv) of every `hf-landscape` command in a bash block of the README and docs (continuations joined)."""
    out = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                command = line.split("#", 1)[0].strip()
                if command.startswith("hf-landscape "):
                    out.append((page.name, shlex.split(command)[1:]))
    return out


@pytest.mark.parametrize(
    ("page", "argv"), documented_commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v[:2])
)
def test_every_documented_command_parses(page, argv):
    from hf_landscape.cli.main import build_parser

    args = build_parser().parse_args(argv)  # an unknown option or subcommand exits here
    if hasattr(args, "objective"):
        cli_objective(args.objective)


def test_documented_classification_command_on_a_headerless_tsv_passes_dry_run(files, tmp_path, monkeypatch, capsys):
    commands = [a for _, a in documented_commands() if "--objective" in a and "classification" in a]
    assert {p for p, a in documented_commands() if "classification" in a} >= {"README.md", "cli.md"}
    (tmp_path / "minilm-subj").symlink_to(files / "bert")
    (tmp_path / "subj").mkdir()
    (tmp_path / "subj" / "dev.tsv").symlink_to(files / "dev.tsv")
    monkeypatch.chdir(tmp_path)
    for argv in commands:
        code, io = run([*argv, "--dry-run"], capsys)
        assert code == 0, (argv, io.err)
        assert json.loads(io.out)["objective"]["type"] == "TextClassificationObjective"


def test_card_yaml_lists_a_hub_dataset_and_links_follow_hf_endpoint(monkeypatch):
    import numpy as np
    import yaml

    from hf_landscape.hub.card import render_card

    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "https://hub.example.org")
    x = np.array([-1.0, 0.0, 1.0])
    objective = {
        "type": "TextClassificationObjective",
        "config": {"task_name": "reviews", "text_columns": ["text"], "split": "test"},
        "source": {"type": "hub", "hub_id": "org/reviews", "split": "test"},
        "loss": "cross_entropy",
        "num_examples": 3,
    }
    metadata = {"kind": "line", "model": {"name_or_path": "org/tiny", "commit_sha": "b" * 40}, "objective": objective}
    card = render_card("me/landscape", {"": Surface(x, np.array([2.0, 1.0, 2.0]), metadata=metadata)})
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["datasets"] == ["org/reviews"] and meta["base_model"] == "org/tiny"
    assert "https://hub.example.org/datasets/org/reviews" in card
    assert f"https://hub.example.org/org/tiny/tree/{'b' * 40}" in card
    assert "huggingface.co" not in card


def test_seeds_and_threads_run_and_torch_gets_its_threads_back(files, tmp_path, capsys):
    before = torch.get_num_threads()
    argv = ["line", files / "gpt", "--text-file", files / "text.txt", "--seed", 0, 1, 2, "--threads", before + 1]
    code, io = run([*argv, "--steps", 3, "--out", tmp_path / "o", *QUICK], capsys)
    assert code == 0, io.err
    assert torch.get_num_threads() == before
    surface = Surface.from_pretrained(tmp_path / "o")
    assert surface.metadata["seeds"] == [0, 1, 2] and surface.spread is not None
