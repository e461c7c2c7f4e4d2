"""`MultipleChoiceObjective`: lm-evaluation-harness accuracy at every grid point.

Exactness against log-likelihoods computed here with plain transformers calls (one unpadded sequence per choice),
the harness's tokenization of a continuation, one forward per batch of questions, every grid method (line, plane,
seeds, stacked points, compare, LoRA-subspace and adapter directions, checkpoints), curvature, and bad input.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import build_gpt2, build_llama, interrupt_at_call, train_tokenizer

from hf_landscape import (
    ConfigError,
    LandscapeError,
    LandscapeProbe,
    ModelError,
    MultipleChoiceObjective,
    ObjectiveError,
    compare,
)
from hf_landscape.objectives import abilities, loss_terms
from hf_landscape.objectives.continuations import encode_pairs

DATA = {
    "question": [
        "The river runs past the",
        "Language models predict the next",
        "She opened the",
        "Cats",
        "The loss is the average negative",
        "In the evening the children played by the",
    ],
    "choices": [
        ["old mill", "garden", "window"],
        ["token", "river"],
        ["window", "apple tree", "loss", "mill"],
        ["sleep", "run"],
        ["log likelihood", "valley"],
        ["river", "weights", "loss landscape"],
    ],
    "answer": [0, 0, 0, 0, 0, 1],
}
# One-token choices: which wins depends on the logits, not on how many tokens a choice has, so accuracy moves on a grid.
GRID = {
    "question": DATA["question"],
    "choices": [["the", "a", "of"], ["is", "and"], ["of", "the"], ["a", "is", "and"], ["and", "of"], ["the", "is"]],
    "answer": [0, 1, 0, 2, 1, 0],
}


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer()


def build(kind: str, tok, seed: int = 1, **overrides):
    maker = build_llama if kind == "llama" else build_gpt2
    return maker(len(tok), seed=seed, **overrides)


def independent_loglikelihoods(model, tok, data=DATA, delimiter=" ") -> list[np.ndarray]:
    """Each choice's log-likelihood with plain transformers calls: one unpadded sequence per choice, the context's
    tokens then the rest of the whole text's tokens (the harness's rule), summed log-softmax at the choice's tokens."""
    out = []
    for question, choices in zip(data["question"], data["choices"]):
        row = []
        for choice in choices:
            context = tok(question, add_special_tokens=False)["input_ids"]
            whole = tok(question + delimiter + choice, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([whole[:-1]])).logits[0].double(), dim=-1)
            row.append(sum(logp[t - 1, whole[t]].item() for t in range(len(context), len(whole))))
        out.append(np.array(row))
    return out


# --- exactness -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_accuracy_at_the_centre_is_the_argmax_of_independent_log_likelihoods(kind, tok):
    model = build(kind, tok).double().eval()
    objective = MultipleChoiceObjective(DATA, tok, batch_size=4)
    evaluation = LandscapeProbe(model, objective, progress=False).evaluate()
    expected = independent_loglikelihoods(model, tok)
    for ours, theirs in zip(objective.choice_loglikelihoods(model), expected):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)
    accuracy = np.mean([np.argmax(ll) == a for ll, a in zip(expected, DATA["answer"])])
    assert evaluation.metrics["accuracy"] == accuracy


def test_accuracy_norm_divides_by_the_choice_length_in_characters(tok):
    model = build("llama", tok).double().eval()
    objective = MultipleChoiceObjective(DATA, tok)
    evaluation = LandscapeProbe(model, objective, progress=False).evaluate()
    expected = independent_loglikelihoods(model, tok)
    lengths = [np.array([len(c) for c in choices], dtype=float) for choices in DATA["choices"]]  # no delimiter
    norm = np.mean([np.argmax(ll / n) == a for ll, n, a in zip(expected, lengths, DATA["answer"])])
    plain = np.mean([np.argmax(ll) == a for ll, a in zip(expected, DATA["answer"])])
    assert evaluation.metrics["accuracy_norm"] == norm
    assert norm != plain  # this model and data tell the two apart


