"""The whole switch loop with the real openai client: shadow -> cascade -> student by policy,
schema-valid student answers (plain and streamed), audits, and rollback when the teacher drifts.

The worker's passes are run explicitly between phases (``Worker.run_once``), so the test decides
when training and policy happen; everything else is the real gateway over HTTP.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from typer.testing import CliRunner

from understudy.cli import app
from understudy.routing import Mode
from understudy.savings import task_savings
from understudy.settings import Settings
from understudy.store import Store, open_store
from understudy.testing.fake_teacher import FakeTeacher, run_fake_teacher
from understudy.testing.gateway import run_gateway
from understudy.worker import Worker

POSITIVE = ["great", "wonderful", "superb", "delightful", "moving", "brilliant"]
NEGATIVE = ["awful", "boring", "dreadful", "tedious", "clumsy", "lifeless"]
FILLER = ["the", "film", "plot", "acting", "story", "was", "really", "quite", "ending", "cast"]
PROMPT = "Classify the sentiment of this review.\n\nReview: "
SCHEMA = {
    "type": "object",
    "properties": {"sentiment": {"type": "string", "enum": ["negative", "positive"]}},
    "required": ["sentiment"],
    "additionalProperties": False,
}
RESPONSE_FORMAT: Any = {
    "type": "json_schema",
    "json_schema": {"name": "review", "schema": SCHEMA, "strict": True},
}


def keyword_label(text: str) -> str:
    return "positive" if any(word in text.split() for word in POSITIVE) else "negative"


def honest(schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {"sentiment": keyword_label(text)}


def drifted(schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {"sentiment": "negative" if keyword_label(text) == "positive" else "positive"}


def reviews(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        words = [*rng.sample(FILLER, 5), rng.choice(rng.choice([POSITIVE, NEGATIVE]))]
        rng.shuffle(words)
        texts.append(" ".join(words))
    return texts


def poll(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def teacher() -> FakeTeacher:
    return FakeTeacher(honest, seed=3)


@pytest.fixture(scope="module")
def settings(teacher: FakeTeacher, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with run_fake_teacher(teacher) as url:
        yield Settings(
            upstream_base_url=url,
            data_dir=Path(tmp_path_factory.mktemp("switch")),
            heldout_fraction=0.5,
            first_train_labels=100,
            min_heldout_for_switch=100,
            # cascade -> student needs the live lower bound at the target: at 0.95, one or two
            # confidently wrong answers among the 70-90 audits (the ngram student is near perfect,
            # not perfect) put it below and, once in CI, the move did not happen; 0.9 tolerates a
            # few, and the drifted teacher still drives agreement far below it.
            target_agreement=0.9,
            min_live_for_rollback=20,
            # Request ids (and so the held-out split) are random: keep the evidence bars clear of
            # run-to-run noise, and train once so the live window stays with that one student.
            full_coverage_for_student=0.9,
            retrain_growth=100.0,
            student_kinds=["ngram"],
            template_min_calls=10,
            model_refresh_s=0.05,
        )


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[openai.OpenAI]:
    with run_gateway(settings) as url:
        yield openai.OpenAI(base_url=url, api_key="test", max_retries=0)


@pytest.fixture(scope="module")
def store(settings: Settings, client: openai.OpenAI) -> Store:
    return open_store(settings)


def ask(client: openai.OpenAI, text: str, **extra: Any) -> tuple[dict[str, Any], Any]:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": PROMPT + text}],
        response_format=RESPONSE_FORMAT,
        **extra,
    )
    completion = raw.parse()
    return {"completion": completion, "headers": raw.headers}, json.loads(
        completion.choices[0].message.content or "{}"
    )


def answered_by(client: openai.OpenAI, texts: list[str]) -> list[str]:
    sides = []
    for text in texts:
        result, answer = ask(client, text)
        assert answer["sentiment"] in ("negative", "positive")
        sides.append(result["headers"]["x-understudy-answered-by"])
    return sides


def mode_moves(worker: Worker) -> list[str]:
    """The mode changes of one worker pass (retraining may happen too: audits add labels)."""
    return [a.what for a in worker.run_once() if a.what.startswith("mode")]


def audited(store: Store) -> int:
    return sum(1 for call in store.recent_calls("review", limit=10_000) if call.agreed is not None)


def test_shadow_to_cascade_to_student_and_back_on_drift(
    client: openai.OpenAI, store: Store, settings: Settings, teacher: FakeTeacher
) -> None:
    worker = Worker(settings, store)

    # Shadow: the teacher answers everything while labels accumulate.
    assert set(answered_by(client, reviews(260, seed=1))) == {"teacher"}
    assert store.task_state("review").mode is Mode.SHADOW

    # The worker trains, publishes v1, and the held-out evidence moves the task to cascade.
    assert [a.what for a in worker.run_once()] == ["promoted", "mode shadow -> cascade"]
    store.update_task_state("review", audit_rate=1.0, reason="audit every call in this test")

    # The gateway hot-swaps to v1; confident calls are now answered by the student. The
    # threshold comes from a random held-out split, so any one text may fall just under it (once
    # in CI the single probe did): the probe is the first of ten texts the student answers.
    candidates = reviews(10, seed=2)
    probe_sides: list[str] = []

    def student_answers_one() -> bool:
        probe_sides[:] = answered_by(client, candidates)
        return "student" in probe_sides

    poll(student_answers_one, "the student to answer")
    probe = candidates[probe_sides.index("student")]
    result, answer = ask(client, probe)
    completion = result["completion"]
    assert completion.model == "understudy/review@v1"
    assert completion.usage.prompt_tokens == completion.usage.completion_tokens == 0
    assert answer == {"sentiment": keyword_label(probe)}
    assert 0.0 < float(result["headers"]["x-understudy-confidence"]) <= 1.0

    # Streaming requests get a valid stream with the same answer.
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": PROMPT + probe}],
        response_format=RESPONSE_FORMAT,
        stream=True,
    )
    content = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert json.loads(content) == answer

    # Audits of the student's answers agree with the honest teacher: cascade -> student.
    sides = answered_by(client, reviews(90, seed=4))
    assert sides.count("student") > 70
    poll(lambda: audited(store) >= 70, "audits to be recorded")
    assert mode_moves(worker) == ["mode cascade -> student"]

    # The teacher drifts (its labels flip): audits disagree and the task rolls back.
    teacher.label_fn = drifted
    try:
        before = audited(store)
        assert set(answered_by(client, reviews(25, seed=5))) == {"student"}
        poll(lambda: audited(store) >= before + 25, "drifted audits")
        actions = [a for a in worker.run_once() if a.what.startswith("mode")]
        assert [a.what for a in actions] == ["mode student -> cascade"]
        assert "fell below target" in actions[0].detail
        before = audited(store)
        answered_by(client, reviews(25, seed=6))
        poll(lambda: audited(store) >= before + 25, "more drifted audits")
        assert mode_moves(worker) == ["mode cascade -> shadow"]
    finally:
        teacher.label_fn = honest

    poll(lambda: answered_by(client, [probe]) == ["teacher"], "the teacher to answer again")
    modes = [(e.from_mode, e.to_mode) for e in reversed(store.events("review")) if e.kind == "mode"]
    assert modes == [
        ("shadow", "cascade"),
        ("cascade", "student"),
        ("student", "cascade"),
        ("cascade", "shadow"),
    ]


def test_classify_answers_from_the_serving_student(
    client: openai.OpenAI, store: Store, settings: Settings
) -> None:
    """Runs after the loop above: the task has a serving student (back in shadow mode)."""
    base = str(client.base_url).rstrip("/")
    texts = reviews(3, seed=9)
    with httpx.Client(base_url=base, timeout=10) as http:
        one = http.post("/classify", json={"task": "review", "text": texts[0]})
        batch = http.post("/classify", json={"task": "review", "texts": texts})
        unknown = http.post("/classify", json={"task": "nope", "text": "x"})
        both = http.post("/classify", json={"task": "review", "text": "x", "texts": ["y"]})
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["task"] == "review" and body["student_version"].startswith("v")
    result = body["results"][0]
    assert result["labels"] == {"sentiment": keyword_label(texts[0])}
    assert set(result["probabilities"]["sentiment"]) == {"negative", "positive"}
    assert result["confident"] == (result["confidence"] >= body["threshold"])
    assert [r["labels"]["sentiment"] for r in batch.json()["results"]] == [
        keyword_label(text) for text in texts
    ]
    assert store.get_call(result["request_id"]).answered_by == "student"
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_task"
    assert both.status_code == 400 and "exactly one" in both.json()["error"]["message"]


def test_savings_count_the_teacher_calls_the_student_avoided(store: Store) -> None:
    """Runs after the loop above, which had the student answer part of the traffic."""

    def all_audited() -> bool:
        savings = task_savings(store, "review", {})
        return savings.audited_calls == savings.student_calls

    poll(all_audited, "the last audits to land")
    unpriced = task_savings(store, "review", {})
    assert unpriced.student_calls > 100 and unpriced.teacher_calls > 200
    assert unpriced.avoided_cost_usd is None and unpriced.teacher_cost_usd is None
    priced = task_savings(store, "review", {"fake": [1.0, 2.0]})
    assert priced.teacher_cost_usd is not None and priced.teacher_cost_usd > 0
    # Every student answer in this test was audited, so nothing was saved net of audits.
    assert priced.audited_calls == priced.student_calls
    assert priced.avoided_tokens == 0 and priced.avoided_cost_usd == 0.0


def test_savings_command_prints_each_task(settings: Settings, store: Store) -> None:
    result = CliRunner().invoke(
        app, ["savings"], env={"UNDERSTUDY_DATA_DIR": str(settings.data_dir), "COLUMNS": "150"}
    )
    assert result.exit_code == 0, result.output
    saved = task_savings(store, "review", settings.model_prices)
    row = next(line for line in result.output.splitlines() if "review" in line)
    assert str(saved.teacher_calls) in row and str(saved.student_calls) in row
