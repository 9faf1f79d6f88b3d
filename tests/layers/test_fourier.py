"""FNet Fourier token mixing: the math, shapes, and padding independence."""

from __future__ import annotations

import math

import torch

from understudy.models.config import EncoderConfig
from understudy.models.layers import TOKEN_MIXERS
from understudy.models.layers.fourier import FourierMixing, dft_matrices, fourier_mix


def _naive_fnet(x: torch.Tensor) -> torch.Tensor:
    """Re(sum_{t,h} x[t,h] exp(-2 pi i (j t / T + k h / H))) for one [T, H] sequence."""
    length, width = x.shape
    out = torch.zeros(length, width, dtype=torch.float64)
    for j in range(length):
        for k in range(width):
            total = 0.0
            for t in range(length):
                for h in range(width):
                    total += x[t, h].item() * math.cos(
                        2 * math.pi * (j * t / length + k * h / width)
                    )
            out[j, k] = total
    return out


def test_mixing_is_the_real_part_of_the_2d_dft() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(fourier_mix(x)[0], _naive_fnet(x[0]))


def test_token_mixer_shape_and_registry() -> None:
    config = EncoderConfig(
        vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, token_mixer="fourier",
    )  # fmt: skip
    mixer = TOKEN_MIXERS["fourier"](config)
    assert isinstance(mixer, FourierMixing)
    assert list(mixer.parameters()) == []
    out = mixer(torch.randn(3, 7, 8), torch.ones(3, 7, dtype=torch.long))
    assert out.shape == (3, 7, 8) and out.dtype == torch.float32


def test_padded_sequences_get_the_output_they_get_alone() -> None:
    torch.manual_seed(1)
    mixer = FourierMixing()
    lengths = [6, 3, 1]
    batch = torch.randn(3, 6, 8)
    mask = torch.zeros(3, 6, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
        batch[row, n:] = 1e3  # garbage under the padding must not leak into real tokens
    out = mixer(batch, mask)
    for row, n in enumerate(lengths):
        alone = mixer(batch[row : row + 1, :n], torch.ones(1, n, dtype=torch.long))
        torch.testing.assert_close(out[row : row + 1, :n], alone, atol=1e-3, rtol=1e-5)
        assert out[row, n:].abs().sum().item() == 0.0


def test_dft_matrices_are_the_dft_of_each_length_and_zero_beyond() -> None:
    cos, sin = dft_matrices(torch.tensor([4, 2]), size=4)
    expected = torch.fft.fft(torch.eye(4, dtype=torch.float64), dim=0)  # F[j, k]
    torch.testing.assert_close(cos[0], expected.real)
    torch.testing.assert_close(sin[0], -expected.imag)
    torch.testing.assert_close(cos[1, :2, :2], torch.tensor([[1.0, 1.0], [1.0, -1.0]]).double())
    assert cos[1, 2:].abs().sum().item() == 0.0 and cos[1, :, 2:].abs().sum().item() == 0.0
