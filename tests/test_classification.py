"""`TextClassificationObjective`: your own labelled sentences or pairs, recorded as themselves; GLUE tasks as presets."""

from __future__ import annotations

import functools
import json
import logging
import re
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score
from testing_utils import build_bert_classifier
from transformers import (
    BertForSequenceClassification,
    BertForTokenClassification,
    BertTokenizerFast,
    GPT2Config,
    GPT2ForSequenceClassification,
)

from hf_landscape import (
    ConfigError,
    GlueObjective,
    LandscapeProbe,
    ModelError,
    ObjectiveError,
    TextClassificationObjective,
    TextClassificationObjectiveConfig,
)
from hf_landscape.objectives.base import evaluate

LOGGER = "hf_landscape.objectives.classification"
DATA_LOGGER = "hf_landscape.objectives.classification_data"

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


# --- the config ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"split": ""}, "split"),
        ({"max_length": 16.5}, "max_length"),
        ({"batch_size": True}, "batch_size"),
        ({"padding_side": "middle"}, "padding_side"),
        ({"max_examples": True}, "max_examples"),
        ({"max_examples": 2.5}, "max_examples"),
        ({"revision": ""}, "revision"),
        ({"label_names": "ab"}, "label_names"),
        ({"label_names": ["a", ""]}, "label_names"),
        ({"num_labels": 0}, "num_labels"),
        ({"num_labels": 2.5}, "num_labels"),
        ({"num_labels": True}, "num_labels"),
        ({"metrics": "f1"}, "metrics"),
        ({"metrics": ["f1", ""]}, "metrics"),
        ({"dataset": ""}, "dataset"),
        ({"dataset_config": ""}, "dataset_config"),
    ],
)
def test_config_rejects_bad_values_naming_the_argument(kwargs, argument):
    with pytest.raises(ConfigError, match=f"`{argument}`"):
        TextClassificationObjectiveConfig(**kwargs)


def test_config_accepts_the_smallest_values_and_hub_names():
    config = TextClassificationObjectiveConfig(
        max_length=2, batch_size=1, max_examples=1, num_labels=1, dataset="org/subj", dataset_config="default"
    )
    assert (config.max_length, config.batch_size, config.max_examples, config.num_labels) == (2, 1, 1, 1)
    assert (config.dataset, config.dataset_config) == ("org/subj", "default")


def test_label_names_set_num_labels():
    assert TextClassificationObjectiveConfig(label_names=["a", "b", "c"]).num_labels == 3


def test_label_names_that_differ_in_lower_case_are_distinct_classes():
    # labels are looked up by their lower case, so names are told apart by it: "straße" and "strasse" differ
    names = ["straße", "strasse"]
    assert TextClassificationObjectiveConfig(label_names=names).label_names == names


def test_config_keeps_its_metric_names_as_a_list():
    assert TextClassificationObjectiveConfig(metrics=("f1", "accuracy")).metrics == ["f1", "accuracy"]


def test_a_regression_config_describes_a_task_reporting_correlations():
    task = TextClassificationObjectiveConfig(num_labels=1).task()
    assert task.num_labels == 1
    assert task.metrics == (("pearsonr", "pearsonr"), ("spearmanr", "spearmanr"))


def test_a_two_class_config_describes_a_task_reporting_accuracy():
    task = TextClassificationObjectiveConfig(num_labels=2).task()
    assert (task.num_labels, task.metrics) == (2, (("accuracy", "accuracy"),))


def test_the_configs_metric_names_are_the_tasks_metrics():
    assert TextClassificationObjectiveConfig(metrics=["f1"]).task().metrics == (("f1", "f1"),)


# --- keyword options and where the examples come from ----------------------------------------------------------------


def test_keyword_defaults_are_the_configs(tok):
    objective = TextClassificationObjective({"text": SENTENCES, "label": LABELS}, tok)
    assert objective.config == TextClassificationObjectiveConfig()


