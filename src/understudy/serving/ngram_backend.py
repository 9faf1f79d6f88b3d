"""Serving an ``ngram`` student: scikit-learn pipelines (TF-IDF + logistic regression) per head."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from understudy.errors import ModelError
from understudy.serving.artifact import NGRAM_FILE, StudentManifest
from understudy.serving.ngram_fast import FastNgramHead
from understudy.serving.student import FloatArray, predictions_from_logits
from understudy.tasks import Head, Prediction


def _fast_or_pipeline(pipeline: Any) -> Any:
    """The fast path for the trainer's own TF-IDF + SGD pipelines (the same arithmetic without
    scikit-learn's per-call overhead of milliseconds per text); any other fitted pipeline with
    ``predict_proba`` and ``classes_`` is used as it is."""
    try:
        return FastNgramHead(pipeline)
    except (ValueError, KeyError, AttributeError, TypeError):
        return pipeline


class NgramStudent:
    """An ``ngram`` artifact loaded for prediction; logits are ``log(predict_proba)``."""

    def __init__(self, artifact_dir: Path, manifest: StudentManifest, version: str) -> None:
        self.task_key = manifest.task
        self.version = version
        self.kind = manifest.kind
        self.heads: tuple[Head, ...] = manifest.heads
        self.manifest = manifest
        path = Path(artifact_dir) / NGRAM_FILE
        if not path.is_file():
            raise ModelError(f"ngram student {artifact_dir} has no {NGRAM_FILE}")
        pipelines = joblib.load(path)
        if not isinstance(pipelines, dict):
            raise ModelError(f"{path} does not hold a dict of pipelines per head")
        self._heads: dict[str, Any] = {
            name: _fast_or_pipeline(pipeline) for name, pipeline in pipelines.items()
        }
        # Column index in Head.labels order for each class the pipeline knows; a label never seen
        # in training has no column and gets probability 0.
        self._columns: dict[str, list[int]] = {}
        for head in self.heads:
            if head.name not in pipelines:
                raise ModelError(f"{path} has no pipeline for head {head.name!r}")
            classes = [str(c) for c in self._heads[head.name].classes_]
            unknown = [c for c in classes if c not in head.labels]
            if unknown:
                raise ModelError(f"head {head.name!r} pipeline predicts unknown labels {unknown}")
            self._columns[head.name] = [head.labels.index(c) for c in classes]

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Labels and calibrated probabilities per text (thread-safe: pipelines are read-only)."""
        if not texts:
            return []
        logits: dict[str, FloatArray] = {}
        for head in self.heads:
            proba = np.asarray(self._heads[head.name].predict_proba(list(texts)), dtype=float)
            full = np.full((len(texts), len(head.labels)), -np.inf)
            with np.errstate(divide="ignore"):  # log(0) = -inf is the intended logit of p = 0
                full[:, self._columns[head.name]] = np.log(proba)
            logits[head.name] = full
        return predictions_from_logits(self.heads, logits, self.manifest.temperatures)
