"""Fuzz a local gateway with malformed requests: none may get a 5xx other than the documented
upstream ones (502, 503, 504), and the gateway must still answer ``/healthz`` afterwards.

Cases start from valid bodies (classification by response_format and by forced tool call,
pass-through, streamed, feedback, classify) and are broken in seeded random ways: type
confusion anywhere in the JSON tree, deleted keys, truncated or random bytes, awkward Unicode
(lone surrogates, NUL, RTL marks, emoji, combining marks), deep nesting, huge and non-finite
numbers, oversize bodies, hostile schemas (``$ref`` cycles, non-string enums, malformed
``required``), wrong methods and paths, wrong content types. The fake teacher and the gateway
run in this process on localhost; requests are bounded by ``--requests``.

    .venv/bin/python bench/fuzz.py        # 10,000 requests -> bench/results/fuzz.json
    .venv/bin/python bench/fuzz.py --requests 500 --no-write
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx

from understudy.settings import Settings
from understudy.testing.fake_teacher import FakeTeacher, run_fake_teacher
from understudy.testing.gateway import run_gateway

RESULTS = Path(__file__).parent / "results" / "fuzz.json"
# 5xx answers the gateway documents for a failing upstream; any other 5xx is a bug.
DOCUMENTED_5XX = frozenset({502, 503, 504})
MAX_BODY_BYTES = 64_000
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["negative", "positive"]},
        "sarcastic": {"type": "boolean"},
    },
    "required": ["sentiment", "sarcastic"],
}
AWKWARD = [
    "",
    "\x00",
    "\u202eevil\u202c",
    "e\u0301\u0301\u0301",
    "👍🏽👨‍👩‍👧",
    "\ufeff\ufffe",
    "\t\r\n ",
    "a" * 100_000,
    "%s%n{0}{{}}",
    "</script><script>",
    "Robert'); DROP TABLE calls;--",
]
# JSON text fragments that Python's json accepts but that are hostile downstream.
RAW_JSON_VALUES = [
    '"\\ud800"',
    '"\\udfff\\ud800x"',
    '"\\u0000"',
    "1e400",
    "-1e400",
    "NaN",
    "Infinity",
    "123456789012345678901234567890",
    "[" * 5000 + "]" * 5000,
    '{"a":' * 3000 + "1" + "}" * 3000,
]


@dataclass(frozen=True)
class FuzzCase:
    """One request to send."""

    kind: str
    method: str
    path: str
    body: bytes | None
    headers: dict[str, str] = field(default_factory=dict)


def label_fn(schema: dict[str, Any], text: str) -> dict[str, Any]:
    """The fake teacher's rule; any string field gets a fixed value."""
    known: dict[str, Any] = {"sentiment": "positive" if "good" in text else "negative"}
    known["sarcastic"] = "!" in text
    return {name: known.get(name, "x") for name in schema.get("properties", {})}


