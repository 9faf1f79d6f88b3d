"""Activation functions by their Hugging Face ``hidden_act`` name."""

from __future__ import annotations

from torch import nn

from understudy.errors import ConfigurationError


def activation(name: str) -> nn.Module:
    """The activation module for a ``hidden_act`` value (``gelu`` is the exact erf form)."""
    if name == "gelu":
        return nn.GELU()
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return nn.GELU(approximate="tanh")
    if name == "relu":
        return nn.ReLU()
    if name in ("silu", "swish"):
        return nn.SiLU()
    raise ConfigurationError(f"unsupported hidden_act {name!r} (gelu, gelu_new, relu, silu)")
