"""The async face of the torch engine: submit requests, stream their tokens, cancel them.

One worker thread owns the :class:`~genai_factory.serving.torch_engine.core.EngineCore` and loops
``step()`` while there is work, so requests that arrive while others run join the batch at the
next step. The asyncio side only posts commands to the worker (a lock held for microseconds) and
reads events from a per-request ``asyncio.Queue`` the worker fills through
``loop.call_soon_threadsafe``, so the event loop never waits on the model. Any event loop may
submit: each request remembers its own.

Example (loads the packaged model, ~20 s):

    engine = TorchEngine("smollm2", max_batch_size=16)
    ids = engine.encode_chat([{"role": "user", "content": "Hi"}])
    async for event in engine.stream(ids, SamplingParams(temperature=0, max_tokens=8)):
        print(event.token_ids)
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from genai_factory.serving.torch_engine.core import (
    EngineConfig,
    EngineCore,
    EngineStats,
    GenerationRequest,
    TokenEvent,
)
from genai_factory.serving.torch_engine.model import PagedLlama, load_hf_model
from genai_factory.serving.torch_engine.quantization import QUANTIZATION_MODES, quantize_model
from genai_factory.serving.torch_engine.sampling import SamplingParams, TokenLogprob
from genai_factory.serving.torch_engine.speculative import SpeculativeConfig
from genai_factory.shared.errors import ConfigError, GFError, ServiceUnavailable

__all__ = ["GenerationResult", "RequestHandle", "TorchEngine"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """Every token a request generated, and why it ended."""

    request_id: str
    token_ids: tuple[int, ...]
    logprobs: tuple[TokenLogprob, ...]
    finish_reason: str
    prompt_tokens: int
    cached_tokens: int


@dataclass(slots=True)
class _Subscriber:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[TokenEvent]


class RequestHandle:
    """A submitted request: iterate :meth:`events`, or :meth:`cancel` it."""

    def __init__(self, engine: TorchEngine, request_id: str, subscriber: _Subscriber) -> None:
        self.request_id = request_id
        self._engine = engine
        self._subscriber = subscriber
        self.finished = False

    async def events(self) -> AsyncGenerator[TokenEvent, None]:
        """Events until the request finishes; leaving early cancels it. Errors are raised."""
        try:
            while not self.finished:
                event = await self._subscriber.queue.get()
                self.finished = event.finished
                if event.error is not None:
                    raise event.error
                yield event
        finally:
            if not self.finished:
                self._engine._post_abort(self.request_id)

    async def cancel(self) -> bool:
        """Cancel now; returns once the request's KV blocks are free (False: already over)."""
        return await self._engine.cancel(self.request_id)


