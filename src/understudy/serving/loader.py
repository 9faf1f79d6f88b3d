"""Load a student artifact directory as a ``Student``, dispatching on its kind and backend."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from understudy.errors import ModelError
from understudy.serving.artifact import (
    CHECKSUMS_FILE,
    ONNX_FILE,
    ONNX_INT8_FILE,
    StudentManifest,
)
from understudy.serving.checksums import verify_checksums
from understudy.serving.student import Student

Backend = Literal["torch", "onnx", "onnx-fp32", "auto"]
BACKENDS: tuple[Backend, ...] = ("torch", "onnx", "onnx-fp32", "auto")


def load_student(
    artifact_dir: Path,
    backend: Backend = "auto",
    *,
    threads: int | None = None,
    version: str | None = None,
) -> Student:
    """The student in ``artifact_dir``.

    ``backend`` picks how encoder students run: ``"onnx"`` = ``model.int8.onnx``, ``"onnx-fp32"``
    = ``model.onnx``, ``"torch"`` = PyTorch fp32, ``"auto"`` = int8 ONNX when exported, else fp32
    ONNX when exported, else torch (ngram students ignore it). ``threads`` caps intra-op
    threads (None = library default).
    ``checksums.json``, when present (every published artifact), is verified first. ``version``
    defaults to the directory's name. Raises ``ModelError`` for a missing, corrupt or unknown
    artifact.
    """
    artifact_dir = Path(artifact_dir)
    if backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if (artifact_dir / CHECKSUMS_FILE).is_file():
        verify_checksums(artifact_dir)
    manifest = StudentManifest.read(artifact_dir)
    version = version or artifact_dir.name
    # Backends import lazily so that loading an ngram student never imports torch.
    if manifest.kind == "ngram":
        from understudy.serving.ngram_backend import NgramStudent

        return NgramStudent(artifact_dir, manifest, version)
    int8, fp32 = artifact_dir / ONNX_INT8_FILE, artifact_dir / ONNX_FILE
    if backend == "auto":
        backend = "onnx" if int8.is_file() else "onnx-fp32" if fp32.is_file() else "torch"
    if backend == "torch":
        from understudy.serving.torch_backend import TorchStudent

        return TorchStudent(artifact_dir, manifest, version, threads=threads)
    from understudy.serving.onnx_backend import OnnxStudent

    model_path = int8 if backend == "onnx" else fp32
    if not model_path.is_file():
        raise ModelError(f"{artifact_dir} has no {model_path.name}; export it with export_onnx")
    return OnnxStudent(artifact_dir, manifest, version, model_path, threads=threads)