def test_keyword_options_reach_the_config(tok):
    objective = TextClassificationObjective(
        {"sentence": SENTENCES, "y": LABELS},
        tok,
        text_columns="sentence",
        label_column="y",
        label_names=["objective", "subjective"],
        metrics={"mine": balanced},
        task_name="subj",
        split="dev",
        revision="v1",
        max_length=16,
        batch_size=3,
        padding_side="left",
        sort_by_length=False,
        max_examples=4,
        check_padding=False,
    )
    assert objective.config == TextClassificationObjectiveConfig(
        task_name="subj",
        text_columns=["sentence"],
        label_column="y",
        label_names=["objective", "subjective"],
        num_labels=2,
        metrics=["mine"],
        split="dev",
        revision="v1",
        max_length=16,
        batch_size=3,
        padding_side="left",
        sort_by_length=False,
        max_examples=4,
        check_padding=False,
    )


def test_a_hub_dataset_is_loaded_by_name_with_its_configuration_split_and_revision(tok, monkeypatch):
    # No network here: replace `datasets.load_dataset` and check what the objective asks it for.
    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.Dataset.from_dict({"text": SENTENCES, "label": LABELS})

    monkeypatch.setattr("hf_landscape.objectives.classification_data.hub_offline", lambda: False)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    objective = TextClassificationObjective(
        tokenizer=tok, dataset="org/subj", dataset_config="default", split="test", revision="v1"
    )
    assert calls == [(("org/subj", "default"), {"split": "test", "revision": "v1"})]
    assert (objective.config.dataset, objective.config.dataset_config) == ("org/subj", "default")
    source = objective.describe()["source"]
    assert (source["type"], source["hub_id"], source["split"]) == ("hub", "org/subj", "test")
    assert objective.labels.tolist() == LABELS


@pytest.mark.parametrize("given", ["data", "data_files"])
def test_examples_and_a_hub_dataset_together_are_refused(tok, tmp_path, given):
    path = tmp_path / "dev.csv"
    path.write_text("text,label\nthe cat,1\n")
    source = {"data": {"text": ["the cat"], "label": [1]}, "data_files": path}[given]
    with pytest.raises(ConfigError, match="`dataset`"):
        TextClassificationObjective(tokenizer=tok, dataset="org/subj", **{given: source})


def test_the_split_of_a_dataset_dict_is_read(tok):
    splits = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": SENTENCES[:4], "label": LABELS[:4]}),
            "test": datasets.Dataset.from_dict({"text": SENTENCES[4:], "label": LABELS[4:]}),
        }
    )
    objective = TextClassificationObjective(splits, tok, split="test")
    assert objective.labels.tolist() == LABELS[4:]


def test_column_mapping_renames_the_datas_columns(tok):
    objective = TextClassificationObjective(
        {"sentence": SENTENCES, "y": LABELS}, tok, column_mapping={"sentence": "text", "y": "label"}
    )
    assert objective.labels.tolist() == LABELS
    assert objective.describe()["source"]["column_mapping"] == {"sentence": "text", "y": "label"}


def test_a_csv_file_with_its_own_delimiter(tok, tmp_path):
    path = tmp_path / "dev.csv"
    path.write_text("text;label\n" + "".join(f"{s};{y}\n" for s, y in zip(SENTENCES, LABELS)))
    objective = TextClassificationObjective(data_files=path, tokenizer=tok, delimiter=";")
    assert objective.labels.tolist() == LABELS
    assert (
        objective.fingerprint() == TextClassificationObjective({"text": SENTENCES, "label": LABELS}, tok).fingerprint()
    )


def test_max_examples_keeps_the_first_examples_and_is_recorded(tok):
    objective = TextClassificationObjective({"text": SENTENCES, "label": LABELS}, tok, max_examples=3)
    assert objective.labels.tolist() == LABELS[:3]
    assert objective.describe()["source"]["max_examples"] == 3


def test_max_examples_that_cuts_nothing_is_not_recorded(tok):
    objective = TextClassificationObjective({"text": SENTENCES, "label": LABELS}, tok, max_examples=len(SENTENCES))
    assert objective.num_examples == len(SENTENCES)
    assert "max_examples" not in objective.describe()["source"]


