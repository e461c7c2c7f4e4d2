"""CausalLMObjective: the masked token-level loss against an independent reference, invariances, inputs, errors."""

from __future__ import annotations

import logging
import random
import re

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

from hf_landscape import CausalLMObjective, CausalLMObjectiveConfig, LandscapeProbe, ModelError, ObjectiveError

LOGGER = "hf_landscape.objectives.causal_lm"


# --- independent references --------------------------------------------------------------------


@torch.no_grad()
def token_nll(model, ids: list[int], targets: list[int] | None = None) -> torch.Tensor:
    """NLL (float64) of predicting ids[j] (or targets[j]) from ids[:j], j = 1..len-1, one sequence, no padding."""
    model.eval()
    logits = model(torch.tensor([ids])).logits[0, :-1].double()
    target = torch.tensor((targets if targets is not None else ids)[1:])
    keep = target != -100
    out = torch.full((len(ids) - 1,), float("nan"), dtype=torch.float64)
    out[keep] = F.cross_entropy(logits[keep], target[keep], reduction="none")
    return out


def reference_loss(model, sequences: list[list[int]], labels: list[list[int]] | None = None) -> float:
    """Sum of per-token NLL over every sequence separately, divided by the number of predicted tokens."""
    total, count = 0.0, 0
    for k, ids in enumerate(sequences):
        nll = token_nll(model, ids, labels[k] if labels else None)
        total += float(torch.nansum(nll))
        count += int(torch.isfinite(nll).sum())
    return total / count


def tokenize(tokenizer, texts, limit=None):
    out = [tokenizer(t)["input_ids"] for t in texts]
    return [ids[:limit] for ids in out] if limit else out


def loss_of(model, objective) -> float:
    return LandscapeProbe(model, objective, progress=False).loss()


# --- the value ---------------------------------------------------------------------------------------


def test_fixture_texts_fit_in_the_context(tokenizer, texts):
    lengths = [len(ids) for ids in tokenize(tokenizer, texts)]
    assert max(lengths) < 64
    assert sum(n > 32 for n in lengths) >= 3
    assert min(lengths) >= 2


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_loss_equals_reference(arch, gpt2_model, llama_model, tokenizer, texts):
    model = gpt2_model() if arch == "gpt2" else llama_model()
    expected = reference_loss(model, tokenize(tokenizer, texts))
    assert loss_of(model, CausalLMObjective(texts, tokenizer)) == pytest.approx(expected, rel=1e-6)


def test_num_tokens_counts_predicted_tokens(tokenizer, texts):
    objective = CausalLMObjective(texts, tokenizer)
    assert objective.num_tokens == sum(len(ids) - 1 for ids in tokenize(tokenizer, texts))
    assert objective.num_examples == len(texts)


