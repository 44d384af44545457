"""Verdicts an auditor can defend: a metric judged against its threshold with a bootstrap 95%
confidence interval over the samples, and a ``borderline`` mark when the interval straddles the
threshold (the verdict stands by the mean; more samples would decide it).

    judgement = judge("ssim", per_sample_ssim, threshold=0.5, fail_if="above")
    Conclusion(Verdict.FAIL if not judgement.passed else Verdict.PASS, ..., judgements=[judgement])

The interval is scipy.stats.bootstrap's percentile interval of the mean (seeded, 2000 resamples);
the engine stores every judgement in results.json (``cells[i].judgements``), marks the cell
``borderline`` and `--strict` turns borderline cells into failures of the audit.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass
from typing import Any, Literal, Sequence

import numpy as np
from scipy.stats import bootstrap

LEVEL = 0.95
RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    """A metric reported without a threshold: mean over `samples` and its bootstrap 95% interval."""

    metric: str
    value: float                 # mean over the samples
    ci: tuple[float, float]      # bootstrap 95% interval of the mean
    samples: int

    def describe(self) -> str:
        """``gini 0.512 [0.47, 0.55]`` style text."""
        return f"{self.metric} {self.value:.3f} [{self.ci[0]:.3f}, {self.ci[1]:.3f}]"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ci"] = list(self.ci)
        return data


@dataclass(frozen=True)
class Judgement(Estimate):
    """One verdict metric: an `Estimate` judged against its threshold."""

    threshold: float = 0.0
    fail_if: Literal["above", "below"] = "above"
    passed: bool = True          # by the mean
    borderline: bool = False     # the interval straddles the threshold (or too few samples)

    def rule(self, typeset: bool = False) -> str:
        """How the mean compares with the threshold: ``<= 0.5`` (passed), ``> 0.5`` (failed)."""
        return rule(self.fail_if, self.threshold, self.passed, typeset)

    def describe(self) -> str:
        """``ssim 0.486 [0.41, 0.56] <= 0.5`` style text for reasons and tables."""
        return f"{super().describe()} {self.rule()}"


def rule(fail_if: Literal["above", "below"], threshold: float, passed: bool = True,
         typeset: bool = False) -> str:
    """The one wording of a threshold rule: the comparison of a mean with `threshold` that holds
    when the mean `passed` (``<= 0.5`` for a metric that fails above, ``>= 0.5`` below) or not
    (``> 0.5``, ``< 0.5``); ``rule(side, t)`` is the passing rule ("passes if <= 0.5").
    `typeset`: ``≤`` and ``≥`` (the report), else ASCII (reasons, the terminal, JUnit)."""
    op = ("<=" if passed else ">") if fail_if == "above" else (">=" if passed else "<")
    if typeset:
        op = {"<=": "≤", ">=": "≥"}.get(op, op)
    return f"{op} {threshold:g}"


def estimate(metric: str, values: Sequence[float], seed: int = 0) -> Estimate:
    """The mean of `values` (one per sample) with its seeded bootstrap 95% interval (percentile,
    2000 resamples; the seed is `seed` and the metric's name, so the same records give the same
    interval). A single sample, or values all equal, give the interval [mean, mean]."""
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1 or data.size == 0 or not np.isfinite(data).all():
        raise ValueError(f"estimate({metric!r}): expected a non-empty 1-D list of finite values")
    mean = float(data.mean())
    if data.size < 2 or np.ptp(data) == 0:
        low = high = mean
    else:
        rng = np.random.default_rng([seed, zlib.crc32(metric.encode())])
        result = bootstrap((data,), np.mean, confidence_level=LEVEL, n_resamples=RESAMPLES,
                           method="percentile", random_state=rng, vectorized=True)
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        low, high = min(low, mean), max(high, mean)  # guard against rounding at the edges
    return Estimate(metric, mean, (low, high), int(data.size))


def judge(metric: str, values: Sequence[float], threshold: float,
          fail_if: Literal["above", "below"] = "above", seed: int = 0) -> Judgement:
    """Judge the mean of `values` (one per sample) against `threshold`.

    ``fail_if="above"``: the metric fails when its mean exceeds the threshold (e.g. similarity
    after randomization); ``"below"``: when it falls short. Borderline when the 95% bootstrap
    interval of the mean contains the threshold, or with fewer than 2 samples (no interval).
    The resampling is seeded by `seed` and the metric's name, so the same records give the same
    interval.
    """
    base = estimate(metric, values, seed)
    low, high = base.ci
    passed = base.value <= threshold if fail_if == "above" else base.value >= threshold
    borderline = base.samples < 2 or (low <= threshold <= high and not math.isclose(low, high))
    return Judgement(metric, base.value, base.ci, base.samples, float(threshold), fail_if,
                     bool(passed), bool(borderline))