# --- what describe() records ----------------------------------------------------------------------------------------


def test_describe_records_the_label_names_and_num_labels(tok):
    objective = TextClassificationObjective(
        {"text": SENTENCES, "label": LABELS}, tok, label_names=["objective", "subjective"]
    )
    described = objective.describe()
    assert (described["label_names"], described["num_labels"]) == (["objective", "subjective"], 2)


@pytest.mark.parametrize(
    ("tokenizer", "recorded"),
    [
        (SimpleNamespace(name_or_path="org/tokenizer"), "org/tokenizer"),
        (SimpleNamespace(name_or_path="/data/runs/my-tokenizer"), "my-tokenizer"),
        (SimpleNamespace(name_or_path=""), "SimpleNamespace"),
        (SimpleNamespace(), "SimpleNamespace"),
    ],
    ids=["hub name", "local path", "empty name", "no name"],
)
def test_describe_names_the_tokenizer_by_its_public_name_else_its_type(tokenizer, recorded):
    objective = TextClassificationObjective({"input_ids": [[2, 5, 3]], "label": [0]}, tokenizer)
    assert objective.describe()["tokenizer"] == recorded


def test_describe_names_no_tokenizer_when_none_was_given():
    objective = TextClassificationObjective({"input_ids": [[2, 5, 3]], "label": [0]})
    assert "tokenizer" not in objective.describe()


# --- the fingerprint ----------------------------------------------------------------------------------------------


PAIRS = {"input_ids": [[2, 5, 3, 6, 3], [2, 7, 3, 8, 9, 3]], "token_type_ids": [[0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1]]}


def test_fingerprint_is_pinned():
    # recorded in checkpoints' keys and surfaces' metadata: a change makes saved partial grids unresumable
    objective = TextClassificationObjective({**PAIRS, "label": [1, 0]}, task_name="pairs")
    assert objective.fingerprint() == "4bb31426474766e9"


def test_fingerprint_tells_apart_token_types_and_labels():
    base = TextClassificationObjective({**PAIRS, "label": [1, 0]})
    types = TextClassificationObjective({**PAIRS, "token_type_ids": [[0] * 5, [0] * 6], "label": [1, 0]})
    label = TextClassificationObjective({**PAIRS, "label": [1, 1]})
    no_types = TextClassificationObjective({"input_ids": PAIRS["input_ids"], "label": [1, 0]})
    prints = [o.fingerprint() for o in (base, types, label, no_types)]
    assert len(set(prints)) == 4
    assert all(len(p) == 16 for p in prints)


# --- binding a model -------------------------------------------------------------------------------------------------


class MeanPoolForSequenceClassification(torch.nn.Module):
    """A classifier outside transformers: the mean of its token embeddings over the real tokens, plus `leak` per padded
    position (0: padding changes nothing). Its config holds `num_labels` alone."""

    def __init__(self, num_labels: int = 2, vocab_size: int = 32, leak: float = 0.0, dtype=torch.float32):
        super().__init__()
        self.config = SimpleNamespace(num_labels=num_labels)
        self.embed = torch.nn.Embedding(vocab_size, num_labels, dtype=dtype)
        self.leak = leak

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.to(self.embed.weight.dtype)[..., None]
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1)
        return SimpleNamespace(logits=pooled + self.leak * (1 - mask).sum(1))


IDS = [[2, 5, 6, 3], [2, 7, 3], [2, 8, 9, 10, 11, 3], [2, 12, 3]]


def test_a_classifier_outside_transformers_whose_config_holds_num_labels_alone():
    torch.manual_seed(0)
    model = MeanPoolForSequenceClassification()
    objective = TextClassificationObjective({"input_ids": IDS, "label": [1, 0, 1, 1]}, batch_size=3)
    with torch.no_grad():
        logits = torch.stack([model.embed(torch.tensor(x)).mean(0) for x in IDS]).double()
    reference = F.cross_entropy(logits, torch.tensor([1, 0, 1, 1])).item()
    assert evaluate(model, objective).loss == pytest.approx(reference, rel=1e-6)