def test_loss_is_computed_in_eval_mode_and_train_mode_is_kept(gpt2_model, tokenizer, texts):
    model = gpt2_model()
    model.train()
    objective = CausalLMObjective(texts, tokenizer)
    probe = LandscapeProbe(model, objective, progress=False)
    first, second = probe.loss(), probe.loss()
    assert first == second  # no dropout
    assert model.training
    assert first == pytest.approx(reference_loss(model, tokenize(tokenizer, texts)), rel=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("batch_size", [1, 3, 12, 100])
def test_loss_does_not_depend_on_batch_size(arch, batch_size, gpt2_model, llama_model, tokenizer, texts):
    model = gpt2_model() if arch == "gpt2" else llama_model()
    base = loss_of(model, CausalLMObjective(texts, tokenizer, batch_size=len(texts)))
    assert loss_of(model, CausalLMObjective(texts, tokenizer, batch_size=batch_size)) == pytest.approx(base, rel=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_loss_does_not_depend_on_padding_side(arch, gpt2_model, llama_model, tokenizer, texts):
    model = gpt2_model() if arch == "gpt2" else llama_model()
    right = loss_of(model, CausalLMObjective(texts, tokenizer, batch_size=4, padding_side="right"))
    left = loss_of(model, CausalLMObjective(texts, tokenizer, batch_size=4, padding_side="left"))
    assert left == pytest.approx(right, rel=1e-6)
    assert left == pytest.approx(reference_loss(model, tokenize(tokenizer, texts)), rel=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_loss_does_not_depend_on_example_order(arch, gpt2_model, llama_model, tokenizer, texts):
    model = gpt2_model() if arch == "gpt2" else llama_model()
    shuffled = list(texts)
    random.Random(0).shuffle(shuffled)
    assert shuffled != texts
    base = loss_of(model, CausalLMObjective(texts, tokenizer, batch_size=3))
    assert loss_of(model, CausalLMObjective(shuffled, tokenizer, batch_size=3)) == pytest.approx(base, rel=1e-6)


def test_loss_does_not_depend_on_length_sorting(gpt2_model, tokenizer, texts):
    model = gpt2_model()
    a = loss_of(model, CausalLMObjective(texts, tokenizer, batch_size=5, sort_by_length=True))
    b = loss_of(model, CausalLMObjective(texts, tokenizer, batch_size=5, sort_by_length=False, padding_side="left"))
    assert a == pytest.approx(b, rel=1e-6)


def test_prompt_completion_masks_prompt_tokens(llama_model, tokenizer):
    model = llama_model()
    pairs = [
        ("Question: what is a loss landscape?", " It is the loss as a function of the weights."),
        ("Say hello:", " Hello world!"),
        ("The river", " runs past the old mill."),
    ]
    sequences, labels = [], []
    for prompt, completion in pairs:
        p, c = tokenizer(prompt)["input_ids"], tokenizer(completion, add_special_tokens=False)["input_ids"]
        sequences.append(p + c)
        labels.append([-100] * len(p) + c)
    objective = CausalLMObjective(pairs, tokenizer, batch_size=2, padding_side="left")
    assert objective.num_tokens == sum(len(tokenizer(c)["input_ids"]) for _, c in pairs)
    expected = reference_loss(model, sequences, labels)
    assert loss_of(model, objective) == pytest.approx(expected, rel=1e-6)
    # it is not the loss over every token
    assert expected != pytest.approx(reference_loss(model, sequences), rel=1e-3)


def test_prompt_completion_dicts_equal_tuples(gpt2_model, tokenizer):
    model = gpt2_model()
    pairs = [("Say hello:", " Hello world!"), ("The river", " runs past the old mill.")]
    as_dicts = [{"prompt": p, "completion": c} for p, c in pairs]
    assert loss_of(model, CausalLMObjective(as_dicts, tokenizer)) == loss_of(model, CausalLMObjective(pairs, tokenizer))


def test_pretokenized_input_with_masked_labels_and_attention_mask(gpt2_model):
    model = gpt2_model()
    input_ids = [[5, 17, 42, 8, 99, 0, 0], [7, 7, 120, 33, 2, 250, 14]]
    attention_mask = [[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]]
    labels = [[5, 17, -100, 8, 99, -100, -100], [-100, -100, 120, 33, 2, 250, -100]]
    objective = CausalLMObjective(
        {
            "input_ids": torch.tensor(input_ids),
            "attention_mask": torch.tensor(attention_mask),
            "labels": torch.tensor(labels),
        },
        batch_size=1,
    )
    # predicted tokens: first sequence 17, 8, 99 (42 masked, padding dropped); second 120, 33, 2, 250
    assert objective.num_tokens == 7
    sequences = [[5, 17, 42, 8, 99], input_ids[1]]
    kept_labels = [[5, 17, -100, 8, 99], labels[1]]
    expected = reference_loss(model, sequences, kept_labels)
    assert loss_of(model, objective) == pytest.approx(expected, rel=1e-6)


def test_pretokenized_lists_without_labels_use_input_ids(llama_model):
    model = llama_model()
    ids = [[1, 2, 3, 4, 5, 6], [9, 8, 7]]
    objective = CausalLMObjective({"input_ids": ids})
    assert objective.num_tokens == 7
    assert loss_of(model, objective) == pytest.approx(reference_loss(model, ids), rel=1e-6)


def test_pretokenized_length_mismatch_is_an_error():
    with pytest.raises(ObjectiveError, match="lengths"):
        CausalLMObjective({"input_ids": [[1, 2, 3]], "labels": [[1, 2]]})


def test_dataset_with_chosen_text_column(gpt2_model, tokenizer, texts):
    model = gpt2_model()
    ds = datasets.Dataset.from_dict({"body": texts, "id": list(range(len(texts)))})
    objective = CausalLMObjective(ds, tokenizer, text_column="body")
    assert objective.num_tokens == CausalLMObjective(texts, tokenizer).num_tokens
    assert loss_of(model, objective) == pytest.approx(reference_loss(model, tokenize(tokenizer, texts)), rel=1e-6)
    assert objective.describe()["source"]["type"] == "datasets.Dataset"
    assert objective.describe()["source"]["num_rows"] == len(texts)


def test_dataset_without_the_text_column_is_an_error(tokenizer, texts):
    ds = datasets.Dataset.from_dict({"body": texts})
    with pytest.raises(ObjectiveError, match="text_column"):
        CausalLMObjective(ds, tokenizer)


def test_tokenizer_without_pad_token_works(gpt2_model, tokenizer, texts):
    assert tokenizer.pad_token is None
    model = gpt2_model()
    loss = loss_of(model, CausalLMObjective(texts, tokenizer, batch_size=5))
    assert loss == pytest.approx(reference_loss(model, tokenize(tokenizer, texts)), rel=1e-6)


def test_tokenizer_without_pad_or_eos_token_works(gpt2_model, tokenizer, texts):
    bare = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer)
    assert bare.pad_token is None and bare.eos_token is None
    model = gpt2_model()
    loss = loss_of(model, CausalLMObjective(texts, bare, batch_size=5, padding_side="left"))
    assert loss == pytest.approx(reference_loss(model, tokenize(tokenizer, texts)), rel=1e-6)


def test_truncation_to_max_length_warns(gpt2_model, tokenizer, texts, caplog):
    lengths = [len(ids) for ids in tokenize(tokenizer, texts)]
    n_long = sum(n > 32 for n in lengths)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        objective = CausalLMObjective(texts, tokenizer, max_length=32)
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any(f"{n_long} of {len(texts)} sequences" in m and "`max_length`" in m for m in messages), messages
    assert objective.num_tokens == sum(min(n, 32) - 1 for n in lengths)
    model = gpt2_model()
    assert loss_of(model, objective) == pytest.approx(reference_loss(model, tokenize(tokenizer, texts, 32)), rel=1e-6)


def test_no_warning_when_nothing_is_truncated(gpt2_model, tokenizer, texts, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        LandscapeProbe(gpt2_model(), CausalLMObjective(texts, tokenizer, max_length=64), progress=False)
    assert not [r for r in caplog.records if r.name == LOGGER]


def test_sequences_longer_than_the_context_are_truncated(gpt2_model, tokenizer, texts, caplog):
    long_text = " ".join(texts)
    assert len(tokenizer(long_text)["input_ids"]) > 64
    data = [long_text, texts[0]]
    objective = CausalLMObjective(data, tokenizer, max_length=128)
    model = gpt2_model()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        loss = loss_of(model, objective)
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("context" in m and "(64 tokens)" in m for m in messages), messages
    assert objective.num_tokens == 63 + len(tokenizer(texts[0])["input_ids"]) - 1
    assert loss == pytest.approx(reference_loss(model, tokenize(tokenizer, data, 64)), rel=1e-6)


def test_per_sequence_and_per_token_losses(llama_model, tokenizer, texts):
    model = llama_model()
    objective = CausalLMObjective(texts, tokenizer, batch_size=5, padding_side="left")
    result = LandscapeProbe(model, objective, progress=False).evaluate()
    sequences = tokenize(tokenizer, texts)
    assert len(result.token_losses) == len(texts)
    for i, ids in enumerate(sequences):
        expected = token_nll(model, ids).numpy()
        assert result.token_losses[i].shape == (len(ids) - 1,)
        np.testing.assert_allclose(result.token_losses[i], expected, rtol=1e-5, atol=1e-6)
        assert result.sequence_losses[i] == pytest.approx(expected.mean(), rel=1e-6)
    flat = np.concatenate(result.token_losses)
    assert np.isfinite(flat).sum() == objective.num_tokens
    assert np.nansum(flat) / np.isfinite(flat).sum() == pytest.approx(result.loss, rel=1e-6)
    weighted = sum(s * (len(ids) - 1) for s, ids in zip(result.sequence_losses, sequences)) / objective.num_tokens
    assert weighted == pytest.approx(result.loss, rel=1e-6)


def test_per_token_losses_are_nan_where_masked(gpt2_model, tokenizer):
    pairs = [("Say hello:", " Hello world!"), ("The river", " runs past the old mill.")]
    result = LandscapeProbe(gpt2_model(), CausalLMObjective(pairs, tokenizer), progress=False).evaluate()
    for (prompt, completion), tokens in zip(pairs, result.token_losses):
        n_prompt = len(tokenizer(prompt)["input_ids"])
        n_completion = len(tokenizer(completion)["input_ids"])
        assert tokens.shape == (n_prompt + n_completion - 1,)
        assert np.isnan(tokens[: n_prompt - 1]).all()
        assert np.isfinite(tokens[n_prompt - 1 :]).all()


def test_empty_text_among_others_has_no_token_losses(gpt2_model, tokenizer, texts):
    data = ["", texts[1], texts[2]]
    objective = CausalLMObjective(data, tokenizer, padding_side="right")
    result = LandscapeProbe(gpt2_model(), objective, progress=False).evaluate()
    assert [len(t) for t in result.token_losses] == [0] + [len(tokenizer(t)["input_ids"]) - 1 for t in data[1:]]


def test_empty_text_among_others_does_not_change_the_loss(gpt2_model, tokenizer, texts):
    model = gpt2_model()
    with_empty = loss_of(model, CausalLMObjective(["", *texts[:4]], tokenizer, batch_size=8))
    assert with_empty == pytest.approx(loss_of(model, CausalLMObjective(texts[:4], tokenizer)), rel=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_empty_text_in_a_batch_of_its_own(arch, gpt2_model, llama_model, tokenizer, texts):
    model = gpt2_model() if arch == "gpt2" else llama_model()
    with_empty = loss_of(model, CausalLMObjective(["", *texts[:4]], tokenizer, batch_size=1))
    assert with_empty == pytest.approx(loss_of(model, CausalLMObjective(texts[:4], tokenizer)), rel=1e-6)


def test_fingerprint_depends_on_tokens_only(tokenizer, texts):
    a = CausalLMObjective(texts, tokenizer, batch_size=2)
    b = CausalLMObjective(texts, tokenizer, batch_size=7, padding_side="left")
    c = CausalLMObjective(texts[:-1], tokenizer)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    assert re.fullmatch(r"[0-9a-f]{16}", a.fingerprint())


def test_fingerprint_tells_apart_one_token_and_one_masked_label():
    ids = [[5, 17, 42, 8], [7, 7, 120]]
    base = CausalLMObjective({"input_ids": ids, "labels": ids})
    same = CausalLMObjective({"input_ids": [list(r) for r in ids], "labels": [list(r) for r in ids]}, batch_size=1)
    token = CausalLMObjective({"input_ids": [[5, 17, 43, 8], [7, 7, 120]], "labels": [[5, 17, 43, 8], [7, 7, 120]]})
    masked = CausalLMObjective({"input_ids": ids, "labels": [[5, 17, -100, 8], [7, 7, 120]]})
    split = CausalLMObjective({"input_ids": [[5, 17], [42, 8, 7, 7, 120]], "labels": [[5, 17], [42, 8, 7, 7, 120]]})
    prints = [o.fingerprint() for o in (base, token, masked, split)]
    assert same.fingerprint() == base.fingerprint()
    assert len(set(prints)) == 4


def test_describe_reports_config_and_amount_of_data(tokenizer, texts):
    d = CausalLMObjective(texts, tokenizer, max_length=64).describe()
    assert d["type"] == "CausalLMObjective"
    assert d["config"]["max_length"] == 64
    assert d["num_examples"] == len(texts)
    assert d["num_tokens"] == sum(len(ids) - 1 for ids in tokenize(tokenizer, texts))


def test_explicit_config_is_used(tokenizer, texts):
    config = CausalLMObjectiveConfig(max_length=16, batch_size=2)
    objective = CausalLMObjective(texts, tokenizer, config=config)
    assert objective.config is config
    assert objective.num_tokens == sum(min(len(ids), 16) - 1 for ids in tokenize(tokenizer, texts))


# --- errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ([], "non-empty"),
        (["", "", ""], "only empty strings"),
        ("a single string", "single string"),
        (["Why?", 3], r"`data\[1\]` is 3 \(int\), not a string"),
    ],
)
def test_bad_text_data_is_an_objective_error(tokenizer, data, match):
    with pytest.raises(ObjectiveError, match=match) as info:
        CausalLMObjective(data, tokenizer)
    assert isinstance(info.value, ValueError)


def test_all_labels_masked_is_an_objective_error():
    data = {"input_ids": [[1, 2, 3], [4, 5]], "labels": [[-100, -100, -100], [4, -100]]}
    with pytest.raises(ObjectiveError, match="masked") as info:
        CausalLMObjective(data)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("label", [300, -5])
def test_a_label_outside_the_vocabulary_is_an_objective_error(gpt2_model, label):
    model = gpt2_model()
    vocab = model.get_output_embeddings().weight.shape[0]
    data = {"input_ids": [[1, 2, 3], [4, 5, 6]], "labels": [[1, 2, 3], [4, vocab + label if label > 0 else label, 6]]}
    objective = CausalLMObjective(data)
    with pytest.raises(ObjectiveError, match=f"Example 1 has label {data['labels'][1][1]}, outside the model's vocab"):
        objective.bind(model)


def test_only_single_token_sequences_is_an_objective_error(tokenizer):
    with pytest.raises(ObjectiveError):
        CausalLMObjective({"input_ids": [[1], [2]]})


def test_text_without_tokenizer_is_an_objective_error(texts):
    with pytest.raises(ObjectiveError, match="tokenizer"):
        CausalLMObjective(texts)


def test_model_without_lm_head_is_a_model_error(tokenizer, texts):
    base = GPT2Model(
        GPT2Config(
            n_layer=1, n_embd=32, n_head=2, vocab_size=len(tokenizer), n_positions=64, bos_token_id=0, eos_token_id=0
        )
    )
    objective = CausalLMObjective(texts, tokenizer)
    with pytest.raises(ModelError, match="language-model head") as info:
        objective.bind(base)
    assert isinstance(info.value, TypeError)
    with pytest.raises(ModelError):
        LandscapeProbe(base, objective, progress=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_unpadded_batches_skip_the_gather_with_identical_losses(gpt2_model, dtype):
    model = gpt2_model().to(dtype).eval()
    ids = [[(3 * i + 5 * j) % 90 + 1 for j in range(10)] for i in range(6)]  # equal lengths: no padding
    objective = CausalLMObjective({"input_ids": ids}, batch_size=4)
    fast = objective.evaluate(model, details=True)
    assert all(b.full for b in objective._batches)
    for b in objective._batches:
        b.full = False  # the boolean-gather path
    slow = objective.evaluate(model, details=True)
    assert fast.loss == slow.loss
    for a, b in zip(fast.token_losses, slow.token_losses):
        np.testing.assert_array_equal(a, b)


def test_masked_labels_without_padding_take_the_gather_path(gpt2_model):
    model = gpt2_model()
    ids = [[(3 * i + 5 * j) % 90 + 1 for j in range(10)] for i in range(4)]
    labels = [[-100] * 4 + x[4:] for x in ids]  # a masked prompt, no padding
    objective = CausalLMObjective({"input_ids": ids, "labels": labels}, batch_size=4)
    loss = objective.evaluate(model.eval()).loss
    assert not objective._batches[0].full
    assert loss == pytest.approx(reference_loss(model, ids, labels), rel=1e-6)


# --- the LM head computed at an aligned width (a GPU speed path, forced here on the CPU) -------------------


@pytest.fixture
def aligned_everywhere(monkeypatch):
    """Make `aligned_output_head` pad every plain nn.Linear head, as it does for half precision on a GPU."""
    from hf_landscape.objectives import nll as causal_lm

    monkeypatch.setattr(causal_lm, "_pads_head", lambda head: type(head) is torch.nn.Linear)
    return causal_lm


def test_aligned_head_computes_a_padded_product_and_views_the_vocabulary(gpt2_model, aligned_everywhere):
    model = gpt2_model().eval()  # vocabulary 300: padded to 320
    head = model.get_output_embeddings()
    x = torch.randn(2, 5, model.config.n_embd)
    with aligned_everywhere.aligned_output_head(model):
        out = head(x)
    assert out.shape == (2, 5, 300) and out.stride(-2) == 320
    torch.testing.assert_close(out, head(x), rtol=0, atol=1e-6)
    assert "forward" not in head.__dict__


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_aligned_head_gives_the_same_loss_and_token_losses(
    arch, gpt2_model, llama_model, tokenizer, texts, aligned_everywhere, monkeypatch
):
    model = {"gpt2": gpt2_model, "llama": llama_model}[arch]().eval()
    objective = CausalLMObjective(texts, tokenizer, batch_size=3, padding_side="left")
    calls = []
    original = aligned_everywhere._aligned_forward

    def counting(head, x):
        calls.append(1)
        return original(head, x)

    monkeypatch.setattr(aligned_everywhere, "_aligned_forward", counting)
    padded = objective.evaluate(model, details=True)
    assert len(calls) == len(objective._batches)  # every batch went through the padded head
    monkeypatch.setattr(aligned_everywhere, "_pads_head", lambda head: False)
    plain = objective.evaluate(model, details=True)
    assert padded.loss == pytest.approx(plain.loss, rel=1e-6)
    for a, b in zip(padded.token_losses, plain.token_losses):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_aligned_head_under_stacked_points_equals_one_point(gpt2_model, tokenizer, texts, aligned_everywhere):
    model = gpt2_model()
    objective = CausalLMObjective(texts, tokenizer, batch_size=4)
    one = LandscapeProbe(model, objective, progress=False, points_per_forward=1).plane(steps=(3, 3), seed=2)
    many = LandscapeProbe(model, objective, progress=False, points_per_forward=5).plane(steps=(3, 3), seed=2)
    np.testing.assert_allclose(many.values, one.values, rtol=1e-6)
    assert "forward" not in model.get_output_embeddings().__dict__


def test_stacked_points_go_through_the_aligned_head(gpt2_model, tokenizer, texts, aligned_everywhere, monkeypatch):
    model = gpt2_model().eval()
    objective = CausalLMObjective(texts, tokenizer, batch_size=4)
    objective.bind(model)
    calls = []
    original = aligned_everywhere._aligned_forward
    monkeypatch.setattr(aligned_everywhere, "_aligned_forward", lambda head, x: calls.append(1) or original(head, x))
    with torch.no_grad():
        objective.loss_points(model, lambda inputs: model(**inputs).logits.unsqueeze(0), 1)
    assert len(calls) == len(objective._batches)


def test_aligned_head_is_removed_after_an_exception(gpt2_model, tokenizer, texts, aligned_everywhere):
    model = gpt2_model().eval()
    objective = CausalLMObjective(texts, tokenizer)
    objective.bind(model)
    objective._batches[0].input_ids = objective._batches[0].input_ids + 10_000  # out of the vocabulary
    with pytest.raises(IndexError):
        objective.evaluate(model)
    assert "forward" not in model.get_output_embeddings().__dict__


@pytest.mark.parametrize(
    ("device", "dtype", "rows", "expected"),
    [
        ("cuda", torch.bfloat16, 50257, True),
        ("cuda", torch.float16, 300, True),
        ("cuda", torch.bfloat16, 50304, False),  # already aligned
        ("cuda", torch.float32, 50257, False),  # float32 runs at the same speed either way
        ("cpu", torch.bfloat16, 50257, False),
    ],
)
def test_alignment_only_where_it_pays(device, dtype, rows, expected):
    from hf_landscape.objectives.nll import _alignment_pays

    assert _alignment_pays(device, dtype, rows) is expected


def test_alignment_pays_for_float32_under_cuda_autocast():
    from hf_landscape.objectives.nll import _alignment_pays

    assert _alignment_pays("cuda", torch.float32, 50257, autocast=True)


def test_a_head_whose_forward_is_already_replaced_is_left_alone(monkeypatch):
    from hf_landscape.objectives import nll as causal_lm

    monkeypatch.setattr(causal_lm, "_alignment_pays", lambda *args: True)  # as for bf16 on a GPU
    head = torch.nn.Linear(8, 300, bias=False)
    assert causal_lm._pads_head(head) is True
    head.forward = lambda x: x
    assert "forward" in head.__dict__ and causal_lm._pads_head(head) is False


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_loss_tensor_is_the_evaluated_loss_bitwise(gpt2_model, tokenizer, texts, dtype):
    model = gpt2_model().to(dtype).eval()
    objective = CausalLMObjective(texts, tokenizer, batch_size=3, padding_side="left")
    with torch.inference_mode():
        value = objective.loss_tensor(model)
        assert value.dtype == torch.float64 and value.dim() == 0
        assert value.item() == objective.evaluate(model, details=True).loss == objective.evaluate(model).loss


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_full_batch_logsumexp_loss_equals_the_log_softmax_loss(gpt2_model, dtype):
    from hf_landscape.objectives.nll import _full_nll
    from hf_landscape.objectives.nll import token_nll as _token_nll

    model = gpt2_model().to(dtype).eval()
    ids = [[(3 * i + 5 * j) % 90 + 1 for j in range(10)] for i in range(6)]  # equal lengths: full batches
    objective = CausalLMObjective({"input_ids": ids}, batch_size=6)
    objective.bind(model)
    (b,) = objective._batches
    with torch.inference_mode():
        logits = model(input_ids=b.input_ids).logits
        expected = _token_nll(logits, b)
        got = _full_nll(logits, b.targets.view(b.mask.shape))
    assert got.dtype == torch.float32 and got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_compiling_probes_use_the_compiled_full_batch_loss(gpt2_model, monkeypatch):
    from hf_landscape.engine import compiled_forward
    from hf_landscape.objectives import nll as causal_lm

    calls = []
    monkeypatch.setattr(causal_lm, "_compiled_full_nll", lambda: lambda *a: calls.append(1) or causal_lm._full_nll(*a))
    model = gpt2_model().eval()
    ids = [[(3 * i + 5 * j) % 90 + 1 for j in range(10)] for i in range(6)]
    objective = CausalLMObjective({"input_ids": ids}, batch_size=6)
    plain = objective.evaluate(model).loss
    assert calls == []
    with compiled_forward(model, model.forward):  # the model's own forward standing in for a compiled one
        compiled = objective.evaluate(model).loss
    assert calls == [1]
    assert compiled == pytest.approx(plain, rel=1e-6)


def test_num_tokens_is_counted_once_per_set_of_examples(monkeypatch):
    import hf_landscape.objectives.text_data as causal_lm

    objective = CausalLMObjective({"input_ids": [[1, 2, 3, 4], [5, 6, 7]]})
    calls = {"n": 0}
    count = causal_lm.count_labels

    def counting(labels):
        calls["n"] += 1
        return count(labels)

    monkeypatch.setattr(causal_lm, "count_labels", counting)
    assert objective.num_tokens == 5 and objective.num_tokens == 5
    assert calls["n"] == 2  # once per example, not once per call
    restricted = objective.restricted(positions=[1])  # the second token of each sequence only
    assert restricted.num_tokens == 2 and objective.num_tokens == 5


# --- where the data comes from, and how it is read -----------------------------------------------------------


def test_a_dataset_source_is_described_with_its_provenance(tokenizer, texts):
    info = datasets.DatasetInfo(dataset_name="tiny_texts")
    ds = datasets.Dataset.from_dict({"text": texts[:3]}, info=info, split="validation")
    source = CausalLMObjective(ds, tokenizer).describe()["source"]
    assert source == {
        "type": "datasets.Dataset",
        "num_rows": 3,
        "fingerprint": ds._fingerprint,
        "dataset_name": "tiny_texts",
        "split": "validation",
    }
    plain = datasets.Dataset.from_dict({"text": texts[:3]})
    assert CausalLMObjective(plain, tokenizer).describe()["source"]["split"] is None
    assert CausalLMObjective(list(texts[:3]), tokenizer).describe()["source"] == {"type": "list"}
    assert CausalLMObjective(tuple(texts[:3]), tokenizer).describe()["source"] == {"type": "tuple"}


def test_a_list_with_a_column_names_attribute_is_still_a_list(tokenizer, texts):
    class Rows(list):
        column_names = ["text"]  # no num_rows: not a dataset

    objective = CausalLMObjective(Rows(texts[:3]), tokenizer)
    assert objective.describe()["source"] == {"type": "Rows"}
    assert objective.num_examples == 3


def test_a_dataset_like_object_with_only_columns_and_rows_is_described_with_what_it_has(tokenizer, texts):
    class Table:
        column_names = ["text"]
        num_rows = 3

        def __getitem__(self, column):
            return texts[:3]

    objective = CausalLMObjective(Table(), tokenizer)
    assert objective.num_examples == 3
    assert objective.describe()["source"] == {
        "type": "datasets.Dataset",
        "num_rows": 3,
        "fingerprint": None,
        "dataset_name": None,
        "split": None,
    }


def test_dataset_columns_prompt_completion_and_pretokenized(gpt2_model, tokenizer):
    model = gpt2_model()
    pairs = datasets.Dataset.from_dict({"prompt": ["The river", "Cats"], "completion": [" runs past.", " sleep."]})
    as_tuples = CausalLMObjective([("The river", " runs past."), ("Cats", " sleep.")], tokenizer)
    assert loss_of(model, CausalLMObjective(pairs, tokenizer)) == loss_of(model, as_tuples)
    ids = datasets.Dataset.from_dict(
        {"input_ids": [[5, 17, 42, 8], [7, 7, 120]], "labels": [[5, -100, 42, 8], [7, 7, 120]]}
    )
    assert CausalLMObjective(ids).num_tokens == 4
    both = datasets.Dataset.from_dict({"text": ["Hello world!"], "prompt": ["x"], "completion": ["y"]})
    assert CausalLMObjective(both, tokenizer).examples[0][0] == tokenizer("Hello world!")["input_ids"]  # text first
    for columns in ({"prompt": ["x"]}, {"completion": ["y"]}):
        with pytest.raises(ObjectiveError, match="`text_column`"):
            CausalLMObjective(datasets.Dataset.from_dict(columns), tokenizer)


@pytest.fixture(scope="module")
def bos_tokenizer():
    """The test tokenizer, made to add its EOS token before every text (as Llama's adds BOS)."""
    from testing_utils import EOS, train_tokenizer
    from tokenizers.processors import TemplateProcessing

    tok = train_tokenizer()
    eos_id = tok.convert_tokens_to_ids(EOS)
    tok.backend_tokenizer.post_processor = TemplateProcessing(single=f"{EOS} $A", special_tokens=[(EOS, eos_id)])
    return tok


def test_special_tokens_are_added_to_texts_and_prompts_only(bos_tokenizer):
    eos = bos_tokenizer.eos_token_id
    plain = bos_tokenizer("Cats sleep.", add_special_tokens=False)["input_ids"]
    assert CausalLMObjective(["Cats sleep."], bos_tokenizer).examples[0][0] == [eos, *plain]
    assert CausalLMObjective(["Cats sleep."], bos_tokenizer, add_special_tokens=False).examples[0][0] == plain
    ((ids, labels),) = CausalLMObjective([("Cats", " sleep.")], bos_tokenizer).examples
    prompt = bos_tokenizer("Cats", add_special_tokens=False)["input_ids"]
    completion = bos_tokenizer(" sleep.", add_special_tokens=False)["input_ids"]
    assert ids == [eos, *prompt, *completion]  # BOS before the prompt, never before the completion
    assert labels == [-100] * (1 + len(prompt)) + completion
    ((ids, _),) = CausalLMObjective([("Cats", " sleep.")], bos_tokenizer, add_special_tokens=False).examples
    assert ids == [*prompt, *completion]


@pytest.mark.parametrize("item", [{"completion": "a"}, {"text": "a"}, ("a", "b", "c"), ["a", 1]])
def test_items_that_are_neither_texts_nor_pairs_are_refused(tokenizer, item):
    with pytest.raises(ObjectiveError, match="neither a string nor a"):
        CausalLMObjective([item, ("a", "b")], tokenizer)


def test_context_length_is_read_from_any_of_the_config_names():
    from types import SimpleNamespace

    from hf_landscape.objectives.text_data import context_length as _context_length

    for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        assert _context_length(SimpleNamespace(config=SimpleNamespace(**{name: 40}))) == 40, name
    assert _context_length(SimpleNamespace(config=SimpleNamespace(max_position_embeddings=0, n_ctx=16))) == 16
    assert _context_length(SimpleNamespace(config=SimpleNamespace(n_positions=1))) == 1
    assert _context_length(SimpleNamespace(config=SimpleNamespace(n_positions="64", seq_length=None))) is None
    assert _context_length(SimpleNamespace()) is None  # no config at all


def test_labels_at_the_edges_of_the_vocabulary(gpt2_model):
    model = gpt2_model()
    vocab = model.config.vocab_size
    ok = CausalLMObjective({"input_ids": [[1, 2, 3]], "labels": [[1, 0, vocab - 1]]})
    assert np.isfinite(loss_of(model, ok))
    for bad in (vocab, -5):
        objective = CausalLMObjective({"input_ids": [[1, 2, 3]], "labels": [[1, 2, bad]]})
        with pytest.raises(ObjectiveError, match=f"label {bad}, outside"):
            loss_of(model, objective)


def test_input_ids_at_the_edges_of_the_vocabulary(gpt2_model):
    model = gpt2_model()
    vocab = model.config.vocab_size
    assert np.isfinite(loss_of(model, CausalLMObjective({"input_ids": [[0, 1, vocab - 1]]})))
    with pytest.raises(ObjectiveError, match=f"input id {vocab}, outside the model's vocabulary of {vocab}"):
        loss_of(model, CausalLMObjective({"input_ids": [[1, 2, vocab]]}))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"input_ids": [5]}, r"`input_ids\[0\]` must be a list of integers"),
        ({"input_ids": [[1, 2.5, 3]]}, r"example 0 has input id 2\.5 at position 1"),
        ({"input_ids": [[1, True, 3]]}, r"example 0 has input id True at position 1"),
        ({"input_ids": [[1, -100, 3]]}, r"example 0 has input id -100; token ids are >= 0"),
        ({"input_ids": [[1, 2, 3]], "attention_mask": [[1, "x", 1]]}, r"`attention_mask` value 'x' at position 1"),
        ({"input_ids": [[1, 2, 3]], "labels": [[1, 2, 3.5]]}, r"`labels` value 3\.5 at position 2"),
    ],
    ids=["row not a list", "float id", "bool id", "negative id", "mask value", "label value"],
)
def test_bad_pretokenized_data_is_refused_naming_the_field_and_the_value(data, match):
    with pytest.raises(ObjectiveError, match=match):
        CausalLMObjective(data)


