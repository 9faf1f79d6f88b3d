"""train_and_publish from the gateway's store: held-out calls evaluate, the run is logged."""

from __future__ import annotations

import json
import random
from pathlib import Path

from understudy.serving.registry import ModelRegistry
from understudy.settings import Settings
from understudy.store import CallKind, CallRecord, open_store
from understudy.tasks import LabelSource, detect_task
from understudy.training.workflow import task_data, train_and_publish
from worker_support import REQUEST

WORDS = {"positive": ["great", "wonderful", "superb"], "negative": ["awful", "boring", "dreadful"]}
FILLER = ["the", "film", "plot", "acting", "story", "was", "really", "quite", "ending", "cast"]


def test_train_and_publish_uses_the_stores_heldout_split_and_logs_the_run(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, heldout_fraction=0.3)
    store = open_store(settings)
    spec = detect_task(REQUEST)
    assert spec is not None
    task = store.register_task(spec)
    rng = random.Random(0)
    for i in range(200):
        label = rng.choice(sorted(WORDS))
        words = [*rng.sample(FILLER, 5), rng.choice(WORDS[label])]
        store.record_call(
            CallRecord(
                id=f"call-{i}",
                kind=CallKind.CLASSIFICATION,
                request=REQUEST,
                response={},
                status_code=200,
                task=task,
                user_text=" ".join(words),
                input_text=" ".join(words),
                labels={"sentiment": label},
                label_source=LabelSource.TEACHER,
                answered_by="teacher",
            )
        )

    data = task_data("review", settings, data=None, store=store)
    assert 30 < len(data.heldout) < 100 and len(data.train) + len(data.heldout) == 200
    published = train_and_publish(
        "ngram", data, ModelRegistry(settings.models_dir), target_agreement=0.9, store=store
    )

    assert published.version == "v1" and published.report is not None
    assert published.report.agreement >= 0.95
    metrics = json.loads((published.path / "metrics.json").read_text())
    assert metrics["heldout"]["n"] == len(data.heldout)
    (run,) = store.student_runs("review")
    assert run.status == "succeeded" and run.version == "v1" and run.kind == "ngram"
    assert run.metrics is not None and run.metrics["train_size"] == len(data.train)