@pytest.mark.parametrize(
    ("model_pad", "tokenizer_pad", "expected"),
    [(7, 5, 7), (0, 5, 0), (None, 5, 5), ("missing", 5, 5), (True, None, 0), (None, None, 0)],
    ids=["model's", "model's 0", "tokenizer's", "no attribute", "a bool is no id", "neither"],
)
def test_padding_uses_the_models_pad_id_else_the_tokenizers_else_0(model_pad, tokenizer_pad, expected):
    from hf_landscape.objectives.classification import _pad_id

    config = SimpleNamespace() if model_pad == "missing" else SimpleNamespace(pad_token_id=model_pad)
    assert _pad_id(SimpleNamespace(config=config), SimpleNamespace(pad_token_id=tokenizer_pad)) == expected


def test_the_tokenizers_pad_id_pads_the_batches_of_a_model_without_one(tok):
    model = build_bert_classifier(len(tok), pad_token_id=None)
    objective = TextClassificationObjective(
        {"input_ids": [[2, 5, 6, 3], [2, 7, 3]], "label": [1, 0]}, SimpleNamespace(pad_token_id=4)
    )
    objective.bind(model)
    assert objective._batches[0].inputs["input_ids"].tolist() == [[2, 5, 6, 3], [2, 7, 3, 4]]


def test_a_single_example_is_evaluated(tok):
    model = build_bert_classifier(len(tok))
    objective = TextClassificationObjective({"text": SENTENCES[:1], "label": LABELS[:1]}, tok)
    reference = F.cross_entropy(logits_alone(model, tok, SENTENCES[:1]), torch.tensor(LABELS[:1])).item()
    assert LandscapeProbe(model, objective, progress=False).loss() == pytest.approx(reference, rel=1e-6)


@pytest.mark.parametrize(("sort_by_length", "batches"), [(True, [[2, 0], [1, 3]]), (False, [[0, 1], [2, 3]])])
def test_batches_hold_the_longest_examples_first(tok, sort_by_length, batches):
    objective = TextClassificationObjective(
        {"input_ids": IDS, "label": [1, 0, 1, 1]}, batch_size=2, sort_by_length=sort_by_length
    )
    objective.bind(build_bert_classifier(len(tok)))
    assert [list(b.index) for b in objective._batches] == batches


def test_binding_again_to_the_same_model_keeps_its_batches(tok):
    model = build_bert_classifier(len(tok))
    objective = TextClassificationObjective({"text": SENTENCES, "label": LABELS}, tok, batch_size=3)
    objective.bind(model)
    batches = objective._batches
    objective.bind(model)
    assert objective._batches is batches


def test_a_resized_vocabulary_is_checked_again(tok):
    model = build_bert_classifier(len(tok))
    objective = TextClassificationObjective({"text": SENTENCES, "label": LABELS}, tok)
    objective.bind(model)
    model.resize_token_embeddings(8)
    with pytest.raises(ModelError, match="tokenizer"):
        objective.bind(model)


def test_a_changed_pad_token_id_pads_with_the_new_one():
    # GPT-2 reads its last real token and finds it by `pad_token_id`: stale padding would make it read a pad
    ids, labels = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]], [1, 0, 0]
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=40, n_positions=32, num_labels=2, pad_token_id=0)
    model = GPT2ForSequenceClassification(config).eval()
    with torch.no_grad():
        alone = torch.stack([model(torch.tensor([x])).logits[0].double() for x in ids])
    reference = F.cross_entropy(alone, torch.tensor(labels)).item()
    objective = TextClassificationObjective({"input_ids": ids, "label": labels}, batch_size=3)
    objective.bind(model)
    model.config.pad_token_id = 1
    assert LandscapeProbe(model, objective, progress=False).loss() == pytest.approx(reference, rel=1e-6)


