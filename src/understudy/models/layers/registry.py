"""Registries of the two swappable parts of an encoder block: feed-forward and token mixer.

A *feed-forward* maps hidden states [B, T, H] -> [B, T, H] (e.g. dense up-projection, activation,
down-projection). A *token mixer* maps ``(hidden [B, T, H], attention_mask [B, T] of 1/0)`` ->
[B, T, H] (e.g. self-attention with its output projection). Neither includes the residual
connection or LayerNorm: those stay in the block so every variant shares them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from torch import nn

if TYPE_CHECKING:
    from understudy.models.config import EncoderConfig

LayerFactory = Callable[["EncoderConfig"], nn.Module]
_F = TypeVar("_F", bound=LayerFactory)

FEEDFORWARDS: dict[str, LayerFactory] = {}
TOKEN_MIXERS: dict[str, LayerFactory] = {}


def register_feedforward(name: str) -> Callable[[_F], _F]:
    """Decorator: register a factory (usually an ``nn.Module`` class) as feed-forward ``name``."""

    def decorate(factory: _F) -> _F:
        FEEDFORWARDS[name] = factory
        return factory

    return decorate


def register_token_mixer(name: str) -> Callable[[_F], _F]:
    """Decorator: register a factory (usually an ``nn.Module`` class) as token mixer ``name``."""

    def decorate(factory: _F) -> _F:
        TOKEN_MIXERS[name] = factory
        return factory

    return decorate
