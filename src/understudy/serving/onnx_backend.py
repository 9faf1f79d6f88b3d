"""Serving an encoder student with ONNX Runtime (fp32 ``model.onnx`` or ``model.int8.onnx``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from understudy.errors import ModelError
from understudy.models.tokenizer import encode_batch, load_tokenizer
from understudy.serving.artifact import StudentManifest
from understudy.serving.student import FloatArray, chunked_logits, predictions_from_logits
from understudy.serving.torch_backend import encoder_dir
from understudy.tasks import Head, Prediction

INPUT_NAMES = ("input_ids", "attention_mask")
"""Inputs of the exported graph: int64 [batch, tokens] each."""


def output_names(heads: Sequence[Head]) -> list[str]:
    """Graph output names, one logits tensor per head in manifest order (names may be any text,
    so outputs are named by position)."""
    return [f"logits_{i}" for i in range(len(heads))]


def session_options(threads: int | None) -> ort.SessionOptions:
    """Options for a low-latency CPU session: all graph optimisations, ``threads`` intra-op
    threads (None = ONNX Runtime's default, one per physical core), sequential execution."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


class OnnxStudent:
    """An encoder student answering with ONNX Runtime from ``model_path``."""

    def __init__(
        self,
        artifact_dir: Path,
        manifest: StudentManifest,
        version: str,
        model_path: Path,
        *,
        threads: int | None = None,
    ) -> None:
        if not Path(model_path).is_file():
            raise ModelError(f"no ONNX model at {model_path}; run export_onnx first")
        self.task_key = manifest.task
        self.version = version
        self.kind = manifest.kind
        self.heads: tuple[Head, ...] = manifest.heads
        self.manifest = manifest
        self.model_path = Path(model_path)
        self.tokenizer = load_tokenizer(encoder_dir(artifact_dir, manifest), manifest.max_length)
        self.session = ort.InferenceSession(
            str(model_path), session_options(threads), providers=["CPUExecutionProvider"]
        )
        self._outputs = output_names(self.heads)

    def logits(self, texts: Sequence[str]) -> dict[str, FloatArray]:
        """Raw (uncalibrated) logits per head, [N, len(head.labels)], for one or more texts."""
        return chunked_logits(texts, self._network_logits)

    def _network_logits(self, texts: Sequence[str]) -> dict[str, FloatArray]:
        input_ids, attention_mask = encode_batch(self.tokenizer, texts)
        feeds = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        results = self.session.run(self._outputs, feeds)
        return {
            h.name: np.asarray(r, dtype=np.float64)
            for h, r in zip(self.heads, results, strict=True)
        }

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Labels and calibrated probabilities per text (thread-safe: ORT sessions are)."""
        if not texts:
            return []
        return predictions_from_logits(self.heads, self.logits(texts), self.manifest.temperatures)
