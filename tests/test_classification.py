"""`TextClassificationObjective`: your own labelled sentences or pairs, recorded as themselves; GLUE tasks as presets."""

from __future__ import annotations

import functools
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score
from testing_utils import build_bert_classifier
from transformers import BertTokenizerFast

from hf_landscape import ConfigError, GlueObjective, LandscapeProbe, TextClassificationObjective

WORDS = "the a cat dog sat on mat ran fast he is very good bad she was not book read old new tree".split()
SENTENCES = [
    "the cat sat on the mat",
    "he is very good",
    "she was not bad",
    "a dog ran fast",
    "the old book",
    "she read a new book",
    "the tree is old",
    "he ran",
]
LABELS = [1, 0, 1, 0, 1, 1, 0, 0]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return BertTokenizerFast(str(path))


@torch.no_grad()
def logits_alone(model, tok, first, second=None) -> torch.Tensor:
    model.eval()
    rows = []
    for k, text in enumerate(first):
        enc = tok(text, second[k], return_tensors="pt") if second else tok(text, return_tensors="pt")
        rows.append(model(**enc).logits[0].double())
    return torch.stack(rows)


def test_metadata_records_the_objective_as_itself_not_as_glue(tok):
    model = build_bert_classifier(len(tok))
    subj = TextClassificationObjective(
        {"sentence": SENTENCES, "y": LABELS}, tok, text_columns=["sentence"], label_column="y", task_name="subj"
    )
    line = LandscapeProbe(model, subj, progress=False).line(steps=3)
    objective = line.metadata["objective"]
    assert objective["type"] == "TextClassificationObjective"
    assert objective["task"] == "subj" and objective["config"]["task_name"] == "subj"
    assert objective["config"]["text_columns"] == ["sentence"] and objective["config"]["label_column"] == "y"
    assert "glue" not in json.dumps(objective).lower()


def test_loss_is_the_mean_cross_entropy_of_examples_run_alone(tok):
    model = build_bert_classifier(len(tok))
    objective = TextClassificationObjective({"text": SENTENCES, "label": LABELS}, tok, batch_size=3)
    reference = F.cross_entropy(logits_alone(model, tok, SENTENCES), torch.tensor(LABELS)).item()
    assert LandscapeProbe(model, objective, progress=False).loss() == pytest.approx(reference, rel=1e-6)


def test_evaluate_binds_the_objective_itself_and_gives_no_per_example_losses_unasked(tok):
    model = build_bert_classifier(len(tok))
    objective = TextClassificationObjective({"text": SENTENCES, "label": LABELS}, tok, batch_size=3)
    evaluation = objective.evaluate(model.eval())  # never bound before
    assert evaluation.loss == LandscapeProbe(model, objective, progress=False).loss()
    assert evaluation.sequence_losses is None


def test_glue_task_is_a_preset_with_the_same_loss(tok):
    model = build_bert_classifier(len(tok))
    glue = GlueObjective("sst2", tok, data={"sentence": SENTENCES, "label": LABELS})
    own = TextClassificationObjective({"sentence": SENTENCES, "label": LABELS}, tok, text_columns=["sentence"])
    assert isinstance(glue, TextClassificationObjective)
    a = LandscapeProbe(model, glue, progress=False).evaluate()
    b = LandscapeProbe(model, own, progress=False).evaluate()
    assert a.loss == b.loss and a.metrics == b.metrics
    assert glue.describe()["type"] == "GlueObjective"


def test_pairs_are_tokenized_as_pairs_and_scored_as_pairs(tok):
    model = build_bert_classifier(len(tok))
    first, second = SENTENCES[:4], SENTENCES[4:]
    objective = TextClassificationObjective(
        {"premise": first, "hypothesis": second, "label": LABELS[:4]}, tok, text_columns=["premise", "hypothesis"]
    )
    assert tok.decode(objective.examples[0].input_ids) == "[CLS] the cat sat on the mat [SEP] the old book [SEP]"
    reference = F.cross_entropy(logits_alone(model, tok, first, second), torch.tensor(LABELS[:4])).item()
    assert LandscapeProbe(model, objective, progress=False).loss() == pytest.approx(reference, rel=1e-6)


