"""The aiohttp transport behind the upstream client keeps httpx's semantics: bodies and streams
arrive intact, and pool, connect and read failures raise the httpx errors the retry logic
distinguishes."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from typing import Any

import httpx
import pytest

from understudy.gateway.aiohttp_transport import AiohttpTransport
from understudy.testing.fake_teacher import FakeTeacher

BODY = {"model": "m", "messages": [{"role": "user", "content": "good film"}]}


def _client(base_url: str, max_connections: int = 4, **timeouts: float) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=max_connections)
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(5.0, **timeouts),
        limits=limits,
        transport=AiohttpTransport(limits),
    )


def test_json_and_streamed_answers_arrive_intact(teacher_url: str) -> None:
    async def run() -> tuple[dict[str, Any], list[str]]:
        async with _client(teacher_url) as client:
            whole = await client.post("/chat/completions", json=BODY)
            events = []
            async with client.stream(
                "POST", "/chat/completions", json={**BODY, "stream": True}
            ) as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        events.append(line[6:])
            return whole.json(), events

    whole, events = asyncio.run(run())
    assert whole["object"] == "chat.completion"
    assert events[-1] == "[DONE]"
    assert all(json.loads(e)["object"] == "chat.completion.chunk" for e in events[:-1])


def test_a_compressed_body_is_decoded_once() -> None:
    payload = json.dumps({"ok": True}).encode()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = gzip.compress(payload)
        head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
        writer.write(f"{head}content-length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()

    async def run() -> bytes:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, _client(f"http://127.0.0.1:{port}") as client:
            return (await client.get("/")).content

    assert asyncio.run(run()) == payload


def test_waiting_past_the_pool_timeout_raises_pool_timeout(
    teacher: FakeTeacher, teacher_url: str
) -> None:
    teacher.latency_ms = 500

    async def run() -> None:
        async with _client(teacher_url, max_connections=1, pool=0.05) as client:
            first = asyncio.create_task(client.post("/chat/completions", json=BODY))
            await asyncio.sleep(0.05)  # let the first request take the only slot
            with pytest.raises(httpx.PoolTimeout):
                await client.post("/chat/completions", json=BODY)
            assert (await first).status_code == 200
            teacher.latency_ms = 0
            # The slot came back: the pool is usable again.
            assert (await client.post("/chat/completions", json=BODY)).status_code == 200

    asyncio.run(run())


def test_a_slow_answer_raises_read_timeout(teacher: FakeTeacher, teacher_url: str) -> None:
    teacher.latency_ms = 1000

    async def run() -> None:
        async with _client(teacher_url, read=0.1) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/chat/completions", json=BODY)

    asyncio.run(run())


def test_a_refused_connection_raises_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused

        async def run() -> None:
            async with _client(f"http://127.0.0.1:{port}") as client:
                with pytest.raises(httpx.ConnectError):
                    await client.post("/chat/completions", json=BODY)

        asyncio.run(run())


def test_a_connection_reset_mid_answer_raises_a_transport_error(
    teacher: FakeTeacher, teacher_url: str
) -> None:
    teacher.reset_connections = True

    async def run() -> None:
        async with _client(teacher_url) as client:
            with pytest.raises(httpx.TransportError):
                await client.post("/chat/completions", json=BODY)

    try:
        asyncio.run(run())
    finally:
        teacher.reset_connections = False


def test_a_proxy_from_the_environment_is_used_unless_the_host_is_bypassed(
    teacher_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake teacher doubles as the proxy: it answers the absolute-form request it is sent.
    proxy = teacher_url.removesuffix("/v1")
    monkeypatch.setenv("HTTP_PROXY", proxy)
    unreachable = "http://upstream.invalid:9/v1"

    async def post() -> int:
        async with _client(unreachable) as client:
            return (await client.post("/chat/completions", json=BODY)).status_code

    assert asyncio.run(post()) == 200
    monkeypatch.setenv("NO_PROXY", "upstream.invalid")
    with pytest.raises(httpx.ConnectError):
        asyncio.run(post())
