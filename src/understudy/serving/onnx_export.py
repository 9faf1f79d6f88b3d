"""Export an encoder student to ONNX and quantize it to int8 with ONNX Runtime.

The graph takes ``input_ids`` and ``attention_mask`` (int64 [batch, tokens], both axes dynamic)
and returns one logits tensor per head (``logits_<i>``, manifest head order, uncalibrated).
Weights are stored as int8 and activations quantized per call, so no calibration data is needed;
two schemes, fastest first (``INT8_SCHEMES``):

- ``dynamic``: ONNX Runtime's dynamic quantization (``MatMulInteger``): one scale per weight
  column and one per activation tensor. The fastest, but a few tokens with very large activations
  (BERT has them) set the whole tensor's scale, so the other tokens lose precision.
- ``blockwise``: ``MatMulNBits`` at 8 bits with int8 compute: one scale per block of
  ``BLOCKWISE_BLOCK`` weights and per block of each token's activations, so no token's outliers
  cost another its precision. Slower than ``dynamic``, faster than fp32; measured in
  bench/README.md ("int8 fidelity").
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from understudy.errors import ModelError
from understudy.models.classifier import StudentModel
from understudy.serving.artifact import (
    CHECKSUMS_FILE,
    ENCODER_KINDS,
    ONNX_FILE,
    ONNX_INT8_FILE,
    StudentManifest,
)
from understudy.serving.checksums import write_checksums
from understudy.serving.loader import load_student
from understudy.serving.onnx_backend import INPUT_NAMES, output_names
from understudy.serving.torch_backend import load_student_model
from understudy.tasks import Prediction

logger = logging.getLogger(__name__)

OPSET = 17
"""ONNX opset of the export; 17 is the first with a native LayerNormalization op."""

Int8Scheme = Literal["dynamic", "blockwise"]
INT8_SCHEMES: tuple[Int8Scheme, ...] = ("dynamic", "blockwise")
"""The int8 schemes ``export_onnx`` tries in turn, fastest first."""
BLOCKWISE_BLOCK = 128
"""Weights (along the input dimension) and activations sharing one scale in ``blockwise``."""


@dataclass(frozen=True)
class ExportResult:
    """What ``export_onnx`` wrote: the fp32 graph, the int8 graph and its scheme (None when no
    int8 graph was kept), and the kept graph's agreement with fp32 on the check texts (None when
    not checked; when no scheme was kept, the highest agreement one reached)."""

    fp32: Path
    int8: Path | None = None
    int8_scheme: Int8Scheme | None = None
    int8_agreement: float | None = None


class _LogitsTuple(nn.Module):
    """Wraps a StudentModel so the graph returns a tuple of logits (ONNX has no dict outputs)."""

    def __init__(self, model: StudentModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, ...]:
        logits = self.model(input_ids, attention_mask)
        return tuple(logits[head.name] for head in self.model.task_heads)


def export_fp32(model: StudentModel, path: Path) -> Path:
    """Write ``model`` as an fp32 ONNX graph to ``path`` (atomically, via a temporary file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    # Two rows of different lengths, so the trace sees real padding in the attention mask.
    input_ids = torch.tensor([[2, 7, 8, 9, 3], [2, 7, 3, 0, 0]], dtype=torch.long)
    attention_mask = (input_ids != 0).long()
    names = output_names(model.task_heads)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the torch.export one, which needs
        # the extra `onnxscript` package; the TorchScript one handles this plain graph fine.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            _LogitsTuple(model).eval(),
            (input_ids, attention_mask),
            str(tmp),
            dynamo=False,
            input_names=list(INPUT_NAMES),
            output_names=names,
            dynamic_axes={
                **{name: {0: "batch", 1: "tokens"} for name in INPUT_NAMES},
                **{name: {0: "batch"} for name in names},
            },
            opset_version=OPSET,
            do_constant_folding=True,
        )
    os.replace(tmp, path)
    return path


