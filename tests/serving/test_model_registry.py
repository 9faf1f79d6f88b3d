"""Atomic publishing, versioning and checksum verification of the model registry."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from understudy.errors import InvalidRequest, ModelError, NotFound
from understudy.processes import ProcessRef
from understudy.serving.artifact import StudentManifest
from understudy.serving.registry import ModelRegistry
from understudy.tasks import Head
from understudy.testing.tiny_models import write_tiny_student

HEADS = (Head("topic", ("a", "b")),)


def _stage(registry: ModelRegistry, key: str = "topics", seed: int = 0) -> Path:
    return write_tiny_student(registry.staging_dir(key), HEADS, task=key, seed=seed)


def test_publish_assigns_versions_and_hides_staging(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    assert registry.versions("topics") == [] and registry.latest("topics") is None
    staging = _stage(registry)
    assert registry.versions("topics") == []  # a staging directory is never a version
    assert registry.publish(staging, "topics") == "v1"
    assert not staging.exists()
    assert registry.publish(_stage(registry, seed=1), "topics") == "v2"
    assert registry.versions("topics") == ["v1", "v2"]
    assert (registry.path("topics", "v2") / "checksums.json").is_file()
    student = registry.load("topics", "v2", backend="torch")
    assert (student.task_key, student.version) == ("topics", "v2")
    assert student.predict(["hello"])[0].labels["topic"] in ("a", "b")
    with pytest.raises(NotFound):
        registry.path("topics", "v9")


def test_publish_from_another_directory_and_concurrently(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    elsewhere = write_tiny_student(tmp_path / "elsewhere", HEADS, task="topics")
    assert registry.publish(elsewhere, "topics") == "v1"
    stagings = [_stage(registry, seed=i) for i in range(6)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        versions = list(pool.map(lambda s: registry.publish(s, "topics"), stagings))
    assert sorted(versions, key=lambda v: int(v[1:])) == [f"v{i}" for i in range(2, 8)]
    assert registry.versions("topics") == [f"v{i}" for i in range(1, 8)]


def test_tampered_artifacts_are_refused(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    version = registry.publish(_stage(registry), "topics")
    path = registry.path("topics", version)
    registry.verify("topics", version)
    heads = path / "heads.safetensors"
    original = heads.read_bytes()
    heads.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(ModelError, match="corrupt"):
        registry.load("topics", version)
    heads.write_bytes(original)
    (path / "stray.txt").write_text("x")
    with pytest.raises(ModelError, match="extra"):
        registry.load("topics", version)
    (path / "stray.txt").unlink()
    (path / "encoder" / "vocab.txt").unlink()
    with pytest.raises(ModelError, match="missing"):
        registry.load("topics", version)


def test_refuses_incomplete_staging_and_unsafe_keys(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    with pytest.raises(ModelError, match=r"student\.json"):
        registry.publish(registry.staging_dir("topics"), "topics")
    for key in ("../escape", ".hidden", "a/b", ""):
        with pytest.raises(InvalidRequest):
            registry.staging_dir(key)


def test_newest_of_kind_passes_over_other_kinds_task_versions_and_broken_artifacts(
    tmp_path: Path,
) -> None:
    registry = ModelRegistry(tmp_path / "models")
    assert registry.newest_of_kind("topics", 1, "finetune") is None
    for kind in ("finetune", "finetune", "distill"):
        staging = write_tiny_student(
            registry.staging_dir("topics"), HEADS, task="topics", kind=kind
        )
        registry.publish(staging, "topics")
    newer_task = write_tiny_student(registry.staging_dir("topics"), HEADS, task="topics")
    manifest = StudentManifest.read(newer_task)
    dataclasses.replace(manifest, task_version=2).write(newer_task)
    registry.publish(newer_task, "topics")  # v4, for task version 2

    assert registry.newest_of_kind("topics", 1, "finetune") == registry.path("topics", "v2")
    assert registry.newest_of_kind("topics", 2, "finetune") == registry.path("topics", "v4")
    assert registry.newest_of_kind("topics", 1, "probe") is None
    (registry.path("topics", "v2") / "heads.safetensors").write_bytes(b"tampered")
    assert registry.newest_of_kind("topics", 1, "finetune") == registry.path("topics", "v1")


def test_discard_staging_keeps_what_a_live_command_writes(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    exited = subprocess.Popen(["true"])
    exited.wait()
    here = socket.gethostname()
    live = registry.staging_dir("topics", owner=ProcessRef.current())
    elsewhere = registry.staging_dir("topics", owner=ProcessRef(1, f"not-{here}"))
    dead = registry.staging_dir("topics", owner=ProcessRef(exited.pid, here))
    workers = registry.staging_dir("topics")
    assert registry.discard_staging() == 2
    assert live.is_dir() and elsewhere.is_dir()
    assert not dead.exists() and not workers.exists()
    # What a command stages publishes like any other artifact.
    staged = write_tiny_student(live, HEADS, task="topics")
    assert registry.publish(staged, "topics") == "v1"
