"""Accuracy: the fraction of predictions equal to their references (scikit-learn's `accuracy_score`)."""

import datasets
import evaluate
from sklearn.metrics import accuracy_score

_DESCRIPTION = "Accuracy is the proportion of correct predictions among all predictions: (TP + TN) / N."

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted labels.
    references (`list[int]`): ground-truth labels.
    normalize (`bool`, defaults to `True`): return the fraction (True) or the count (False) of correct predictions.
    sample_weight (`list[float]`, *optional*): weights of the examples.
Returns:
    accuracy (`float`): as `sklearn.metrics.accuracy_score(references, predictions)`.
Example:
    >>> import evaluate
    >>> from hf_landscape.metrics import metric_path
    >>> evaluate.load(str(metric_path("accuracy"))).compute(predictions=[0, 1], references=[1, 1])
    {'accuracy': 0.5}
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
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.accuracy_score.html"],
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        return {
            "accuracy": float(accuracy_score(references, predictions, normalize=normalize, sample_weight=sample_weight))
        }