def test_pretokenized_rows_may_be_tensors_or_arrays():
    data = {"input_ids": [torch.tensor([5, 17, 42]), np.array([7, 8])], "labels": [np.array([5, -100, 42]), [7, 8]]}
    assert CausalLMObjective(data).examples == [([5, 17, 42], [5, -100, 42]), ([7, 8], [7, 8])]


@pytest.mark.parametrize(
    ("pad", "eos", "expected"), [(5, 7, 5), (None, 7, 7), (None, None, 0)], ids=["pad", "eos", "neither"]
)
def test_padding_takes_the_tokenizers_pad_then_its_eos_then_0(pad, eos, expected):
    from types import SimpleNamespace

    from hf_landscape.objectives.text_data import pad_id

    assert pad_id(SimpleNamespace(pad_token_id=pad, eos_token_id=eos)) == expected


def batches_of(lengths: list[int], **options):
    from hf_landscape.objectives.text_data import make_batches

    examples = [(list(range(1, n + 1)), list(range(1, n + 1))) for n in lengths]
    return make_batches(examples, torch.device("cpu"), padding_side="right", pad=0, **options)


def test_batches_hold_the_longest_sequences_first():
    assert [b.index for b in batches_of([2, 4, 3], batch_size=2, sort_by_length=True)] == [[1, 2], [0]]
    assert [b.index for b in batches_of([2, 4, 3], batch_size=2, sort_by_length=False)] == [[0, 1], [2]]


