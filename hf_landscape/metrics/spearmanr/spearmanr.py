"""Spearman rank correlation coefficient (scipy's `spearmanr`), one of the official STS-B metrics."""

import warnings

import datasets
import evaluate
from scipy.stats import spearmanr

_DESCRIPTION = (
    "The Spearman rank correlation coefficient is the Pearson correlation of the ranks of predictions and "
    "references; it lies in [-1, 1]. Inputs are kept in float64."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[float]`): predicted scores.
    references (`list[float]`): ground-truth scores.
    return_pvalue (`bool`, defaults to `False`): also return the two-sided p-value.
Returns:
    spearmanr (`float`): `scipy.stats.spearmanr(predictions, references)[0]`; NaN when either input is constant.
    spearmanr_pvalue (`float`): only when `return_pvalue=True`.
Example:
    >>> import evaluate
    >>> from hf_landscape.metrics import metric_path
    >>> evaluate.load(str(metric_path("spearmanr"))).compute(predictions=[1.0, 2.0, 5.0], references=[1.0, 3.0, 4.0])
    {'spearmanr': 1.0}
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
class Spearmanr(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            reference_urls=["https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.spearmanr.html"],
        )

    def _compute(self, predictions, references, return_pvalue=False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant input -> NaN, as for pearsonr
            result = spearmanr(predictions, references)
        if return_pvalue:
            return {"spearmanr": float(result[0]), "spearmanr_pvalue": float(result[1])}
        return {"spearmanr": float(result[0])}