def seed_bodies(request_ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Valid bodies per kind: ``kind -> (path, body)``."""
    message = [{"role": "user", "content": "a good film"}]
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "fuzz", "schema": copy.deepcopy(SCHEMA), "strict": True},
    }
    tool = {"type": "function", "function": {"name": "fuzz_tool", "parameters": SCHEMA}}
    return {
        "classification": (
            "/v1/chat/completions",
            {"model": "m", "messages": message, "response_format": response_format},
        ),
        "stream": (
            "/v1/chat/completions",
            {"model": "m", "messages": message, "response_format": response_format, "stream": True},
        ),
        "tool": (
            "/v1/chat/completions",
            {"model": "m", "messages": message, "tools": [tool], "tool_choice": "required"},
        ),
        "passthrough": ("/v1/chat/completions", {"model": "m", "messages": message}),
        "feedback": (
            "/v1/feedback",
            {"request_id": request_ids[0], "labels": {"sentiment": "positive"}},
        ),
        "classify": ("/v1/classify", {"task": "fuzz", "text": "a good film"}),
    }


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(9 if depth < 3 else 6)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, -1, 2**63, 1.5, -0.0, 10**30])
    if choice in (3, 4, 5):
        return rng.choice(AWKWARD)
    if choice in (6, 7):
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(AWKWARD[:7]): _random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def _containers(node: Any, found: list[Any]) -> list[Any]:
    """Every dict and list in a JSON tree (the places a mutation can land)."""
    if isinstance(node, dict | list):
        found.append(node)
        for child in node.values() if isinstance(node, dict) else node:
            _containers(child, found)
    return found


def _mutate_tree(rng: random.Random, body: dict[str, Any]) -> dict[str, Any]:
    """Replace, delete or add one node somewhere in the tree."""
    body = copy.deepcopy(body)
    target = rng.choice(_containers(body, []))
    if isinstance(target, dict):
        keys = list(target)
        action = rng.randrange(3)
        if keys and action == 0:
            target[rng.choice(keys)] = _random_json(rng)
        elif keys and action == 1:
            del target[rng.choice(keys)]
        else:
            target[rng.choice(["enum", "$ref", "required", "type", "content", "role", "x"])] = (
                rng.choice(["#/$defs/A", "#/", ["a", 1, None], [[]], "string", _random_json(rng)])
            )
    elif target:
        target[rng.randrange(len(target))] = _random_json(rng)
    else:
        target.append(_random_json(rng))
    return body


def _hostile_schema(rng: random.Random) -> dict[str, Any]:
    """A schema the task parser must survive."""
    return rng.choice(
        [
            {"properties": {"a": {"$ref": "#/$defs/A"}}, "$defs": {"A": {"$ref": "#/$defs/A"}}},
            {"properties": {"a": {"enum": [1, None, "x"]}, "b": {"type": "boolean"}}},
            {"properties": {"a": {"enum": ["x", "x", "y"]}}, "required": [[], {}, 3]},
            {"properties": {"a": {"allOf": [{"allOf": [{"enum": ["p", "q"]}]}]}}},
            {"properties": [1, 2]},
            {"properties": {"": {"const": ""}, "\ud800": {"type": "boolean"}}},
            {"properties": {f"f{i}": {"enum": ["a", "b"]} for i in range(300)}},
        ]
    )


def _with_raw_value(rng: random.Random, body: dict[str, Any]) -> bytes:
    """The body's JSON with a hostile raw JSON fragment spliced into a string's place."""
    marker = "__FUZZ_RAW__"
    body = copy.deepcopy(body)
    messages = body.get("messages")
    if isinstance(messages, list) and messages:
        messages[0]["content"] = marker
    else:
        body[rng.choice(list(body) or ["x"])] = marker
    text = json.dumps(body)
    return text.replace(json.dumps(marker), rng.choice(RAW_JSON_VALUES), 1).encode()


def malformed_cases(rng: random.Random, count: int, request_ids: list[str]) -> Iterator[FuzzCase]:
    """``count`` seeded malformed requests."""
    bodies = seed_bodies(request_ids)
    kinds = sorted(bodies)
    for _ in range(count):
        kind = rng.choice(kinds)
        path, body = bodies[kind]
        strategy = rng.randrange(12)
        headers = {"content-type": "application/json"}
        raw: bytes | None
        if strategy <= 3:
            mutated = body
            for _ in range(rng.randint(1, 3)):
                mutated = _mutate_tree(rng, mutated)
            raw = json.dumps(mutated).encode()
        elif strategy == 4:
            text = json.dumps(body).encode()
            raw = text[: rng.randrange(len(text))]
        elif strategy == 5:
            raw = rng.randbytes(rng.randrange(1, 400))
        elif strategy == 6:
            raw = _with_raw_value(rng, body)
        elif strategy == 7 and "messages" in body:
            hostile = copy.deepcopy(body)
            hostile["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": rng.choice(AWKWARD[:7]), "schema": _hostile_schema(rng)},
            }
            raw = json.dumps(hostile).encode()
        elif strategy == 8:
            raw = b'{"model": "m", "messages": [' + b'{"role":"user","content":"x"},' * 4000
            raw += b'{"role":"user","content":"x"}]}'
        elif strategy == 9:
            headers = {"content-type": rng.choice(["text/plain", "multipart/form-data", ""])}
            raw = rng.choice([None, b"", json.dumps(body).encode()])
        elif strategy == 10:
            method = rng.choice(["GET", "PUT", "DELETE", "PATCH"])
            yield FuzzCase(kind, method, path, None, {})
            continue
        else:
            weird = rng.choice(
                ["/v1/chat", "/v1/chat/completions/x", "/v1/%00", "/v1/models/..%2f"]
            )
            yield FuzzCase(kind, "POST", weird, json.dumps(body).encode(), headers)
            continue
        yield FuzzCase(kind, "POST", path, raw, headers)


@dataclass
class FuzzReport:
    """Outcome of a run: status counts, unexpected 5xx answers and transport errors."""

    statuses: Counter[int] = field(default_factory=Counter)
    unexpected: list[dict[str, Any]] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    healthy_after: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No unexpected 5xx, no dropped connection, and the gateway still healthy."""
        return not self.unexpected and not self.transport_errors and self.healthy_after


def run_fuzz(root: str, cases: list[FuzzCase], concurrency: int = 8) -> FuzzReport:
    """Send every case to the gateway at ``root`` (``http://host:port``) and tally the answers."""
    report = FuzzReport()
    started = time.perf_counter()
    with httpx.Client(base_url=root, timeout=30) as client:

        def send(case: FuzzCase) -> None:
            try:
                response = client.request(
                    case.method, case.path, content=case.body, headers=case.headers
                )
            except httpx.HTTPError as exc:
                report.transport_errors.append(f"{case.kind} {case.path}: {exc!r}")
                return
            report.statuses[response.status_code] += 1
            if response.status_code >= 500 and response.status_code not in DOCUMENTED_5XX:
                report.unexpected.append(
                    {
                        "kind": case.kind,
                        "status": response.status_code,
                        "body": (case.body or b"")[:300].decode(errors="replace"),
                        "answer": response.text[:300],
                    }
                )

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(send, cases))
        report.seconds = time.perf_counter() - started
        report.healthy_after = client.get("/healthz").status_code == 200
    return report


