"""Masked-language-model pieces: sequence packing, BERT masking, and the prediction head.

Following cramming (Geiping & Goldstein, "Cramming: Training a Language Model on a Single GPU in
One Day", arXiv:2212.14034): texts are packed into full-length sequences (no padding), the head
only scores the masked positions ("sparse prediction"), its decoder is tied to the word
embeddings, and its linear layers have no biases.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tokenizers import Tokenizer
from torch import Tensor, nn

from understudy.errors import ConfigurationError
from understudy.models.encoder import BertEncoder

IGNORE_INDEX = -100
"""Label of unmasked positions: ignored by ``cross_entropy``."""


def pack_sequences(
    tokenizer: Tokenizer, texts: Sequence[str], seq_len: int, *, cls_id: int, sep_id: int
) -> Tensor:
    """Token ids ``[n, seq_len]``: texts joined by ``[SEP]``, cut into ``[CLS] ... [SEP]`` rows.

    The last partial row is dropped, so every row is full and there is no padding.
    """
    if seq_len < 3:
        raise ConfigurationError(f"seq_len must be at least 3, got {seq_len}")
    stream: list[int] = []
    for encoding in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        stream.extend(encoding.ids)
        stream.append(sep_id)
    body = seq_len - 2
    rows = len(stream) // body
    if rows == 0:
        raise ConfigurationError(
            f"the corpus has {len(stream)} tokens, fewer than one sequence of {seq_len}"
        )
    chunks = torch.tensor(stream[: rows * body], dtype=torch.long).view(rows, body)
    return torch.cat(
        (
            torch.full((rows, 1), cls_id, dtype=torch.long),
            chunks,
            torch.full((rows, 1), sep_id, dtype=torch.long),
        ),
        dim=1,
    )


def mask_tokens(
    input_ids: Tensor,
    *,
    mask_id: int,
    vocab_size: int,
    special_ids: Sequence[int],
    probability: float,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """BERT's masking: ``(masked input_ids, labels)`` for ``input_ids`` ``[B, T]``.

    Each non-special token is chosen with ``probability``; a chosen token becomes ``[MASK]`` 80% of
    the time, a random token 10%, itself 10%. ``labels`` hold the original id at chosen positions
    and ``IGNORE_INDEX`` elsewhere.
    """
    special = torch.isin(input_ids, torch.tensor(list(special_ids), dtype=input_ids.dtype))
    chosen = (torch.rand(input_ids.shape, generator=generator) < probability) & ~special
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    action = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)
    masked = torch.where(chosen & (action < 0.8), torch.full_like(input_ids, mask_id), input_ids)
    masked = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, masked)
    return masked, labels


class MaskedLanguageModel(nn.Module):
    """Encoder + BERT's MLM head (dense, GELU, LayerNorm, decoder tied to word embeddings).

    ``forward(input_ids, labels)`` returns the mean cross-entropy (nats per masked token) and how
    many masked tokens the head predicts right; only masked positions reach the head.
    """

    def __init__(self, encoder: BertEncoder) -> None:
        super().__init__()
        hidden = encoder.config.hidden_size
        self.encoder = encoder
        self.transform = nn.Sequential(
            nn.Linear(hidden, hidden, bias=False),
            nn.GELU(),
            nn.LayerNorm(hidden, eps=encoder.config.layer_norm_eps),
        )

    def forward(self, input_ids: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        hidden = self.encoder(input_ids, torch.ones_like(input_ids))
        selected = labels != IGNORE_INDEX
        features = self.transform(hidden[selected])
        logits = features @ self.encoder.embeddings.word.weight.T
        loss = nn.functional.cross_entropy(logits, labels[selected])
        correct = (logits.argmax(-1) == labels[selected]).sum()
        return loss, correct
