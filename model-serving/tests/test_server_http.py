"""The server over real TCP on 127.0.0.1 (uvicorn), with concurrent clients and the real model:
back-pressure, cancellation on disconnect, draining, and the official OpenAI SDK as a client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from genai_factory.serving.engines.llamacpp import LlamaCppChatModel
from genai_factory.serving.server import ServerParts
from genai_factory.serving.testing import running_server, sse_payloads

pytestmark = pytest.mark.integration

LONG = "Tell a long story."


def chat_body(prompt: str = "Say hello.", **extra: Any) -> dict[str, Any]:
    return {
        "model": "smollm2",
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": 8,
        **extra,
    }


async def test_overload_gets_429_with_retry_after_not_a_timeout(
    make_parts: Callable[..., ServerParts],
) -> None:
    parts = make_parts(model={"max_concurrency": 1, "max_queue": 1})
    async with running_server(parts) as url, httpx.AsyncClient(base_url=url, timeout=300) as http:
        started = time.perf_counter()
        body = chat_body(LONG, max_tokens=48)
        posts = [http.post("/v1/chat/completions", json=body) for _ in range(4)]
        responses = await asyncio.gather(*posts)
        # one runs, one waits, two find the queue full and hear so at once
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 200, 429, 429], [r.text for r in responses]
        refused = next(r for r in responses if r.status_code == 429)
        assert refused.json()["error"]["code"] == "queue_full"
        assert int(refused.headers["retry-after"]) >= 1
        assert time.perf_counter() - started < 60
        metrics = (await http.get("/metrics")).text
        assert (
            metric(metrics, 'gf_serving_rejected_total{model="smollm2",reason="queue_full"}') == 2
        )


async def test_waiting_too_long_gets_503_with_retry_after(
    make_parts: Callable[..., ServerParts],
) -> None:
    parts = make_parts(model={"max_concurrency": 1, "queue_timeout_s": 0.1})
    async with running_server(parts) as url, httpx.AsyncClient(base_url=url, timeout=300) as http:
        first = asyncio.create_task(
            http.post("/v1/chat/completions", json=chat_body(LONG, max_tokens=24))
        )
        await asyncio.sleep(0.05)
        second = await http.post("/v1/chat/completions", json=chat_body())
        assert second.status_code == 503
        assert second.json()["error"]["code"] == "queue_timeout"
        assert "retry-after" in second.headers
        assert (await first).status_code == 200


async def _wait_idle(smollm2: LlamaCppChatModel, parts: ServerParts) -> None:
    """Until the server released the request and the engine dropped the sequence."""
    for _ in range(2000):
        if parts.manager.states()[0].running == 0 and smollm2.stats()["batch_size"] == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the abandoned request was not released")


async def test_a_client_leaving_mid_stream_stops_generation_at_once(
    make_parts: Callable[..., ServerParts], smollm2: LlamaCppChatModel
) -> None:
    parts = make_parts()
    async with running_server(parts) as url, httpx.AsyncClient(base_url=url, timeout=300) as http:
        await http.post("/v1/chat/completions", json=chat_body(LONG, max_tokens=1))
        before = smollm2.stats()["tokens_generated_total"]
        body = chat_body(LONG, max_tokens=64, stream=True)
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            events = 0
            async for line in response.aiter_lines():
                events += line.startswith("data: ")
                if events == 3:
                    break
        # the connection is closed: the server notices, stops llama.cpp and frees the model
        await _wait_idle(smollm2, parts)
        generated = smollm2.stats()["tokens_generated_total"] - before
        # a few tokens, not the 64 the request allowed (the story goes on far longer)
        assert 2 <= generated < 40
        # the tokens it handed out are still counted (1 is the probe's)
        metrics = (await http.get("/metrics")).text
        counted = metric(metrics, 'gf_serving_completion_tokens_total{model="smollm2"}') - 1
        assert 1 <= counted <= generated


def metric(text: str, series: str) -> float:
    """The value of one series in a Prometheus text exposition."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not in the metrics")


