"""The student network: encoder, pooling, and one linear classification head per label field."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, cast

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from understudy.errors import ModelError
from understudy.models.encoder import INIT_STD, BertEncoder
from understudy.tasks import Head

Pooling = Literal["mean", "cls"]
POOLINGS: tuple[Pooling, ...] = ("mean", "cls")
HEADS_FILE = "heads.safetensors"


def pool(hidden: Tensor, attention_mask: Tensor, pooling: Pooling) -> Tensor:
    """Sentence embedding [B, H] from hidden states [B, T, H]: mean over real tokens, or [CLS]."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    # clamp: an all-padding row (never produced by the tokenizer) would otherwise divide by zero.
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class StudentModel(nn.Module):
    """Encoder + pooling + a linear head per task head.

    ``forward(input_ids, attention_mask)`` returns ``{head name: logits [B, len(head.labels)]}``
    with columns in ``Head.labels`` order; ``embed`` returns the pooled embedding [B, H].
    """

    def __init__(self, encoder: BertEncoder, heads: Sequence[Head], pooling: Pooling = "mean"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ModelError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
        self.encoder = encoder
        self.task_heads = tuple(heads)
        self.pooling: Pooling = pooling
        hidden = encoder.config.hidden_size
        # A ModuleList rather than a ModuleDict: head names come from JSON schemas and may contain
        # characters (such as ".") that module names cannot.
        linears = [nn.Linear(hidden, len(h.labels)) for h in self.task_heads]
        for layer in linears:
            nn.init.normal_(layer.weight, std=INIT_STD)
            nn.init.zeros_(layer.bias)
        self.classifiers = nn.ModuleList(linears)

    def head_layers(self) -> list[nn.Linear]:
        """The linear classification layers, in ``task_heads`` order."""
        return [cast(nn.Linear, layer) for layer in self.classifiers]

    def embed(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Pooled sentence embedding [B, H]."""
        return pool(self.encoder(input_ids, attention_mask), attention_mask, self.pooling)

    def classify(self, embedding: Tensor) -> dict[str, Tensor]:
        """Logits per head from pooled embeddings [B, H]."""
        return {
            head.name: layer(embedding)
            for head, layer in zip(self.task_heads, self.head_layers(), strict=True)
        }

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        return self.classify(self.embed(input_ids, attention_mask))

    def head_state(self) -> dict[str, Tensor]:
        """Head tensors: ``"<head>.weight"`` [n_labels, H] and ``"<head>.bias"`` [n_labels]."""
        state: dict[str, Tensor] = {}
        for head, layer in zip(self.task_heads, self.head_layers(), strict=True):
            state[f"{head.name}.weight"] = layer.weight.detach().contiguous().clone()
            state[f"{head.name}.bias"] = layer.bias.detach().contiguous().clone()
        return state

    def load_head_state(self, state: dict[str, Tensor]) -> None:
        """Set the heads from ``head_state()``-shaped tensors; ``ModelError`` if any is missing."""
        with torch.no_grad():
            for head, layer in zip(self.task_heads, self.head_layers(), strict=True):
                for part in ("weight", "bias"):
                    key = f"{head.name}.{part}"
                    tensor = state.get(key)
                    target = getattr(layer, part)
                    if tensor is None or tensor.shape != target.shape:
                        raise ModelError(
                            f"head tensor {key!r} is missing or has the wrong shape "
                            f"(want {tuple(target.shape)})"
                        )
                    target.copy_(tensor)

    def save_heads(self, path: Path) -> Path:
        """Write the heads to a safetensors file (``heads.safetensors`` in an artifact)."""
        save_file(self.head_state(), str(path))
        return Path(path)

    def load_heads(self, path: Path) -> None:
        """Read heads written by ``save_heads``."""
        if not Path(path).is_file():
            raise ModelError(f"no head weights at {path}")
        self.load_head_state(load_file(str(path)))