def test_the_loss_is_the_mean_token_nll_of_the_correct_continuations(tok):
    model = build("gpt2", tok).double().eval()
    objective = MultipleChoiceObjective(DATA, tok)
    evaluation = LandscapeProbe(model, objective, progress=False).evaluate()
    expected = independent_loglikelihoods(model, tok)
    tokens = []
    for question, choices, answer in zip(DATA["question"], DATA["choices"], DATA["answer"]):
        context = tok(question, add_special_tokens=False)["input_ids"]
        tokens.append(len(tok(question + " " + choices[answer], add_special_tokens=False)["input_ids"]) - len(context))
    gold = np.array([ll[a] for ll, a in zip(expected, DATA["answer"])])
    assert evaluation.loss == pytest.approx(-gold.sum() / sum(tokens), rel=1e-12)
    np.testing.assert_allclose(evaluation.sequence_losses, -gold / np.array(tokens), rtol=1e-12)


@pytest.mark.parametrize(("batch_size", "sort"), [(1, False), (2, True), (6, False), (64, True)])
def test_values_do_not_depend_on_batching_or_order(tok, batch_size, sort):
    model = build("llama", tok).double().eval()
    reference = LandscapeProbe(model, MultipleChoiceObjective(DATA, tok, batch_size=3), progress=False).evaluate()
    objective = MultipleChoiceObjective(DATA, tok, batch_size=batch_size, sort_by_length=sort)
    evaluation = LandscapeProbe(model, objective, progress=False).evaluate()
    assert evaluation.loss == pytest.approx(reference.loss, rel=1e-12)
    assert evaluation.metrics == reference.metrics


def test_encoding_moves_the_contexts_trailing_space_into_the_continuation(tok):
    (ctx, cont), (ctx2, cont2) = encode_pairs(tok, [("Cats ", "sleep"), ("Cats", " sleep")])
    assert (ctx, cont) == (ctx2, cont2)
    whole = tok("Cats sleep", add_special_tokens=False)["input_ids"]
    assert ctx == tok("Cats", add_special_tokens=False)["input_ids"] and ctx + cont == whole


def test_an_empty_context_is_the_bos_or_eos_token(tok):
    ((ctx, cont),) = encode_pairs(tok, [("", "Cats sleep")])
    assert ctx == [tok.eos_token_id] and cont == tok("Cats sleep", add_special_tokens=False)["input_ids"]


def test_every_choice_of_a_batch_is_scored_in_one_forward_on_the_last_columns(tok):
    model = build("llama", tok).eval()
    seen = []
    model.model.register_forward_hook(lambda module, args, kwargs, out: seen.append(kwargs["input_ids"].shape),
                                      with_kwargs=True)  # fmt: skip
    heads = []
    model.lm_head.register_forward_hook(lambda module, args, out: heads.append(out.shape))
    objective = MultipleChoiceObjective(DATA, tok, batch_size=4)
    LandscapeProbe(model, objective, progress=False).loss()
    # 6 questions with 16 choices in all, 4 questions per forward: two forwards
    assert len(seen) == 2 and sum(s[0] for s in seen) == sum(len(c) for c in DATA["choices"]) == 16
    longest = max(len(tok(" " + c, add_special_tokens=False)["input_ids"]) for cs in DATA["choices"] for c in cs)
    assert all(h[1] <= longest < s[1] for h, s in zip(heads, seen))  # the LM head runs on the last columns only


def test_one_token_choices_after_one_context_share_a_forward_row(tok):
    model = build("gpt2", tok).double().eval()
    rows = []
    model.transformer.wte.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    objective = MultipleChoiceObjective(GRID, tok)
    assert all(len(tok(" " + c, add_special_tokens=False)["input_ids"]) == 1 for cs in GRID["choices"] for c in cs)
    lls = objective.choice_loglikelihoods(model)
    assert rows == [len(GRID["question"])]  # 6 rows for 15 choices
    for ours, theirs in zip(lls, independent_loglikelihoods(model, tok, GRID)):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)