def test_a_second_model_is_checked_again(tok):
    # with its classifier's weights at zero a model's logits are its bias, whatever the padding: left padding passes
    constant = build_bert_classifier(len(tok))
    torch.nn.init.zeros_(constant.classifier.weight)
    objective = TextClassificationObjective({"text": SENTENCES, "label": LABELS}, tok, padding_side="left")
    objective.bind(constant)
    with pytest.raises(ConfigError, match="`padding_side='left'`"):
        objective.bind(build_bert_classifier(len(tok)))


class NoTokenTypesBertForSequenceClassification(BertForSequenceClassification):
    """BERT whose forward takes no `token_type_ids` (BERT's default for them is all zeros)."""

    def forward(self, input_ids=None, attention_mask=None, position_ids=None):
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)


def test_a_model_whose_class_changes_in_place_is_bound_again(tok):
    model = build_bert_classifier(len(tok))
    objective = TextClassificationObjective({"text": SENTENCES, "label": LABELS}, tok, batch_size=3)
    objective.bind(model)
    loss = evaluate(model, objective).loss
    model.__class__ = NoTokenTypesBertForSequenceClassification
    objective.bind(model)
    assert evaluate(model, objective).loss == loss


def test_evaluating_another_model_checks_it(tok):
    objective = TextClassificationObjective({"text": SENTENCES, "label": LABELS}, tok, num_labels=2)
    objective.evaluate(build_bert_classifier(len(tok)))
    with pytest.raises(ModelError, match="num_labels=3"):
        objective.evaluate(build_bert_classifier(len(tok), num_labels=3))


# --- checks of the model -------------------------------------------------------------------------------------------


class ConfiglessForSequenceClassification(torch.nn.Module):
    pass


def test_a_model_without_a_config_is_refused():
    objective = TextClassificationObjective({"input_ids": IDS, "label": [1, 0, 1, 1]})
    with pytest.raises(ModelError, match="`model`"):
        objective.bind(ConfiglessForSequenceClassification())


def test_a_model_whose_config_has_no_num_labels_is_refused():
    model = MeanPoolForSequenceClassification()
    model.config = SimpleNamespace()
    objective = TextClassificationObjective({"input_ids": IDS, "label": [1, 0, 1, 1]}, num_labels=2)
    with pytest.raises(ModelError, match="num_labels=None"):
        objective.bind(model)


@pytest.mark.parametrize(
    ("options", "fix"),
    [
        ({}, "`AutoModelForSequenceClassification.from_pretrained(name)`"),
        ({"num_labels": 3}, "`AutoModelForSequenceClassification.from_pretrained(name, num_labels=3)`"),
    ],
)
def test_a_model_of_another_class_is_refused_naming_the_auto_class(tok, options, fix):
    objective = TextClassificationObjective({"text": SENTENCES, "label": LABELS}, tok, **options)
    model = BertForTokenClassification(build_bert_classifier(len(tok)).config)
    with pytest.raises(ModelError, match=re.escape(fix)):
        objective.bind(model)


def test_labels_beyond_the_models_classes_are_refused_when_the_task_leaves_them_open(tok):
    objective = TextClassificationObjective({"text": SENTENCES[:3], "label": [0, 2, 1]}, tok, task_name="subj")
    with pytest.raises(ObjectiveError, match=re.escape("Example 1 has label 2, outside 0..1 for task 'subj'.")):
        objective.bind(build_bert_classifier(len(tok)))


@pytest.mark.parametrize(
    ("options", "labels", "needs"),
    [({"num_labels": 1}, [0.5, 2.0], "1 output (regression)"), ({"num_labels": 3}, [0, 2], "3 labels")],
)
def test_a_model_with_other_num_labels_is_refused_saying_what_the_task_needs(tok, options, labels, needs):
    objective = TextClassificationObjective({"text": SENTENCES[:2], "label": labels}, tok, task_name="subj", **options)
    with pytest.raises(ModelError, match=re.escape(f"task 'subj' needs {needs};")):
        objective.bind(build_bert_classifier(len(tok)))


