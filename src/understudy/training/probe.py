"""The probe student: frozen encoder embeddings + logistic regression per head.

The regression is stored as a linear head (``heads.safetensors``), with the feature
standardisation folded into its weights, so serving runs exactly the fine-tuned students' path:
encoder -> pooling -> linear head -> ``softmax(logits / T)``. The encoder is not copied: the
artifact's ``base_encoder`` points at it.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from understudy.models.encoder import BertEncoder
from understudy.models.pretrained import resolve_encoder_dir
from understudy.models.tokenizer import load_tokenizer
from understudy.serving.artifact import StudentManifest
from understudy.settings import Settings
from understudy.tasks import Example, Head, Task
from understudy.training.artifact import TrainResult, write_heads, write_run_record
from understudy.training.calibration import HeadCalibration, calibrate
from understudy.training.config import ProbeConfig
from understudy.training.data import check_examples, data_hash, label_counts, split_holdout
from understudy.training.embeddings import EmbeddingCache, embed_texts

# Logit given to a label the regression never saw: softmax probability ~e^-30 next to real ones.
UNSEEN_LABEL_LOGIT = -30.0
# Inverse regularisation strengths tried when ``ProbeConfig.c`` is None, picked by cross-validated
# log loss. Tasks differ by two orders of magnitude: on MiniLM embeddings rt-sentiment does best
# at 0.01 and TREC with 64 labels at 1.0 (see bench/students.py).
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)
MAX_FOLDS = 3
# C is chosen on a seeded sample of at most this many examples: it bounds the search's cost, and
# the best C moves little beyond a few thousand examples.
SEARCH_MAX_ROWS = 2000
# When a label is too rare to cross-validate (fewer than 2 examples): scikit-learn's default.
FALLBACK_C = 1.0

# A feature whose standard deviation is below this fraction of the largest one's is treated as
# constant by ``standardiser`` (left unscaled).
CONSTANT_FEATURE_STD = 1e-6

LinearHead = tuple[NDArray[np.float64], NDArray[np.float64]]


def standardiser(features: NDArray[Any]) -> StandardScaler:
    """A StandardScaler fitted on ``features`` that leaves (nearly) constant features unscaled.

    Scaled, such a feature would get a weight of 1/std once standardisation is folded into the
    head: MiniLM's mean-pooled embeddings have a dimension at ~1e-33 whose weight became ~1e29,
    and fine-tuning from that head produced infinite gradients.
    """
    scaler = StandardScaler().fit(features)
    constant = scaler.scale_ < CONSTANT_FEATURE_STD * scaler.scale_.max()
    scaler.scale_ = np.where(constant, 1.0, scaler.scale_)
    return scaler


def fit_linear_head(
    head: Head,
    features: NDArray[Any],
    labels: list[str],
    weights: NDArray[Any],
    c: float,
    seed: int,
) -> LinearHead:
    """Logistic regression (inverse regularisation ``c``) on standardised features, returned as
    (weight [n_labels, hidden], bias [n_labels]) acting on the raw features, columns in
    ``head.labels`` order."""
    scaler = standardiser(features)
    model = LogisticRegression(C=c, max_iter=1000, random_state=seed)
    model.fit(scaler.transform(features), labels, sample_weight=weights)
    coef, intercept = model.coef_, model.intercept_
    if coef.shape[0] == 1:
        # Binary regression gives one score s for classes_[1]; logits (-s/2, s/2) have the same
        # softmax as sigmoid(s).
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    # Fold standardisation in: w·(x - mu)/sigma + b = (w/sigma)·x + (b - (w/sigma)·mu).
    scaled = coef / scaler.scale_
    shifted = intercept - scaled @ scaler.mean_
    weight = np.zeros((len(head.labels), features.shape[1]))
    bias = np.full(len(head.labels), UNSEEN_LABEL_LOGIT)
    for row, label in enumerate(model.classes_):
        column = head.labels.index(str(label))
        weight[column], bias[column] = scaled[row], shifted[row]
    return weight, bias


def choose_c(features: NDArray[Any], labels: list[str], weights: NDArray[Any], seed: int) -> float:
    """The C of ``C_GRID`` with the lowest log loss in stratified k-fold cross-validation (k up to
    ``MAX_FOLDS``, at most the rarest label's count) on up to ``SEARCH_MAX_ROWS`` examples;
    ``FALLBACK_C`` when a label has only one example."""
    if len(labels) > SEARCH_MAX_ROWS:
        sample = np.random.default_rng(seed).choice(len(labels), SEARCH_MAX_ROWS, replace=False)
        features, weights = features[sample], weights[sample]
        labels = [labels[i] for i in sample]
    folds = min(MAX_FOLDS, *Counter(labels).values())
    if folds < 2:
        return FALLBACK_C
    scaled = standardiser(features).transform(features)
    targets = np.asarray(labels)
    losses = dict.fromkeys(C_GRID, 0.0)
    splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(scaled, targets)
    for fit_rows, test_rows in splits:
        # Along the grid (ascending C) each fit starts from the last one's solution.
        model = LogisticRegression(max_iter=1000, random_state=seed, warm_start=True)
        for c in C_GRID:
            model.set_params(C=c)
            model.fit(scaled[fit_rows], targets[fit_rows], sample_weight=weights[fit_rows])
            losses[c] += log_loss(
                targets[test_rows],
                model.predict_proba(scaled[test_rows]),
                labels=model.classes_,
                sample_weight=weights[test_rows],
            )
    return min(C_GRID, key=losses.__getitem__)


def _head_rows(head: Head, examples: list[Example]) -> list[int]:
    return [i for i, e in enumerate(examples) if head.name in e.labels]


def _head_data(
    head: Head, examples: list[Example], features: NDArray[Any]
) -> tuple[NDArray[Any], list[str], NDArray[Any]]:
    """Features, labels and weights of the examples that label ``head``."""
    rows = _head_rows(head, examples)
    labels = [examples[i].labels[head.name] for i in rows]
    return features[rows], labels, np.array([examples[i].weight for i in rows])


def chosen_strengths(
    task: Task, examples: list[Example], features: NDArray[Any], seed: int
) -> dict[str, float]:
    """Head name -> the regression's C chosen by ``choose_c`` on the examples that label it."""
    return {head.name: choose_c(*_head_data(head, examples, features), seed) for head in task.heads}


def fit_heads(
    task: Task,
    examples: list[Example],
    features: NDArray[Any],
    strengths: dict[str, float],
    seed: int,
) -> dict[str, LinearHead]:
    """Head name -> ``fit_linear_head`` on the examples that label it, at its C."""
    return {
        head.name: fit_linear_head(
            head, *_head_data(head, examples, features), strengths[head.name], seed
        )
        for head in task.heads
    }


class ProbeTrainer:
    """Trains the probe student; ``train`` writes a complete ``kind="probe"`` artifact."""

    kind = "probe"

    def __init__(self, config: ProbeConfig | None = None) -> None:
        self.config = config or ProbeConfig()

    def _strengths(
        self, task: Task, examples: list[Example], features: NDArray[Any]
    ) -> dict[str, float]:
        """Head name -> the regression's C: ``config.c``, or one chosen by cross-validation."""
        if self.config.c is not None:
            return dict.fromkeys((head.name for head in task.heads), self.config.c)
        return chosen_strengths(task, examples, features, self.config.seed)

    def train(self, task: Task, examples: list[Example], out_dir: Path) -> TrainResult:
        """Embed every text (cached), fit and calibrate the heads, write the artifact.

        Raises InsufficientData when a head has too few labels, ConfigurationError when no
        encoder is configured or installed.
        """
        config = self.config
        check_examples(task, examples)
        encoder_dir = config.encoder_dir or resolve_encoder_dir(Settings())
        started = time.perf_counter()
        cache = EmbeddingCache(encoder_dir, config.max_length, config.pooling, config.cache_dir)
        texts = [e.text for e in examples]
        missing = cache.missing(texts)
        if missing:
            encoder = BertEncoder.from_pretrained(encoder_dir)
            tokenizer = load_tokenizer(encoder_dir, config.max_length)
            vectors = embed_texts(
                encoder,
                tokenizer,
                missing,
                pooling=config.pooling,
                batch_size=config.batch_size,
                show_progress=config.progress,
            )
            cache.add(missing, vectors)
            cache.save()
        embedded = time.perf_counter()

        train, holdout = split_holdout(examples, task, config.holdout_fraction, config.seed)
        train_features = cache.get([e.text for e in train])
        strengths = self._strengths(task, train, train_features)
        heads = fit_heads(task, train, train_features, strengths, config.seed)
        holdout_features = cache.get([e.text for e in holdout])
        calibration: dict[str, HeadCalibration] = {}
        for head in task.heads:
            rows = _head_rows(head, holdout)
            weight, bias = heads[head.name]
            targets = [head.labels.index(holdout[i].labels[head.name]) for i in rows]
            calibration[head.name] = calibrate(
                holdout_features[rows] @ weight.T + bias, np.array(targets, dtype=np.int64)
            )
        if config.refit_on_all:
            heads = fit_heads(task, examples, cache.get(texts), strengths, config.seed)
        finished = time.perf_counter()

        out_dir.mkdir(parents=True, exist_ok=True)
        write_heads(out_dir, heads)
        result = TrainResult(
            kind=self.kind,
            out_dir=out_dir,
            n_train=len(examples) if config.refit_on_all else len(train),
            n_holdout=len(holdout),
            data_hash=data_hash(examples),
            calibration=calibration,
            timings_s={
                "embed": embedded - started,
                "fit": finished - embedded,
                "total": finished - started,
            },
            extra={
                "embedded_texts": len(missing),
                "cached_texts": len(cache),
                "regularisation_c": strengths,
            },
        )
        StudentManifest(
            kind=self.kind,
            task=task.key,
            task_version=task.version,
            heads=task.heads,
            max_length=config.max_length,
            pooling=config.pooling,
            temperatures=result.temperatures,
            base_encoder=str(Path(encoder_dir).resolve()),
        ).write(out_dir)
        write_run_record(
            out_dir,
            result=result,
            task=task,
            config=config,
            label_counts=label_counts(task, examples),
        )
        return result