class TorchEngine:
    """A continuous-batching PyTorch engine over a packaged Llama-architecture GGUF model.

    Args:
        model: a packaged model's name (``smollm2``) or a path to a ``.gguf`` file.
        block_size: token slots per KV-cache block.
        kv_cache_mb: memory for the KV cache (sets the number of blocks).
        max_batch_size: requests decoded together.
        max_batched_tokens: tokens computed per step (prompts beyond wait a step).
        max_model_len: prompt plus answer tokens per request.
        enable_prefix_caching: share the KV of equal prompt prefixes across requests.
        quantization: ``none``, ``int8``, ``int8-dynamic`` or ``int4`` weights.
        speculative: ``None``, ``ngram`` (prompt lookup) or ``draft`` (self-speculative).
        num_speculative_tokens: draft tokens per step.
        draft_layers: layers of the self-speculative draft model.
        adaptive_speculation: per request, draft only as many tokens as its acceptance rate
            pays for, and back off to rare probes when none pays.
        speculative_max_batch_size: draft only while at most this many requests run.
        threads: torch intra-op threads for the whole process (``None``: leave as is).
        seed: the sampling seed of requests that give none.
    """

    def __init__(
        self,
        model: str = "smollm2",
        block_size: int = 16,
        kv_cache_mb: int = 256,
        max_batch_size: int = 32,
        max_batched_tokens: int = 2048,
        max_model_len: int = 2048,
        enable_prefix_caching: bool = True,
        quantization: str = "none",
        speculative: str | None = None,
        num_speculative_tokens: int = 4,
        draft_layers: int = 8,
        adaptive_speculation: bool = False,
        speculative_max_batch_size: int | None = None,
        threads: int | None = None,
        seed: int = 0,
    ) -> None:
        if quantization not in QUANTIZATION_MODES:
            raise ConfigError(
                f"quantization must be one of {', '.join(QUANTIZATION_MODES)}",
                param="quantization",
            )
        if kv_cache_mb < 1 or block_size < 1 or max_batch_size < 1 or max_model_len < 2:
            raise ConfigError(
                "kv_cache_mb, block_size, max_batch_size must be positive and max_model_len >= 2",
                param="torch_engine",
            )
        self.model = model
        self.block_size = block_size
        self.kv_cache_mb = kv_cache_mb
        self.max_batch_size = max_batch_size
        self.max_batched_tokens = max_batched_tokens
        self.max_model_len = max_model_len
        self.enable_prefix_caching = enable_prefix_caching
        self.quantization = quantization
        self.speculative = speculative
        self.num_speculative_tokens = num_speculative_tokens
        self.draft_layers = draft_layers
        self.adaptive_speculation = adaptive_speculation
        self.speculative_max_batch_size = speculative_max_batch_size
        self.threads = threads
        self.seed = seed
        self._speculative_config = (
            SpeculativeConfig(
                speculative,  # type: ignore[arg-type]
                num_speculative_tokens,
                draft_layers=draft_layers,
                adaptive=adaptive_speculation,
                max_batch_size=speculative_max_batch_size,
            )
            if speculative is not None
            else None
        )
        self._paged: PagedLlama | None = None
        self._tokenizer: Any = None
        self._core: EngineCore | None = None
        self._load_lock = threading.Lock()
        self._wakeup = threading.Condition(threading.Lock())
        self._inbox: deque[tuple[str, Any]] = deque()
        self._subscribers: dict[str, _Subscriber] = {}
        self._worker: threading.Thread | None = None
        self._closed = False
        self._ids = itertools.count(1)

    @classmethod
    def from_model(cls, paged: PagedLlama, tokenizer: Any, **options: Any) -> TorchEngine:
        """An engine over an already built (and maybe quantised) model; shares its weights."""
        engine = cls(**options)
        engine._paged = paged
        engine._tokenizer = tokenizer
        return engine

    # ------------------------------------------------------------------ loading

    def load(self) -> None:
        """Load the model and build the engine core (blocking; ``start`` runs it in a thread)."""
        with self._load_lock:
            if self._core is not None:
                return
            if self.threads:
                torch.set_num_threads(self.threads)
            if self._paged is None:
                hf_model, self._tokenizer = load_hf_model(self.model)
                paged = PagedLlama.from_hf(hf_model)
                del hf_model
                self._paged = quantize_model(paged, self.quantization)  # type: ignore[assignment]
            assert self._paged is not None
            shape = self._paged.shape
            per_block = shape.kv_bytes_per_token(self._paged.dtype) * self.block_size
            num_blocks = max(1, (self.kv_cache_mb << 20) // per_block)
            config = EngineConfig(
                block_size=self.block_size,
                num_blocks=num_blocks,
                max_batch_size=self.max_batch_size,
                max_batched_tokens=self.max_batched_tokens,
                max_model_len=min(self.max_model_len, shape.max_positions),
                enable_prefix_caching=self.enable_prefix_caching,
                speculative=self._speculative_config,
                seed=self.seed,
            )
            self._core = EngineCore(self._paged, config, self._eos_ids())

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        eos = getattr(self._tokenizer, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        return ids

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer (after :meth:`load`)."""
        if self._tokenizer is None:
            raise ServiceUnavailable("the engine is not loaded yet", code="not_loaded")
        return self._tokenizer

    @property
    def core(self) -> EngineCore:
        if self._core is None:
            raise ServiceUnavailable("the engine is not loaded yet", code="not_loaded")
        return self._core

    def encode_chat(self, messages: Sequence[dict[str, Any]]) -> list[int]:
        """Token ids of ``messages`` through the model's chat template, ready for an answer."""
        text = self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=False
        )
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    async def start(self) -> None:
        """Load the model (in a thread) and start the worker; later calls return at once."""
        if self._closed:
            raise ServiceUnavailable("the engine is closed", code="engine_closed")
        if self._core is None:
            await asyncio.to_thread(self.load)
        with self._wakeup:
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="torch-engine", daemon=True)
                self._worker.start()

    async def close(self) -> None:
        """Stop the worker; unfinished requests end with an error."""
        self._closed = True
        with self._wakeup:
            self._inbox.append(("stop", None))
            self._wakeup.notify()
            worker = self._worker
        if worker is not None:
            await asyncio.to_thread(worker.join)

    # ------------------------------------------------------------------ requests

    async def submit(
        self,
        prompt_token_ids: Sequence[int],
        params: SamplingParams,
        request_id: str | None = None,
    ) -> RequestHandle:
        """Queue a request; it joins the running batch at the next step."""
        await self.start()
        request_id = request_id or f"req-{next(self._ids)}"
        if params.seed is None:
            params = replace(params, seed=self.seed)
        request = GenerationRequest(request_id, tuple(prompt_token_ids), params)
        subscriber = _Subscriber(asyncio.get_running_loop(), asyncio.Queue())
        with self._wakeup:
            if request_id in self._subscribers:
                raise ConfigError(f"request id {request_id!r} is in use", param="request_id")
            self._subscribers[request_id] = subscriber
            self._inbox.append(("add", request))
            self._wakeup.notify()
        return RequestHandle(self, request_id, subscriber)

    async def stream(
        self,
        prompt_token_ids: Sequence[int],
        params: SamplingParams,
        request_id: str | None = None,
    ) -> AsyncGenerator[TokenEvent, None]:
        """Submit and stream one request's events; closing the stream cancels the request."""
        handle = await self.submit(prompt_token_ids, params, request_id)
        try:
            async for event in handle.events():
                yield event
        finally:
            if not handle.finished:  # closed early: free the request's blocks now
                self._post_abort(handle.request_id)

    async def generate(
        self,
        prompt_token_ids: Sequence[int],
        params: SamplingParams,
        request_id: str | None = None,
    ) -> GenerationResult:
        """Submit one request and wait for all of its tokens."""
        tokens: list[int] = []
        logprobs: list[TokenLogprob] = []
        last: TokenEvent | None = None
        async for event in self.stream(prompt_token_ids, params, request_id):
            tokens.extend(event.token_ids)
            logprobs.extend(event.logprobs)
            last = event
        assert last is not None and last.finish_reason is not None
        return GenerationResult(
            last.request_id,
            tuple(tokens),
            tuple(logprobs),
            last.finish_reason,
            last.prompt_tokens,
            last.cached_tokens,
        )

    async def cancel(self, request_id: str) -> bool:
        """Cancel a request; returns once its KV blocks are back in the pool (False: unknown)."""
        if self._worker is None:
            return False
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        with self._wakeup:
            self._inbox.append(("abort", (request_id, done)))
            self._wakeup.notify()
        return await done

    def _post_abort(self, request_id: str) -> None:
        with self._wakeup:
            self._inbox.append(("abort", (request_id, None)))
            self._wakeup.notify()

    def stats(self) -> EngineStats:
        """A copy of the engine's counters."""
        return replace(self.core.stats)

    def gauges(self) -> dict[str, float]:
        """What the server exports on /metrics: batch size, KV blocks, prefix-cache hit rate.

        Read from the event loop while the worker thread steps: each figure is one attribute
        read, so a scrape sees a consistent-enough snapshot without taking the worker's lock.
        Empty until the model is loaded.
        """
        core = self._core
        if core is None:
            return {}
        counters = core.stats
        return {
            "batch_size": float(len(core.running)),
            "kv_blocks_used": float(core.blocks.num_used_blocks),
            "kv_blocks_total": float(core.config.num_blocks),
            "prefix_cache_hit_rate": (
                counters.cached_prompt_tokens / counters.prompt_tokens
                if counters.prompt_tokens
                else 0.0
            ),
            "preemptions": float(counters.preemptions),
            "generated_tokens": float(counters.generated_tokens),
        }

    # ------------------------------------------------------------------ the worker thread

    def _run(self) -> None:
        # OpenMP keeps its thread count per OS thread: without this, the worker would run with
        # every core whatever the process chose (measured: 30x slower matmuls on a busy 2-core box)
        torch.set_num_threads(self.threads or torch.get_num_threads())
        core = self.core
        while True:
            with self._wakeup:
                while not self._inbox and not core.has_work():
                    self._wakeup.wait()
                commands = list(self._inbox)
                self._inbox.clear()
            stop = False
            for kind, payload in commands:
                if kind == "add":
                    self._add(core, payload)
                elif kind == "abort":
                    self._abort(core, *payload)
                else:
                    stop = True
            if stop:
                self._deliver(core.fail_all(ServiceUnavailable("the engine was closed")))
                return
            try:
                events = core.step()
            except Exception as exc:  # a failed step ends its requests, never the worker
                _log.exception("torch engine step failed")
                events = core.fail_all(ServiceUnavailable(f"the engine step failed: {exc}"))
            self._deliver(events)

    def _add(self, core: EngineCore, request: GenerationRequest) -> None:
        try:
            core.add_request(request)
        except GFError as exc:
            self._deliver(
                [TokenEvent(request.request_id, finished=True, finish_reason="error", error=exc)]
            )

    def _abort(self, core: EngineCore, request_id: str, done: asyncio.Future[bool] | None) -> None:
        event = core.abort(request_id)
        if event is not None:
            self._deliver([event])
        if done is not None:
            loop = done.get_loop()
            self._call_soon(loop, _resolve, done, event is not None)

    def _deliver(self, events: list[TokenEvent]) -> None:
        for event in events:
            with self._wakeup:
                subscriber = self._subscribers.get(event.request_id)
                if event.finished:
                    self._subscribers.pop(event.request_id, None)
            if subscriber is None:
                continue
            delivered = self._call_soon(subscriber.loop, subscriber.queue.put_nowait, event)
            if not delivered and not event.finished:
                self._post_abort(event.request_id)  # the consumer's loop is gone

    @staticmethod
    def _call_soon(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> bool:
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop was closed
            return False
        return True


def _resolve(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)