def test_a_batch_without_padding_passes_no_attention_mask_or_positions():
    even, padded = batches_of([3, 3, 4, 2], batch_size=2, sort_by_length=False)
    assert even.attention_mask is None and even.position_ids is None
    assert padded.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert padded.position_ids.tolist() == [[0, 1, 2, 3], [0, 1, 1, 1]]


def test_attention_mask_drops_padding_anywhere(gpt2_model):
    model = gpt2_model()
    left = CausalLMObjective({"input_ids": [[0, 0, 5, 17, 42, 8]], "attention_mask": [[0, 0, 1, 1, 1, 1]]})
    assert left.num_tokens == 3 and left.examples == [([5, 17, 42, 8], [5, 17, 42, 8])]
    assert loss_of(model, left) == pytest.approx(reference_loss(model, [[5, 17, 42, 8]]), rel=1e-6)


def test_pretokenized_fields_with_other_numbers_of_rows_are_refused():
    with pytest.raises(ObjectiveError, match="different numbers of rows"):
        CausalLMObjective({"input_ids": [[1, 2, 3], [4, 5, 6]], "attention_mask": [[1, 1, 1]]})
    with pytest.raises(ObjectiveError, match="different numbers of rows"):
        CausalLMObjective({"input_ids": [[1, 2, 3], [4, 5, 6]], "labels": [[1, 2, 3]]})


