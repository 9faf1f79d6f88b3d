"""Low-rank adapters (LoRA, Hu et al., 2021) on the attention projections, and merging them back.

``W x`` becomes ``W x + (alpha / r) * B A x`` with ``A`` [r, in] and ``B`` [out, r]; ``B`` starts at
zero so training starts from the pretrained function. After training the product is added into
``W`` (``merge_lora``), so the saved encoder is a plain BERT that serving and ONNX export handle.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from understudy.errors import ConfigurationError
from understudy.models.layers.attention import SelfAttention

# Projections adapted in each attention block: query, key and value, as in the LoRA paper's
# best-performing setting on GLUE.
LORA_TARGETS = ("query", "key", "value")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update of rank ``rank``."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float) -> None:
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        update = (self.dropout(x) @ self.lora_a.T) @ self.lora_b.T
        return self.base(x) + self.scale * update  # type: ignore[no-any-return]

    def merged(self) -> nn.Linear:
        """The base layer with the low-rank update added into its weight."""
        with torch.no_grad():
            self.base.weight += self.scale * (self.lora_b @ self.lora_a)
        self.base.requires_grad_(True)
        return self.base


def add_lora(
    blocks: Iterable[nn.Module], rank: int, alpha: float, dropout: float
) -> list[nn.Parameter]:
    """Wrap the attention projections of ``blocks`` with LoRA; returns the new parameters.

    Raises ConfigurationError when no block has a self-attention mixer to adapt.
    """
    parameters: list[nn.Parameter] = []
    for block in blocks:
        mixer = getattr(block, "mixer", None)
        if not isinstance(mixer, SelfAttention):
            continue
        for name in LORA_TARGETS:
            adapter = LoRALinear(getattr(mixer, name), rank, alpha, dropout)
            setattr(mixer, name, adapter)
            parameters += [adapter.lora_a, adapter.lora_b]
    if not parameters:
        raise ConfigurationError("lora_rank > 0 needs attention layers to adapt; none were found")
    return parameters


def merge_lora(module: nn.Module) -> None:
    """Replace every ``LoRALinear`` inside ``module`` by its merged ``nn.Linear``, in place."""
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
