"""Pearson correlation coefficient (scipy's `pearsonr`), one of the official STS-B metrics."""

import warnings

import datasets
import evaluate
from scipy.stats import pearsonr

_DESCRIPTION = (
    "The Pearson correlation coefficient measures the linear relationship between predictions and references; "
    "it lies in [-1, 1]. Inputs are kept in float64."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[float]`): predicted scores.
    references (`list[float]`): ground-truth scores.
    return_pvalue (`bool`, defaults to `False`): also return the two-sided p-value.
Returns:
    pearsonr (`float`): `scipy.stats.pearsonr(predictions, references)[0]`; NaN when either input is constant.
    p-value (`float`): only when `return_pvalue=True`.
Example:
    >>> import evaluate
    >>> from hf_landscape.metrics import metric_path
    >>> metric = evaluate.load(str(metric_path("pearsonr")))
    >>> round(metric.compute(predictions=[1.0, 2.0, 3.0], references=[2.0, 4.0, 6.0])["pearsonr"], 12)
    1.0
"""

_CITATION = """\
@article{2020SciPy-NMeth,
  author  = {Virtanen, Pauli and others},
  title   = {{SciPy} 1.0: Fundamental Algorithms for Scientific Computing in Python},
  journal = {Nature Methods},
  year    = {2020},
  volume  = {17},
  pages   = {261--272}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Pearsonr(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            reference_urls=["https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.pearsonr.html"],
        )

    def _compute(self, predictions, references, return_pvalue=False):
        with warnings.catch_warnings():
            # A constant input (a far-out grid point predicting one score) gives NaN, which is the honest value.
            warnings.simplefilter("ignore")
            result = pearsonr(predictions, references)
        if return_pvalue:
            return {"pearsonr": float(result[0]), "p-value": float(result[1])}
        return {"pearsonr": float(result[0])}