def test_a_two_token_sequence_predicts_one_token(gpt2_model):
    model = gpt2_model()
    objective = CausalLMObjective({"input_ids": [[5, 17], [7, 7, 120, 33]]}, batch_size=2)
    assert objective.num_tokens == 4
    assert loss_of(model, objective) == pytest.approx(reference_loss(model, [[5, 17], [7, 7, 120, 33]]), rel=1e-6)


def test_sequences_exactly_at_the_limit_are_not_truncated(tokenizer, caplog):
    ids = [[3, 4, 5, 6], [7, 8, 9]]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        objective = CausalLMObjective({"input_ids": ids}, max_length=4)
    assert "truncated" not in caplog.text and objective.examples[0][0] == [3, 4, 5, 6]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        CausalLMObjective({"input_ids": ids}, max_length=3)
    assert "1 of 2 sequences are longer than `max_length` (3 tokens)" in caplog.text


def test_sequences_longer_than_the_context_are_cut_at_binding(gpt2_model, caplog):
    model = gpt2_model(n_positions=4)
    objective = CausalLMObjective({"input_ids": [[3, 4, 5, 6, 7, 8], [1, 2, 3]]})
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        objective.bind(model)
    assert "longer than the model's context (4 tokens)" in caplog.text
    assert objective.num_tokens == 3 + 2


