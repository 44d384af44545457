"""SRD, Sharing Ratio Decomposition (Han, Kim & Kwak 2024, "Respect the model: Fine-grained and
Robust Explanation with Sharing Ratio Decomposition").

The unit of analysis is the pointwise feature vector (PFV): the C channels of a feature map at one
position (§3.1). Between two nonlinear layers the network is affine, so the PRE-activation PFV
v_j^k at layer k is a sum of pieces, each a function of one PFV v_i^l of the layer before (Eq. 5):

    v_j^k = sum_{i in RF_j} v̂_{i->j},   v̂_{i->j} = f_{i->j}(v_i^l)               (Eq. 5, App. B)
    mu_{i->j} = <v̂_{i->j}, v_j^k> / ||v_j^k||^2        (so sum_i mu_{i->j} = 1)         (Eq. 6)
    R_i^l = sum_{j in PF_i} mu_{i->j} R_j^k                                         (Eqs. 7-8)

Relevance starts at the encoder output L with the modified sharing ratio (Eqs. 4 and 9):

    R_i^L = max(Phi_i^c - 1/K sum_k Phi_i^k, 0),  Phi_i^c = sum_ch alpha_ch^c A_i^ch,
    alpha_ch^c = 1/HW sum_i dy^c / dA_i^ch                     (Grad-CAM weights, K classes)

and is redistributed layer by layer to the input (the backward pass of §3.2; Appendix C proves
it equals the forward ERF construction of Eqs. 1-3). The affine pieces f (Appendix B) and the
batched backward are in `layers`, the traced graph in `graph`.

Interpretations (the paper leaves these open; each is documented where it is used):

* Eq. 4's mean over classes is linear in the gradient, so it is computed with ONE gradient of
  ``y_c - mean_k y_k`` instead of K. ``A`` is the encoder output as the model computes it (after
  its ReLU/pooling). `contrastive` chooses the seed R^L:

  - ``paper`` (default; ``true`` in older specs): Eq. 4 as printed, max(Phi^c - 1/K sum_k Phi^k, 0);
  - ``official``: the authors' released code, which subtracts the SPATIAL mean of the class's own
    map instead and keeps the negatives, ``R_i = Phi_i^c - 1/HW sum_j Phi_j^c`` (the sentence
    before Eq. 4, "we subtract the mean of its saliency", read literally). Implemented from that
    description of the code (its repository could not be fetched to check it line by line).
    Its maps are signed and differ from the paper's (PCC 0.2-0.3 on ImageNet models);
  - ``false``: Grad-CAM's ``max(Phi^c, 0)``, no mean subtracted.

* L (default, `default_encoder_output`): walking back from the logits through the head's
  one-input layers (linear, flatten, dropout, activations of flat vectors) and its pooling, the
  last nonlinear activation with more than one position. The paper does not define L beyond
  "the encoder output" (§3.1); this is the authors' choice: VGG-16's ``features.29`` (the ReLU
  before the last max-pool, 14x14 at 224 px; Fig. 5 labels PFVs of "layer 29" at (4, 9), beyond a
  7x7 grid), ResNet's last block output (7x7). The head after L is only differentiated (Eq. 4),
  never decomposed ("for an MLP layer, we opt for established backward methods such as
  Grad-CAM", §3.1).
* Resolutions of Table 2: ``low`` = L (14x14 on VGG-16 at 224 px with the default L; §4.1
  lists (7, 7) for low-resolution maps, which ``encoder_output: avgpool`` gives); ``high`` = the
  deepest nonlinear layer downsampled at most 8x (28x28 at 224 px); ``input`` = the pixels.
  Coarser maps are upsampled bilinearly to the input size, as the paper does before evaluating.
  The relevance of a pixel is the relevance of its PFV (its colour channels together), so no
  channel reduction is needed; maps are signed and not normalized (the paper divides by the
  maximum only for display/metrics).
* Bias shares in composite segments, BatchNorm folding and zero PFVs: see `layers`.
* Relevance passes the input normalization ``(x - mean) / std`` exactly (a per-position shift
  stays with its pixel), so maps over [0, 1] pixels equal maps over normalized ones.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Literal

import torch
import torch.fx as fx
import torch.nn.functional as F
from pydantic import Field, field_validator

import auditor
from auditor import Explainer, Params

from ...lib.softplus import ReluAs, SoftplusModel
from .graph import SRDUnsupportedError, call_node, trace, where
from .layers import Decomposition

__all__ = ["SRD", "SRDParams", "SRDUnsupportedError", "Decomposition", "head"]


class SRDParams(Params):
    resolution: Literal["input", "high", "low"] = Field(
        "input", description="where the map is taken (Table 2): 'input' pixels; 'high' the deepest "
        "nonlinear layer downsampled at most 8x (28x28 at 224 px); 'low' the encoder output "
        "L (at 224 px: 7x7 on ResNets, 14x14 on VGG-16); coarser maps are upsampled bilinearly "
        "to the input size")
    layer: str | None = Field(
        None, description="take the map at this module's output instead (dotted name in the "
        "model, e.g. 'layer2' or 'features.22'; a container means its last operation)")
    encoder_output: str | None = Field(
        None, description="layer L where Eq. 4 starts; default: walking back from the logits "
        "through the head's one-input layers and pooling, the last nonlinear activation with "
        "more than one position (the authors' choice: VGG-16's features.29, 14x14 at 224 px; "
        "ResNet's last block, 7x7)")
    contrastive: Literal["paper", "official", False] = Field(
        "paper", description="the seed R^L at L: 'paper' Eq. 4, max(Phi^c - mean over classes "
        "Phi^k, 0); 'official' the authors' code, Phi^c minus its spatial mean, not clipped "
        "(signed); false: Grad-CAM's max(Phi^c, 0). true (older specs) means 'paper'")

    @field_validator("contrastive", mode="before")
    @classmethod
    def _true_is_paper(cls, value):
        return "paper" if value is True else value


class SRD(Explainer):
    """R^L from Eq. 4 at the encoder output, redistributed to the chosen layer by the sharing
    ratios of Eq. 6 (Eqs. 7-9); returns ``[B, H, W]`` at input resolution.

    Cost: one recorded forward pass, the head's gradient (Eq. 4), then one backward sweep whose
    per-layer work is a transposed convolution (all kernel taps at once) plus two one-channel
    convolutions for the bias shares (Eq. 11): measured 1.3-1.9 forward+backward passes on
    ResNet-18/VGG-16 at 224 px (about 3 on the small quickstart CNN, where per-layer
    elementwise work weighs more), batch 16 on CPU.

    ``differentiable`` (the explanation-manipulation attack of §4.3): with ``create_graph=True``
    nothing is detached and every internal autograd.grad keeps its graph (`Decomposition`), so
    the map keeps its graph with respect to `x`; same numbers as the default path. The sharing
    ratios depend on the activations themselves, so the map's input derivative is nonzero even
    on a ReLU network. A `SoftplusModel` (the attack's smooth surrogate) is explained as SRD of
    the softplus network: its inner model is traced as usual (the graph is shared with the ReLU
    model) and run with every ReLU computing softplus_beta, which SRD treats as the same
    pointwise boundary; the ratios then vary smoothly where the ReLU network has kinks.
    """

    name = "srd"
    description = "Sharing Ratio Decomposition: relevance split by PFV sharing ratios"
    paper = "Han, Kim & Kwak 2024"
    differentiable = True
    Params = SRDParams

    def explain(self, model, x, target, *, create_graph=False):
        model, relu_as = softplus_network(model)
        with torch.enable_grad(), relu_as:
            run = Decomposition(model, x, self.derived(model, "graph", lambda: trace(model)),
                                create_graph=create_graph)
            top = self.encoder_output(run)
            start = self.final_relevance(run, top, target)
            at = self.map_layer(run, top, x)
            if at is top:
                relevance = start
            else:
                kept = run.backward(top, start, keep={at})
                relevance = kept.get(at, torch.zeros(x.shape[0], *run.shape[at][1:],
                                                     dtype=x.dtype, device=x.device))
        if tuple(relevance.shape[1:]) != tuple(x.shape[2:]):
            relevance = F.interpolate(relevance[:, None], size=tuple(x.shape[2:]), mode="bilinear",
                                      align_corners=False)[:, 0]
        return relevance if create_graph else relevance.detach()

    def encoder_output(self, run: Decomposition) -> fx.Node:
        """L: ``params.encoder_output`` or `default_encoder_output`."""
        name = self.params.encoder_output
        return run.find(name) if name else default_encoder_output(run)

    def final_relevance(self, run: Decomposition, top: fx.Node, target: torch.Tensor) -> torch.Tensor:
        """Eqs. 4 and 9, the seed R^L per PFV i of L, ``[B,H,W]``: ``max(Phi_i^c - mean_k Phi_i^k, 0)``
        (``paper``), ``Phi_i^c - mean_j Phi_j^c`` (``official``) or ``max(Phi_i^c, 0)`` (false)."""
        mode = self.params.contrastive
        a = run._leaf(run.values[top])
        logits = head(run, top, a)
        score = logits.gather(1, target.view(-1, 1).to(logits.device))[:, 0]
        if mode == "paper":  # 1/K sum_k Phi^k is Phi of the mean logit (linear in y)
            score = score - logits.mean(1)
        grad = torch.autograd.grad(score.sum(), a, create_graph=run.create_graph)[0]
        alpha = run.pfv(top, grad).mean((2, 3), keepdim=True)  # Grad-CAM weights alpha_ch
        phi = (alpha * run.pfv(top, a if run.create_graph else a.detach())).sum(1)
        if mode == "official":
            return phi - phi.mean((1, 2), keepdim=True)
        return phi.clamp_min(0)

    def map_layer(self, run: Decomposition, top: fx.Node, x: torch.Tensor) -> fx.Node:
        """The node whose PFV relevance is the map: ``params.layer`` or the Table 2 resolution."""
        below = run.ancestors(top)
        if self.params.layer is not None:
            node = run.find(self.params.layer)
            if node not in below:
                raise ValueError(f"layer {self.params.layer!r} is not below the encoder output "
                                 f"{top.name!r}; SRD maps exist only there")
            whole = run.cuts(below)
            if node not in whole:
                outputs = [n.name for n in whole if run.steps[n].kind == "act"][-3:]
                raise ValueError(f"layer {self.params.layer!r} lies inside a residual block: part of "
                                 "the relevance bypasses it through the skip connection, so its map "
                                 f"would be partial; choose a block output, e.g. one of {outputs}")
            return node
        if self.params.resolution == "low":
            return top
        if self.params.resolution == "high":
            height, width = x.shape[2:]
            fine = [n for n in run.cuts(below) if (run.steps[n].kind == "act" or n is top) and
                    run.shape[n][1] * 8 >= height and run.shape[n][2] * 8 >= width]
            if fine:
                return fine[-1]
        return below[0]  # the model input


def softplus_network(model: torch.nn.Module) -> tuple[torch.nn.Module, AbstractContextManager]:
    """The network SRD traces and the mode to run it under: a `SoftplusModel` (the
    explanation-manipulation attack's smooth surrogate, Dombrowski et al. 2019 §4) is its inner
    ReLU model, traced as usual, run with every ReLU call computing softplus_beta; any other model
    is itself, run as is."""
    if isinstance(model, SoftplusModel):
        return model.model, ReluAs(lambda z: F.softplus(z, beta=model.beta))
    return model, nullcontext()


# head layers the default encoder output walks back through (each has one data input)
HEAD_KINDS = ("linear", "route", "pointwise", "act")


def default_encoder_output(run: Decomposition) -> fx.Node:
    """Default encoder output L (§3.1, Eq. 3), where the paper is silent: the authors' choice.

    Walking back from the logits along the chain of one-input layers of the head (linear,
    flatten/reshape, dropout, BatchNorm, activations of flat vectors) AND pooling (max, average,
    adaptive, global), the first - i.e. the network's last - nonlinear activation whose output is
    a [B,C,H,W] map with more than one position. That is the boundary where the decomposition
    starts (Eq. 5 splits pre-activation PFVs between nonlinear layers), and it is what the
    official code uses: VGG-16 ``features.29`` (the ReLU before the last max-pool: 14x14 at
    224 px; measured against the official code, starting at the pooled 7x7 map that the
    classifier reads instead gives PCC 0.987-0.996 and 1.22x its scale), ResNet-18/50 the last
    block's ReLU (7x7 at 224 px), the quickstart CNN ``features.14`` (the ReLU before its last
    max-pool, 8x8 at 64 px, where the pooled 4x4 map was L before).

    If the walk meets anything else first (a convolution, a residual sum, a two-input gate), it
    stops there and L is the first feature map with more than one position met on the way (the
    map the head reads). A side branch (e.g. a squeeze-excitation gate) never ends the encoder
    early."""
    node, first_map = run.output, None
    while isinstance(node, fx.Node) and node in run.steps:
        step = run.steps[node]
        spatial = node in run.shape and run.values[node].dim() == 4 and \
            run.shape[node][1] * run.shape[node][2] > 1
        if spatial and step.kind == "act":
            return node
        if spatial and first_map is None:
            first_map = node
        if step.kind not in HEAD_KINDS or len(step.inputs) != 1:
            break
        node = step.inputs[0]
    if first_map is not None:
        return first_map
    raise SRDUnsupportedError("SRD found no single spatial feature map that the classifier head "
                              "reads; set params.encoder_output")


def head(run: Decomposition, start: fx.Node, value: torch.Tensor) -> torch.Tensor:
    """The logits recomputed from ``value`` at `start` with autograd on: the classifier head
    that Eq. 4 differentiates (never decomposed). Every path to the output must go through
    `start`, or Eq. 4 would miss part of the model."""
    values = {start: value}
    for node in run.nodes[run.nodes.index(start) + 1:]:
        inputs = run.steps[node].inputs
        if not any(a in values for a in inputs):
            continue
        for a in inputs:
            if a not in values:
                raise SRDUnsupportedError(
                    f"the classifier head reads {where(a, run.model)}, which bypasses the encoder "
                    f"output {where(start, run.model)}; set params.encoder_output to a layer that "
                    "every path to the output goes through")
        get = lambda a: values.get(a, run.values[a])  # noqa: E731
        values[node] = call_node(run.model, node, fx.node.map_arg(node.args, get),
                             fx.node.map_arg(node.kwargs, get))
    out = values.get(run.output) if isinstance(run.output, fx.Node) else None
    if out is None:
        raise SRDUnsupportedError(f"the model output does not depend on the encoder output "
                                  f"{where(start, run.model)}")
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise SRDUnsupportedError("SRD explains models whose output is one logit tensor [B, classes]")
    return out


@auditor.hookimpl
def auditor_explainers():
    return [SRD]
