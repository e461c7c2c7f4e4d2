"""`GenerationObjective` and its scorers: greedy answers scored at every grid point.

Answers at the centre equal `model.generate(do_sample=False)` token for token (left-padded batches, EOS); the score is
the scorer's mean; the loss is the references' NLL (computed here with plain calls) or the answers' own; every grid
method (line, plane, seeds, LoRA-subspace and adapter directions, checkpoints); the engine never stacks, records or
compiles it; bad input is refused before any point, and a scorer failing at a point is a `LandscapeError`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import build_gpt2, build_llama, interrupt_at_call, train_tokenizer

from hf_landscape import (
    ConfigError,
    GenerationObjective,
    LandscapeError,
    LandscapeProbe,
    ModelError,
    ObjectiveError,
)
from hf_landscape.objectives import abilities
from hf_landscape.objectives.scorers import Contains, ExactMatch, Refusal, Regex, get_scorer

PROMPTS = [
    "The river runs",
    "A loss landscape shows how the",
    "Cats",
    "Padding must never change the value",
    "In the evening the children",
]
MAX_NEW = 6


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer()


def build(kind: str, tok, seed: int = 3, **overrides):
    maker = build_llama if kind == "llama" else build_gpt2
    return maker(len(tok), seed=seed, **overrides)


def generate(model, tok, prompts=PROMPTS, max_new_tokens=MAX_NEW) -> list[list[int]]:
    """`model.generate` greedy answers of a left-padded batch, each up to and including its first EOS."""
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    width = max(map(len, ids))
    batch = torch.tensor([[tok.eos_token_id] * (width - len(x)) + x for x in ids])
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
    out = model.generate(input_ids=batch, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                         pad_token_id=tok.eos_token_id)  # fmt: skip
    eos = model.generation_config.eos_token_id
    answers = []
    for row in out[:, width:].tolist():
        answers.append(row[: row.index(eos) + 1] if eos in row else row)
    return answers


def answers_of(objective, model):
    objective.bind(model)
    with torch.inference_mode():
        return objective._answers(model)


# --- exactness -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("batch_size", [2, 8])
def test_answers_at_the_centre_are_generate_greedy_token_for_token(kind, batch_size, tok):
    model = build(kind, tok).eval()
    objective = GenerationObjective(PROMPTS, tok, "refusal", max_new_tokens=MAX_NEW, batch_size=batch_size)
    assert answers_of(objective, model).tokens == generate(model, tok)


def test_answers_end_at_eos_where_generate_stops(tok):
    model = build("llama", tok).eval()
    free = generate(model, tok)
    model.generation_config.eos_token_id = free[1][2]  # the third token of the second answer now ends it
    model.config.eos_token_id = free[1][2]
    expected = generate(model, tok)
    assert len(expected[1]) == 3 and any(len(a) == MAX_NEW for a in expected)
    answers = answers_of(GenerationObjective(PROMPTS, tok, "refusal", max_new_tokens=MAX_NEW), model)
    assert answers.tokens == expected
    assert answers.texts[1] == tok.decode(expected[1][:2])  # EOS is not part of the text


def test_the_score_is_the_mean_of_the_scorer_over_the_prompts(tok):
    model = build("llama", tok).eval()
    texts = [tok.decode(a) for a in generate(model, tok)]
    calls = []

    def scorer(prompt, generation, reference):
        calls.append((prompt, generation, reference))
        return len(generation) % 3

    references = [f"r{i}" for i in range(len(PROMPTS))]
    objective = GenerationObjective(PROMPTS, tok, scorer, max_new_tokens=MAX_NEW, references=references)
    calls.clear()  # the check made when the objective was made
    evaluation = LandscapeProbe(model, objective, progress=False).evaluate()
    assert calls == list(zip(PROMPTS, texts, references))
    assert evaluation.metrics["score"] == np.mean([len(t) % 3 for t in texts])
    assert evaluation.metrics["new_tokens"] == MAX_NEW


def test_with_references_the_loss_is_their_mean_token_nll(tok):
    model = build("gpt2", tok).double().eval()
    references = ["by the mill", "loss", "sleep", "of the loss", "played"]
    objective = GenerationObjective(PROMPTS, tok, "contains", max_new_tokens=2, references=references)
    evaluation = LandscapeProbe(model, objective, progress=False).evaluate(details=True)
    total, count, per_prompt = 0.0, 0, []
    for prompt, reference in zip(PROMPTS, references):
        context = tok(prompt, add_special_tokens=False)["input_ids"]
        whole = tok(prompt + " " + reference, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([whole[:-1]])).logits[0], -1)
        nll = -sum(logp[t - 1, whole[t]].item() for t in range(len(context), len(whole)))
        total, count = total + nll, count + len(whole) - len(context)
        per_prompt.append(nll / (len(whole) - len(context)))
    assert evaluation.loss == pytest.approx(total / count, rel=1e-12)
    np.testing.assert_allclose(evaluation.sequence_losses, per_prompt, rtol=1e-12)


def test_without_references_the_loss_is_the_nll_of_the_greedy_answers(tok):
    model = build("llama", tok).double().eval()
    objective = GenerationObjective(PROMPTS, tok, "refusal", max_new_tokens=MAX_NEW)
    evaluation = LandscapeProbe(model, objective, progress=False).evaluate()
    total, count = 0.0, 0
    for prompt, answer in zip(PROMPTS, generate(model, tok)):
        ids = tok(prompt, add_special_tokens=False)["input_ids"] + answer
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids[:-1]])).logits[0], -1)
        total -= sum(logp[t - 1, ids[t]].item() for t in range(len(ids) - len(answer), len(ids)))
        count += len(answer)
    assert evaluation.loss == pytest.approx(total / count, rel=1e-9)
    assert evaluation.metrics["generated_nll"] == evaluation.loss


def test_answers_are_cut_at_the_first_stop_string(tok):
    model = build("llama", tok).eval()
    full = GenerationObjective(PROMPTS, tok, "refusal", max_new_tokens=MAX_NEW).generate(model)
    stop = full[0][2:4]
    cut = GenerationObjective(PROMPTS, tok, "refusal", max_new_tokens=MAX_NEW, stop=[stop]).generate(model)
    assert cut[0] == full[0][: full[0].index(stop)] and len(cut[0]) < len(full[0])
    assert all(c == f[: f.index(stop)] if stop in f else c == f for c, f in zip(cut, full))


# --- scorers ---------------------------------------------------------------------------------------------------------


def test_built_in_scorers():
    assert ExactMatch()("q", " Paris ", "Paris") == 1.0 and ExactMatch()("q", "paris", "Paris") == 0.0
    assert ExactMatch(ignore_case=True)("q", "paris", "Paris") == 1.0 and ExactMatch(strip=False)("q", " 5", "5") == 0
    assert Contains()("q", "It is PARIS, of course", "Paris") == 1.0 and Contains()("q", "Lyon", "Paris") == 0.0
    assert Regex(r"\b4\b")("q", "it is 4.") == 1.0 and Regex(r"\b4\b")("q", "it is 44") == 0.0
    assert Refusal()("q", "As an AI, I can't do that") == 1.0 and Refusal(["nope"])("q", "Sure, here") == 0.0
    assert get_scorer("regex:^a").pattern == "^a" and isinstance(get_scorer("exact_match"), ExactMatch)


# --- abilities and grid methods ---------------------------------------------------------------------------------


def test_it_runs_eagerly_one_point_per_forward(tok):
    objective = GenerationObjective(PROMPTS, tok, "refusal", max_new_tokens=2)
    assert abilities(objective) == [] and objective.eager_only
    with pytest.raises(ConfigError, match="points_per_forward=1"):
        LandscapeProbe(build("llama", tok), objective, progress=False, points_per_forward=2).line(steps=3)
    with pytest.raises(ConfigError, match="`compile=True` cannot run GenerationObjective"):
        LandscapeProbe(build("llama", tok), objective, progress=False, compile=True)
    probe = LandscapeProbe(build("llama", tok), objective, progress=False)
    probe.compile = True
    with pytest.raises(ConfigError, match="`compile=True`"):
        probe.line(steps=3)


def exact(tok, model):
    """An exact-match objective whose references are the centre's own answers: a score of 1 at the centre."""
    references = GenerationObjective(PROMPTS, tok, "refusal", max_new_tokens=3).generate(model)
    return GenerationObjective(PROMPTS, tok, "exact_match", max_new_tokens=3, references=references)


