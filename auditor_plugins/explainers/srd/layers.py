"""Sharing Ratio Decomposition, the relevance pass: the affine pieces between the nonlinear
layers (Appendix B) and the backward relevance pass (§3.2, Eqs. 5-8, 20). The model's graph and
its node kinds are in `graph`.

Vocabulary (§3.1). A *PFV* (pointwise feature vector) is the C channels of a feature map at one
spatial position. *Boundaries* are the nonlinear layers (ReLU & co.), the model input and the
encoder output L; between boundaries the network is affine (Eq. 5):
``v_j^k = sum_i f_{i->j}(v_i^l) = sum_i v̂_{i->j}``, v_j^k the PRE-activation PFV at the next
nonlinear layer k. Sharing ratio (Eq. 6): ``mu_{i->j} = <v̂_{i->j}, v_j> / ||v_j||^2``, so the
ratios of one output PFV sum to 1; relevance goes back with them (Eqs. 7-8):
``R_i = sum_j mu_{i->j} R_j = sum_j <v̂_{i->j}, g_j>`` with ``g_j = R_j v_j / ||v_j||^2``.

How that is computed for every position and the whole batch at once, without per-pixel loops:
``v̂_{i->j}`` = linear part + bias share (Eq. 11).

* linear part: ``sum_j <L_{i->j} v_i, g_j> = <v_i, (J^T g)_i>`` where ``J^T g`` is the
  vector-Jacobian product of the affine segment: a transposed convolution for a convolution (all
  kernel taps at once), the scale for BatchNorm, routing to the argmax recorded in the forward
  pass for max-pooling (Eq. 12), 1/|window| for average pooling, identity to both summands of a
  residual addition. Autograd computes it node by node on local graphs recorded in the forward.
* bias share (Eq. 11): ``b ||v_i|| / sum_{k in RF_j} ||v_k||``; its part of the relevance is
  ``beta_j = <b, g_j>`` shared in proportion to the input PFV norms:
  ``R_i += ||v_i|| * sum_{j: i in RF_j} beta_j / S_j``, ``S_j = sum_{k in RF_j} ||v_k||`` - a
  one-channel convolution with a ones kernel (the window sums S) and its transpose.
* BatchNorm (and any per-channel scale/shift) right after a convolution or linear layer is folded
  into it: its shift joins the layer's bias and is shared by Eq. 11 (Appendix B, "Batch
  normalization layer"). A per-position shift with nothing spatial before it in the segment (e.g.
  the input normalization ``(x - mean) / std``) stays with its own position (its RF is itself).
* Composite segments (Eq. 13, e.g. max-pool then convolution): a bias share that lands on an
  intermediate node's position m is relevance at m and is decomposed further with m's own sharing
  ratios (Eq. 6 applied at m; for max-pooling these are the squared norms of the channels each
  input PFV supplies, which sum to ||v_m||^2).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from auditor.layers import LayerNotFoundError, find_layer

from ...lib.batchnorm import batchnorm_affine
from .graph import (SRDUnsupportedError, Step, call_node, classify, constant_shift, fetch, trace,
                        where)

EPS = 1e-12  # added to PFV norms in Eq. 11: an all-zero window shares its bias evenly


class Decomposition:
    """One forward pass of `model` on `x` that records what SRD's backward pass needs.

    Every affine node runs on detached copies of its inputs with autograd on, so its
    vector-Jacobian product (the linear part of Eq. 5) is available later at the cost of one
    backward kernel; nonlinear nodes run without autograd; nothing is run twice.

    With `create_graph` nothing is detached: every node runs with autograd on the recorded values,
    which keep their graph with respect to `x`; an affine node's inputs are fresh views of them,
    so its vector-Jacobian product stays local to the node (a residual sum's other summand also
    depends on the same input), and every autograd.grad of the backward pass keeps its graph.
    The relevance it returns is then differentiable with respect to `x`.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, graph: fx.Graph | None = None, *,
                 create_graph: bool = False):
        self.model, self.graph = model, graph if graph is not None else trace(model)
        self.create_graph = create_graph
        self.nodes = [n for n in self.graph.nodes if n.op != "output"]
        self.output = next(n for n in self.graph.nodes if n.op == "output").args[0]
        self.steps: dict[fx.Node, Step] = {}
        self.values: dict[fx.Node, Any] = {}      # node -> output (tensors detached)
        self.local: dict[fx.Node, tuple[torch.Tensor, list[torch.Tensor]]] = {}  # out, input leaves
        self.shape: dict[fx.Node, tuple[int, int, int]] = {}  # PFV view (C, H, W) of data nodes
        with torch.enable_grad():
            self._forward(x if create_graph else x.detach())

    # -- forward --------------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> None:
        for node in self.nodes:
            if node.op == "placeholder":
                if node is not self.nodes[0]:
                    raise SRDUnsupportedError(f"SRD explains models with one input; {node.name!r} is a second")
                self.steps[node] = Step(node, "input")
                self._store(node, x, None)
                continue
            if node.op == "get_attr":
                self.steps[node] = Step(node, "const")
                self.values[node] = fetch(self.model, node.target)
                continue
            data = [a for a in node.all_input_nodes if self.steps[a].kind not in ("const",)]
            step = self.steps[node] = classify(self.model, node, data) if data else Step(node, "const")
            needs_graph = step.kind in ("conv", "linear", "pointwise", "route")
            leaves: dict[fx.Node, torch.Tensor] = {}

            def value(a: fx.Node) -> Any:
                if needs_graph and a in data:
                    return leaves.setdefault(a, self._leaf(self.values[a]))
                return self.values[a]

            args = fx.node.map_arg(node.args, value)
            kwargs = fx.node.map_arg(node.kwargs, value)
            with torch.set_grad_enabled(needs_graph or self.create_graph):
                out = call_node(self.model, node, args, kwargs)
            if not isinstance(out, torch.Tensor):
                step.kind = "const"  # sizes and other non-tensor values
                self.values[node] = out
                continue
            if step.kind == "pointwise" and node.op != "call_module":
                step.bias = constant_shift(self.model, node, data, self.values)
            self._store(node, out, [leaves[a] for a in data if a in leaves] if needs_graph else None)

    def _leaf(self, value: torch.Tensor) -> torch.Tensor:
        """An affine node's input: a detached leaf, or (`create_graph`) a view of the recorded
        value that only this node reads, so the node's VJP stops there."""
        if self.create_graph and value.requires_grad:
            return value.view_as(value)
        return value.detach().requires_grad_(True)

    def _store(self, node: fx.Node, out: torch.Tensor, leaves: list[torch.Tensor] | None) -> None:
        self.values[node] = out if self.create_graph else out.detach()
        if leaves is not None and out.requires_grad:
            self.local[node] = (out, leaves)
        step = self.steps[node]
        src = step.inputs[0] if step.inputs else None
        same = src is not None and src in self.shape and self.values[src].shape == out.shape
        if out.dim() == 4:
            self.shape[node] = tuple(out.shape[1:])
        elif out.dim() == 2 and same and step.kind in ("pointwise", "route"):
            self.shape[node] = self.shape[src]  # elementwise: same PFVs as its input
        elif out.dim() == 2:
            flat = src is not None and src in self.shape and self.values[src].dim() == 4 and \
                self.values[src][0].numel() == out.shape[1] and step.kind == "route"
            # a flatten keeps the PFVs of its input: a Linear then mixes every position (Eq. 11)
            self.shape[node] = self.shape[src] if flat else (out.shape[1], 1, 1)
        elif step.kind != "input":
            step.why = step.why or f"a {out.dim()}-D feature tensor (SRD handles [B,C,H,W] and [B,F])"
            step.kind = "other"

    # -- structure ------------------------------------------------------------------------------
    def ancestors(self, node: fx.Node) -> list[fx.Node]:
        """`node` and every data node it depends on, in topological order."""
        seen, stack = {node}, [node]
        while stack:
            for a in self.steps[stack.pop()].inputs:
                if a not in seen:
                    seen.add(a)
                    stack.append(a)
        return [n for n in self.nodes if n in seen]

    def cuts(self, nodes: list[fx.Node]) -> list[fx.Node]:
        """The nodes of `nodes` (the topologically ordered ancestors of a node) that every path
        from the input to the last node passes through: no edge a -> b jumps over them. Only there
        does the whole relevance pass (Eq. 8 conserves it); inside a residual block part of it
        takes the skip connection, so a map there is partial."""
        position = {n: i for i, n in enumerate(nodes)}
        jumped = [0] * (len(nodes) + 1)  # difference array of the edges spanning each position
        for b in nodes:
            for a in self.steps[b].inputs:
                if a in position and position[b] - position[a] > 1:
                    jumped[position[a] + 1] += 1
                    jumped[position[b]] -= 1
        out, spanning = [], 0
        for i, n in enumerate(nodes):
            spanning += jumped[i]
            if spanning == 0:
                out.append(n)
        return out

    def check_supported(self, nodes: list[fx.Node]) -> None:
        """Refuse the decomposition before any map is built; names the unsupported node
        nearest the encoder output (the first the backward sweep would reach)."""
        for n in reversed(nodes):
            step = self.steps[n]
            if step.kind == "other":
                raise SRDUnsupportedError(
                    f"SRD cannot decompose {where(n, self.model)}: {step.why}. SRD handles "
                    "Conv2d, Linear, BatchNorm2d, max/avg/adaptive pooling, flatten, residual "
                    "sums, concatenation, scaling/shifting by constants and pointwise activations")

    def find(self, name: str) -> fx.Node:
        """The last data node run by module `name` (dotted path, with or without the 'net.' of
        the audited wrapper) or the fx node named `name`: a container's output."""
        try:
            names = {find_layer(self.model, name)[0]}
        except LayerNotFoundError:
            names = set()  # maybe an fx node name
        hits = [n for n in self.nodes if n in self.shape and (
            n.name == name or (n.op == "call_module" and n.target in names) or
            any(entry[0] in names for entry in (n.meta.get("nn_module_stack") or {}).values()))]
        if not hits:
            raise LayerNotFoundError(f"no layer or graph node named {name!r} in the model")
        return hits[-1]

    def pfv(self, node: fx.Node, t: torch.Tensor) -> torch.Tensor:
        """``t`` (a tensor shaped like node's output) as ``[B, C, H, W]`` PFVs."""
        return t.reshape(t.shape[0], *self.shape[node])

    # -- backward (Eqs. 7-8, 20) ----------------------------------------------------------------
    def backward(self, start: fx.Node, relevance: torch.Tensor, keep: set[fx.Node]
                 ) -> dict[fx.Node, torch.Tensor]:
        """Redistribute ``relevance`` [B,H,W] at the PFVs of `start` down to the input.

        Returns the relevance [B,H,W] at each node of `keep` (PFVs of that node). Every node is
        visited once, in reverse topological order, carrying
        G: vectors (Eq. 7 in vector form, the adjoint ``J^T g``), P: relevance at this node's
        positions still to be decomposed by Eq. 6 against this node's PFVs, S: bias relevance
        waiting for the nearest spatial layer before it to share it by Eq. 11.
        """
        nodes = self.ancestors(start)
        self.check_supported(nodes)
        G: dict[fx.Node, torch.Tensor] = {}
        P: dict[fx.Node, torch.Tensor] = {start: relevance}
        S: dict[fx.Node, torch.Tensor] = {}
        kept: dict[fx.Node, torch.Tensor] = {}
        for node in reversed(nodes):
            step, v = self.steps[node], self.values[node]
            g, p, s = G.pop(node, None), P.pop(node, None), S.pop(node, None)
            if g is None and p is None and s is None:
                self.local.pop(node, None)
                continue
            if node in keep or step.kind in ("act", "input"):
                # relevance of this node's PFVs: <v_i, G_i> + scalar shares (Eq. 8)
                r = _add(_add(p, s), None if g is None else
                         torch.linalg.vecdot(self.pfv(node, v), self.pfv(node, g), dim=1))
                if node in keep:
                    kept[node] = r
                if step.kind in ("act", "input"):
                    # a pointwise nonlinearity maps PFV i to PFV i: the relevance of its output
                    # is that of its PRE-activation input, decomposed there by Eq. 6
                    if step.kind == "act":
                        _acc(P, step.inputs[0], r)
                    self.local.pop(node, None)
                    continue
            rule = RULES[step.kind]
            if step.kind == "route":
                p, s = _add(p, s), None  # no bias here: waiting shares are decomposed by Eq. 6
            if p is not None:  # Eq. 6 at this node: g = R v / ||v||^2
                g = _add(g, self._eq6(node, v, p))
            rule(self, node, step, g, s, G, P, S)
            self.local.pop(node, None)
        return kept

    def _eq6(self, node: fx.Node, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        pv = self.pfv(node, v)
        norm2 = torch.linalg.vecdot(pv, pv, dim=1)
        nonzero = norm2 > 0  # a zero PFV takes no share (and, with create_graph, no NaN gradient)
        ratio = torch.where(nonzero, r / torch.where(nonzero, norm2, 1), 0)
        return (pv * ratio.unsqueeze(1)).reshape(v.shape)

    def vjp(self, node: fx.Node, g: torch.Tensor) -> list[torch.Tensor | None]:
        """Linear part of the segment at this node: ``J^T g`` for each data input."""
        out, leaves = self.local[node]
        return list(torch.autograd.grad(out, leaves, g.reshape(out.shape), allow_unused=True,
                                        create_graph=self.create_graph))


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    return b if a is None else a if b is None else a + b


def _acc(table: dict, node: fx.Node, t: torch.Tensor | None) -> None:
    if t is not None:
        table[node] = _add(table.get(node), t)


def _bias_relevance(d: Decomposition, node: fx.Node, bias: torch.Tensor | None, g: torch.Tensor | None,
                    waiting: torch.Tensor | None) -> torch.Tensor | None:
    """beta_j = <b, g_j> per output PFV (plus shifts folded in from later pointwise layers)."""
    if bias is None or g is None:
        return waiting
    b = bias.expand_as(g) if bias.shape != g.shape else bias
    return _add(waiting, torch.linalg.vecdot(d.pfv(node, b), d.pfv(node, g), dim=1))


def _route(d: Decomposition, node, step, g, s, G, P, S) -> None:
    """Pooling, flatten, residual sum, concatenation: linear, no bias (Appendix B "Pooling
    layer": max-pool routes to the recorded argmax, Eq. 12; average pool scales by 1/|window|)."""
    if g is None:
        return
    for a, ga in zip(step.inputs, d.vjp(node, g)):
        _acc(G, a, ga)


def _pointwise(d: Decomposition, node, step, g, s, G, P, S) -> None:
    """BatchNorm (eval), scaling/shifting by a constant: y = a*x + c per PFV. The shift's
    relevance waits in S for the nearest spatial layer before it (BatchNorm folded into the
    convolution as scale + bias), or stays at its own position at a boundary."""
    m = step.module
    if isinstance(m, nn.BatchNorm2d):
        bias = batchnorm_affine(m)[1].view(1, -1, 1, 1)
    else:
        bias = step.bias() if step.bias is not None else None
    beta = _bias_relevance(d, node, bias, g, s)
    source = step.inputs[0]
    if g is not None:
        _acc(G, source, d.vjp(node, g)[0])
    _acc(S, source, beta)  # a route node (pooling, sum) decomposes it by Eq. 6 instead


def _conv(d: Decomposition, node, step, g, s, G, P, S) -> None:
    """Convolution (Eq. 11): each kernel tap maps an input PFV linearly (transposed convolution
    for all taps at once); the bias b is shared in proportion to ||v_i|| over RF_j."""
    m, source = step.module, step.inputs[0]
    beta = _bias_relevance(d, node, None if m.bias is None else m.bias.detach().view(1, -1, 1, 1), g, s)
    if g is not None:
        _acc(G, source, d.vjp(node, g)[0])
    if beta is None:
        return
    with torch.enable_grad():
        norm = d.pfv(source, d.values[source]).norm(dim=1, keepdim=True) + EPS
        n = d._leaf(norm)
        padded, pad = n, m.padding
        if m.padding_mode != "zeros":
            padded, pad = F.pad(n, m._reversed_padding_repeated_twice, mode=m.padding_mode), 0
        ones = torch.ones(1, 1, *m.kernel_size, dtype=n.dtype, device=n.device)
        window = F.conv2d(padded, ones, None, m.stride, pad, m.dilation)  # S_j = sum_RF ||v_k||
        spread = torch.autograd.grad(window, n, (beta.unsqueeze(1) / window),
                                     create_graph=d.create_graph)[0]
    _acc(P, source, (norm * spread)[:, 0])


def _linear(d: Decomposition, node, step, g, s, G, P, S) -> None:
    """Linear layer: one output PFV whose receptive field is every input PFV (after a flatten,
    every position of the feature map); the bias is shared by Eq. 11 over all of them."""
    m, source = step.module, step.inputs[0]
    if d.values[source].dim() != 2:
        raise SRDUnsupportedError(f"SRD cannot decompose {where(node, d.model)}: Linear on a "
                                  f"{d.values[source].dim()}-D tensor (expected [B, F])")
    beta = _bias_relevance(d, node, None if m.bias is None else m.bias.detach(), g, s)
    if g is not None:
        _acc(G, source, d.vjp(node, g)[0])
    if beta is not None:
        n = d.pfv(source, d.values[source]).norm(dim=1) + EPS
        _acc(P, source, n * (beta.flatten(1).sum(1).view(-1, 1, 1) / n.sum((1, 2), keepdim=True)))


RULES = {"route": _route, "pointwise": _pointwise, "conv": _conv, "linear": _linear}