# --- abilities and grid methods ---------------------------------------------------------------------------------


def test_it_declares_stacked_points_and_a_differentiable_loss(tok):
    objective = MultipleChoiceObjective(GRID, tok)
    assert abilities(objective) == ["StackedEvaluation", "DifferentiableLoss"] and not objective.eager_only


def test_stacked_points_equal_one_point_per_forward(tok):
    model = build("llama", tok).double()
    objective = MultipleChoiceObjective(GRID, tok)
    one = LandscapeProbe(model, objective, progress=False, points_per_forward=1).plane(steps=(3, 3), span=(-4, 4))
    many = LandscapeProbe(model, objective, progress=False, points_per_forward=5).plane(steps=(3, 3), span=(-4, 4))
    np.testing.assert_allclose(many.values, one.values, rtol=1e-10)
    for name in ("accuracy", "accuracy_norm"):
        np.testing.assert_array_equal(many.metrics[name], one.metrics[name])
    assert len(np.unique(one.metrics["accuracy"])) > 1  # the grid moves the accuracy


def test_line_and_plane_centres_are_the_models_own_evaluation(tok):
    model = build("gpt2", tok)
    probe = LandscapeProbe(model, MultipleChoiceObjective(GRID, tok), progress=False)
    centre = probe.evaluate()
    line, plane = probe.line(steps=5, seed=0), probe.plane(steps=(3, 3), seed=0)
    assert line.values[2] == centre.loss and plane.values[1, 1] == centre.loss
    assert line.metrics["accuracy"][2] == plane.metrics["accuracy"][1, 1] == centre.metrics["accuracy"]


def test_seeds_average_the_accuracy_of_each_draw(tok):
    probe = LandscapeProbe(build("llama", tok), MultipleChoiceObjective(GRID, tok), progress=False)
    both = probe.line(steps=3, span=(-4, 4), seed=[0, 1])
    draws = [probe.line(steps=3, span=(-4, 4), seed=s) for s in (0, 1)]
    np.testing.assert_allclose(both.metrics["accuracy"], np.mean([d.metrics["accuracy"] for d in draws], axis=0))
    np.testing.assert_allclose(both.samples, np.stack([d.values for d in draws]))


def test_compare_reports_each_models_accuracy(tok):
    models = {"a": build("llama", tok, seed=1), "b": build("llama", tok, seed=2)}
    objective = MultipleChoiceObjective(GRID, tok)
    report = compare(models, objective, steps=(3, 3), progress=False)
    for name, model in models.items():
        centre = LandscapeProbe(model, objective, progress=False).evaluate()
        assert report.surfaces[name].metrics["accuracy"][1, 1] == centre.metrics["accuracy"]
        assert report.surfaces[name].values[1, 1] == centre.loss


def test_the_basin_of_the_accuracy_along_random_and_worst_case_directions(tok):
    probe = LandscapeProbe(build("gpt2", tok), MultipleChoiceObjective(GRID, tok), progress=False)
    centre = probe.evaluate().metrics["accuracy"]
    result = probe.basin(metric="accuracy", drop=1 / 6, seeds=(1, 2), rounds=1, max_radius=50.0)
    assert result.metric == "accuracy" and result.centre == centre == 0.5
    assert len(result.random_radii) == 2 and all(0 < r < 50 for r in result.random_radii)
    assert result.worst_radius is not None and 0 < result.worst_radius < 50


def test_lora_subspace_directions(tok):
    probe = LandscapeProbe(build("llama", tok), MultipleChoiceObjective(GRID, tok), progress=False)
    plane = probe.plane(steps=(3, 3), span=(-4, 4), directions="lora", rank=2, target_modules=["q_proj", "v_proj"])
    assert plane.values[1, 1] == probe.loss() and np.isfinite(plane.metrics["accuracy"]).all()
    assert not np.allclose(plane.values, plane.values[1, 1])


