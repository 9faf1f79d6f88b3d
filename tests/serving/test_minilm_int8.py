"""On the packaged MiniLM with a head fitted to real data, int8 ONNX agrees with torch (slow).

The student is a probe on rt-sentiment: a logistic regression over frozen embeddings, whose
decision boundary has many movie reviews right on it, so it is the hardest case for int8 seen
here (bench/README.md, "int8 fidelity": dynamic int8 flips about 3% of its answers).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from understudy.datasets import load_dataset
from understudy.models.classifier import StudentModel
from understudy.models.encoder import BertEncoder
from understudy.models.pretrained import default_encoder_dir
from understudy.models.tokenizer import encode_batch, load_tokenizer
from understudy.serving.artifact import HEADS_FILE, StudentManifest
from understudy.serving.loader import load_student
from understudy.serving.onnx_export import export_onnx
from understudy.tasks import Head

pytestmark = pytest.mark.slow


def test_minilm_int8_agrees_with_torch_on_rt_sentiment(tmp_path: Path) -> None:
    data = load_dataset("rt-sentiment", seed=0)
    head = Head("sentiment", data.labels)
    folder = default_encoder_dir()
    model = StudentModel(BertEncoder.from_pretrained(folder), (head,), "mean").eval()
    tokenizer = load_tokenizer(folder, 64)
    train = data.train[:400]
    with torch.inference_mode():
        features = model.embed(*encode_batch(tokenizer, [t for t, _ in train])).numpy()
    probe = LogisticRegression(max_iter=1000).fit(features, [label for _, label in train])
    # Map sklearn's binary coef (one row) onto one logit row per label in Head.labels order.
    weight = np.zeros((2, features.shape[1]), dtype=np.float32)
    bias = np.zeros(2, dtype=np.float32)
    positive = head.labels.index(str(probe.classes_[1]))
    weight[positive], bias[positive] = probe.coef_[0], probe.intercept_[0]
    model.load_head_state(
        {"sentiment.weight": torch.from_numpy(weight), "sentiment.bias": torch.from_numpy(bias)}
    )
    artifact = tmp_path / "probe"
    artifact.mkdir()
    model.save_heads(artifact / HEADS_FILE)
    StudentManifest(
        kind="probe", task="rt", task_version=1, heads=(head,), max_length=64,
        base_encoder=str(folder),
    ).write(artifact)  # fmt: skip
    # As the worker does: int8 schemes are checked on calls apart from those judged on below.
    check = [t for t, _ in data.test[1000:2000]]
    exported = export_onnx(artifact, check_texts=check, min_int8_agreement=0.99)
    assert exported.int8 is not None, f"no int8 scheme kept: {exported}"

    texts = [t for t, _ in data.test[:1000]]
    fp32 = load_student(artifact, "torch").predict(texts)
    int8 = load_student(artifact, "onnx").predict(texts)
    agreement = np.mean([a.labels == b.labels for a, b in zip(fp32, int8, strict=True)])
    accuracy = np.mean(
        [p.labels["sentiment"] == y for p, (_, y) in zip(fp32, data.test, strict=False)]
    )
    assert accuracy > 0.6  # the head learned something, so agreement is not trivial
    assert agreement >= 0.99, f"{exported.int8_scheme} int8 agreed on {agreement:.1%}"
