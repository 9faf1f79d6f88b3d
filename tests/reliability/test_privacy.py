"""Privacy: configured patterns are redacted before storage (the teacher still sees the
original), and retention purges old raw bodies while keeping labels and training texts."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
from reliability_support import sentiment_request
from typer.testing import CliRunner

from understudy.cli import app as cli_app
from understudy.privacy import Redactor, purge_raw_bodies
from understudy.settings import Settings
from understudy.store import CallKind, CallRecord, Store, open_store
from understudy.store.tables import utcnow
from understudy.tasks import LabelSource, detect_task
from understudy.testing.fake_teacher import FakeTeacher
from understudy.testing.gateway import run_gateway

PRIVATE = "write to jane.doe@example.co.uk or call +1 (555) 123-4567"


def test_default_patterns_catch_emails_and_phone_numbers() -> None:
    redactor = Redactor(Settings().redact_patterns)
    assert redactor.text(PRIVATE) == "write to [EMAIL] or call [PHONE]"
    assert redactor.text("order 12345 shipped in v2.0 on 2024-01-02") == (
        "order 12345 shipped in v2.0 on 2024-01-02"
    )
    nested = {"messages": [{"content": PRIVATE, "n": 3}], "ok": True}
    assert redactor.value(nested) == {
        "messages": [{"content": "write to [EMAIL] or call [PHONE]", "n": 3}],
        "ok": True,
    }


def test_redaction_applies_before_storage_only(settings: Settings, teacher: FakeTeacher) -> None:
    redacting = settings.model_copy(update={"redact": True})
    with run_gateway(redacting) as url:
        classified = httpx.post(f"{url}/chat/completions", json=sentiment_request(PRIVATE))
        echoed = httpx.post(
            f"{url}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": PRIVATE}]},
        )
    assert classified.status_code == echoed.status_code == 200
    assert teacher.requests[-1]["messages"][0]["content"] == PRIVATE
    assert PRIVATE in echoed.text  # the caller gets the teacher's answer unchanged
    store = open_store(redacting)
    for response in (classified, echoed):
        call = store.get_call(response.headers["x-understudy-request-id"])
        assert call.user_text == "write to [EMAIL] or call [PHONE]"
        assert call.request is not None
        assert call.request["messages"][0]["content"] == "write to [EMAIL] or call [PHONE]"
    echo_call = store.get_call(echoed.headers["x-understudy-request-id"])
    assert echo_call.response is not None
    assert "[EMAIL]" in echo_call.response["choices"][0]["message"]["content"]
    database = Path(store.engine.url.database or "")
    store.close()
    raw = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    assert b"jane.doe" not in raw and b"123-4567" not in raw


def _old_and_new_calls(store: Store) -> None:
    spec = detect_task(sentiment_request("x"))
    assert spec is not None
    task = store.register_task(spec)
    old = utcnow() - timedelta(days=40)
    for call_id, created, kind in [
        ("old-labelled", old, CallKind.CLASSIFICATION),
        ("old-passthrough", old, CallKind.PASSTHROUGH),
        ("new-labelled", utcnow(), CallKind.CLASSIFICATION),
    ]:
        labelled = kind is CallKind.CLASSIFICATION
        store.record_call(
            CallRecord(
                id=call_id,
                kind=kind,
                request={"messages": [{"role": "user", "content": f"good {call_id}"}]},
                response={"choices": []},
                status_code=200,
                task=task if labelled else None,
                user_text=f"good {call_id}",
                input_text=f"good {call_id}",
                labels={"sentiment": "positive"} if labelled else None,
                label_source=LabelSource.TEACHER if labelled else None,
                created_at=created,
            )
        )


def test_retention_purges_raw_bodies_and_keeps_training_data(settings: Settings) -> None:
    store = open_store(settings)
    _old_and_new_calls(store)
    report = purge_raw_bodies(store, older_than_days=30)
    assert report.calls == 2
    old, passthrough, new = (
        store.get_call(i) for i in ("old-labelled", "old-passthrough", "new-labelled")
    )
    assert (old.request, old.response, passthrough.request, passthrough.response) == (None,) * 4
    assert old.user_text == "good old-labelled" and passthrough.user_text is None
    assert new.request is not None and new.response is not None
    examples = store.examples("sentiment")
    assert sorted(e.text for e in examples) == ["good new-labelled", "good old-labelled"]
    assert purge_raw_bodies(store, older_than_days=30).calls == 0  # idempotent
    store.close()


def test_purge_command(settings: Settings) -> None:
    store = open_store(settings)
    _old_and_new_calls(store)
    store.close()
    env = {"UNDERSTUDY_DATA_DIR": str(settings.data_dir)}
    runner = CliRunner()
    assert runner.invoke(cli_app, ["purge"], env=env).exit_code == 2  # no retention configured
    purged = runner.invoke(cli_app, ["purge", "--days", "30"], env=env)
    assert purged.exit_code == 0 and "purged the raw bodies of 2 calls" in purged.stdout
