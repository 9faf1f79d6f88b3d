"""Reading the teacher's answers: server-sent events, streamed chunks assembled into one
completion, and soft labels from token logprobs."""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from understudy.tasks import Head, HeadKind

DONE_DATA = "[DONE]"


@dataclass
class SseEvent:
    """One server-sent event: its raw bytes (terminator included) and its ``data`` payload."""

    raw: bytes
    data: str


async def sse_batches(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[SseEvent]]:
    """Split a byte stream into server-sent events (separated by a blank line), yielding the
    complete events of each network read together, so a relay can forward them in one write."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk.replace(b"\r\n", b"\n")
        *complete, buffer = buffer.split(b"\n\n")
        if complete:
            yield [_event(raw + b"\n\n") for raw in complete]
    if buffer.strip():
        yield [_event(buffer)]


def _event(raw: bytes) -> SseEvent:
    lines = raw.decode(errors="replace").split("\n")
    data = "\n".join(line[5:].lstrip(" ") for line in lines if line.startswith("data:"))
    return SseEvent(raw=raw, data=data)


@dataclass
class StreamAssembler:
    """Accumulates ``chat.completion.chunk`` payloads into the equivalent ``chat.completion``."""

    meta: dict[str, Any] = field(default_factory=dict)
    content: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None

    def feed(self, data: str) -> None:
        """Add one event's data (ignored when it is not a JSON chunk)."""
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            return
        if not isinstance(chunk, dict):
            return
        for key in ("id", "created", "model", "system_fingerprint"):
            if key in chunk:
                self.meta[key] = chunk[key]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._feed_choice(choice)

    def _feed_choice(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        if isinstance(delta.get("content"), str):
            self.content.append(delta["content"])
        for call in delta.get("tool_calls") or []:
            slot = self.tool_calls.setdefault(
                int(call.get("index", 0)),
                {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
            )
            slot["id"] = call.get("id") or slot["id"]
            function = call.get("function") or {}
            slot["function"]["name"] += function.get("name") or ""
            slot["function"]["arguments"] += function.get("arguments") or ""
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
            self.logprobs.extend(logprobs["content"])
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]

    def completion(self) -> dict[str, Any]:
        """The assembled ``chat.completion`` (what the same call without streaming returns)."""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content) or None}
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        return {
            **self.meta,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": self.finish_reason,
                    "logprobs": {"content": self.logprobs} if self.logprobs else None,
                }
            ],
            "usage": self.usage,
        }


def usage_tokens(response: dict[str, Any] | None) -> tuple[int | None, int | None]:
    """``(prompt_tokens, completion_tokens)`` from a completion's usage, None when absent."""
    usage = (response or {}).get("usage")
    if not isinstance(usage, dict):
        return None, None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) else None,
        completion if isinstance(completion, int) else None,
    )


def soft_labels(
    heads: tuple[Head, ...], response: dict[str, Any]
) -> dict[str, dict[str, float]] | None:
    """Per head, a probability for each label from the teacher's ``top_logprobs``.

    For each head the token where its value starts is found in the answer; each label whose
    text starts with one of that token's alternatives gets the alternative's probability, then
    the head's distribution is renormalised over its labels. Heads whose labels cannot be told
    apart by their first token are skipped. None when the answer carries no logprobs.
    """
    try:
        choice = response["choices"][0]
        tokens = choice["logprobs"]["content"]
        content = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(tokens, list) or not isinstance(content, str) or not tokens:
        return None
    spans: list[tuple[int, int, dict[str, Any]]] = []
    offset = 0
    for token in tokens:
        text = str(token.get("token", ""))
        spans.append((offset, offset + len(text), token))
        offset += len(text)
    result: dict[str, dict[str, float]] = {}
    for head in heads:
        match = re.search(rf'"{re.escape(head.name)}"\s*:\s*"?', content)
        if match is None:
            continue
        token = next((tok for start, end, tok in spans if start <= match.end() < end), None)
        distribution = _distribution(head, token) if token is not None else None
        if distribution:
            result[head.name] = distribution
    return result or None


def _distribution(head: Head, token: dict[str, Any]) -> dict[str, float] | None:
    alternatives = token.get("top_logprobs") or [token]
    labels = head.labels if head.kind is HeadKind.ENUM else ("false", "true")
    probs = dict.fromkeys(labels, 0.0)
    for alt in alternatives:
        piece = str(alt.get("token", "")).lstrip(' "')
        if not piece:
            continue
        matching = [label for label in labels if label.startswith(piece)]
        if len(matching) > 1:
            return None  # the first token does not tell these labels apart
        if matching:
            probs[matching[0]] += math.exp(float(alt.get("logprob", 0.0)))
    total = sum(probs.values())
    if total <= 0:
        return None
    return {label: p / total for label, p in probs.items()}
