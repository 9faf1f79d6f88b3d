"""FNet token mixing: the real part of a 2-D discrete Fourier transform, a drop-in for attention.

Reference: Lee-Thorp, Ainslie, Eckstein & Ontañón, "FNet: Mixing Tokens with Fourier Transforms"
(NAACL 2022, arXiv:2105.03824): ``y = Re(DFT_seq(DFT_hidden(x)))``, no parameters.

Padding. A plain FFT over a padded batch mixes padding into every token and transforms each
sequence at the batch's length rather than its own, so a sentence's output would depend on what it
was batched with. Here each sequence is transformed at its own length: padded positions neither
contribute nor receive (their output is 0), and a padded sequence gives exactly the output it
gives alone. Unpadded batches take ``torch.fft``; padded ones multiply by per-sequence DFT matrices
(FNet itself used DFT matmuls for short sequences on TPU), which costs O(T^2 H) like attention.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from understudy.models.config import EncoderConfig
from understudy.models.layers.registry import register_token_mixer


def fourier_mix(hidden: Tensor) -> Tensor:
    """``Re(FFT2(hidden))`` over (sequence, hidden) of ``[B, T, H]``: FNet's mixing, no padding."""
    mixed: Tensor = torch.fft.fft2(hidden, dim=(-2, -1)).real
    return mixed


def dft_matrices(lengths: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Cosine and sine parts of each sequence's own DFT matrix, zero-padded to ``[B, size, size]``.

    For a sequence of length ``n`` the DFT is ``F[j, k] = exp(-2 pi i j k / n) = C - i S`` for
    ``j, k < n``; rows and columns at or beyond ``n`` are 0.
    """
    positions = torch.arange(size, device=lengths.device, dtype=torch.float64)
    n = lengths.to(torch.float64).clamp(min=1).view(-1, 1, 1)
    # jk is reduced mod n before scaling so that the angle stays small and exact in float64.
    jk = torch.remainder(positions.view(1, -1, 1) * positions.view(1, 1, -1), n)
    angle = 2.0 * math.pi * jk / n
    valid = positions.view(1, -1) < lengths.view(-1, 1)  # [B, size]
    block = (valid.unsqueeze(2) & valid.unsqueeze(1)).to(torch.float64)
    return angle.cos() * block, angle.sin() * block


def masked_fourier_mix(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """FNet mixing of each sequence at its own length; ``attention_mask`` ``[B, T]`` of 1/0.

    Tokens must be left-aligned (padding at the end), as the tokenizers here produce.
    """
    lengths = attention_mask.sum(dim=1)
    spectrum = torch.fft.fft(hidden, dim=-1)  # along hidden: no padding there
    cos, sin = dft_matrices(lengths, hidden.shape[1])
    # Re((C - iS)(A + iB)) = C A + S B, with A + iB the hidden-dimension spectrum.
    mixed: Tensor = cos.to(hidden.dtype) @ spectrum.real + sin.to(hidden.dtype) @ spectrum.imag
    return mixed


@register_token_mixer("fourier")
class FourierMixing(nn.Module):
    """Parameter-free token mixer ``(hidden [B, T, H], attention_mask [B, T]) -> [B, T, H]``."""

    def __init__(self, config: EncoderConfig | None = None) -> None:
        # The transform has no parameters, so nothing in the config changes it.
        super().__init__()

    def forward(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        if bool(attention_mask.all()):
            return fourier_mix(hidden)
        return masked_fourier_mix(hidden, attention_mask)
