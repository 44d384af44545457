"""Layer taps (`auditor.taps`): `capture`'s call counters and grad mode, the call-order `walk`,
the resolution grouping, and the hooks always removed; the walker's users in the plugins' libraries
(`call_order`, `bytes_per_row`) on known answers."""
import pytest
import torch
from torch import nn

from auditor.taps import ByResolution, capture, walk
from auditor_plugins.lib.model_randomization import call_order
from auditor_plugins.lib.perturbation import bytes_per_row


class Reused(nn.Module):
    """One ReLU module called three times, a Sequential around two convs, a linear head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1))
        self.relu, self.pool, self.head = nn.ReLU(), nn.MaxPool2d(2), nn.Linear(4, 2)

    def forward(self, x):
        a = self.relu(x - 0.5)                     # relu call 0, 8x8, the input shifted
        b = self.relu(self.body(a))                # relu call 1, 8x8
        c = self.relu(self.pool(b))                # relu call 2, 4x4
        return self.head(c.mean(dim=(2, 3)))


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_capture_counts_the_calls_of_each_module():
    model, x = Reused(), torch.rand(2, 3, 8, 8)
    output, acts = capture(model, x, [("relu", 0), ("relu", 2), ("relu", -1), ("body.1", 0), ("relu", 5)])
    assert torch.equal(output, model(x))
    assert list(acts) == [("relu", 0), ("relu", 2), ("relu", -1), ("body.1", 0)]  # call 5 never ran
    assert torch.equal(acts[("relu", 0)], torch.relu(x - 0.5))
    expected_last = torch.relu(model.pool(torch.relu(model.body(torch.relu(x - 0.5)))))
    assert torch.equal(acts[("relu", 2)], expected_last) and acts[("relu", -1)] is acts[("relu", 2)]
    assert acts[("body.1", 0)].shape == (2, 4, 8, 8)
    assert no_hooks(model)


def test_capture_without_grad_hands_back_the_modules_own_tensors():
    """grad=False: no autograd, no copy: an in-place op after the layer changes the capture."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(inplace=True))
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    output, acts = capture(model, x, [("0", -1)])
    assert not output.requires_grad and acts[("0", -1)] is output  # the ReLU ran in place on it
    assert acts[("0", -1)].min() >= 0


