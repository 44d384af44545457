"""Progress of the measure stage at the granularity of the work: each explanation computed.

The stage is ``batches x active cells`` steps. A step advances as its explanations are computed:
a check that knows how many it will compute in one `measure` call says so with
``batch.expect(n)`` (the sanity check: one per randomization step), and each explanation then
moves the bar by 1/n of a step; otherwise the step completes when `measure` returns. tqdm turns
the rate into an ETA, so even a one-batch audit shows movement and a remaining time within
seconds. Also counts what each explainer cost, once, where its explanations were computed.
"""
from __future__ import annotations

import sys
from collections import defaultdict
from tqdm import tqdm


class Progress:
    """The measure stage's bar and the explainers' costs (seconds and explanations computed)."""

    def __init__(self, steps: int, enabled: bool):
        self.bar = tqdm(total=steps, desc="explain+measure", unit="step", disable=not enabled,
                        leave=False, file=sys.stderr,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} "
                                   "[{elapsed}<{remaining}{postfix}]")
        self.costs: dict[str, dict[str, float]] = defaultdict(lambda: {"seconds": 0.0, "explanations": 0})
        self._left = 0.0   # part of the current step not yet advanced
        self._each = 0.0   # advance per explanation in the current step
        self._cell = ""

    def begin(self, cell: str) -> None:
        """A step starts (one cell's `measure` on one batch)."""
        self._cell, self._left, self._each = cell, 1.0, 0.0
        self.bar.set_postfix_str(cell, refresh=False)

    def expect(self, explanations: int) -> None:
        """The current step will compute about this many explanations."""
        if explanations > 0 and self._left > 0:
            self._each = self._left / explanations

    def explained(self, label: str, seconds: float, count: int = 1) -> None:
        """An explanation of `label` was computed in `seconds` (`count` maps)."""
        cost = self.costs[label]
        cost["seconds"] += seconds
        cost["explanations"] += count
        if self._each and self._left > 0:
            step = min(self._each, self._left)
            self._left -= step
            self._advance(step)

    def end(self) -> None:
        """The step is done: advance what is left of it."""
        if self._left > 0:
            self._advance(self._left)
        self._left, self._each = 0.0, 0.0

    def done_elsewhere(self, steps: int, where: str) -> None:
        """`steps` steps were done elsewhere (taken from the journal of a killed run, measured on
        a Ray worker): the bar moves past them at once."""
        self.bar.set_postfix_str(f"({where})", refresh=False)
        self._advance(steps)

    def remaining(self, steps: int) -> None:
        """`steps` steps are left: the total becomes the steps done plus these (a cell that
        failed is not measured on later batches, and its steps leave the total)."""
        self.bar.total = round(self.bar.n) + steps
        self.bar.refresh()

    def _advance(self, step: float) -> None:
        """Move the bar, never past its total (float steps add up with rounding)."""
        self.bar.update(max(0.0, min(step, (self.bar.total or 0) - self.bar.n)))

    def close(self) -> dict[str, dict[str, float]]:
        self.bar.close()
        return {label: dict(cost) for label, cost in self.costs.items()}
