"""Dense -> FFF conversion of a pretrained encoder by layer-wise distillation.

Each block's dense feed-forward is replaced by a ``FastFeedForward`` trained to reproduce that
block's outputs on the activations real text produces there (the inputs the dense block sees in the
original model). Attention, embeddings and LayerNorms are kept as they are. The result is an
UltraFastBERT-style encoder without re-pretraining; fine-tune it on the task afterwards, since the
per-layer approximation errors compound through the stack.

Initialisation (``ConversionConfig.init``), before the distillation:

- ``coactivation`` (default): the dense neurons are split recursively into halves that fire
  together on real tokens, one split per tree node (the idea of MoEfication, Zhang et al. 2022,
  "MoEfication: Transformer Feed-forward Layers are Mixtures of Experts", arranged as FFF's binary
  tree). Each leaf starts as the dense neurons of its group (the ``leaf_width`` strongest when the
  group is wider), unscaled, so a token routed to the right leaf starts with the exact contribution
  of that group. Each internal node starts as a linear router fitted (ridge regression) to send a
  token towards the half that carries more of its activation, with a zero output weight.
  Measured on MiniLM (bench/README.md, rt-sentiment, depth 4, leaves of 32): held-out error
  after distillation 0.10-0.39 per layer where random neurons left one layer at 0.76, and 1.7
  accuracy points more after fine-tuning (0.645 vs 0.628, 3 seeds).
- ``random``: the tree's neurons start as copies of dense neurons chosen at random, unscaled: a
  token's path then starts near the dense block's output bias (relative error about 1). Scaling
  the output weights up to the dense block's scale was tried and made MiniLM's activations
  diverge (relative errors of 1 to 30 after distillation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from rich.progress import Progress
from tokenizers import Tokenizer
from torch import Tensor, nn

from understudy.errors import ConfigurationError
from understudy.models.encoder import BertEncoder
from understudy.models.layers.feedforward import DenseFeedForward
from understudy.models.layers.fff import (
    FastFeedForward,
    HardeningSchedule,
    default_depth,
    routing_entropy,
    set_routing_temperature,
)
from understudy.models.tokenizer import encode_batch

InitName = Literal["coactivation", "random"]
# A router that sends fewer tokens than this to a child leaves the child's own split to be fitted
# on all of its parent's tokens: too few samples for a split of hundreds of neurons.
MIN_TOKENS_PER_SPLIT = 64
# Ridge penalty of the routers' regression, relative to the mean input variance.
ROUTER_RIDGE = 1e-2


@dataclass(frozen=True)
class ConversionConfig:
    """How to distil each dense feed-forward into an FFF.

    ``depth`` None picks ``default_depth(intermediate_size)``. ``init`` is how the tree starts (see
    the module doc). ``steps`` Adam steps per layer on
    minibatches of ``batch_tokens`` token activations; at most ``max_tokens`` activations per layer
    are kept (collected from the texts with ``encode_batch_size`` texts per forward). Routing is
    soft for ``soft_fraction`` of the steps, then hard (see ``HardeningSchedule``).
    """

    depth: int | None = None
    leaf_width: int = 1
    init: InitName = "coactivation"
    steps: int = 400
    batch_tokens: int = 512
    learning_rate: float = 1e-3
    max_tokens: int = 20_000
    encode_batch_size: int = 32
    soft_fraction: float = 0.5
    max_entropy_weight: float = 0.01
    seed: int = 0


@dataclass(frozen=True)
class LayerReport:
    """Fit of one converted block on its held-back activations (10%, never trained on).

    ``relative_error``: ||fff(x) - dense(x)|| / ||dense(x)|| with hard routing (inference).
    """

    layer: int
    tokens: int
    relative_error: float


@dataclass(frozen=True)
class ConversionResult:
    """The converted encoder (eval mode) and the per-layer fit."""

    encoder: BertEncoder
    layers: list[LayerReport]


def feedforward_of(block: nn.Module) -> nn.Module:
    """The feed-forward module of an encoder block."""
    return block.get_submodule("feedforward")


def collect_feedforward_inputs(
    encoder: BertEncoder,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    max_tokens: int,
    batch_size: int,
) -> list[Tensor]:
    """Per block, the hidden states ``[tokens, H]`` entering its feed-forward (padding dropped)."""
    captured: list[list[Tensor]] = [[] for _ in encoder.blocks]
    current_mask: list[Tensor] = []

    def hook_for(index: int) -> Callable[[nn.Module, tuple[Tensor, ...]], None]:
        def hook(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
            keep = current_mask[0].reshape(-1).bool()
            captured[index].append(args[0].reshape(-1, args[0].shape[-1])[keep].detach())

        return hook

    handles = [
        feedforward_of(block).register_forward_pre_hook(hook_for(i))
        for i, block in enumerate(encoder.blocks)
    ]
    try:
        encoder.eval()
        seen = 0
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                input_ids, attention_mask = encode_batch(
                    tokenizer, texts[start : start + batch_size]
                )
                current_mask[:] = [attention_mask]
                encoder(input_ids, attention_mask)
                seen += int(attention_mask.sum())
                if seen >= max_tokens:
                    break
    finally:
        for handle in handles:
            handle.remove()
    return [torch.cat(chunks)[:max_tokens] for chunks in captured]


def held_out_start(tokens: int) -> int:
    """Index of the first of the last 10% of ``tokens`` activations, held back from fitting."""
    return max(int(tokens * 0.9), 1)


def init_from_dense(
    fff: FastFeedForward, dense: DenseFeedForward, generator: torch.Generator
) -> None:
    """Start ``fff``'s neurons as copies of random neurons of ``dense`` (see the module doc)."""
    width = dense.up.out_features
    replace = fff.n_neurons > width
    if replace:
        choice = torch.randint(width, (fff.n_neurons,), generator=generator)
    else:
        choice = torch.randperm(width, generator=generator)[: fff.n_neurons]
    with torch.no_grad():
        fff.weight_in.copy_(dense.up.weight[choice])
        fff.weight_out.copy_(dense.down.weight[:, choice].T)
        if fff.bias_in is not None and fff.bias_out is not None:
            fff.bias_in.copy_(dense.up.bias[choice])
            fff.bias_out.copy_(dense.down.bias)