# --- options and description --------------------------------------------------------------------------------


def test_defaults_are_the_configs(tokenizer, texts):
    assert CausalLMObjective(texts, tokenizer).config == CausalLMObjectiveConfig()
    assert CausalLMObjectiveConfig() == CausalLMObjectiveConfig(
        max_length=128,
        batch_size=8,
        padding_side="right",
        text_column="text",
        add_special_tokens=True,
        sort_by_length=True,
    )


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"batch_size": True}, "batch_size"),
        ({"batch_size": "8"}, "batch_size"),
        ({"max_length": 1}, "max_length"),
        ({"padding_side": "middle"}, "padding_side"),
        ({"text_column": ""}, "text_column"),
        ({"text_column": 3}, "text_column"),
    ],
)
def test_bad_causal_lm_options_are_config_errors(kwargs, argument):
    from hf_landscape import ConfigError

    with pytest.raises(ConfigError, match=f"`{argument}`"):
        CausalLMObjectiveConfig(**kwargs)


def test_the_shortest_allowed_options():
    config = CausalLMObjectiveConfig(max_length=2, batch_size=1)
    assert (config.max_length, config.batch_size) == (2, 1)


def test_describe_names_the_tokenizer(tokenizer, texts):
    tokenizer.name_or_path = ""
    assert CausalLMObjective(texts, tokenizer).describe()["tokenizer"] == type(tokenizer).__name__
    tokenizer.name_or_path = "org/tokenizer"
    try:
        assert CausalLMObjective(texts, tokenizer).describe()["tokenizer"] == "org/tokenizer"
    finally:
        tokenizer.name_or_path = ""
    assert "tokenizer" not in CausalLMObjective({"input_ids": [[1, 2, 3]]}).describe()


