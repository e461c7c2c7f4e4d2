"""F1: the harmonic mean of precision and recall (scikit-learn's `f1_score`)."""

import datasets
import evaluate
from sklearn.metrics import f1_score

_DESCRIPTION = "F1 = 2 * (precision * recall) / (precision + recall), for the positive class (binary) by default."

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted labels.
    references (`list[int]`): ground-truth labels.
    labels (`list[int]`, *optional*): labels to include when `average` is not "binary".
    pos_label (`int`, defaults to 1): the positive class when `average="binary"`.
    average (`str`, defaults to `"binary"`): "binary", "micro", "macro", "weighted" or "samples".
    sample_weight (`list[float]`, *optional*): weights of the examples.
    zero_division (defaults to `0.0`): the value when precision or recall is 0/0. scikit-learn's default ("warn")
        gives the same value with a warning; a landscape evaluates many points where a model predicts one class only.
Returns:
    f1 (`float`): as `sklearn.metrics.f1_score(references, predictions, ...)`.
Example:
    >>> import evaluate
    >>> from hf_landscape.metrics import metric_path
    >>> evaluate.load(str(metric_path("f1"))).compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'f1': 0.6666666666666666}
"""

_CITATION = """\
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and others},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"],
        )

    def _compute(
        self, predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None, zero_division=0.0
    ):
        score = f1_score(
            references,
            predictions,
            labels=labels,
            pos_label=pos_label,
            average=average,
            sample_weight=sample_weight,
            zero_division=zero_division,
        )
        return {"f1": float(score) if getattr(score, "size", 1) == 1 else score}
