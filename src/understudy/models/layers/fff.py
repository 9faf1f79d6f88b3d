"""Fast feedforward (FFF) layer: a binary tree of neurons of which each token evaluates one path.

References (read, not copied):
- Belcak & Wattenhofer, "Fast Feedforward Networks" (arXiv:2308.14711, code:
  pbelcak/fastfeedforward): soft, differentiable routing (each node's sigmoid mixes its two
  subtrees) and *hardening*, a penalty on the entropy of the routing decisions that drives them
  to 0/1 so that hard inference matches training.
- Belcak & Wattenhofer, "Exponentially Faster Language Modelling" (arXiv:2311.10770, code:
  pbelcak/UltraFastBERT): every node is itself a neuron whose activation contributes to the output
  and whose pre-activation sign picks the child, so depth ``d`` costs ``d + 1`` neurons per token
  (12 of 4095 at depth 11).

Layout (heap order): internal nodes ``0 .. 2**d - 2``; node ``i`` has children ``2i + 1`` (taken
when its pre-activation is <= 0) and ``2i + 2`` (taken when > 0). Below the ``2**d`` leaf positions
sit leaves of ``leaf_width`` neurons each, stored after the internal nodes: leaf ``j`` owns neurons
``2**d - 1 + j * leaf_width ..``. With ``leaf_width == 1`` this is exactly UltraFastBERT's tree;
with ``depth == 0`` it is an ordinary dense feed-forward block of width ``leaf_width``.

A token touches ``depth + leaf_width`` neurons. All neurons share one input matrix ``weight_in``
``[n_neurons, in]`` and one output matrix ``weight_out`` ``[n_neurons, out]``, so the dense
(masked) evaluation is two matmuls and the conditional one gathers rows of the same tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from understudy.errors import ConfigurationError
from understudy.models.config import EncoderConfig
from understudy.models.layers.activations import activation
from understudy.models.layers.registry import register_feedforward

# Clamp for probabilities inside the entropy so that log(0) never appears (as in fastfeedforward).
_ENTROPY_EPS = 1e-6


def binary_entropy(p: Tensor) -> Tensor:
    """Entropy in nats of Bernoulli(p), elementwise; 0 at p in {0, 1}, ln 2 at p = 0.5."""
    p = p.clamp(_ENTROPY_EPS, 1.0 - _ENTROPY_EPS)
    return -(p * p.log() + (1.0 - p) * (1.0 - p).log())


def right_probabilities(pre_activations: Tensor, temperature: float) -> Tensor:
    """Probability of taking the right child (pre-activation > 0) at each internal node.

    ``temperature > 0`` gives the soft decision ``sigmoid(z / temperature)``; ``temperature == 0``
    gives the hard decision ``1[z > 0]``, the limit of the soft one as the temperature goes to 0.
    """
    if temperature < 0:
        raise ConfigurationError(f"routing temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return (pre_activations > 0).to(pre_activations.dtype)
    return torch.sigmoid(pre_activations / temperature)


def reach_probabilities(p_right: Tensor, depth: int) -> tuple[Tensor, Tensor]:
    """Probability that a token reaches each internal node and each leaf position.

    ``p_right``: ``[tokens, 2**depth - 1]`` in heap order. Returns ``(internal [tokens,
    2**depth - 1], leaves [tokens, 2**depth])``; the root is reached with probability 1 and each
    level's reach sums to 1. With hard decisions, exactly one node per level has reach 1.
    """
    tokens = p_right.shape[0]
    level = p_right.new_ones(tokens, 1)
    internal = []
    for d in range(depth):
        internal.append(level)
        p = p_right[:, 2**d - 1 : 2 ** (d + 1) - 1]
        # Children of node k of this level are 2k (left) and 2k + 1 (right) of the next level.
        level = torch.stack((level * (1.0 - p), level * p), dim=-1).flatten(1)
    inner = torch.cat(internal, dim=1) if internal else p_right.new_zeros(tokens, 0)
    return inner, level


@dataclass(frozen=True)
class HardeningState:
    """Routing settings for one training step: sigmoid temperature and entropy-penalty weight."""

    temperature: float
    entropy_weight: float


@dataclass(frozen=True)
class HardeningSchedule:
    """When and how fast FFF routing goes from soft to hard during training.

    For the first ``soft_fraction`` of steps routing is soft: the temperature decays geometrically
    from ``start_temperature`` to ``end_temperature`` while the entropy penalty's weight ramps
    linearly from 0 to ``max_entropy_weight`` (the FFF paper's hardening). The remaining steps
    train with hard routing (temperature 0, as UltraFastBERT trains throughout), so the last
    updates see exactly the function that inference computes.
    """

    total_steps: int
    soft_fraction: float = 0.5
    start_temperature: float = 1.0
    end_temperature: float = 0.05
    max_entropy_weight: float = 0.1

    def at(self, step: int) -> HardeningState:
        """Settings for 0-based ``step``."""
        soft_steps = int(self.total_steps * self.soft_fraction)
        if step >= soft_steps:
            return HardeningState(temperature=0.0, entropy_weight=0.0)
        progress = step / max(soft_steps - 1, 1)
        ratio = self.end_temperature / self.start_temperature
        return HardeningState(
            temperature=self.start_temperature * ratio**progress,
            entropy_weight=self.max_entropy_weight * progress,
        )


class FastFeedForward(nn.Module):
    """Fast feedforward block mapping ``[..., in_features]`` to ``[..., out_features]``.

    Training mode evaluates every neuron and weights each by the probability that the token
    reaches it (soft routing at ``routing_temperature > 0``; masked hard routing at 0, the
    default, as UltraFastBERT trains). Eval mode is conditional execution: per token it walks its
    path, gathering only the ``depth + leaf_width`` rows of the weights it needs, with no matmul
    over all neurons. Eval mode equals training mode at temperature 0 (up to float rounding).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        depth: int,
        leaf_width: int = 1,
        *,
        bias: bool = True,
        hidden_act: str = "gelu",
    ) -> None:
        super().__init__()
        if depth < 0 or leaf_width < 1 or in_features < 1 or out_features < 1:
            raise ConfigurationError(
                "FFF needs depth >= 0 and positive widths, got "
                f"depth={depth}, leaf_width={leaf_width}, in={in_features}, out={out_features}"
            )
        self.in_features = in_features
        self.out_features = out_features
        self.depth = depth
        self.leaf_width = leaf_width
        self.n_internal = 2**depth - 1
        self.n_leaves = 2**depth
        self.n_neurons = self.n_internal + self.n_leaves * leaf_width
        self.weight_in = nn.Parameter(torch.empty(self.n_neurons, in_features))
        self.bias_in = nn.Parameter(torch.empty(self.n_neurons)) if bias else None
        self.weight_out = nn.Parameter(torch.empty(self.n_neurons, out_features))
        self.bias_out = nn.Parameter(torch.empty(out_features)) if bias else None
        self.act = activation(hidden_act)
        self.routing_temperature = 0.0
        # Expected routing entropy of the last training forward (nats per decision); read by
        # ``routing_entropy`` for the hardening penalty. None outside soft training.
        self.last_entropy: Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform init as in the FFF reference code: fan-in of the input, path length out."""
        bound_in = 1.0 / math.sqrt(self.in_features)
        bound_out = 1.0 / math.sqrt(self.neurons_per_token)
        nn.init.uniform_(self.weight_in, -bound_in, bound_in)
        nn.init.uniform_(self.weight_out, -bound_out, bound_out)
        if self.bias_in is not None and self.bias_out is not None:
            nn.init.uniform_(self.bias_in, -bound_in, bound_in)
            nn.init.zeros_(self.bias_out)

    @property
    def neurons_per_token(self) -> int:
        """Neurons one token evaluates at inference: ``depth + leaf_width``."""
        return self.depth + self.leaf_width

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, depth={self.depth}, "
            f"leaf_width={self.leaf_width}, neurons={self.n_neurons}, "
            f"per_token={self.neurons_per_token}"
        )

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.in_features)
        out = self.forward_masked(flat) if self.training else self.forward_conditional(flat)
        return out.reshape(*x.shape[:-1], self.out_features)

    def neuron_weights(self, pre_activations: Tensor, temperature: float) -> Tensor:
        """Reach probability of every neuron, ``[tokens, n_neurons]``, for all pre-activations."""
        p_right = right_probabilities(pre_activations[:, : self.n_internal], temperature)
        internal, leaves = reach_probabilities(p_right, self.depth)
        if self.training and temperature > 0 and self.depth > 0:
            # Entropy of each decision weighted by the chance the token makes it, averaged over
            # levels: unreached nodes are not pushed to be decisive about tokens they never see.
            self.last_entropy = (internal * binary_entropy(p_right)).sum(1).mean() / self.depth
        else:
            self.last_entropy = None
        return torch.cat((internal, leaves.repeat_interleave(self.leaf_width, dim=1)), dim=1)

    def forward_masked(self, x: Tensor, temperature: float | None = None) -> Tensor:
        """Dense evaluation of all neurons, each weighted by its reach probability.

        ``x``: ``[tokens, in_features]``. ``temperature`` defaults to ``routing_temperature``;
        at 0 this is the dense evaluation of each token's hard path (the reference that
        ``forward_conditional`` must match).
        """
        temp = self.routing_temperature if temperature is None else temperature
        pre = F.linear(x, self.weight_in, self.bias_in)
        hidden: Tensor = self.act(pre) * self.neuron_weights(pre, temp)
        out = hidden @ self.weight_out
        return out if self.bias_out is None else out + self.bias_out

    def route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Hard routing of ``x`` ``[tokens, in]``: internal nodes on each token's path ``[tokens,
        depth]`` (long), their pre-activations (float), and each token's leaf ``[tokens]``.

        Walks the tree level by level with one gathered row and one dot product per token per
        level. ``index_select`` rather than ``tensor[index]``: on CPU it has a fraction of the
        per-call overhead, which dominates at small batches.
        """
        tokens = x.shape[0]
        node = torch.zeros(tokens, dtype=torch.long, device=x.device)
        nodes = [node.new_empty(tokens, 0)]
        pres = [x.new_empty(tokens, 0)]
        for _ in range(self.depth):
            z = torch.linalg.vecdot(self.weight_in.index_select(0, node), x)
            if self.bias_in is not None:
                z = z + self.bias_in.index_select(0, node)
            nodes.append(node.unsqueeze(1))
            pres.append(z.unsqueeze(1))
            node = node * 2 + 1 + (z > 0)
        # ``node`` is now the heap index of the leaf position.
        return torch.cat(nodes, dim=1), torch.cat(pres, dim=1), node - self.n_internal

    def hard_path(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Each token's neurons and their pre-activations: ``([tokens, per_token] long, float)``."""
        internal, pre, leaf = self.route(x)
        first = self.n_internal + leaf * self.leaf_width
        neurons = first.unsqueeze(1) + torch.arange(self.leaf_width, device=x.device)
        rows = self.weight_in.index_select(0, neurons.flatten())
        rows = rows.view(*neurons.shape, self.in_features)
        z_leaf = torch.bmm(rows, x.unsqueeze(2)).squeeze(2)
        if self.bias_in is not None:
            z_leaf = z_leaf + self.bias_in.index_select(0, neurons.flatten()).view_as(z_leaf)
        return torch.cat((internal, neurons), dim=1), torch.cat((pre, z_leaf), dim=1)

    def forward_conditional(self, x: Tensor) -> Tensor:
        """Hard conditional execution, ``[tokens, in]`` -> ``[tokens, out]``, path rows only.

        Per-token gathers copy ``depth + leaf_width`` weight rows for every token. With wide
        leaves and more tokens than leaves, the leaves instead run as one matmul per leaf over the
        tokens routed to it, so each leaf's weights are read once per call, not once per token.
        """
        if self.leaf_width > 1 and x.shape[0] >= self.n_leaves:
            internal, pre, leaf = self.route(x)
            out = self._path_output(internal, pre) + self._leaf_output_grouped(x, leaf)
        else:
            out = self._path_output(*self.hard_path(x))
        return out if self.bias_out is None else out + self.bias_out

    def _path_output(self, neurons: Tensor, pre: Tensor) -> Tensor:
        """``[tokens, out]``: sum of ``act(pre) * weight_out[neuron]`` over each token's neurons."""
        rows = self.weight_out.index_select(0, neurons.flatten())
        rows = rows.view(*neurons.shape, self.out_features)
        hidden: Tensor = self.act(pre)
        return torch.bmm(hidden.unsqueeze(1), rows).squeeze(1)

    def _leaf_output_grouped(self, x: Tensor, leaf: Tensor) -> Tensor:
        """Leaf neurons' contribution ``[tokens, out]``, one matmul per occupied leaf."""
        order = torch.argsort(leaf)
        counts = torch.bincount(leaf, minlength=self.n_leaves).tolist()
        out = x.new_empty(x.shape[0], self.out_features)
        start = 0
        for index, count in enumerate(counts):
            if count == 0:
                continue
            tokens = order[start : start + count]
            start += count
            lo = self.n_internal + index * self.leaf_width
            hi = lo + self.leaf_width
            bias = None if self.bias_in is None else self.bias_in[lo:hi]
            hidden: Tensor = self.act(
                F.linear(x.index_select(0, tokens), self.weight_in[lo:hi], bias)
            )
            out.index_copy_(0, tokens, hidden @ self.weight_out[lo:hi])
        return out


def fff_modules(model: nn.Module) -> list[FastFeedForward]:
    """Every FFF layer inside ``model``."""
    return [m for m in model.modules() if isinstance(m, FastFeedForward)]


def set_routing_temperature(model: nn.Module, temperature: float) -> None:
    """Set the training-mode routing temperature of every FFF layer in ``model`` (0 = hard)."""
    if temperature < 0:
        raise ConfigurationError(f"routing temperature must be >= 0, got {temperature}")
    for layer in fff_modules(model):
        layer.routing_temperature = temperature


def routing_entropy(model: nn.Module) -> Tensor:
    """Mean routing entropy (nats per decision) of the FFF layers' last soft training forward.

    Add ``state.entropy_weight * routing_entropy(model)`` to the loss to harden routing. Zero
    (without a graph) when no layer routed softly in its last forward.
    """
    values = [m.last_entropy for m in fff_modules(model) if m.last_entropy is not None]
    if not values:
        return torch.zeros(())
    return torch.stack(values).mean()


def default_depth(intermediate_size: int) -> int:
    """Tree depth whose neuron count ``2**(d + 1) - 1`` is nearest to ``intermediate_size``.

    BERT-base's 3072 gives depth 11 (4095 neurons, UltraFastBERT-1x11); MiniLM's 1536 gives 10.
    """
    return max(round(math.log2(intermediate_size + 1)) - 1, 0)


@register_feedforward("fff")
def fff_feedforward(config: EncoderConfig) -> FastFeedForward:
    """The FFF block of an encoder layer, hidden -> hidden.

    Reads ``config.layer_options``: ``fff_depth`` (default ``default_depth(intermediate_size)``),
    ``fff_leaf_width`` (default 1, UltraFastBERT) and ``fff_bias`` (default True).
    """
    options = config.layer_options
    return FastFeedForward(
        config.hidden_size,
        config.hidden_size,
        depth=int(options.get("fff_depth", default_depth(config.intermediate_size))),
        leaf_width=int(options.get("fff_leaf_width", 1)),
        bias=bool(options.get("fff_bias", True)),
        hidden_act=config.hidden_act,
    )