async def test_a_client_leaving_before_a_json_answer_stops_generation_at_once(
    make_parts: Callable[..., ServerParts], smollm2: LlamaCppChatModel
) -> None:
    parts = make_parts()
    async with running_server(parts) as url:
        async with httpx.AsyncClient(base_url=url, timeout=300) as http:
            await http.post("/v1/chat/completions", json=chat_body(LONG, max_tokens=1))
        before = smollm2.stats()["tokens_generated_total"]
        # a non-streamed answer of up to 64 tokens; the client gives up once a few are made
        async with httpx.AsyncClient(base_url=url, timeout=300) as impatient:
            post = asyncio.create_task(
                impatient.post("/v1/chat/completions", json=chat_body(LONG, max_tokens=64))
            )
            for _ in range(3000):
                if smollm2.stats()["tokens_generated_total"] >= before + 3:
                    break
                await asyncio.sleep(0.005)
            post.cancel()  # closes the connection mid-request
            with pytest.raises(asyncio.CancelledError):
                await post
        await _wait_idle(smollm2, parts)
        generated = smollm2.stats()["tokens_generated_total"] - before
        assert 3 <= generated < 40
        await asyncio.sleep(0.2)  # and nothing more is generated for it
        assert smollm2.stats()["tokens_generated_total"] - before == generated
        async with httpx.AsyncClient(base_url=url, timeout=300) as http:
            for _ in range(600):
                metrics = (await http.get("/metrics")).text
                if 'status="499"' in metrics:
                    break
                await asyncio.sleep(0.05)
            series = 'gf_serving_requests_total{endpoint="chat",model="smollm2",status="499"}'
            assert metric(metrics, series) == 1
            # the model is free at once for the next request
            ok = await asyncio.wait_for(
                http.post("/v1/chat/completions", json=chat_body()), timeout=60
            )
            assert ok.status_code == 200


async def test_concurrent_requests_share_decode_steps(
    make_parts: Callable[..., ServerParts], smollm2: LlamaCppChatModel
) -> None:
    parts = make_parts()
    assert parts.manager.states()[0].max_concurrency == smollm2.parallel  # follows the slots
    async with running_server(parts) as url, httpx.AsyncClient(base_url=url, timeout=300) as http:
        before = smollm2.stats()
        prompts = ["Name a river.", "Name a mountain.", "Name a city.", "Name a lake."]
        bodies = [chat_body(p, max_tokens=16) for p in prompts]
        responses = await asyncio.gather(
            *(http.post("/v1/chat/completions", json=b) for b in bodies)
        )
        assert [r.status_code for r in responses] == [200] * 4
        after = smollm2.stats()
        tokens = after["tokens_generated_total"] - before["tokens_generated_total"]
        steps = after["decode_steps_total"] - before["decode_steps_total"]
        # one at a time, every token (and every prompt) would need its own decode step
        assert steps < tokens
        assert all(r.json()["usage"]["completion_tokens"] > 0 for r in responses)


async def test_draining_lets_running_streams_finish(
    make_parts: Callable[..., ServerParts],
) -> None:
    parts = make_parts()
    async with running_server(parts) as url, httpx.AsyncClient(base_url=url, timeout=300) as http:
        body = chat_body(LONG, max_tokens=24, stream=True)
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            parts.manager.begin_drain()
            refused = await http.post("/v1/chat/completions", json=chat_body())
            text = "".join([line + "\n" async for line in response.aiter_lines()])
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
        assert sse_payloads(text)[-1] == "[DONE]"


async def test_the_openai_sdk_talks_to_the_server(
    make_parts: Callable[..., ServerParts],
) -> None:
    parts = make_parts()
    async with running_server(parts) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        for _ in range(2):  # the second answer starts from the cached prompt, as the stream will
            answer = await client.chat.completions.create(
                model="smollm2",
                messages=[{"role": "user", "content": "Say hi."}],
                max_tokens=6,
                temperature=0,
            )
        assert answer.choices[0].message.content
        pieces = []
        usage = None
        stream = await client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "Say hi."}],
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            pieces.extend(c.delta.content or "" for c in chunk.choices)
            usage = chunk.usage or usage
        assert "".join(pieces) == answer.choices[0].message.content
        assert usage is not None and usage.completion_tokens == answer.usage.completion_tokens  # type: ignore[union-attr]
        vectors = await client.embeddings.create(model="all-minilm-l6-v2", input=["a", "b"])
        assert len(vectors.data[1].embedding) == 384
        legacy = await client.completions.create(model="smollm2", prompt="Say hi.", max_tokens=4)
        assert legacy.choices[0].text
        listed = [m.id async for m in client.models.list()]
        assert listed == ["smollm2", "all-minilm-l6-v2"]
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(
                model="gpt-9", messages=[{"role": "user", "content": "x"}]
            )
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(
                model="smollm2", messages=[{"role": "user", "content": "x"}], max_tokens=-1
            )
        await client.close()
