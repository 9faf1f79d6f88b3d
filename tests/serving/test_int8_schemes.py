"""The int8 schemes of ``export_onnx``: each graph serves, and the fastest faithful one is kept."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from understudy.serving import onnx_export
from understudy.serving.loader import load_student
from understudy.serving.onnx_export import export_onnx, quantize_blockwise_int8, weight_matmuls
from understudy.tasks import Head
from understudy.testing.tiny_models import random_sentences, write_tiny_student

HEADS = (Head("sentiment", ("positive", "negative", "neutral")),)


def _op_types(model_path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(model_path)).graph.node}


def test_the_blockwise_graph_agrees_with_fp32(tmp_path: Path) -> None:
    artifact = write_tiny_student(tmp_path / "a", HEADS, seed=0)
    export_onnx(artifact)
    quantize_blockwise_int8(artifact / "model.onnx", artifact / "model.int8.onnx")
    # Every weight MatMul became a MatMulNBits; what stays a MatMul multiplies two activations.
    assert "MatMulNBits" in _op_types(artifact / "model.int8.onnx")
    assert weight_matmuls(artifact / "model.int8.onnx") == []
    texts = random_sentences(400, seed=11)
    fp32 = load_student(artifact, "onnx-fp32").predict(texts)
    int8 = load_student(artifact, "onnx").predict(texts)
    assert {p.labels["sentiment"] for p in fp32} == set(HEADS[0].labels)
    same = sum(a.labels == b.labels for a, b in zip(fp32, int8, strict=True))
    assert same / len(texts) >= 0.99


def test_the_blockwise_scheme_is_kept_when_dynamic_flips_too_many(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tiny random encoder quantizes almost without flips under either scheme; stand in for a
    # student whose dynamic graph flips 3% of the check texts and whose blockwise graph 0.5%.
    def agreement_by_scheme(artifact_dir: Path, _texts: object, _fp32: object) -> float:
        ops = _op_types(artifact_dir / "model.int8.onnx")
        return 0.995 if "MatMulNBits" in ops else 0.97

    monkeypatch.setattr(onnx_export, "int8_agreement", agreement_by_scheme)
    artifact = write_tiny_student(tmp_path / "a", HEADS, seed=0)
    texts = random_sentences(20, seed=5)

    kept = export_onnx(artifact, check_texts=texts, min_int8_agreement=0.99)
    assert (kept.int8_scheme, kept.int8_agreement) == ("blockwise", 0.995)
    assert "MatMulNBits" in _op_types(artifact / "model.int8.onnx")

    fastest = export_onnx(artifact, check_texts=texts, min_int8_agreement=0.95)
    assert (fastest.int8_scheme, fastest.int8_agreement) == ("dynamic", 0.97)
    assert "MatMulNBits" not in _op_types(artifact / "model.int8.onnx")

    # Neither clears the bar: no int8 graph is left, and the best agreement tried is reported.
    none = export_onnx(artifact, check_texts=texts, min_int8_agreement=0.999)
    assert (none.int8, none.int8_scheme, none.int8_agreement) == (None, None, 0.995)
    assert not (artifact / "model.int8.onnx").exists()
