"""The gateway driven by the real ``openai`` client against the shipped fake teacher."""

from __future__ import annotations

import json
from typing import Any, Literal

import httpx
import openai
import pytest
from gateway_support import SENTIMENT_SCHEMA, sentiment_format
from pydantic import BaseModel

from understudy.settings import Settings
from understudy.store import CallKind, Store, open_store
from understudy.tasks import LabelSource
from understudy.testing.fake_teacher import FakeTeacher
from understudy.testing.gateway import run_gateway


@pytest.fixture(scope="module")
def client(gateway_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway_url, api_key="test-key", max_retries=0)


@pytest.fixture(scope="module")
def direct(teacher_url: str) -> openai.OpenAI:
    """A client talking to the fake teacher without the gateway, for comparison."""
    return openai.OpenAI(base_url=teacher_url, api_key="test-key", max_retries=0)


def _messages(text: str) -> list[Any]:
    return [
        {"role": "system", "content": "You label movie reviews."},
        {"role": "user", "content": f"Film review:\n{text}\nLabel it."},
    ]


def test_classification_call_matches_teacher_and_is_logged(
    client: openai.OpenAI, direct: openai.OpenAI, store: Store
) -> None:
    kwargs: Any = {"model": "gpt-x", "messages": _messages("a good film!")}
    raw = client.chat.completions.with_raw_response.create(
        response_format=sentiment_format(), **kwargs
    )
    via_gateway = raw.parse()
    expected = direct.chat.completions.create(response_format=sentiment_format(), **kwargs)
    assert via_gateway.choices[0].message == expected.choices[0].message
    assert via_gateway.usage == expected.usage
    assert via_gateway.model == expected.model == "fake-teacher"
    assert json.loads(via_gateway.choices[0].message.content or "") == {
        "sentiment": "positive",
        "sarcastic": True,
    }
    request_id = raw.headers["x-understudy-request-id"]
    assert raw.headers["x-understudy-answered-by"] == "teacher"

    call = store.get_call(request_id)
    assert (call.kind, call.task_key, call.task_version) == (
        CallKind.CLASSIFICATION,
        "sentiment",
        1,
    )
    assert call.labels == {"sentiment": "positive", "sarcastic": "true"}
    assert call.status_code == 200 and call.teacher_model == "fake-teacher"
    assert expected.usage is not None and call.prompt_tokens == expected.usage.prompt_tokens
    assert call.user_text == "Film review:\na good film!\nLabel it."
    assert call.request is not None and call.request["messages"] == kwargs["messages"]
    assert call.latency_ms is not None and call.latency_ms > 0
    task = store.get_task("sentiment")
    assert [(h.name, h.labels) for h in task.heads] == [
        ("sentiment", ("negative", "neutral", "positive")),
        ("sarcastic", ("false", "true")),
    ]


def test_logprobs_become_soft_labels(client: openai.OpenAI, store: Store) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-x",
        messages=_messages("bad"),
        response_format=sentiment_format(),
        logprobs=True,
        top_logprobs=3,
    )
    call = store.get_call(raw.headers["x-understudy-request-id"])
    assert call.soft_labels is not None
    sentiment = call.soft_labels["sentiment"]
    assert set(sentiment) == {"negative", "neutral", "positive"}
    assert max(sentiment, key=sentiment.__getitem__) == "negative"
    assert sum(sentiment.values()) == pytest.approx(1.0)


def test_streaming_is_passed_through_and_logged(client: openai.OpenAI, store: Store) -> None:
    stream = client.chat.completions.with_raw_response.create(
        model="gpt-x",
        messages=_messages("good"),
        response_format=sentiment_format(),
        stream=True,
        stream_options={"include_usage": True},
    )
    request_id = stream.headers["x-understudy-request-id"]
    chunks = list(stream.parse())
    assert len(chunks) > 3  # forwarded chunk by chunk, not re-packed
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(content) == {"sentiment": "positive", "sarcastic": False}
    # The call is committed before the stream's final event reaches the client.
    call = store.get_call(request_id)
    assert call.stream and call.labels == {"sentiment": "positive", "sarcastic": "false"}
    assert call.completion_tokens is not None and call.completion_tokens > 0