def weight_matmuls(model_path: Path) -> list[str]:
    """Names of the graph's MatMul nodes that multiply by a constant weight (the encoder's linear
    layers), as opposed to activation x activation products inside attention."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]


def quantize_dynamic_int8(fp32_path: Path, int8_path: Path, *, per_channel: bool = True) -> Path:
    """Dynamic int8 quantization of the weight MatMuls of an ONNX graph (atomically written).

    Only the linear layers are quantized: they hold nearly all the compute. Embedding lookups
    (``Gather``) and the classification heads stay fp32: quantizing them saves no time and, in
    measurements here, flipped up to 2% of a tiny model's predictions. ``reduce_range`` (7-bit
    weights) is on because CPUs without VNNI instructions (AVX2 only) saturate in the u8 x s8
    multiply-add ONNX Runtime uses (without it, 40% of one head's answers flipped here).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8_path = Path(int8_path)
    tmp = int8_path.with_name(f".{int8_path.name}.tmp")
    quantize_dynamic(
        model_input=str(fp32_path),
        model_output=str(tmp),
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        reduce_range=True,
        nodes_to_quantize=weight_matmuls(fp32_path),
    )
    os.replace(tmp, int8_path)
    return int8_path


def quantize_blockwise_int8(fp32_path: Path, int8_path: Path) -> Path:
    """8-bit ``MatMulNBits`` quantization of the weight MatMuls of an ONNX graph (atomically
    written): symmetric int8 weights with one scale per ``BLOCKWISE_BLOCK`` inputs, multiplied
    in int8 (``accuracy_level`` 4) with activations quantized per block of each token. The
    quantizer takes only MatMuls by a constant, so the products of two activations inside
    attention stay fp32 as in ``quantize_dynamic_int8``."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    int8_path = Path(int8_path)
    tmp = int8_path.with_name(f".{int8_path.name}.tmp")
    quantizer = MatMulNBitsQuantizer(
        str(fp32_path),
        bits=8,
        block_size=BLOCKWISE_BLOCK,
        is_symmetric=True,
        accuracy_level=4,
    )
    # It logs every node it visits at INFO; the worker's log has no use for that.
    quantizer_logger = logging.getLogger(MatMulNBitsQuantizer.__module__)
    level = quantizer_logger.level
    quantizer_logger.setLevel(logging.WARNING)
    try:
        quantizer.process()
    finally:
        quantizer_logger.setLevel(level)
    quantizer.model.save_model_to_file(str(tmp))
    os.replace(tmp, int8_path)
    return int8_path


QUANTIZERS: dict[Int8Scheme, Callable[[Path, Path], Path]] = {
    "dynamic": quantize_dynamic_int8,
    "blockwise": quantize_blockwise_int8,
}
"""How to write each int8 scheme's graph from the fp32 one."""


def int8_agreement(
    artifact_dir: Path, texts: Sequence[str], fp32_answers: Sequence[Prediction]
) -> float:
    """Share of ``texts`` on which the int8 graph predicts the same labels as the fp32 graph
    did (``fp32_answers``, one per text: computed once for every scheme tried)."""
    int8 = load_student(artifact_dir, "onnx").predict(list(texts))
    same = sum(a.labels == b.labels for a, b in zip(fp32_answers, int8, strict=True))
    return same / len(texts)


def export_onnx(
    artifact_dir: Path,
    quantize_int8: bool = True,
    *,
    check_texts: Sequence[str] = (),
    min_int8_agreement: float = 0.0,
) -> ExportResult:
    """Export an encoder student's network beside it as ``model.onnx`` and, when
    ``quantize_int8``, ``model.int8.onnx``.

    Without ``check_texts`` the int8 graph is the ``dynamic`` scheme's. With them, each scheme of
    ``INT8_SCHEMES`` is tried in turn and the first whose predictions agree with the fp32 graph's
    on at least ``min_int8_agreement`` of the texts is kept; when none does, no int8 graph is
    kept and the student serves the fp32 one (int8 flips predictions near a head's decision
    boundary: measured in bench/README.md, "int8 fidelity"). Best run on a staging directory
    before ``ModelRegistry.publish``; on a published artifact the ``checksums.json`` is rewritten
    to cover the files. ``ModelError`` for ngram students.
    """
    artifact_dir = Path(artifact_dir)
    manifest = StudentManifest.read(artifact_dir)
    if manifest.kind not in ENCODER_KINDS:
        raise ModelError(f"{manifest.kind!r} students have no network to export to ONNX")
    model, _ = load_student_model(artifact_dir, manifest)
    result = ExportResult(fp32=export_fp32(model, artifact_dir / ONNX_FILE))
    if quantize_int8:
        result = _keep_faithful_int8(artifact_dir, result.fp32, check_texts, min_int8_agreement)
    if (artifact_dir / CHECKSUMS_FILE).is_file():
        write_checksums(artifact_dir)
    return result


def _keep_faithful_int8(
    artifact_dir: Path, fp32: Path, check_texts: Sequence[str], min_agreement: float
) -> ExportResult:
    """Write the int8 graph of the fastest scheme that agrees with ``fp32`` on at least
    ``min_agreement`` of ``check_texts`` (``dynamic`` unchecked when there are none)."""
    int8 = artifact_dir / ONNX_INT8_FILE
    if not check_texts:
        return ExportResult(fp32, quantize_dynamic_int8(fp32, int8), "dynamic")
    fp32_answers = load_student(artifact_dir, "onnx-fp32").predict(list(check_texts))
    tried: dict[Int8Scheme, float] = {}
    for scheme in INT8_SCHEMES:
        QUANTIZERS[scheme](fp32, int8)
        tried[scheme] = int8_agreement(artifact_dir, check_texts, fp32_answers)
        if tried[scheme] >= min_agreement:
            return ExportResult(fp32, int8, scheme, tried[scheme])
    int8.unlink()
    logger.warning(
        "%s: no int8 graph agreed with fp32 on %.1f%% of %d texts (%s): serving fp32",
        artifact_dir,
        100 * min_agreement,
        len(check_texts),
        ", ".join(f"{scheme} {100 * agreement:.1f}%" for scheme, agreement in tried.items()),
    )
    return ExportResult(fp32, int8_agreement=max(tried.values()))