def neuron_energy(dense: DenseFeedForward, inputs: Tensor) -> Tensor:
    """How much each dense neuron adds to each token's output, ``[tokens, intermediate]``.

    The norm of neuron ``i``'s term in the output: ``|act(up(x))_i| * ||down[:, i]||``.
    """
    with torch.no_grad():
        hidden: Tensor = dense.act(dense.up(inputs))
        energy: Tensor = hidden.abs() * dense.down.weight.norm(dim=0)
    return energy


def bisect_neurons(energy: Tensor) -> tuple[Tensor, Tensor]:
    """Split the neuron columns of ``energy`` ``[tokens, neurons]`` into two halves that co-fire.

    Neurons are ordered along the first principal component of their standardised activation
    patterns (neurons that fire on the same tokens lie close) and cut at the median. Returns the
    column positions of the two halves; with fewer than 2 columns, all of them (0 or 1) twice.
    """
    if energy.shape[1] < 2:
        # Nothing to split (a tree deeper than the dense block is wide): both children get it.
        every = torch.arange(energy.shape[1])
        return every, every
    patterns = (energy - energy.mean(0)) / energy.std(0).clamp(min=1e-6)
    _, _, components = torch.svd_lowrank(patterns, q=2, niter=4)
    order = torch.argsort(components[:, 0])
    half = len(order) // 2
    return order[:half], order[half:]


def fit_router(inputs: Tensor, goes_right: Tensor) -> tuple[Tensor, Tensor]:
    """Weights ``[H]`` and bias of a linear neuron whose sign predicts ``goes_right``.

    Ridge regression of the targets +1 (right) / -1 (left) on ``inputs`` ``[tokens, H]``.
    """
    mean = inputs.mean(0)
    centred = inputs - mean
    targets = goes_right.to(inputs.dtype) * 2 - 1
    gram = centred.T @ centred / len(inputs)
    ridge = ROUTER_RIDGE * gram.diagonal().mean() * torch.eye(len(mean), dtype=inputs.dtype)
    weights = torch.linalg.solve(gram + ridge, centred.T @ (targets - targets.mean()) / len(inputs))
    return weights, targets.mean() - mean @ weights


def init_by_coactivation(fff: FastFeedForward, dense: DenseFeedForward, inputs: Tensor) -> None:
    """Start ``fff`` as ``dense``'s neurons grouped by co-activation on ``inputs`` (module doc)."""
    energy = neuron_energy(dense, inputs)
    with torch.no_grad():
        fff.weight_out.zero_()
        if fff.bias_out is not None:
            fff.bias_out.copy_(dense.down.bias)
        pending = [(0, torch.arange(energy.shape[1]), torch.arange(len(inputs)))]
        while pending:
            node, neurons, tokens = pending.pop()
            reaching = energy[tokens]
            if node >= fff.n_internal:
                _fill_leaf(fff, dense, node - fff.n_internal, neurons, reaching[:, neurons])
                continue
            left, right = (neurons[half] for half in bisect_neurons(reaching[:, neurons]))
            goes_right = reaching[:, right].sum(1) > reaching[:, left].sum(1)
            weights, bias = fit_router(inputs[tokens], goes_right)
            fff.weight_in[node] = weights
            if fff.bias_in is not None:
                fff.bias_in[node] = bias
            routed_right = inputs[tokens] @ weights + bias > 0
            for child, half, mask in ((1, left, ~routed_right), (2, right, routed_right)):
                enough = int(mask.sum()) >= MIN_TOKENS_PER_SPLIT
                pending.append((2 * node + child, half, tokens[mask] if enough else tokens))