async def test_async_client_plain_and_streaming(gateway_url: str, store: Store) -> None:
    client = openai.AsyncOpenAI(base_url=gateway_url, api_key="k", max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-x", messages=_messages("bad!"), response_format=sentiment_format()
    )
    completion = raw.parse()
    assert json.loads(completion.choices[0].message.content or "") == {
        "sentiment": "negative",
        "sarcastic": True,
    }
    assert store.get_call(raw.headers["x-understudy-request-id"]).labels == {
        "sentiment": "negative",
        "sarcastic": "true",
    }
    stream = await client.chat.completions.create(
        model="gpt-x", messages=_messages("so-so"), response_format=sentiment_format(), stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert json.loads("".join(pieces))["sentiment"] == "neutral"
    await client.close()


def test_parse_with_pydantic_model(client: openai.OpenAI, store: Store) -> None:
    class Review(BaseModel):
        sentiment: Literal["negative", "neutral", "positive"]
        summary: str

    completion = client.chat.completions.parse(
        model="gpt-x", messages=_messages("good"), response_format=Review
    )
    parsed = completion.choices[0].message.parsed
    assert parsed is not None and parsed.sentiment == "positive"
    task = store.get_task("Review")
    assert [h.name for h in task.heads] == ["sentiment"]
    assert task.required_free_text_fields == ("summary",)
    assert not task.student_can_answer


def test_forced_tool_call_is_a_classification_call(client: openai.OpenAI, store: Store) -> None:
    tool: Any = {
        "type": "function",
        "function": {"name": "label_review", "parameters": SENTIMENT_SCHEMA},
    }
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-x",
        messages=_messages("good"),
        tools=[tool],
        tool_choice={"type": "function", "function": {"name": "label_review"}},
    )
    [tool_call] = raw.parse().choices[0].message.tool_calls or []
    assert json.loads(tool_call.function.arguments)["sentiment"] == "positive"  # type: ignore[union-attr]
    call = store.get_call(raw.headers["x-understudy-request-id"])
    assert call.task_key == "label_review"
    assert call.labels == {"sentiment": "positive", "sarcastic": "false"}


def test_plain_chat_is_passed_through(client: openai.OpenAI, store: Store) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-x", messages=[{"role": "user", "content": "hello"}]
    )
    assert raw.parse().choices[0].message.content == "echo: hello"
    assert "x-understudy-answered-by" not in raw.headers
    call = store.get_call(raw.headers["x-understudy-request-id"])
    assert (call.kind, call.task_key, call.labels) == (CallKind.PASSTHROUGH, None, None)


def test_schema_change_and_task_header(client: openai.OpenAI, store: Store) -> None:
    changed = {
        **SENTIMENT_SCHEMA,
        "properties": {"sentiment": {"type": "string", "enum": ["negative", "positive"]}},
        "required": ["sentiment"],
    }
    client.chat.completions.create(
        model="gpt-x",
        messages=_messages("good"),
        response_format=sentiment_format("moods", changed),
    )
    client.chat.completions.create(
        model="gpt-x", messages=_messages("good"), response_format=sentiment_format("moods")
    )
    assert [t.task.version for t in store.list_tasks() if t.task.key == "moods"] == [2, 1]
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-x",
        messages=_messages("good"),
        response_format=sentiment_format("moods"),
        extra_headers={"x-understudy-task": "reviews-eu"},
    )
    assert store.get_call(raw.headers["x-understudy-request-id"]).task_key == "reviews-eu"


def test_template_is_learned_from_logged_calls(client: openai.OpenAI, store: Store) -> None:
    texts = ["good plot", "bad acting", "fine music", "good cast!", "bad ending", "slow start"]
    ids = []
    for text in texts:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-x", messages=_messages(text), response_format=sentiment_format("templated")
        )
        ids.append(raw.headers["x-understudy-request-id"])
    # template_min_calls is 5: the sixth call is already stripped at request time.
    assert store.get_call(ids[-1]).input_text == "slow start"
    assert [e.text for e in store.examples("templated")] == texts


def test_models_and_health(client: openai.OpenAI, gateway_url: str) -> None:
    assert [m.id for m in client.models.list()] == ["fake-teacher"]
    assert httpx.get(gateway_url.removesuffix("/v1") + "/healthz").json() == {"status": "ok"}


def test_calls_survive_a_gateway_restart(fresh_settings: Settings) -> None:
    ids = []
    for _ in range(2):  # two gateway lifetimes on the same database
        with run_gateway(fresh_settings) as url:
            client = openai.OpenAI(base_url=url, api_key="k", max_retries=0)
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-x", messages=_messages("good"), response_format=sentiment_format()
            )
            ids.append(raw.headers["x-understudy-request-id"])
    store = open_store(fresh_settings)
    assert [store.get_call(i).task_version for i in ids] == [1, 1]
    assert store.count_labelled("sentiment") == 2
    assert {e.source for e in store.examples("sentiment")} == {LabelSource.TEACHER}


def test_request_reaches_the_teacher_unchanged(client: openai.OpenAI, teacher: FakeTeacher) -> None:
    # Parameters understudy does not know about are forwarded as sent.
    client.chat.completions.create(
        model="gpt-x",
        messages=_messages("good"),
        response_format=sentiment_format(),
        seed=11,
        temperature=0.0,
        extra_body={"vendor_option": {"a": [1, 2]}},
    )
    sent = teacher.requests[-1]
    assert sent["seed"] == 11 and sent["temperature"] == 0.0
    assert sent["vendor_option"] == {"a": [1, 2]}
    assert sent["messages"] == _messages("good")
