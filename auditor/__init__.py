"""xai-auditor: audit the explanations of image classifiers.

Plugin authors need only this module: ``hookimpl``, `Explainer`, `Check` (its `evaluate` returns an
`Evaluation` of `Measured` metrics; `threshold` declares a judged field), `Conclusion`, `Verdict`,
`Batch`, `Params`, `judge` / `estimate` (metrics with bootstrap intervals), `AuditContext` /
`CheckSpecError` (`Check.preflight`), the evidence models
`Table`, `LineFigure`, `ImageGrid`, and the layer helpers
`find_layer` / `user_name` (docs/plugins.md is the reference; `auditor.testing` runs a plugin
without a spec).
"""
from .batch import Batch
from .check import AuditContext, Check, CheckSpecError, Conclusion, Evaluation, Measured, Verdict, threshold
from .evidence import Evidence, ImageGrid, ImageRow, LineFigure, Table
from .explain import Explainer, Params, reduce_channels
from .hookspecs import hookimpl
from .layers import find_layer, user_name
from .verdicts import Estimate, Judgement, estimate, judge

__version__ = "0.1.0"
__all__ = ["AuditContext", "Batch", "Check", "CheckSpecError", "Conclusion", "Estimate", "Evaluation", "Evidence",
           "Explainer", "ImageGrid", "ImageRow", "Judgement", "LineFigure", "Measured", "Params", "Table",
           "Verdict", "estimate", "find_layer", "hookimpl", "judge", "threshold",
           "reduce_channels", "user_name", "__version__"]
