"""On the packaged MiniLM with a head fitted to real data, int8 ONNX agrees with torch (slow)."""

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


@pytest.mark.xfail(
    strict=True,
    reason="measured 98.0% agreement (6 of 300 flips, all near the probe's boundary) with dynamic "
    "int8 of the weight MatMuls on AVX2; quantizing attention only reaches 99% but loses the FFN "
    "speed-up. Open: static/QDQ quantization or per-layer exclusion chosen on a calibration set.",
)
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
    export_onnx(artifact)

    texts = [t for t, _ in data.test[:300]]
    fp32 = load_student(artifact, "torch").predict(texts)
    int8 = load_student(artifact, "onnx").predict(texts)
    agreement = np.mean([a.labels == b.labels for a, b in zip(fp32, int8, strict=True)])
    accuracy = np.mean(
        [p.labels["sentiment"] == y for p, (_, y) in zip(fp32, data.test, strict=False)]
    )
    assert accuracy > 0.6  # the head learned something, so agreement is not trivial
    assert agreement >= 0.99