def fuzz_gateway(count: int, seed: int, data_dir: Path, concurrency: int = 8) -> FuzzReport:
    """Start a fake teacher and a gateway on localhost, make a few valid calls (so feedback has
    ids to aim at), then send ``count`` malformed requests."""
    teacher = FakeTeacher(label_fn, seed=seed)
    with run_fake_teacher(teacher) as teacher_url:
        settings = Settings(
            upstream_base_url=teacher_url,
            data_dir=data_dir,
            max_body_bytes=MAX_BODY_BYTES,
            upstream_timeout_s=10,
            template_min_calls=5,
        )
        with run_gateway(settings) as url:
            root = url.removesuffix("/v1")
            bodies = seed_bodies(["none"])
            ids = []
            for _ in range(3):
                answer = httpx.post(f"{url}/chat/completions", json=bodies["classification"][1])
                ids.append(answer.headers["x-understudy-request-id"])
            cases = list(malformed_cases(random.Random(seed), count, ids))
            return run_fuzz(root, cases, concurrency)


def machine() -> dict[str, Any]:
    """Where the run happened."""
    return {
        "cpus": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "httpx": version("httpx"),
        "fastapi": version("fastapi"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="malformed requests to send")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--no-write", action="store_true", help="do not write the results JSON")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    with tempfile.TemporaryDirectory() as tmp:
        report = fuzz_gateway(args.requests, args.seed, Path(tmp) / "data", args.concurrency)
    table = Table("status", "count", title=f"{args.requests} malformed requests")
    for status, n in sorted(report.statuses.items()):
        table.add_row(str(status), str(n))
    console = Console()
    console.print(table)
    console.print(
        f"unexpected 5xx: {len(report.unexpected)}, transport errors: "
        f"{len(report.transport_errors)}, healthy after: {report.healthy_after}, "
        f"{report.seconds:.1f} s ({args.requests / report.seconds:.0f} req/s)"
    )
    for item in report.unexpected[:10]:
        console.print(item)
    if not args.no_write:
        RESULTS.parent.mkdir(exist_ok=True)
        result = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "requests": args.requests,
            "seed": args.seed,
            "concurrency": args.concurrency,
            "statuses": {str(k): v for k, v in sorted(report.statuses.items())},
            "unexpected_5xx": report.unexpected[:50],
            "transport_errors": report.transport_errors[:50],
            "healthy_after": report.healthy_after,
            "seconds": round(report.seconds, 1),
            "machine": machine(),
        }
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
