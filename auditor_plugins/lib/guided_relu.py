"""The ReLU rule of guided backpropagation (Springenberg et al. 2015) as a differentiable
backward, so a loss on a guided map can be differentiated by the input (Dombrowski et al. 2019,
"Explanations can be manipulated and geometry is to blame", §4).

Guided backpropagation passes, at every ReLU ``a = f(z)``, only positive gradients::

    g_z = f'(z) * relu(g_a)      f = relu: f'(z) = [z > 0];  f = softplus_beta: f'(z) = sigmoid(beta z)

`guided_relus(model)` registers, while active, a hook on the OUTPUT ``a`` of every ``nn.ReLU``
module call that replaces the gradient reaching it by ``relu(g_a)``; the module's own backward
then multiplies by ``f'(z)``. Under ``create_graph`` the clamp is recorded like any other op, and
since the forward graph itself is untouched (the hooks are removed before anyone differentiates the
map), the map's derivative by the input follows the true network: the slopes ``f'(z)`` and the
activations they depend on are differentiated with the true rule. (A custom autograd function
with a guided backward would also apply the guided rule to ``dz/dx`` in the double backward and
get the second derivative wrong: measured, gradcheck fails from two ReLUs on.)

On a ReLU network ``[z > 0]`` is piecewise constant, so the map's input derivative is zero almost
everywhere; on a `SoftplusModel` (every ReLU computed as softplus_beta) it is not. Only
``nn.ReLU`` modules are guided (functional ``relu`` calls keep the plain rule), as in Captum's
`GuidedBackprop`, whose maps the guided_backprop explainer equals (tests/test_explainers.py).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


def positive(grad: torch.Tensor) -> torch.Tensor:
    return grad.clamp_min(0)


@contextmanager
def guided_relus(model: nn.Module) -> Iterator[None]:
    """While active, gradients that reach the output of an ``nn.ReLU`` module of `model`
    (computed by a forward pass inside the block) are clamped at zero: guided backpropagation."""
    tensor_hooks = []

    def guide(module, inputs, output):
        if isinstance(output, torch.Tensor) and output.requires_grad:
            tensor_hooks.append(output.register_hook(positive))

    module_hooks = [m.register_forward_hook(guide) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        yield
    finally:
        for handle in module_hooks + tensor_hooks:
            handle.remove()