def test_headerless_tsv_with_column_names_and_labels_given_by_name(tok, tmp_path):
    names = ["objective", "subjective"]
    path = tmp_path / "dev.tsv"
    path.write_text("".join(f"{names[y].upper()}\t{s}\n" for s, y in zip(SENTENCES, LABELS)))
    objective = TextClassificationObjective(
        data_files=path, tokenizer=tok, column_names=["label", "text"], label_names=names, task_name="subj"
    )
    assert objective.labels.tolist() == LABELS
    source = objective.describe()["source"]
    assert source["files"][0]["path"] == "dev.tsv" and str(tmp_path) not in json.dumps(source)


def test_metric_functions_and_shipped_names_give_sklearn_values(tok):
    model = build_bert_classifier(len(tok))

    def balanced(predictions, references):
        return float(np.mean(predictions == references))

    objective = TextClassificationObjective(
        {"text": SENTENCES, "label": LABELS}, tok, metrics={"f1": "f1", "mine": balanced}
    )
    evaluation = LandscapeProbe(model, objective, progress=False).evaluate()
    predictions = logits_alone(model, tok, SENTENCES).argmax(-1).numpy()
    assert evaluation.metrics["f1"] == pytest.approx(f1_score(LABELS, predictions))
    assert evaluation.metrics["mine"] == pytest.approx(accuracy_score(LABELS, predictions))
    assert objective.describe()["metrics"] == ["f1", "mine"]


class ExactMatch:
    """An `evaluate` module: a `name` and `compute`, not itself callable."""

    def __init__(self, name="exact_match"):
        self.name = name

    def compute(self, predictions, references):
        return {self.name: float(np.mean(predictions == references))}


def balanced(predictions, references):
    return float(np.mean(predictions == references))


def test_metrics_given_as_a_list_are_reported_under_their_names():
    from hf_landscape.objectives.tasks import metric_pairs

    module = ExactMatch()
    assert metric_pairs(["f1", balanced, module], default=()) == (
        ("f1", "f1"),
        ("balanced", balanced),
        ("exact_match", module),
    )


@pytest.mark.parametrize(
    "metric",
    [functools.partial(balanced), ExactMatch(name=""), ExactMatch(name=5), SimpleNamespace(compute=balanced)],
    ids=["partial", "empty name", "int name", "no name"],
)
def test_a_listed_metric_without_a_name_is_refused(metric):
    from hf_landscape.objectives.tasks import metric_pairs

    with pytest.raises(ConfigError, match="`metrics` holds .* no name to report it under"):
        metric_pairs([metric], default=())


def test_metric_keys_must_be_non_empty_strings():
    from hf_landscape.objectives.tasks import metric_pairs

    for key in (3, ""):
        with pytest.raises(ConfigError, match="`metrics` keys must be non-empty strings"):
            metric_pairs({key: "f1"}, default=())


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"task_name": ""}, "task_name"),
        ({"label_names": ["a"]}, "label_names"),
        ({"label_names": ["a", "b"], "num_labels": 3}, "num_labels"),
        ({"text_columns": ["a", "b", "c"]}, "text_columns"),
        ({"metrics": [lambda p, r: 0.0]}, "metrics"),
        ({"text_columns": ["text", 5]}, "text_columns"),
        ({"label_column": "text"}, "label_column"),
        ({"label_column": 5}, "label_column"),
        ({"metrics": {3: "f1"}}, "metrics"),
    ],
)
def test_bad_options_name_the_argument(tok, kwargs, argument):
    with pytest.raises(ConfigError, match=f"`{argument}"):
        TextClassificationObjective({"text": SENTENCES, "label": LABELS}, tok, **kwargs)


def test_plot_title_names_the_task_its_loss_and_examples(tok):
    from hf_landscape.plotting import describe_surface

    model = build_bert_classifier(len(tok))
    subj = TextClassificationObjective({"text": SENTENCES, "label": LABELS}, tok, task_name="subj")
    line = LandscapeProbe(model, subj, progress=False).line(steps=3)
    assert describe_surface(line)[1].startswith(f"subj cross-entropy on {len(SENTENCES)} examples · ")
