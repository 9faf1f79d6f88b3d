"""The n-gram student: TF-IDF word and character n-grams + logistic regression, one per head.

It trains in about a second and answers in about a millisecond, so it is the first student a task
gets and the one the cascade keeps when it already meets the target. The saved pipelines contain
only scikit-learn objects, so serving can load them without this module.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import FeatureUnion, Pipeline

from understudy.serving.artifact import NGRAM_FILE, StudentManifest
from understudy.tasks import Example, Head, Task
from understudy.training.artifact import TrainResult, write_run_record
from understudy.training.calibration import HeadCalibration, calibrate
from understudy.training.config import NgramConfig
from understudy.training.data import check_examples, data_hash, label_counts, split_holdout

# predict_proba can return exact zeros; their log must stay finite for temperature scaling.
_MIN_PROB = 1e-12


def build_pipeline(config: NgramConfig) -> Pipeline:
    """An unfitted TF-IDF (word + char_wb n-grams) + logistic regression pipeline."""
    features = FeatureUnion(
        [
            (
                "word",
                TfidfVectorizer(
                    ngram_range=config.word_ngrams,
                    sublinear_tf=True,
                    max_features=config.max_features,
                    lowercase=True,
                ),
            ),
            (
                "char",
                TfidfVectorizer(
                    analyzer="char_wb",
                    ngram_range=config.char_ngrams,
                    sublinear_tf=True,
                    max_features=config.max_features,
                    lowercase=True,
                ),
            ),
        ]
    )
    classifier = SGDClassifier(
        loss="log_loss", alpha=config.alpha, max_iter=config.epochs, random_state=config.seed
    )
    return Pipeline([("features", features), ("classifier", classifier)])


def _fit(head: Head, examples: list[Example], config: NgramConfig) -> Pipeline:
    rows = [e for e in examples if head.name in e.labels]
    pipeline = build_pipeline(config)
    pipeline.fit(
        [e.text for e in rows],
        [e.labels[head.name] for e in rows],
        classifier__sample_weight=np.array([e.weight for e in rows]),
    )
    return pipeline


def head_logits(pipeline: Pipeline, head: Head, texts: list[str]) -> np.ndarray[Any, Any]:
    """Logits [N, len(head.labels)] in head label order: ``log(predict_proba)``.

    Labels the pipeline never saw in training get a log-probability of ``log(1e-12)``.
    """
    probs = np.full((len(texts), len(head.labels)), _MIN_PROB)
    columns = [head.labels.index(label) for label in pipeline.classes_]
    probs[:, columns] = np.maximum(pipeline.predict_proba(texts), _MIN_PROB)
    return np.asarray(np.log(probs))


def _calibrate(head: Head, pipeline: Pipeline, holdout: list[Example]) -> HeadCalibration:
    rows = [e for e in holdout if head.name in e.labels]
    logits = head_logits(pipeline, head, [e.text for e in rows])
    targets = np.array([head.labels.index(e.labels[head.name]) for e in rows], dtype=np.int64)
    return calibrate(logits, targets)


class NgramTrainer:
    """Trains the n-gram student; ``train`` writes a complete ``kind="ngram"`` artifact."""

    kind = "ngram"

    def __init__(self, config: NgramConfig | None = None) -> None:
        self.config = config or NgramConfig()

    def train(self, task: Task, examples: list[Example], out_dir: Path) -> TrainResult:
        """Fit one pipeline per head, calibrate on the holdout, write the artifact to ``out_dir``.

        Raises InsufficientData when a head has too few labels.
        """
        config = self.config
        check_examples(task, examples)
        started = time.perf_counter()
        train, holdout = split_holdout(examples, task, config.holdout_fraction, config.seed)
        pipelines = {head.name: _fit(head, train, config) for head in task.heads}
        fitted = time.perf_counter()
        calibration = {
            head.name: _calibrate(head, pipelines[head.name], holdout) for head in task.heads
        }
        calibrated = time.perf_counter()
        if config.refit_on_all:
            pipelines = {head.name: _fit(head, examples, config) for head in task.heads}
        finished = time.perf_counter()

        out_dir.mkdir(parents=True, exist_ok=True)
        joblib.dump(pipelines, out_dir / NGRAM_FILE)
        result = TrainResult(
            kind=self.kind,
            out_dir=out_dir,
            n_train=len(examples) if config.refit_on_all else len(train),
            n_holdout=len(holdout),
            data_hash=data_hash(examples),
            calibration=calibration,
            timings_s={
                "fit": fitted - started,
                "calibrate": calibrated - fitted,
                "refit": finished - calibrated,
                "total": finished - started,
            },
        )
        StudentManifest(
            kind=self.kind,
            task=task.key,
            task_version=task.version,
            heads=task.heads,
            temperatures=result.temperatures,
        ).write(out_dir)
        write_run_record(
            out_dir,
            result=result,
            task=task,
            config=config,
            label_counts=label_counts(task, examples),
        )
        return result
