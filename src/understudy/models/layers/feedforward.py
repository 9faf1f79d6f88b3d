"""The standard BERT feed-forward: dense up-projection, activation, dense down-projection."""

from __future__ import annotations

from torch import Tensor, nn

from understudy.models.config import EncoderConfig
from understudy.models.layers.activations import activation
from understudy.models.layers.registry import register_feedforward


@register_feedforward("dense")
class DenseFeedForward(nn.Module):
    """hidden [B, T, H] -> down(act(up(hidden))) [B, T, H], with up: H -> intermediate_size."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = activation(config.hidden_act)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.down(self.act(self.up(hidden)))  # type: ignore[no-any-return]