@pytest.mark.parametrize(
    ("id2label", "warned"),
    [({0: "Subjective", 1: "OBJECTIVE"}, True), ({0: "Objective", 1: "subjective"}, False), (None, False)],
    ids=["swapped", "same order", "the model's default names"],
)
def test_a_model_whose_labels_are_ordered_otherwise_is_warned_of(tok, caplog, id2label, warned):
    model = build_bert_classifier(len(tok))
    if id2label is not None:
        model.config.id2label = id2label
    objective = TextClassificationObjective(
        {"text": SENTENCES, "label": LABELS}, tok, label_names=["objective", "subjective"]
    )
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        objective.bind(model)
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert messages == (
        [
            "The model's labels are ordered ['subjective', 'objective'] but task text-classification's are "
            "['objective', 'subjective']: the loss and metrics compare label ids as the task numbers them; remap the "
            "model's head if its ids differ."
        ]
        if warned
        else []
    )


def test_the_label_order_warning_is_given_once_not_at_every_point(tok, caplog):
    model = build_bert_classifier(len(tok))
    model.config.id2label = {0: "subjective", 1: "objective"}
    objective = TextClassificationObjective(
        {"text": SENTENCES, "label": LABELS}, tok, label_names=["objective", "subjective"]
    )
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        LandscapeProbe(model, objective, progress=False).line(steps=3)
    assert len([r for r in caplog.records if r.name == LOGGER]) == 1


def test_a_token_id_equal_to_the_vocabulary_size_is_refused(tok):
    objective = TextClassificationObjective({"input_ids": [[2, len(tok), 3], [2, 5, 3]], "label": [1, 0]})
    with pytest.raises(ModelError, match=f"token id {len(tok)} "):
        objective.bind(build_bert_classifier(len(tok)))


@pytest.mark.parametrize("length", [64, 65])
def test_examples_longer_than_the_models_context_are_refused(tok, length):
    # build_bert_classifier's context is 64 positions
    ids = [[2, *([5] * (length - 2)), 3], [2, 6, 3]]
    objective = TextClassificationObjective({"input_ids": ids, "label": [1, 0]}, max_length=100)
    model = build_bert_classifier(len(tok))
    if length > 64:
        with pytest.raises(ConfigError, match="`max_length=64`"):
            objective.bind(model)
    else:
        with torch.no_grad():
            alone = torch.stack([model.eval()(torch.tensor([x])).logits[0].double() for x in ids])
        reference = F.cross_entropy(alone, torch.tensor([1, 0])).item()
        assert evaluate(model, objective).loss == pytest.approx(reference, rel=1e-6)


# --- the padding check ---------------------------------------------------------------------------------------------


def test_left_padding_is_refused_whichever_example_comes_first(tok):
    # the shortest example first: the check must still pad it next to the longest
    objective = TextClassificationObjective(
        {"text": ["he ran", *SENTENCES], "label": [0, *LABELS]}, tok, padding_side="left"
    )
    fix = "a model that reads its first token (BERT's [CLS] pooler, RoBERTa, ...) needs `padding_side='right'`."
    with pytest.raises(ConfigError, match=re.escape(fix)):
        objective.bind(build_bert_classifier(len(tok)))


def test_right_padding_that_changes_the_outputs_names_the_pad_token_fix():
    objective = TextClassificationObjective({"input_ids": [[2, 5, 6, 3], [2, 3]], "label": [1, 0]})
    fix = "needs `model.config.pad_token_id` set to the padding id, or `padding_side='left'`."
    with pytest.raises(ConfigError, match=re.escape(fix)):
        objective.bind(MeanPoolForSequenceClassification(leak=0.5))


