"""The base of the `evaluate` modules in `metric_modules/`: `evaluate.load(path)` over `METRICS`.

A module script names the registry's metrics it reports and its citation; scores, styles
and per-sample lists come from `chatsft.evaluation.metrics`, so the modules and the evaluate
stage cannot disagree. `compute(predictions=..., references=..., style="corpus",
per_sample=False)` returns {name: corpus score}, plus {name}_per_sample lists with
per_sample=True.
"""

from __future__ import annotations

import datasets
import evaluate

from chatsft.evaluation.metrics import compute_text_metrics, per_sample_scores

KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): model outputs.
    references (list of str): one reference per prediction.
    style (str): "corpus" (default) or "llamafactory" (see chatsft.evaluation.metrics).
    per_sample (bool): also return `<name>_per_sample`, one score per pair.
Returns:
    one score (0-100) per metric the module reports.
"""


class RegistryMetric(evaluate.Metric):
    """Subclasses set `names` (keys of METRICS), `description`, `citation` and `urls`."""

    names: tuple[str, ...] = ()
    description = citation = ""
    urls: tuple[str, ...] = ()

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=self.description, citation=self.citation,
            inputs_description=KWARGS_DESCRIPTION, reference_urls=list(self.urls),
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions: list[str], references: list[str], style: str = "corpus",
                 per_sample: bool = False) -> dict:
        result: dict = compute_text_metrics(predictions, references, style, self.names)
        if per_sample:
            samples = per_sample_scores(predictions, references, style, self.names)
            for name in self.names:
                result[f"{name}_per_sample"] = [s[name] for s in samples]
        return result
