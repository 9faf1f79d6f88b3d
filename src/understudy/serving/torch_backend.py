"""Serving an encoder student (probe / finetune / distill) with PyTorch in fp32."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import torch
from tokenizers import Tokenizer

from understudy.errors import ModelError
from understudy.models.classifier import Pooling, StudentModel
from understudy.models.encoder import BertEncoder
from understudy.models.tokenizer import encode_batch, load_tokenizer
from understudy.serving.artifact import ENCODER_DIR, HEADS_FILE, StudentManifest
from understudy.serving.student import FloatArray, chunked_logits, predictions_from_logits
from understudy.tasks import Head, Prediction


def encoder_dir(artifact_dir: Path, manifest: StudentManifest) -> Path:
    """The encoder directory of an artifact: its own ``encoder/``, else ``base_encoder`` (probe)."""
    own = Path(artifact_dir) / ENCODER_DIR
    if own.is_dir():
        return own
    if manifest.base_encoder:
        return Path(manifest.base_encoder)
    raise ModelError(f"{artifact_dir} has no {ENCODER_DIR}/ and its student.json no base_encoder")


def load_student_model(
    artifact_dir: Path, manifest: StudentManifest
) -> tuple[StudentModel, Tokenizer]:
    """The artifact's network (eval mode) and tokenizer (truncating to ``manifest.max_length``)."""
    folder = encoder_dir(artifact_dir, manifest)
    model = StudentModel(
        BertEncoder.from_pretrained(folder), manifest.heads, cast(Pooling, manifest.pooling)
    )
    model.load_heads(Path(artifact_dir) / HEADS_FILE)
    return model.eval(), load_tokenizer(folder, manifest.max_length)


class TorchStudent:
    """An encoder student answering with PyTorch; ``threads`` caps torch's intra-op threads."""

    def __init__(
        self,
        artifact_dir: Path,
        manifest: StudentManifest,
        version: str,
        *,
        threads: int | None = None,
    ) -> None:
        self.task_key = manifest.task
        self.version = version
        self.kind = manifest.kind
        self.heads: tuple[Head, ...] = manifest.heads
        self.manifest = manifest
        self.model, self.tokenizer = load_student_model(artifact_dir, manifest)
        if threads is not None:
            # Process-wide in torch: the last loaded student's setting wins.
            torch.set_num_threads(threads)

    def logits(self, texts: Sequence[str]) -> dict[str, FloatArray]:
        """Raw (uncalibrated) logits per head, [N, len(head.labels)], for one or more texts."""
        return chunked_logits(texts, self._network_logits)

    def _network_logits(self, texts: Sequence[str]) -> dict[str, FloatArray]:
        input_ids, attention_mask = encode_batch(self.tokenizer, texts)
        with torch.inference_mode():
            out = self.model(input_ids, attention_mask)
        return {name: t.numpy().astype(np.float64) for name, t in out.items()}

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Labels and calibrated probabilities per text (thread-safe: inference mode, no state)."""
        if not texts:
            return []
        return predictions_from_logits(self.heads, self.logits(texts), self.manifest.temperatures)
