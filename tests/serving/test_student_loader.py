"""Loading students of every kind and backend; ONNX int8 agrees with torch."""

from __future__ import annotations

import json
import math
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from understudy.errors import ModelError
from understudy.serving.artifact import StudentManifest
from understudy.serving.loader import Backend, load_student
from understudy.serving.onnx_backend import OnnxStudent
from understudy.serving.onnx_export import export_onnx
from understudy.serving.student import NETWORK_CHUNK, Student
from understudy.serving.torch_backend import TorchStudent
from understudy.tasks import Head, HeadKind
from understudy.testing.tiny_models import random_sentences, write_tiny_student

HEADS = (
    Head("sentiment", ("positive", "negative", "neutral")),
    Head("urgent", ("false", "true"), HeadKind.BOOL),
)
MIN_INT8_AGREEMENT = 0.99


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    artifact = write_tiny_student(tmp_path_factory.mktemp("student") / "a", HEADS, seed=0)
    export_onnx(artifact)
    return artifact


def _agreement(a: list, b: list, head: str) -> float:
    return sum(x.labels[head] == y.labels[head] for x, y in zip(a, b, strict=True)) / len(a)


def test_int8_onnx_agrees_with_torch(exported: Path) -> None:
    texts = random_sentences(400, seed=11)
    torch_preds = load_student(exported, "torch", threads=1).predict(texts)
    int8 = load_student(exported, "onnx", threads=1)
    assert isinstance(int8, OnnxStudent) and int8.model_path.name == "model.int8.onnx"
    int8_preds = int8.predict(texts)
    for head in HEADS:
        # Every label must occur, or agreement would be trivially high.
        assert {p.labels[head.name] for p in torch_preds} == set(head.labels)
        assert _agreement(torch_preds, int8_preds, head.name) >= MIN_INT8_AGREEMENT


def test_fp32_onnx_reproduces_torch_probabilities(exported: Path) -> None:
    texts = random_sentences(20, seed=2)
    a = load_student(exported, "torch").predict(texts)
    b = load_student(exported, "onnx-fp32").predict(texts)
    for x, y in zip(a, b, strict=True):
        for head in HEADS:
            for label in head.labels:
                assert abs(x.probs[head.name][label] - y.probs[head.name][label]) < 1e-4


def test_auto_backend_and_protocol(exported: Path, tmp_path: Path) -> None:
    student = load_student(exported)
    assert isinstance(student, OnnxStudent) and isinstance(student, Student)
    assert (student.task_key, student.version, student.kind) == ("tiny-task", "a", "finetune")
    assert student.predict([]) == []
    plain = write_tiny_student(tmp_path / "plain", HEADS)
    assert isinstance(load_student(plain), TorchStudent)
    with pytest.raises(ModelError, match=r"model\.int8\.onnx"):
        load_student(plain, "onnx")


def test_temperature_scales_logits(exported: Path, tmp_path: Path) -> None:
    text = ["the movie was great fun"]
    student = load_student(exported, "torch")
    assert isinstance(student, TorchStudent)
    logits = student.logits(text)["sentiment"][0]
    manifest = StudentManifest.read(exported)
    hot = tmp_path / "hot"
    write_tiny_student(hot, HEADS, seed=0)
    StudentManifest(**{**manifest.__dict__, "temperatures": {"sentiment": 3.0}}).write(hot)
    probs = load_student(hot, "torch").predict(text)[0].probs["sentiment"]
    expected = np.exp(logits / 3.0) / np.exp(logits / 3.0).sum()
    assert [probs[label] for label in HEADS[0].labels] == pytest.approx(expected.tolist(), abs=1e-9)
    assert math.isclose(sum(probs.values()), 1.0)


def test_ngram_student_maps_classes_to_head_order(tmp_path: Path) -> None:
    texts = ["great fun", "awful boring", "great movie", "boring awful film"] * 5
    sentiment = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(
        texts, ["positive", "negative", "positive", "negative"] * 5
    )  # "neutral" never seen: it must get probability 0
    urgent = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(
        texts, ["true", "false", "false", "true"] * 5
    )
    artifact = tmp_path / "ngram"
    artifact.mkdir()
    joblib.dump({"sentiment": sentiment, "urgent": urgent}, artifact / "ngram.joblib")
    StudentManifest(
        kind="ngram", task="t", task_version=1, heads=HEADS, temperatures={"sentiment": 2.0}
    ).write(artifact)
    prediction = load_student(artifact, "torch").predict(["great fun"])[0]
    assert prediction.labels["sentiment"] == "positive"
    assert prediction.probs["sentiment"]["neutral"] == 0.0
    raw = sentiment.predict_proba(["great fun"])[0]  # classes_ sorted: negative, positive
    tempered = np.sqrt(raw) / np.sqrt(raw).sum()
    assert prediction.probs["sentiment"]["positive"] == pytest.approx(tempered[1])
    assert prediction.probs["urgent"]["true"] == pytest.approx(
        urgent.predict_proba(["great fun"])[0][1]
    )


def test_malformed_artifacts_raise_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"student\.json"):
        load_student(tmp_path)
    (tmp_path / "student.json").write_text(json.dumps({"format": 1, "kind": "gpt"}))
    with pytest.raises(ModelError, match="unknown student kind"):
        load_student(tmp_path)
    (tmp_path / "student.json").write_text(json.dumps({"format": 1, "kind": "finetune"}))
    with pytest.raises(ModelError, match="malformed"):
        load_student(tmp_path)


def test_an_unfaithful_int8_graph_is_dropped_and_fp32_onnx_serves(tmp_path: Path) -> None:
    artifact = write_tiny_student(tmp_path / "a", HEADS, seed=0)
    texts = random_sentences(50, seed=5)
    kept = export_onnx(artifact, check_texts=texts, min_int8_agreement=0.5)
    assert kept.int8 is not None and kept.int8_agreement is not None
    assert kept.int8_agreement >= 0.5

    # A bar no quantized graph can clear: the int8 file goes, and "auto" serves fp32 ONNX.
    dropped = export_onnx(artifact, check_texts=texts, min_int8_agreement=1.01)
    assert dropped.int8 is None and dropped.int8_agreement == kept.int8_agreement
    assert not (artifact / "model.int8.onnx").exists()
    student = load_student(artifact)
    assert isinstance(student, OnnxStudent) and student.model_path.name == "model.onnx"


# Not int8: its activation scales are per batch, so a lone text's logits differ a little anyway.
@pytest.mark.parametrize("backend", ["torch", "onnx-fp32"])
def test_long_lists_go_through_the_network_in_chunks_with_the_same_answers(
    exported: Path, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    student = load_student(exported, backend, threads=1)
    texts = random_sentences(2 * NETWORK_CHUNK + 7, seed=3)
    one_by_one = np.concatenate([student.logits([text])["sentiment"] for text in texts])
    batch_sizes: list[int] = []
    network_logits = student._network_logits  # type: ignore[union-attr]

    def counting(chunk: list[str]) -> dict[str, np.ndarray]:
        batch_sizes.append(len(chunk))
        return network_logits(chunk)

    monkeypatch.setattr(student, "_network_logits", counting)
    together = student.logits(texts)["sentiment"]
    assert batch_sizes == [NETWORK_CHUNK, NETWORK_CHUNK, 7]
    # Padding differs between a chunk and a lone text; the attention mask makes it irrelevant.
    np.testing.assert_allclose(together, one_by_one, atol=1e-4)