@pytest.mark.parametrize(
    ("dtype", "logit", "gap", "accepted"),
    [
        (torch.float32, 0.5, 2**-10, True),
        (torch.float32, 0.5, 2**-9, False),
        (torch.float32, 1000.0, 1.0, True),
        (torch.float32, 1000.0, 2.0, False),
        (torch.bfloat16, 0.5, 2**-5, True),
        (torch.bfloat16, 0.5, 2**-4, False),
    ],
    ids=[
        "float32 below",
        "float32 above",
        "float32 at the bound, scaled",
        "float32 above, scaled",
        "bf16 below",
        "bf16 above",
    ],
)
def test_the_padding_check_allows_1e_3_of_the_logits_scale_or_5e_2_in_half_precision(dtype, logit, gap, accepted):
    # logits (logit, 0) for every example, shifted by `gap` when padded by two positions; the bound is inclusive
    model = MeanPoolForSequenceClassification(leak=gap / 2, dtype=dtype)
    with torch.no_grad():
        model.embed.weight.copy_(torch.tensor([logit, 0.0]))
    objective = TextClassificationObjective({"input_ids": [[2, 5, 6, 3], [2, 3]], "label": [1, 0]})
    if accepted:
        objective.bind(model)
    else:
        with pytest.raises(ConfigError, match="`padding_side='right'`"):
            objective.bind(model)


# --- the loss and metrics ----------------------------------------------------------------------------------------------


def regression_model() -> MeanPoolForSequenceClassification:
    """Scores 0 for every example."""
    model = MeanPoolForSequenceClassification(num_labels=1)
    torch.nn.init.zeros_(model.embed.weight)
    return model


def test_the_loss_is_summed_in_float64():
    # squared errors 1 and four of 1e-8: float32 sums lose the small ones (half an ulp of 1 is 6e-8)
    labels = [1.0, 1e-4, 1e-4, 1e-4, 1e-4]
    objective = TextClassificationObjective({"input_ids": [[2, 5]] * 5, "label": labels}, num_labels=1, batch_size=5)
    small = float(torch.tensor(1e-4) ** 2)
    assert evaluate(regression_model(), objective).loss == pytest.approx((1.0 + 4 * small) / 5, rel=1e-12)


def test_regression_loss_terms_are_float32_like_the_models_scores():
    objective = TextClassificationObjective({"input_ids": [[2, 5], [2, 6]], "label": [0.5, 2.0]}, num_labels=1)
    (term,) = objective.loss_terms(regression_model())
    assert term.dtype == torch.float32


def test_regression_metrics_receive_float64_scores():
    seen = []

    def dtype_of(predictions, references):
        seen.append(predictions.dtype)
        return 0.0

    objective = TextClassificationObjective(
        {"input_ids": [[2, 5], [2, 6]], "label": [0.5, 2.0]}, num_labels=1, metrics={"seen": dtype_of}
    )
    evaluate(regression_model(), objective)
    assert seen == [np.float64]


def test_an_evaluate_module_is_computed_by_its_compute(tok):
    model = build_bert_classifier(len(tok))
    objective = TextClassificationObjective({"text": SENTENCES, "label": LABELS}, tok, metrics={"em": ExactMatch()})
    predictions = logits_alone(model, tok, SENTENCES).argmax(-1).numpy()
    metrics = LandscapeProbe(model, objective, progress=False).evaluate(details=False).metrics
    assert metrics == {"em": pytest.approx(accuracy_score(LABELS, predictions))}


class ExactMatchAndCount(ExactMatch):
    def compute(self, predictions, references):
        return {"count": float(len(predictions)), **super().compute(predictions, references)}


def test_a_module_returning_several_values_is_reported_by_its_own_name(tok):
    model = build_bert_classifier(len(tok))
    objective = TextClassificationObjective(
        {"text": SENTENCES, "label": LABELS}, tok, metrics={"em": ExactMatchAndCount()}
    )
    predictions = logits_alone(model, tok, SENTENCES).argmax(-1).numpy()
    metrics = LandscapeProbe(model, objective, progress=False).evaluate(details=False).metrics
    assert metrics == {"em": pytest.approx(accuracy_score(LABELS, predictions))}


def test_a_metric_function_that_returns_no_number_is_named_by_its_key(tok):
    objective = TextClassificationObjective(
        {"text": SENTENCES, "label": LABELS}, tok, metrics={"mine": lambda p, r: [1, 2]}
    )
    with pytest.raises(ObjectiveError, match="'mine'"):
        objective.evaluate(build_bert_classifier(len(tok)))