def test_line_plane_and_seeds(tok):
    model = build("llama", tok)
    probe = LandscapeProbe(model, exact(tok, model), progress=False)
    line = probe.line(steps=3, span=(-4, 4), seed=0)
    plane = probe.plane(steps=(3, 3), span=(-4, 4), seed=0)
    assert line.metrics["score"][1] == plane.metrics["score"][1, 1] == 1.0
    assert line.values[1] == plane.values[1, 1] == probe.loss()
    assert plane.metrics["score"].min() < 1.0  # far from the centre the answers change
    both = probe.line(steps=3, span=(-4, 4), seed=[0, 1])
    other = probe.line(steps=3, span=(-4, 4), seed=1)
    np.testing.assert_allclose(both.metrics["score"], (line.metrics["score"] + other.metrics["score"]) / 2)


def test_lora_subspace_and_adapter_directions(tok):
    from peft import LoraConfig, get_peft_model

    model = build("llama", tok)
    probe = LandscapeProbe(model, exact(tok, model), progress=False)
    plane = probe.plane(steps=(3, 3), span=(-4, 4), directions="lora", rank=2, target_modules=["q_proj", "v_proj"])
    assert plane.metrics["score"][1, 1] == 1.0 and np.isfinite(plane.values).all()
    peft = get_peft_model(build("llama", tok), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    probe = LandscapeProbe(peft, exact(tok, peft), progress=False)
    line = probe.line(steps=3, span=(-4, 4), direction="adapter")
    assert line.metrics["score"][1] == 1.0 and line.values[1] == probe.loss()


def test_a_resumed_grid_keeps_the_scores_of_the_saved_points(tok, tmp_path, monkeypatch):
    model = build("llama", tok)
    objective = exact(tok, model)
    reference = LandscapeProbe(model, objective, progress=False).line(steps=5, span=(-4, 4), seed=0)
    interrupt_at_call(monkeypatch, GenerationObjective, "evaluate", 4)
    with pytest.raises(KeyboardInterrupt):
        LandscapeProbe(model, objective, progress=False).line(steps=5, span=(-4, 4), checkpoint_dir=tmp_path,
                                                              checkpoint_every=1)  # fmt: skip
    monkeypatch.undo()
    calls = []
    original = GenerationObjective.evaluate
    monkeypatch.setattr(GenerationObjective, "evaluate", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    resumed = LandscapeProbe(model, objective, progress=False).line(steps=5, span=(-4, 4), checkpoint_dir=tmp_path)
    assert len(calls) == 2
    np.testing.assert_array_equal(resumed.values, reference.values)
    for name in ("score", "generated_nll", "new_tokens"):
        np.testing.assert_array_equal(resumed.metrics[name], reference.metrics[name])


def test_a_table_of_prompts_and_references(tok, tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"q": "Cats", "a": "sleep"}\n{"q": "The river runs", "a": "past"}\n')
    objective = GenerationObjective.from_data(None, tok, "contains", data_files=path, prompt="q", reference="a",
                                              max_new_tokens=2)  # fmt: skip
    assert objective.prompts == ["Cats", "The river runs"] and objective.references == ["sleep", "past"]
    assert objective.describe()["source"]["format"] == "json"
    assert objective.describe()["scorer"] == {"name": "contains", "ignore_case": True}


# --- bad input ---------------------------------------------------------------------------------------------------


def raising(prompt, generation):
    raise RuntimeError("no")


BAD = {
    "empty prompts": (dict(prompts=[]), ObjectiveError, "`prompts` is empty"),
    "one string": (dict(prompts="Cats"), ObjectiveError, "`prompts` must be a list of strings"),
    "not a string": (dict(prompts=["Cats", 3]), ObjectiveError, r"`prompts\[1\]` is int"),
    "references count": (dict(references=["a"]), ObjectiveError, "1 answers for 5 prompts"),
    "no new tokens": (dict(max_new_tokens=0), ConfigError, "`max_new_tokens` must be an integer >= 1, got 0"),
    "negative new tokens": (dict(max_new_tokens=-3), ConfigError, "`max_new_tokens` must be an integer >= 1"),
    "bool new tokens": (dict(max_new_tokens=True), ConfigError, "`max_new_tokens`"),
    "scorer raises": (dict(scorer=raising), ObjectiveError, "`scorer` 'raising' raised RuntimeError"),
    "scorer returns text": (dict(scorer=lambda p, g: "yes"), ObjectiveError, "returned str 'yes'"),
    "scorer returns nan": (dict(scorer=lambda p, g: float("nan")), ObjectiveError, "finite number"),
    "scorer returns None": (dict(scorer=lambda p, g: None), ObjectiveError, "returned NoneType"),
    "scorer arity": (dict(scorer=lambda p, g: 1.0, references=["a"] * 5), ObjectiveError, "raised TypeError"),
    "unknown scorer": (dict(scorer="bleu"), ConfigError, "`scorer` must be a callable"),
    "exact match without references": (dict(scorer="exact_match"), ConfigError, "pass `references=`"),
    "bad regex": (dict(scorer="regex:("), ConfigError, "not a valid regular expression"),
    "stop": (dict(stop=[""]), ConfigError, "`stop` must be a list of non-empty strings"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_when_the_objective_is_made(case, tok):
    kwargs = {"prompts": PROMPTS, "tokenizer": tok, "scorer": "refusal", **BAD[case][0]}
    with pytest.raises(BAD[case][1], match=BAD[case][2]) as raised:
        GenerationObjective(**kwargs)
    assert isinstance(raised.value, LandscapeError)


def test_prompts_too_long_for_the_context_are_refused_before_any_point(tok):
    objective = GenerationObjective(PROMPTS, tok, "refusal", max_new_tokens=60)
    with pytest.raises(ConfigError, match="needs .* positions but the model reads at most 64"):
        LandscapeProbe(build("llama", tok), objective, progress=False)


def test_a_model_without_an_lm_head_is_refused(tok):
    from transformers import LlamaConfig, LlamaModel

    model = LlamaModel(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   vocab_size=len(tok)))  # fmt: skip
    with pytest.raises(ModelError, match="no language-model head"):
        LandscapeProbe(model, GenerationObjective(PROMPTS, tok, "refusal"), progress=False)


def test_a_scorer_failing_at_a_grid_point_is_an_objective_error_and_the_weights_come_back(tok):
    model = build("llama", tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []

    def scorer(prompt, generation, reference):
        calls.append(1)
        if len(calls) > 7:  # the check at construction and the first point pass
            raise ValueError("bad answer")
        return 1.0

    objective = GenerationObjective(PROMPTS, tok, scorer, max_new_tokens=2, references=["a"] * 5)
    with pytest.raises(ObjectiveError, match="`scorer` 'test_a_scorer.*scorer' raised ValueError \\(bad answer\\)"):
        LandscapeProbe(model, objective, progress=False).line(steps=3, span=(-4, 4))
    assert len(calls) == 8
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