def test_restricted_objective_describes_its_subset(tokenizer, texts):
    objective = CausalLMObjective(texts[:3], tokenizer)
    ids = sorted({t for _, labels in objective.examples for t in labels})
    sub = objective.restricted(token_ids=ids[::-1], positions=[2, 1])
    assert sub.describe()["source"] == {
        "type": "list",
        "restricted": {"token_ids": ids, "positions": [1, 2], "mask": False},
    }
    masked = objective.restricted(mask=[[True] * len(x) for x, _ in objective.examples])
    assert masked.describe()["source"]["restricted"] == {"token_ids": None, "positions": None, "mask": True}


def test_fingerprint_is_pinned():
    # recorded in checkpoints' keys and surfaces' metadata: a change makes saved partial grids unresumable
    objective = CausalLMObjective({"input_ids": [[1, 2, 3], [4, 5]], "labels": [[1, -100, 3], [4, 5]]})
    assert objective.fingerprint() == "a84a54ab41ec9d0e"


def test_expecting_a_dtype_before_binding_is_a_no_op(tokenizer, texts):
    objective = CausalLMObjective(texts[:2], tokenizer)
    objective.expect_dtype(torch.bfloat16)  # the probe may call it before the first evaluation


# --- the loss's arithmetic ----------------------------------------------------------------------------------


def test_loss_is_the_float64_sum_of_its_token_losses_over_their_count(gpt2_model, tokenizer, texts):
    model = gpt2_model().double().eval()
    objective = CausalLMObjective(texts, tokenizer, batch_size=5)
    plain = objective.evaluate(model)
    assert plain.sequence_losses is None and plain.token_losses is None  # details only when asked
    detailed = objective.evaluate(model, details=True)
    tokens = np.concatenate(detailed.token_losses)
    assert all(t.dtype == np.float64 for t in detailed.token_losses)
    assert plain.loss == pytest.approx(np.nansum(tokens) / objective.num_tokens, rel=1e-13)
    f32 = gpt2_model().eval()
    single = CausalLMObjective(texts, tokenizer, batch_size=5)
    details = single.evaluate(f32, details=True)
    total = sum(np.nansum(t) for t in details.token_losses)  # float32 losses summed in float64
    assert single.evaluate(f32).loss == pytest.approx(total / single.num_tokens, rel=1e-12)


def test_a_sequence_whose_labels_are_all_masked_has_a_nan_loss_without_warnings(gpt2_model):
    import warnings

    objective = CausalLMObjective({"input_ids": [[1, 2, 3], [4, 5, 6]], "labels": [[1, 2, 3], [4, -100, -100]]})
    model = gpt2_model().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        details = objective.evaluate(model, details=True)
    assert np.isfinite(details.sequence_losses[0]) and np.isnan(details.sequence_losses[1])


def test_stacked_points_over_full_batches_give_each_points_loss(gpt2_model):
    """Every sequence of the same length and every label counted: batches are taken whole, for k points at once."""
    model = gpt2_model().eval()
    objective = CausalLMObjective({"input_ids": [[5, 17, 42, 8], [7, 7, 120, 33], [1, 2, 3, 4]]}, batch_size=2)
    assert all(b.full for b in (objective.bind(model), objective._batches)[1])
    with torch.no_grad():
        loss = objective.evaluate(model).loss
        points = objective.loss_points(model, lambda inputs: torch.stack([model(**inputs).logits] * 3), 3)
    assert points.dtype == torch.float64
    assert points.tolist() == pytest.approx([loss] * 3, rel=1e-12)


