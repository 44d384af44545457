"""xai-auditor: audit the explanations of image classifiers.

Plugin authors need only this module: ``hookimpl``, `Explainer`, `Check`, `Conclusion`, `Verdict`,
`Batch`, `Params`, `judge`, `AuditContext` / `CheckSpecError` (`Check.preflight`) (verdict metrics with bootstrap intervals), the evidence models
`Table`, `LineFigure`, `ImageGrid`, and the layer helpers
`find_layer` / `user_name` (docs/plugins.md is the reference; `auditor.testing` runs a plugin
without a spec).
"""
from .batch import Batch
from .check import AuditContext, Check, CheckSpecError, Conclusion, Verdict
from .evidence import Evidence, ImageGrid, ImageRow, LineFigure, Table
from .explain import Explainer, Params, reduce_channels
from .hookspecs import hookimpl
from .layers import find_layer, user_name
from .verdicts import Judgement, judge

__version__ = "0.1.0"
__all__ = ["AuditContext", "Batch", "Check", "CheckSpecError", "Conclusion", "Evidence", "Explainer", "ImageGrid", "ImageRow",
           "Judgement", "LineFigure", "Params", "Table", "Verdict", "find_layer", "hookimpl", "judge",
           "reduce_channels", "user_name", "__version__"]