# --- labels --------------------------------------------------------------------------------------------------------


def test_class_labels_are_int64_ids_and_regression_labels_float64_scores():
    ids = {"input_ids": [[2, 5], [2, 6]]}
    assert TextClassificationObjective({**ids, "label": [1, 0]}).labels.dtype == np.int64
    assert TextClassificationObjective({**ids, "label": [3, 1]}, num_labels=1).labels.dtype == np.float64


@pytest.mark.parametrize(
    ("labels", "options", "message"),
    [
        ([0, 2], {"num_labels": 2}, "Example 1 has label 2, outside 0..1 for task 'subj'."),
        ([0, -2], {}, "Example 1 has label -2, negative for task 'subj'."),
        (
            [0, -1],
            {},
            "Example 1 has label -1, negative for task 'subj' (-1 marks an unlabelled test split; use a labelled split).",
        ),
    ],
    ids=["num_labels", "negative", "unlabelled"],
)
def test_a_label_outside_the_tasks_ids_is_refused_naming_it_and_the_range(labels, options, message):
    with pytest.raises(ObjectiveError, match=re.escape(message) + "$"):
        TextClassificationObjective({"input_ids": [[2, 5], [2, 6]], "label": labels}, task_name="subj", **options)


# --- tokens --------------------------------------------------------------------------------------------------------


def test_pretokenized_token_type_ids_are_kept():
    objective = TextClassificationObjective({**PAIRS, "label": [1, 0]})
    assert [ex.token_type_ids for ex in objective.examples] == PAIRS["token_type_ids"]


def test_pretokenized_token_type_ids_of_another_length_are_refused():
    with pytest.raises(ObjectiveError, match="`token_type_ids`"):
        TextClassificationObjective({**PAIRS, "token_type_ids": [[0, 0, 0, 1, 1], [0, 0]], "label": [1, 0]})


def test_pretokenized_examples_longer_than_max_length_are_cut_with_a_warning(caplog):
    ids = [[2, 5, 6, 3], [2, 5, 6, 7, 8, 3], [2, 5, 3]]
    with caplog.at_level(logging.WARNING, logger=DATA_LOGGER):
        objective = TextClassificationObjective({"input_ids": ids, "label": [1, 0, 1]}, max_length=4)
    assert [ex.input_ids for ex in objective.examples] == [[2, 5, 6, 3], [2, 5, 6, 7], [2, 5, 3]]
    messages = [r.getMessage() for r in caplog.records if r.name == DATA_LOGGER]
    assert messages == ["1 of 3 examples are longer than `max_length` (4) and were cut."]


def test_text_longer_than_max_length_is_truncated_with_a_warning(tok, caplog):
    texts = ["he ran", "he is good", "the cat sat on the mat"]  # 4, 5 and 8 tokens with [CLS] and [SEP]
    with caplog.at_level(logging.WARNING, logger=DATA_LOGGER):
        objective = TextClassificationObjective({"text": texts, "label": [1, 0, 1]}, tok, max_length=5)
    assert [tok.decode(ex.input_ids) for ex in objective.examples] == [
        "[CLS] he ran [SEP]",
        "[CLS] he is good [SEP]",
        "[CLS] the cat sat [SEP]",
    ]
    messages = [r.getMessage() for r in caplog.records if r.name == DATA_LOGGER]
    assert messages == ["1 of 3 examples are longer than `max_length` (5) and were truncated."]


def test_text_tokenized_without_token_types_has_none(tokenizer):
    # a byte-level BPE tokenizer, as GPT-2's, gives no `token_type_ids`
    texts = ["the cat sat", "Why?"]
    objective = TextClassificationObjective({"text": texts, "label": [1, 0]}, tokenizer)
    assert [ex.input_ids for ex in objective.examples] == tokenizer(texts)["input_ids"]
    assert [ex.token_type_ids for ex in objective.examples] == [None, None]
