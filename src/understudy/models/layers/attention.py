"""Multi-head self-attention, as in BERT, including its output projection."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from understudy.models.config import EncoderConfig
from understudy.models.layers.registry import register_token_mixer


@register_token_mixer("attention")
class SelfAttention(nn.Module):
    """Bidirectional multi-head attention over the unmasked tokens.

    ``forward(hidden [B, T, H], attention_mask [B, T] of 1 = token, 0 = padding) -> [B, T, H]``.
    Written out with matmul + softmax (not ``scaled_dot_product_attention``) so that the ONNX export
    yields the plain pattern ONNX Runtime's attention fusion recognises.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self.output = nn.Linear(config.hidden_size, config.hidden_size)

    def _split_heads(self, x: Tensor) -> Tensor:
        """[B, T, H] -> [B, heads, T, head_size]."""
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_size).transpose(1, 2)

    def forward(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        q = self._split_heads(self.query(hidden))
        k = self._split_heads(self.key(hidden))
        v = self._split_heads(self.value(hidden))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_size)  # [B, heads, T, T]
        # Padding keys get the most negative float rather than -inf, as transformers does, so that
        # a row with no real token still softmaxes to finite numbers.
        blocked = (1.0 - attention_mask[:, None, None, :].to(scores.dtype)) * torch.finfo(
            scores.dtype
        ).min
        weights = self.dropout(torch.softmax(scores + blocked, dim=-1))
        context = (weights @ v).transpose(1, 2).flatten(2)  # [B, T, H]
        return self.output(context)  # type: ignore[no-any-return]
