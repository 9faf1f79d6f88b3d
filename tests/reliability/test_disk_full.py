"""A gateway whose files cannot grow (``RLIMIT_FSIZE``, the way a full disk fails writes) refuses
the call it cannot journal with a clean 503, keeps answering once a write succeeds again, and
loses none of the calls it answered, even when killed while the database cannot be written.

Real subprocesses and SQLite in a temp dir (marked ``reliability``).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import openai
import pytest
from reliability_support import GatewayProcess, sentiment_request

from understudy.errors import UnknownRequest
from understudy.settings import Settings
from understudy.store import open_store

pytestmark = pytest.mark.reliability

MAX_FILE_BYTES = 2 * 1024 * 1024
# Each call is journaled (and stored) with its text about three times: a handful fill a file.
BIG_TEXT = "good " * 12_000
CALLS = 40


def test_a_call_that_cannot_be_journaled_gets_a_503_and_no_answered_call_is_lost(
    settings: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "gateway.log"
    # Unlimited first: the database is created and the task's template learned.
    warm = GatewayProcess(settings, log)
    client = openai.OpenAI(base_url=f"{warm.url}/v1", api_key="k", max_retries=0)
    for i in range(settings.template_min_calls + 1):
        client.chat.completions.create(**sentiment_request(f"good warm-up {i}"))
    warm.kill(signal.SIGTERM)

    limited = GatewayProcess(settings, log, max_file_bytes=MAX_FILE_BYTES)
    client = openai.OpenAI(base_url=f"{limited.url}/v1", api_key="k", max_retries=0, timeout=30)
    answered: list[str] = []
    refused: list[openai.APIStatusError] = []
    for i in range(CALLS):
        try:
            raw = client.chat.completions.with_raw_response.create(
                **sentiment_request(f"{i} {BIG_TEXT}")
            )
        except openai.APIStatusError as error:
            refused.append(error)
            continue
        assert json.loads(raw.parse().choices[0].message.content or "") == {"sentiment": "positive"}
        answered.append(raw.headers["x-understudy-request-id"])
    limited.kill()  # kill -9 while the database cannot take the calls either

    assert refused, "no write failed: raise BIG_TEXT or CALLS"
    for error in refused:
        assert error.status_code == 503
        body = error.response.json()["error"]
        assert body["code"] == "call_log_unavailable"
        assert "could not record this call" in body["message"]
    assert len(answered) + len(refused) == CALLS
    assert len(answered) > len(refused)  # after a failed write the next call starts a new file

    restarted = GatewayProcess(settings, log)  # space again: the journals are replayed
    restarted.kill(signal.SIGTERM)
    store = open_store(settings)
    for request_id in answered:
        assert store.get_call(request_id).status_code == 200
    for error in refused:
        with pytest.raises(UnknownRequest):  # refused, so never logged as answered
            store.get_call(error.response.headers["x-understudy-request-id"])
    store.close()
    assert "writing the journal" in log.read_text(errors="replace")
