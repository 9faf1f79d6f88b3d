"""Fast feedforward layer: routing math, hardening, conditional execution and trainability."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from understudy.errors import ConfigurationError
from understudy.models.config import EncoderConfig
from understudy.models.layers import FEEDFORWARDS
from understudy.models.layers.fff import (
    FastFeedForward,
    HardeningSchedule,
    binary_entropy,
    default_depth,
    reach_probabilities,
    right_probabilities,
    routing_entropy,
    set_routing_temperature,
)


def _walk_reference(layer: FastFeedForward, x: torch.Tensor) -> torch.Tensor:
    """One token at a time, in plain Python: the tree walk as the paper describes it."""
    assert layer.bias_in is not None and layer.bias_out is not None
    outputs = []
    for token in x:
        out = layer.bias_out.clone()
        node = 0
        for _ in range(layer.depth):
            z = layer.weight_in[node] @ token + layer.bias_in[node]
            out += torch.nn.functional.gelu(z) * layer.weight_out[node]
            node = 2 * node + (2 if z > 0 else 1)
        first = layer.n_internal + (node - layer.n_internal) * layer.leaf_width
        for neuron in range(first, first + layer.leaf_width):
            z = layer.weight_in[neuron] @ token + layer.bias_in[neuron]
            out += torch.nn.functional.gelu(z) * layer.weight_out[neuron]
        outputs.append(out)
    return torch.stack(outputs)


@pytest.mark.parametrize(
    ("depth", "leaf_width", "bias"), [(0, 5, True), (3, 1, True), (4, 3, False)]
)
def test_conditional_inference_equals_dense_evaluation_of_the_path(
    depth: int, leaf_width: int, bias: bool
) -> None:
    torch.manual_seed(0)
    layer = FastFeedForward(12, 7, depth, leaf_width, bias=bias).eval()
    x = torch.randn(3, 9, 12)
    with torch.no_grad():
        hard = layer(x)
        dense = layer.forward_masked(x.reshape(-1, 12), temperature=0.0).reshape(3, 9, 7)
    assert hard.shape == (3, 9, 7)
    torch.testing.assert_close(hard, dense, atol=1e-5, rtol=1e-5)


def test_conditional_inference_equals_a_per_token_tree_walk() -> None:
    torch.manual_seed(1)
    layer = FastFeedForward(10, 6, depth=5, leaf_width=2).eval()
    x = torch.randn(40, 10)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), _walk_reference(layer, x), atol=1e-5, rtol=1e-5)


def test_a_token_touches_only_the_neurons_of_its_path() -> None:
    torch.manual_seed(2)
    layer = FastFeedForward(8, 8, depth=6, leaf_width=1).eval()
    x = torch.randn(1, 8)
    with torch.no_grad():
        path, _ = layer.hard_path(x)
        before = layer(x)
        off_path = torch.ones(layer.n_neurons, dtype=torch.bool)
        off_path[path[0]] = False
        layer.weight_in[off_path] = 1e3
        layer.weight_out[off_path] = 1e3
        after = layer(x)
    assert path.shape == (1, layer.neurons_per_token) == (1, 7)
    torch.testing.assert_close(before, after)


def test_path_follows_the_sign_of_each_nodes_pre_activation() -> None:
    layer = FastFeedForward(2, 1, depth=2, leaf_width=1).eval()
    with torch.no_grad():
        layer.weight_in.zero_()
        assert layer.bias_in is not None
        layer.bias_in.copy_(torch.tensor([1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0]))
        path, pre = layer.hard_path(torch.zeros(1, 2))
    # Root (z = 1 > 0) goes right to node 2; node 2 (z = -1) goes left to heap node 5 = leaf 2.
    assert path.tolist() == [[0, 2, 5]]
    assert pre[0, :2].tolist() == [1.0, -1.0]


def test_reach_probabilities_multiply_decisions_along_the_path() -> None:
    p_right = torch.tensor([[0.25, 0.5, 0.9]])
    internal, leaves = reach_probabilities(p_right, depth=2)
    torch.testing.assert_close(internal, torch.tensor([[1.0, 0.75, 0.25]]))
    torch.testing.assert_close(
        leaves, torch.tensor([[0.75 * 0.5, 0.75 * 0.5, 0.25 * 0.1, 0.25 * 0.9]])
    )


def test_reach_of_each_level_sums_to_one() -> None:
    torch.manual_seed(3)
    p_right = torch.rand(5, 2**4 - 1)
    internal, leaves = reach_probabilities(p_right, depth=4)
    for level in range(4):
        sums = internal[:, 2**level - 1 : 2 ** (level + 1) - 1].sum(1)
        torch.testing.assert_close(sums, torch.ones(5))
    torch.testing.assert_close(leaves.sum(1), torch.ones(5))


def test_soft_routing_tends_to_hard_routing_as_temperature_falls() -> None:
    z = torch.tensor([-2.0, -0.1, 0.1, 3.0])
    assert right_probabilities(z, 0.0).tolist() == [0.0, 0.0, 1.0, 1.0]
    assert right_probabilities(z, 1.0)[2].item() == pytest.approx(1 / (1 + math.exp(-0.1)))
    assert torch.allclose(right_probabilities(z, 1e-3), right_probabilities(z, 0.0), atol=1e-6)
    with pytest.raises(ConfigurationError):
        right_probabilities(z, -1.0)


def test_binary_entropy_in_nats() -> None:
    values = binary_entropy(torch.tensor([0.0, 0.5, 1.0]))
    assert values[1].item() == pytest.approx(math.log(2))
    assert values[0].item() == pytest.approx(0.0, abs=1e-4)
    assert values[2].item() == pytest.approx(0.0, abs=1e-4)


def test_hardening_schedule_goes_from_soft_to_hard() -> None:
    schedule = HardeningSchedule(
        total_steps=100,
        soft_fraction=0.5,
        start_temperature=1.0,
        end_temperature=0.01,
        max_entropy_weight=0.2,
    )
    first, middle, last_soft, hard = (schedule.at(s) for s in (0, 49 // 2, 49, 50))
    assert (first.temperature, first.entropy_weight) == (1.0, 0.0)
    assert last_soft.temperature == pytest.approx(0.01)
    assert last_soft.entropy_weight == pytest.approx(0.2)
    assert 0.01 < middle.temperature < 1.0
    assert (hard.temperature, hard.entropy_weight) == (0.0, 0.0)


def test_soft_training_records_entropy_and_trains_the_routing() -> None:
    torch.manual_seed(4)
    layer = FastFeedForward(6, 3, depth=3).train()
    set_routing_temperature(layer, 1.0)
    out = layer(torch.randn(16, 6))
    entropy = routing_entropy(layer)
    assert 0.0 < entropy.item() <= math.log(2)
    (out.sum() + entropy).backward()
    # A leaf's input weights get gradient only through its activation; an internal node's input
    # weights also through the routing probabilities: both must be non-zero under soft routing.
    assert layer.weight_in.grad is not None
    assert layer.weight_in.grad[0].abs().sum().item() > 0
    set_routing_temperature(layer, 0.0)
    layer(torch.randn(4, 6))
    assert routing_entropy(layer).item() == 0.0


def test_depth_zero_is_a_dense_feed_forward() -> None:
    torch.manual_seed(5)
    layer = FastFeedForward(4, 3, depth=0, leaf_width=6).eval()
    x = torch.randn(10, 4)
    assert layer.bias_in is not None and layer.bias_out is not None
    expected = (
        torch.nn.functional.gelu(x @ layer.weight_in.T + layer.bias_in) @ layer.weight_out
        + layer.bias_out
    )
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected)


def test_invalid_shapes_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        FastFeedForward(4, 4, depth=-1)
    with pytest.raises(ConfigurationError):
        FastFeedForward(4, 4, depth=2, leaf_width=0)


def test_registered_as_fff_with_depth_from_layer_options() -> None:
    config = EncoderConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=3072,
        feedforward="fff",
        layer_options={"fff_depth": 4, "fff_leaf_width": 2},
    )
    layer = FEEDFORWARDS["fff"](config)
    assert isinstance(layer, FastFeedForward)
    assert (layer.depth, layer.leaf_width, layer.n_neurons) == (4, 2, 15 + 32)
    assert default_depth(3072) == 11 and default_depth(1536) == 10 and default_depth(1) == 0


def _spiral(n_per_class: int, classes: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Interleaved 2-D spirals: not linearly separable, so the tree must learn real regions."""
    radius = torch.linspace(0.1, 1.0, n_per_class).repeat(classes)
    label = torch.arange(classes).repeat_interleave(n_per_class)
    angle = radius * 4.0 + label * (2 * math.pi / classes)
    angle = angle + 0.1 * torch.randn(angle.shape, generator=generator)
    x = torch.stack((radius * angle.cos(), radius * angle.sin()), dim=1)
    return x, label


def test_an_fff_model_learns_a_nonlinear_task_and_keeps_it_under_hard_inference() -> None:
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    x, y = _spiral(100, 3, generator)
    model = nn.Sequential(nn.Linear(2, 32), FastFeedForward(32, 3, depth=3, leaf_width=8))
    steps = 300
    schedule = HardeningSchedule(total_steps=steps, soft_fraction=0.6)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    model.train()
    for step in range(steps):
        state = schedule.at(step)
        set_routing_temperature(model, state.temperature)
        loss = nn.functional.cross_entropy(model(x), y)
        loss = loss + state.entropy_weight * routing_entropy(model)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy >= 0.95
