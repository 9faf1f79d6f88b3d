"""Pooled sentence embeddings from a frozen encoder, batched, with a per-text cache.

The probe student retrains whenever labels arrive; embedding each text once and caching it (in
memory and optionally on disk, keyed by the encoder's identity) makes retraining take seconds.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from tokenizers import Tokenizer

from understudy.models.classifier import Pooling, pool
from understudy.models.encoder import WEIGHTS_FILE, BertEncoder
from understudy.models.tokenizer import encode_batch
from understudy.training.progress import progress_bar

FloatArray = NDArray[np.float32]


def embed_texts(
    encoder: BertEncoder,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    pooling: Pooling,
    batch_size: int,
    show_progress: bool = False,
) -> FloatArray:
    """Pooled embeddings [N, hidden] of ``texts``, in input order.

    Texts are batched in order of length so that each batch pads little (a large saving on CPU).
    """
    hidden = encoder.config.hidden_size
    result = np.zeros((len(texts), hidden), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    encoder.eval()
    with (
        progress_bar("embedding", len(texts), show_progress) as advance,
        torch.inference_mode(),
    ):
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            input_ids, attention_mask = encode_batch(tokenizer, [texts[i] for i in rows])
            embedding = pool(encoder(input_ids, attention_mask), attention_mask, pooling)
            result[rows] = embedding.float().numpy()
            advance(len(rows))
    return result


def text_key(text: str) -> str:
    """Cache key of a text: its sha256 hex digest."""
    return hashlib.sha256(text.encode()).hexdigest()


class EmbeddingCache:
    """Embeddings per text for one (encoder, max_length, pooling), optionally persisted.

    With a ``directory`` the cache lives in ``<directory>/<fingerprint>.npz``; the fingerprint
    covers the encoder directory, its weights file's size and modification time, the max length
    and the pooling, so a changed encoder never serves stale vectors.
    """

    def __init__(
        self, encoder_dir: Path, max_length: int, pooling: Pooling, directory: Path | None = None
    ) -> None:
        weights = Path(encoder_dir) / WEIGHTS_FILE
        stat = weights.stat()
        identity = f"{weights.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{max_length}|{pooling}"
        self.fingerprint = hashlib.sha256(identity.encode()).hexdigest()[:24]
        self.path = Path(directory) / f"{self.fingerprint}.npz" if directory else None
        self._vectors: dict[str, FloatArray] = {}
        if self.path is not None and self.path.is_file():
            with np.load(self.path) as stored:
                keys, vectors = stored["keys"], stored["vectors"]
            self._vectors = {str(k): v for k, v in zip(keys, vectors, strict=True)}

    def __len__(self) -> int:
        return len(self._vectors)

    def missing(self, texts: Sequence[str]) -> list[str]:
        """The distinct texts of ``texts`` that have no cached embedding, in first-seen order."""
        return list(dict.fromkeys(t for t in texts if text_key(t) not in self._vectors))

    def add(self, texts: Sequence[str], vectors: FloatArray) -> None:
        """Store ``vectors[i]`` as the embedding of ``texts[i]``."""
        for text, vector in zip(texts, vectors, strict=True):
            self._vectors[text_key(text)] = vector

    def get(self, texts: Sequence[str]) -> FloatArray:
        """Embeddings [N, hidden] of ``texts`` ([0, 0] when empty); KeyError for a text never
        added."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._vectors[text_key(t)] for t in texts])

    def save(self) -> None:
        """Persist to ``path`` (atomically: written beside it, then renamed); no-op in memory."""
        if self.path is None or not self._vectors:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.stem}.{os.getpid()}.npz")
        keys = np.array(list(self._vectors))
        np.savez(temporary, keys=keys, vectors=np.stack(list(self._vectors.values())))
        temporary.replace(self.path)