def test_adapter_directions(tok):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(build("llama", tok), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    probe = LandscapeProbe(model, MultipleChoiceObjective(GRID, tok), progress=False)
    line = probe.line(steps=3, span=(-4, 4), direction="adapter")
    assert line.values[1] == probe.loss() and line.values[0] != line.values[1]
    assert all(".lora_" in name for name in line.directions[0].keys())


def test_a_resumed_grid_keeps_the_accuracy_of_the_saved_points(tok, tmp_path, monkeypatch):
    def make():
        return LandscapeProbe(build("llama", tok), MultipleChoiceObjective(GRID, tok), progress=False)

    reference = make().plane(steps=(3, 3), span=(-4, 4), seed=0)
    probe = make()
    interrupt_at_call(monkeypatch, MultipleChoiceObjective, "evaluate", 6)
    with pytest.raises(KeyboardInterrupt):
        probe.plane(steps=(3, 3), span=(-4, 4), seed=0, checkpoint_dir=tmp_path, checkpoint_every=2)
    monkeypatch.undo()
    calls = []
    original = MultipleChoiceObjective.evaluate
    monkeypatch.setattr(MultipleChoiceObjective, "evaluate", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    resumed = make().plane(steps=(3, 3), span=(-4, 4), seed=0, checkpoint_dir=tmp_path)
    assert len(calls) == 9 - 5  # the five points evaluated before the interruption are read back
    np.testing.assert_array_equal(resumed.values, reference.values)
    for name in ("accuracy", "accuracy_norm"):
        np.testing.assert_array_equal(resumed.metrics[name], reference.metrics[name])


def test_curvature_uses_the_loss_of_the_correct_continuations(tok):
    model = build("llama", tok).double()
    objective = MultipleChoiceObjective(DATA, tok, batch_size=4)
    probe = LandscapeProbe(model, objective, progress=False)
    terms = list(loss_terms(model.eval(), objective))
    assert len(terms) == 2 and all(t.requires_grad for t in terms)
    assert sum(t.item() for t in terms) == pytest.approx(probe.loss(), rel=1e-12)
    assert np.isfinite(probe.hessian_eigenvalues(k=1, max_iter=5).eigenvalues).all()


# --- data ------------------------------------------------------------------------------------------------------------


def test_local_tsv_files_with_shared_choices_and_a_template(tok, tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("1\tthe garden was quiet\n0\tpadding must never change the loss\n1\tcats sleep\n")
    objective = MultipleChoiceObjective(
        None, tok, data_files=path, column_names=["label", "sentence"], question="sentence",
        choices=["negative", "positive"], answer="label", template="Review: {question}\nSentiment:",
    )  # fmt: skip
    assert [q.context for q in objective.questions][2] == "Review: cats sleep\nSentiment:"
    assert [q.answer for q in objective.questions] == [1, 0, 1]
    assert objective.describe()["source"]["files"][0]["sha256"]
    expected = MultipleChoiceObjective(
        {"q": [f"Review: {s}\nSentiment:" for s in ["the garden was quiet", "padding must never change the loss",
                                                     "cats sleep"]],
         "c": [["negative", "positive"]] * 3, "a": ["positive", "negative", "positive"]},
        tok, question="q", choices="c", answer="a",
    )  # fmt: skip
    assert objective.fingerprint() == expected.fingerprint()


def test_a_dataset_dict_split_a_callable_template_and_max_examples(tok):
    import datasets

    table = datasets.Dataset.from_dict({**DATA, "topic": ["mill"] * 6})
    objective = MultipleChoiceObjective(
        datasets.DatasetDict({"test": table}), tok, template=lambda row: f"{row['topic']}: {row['question']}",
        max_examples=4,
    )  # fmt: skip
    assert objective.num_examples == 4 and objective.questions[3].context == "mill: Cats"
    assert objective.describe()["template"].endswith("<lambda>")
    json.dumps(objective.describe())


def test_contexts_longer_than_max_length_lose_tokens_from_the_left(tok, caplog):
    model = build("gpt2", tok).double().eval()
    objective = MultipleChoiceObjective(DATA, tok, max_length=14)
    evaluation = LandscapeProbe(model, objective, progress=False).evaluate()
    assert "contexts lose tokens from the left" in caplog.text
    q, c = DATA["question"][5], DATA["choices"][5][1]
    whole = tok(q + " " + c, add_special_tokens=False)["input_ids"]
    cont = len(whole) - len(tok(q, add_special_tokens=False)["input_ids"])
    assert len(whole) > 15
    ids = whole[-15:]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids[:-1]])).logits[0].double(), -1)
    expected = sum(logp[t - 1, ids[t]].item() for t in range(len(ids) - cont, len(ids)))
    assert objective.choice_loglikelihoods(model)[5][1] == pytest.approx(expected, abs=1e-9)
    assert np.isfinite(evaluation.loss)


