"""`--objective multiple-choice` and `--objective generation` on the command line: lines, planes and interpolations of
tiny LMs on local TSV/CSV/JSON/text files, their surfaces and cards' Reproduce commands, and bad options refused
before any model is resolved."""

from __future__ import annotations

import json

import pytest
from test_cli_objectives import QUICK, card_command, run
from testing_utils import TEXTS, build_gpt2, train_tokenizer

from hf_landscape import Surface


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two tiny GPT-2 LMs and the questions and prompts as TSV, JSON lines, CSV and text files."""
    root = tmp_path_factory.mktemp("files")
    tokenizer = train_tokenizer()
    for name, seed in (("gpt", 0), ("gpt-b", 1)):
        build_gpt2(len(tokenizer), seed=seed).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    (root / "reviews.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(TEXTS)))
    rows = [{"question": t, "choices": ["yes", "no", "maybe"], "answer": i % 3} for i, t in enumerate(TEXTS[:6])]
    (root / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "answers.csv").write_text("text,gold\n" + "".join(f"{t},{t.split()[0]}\n" for t in TEXTS[:5]))
    (root / "prompts.txt").write_text("\n".join(TEXTS[:4]) + "\n")
    return root


SST = ["--objective", "multiple-choice", "--dataset", "reviews.tsv", "--question-column", "sentence"]
SST += ["--choices", "negative", "positive", "--answer-column", "label"]
SST += ["--template", r"Review: {question}\nSentiment:"]
GEN = ["--objective", "generation", "--dataset", "answers.csv", "--prompt-column", "text"]
QUICK_GEN = [o for o in QUICK if o not in ("--max-length", "16")]  # generation cuts no prompt: no --max-length
GEN += ["--reference-column", "gold", "--scorer", "contains", "--max-new-tokens", "3", "--stop", r"\n"]


def _at(files, argv):
    """`argv` with the names of files in `files` made paths (as an author runs it)."""
    return [files / a if isinstance(a, str) and (files / a).exists() else a for a in argv]


def _reproduce_dry_run(files, surface, tmp_path, monkeypatch, capsys):
    """The card's Reproduce command, run with `--dry-run` by a reader with the models and files beside them."""
    command = card_command(surface)
    assert not any(str(files) in a for a in command), command
    reader = tmp_path / "reader"
    reader.mkdir()
    for entry in files.iterdir():
        (reader / entry.name).symlink_to(entry)
    monkeypatch.chdir(reader)
    code, io = run([*command, "--dry-run"], capsys)
    assert code == 0, (command, io.err)
    return command, json.loads(io.out)