def test_capture_with_grad_keeps_the_activations_and_their_gradient():
    """grad=True: the network goes on with a copy, so the in-place ReLU after the conv leaves A
    intact, and d score / d A is the head's weight times the ReLU's slope (known answer). With
    frozen parameters and an input without grad, A is a leaf that requires grad (as Captum's)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(),
                          nn.Linear(2 * 6 * 6, 3)).requires_grad_(False)
    x = torch.randn(4, 3, 6, 6)
    output, acts = capture(model, x, [("0", -1)], grad=True)
    a = acts[("0", -1)]
    assert a.is_leaf and a.requires_grad
    assert torch.equal(a, model[0](x))  # not the ReLU's output: negatives survive
    assert a.min() < 0
    grad, = torch.autograd.grad(output[:, 1].sum(), a)
    assert torch.equal(grad, model[3].weight[1].view(1, 2, 6, 6).expand_as(a) * (a > 0))
    with torch.no_grad():  # the caller's mode does not matter
        assert capture(model, x, [("0", -1)], grad=True).activations[("0", -1)].requires_grad
    assert no_hooks(model)


def test_hooks_are_removed_when_the_forward_pass_raises():
    model = Reused()
    bad = torch.rand(1, 5, 8, 8)  # 5 channels: the first conv raises
    for run in (lambda: capture(model, bad, [("relu", -1), ("body.0", 0)]), lambda: walk(model, bad)):
        with pytest.raises(RuntimeError):
            run()
        assert no_hooks(model)


def test_walk_records_every_call_in_finish_order_with_nesting_and_shapes():
    model, x = Reused(), torch.rand(2, 3, 8, 8)
    calls = walk(model, x)
    assert [c.tap for c in calls] == [("relu", 0), ("body.0", 0), ("body.1", 0), ("body", 0),
                                      ("relu", 1), ("pool", 0), ("relu", 2), ("head", 0), ("", 0)]
    assert [c.name for c in sorted(calls, key=lambda c: c.started)] == [
        "", "relu", "body", "body.0", "body.1", "relu", "pool", "relu", "head"]
    shapes = {c.tap: c.output.shape for c in calls}
    assert shapes[("body", 0)] == (2, 4, 8, 8) and shapes[("pool", 0)] == (2, 4, 4, 4)
    assert shapes[("head", 0)] == shapes[("", 0)] == (2, 2)
    by_tap = {c.tap: c for c in calls}
    # the same tensor object, the same ref: the Sequential returns its last conv's output
    assert by_tap[("body", 0)].output.ref == by_tap[("body.1", 0)].output.ref
    assert by_tap[("relu", 1)].input.ref == by_tap[("body", 0)].output.ref
    assert by_tap[("relu", 0)].input.ref != by_tap[("", 0)].input.ref  # x - 0.5 is not x
    assert no_hooks(model)


def test_walk_visits_each_call_with_the_calls_around_it_and_the_producers_so_far():
    model, x = Reused(), torch.rand(2, 3, 8, 8)
    seen = {}

    def visit(call, state):
        seen[call.tap] = ([c.name for c in state.running], state.producer(call.output),
                          state.producer(call.input), state.tensor(call.output))

    walk(model, x, visit)
    running, own, source, tensor = seen[("body.1", 0)]
    assert running == ["", "body"]  # outermost first, the call itself not among them
    assert own is None and source.tap == ("body.0", 0)  # producers finished before it only
    assert tensor.shape == (2, 4, 8, 8)
    running, own, _, _ = seen[("body", 0)]
    assert running == [""] and own.tap == ("body.1", 0)  # its output was last returned by body.1
    assert seen[("relu", 1)][2].tap == ("body", 0)  # a tensor's producer: the last call returning it
    assert seen[("relu", 0)][2] is None  # computed outside any module (x - 0.5)


def test_by_resolution_keeps_one_winner_per_size_by_the_rule():
    smallest = ByResolution(lambda new, best: new < best)
    for size, value in [((8, 8), 5), ((4, 4), 3), ((8, 8), 2), ((8, 8), 7), ((2, 2), 1), ((4, 4), 3)]:
        smallest.offer(size, value)
    assert smallest.winners == {(8, 8): 2, (4, 4): 3, (2, 2): 1}
    assert list(smallest.winners) == [(8, 8), (4, 4), (2, 2)]  # the order sizes were first offered
    latest = ByResolution(lambda new, best: True)
    for size, value in [((8, 8), "a"), ((8, 8), "b"), ((4, 4), "c")]:
        latest.offer(size, value)
    assert latest.winners == {(8, 8): "b", (4, 4): "c"}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_call_order_is_the_order_of_first_calls():
    model = Reused()
    assert call_order(model, torch.rand(1, 3, 8, 8)) == ["", "relu", "body", "body.0", "body.1",
                                                         "pool", "head"]
    scripted = torch.jit.script(nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU()))  # takes no hooks
    assert call_order(scripted, torch.rand(1, 3, 4, 4)) == [n for n, _ in scripted.named_modules()]


def test_bytes_per_row_counts_the_input_and_every_leaf_output():
    """Known answer: input 3x8x8 + conv 4x8x8 + ReLU 4x8x8 + Flatten 256 + Linear 2, float32."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 2))
    assert bytes_per_row(model, torch.rand(1, 3, 8, 8)) == 4 * (192 + 256 + 256 + 256 + 2)
    assert bytes_per_row(model.double(), torch.rand(1, 3, 8, 8, dtype=torch.float64)) == 8 * 962
