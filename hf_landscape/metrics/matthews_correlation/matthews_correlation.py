"""Matthews correlation coefficient (scikit-learn's `matthews_corrcoef`), the official CoLA metric."""

import datasets
import evaluate
from sklearn.metrics import matthews_corrcoef

_DESCRIPTION = (
    "The Matthews correlation coefficient measures the quality of binary and multiclass classifications; "
    "it lies in [-1, 1]: +1 a perfect prediction, 0 no better than chance, -1 inverse prediction."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted labels.
    references (`list[int]`): ground-truth labels.
    sample_weight (`list[float]`, *optional*): weights of the examples.
Returns:
    matthews_correlation (`float`): as `sklearn.metrics.matthews_corrcoef(references, predictions)`; 0.0 when
        the predictions (or references) hold one class only.
Example:
    >>> import evaluate
    >>> from hf_landscape.metrics import metric_path
    >>> evaluate.load(str(metric_path("matthews_correlation"))).compute(predictions=[1, 0, 1], references=[1, 0, 1])
    {'matthews_correlation': 1.0}
"""

_CITATION = """\
@article{matthews1975comparison,
  title={Comparison of the predicted and observed secondary structure of T4 phage lysozyme},
  author={Matthews, Brian W},
  journal={Biochimica et Biophysica Acta (BBA)-Protein Structure},
  volume={405},
  number={2},
  pages={442--451},
  year={1975}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MatthewsCorrelation(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.matthews_corrcoef.html"],
        )

    def _compute(self, predictions, references, sample_weight=None):
        return {"matthews_correlation": float(matthews_corrcoef(references, predictions, sample_weight=sample_weight))}
