"""xai-auditor: audit the explanations of image classifiers.

Plugin authors need only this module: ``hookimpl``, `Explainer`, `Check`, `Conclusion`, `Verdict`,
`Batch` and `Params`.
"""
from .batch import Batch
from .check import Check, Conclusion, Verdict
from .explain import Explainer, Params, reduce_channels
from .hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["Batch", "Check", "Conclusion", "Explainer", "Params", "Verdict", "hookimpl",
           "reduce_channels", "__version__"]
