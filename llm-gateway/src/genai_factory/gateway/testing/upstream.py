"""An OpenAI-compatible upstream that answers as each test scripts it, faults included.

Every request takes the next :class:`Fault` from the script (or the default when the script is
empty) and the server records what it received, so a test can check exactly which upstream
served what.

Example:
    >>> import asyncio, json, urllib.request
    >>> async def main():
    ...     upstream = await ScriptedUpstream("a").start()
    ...     upstream.push(Fault.error(503, "busy"), Fault.ok("fine"))
    ...     loop = asyncio.get_running_loop()
    ...     def post():
    ...         req = urllib.request.Request(upstream.url + "/chat/completions",
    ...             data=json.dumps({"model": "m", "messages": []}).encode())
    ...         try:
    ...             return json.load(urllib.request.urlopen(req))["choices"][0]["message"]["content"]
    ...         except urllib.error.HTTPError as exc:
    ...             return exc.code
    ...     answers = [await loop.run_in_executor(None, post) for _ in range(2)]
    ...     await upstream.stop()
    ...     return answers
    >>> asyncio.run(main())
    [503, 'fine']
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from genai_factory.gateway.testing.http import HTTPRequest, MiniHTTPServer, Reply

__all__ = ["Fault", "ScriptedUpstream"]

Kind = Literal["ok", "status", "reset", "hang", "close"]


@dataclass(frozen=True)
class Fault:
    """One scripted answer: a normal one, an error status, or a broken connection or stream.

    For streams: ``first_delay_s`` delays everything (slow first token), ``chunk_delay_s`` paces
    chunks, ``cut_after`` resets the connection after N content chunks, ``stall_after`` stops
    sending (connection open) after N, ``malformed_at`` sends non-JSON as chunk N, ``done`` and
    ``finish`` leave out ``[DONE]`` or the finish chunk.
    """

    kind: Kind = "ok"
    text: str | None = None
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    first_delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    cut_after: int | None = None
    stall_after: int | None = None
    malformed_at: int | None = None
    done: bool = True
    finish: bool = True
    finish_reason: str = "stop"

    @classmethod
    def ok(cls, text: str | None = None, **options: Any) -> Fault:
        return cls("ok", text=text, **options)

    @classmethod
    def error(
        cls,
        status: int,
        message: str = "upstream error",
        *,
        code: str | None = None,
        retry_after: float | None = None,
        error_type: str | None = None,
    ) -> Fault:
        headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else {}
        body = {
            "error": {
                "message": message,
                "type": error_type or ("invalid_request_error" if status < 500 else "server_error"),
                "param": None,
                "code": code,
            }
        }
        return cls("status", status=status, body=body, headers=headers)

    @classmethod
    def reset(cls) -> Fault:
        return cls("reset")

    @classmethod
    def hang(cls) -> Fault:
        """Never answer (until the client gives up)."""
        return cls("hang")

    @classmethod
    def close(cls) -> Fault:
        return cls("close")


class ScriptedUpstream:
    """OpenAI-compatible ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/models``.

    Both chat and legacy completions stream (``stream: true``) and honour the stream faults.

    Args:
        name: the default answer says ``Hello from <name>``.
        default: the answer when the script is empty.
        port: a fixed port (0: a free one).
    """

    def __init__(self, name: str = "upstream", default: Fault | None = None, port: int = 0) -> None:
        self.name = name
        self.default = default or Fault.ok()
        self.script: deque[Fault] = deque()
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self._server = MiniHTTPServer(self._handle, port)
        self._hanging: set[asyncio.Event] = set()

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        """The OpenAI base URL (``.../v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def served(self) -> int:
        return len(self.requests)

    def push(self, *faults: Fault) -> ScriptedUpstream:
        self.script.extend(faults)
        return self

    async def start(self) -> ScriptedUpstream:
        await self._server.start()
        return self

    async def stop(self) -> None:
        for event in list(self._hanging):
            event.set()
        await self._server.stop()

    async def __aenter__(self) -> ScriptedUpstream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _next(self) -> Fault:
        return self.script.popleft() if self.script else self.default

    async def _handle(self, request: HTTPRequest, reply: Reply) -> None:
        if request.method == "GET" and request.path.endswith("/models"):
            models = {"object": "list", "data": [{"id": self.name, "object": "model"}]}
            await reply.send(200, orjson.dumps(models), _JSON)
            return
        try:
            payload = orjson.loads(request.body) if request.body else {}
        except orjson.JSONDecodeError:
            payload = {}
        self.requests.append(payload if isinstance(payload, dict) else {})
        self.paths.append(request.path)
        fault = self._next()
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault.kind == "reset":
            reply.reset()
        elif fault.kind == "close":
            reply.close()
        elif fault.kind == "hang":
            event = asyncio.Event()
            self._hanging.add(event)
            try:
                await event.wait()
            finally:
                self._hanging.discard(event)
            reply.close()
        elif fault.kind == "status":
            body = fault.body if isinstance(fault.body, bytes) else orjson.dumps(fault.body)
            await reply.send(
                fault.status, body, {"content-type": "application/json", **fault.headers}
            )
        elif request.path.endswith("/embeddings"):
            await reply.send(200, orjson.dumps(self._embeddings(payload)), _JSON)
        elif request.path.endswith("/chat/completions") and payload.get("stream"):
            await self._stream(payload, fault, reply)
        elif request.path.endswith("/chat/completions"):
            await reply.send(200, orjson.dumps(self._answer(payload, fault)), _JSON)
        elif request.path.endswith("/completions") and payload.get("stream"):
            await self._stream(payload, fault, reply, text_completion=True)
        elif request.path.endswith("/completions"):
            await reply.send(200, orjson.dumps(self._text_answer(payload, fault)), _JSON)
        else:
            await reply.send(404, b'{"error": {"message": "no such path"}}', _JSON)

    def _text(self, fault: Fault) -> str:
        return fault.text if fault.text is not None else f"Hello from {self.name}"

    @staticmethod
    def _tool_call(payload: dict[str, Any]) -> dict[str, Any] | None:
        tools = payload.get("tools") or []
        choice = payload.get("tool_choice")
        if not tools or choice in (None, "none", "auto"):
            return None
        name = tools[0]["function"]["name"]
        if isinstance(choice, dict):
            name = choice.get("function", {}).get("name", name)
        return {
            "id": "call_" + uuid.uuid4().hex[:8],
            "type": "function",
            "function": {"name": name, "arguments": '{"city": "Paris"}'},
        }

    def _usage(self, payload: dict[str, Any], text: str) -> dict[str, int]:
        prompt = sum(len(str(m.get("content") or "")) for m in payload.get("messages") or ()) // 4
        completion = max(1, len(text.split()))
        return {
            "prompt_tokens": prompt + 1,
            "completion_tokens": completion,
            "total_tokens": prompt + 1 + completion,
        }

    def _answer(self, payload: dict[str, Any], fault: Fault) -> dict[str, Any]:
        text = self._text(fault)
        call = self._tool_call(payload)
        message: dict[str, Any] = {"role": "assistant", "content": None if call else text}
        if call:
            message["tool_calls"] = [call]
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(payload.get("model", self.name)),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if call else fault.finish_reason,
                }
            ],
            "usage": self._usage(payload, text),
        }

    def _text_answer(self, payload: dict[str, Any], fault: Fault) -> dict[str, Any]:
        text = self._text(fault)
        return {
            "id": "cmpl-" + uuid.uuid4().hex,
            "object": "text_completion",
            "created": int(time.time()),
            "model": str(payload.get("model", self.name)),
            "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 1, "completion_tokens": len(text.split())},
        }

    @staticmethod
    def _embeddings(payload: dict[str, Any]) -> dict[str, Any]:
        inputs = payload.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": [float(len(str(t))), 1.0, 0.0]}
                for i, t in enumerate(texts)
            ],
            "model": str(payload.get("model")),
            "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)},
        }

    async def _stream(
        self, payload: dict[str, Any], fault: Fault, reply: Reply, text_completion: bool = False
    ) -> None:
        """A chat stream, or (``text_completion``) a legacy completion stream, faults included."""
        if fault.first_delay_s:
            await asyncio.sleep(fault.first_delay_s)
        await reply.start(200, {"content-type": "text/event-stream"})
        base = {
            "id": ("cmpl-" if text_completion else "chatcmpl-") + uuid.uuid4().hex,
            "object": "text_completion" if text_completion else "chat.completion.chunk",
            "created": int(time.time()),
            "model": str(payload.get("model", self.name)),
        }

        def event(choice: dict[str, Any], **extra: Any) -> bytes:
            if text_completion:  # OpenAI's legacy shape: text instead of a delta
                delta = choice.pop("delta")
                choice = {
                    "index": choice["index"],
                    "text": delta.get("content") or "",
                    "logprobs": None,
                    "finish_reason": choice.get("finish_reason"),
                }
            return b"data: " + orjson.dumps({**base, "choices": [choice], **extra}) + b"\n\n"

        if not text_completion:
            await reply.write(event({"index": 0, "delta": {"role": "assistant", "content": ""}}))
        text = self._text(fault)
        call = None if text_completion else self._tool_call(payload)
        pieces = [w + " " for w in text.split(" ")] if not call else []
        if pieces:
            pieces[-1] = pieces[-1].rstrip(" ")
        for number, piece in enumerate(pieces):
            if fault.cut_after is not None and number >= fault.cut_after:
                reply.reset()
                return
            if fault.stall_after is not None and number >= fault.stall_after:
                await asyncio.sleep(3600)
            if fault.malformed_at is not None and number == fault.malformed_at:
                await reply.write(b"data: {not json\n\n")
                continue
            if fault.chunk_delay_s:
                await asyncio.sleep(fault.chunk_delay_s)
            await reply.write(event({"index": 0, "delta": {"content": piece}}))
        if call:
            delta = {"tool_calls": [{"index": 0, **call}]}
            await reply.write(event({"index": 0, "delta": delta}))
        if fault.finish:
            finish = "tool_calls" if call else fault.finish_reason
            await reply.write(
                event(
                    {"index": 0, "delta": {}, "finish_reason": finish},
                    usage=self._usage(payload, text),
                )
            )
        if fault.done:
            await reply.write(b"data: [DONE]\n\n")
        await reply.end()


_JSON = {"content-type": "application/json"}