class Headless(torch.nn.Module):
    """A module with input embeddings and no `get_output_embeddings` at all."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()


class NoPositions(Headless):
    """A causal LM whose forward takes no position ids (only the attention mask keeps padding out)."""

    def get_output_embeddings(self):
        return self.inner.get_output_embeddings()

    def forward(self, input_ids, attention_mask=None, use_cache=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)


class Wrapped(NoPositions):
    """Like a PeftModel: forward(**kwargs), the wrapped model (which takes position ids) from get_base_model."""

    def get_base_model(self):
        return self.inner

    def forward(self, **kwargs):
        return self.inner(**kwargs)


@pytest.mark.parametrize(("wrapper", "arch"), [(NoPositions, "llama"), (Wrapped, "gpt2")])
def test_left_padding_is_kept_out_by_the_mask_and_positions_a_model_takes(
    wrapper, arch, gpt2_model, llama_model, tokenizer, texts
):
    """Without position ids (Llama's rotary positions are relative, so a shift is harmless) only the attention mask
    keeps pads out; a wrapper like PeftModel is asked for the wrapped model's position ids (GPT-2's are absolute)."""
    model = wrapper(llama_model() if arch == "llama" else gpt2_model()).eval()
    padded = CausalLMObjective(texts[:6], tokenizer, batch_size=6, padding_side="left")
    alone = CausalLMObjective(texts[:6], tokenizer, batch_size=1)
    with torch.no_grad():
        assert padded.evaluate(model).loss == pytest.approx(alone.evaluate(model).loss, rel=1e-5)


def test_a_model_rebound_to_another_vocabulary_has_its_labels_checked(gpt2_model):
    objective = CausalLMObjective({"input_ids": [[1, 2, 3]], "labels": [[1, 2, 60]]})  # input ids fit both
    loss_of(gpt2_model(), objective)  # vocabulary ~300: fine
    from testing_utils import build_gpt2

    small = build_gpt2(50)
    with pytest.raises(ObjectiveError, match="label 60, outside the model's vocabulary of 50"):
        loss_of(small, objective)


def test_a_model_whose_head_is_replaced_is_bound_again(gpt2_model):
    model = gpt2_model().eval()
    objective = CausalLMObjective({"input_ids": [[1, 2, 3]], "labels": [[1, 2, 60]]})
    objective.evaluate(model)  # vocabulary 300: fine
    model.set_output_embeddings(torch.nn.Linear(model.config.n_embd, 50, bias=False))  # the input embeddings stay
    with pytest.raises(ObjectiveError, match="label 60, outside the model's vocabulary of 50"):
        objective.evaluate(model)


def test_a_module_without_get_output_embeddings_is_a_model_error(gpt2_model):
    objective = CausalLMObjective({"input_ids": [[1, 2, 3]]})
    with pytest.raises(ModelError, match="`model` \\(Headless\\) has no language-model head"):
        objective.bind(Headless(gpt2_model()))


def test_the_forward_builds_no_key_value_cache(gpt2_model, tokenizer, texts):
    model = gpt2_model().eval()
    seen = []
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["use_cache"]), with_kwargs=True)
    CausalLMObjective(texts, tokenizer, batch_size=4).evaluate(model)
    assert seen == [False] * 3  # one forward per batch of 4 of the 12 texts


def test_a_model_whose_input_embeddings_are_replaced_is_bound_again(gpt2_model):
    model = gpt2_model().eval()
    objective = CausalLMObjective({"input_ids": [[1, 2, 60]]})
    objective.evaluate(model)  # vocabulary 300: fine
    model.set_input_embeddings(torch.nn.Embedding(50, model.config.n_embd))  # the output head stays
    with pytest.raises(ObjectiveError, match="input id 60, outside the model's vocabulary of 50"):
        objective.evaluate(model)


def test_another_model_of_the_same_shape_is_bound_again(gpt2_model, tokenizer, texts):
    model = gpt2_model().eval()
    objective = CausalLMObjective(texts, tokenizer, batch_size=4)  # padded batches: position ids are passed
    loss = objective.evaluate(model).loss
    assert objective.evaluate(NoPositions(model)).loss == loss  # whose forward takes no position ids


def test_bound_batches_hold_the_longest_sequences_first_by_default(gpt2_model):
    objective = CausalLMObjective({"input_ids": [[1, 2], [1, 2, 3, 4], [1, 2, 3]]}, batch_size=2)
    objective.bind(gpt2_model())
    assert [b.index for b in objective._batches] == [[1, 2], [0]]


def test_bound_batches_are_padded_with_the_tokenizers_pad_id(gpt2_model):
    from types import SimpleNamespace

    tokenizer = SimpleNamespace(pad_token_id=7, eos_token_id=None)
    objective = CausalLMObjective({"input_ids": [[1, 2, 3], [4, 5]]}, tokenizer, batch_size=2)
    objective.bind(gpt2_model())
    assert objective._batches[0].input_ids.tolist() == [[1, 2, 3], [4, 5, 7]]


def test_an_output_head_without_a_weight_attribute(gpt2_model, tokenizer, texts):
    class Head(torch.nn.Module):
        def __init__(self, linear):
            super().__init__()
            self.linear = linear

        def forward(self, x):
            return self.linear(x)

    model = gpt2_model().eval()
    objective = CausalLMObjective(texts[:3], tokenizer)
    expected = loss_of(model, objective)
    model.lm_head = Head(model.lm_head)
    assert model.get_output_embeddings() is model.lm_head and not hasattr(model.lm_head, "weight")
    assert loss_of(model, CausalLMObjective(texts[:3], tokenizer)) == expected


def test_aligned_head_gives_the_heads_logits_with_its_bias():
    from hf_landscape.objectives.nll import _aligned_forward, _pads_head

    head = torch.nn.Linear(16, 13).double()  # 13 rows: padded to 16, then cut back
    x = torch.randn(2, 3, 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(_aligned_forward(head, x), head(x), rtol=1e-14, atol=1e-14)
        no_bias = torch.nn.Linear(16, 13, bias=False).double()
        torch.testing.assert_close(_aligned_forward(no_bias, x), no_bias(x), rtol=1e-14, atol=1e-14)
    assert not _pads_head(torch.nn.Identity())  # no weight: nothing to pad
    assert not _pads_head(head)  # a CPU product: alignment does not pay


def test_keyword_options_reach_the_config(tokenizer, texts):
    objective = CausalLMObjective(
        texts, tokenizer, max_length=40, batch_size=3, padding_side="left", sort_by_length=False
    )
    assert objective.config == CausalLMObjectiveConfig(
        max_length=40,
        batch_size=3,
        padding_side="left",
        text_column="text",
        add_special_tokens=True,
        sort_by_length=False,
    )


def test_a_pretokenized_dataset_keeps_its_attention_mask():
    ds = datasets.Dataset.from_dict({"input_ids": [[0, 0, 5, 17, 42]], "attention_mask": [[0, 0, 1, 1, 1]]})
    assert CausalLMObjective(ds).examples == [([5, 17, 42], [5, 17, 42])]


def test_a_tokenizer_without_a_name_is_described_by_its_class():
    class Plain:
        def __call__(self, texts, add_special_tokens=True):
            return {"input_ids": [[1, 2, 3] for _ in texts]}

    assert CausalLMObjective(["a", "b"], Plain()).describe()["tokenizer"] == "Plain"
