"""SHA-256 checksums of every file of an artifact, written at publish and verified on load."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from understudy.errors import ModelError
from understudy.serving.artifact import CHECKSUMS_FILE

_CHUNK_BYTES = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_files(artifact_dir: Path) -> list[str]:
    """Paths (POSIX, relative to ``artifact_dir``) of all its files except ``checksums.json``."""
    root = Path(artifact_dir)
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).as_posix() != CHECKSUMS_FILE
    )


def write_checksums(artifact_dir: Path) -> Path:
    """Write ``checksums.json`` (``{"sha256": {relative path: hex}}``) atomically; returns it."""
    root = Path(artifact_dir)
    sums = {name: sha256_file(root / name) for name in artifact_files(root)}
    target = root / CHECKSUMS_FILE
    tmp = root / f".{CHECKSUMS_FILE}.tmp"
    tmp.write_text(json.dumps({"sha256": sums}, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, target)  # atomic: a reader sees the old or the new file, never half of one
    return target


def verify_checksums(artifact_dir: Path) -> None:
    """Check every file against ``checksums.json``: same set of files, same hashes.

    Raises ``ModelError`` naming the first difference (missing checksums file, missing, extra or
    altered file).
    """
    root = Path(artifact_dir)
    try:
        recorded = json.loads((root / CHECKSUMS_FILE).read_text())["sha256"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelError(f"{root} has no readable {CHECKSUMS_FILE}: {exc!r}") from exc
    present = artifact_files(root)
    missing = sorted(set(recorded) - set(present))
    extra = sorted(set(present) - set(recorded))
    if missing or extra:
        raise ModelError(
            f"{root} does not match {CHECKSUMS_FILE}: missing {missing}, extra {extra}"
        )
    for name in present:
        if sha256_file(root / name) != recorded[name]:
            raise ModelError(f"{root / name} is corrupt: its SHA-256 differs from {CHECKSUMS_FILE}")
