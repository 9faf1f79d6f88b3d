"""The versioned student registry: ``<models_dir>/<task_key>/v<N>/``, published atomically.

A trainer writes into ``staging_dir(task_key)`` (a hidden temporary directory beside the versions,
so on the same file system); ``publish`` writes ``checksums.json`` and renames the directory to
the next free version in one ``rename`` call, so readers never see a half-written artifact.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from understudy.errors import InvalidRequest, ModelError, NotFound
from understudy.processes import ProcessRef
from understudy.serving.artifact import STUDENT_FILE, StudentManifest
from understudy.serving.checksums import verify_checksums, write_checksums
from understudy.serving.loader import Backend, load_student
from understudy.serving.student import Student

_VERSION = re.compile(r"v(\d+)")
_TASK_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_STAGING_PREFIX = ".staging-"
_STAGING_OWNER = re.compile(re.escape(_STAGING_PREFIX) + r"(\d+)\+(.+)\+")
_MAX_PUBLISH_ATTEMPTS = 100


def _staging_owner_may_be_alive(staging: Path) -> bool:
    owner = _STAGING_OWNER.match(staging.name)
    return owner is not None and ProcessRef(int(owner[1]), owner[2]).may_be_alive()


def version_name(number: int) -> str:
    """The directory name of version ``number`` (``v1``, ``v2``, ...)."""
    return f"v{number}"


class ModelRegistry:
    """Student artifacts of every task under ``models_dir`` (``Settings.models_dir``)."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir)

    def task_dir(self, task_key: str) -> Path:
        """Directory of a task's versions; ``InvalidRequest`` for a key unsafe as a directory."""
        if not _TASK_KEY.fullmatch(task_key) or task_key in {".", ".."}:
            raise InvalidRequest(f"task key {task_key!r} cannot name a model directory")
        return self.models_dir / task_key

    def staging_dir(self, task_key: str, *, owner: ProcessRef | None = None) -> Path:
        """A fresh, empty directory to write a new artifact into before ``publish``. An ``owner``
        (a command beside the worker: ``understudy train``) is named in it, so that
        ``discard_staging`` leaves it alone while that process lives."""
        parent = self.task_dir(task_key)
        parent.mkdir(parents=True, exist_ok=True)
        prefix = _STAGING_PREFIX if owner is None else f"{_STAGING_PREFIX}{owner.pid}+{owner.host}+"
        return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))

    def versions(self, task_key: str) -> list[str]:
        """Published versions of a task, oldest first (empty when none)."""
        parent = self.task_dir(task_key)
        if not parent.is_dir():
            return []
        numbers = [
            int(m.group(1))
            for p in parent.iterdir()
            if p.is_dir() and (m := _VERSION.fullmatch(p.name))
        ]
        return [version_name(n) for n in sorted(numbers)]

    def latest(self, task_key: str) -> str | None:
        """The newest published version of a task, or None."""
        versions = self.versions(task_key)
        return versions[-1] if versions else None

    def newest_of_kind(self, task_key: str, task_version: int, kind: str) -> Path | None:
        """The newest published, intact artifact of ``kind`` for a task version, or None
        (versions whose manifest or checksums do not verify are passed over)."""
        for version in reversed(self.versions(task_key)):
            path = self.task_dir(task_key) / version
            try:
                manifest = StudentManifest.read(path)
                if manifest.kind == kind and manifest.task_version == task_version:
                    verify_checksums(path)
                    return path
            except ModelError:
                continue
        return None

    def path(self, task_key: str, version: str) -> Path:
        """Directory of a published version; ``NotFound`` if it does not exist."""
        path = self.task_dir(task_key) / version
        if not _VERSION.fullmatch(version) or not path.is_dir():
            raise NotFound(f"no student {task_key!r} version {version!r} in {self.models_dir}")
        return path

    def publish(self, staging: Path, task_key: str) -> str:
        """Publish a written artifact as the task's next version and return the version.

        Writes ``checksums.json`` and renames ``staging`` into place. A staging directory elsewhere
        (another file system) is first moved into the task directory. Safe against concurrent
        publishers: a rename onto a version that appeared meanwhile fails and the next is tried.
        """
        staging = Path(staging)
        if not (staging / STUDENT_FILE).is_file():
            raise ModelError(f"{staging} is not a complete artifact (no {STUDENT_FILE})")
        parent = self.task_dir(task_key)
        parent.mkdir(parents=True, exist_ok=True)
        if staging.resolve().parent != parent.resolve():
            local = self.staging_dir(task_key)
            os.rmdir(local)
            shutil.move(str(staging), str(local))
            staging = local
        write_checksums(staging)
        for _ in range(_MAX_PUBLISH_ATTEMPTS):
            latest = self.latest(task_key)
            number = int(latest[1:]) + 1 if latest else 1
            target = parent / version_name(number)
            try:
                # rename() of a directory onto an existing non-empty directory fails, so two
                # publishers can never both claim the same version.
                os.rename(staging, target)
            except OSError:
                if target.exists():
                    continue
                raise
            return version_name(number)
        raise ModelError(f"could not claim a version for {task_key!r} in {parent}")

    def discard_staging(self) -> int:
        """Delete staging directories left by a writer that died; returns how many.

        Call only when no worker is writing (the worker does when it takes the worker lock).
        Directories of an owner that may still be alive (``staging_dir(owner=...)``) are kept.
        """
        if not self.models_dir.is_dir():
            return 0
        leftovers = [
            staging
            for task_dir in self.models_dir.iterdir()
            if task_dir.is_dir()
            for staging in task_dir.glob(f"{_STAGING_PREFIX}*")
            if not _staging_owner_may_be_alive(staging)
        ]
        for staging in leftovers:
            shutil.rmtree(staging, ignore_errors=True)
        return len(leftovers)

    def verify(self, task_key: str, version: str) -> None:
        """Check a published version against its ``checksums.json`` (``ModelError`` if not)."""
        verify_checksums(self.path(task_key, version))

    def load(
        self, task_key: str, version: str, backend: Backend = "auto", *, threads: int | None = None
    ) -> Student:
        """Load a published version as a ``Student`` after verifying its checksums."""
        path = self.path(task_key, version)
        verify_checksums(path)  # required here: every published version has checksums
        return load_student(path, backend, threads=threads, version=version)