# --- bad input ---------------------------------------------------------------------------------------------------


def with_column(name, value):
    return {**DATA, name: value}


BAD = {
    "choices not a list": (dict(dataset=with_column("choices", ["a b"] * 6)), ObjectiveError, "must hold a list"),
    "answer out of range": (dict(dataset=with_column("answer", [0, 2, 0, 0, 0, 0])), ObjectiveError,
                            "answer index 2 .* out of range for its 2 choices"),
    "negative answer": (dict(dataset=with_column("answer", [-1, 0, 0, 0, 0, 0])), ObjectiveError, "out of range"),
    "answer text not a choice": (dict(dataset=with_column("answer", ["mill", "token", "window", "run", "valley",
                                                                      "river"])), ObjectiveError,
                                 "not one of its choices"),
    "answer a float": (dict(dataset=with_column("answer", [0.5] * 6)), ObjectiveError, "neither a choice index"),
    "one choice": (dict(dataset=with_column("choices", [["a"]] * 6)), ObjectiveError, "at least 2"),
    "empty choice": (dict(dataset=with_column("choices", [["a", ""]] * 6)), ObjectiveError, "non-empty string"),
    "missing column": (dict(dataset=DATA, answer="label"), ObjectiveError, "no column 'label'"),
    "template field": (dict(dataset=DATA, template="{topic}: {question}"), ObjectiveError, "field 'topic'"),
    "template type": (dict(dataset=DATA, template=3), ConfigError, "`template`"),
    "no data": (dict(dataset=None), ConfigError, "exactly one"),
    "data and files": (dict(dataset=DATA, data_files="x.tsv"), ConfigError, "exactly one"),
    "batch size": (dict(dataset=DATA, batch_size=0), ConfigError, "`batch_size` must be a positive integer"),
    "choices a number": (dict(dataset=DATA, choices=3), ConfigError, "`choices` must be a column name"),
    "empty data": (dict(dataset={"question": [], "choices": [], "answer": []}), ObjectiveError, "no questions"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_when_the_objective_is_made(case, tok):
    kwargs, error, words = BAD[case]
    with pytest.raises(error, match=words) as raised:
        MultipleChoiceObjective(tokenizer=tok, **kwargs)
    assert isinstance(raised.value, LandscapeError)


def test_a_model_without_an_lm_head_is_refused_before_any_point(tok):
    from transformers import LlamaConfig, LlamaModel

    model = LlamaModel(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   vocab_size=len(tok)))  # fmt: skip
    with pytest.raises(ModelError, match="no language-model head"):
        LandscapeProbe(model, MultipleChoiceObjective(DATA, tok), progress=False)


def test_a_tokenizer_is_required(tok):
    with pytest.raises(ModelError, match="`tokenizer` is required"):
        MultipleChoiceObjective(DATA, None)