def _fill_leaf(
    fff: FastFeedForward, dense: DenseFeedForward, leaf: int, neurons: Tensor, energy: Tensor
) -> None:
    """Copy ``neurons`` of ``dense`` into ``leaf``, keeping the strongest when it is narrower.

    Slots left over when the group is smaller than the leaf keep their random input weights and
    a zero output weight, so they start silent.
    """
    strongest = neurons[torch.argsort(energy.sum(0), descending=True)[: fff.leaf_width]]
    first = fff.n_internal + leaf * fff.leaf_width
    slots = torch.arange(first, first + len(strongest))
    fff.weight_in[slots] = dense.up.weight[strongest]
    fff.weight_out[slots] = dense.down.weight[:, strongest].T
    if fff.bias_in is not None:
        fff.bias_in[slots] = dense.up.bias[strongest]


def distill_feedforward(
    dense: DenseFeedForward,
    inputs: Tensor,
    fff: FastFeedForward,
    config: ConversionConfig,
    *,
    on_step: Callable[[], None] | None = None,
) -> float:
    """Train ``fff`` to match ``dense`` on ``inputs`` ``[tokens, H]``; returns held-out rel. error.

    The last 10% of the tokens are held back and only used for the returned error.
    """
    generator = torch.Generator().manual_seed(config.seed)
    with torch.no_grad():
        dense.eval()
        targets = dense(inputs)
    split = held_out_start(len(inputs))
    train_x, train_y = inputs[:split], targets[:split]
    test_x, test_y = inputs[split:], targets[split:]
    schedule = HardeningSchedule(
        total_steps=config.steps,
        soft_fraction=config.soft_fraction,
        max_entropy_weight=config.max_entropy_weight,
    )
    optimizer = torch.optim.Adam(fff.parameters(), lr=config.learning_rate)
    lr_schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=config.steps, pct_start=0.1
    )
    fff.train()
    for step in range(config.steps):
        state = schedule.at(step)
        set_routing_temperature(fff, state.temperature)
        batch = torch.randint(len(train_x), (config.batch_tokens,), generator=generator)
        loss = nn.functional.mse_loss(fff(train_x[batch]), train_y[batch])
        loss = loss + state.entropy_weight * routing_entropy(fff)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        lr_schedule.step()
        if on_step is not None:
            on_step()
    fff.eval()
    with torch.no_grad():
        error = (fff(test_x) - test_y).norm() / test_y.norm().clamp(min=1e-12)
    return float(error)


def convert_to_fff(
    encoder: BertEncoder,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    config: ConversionConfig | None = None,
    *,
    show_progress: bool = True,
) -> ConversionResult:
    """A copy of ``encoder`` with every dense feed-forward replaced by a distilled FFF.

    ``texts`` supply the activations (the task's own inputs are best). The copy's config says
    ``feedforward="fff"`` with the depth and leaf width in ``layer_options``, so
    ``save_pretrained`` / ``BertEncoder.from_pretrained`` round-trip it.
    """
    config = config or ConversionConfig()
    source = encoder.config
    if source.feedforward != "dense":
        raise ConfigurationError(
            f"can only convert dense feed-forwards, not {source.feedforward!r}"
        )
    if not texts:
        raise ConfigurationError("dense -> FFF conversion needs texts to collect activations from")
    depth = default_depth(source.intermediate_size) if config.depth is None else config.depth
    options = {**source.layer_options, "fff_depth": depth, "fff_leaf_width": config.leaf_width}
    target = dataclasses.replace(source, feedforward="fff", layer_options=options)
    torch.manual_seed(config.seed)
    converted = BertEncoder(target)
    kept = {k: v for k, v in encoder.state_dict().items() if ".feedforward." not in k}
    converted.load_state_dict(kept, strict=False)

    inputs = collect_feedforward_inputs(
        encoder,
        tokenizer,
        texts,
        max_tokens=config.max_tokens,
        batch_size=config.encode_batch_size,
    )
    generator = torch.Generator().manual_seed(config.seed)
    reports = []
    with Progress(disable=not show_progress) as progress:
        bar = progress.add_task("distilling FFF layers", total=config.steps * len(inputs))
        for index, (block, new_block) in enumerate(
            zip(encoder.blocks, converted.blocks, strict=True)
        ):
            dense, fff = feedforward_of(block), feedforward_of(new_block)
            if not isinstance(dense, DenseFeedForward) or not isinstance(fff, FastFeedForward):
                raise ConfigurationError(f"block {index} is not a dense -> FFF pair")
            if config.init == "coactivation":
                fitting = inputs[index][: held_out_start(len(inputs[index]))]
                init_by_coactivation(fff, dense, fitting)
            else:
                init_from_dense(fff, dense, generator)
            error = distill_feedforward(
                dense,
                inputs[index],
                fff,
                config,
                on_step=lambda: progress.advance(bar),
            )
            reports.append(LayerReport(index, len(inputs[index]), error))
    return ConversionResult(encoder=converted.eval(), layers=reports)