@pytest.mark.parametrize("source", ["recorded", "written"])
def test_multiple_choice_plane_on_a_tsv_records_the_objective_and_its_metrics(
    source, files, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    code, io = run([*_at(files, ["plane", "gpt", *SST]), "--steps", 3, "--out", out, *QUICK], capsys)
    assert code == 0, io.err
    surface = Surface.from_pretrained(out)
    objective = surface.metadata["objective"]
    assert objective["type"] == "MultipleChoiceObjective"
    assert objective["config"]["template"] == "Review: {question}\nSentiment:"
    assert objective["config"]["choices"] == ["negative", "positive"]
    assert objective["num_examples"] == len(TEXTS)
    assert objective["source"]["file"] == "reviews.tsv"
    assert set(surface.metrics) == {"accuracy", "accuracy_norm"}
    assert surface.metrics["accuracy"].shape == (3, 3)
    if source == "written":  # as if made with the Python API: the command comes from the metadata
        surface.metadata.pop("command")
    command, plan = _reproduce_dry_run(files, surface, tmp_path, monkeypatch, capsys)
    assert command[command.index("--template") + 1] == r"Review: {question}\nSentiment:"
    assert plan["objective"]["type"] == "MultipleChoiceObjective" and plan["points"] == 9


def test_multiple_choice_line_reads_a_choices_column_of_a_jsonl_file(files, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    argv = ["line", files / "gpt", "--objective", "multiple-choice", "--dataset", files / "questions.jsonl"]
    code, io = run([*argv, "--target-delimiter", r"\t", "--steps", 3, "--out", out, *QUICK], capsys)
    assert code == 0, io.err
    surface = Surface.from_pretrained(out)
    objective = surface.metadata["objective"]
    assert objective["config"]["choices"] == "choices" and objective["config"]["delimiter"] == "\t"
    assert objective["num_choices"] == 18
    assert set(surface.metrics) == {"accuracy", "accuracy_norm"}
    surface.metadata.pop("command")
    command, _ = _reproduce_dry_run(files, surface, tmp_path, monkeypatch, capsys)
    assert command[command.index("--target-delimiter") + 1] == r"\t"


@pytest.mark.parametrize("source", ["recorded", "written"])
def test_generation_plane_on_a_csv_records_the_objective_and_its_metrics(source, files, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    code, io = run([*_at(files, ["plane", "gpt", *GEN]), "--steps", 3, "--out", out, *QUICK_GEN], capsys)
    assert code == 0, io.err
    surface = Surface.from_pretrained(out)
    objective = surface.metadata["objective"]
    assert objective["type"] == "GenerationObjective"
    assert objective["config"]["max_new_tokens"] == 3 and objective["config"]["stop"] == ["\n"]
    assert objective["scorer"]["name"] == "contains"
    assert objective["source"]["file"] == "answers.csv" and objective["source"]["reference_column"] == "gold"
    assert objective["num_examples"] == 5
    assert set(surface.metrics) == {"score", "generated_nll", "new_tokens"}
    assert ((surface.metrics["new_tokens"] >= 1) & (surface.metrics["new_tokens"] <= 3)).all()
    if source == "written":
        surface.metadata.pop("command")
    command, plan = _reproduce_dry_run(files, surface, tmp_path, monkeypatch, capsys)
    assert command[command.index("--scorer") + 1] == "contains"
    assert plan["objective"]["type"] == "GenerationObjective" and plan["points"] == 9


def test_generation_interpolation_of_prompts_in_a_text_file_scores_refusals(files, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    argv = ["interpolate", files / "gpt", files / "gpt-b", "--objective", "generation", "--dataset"]
    argv += [files / "prompts.txt", "--prompt-column", "text", "--max-new-tokens", 2, "--scorer", r"regex:^\s*\w"]
    code, io = run([*argv, "--steps", 3, "--out", out, *QUICK_GEN], capsys)
    assert code == 0, io.err
    surface = Surface.from_pretrained(out)
    objective = surface.metadata["objective"]
    assert objective["scorer"] == {"name": "regex", "pattern": r"^\s*\w", "ignore_case": False}
    assert objective["num_examples"] == 4
    assert set(surface.metrics) == {"score", "generated_nll", "new_tokens"}
    surface.metadata.pop("command")
    command, _ = _reproduce_dry_run(files, surface, tmp_path, monkeypatch, capsys)
    assert command[:3] == ["interpolate", "gpt", "gpt-b"]


@pytest.mark.parametrize(("options", "expected"), [(["--reference-column", "gold"], "exact_match"), ([], "refusal")])
def test_the_default_scorer_is_exact_match_with_references_and_refusal_without(options, expected):
    from hf_landscape.cli.main import build_parser
    from hf_landscape.cli.objectives_generation import _scorer

    args = build_parser().parse_args(["line", "gpt", "--objective", "generation", *options, "--out", "o"])
    assert _scorer(args).name == expected


BAD = {
    "missing question column": (SST[:4] + ["--question-column", "review"], "`--question-column` 'review'"),
    "missing answer column": (SST + ["--answer-column", "gold"], "`--answer-column` 'gold'"),
    "missing prompt column": (GEN[:4] + ["--prompt-column", "query"], "`--prompt-column` 'query'"),
    "missing reference column": (GEN[:6] + ["--reference-column", "ref"], "`--reference-column` 'ref'"),
    "unknown scorer": (GEN + ["--scorer", "bleu"], "`--scorer` must be one of"),
    "bad regex": (GEN + ["--scorer", "regex:("], "`--scorer` 'regex:('"),
    "scorer without references": (GEN[:6] + ["--scorer", "exact_match"], "`--reference-column`"),
    "max_new_tokens 0": (GEN + ["--max-new-tokens", "0"], "`--max-new-tokens` must be an integer >= 1, got 0"),
    "max_new_tokens -1": (GEN + ["--max-new-tokens", "-1"], "`--max-new-tokens` must be an integer >= 1, got -1"),
    "one choice": (SST + ["--choices", "positive"], "`--choices` needs two or more choices"),
    "choices twice": (SST + ["--choices-column", "c"], "Pass one of `--choices`"),
    "no dataset": (["--objective", "generation"], "`--objective generation` needs `--dataset"),
    "scorer to multiple-choice": (SST + ["--scorer", "contains"], "`--scorer` does not apply to `--objective mult"),
    "choices to generation": (GEN + ["--choices", "a", "b"], "`--choices` does not apply to `--objective generation`"),
    "text file to generation": (GEN + ["--text-file", "prompts.txt"], "`--text-file` does not apply to `--objective g"),
    "max length to generation": (GEN + ["--max-length", "64"], "`--max-length` does not apply to `--objective gen"),
    "template to causal-lm": (["--text-file", "prompts.txt", "--template", "{x}"], "`--template` does not apply"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_option_is_refused_before_the_model_is_resolved(case, files, tmp_path, capsys):
    options, message = BAD[case]
    out = tmp_path / "out"
    # a model that does not exist: the option's error comes first, so nothing about the model was looked up
    quick = QUICK_GEN if "generation" in options else QUICK
    code, io = run(["plane", tmp_path / "no-model", *_at(files, options), "--out", out, *quick], capsys)
    assert code == 1
    assert message in io.err, io.err
    assert not out.exists()
