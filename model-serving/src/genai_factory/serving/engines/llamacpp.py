"""The llama.cpp engine: a GGUF model behind the ChatModel contract, with continuous batching.

llama-cpp-python's high-level ``Llama`` generates one sequence at a time. This engine keeps it
only for what it does well (the model file, the tokenizer, the chat template, the grammars for
tools and JSON mode) and runs generation itself over llama.cpp's low-level API: one context with
``parallel`` sequence slots (each with its own ``context_window`` of KV cache), and one worker
thread that, at every step, puts the next prompt chunk or the last sampled token of every
running sequence into one ``llama_decode`` batch, then samples each sequence from its own logits
row with its own sampler chain (temperature, top-p, seed, grammar). Requests join and leave
between steps (continuous batching); a slot keeps the tokens of its last sequence in its KV
cache, so a request that starts with the same tokens (the chat template's system prompt, a
conversation's history) skips that part of the prompt.

Answers, streamed or not, are made token by token: closing a stream or cancelling the task that
awaits an answer (a client that disconnects) drops the sequence at the next step, which frees
its slot for the next request.

``batch_width`` caps how many sequences run together (default: every slot). Batching pays only
where a step over several sequences costs less than that many single steps. On a CPU where the
model is compute-bound it does not: each answer then takes as many steps as it has tokens, at
the pace of the whole batch, while a queue serves each one at full speed once its turn comes,
so the same throughput comes with a longer tail. ``batch_width=1`` makes the engine a queue
that still keeps ``parallel`` prompt caches (a request takes the slot that shares the longest
prefix with it). Measure on the target machine: ``benchmarks/bench_server.py`` runs both.

The engine reaches into a few private parts of llama-cpp-python (``Llama._model``,
``Llama._chat_handlers``, ``llama_cpp._internals``): the version is pinned (0.3.36) and the tests
compare its answers with ``Llama``'s own.

A model server drives it through a few optional methods beside the ChatModel contract:
``load()`` (read the weights now instead of on the first request), ``close()`` (free them),
``memory_bytes()`` (what it holds, for a memory budget) and ``stats()`` (gauges for /metrics).

Example:
    >>> import asyncio
    >>> from genai_factory.shared.models import ChatCompletionRequest
    >>> from genai_factory.serving.engines.llamacpp import LlamaCppChatModel
    >>> model = LlamaCppChatModel("smollm2", parallel=2)
    >>> request = ChatCompletionRequest(model="smollm2", temperature=0, max_tokens=8,
    ...     messages=[{"role": "user", "content": "Say hello."}])
    >>> answer = asyncio.run(model.complete(request))
    >>> answer.usage.completion_tokens <= 8
    True
    >>> model.close()
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genai_factory.serving.registry import resolve_model_path
from genai_factory.shared.errors import ServiceUnavailable, ValidationError
from genai_factory.shared.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    Usage,
    parse,
)

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = ["LlamaCppChatModel"]

# the per-step cap on tokens in one llama_decode call (prompt chunks + one token per decoder)
_BATCH_TOKENS = 512
# a prefix held by another slot is copied over when it saves at least this many tokens
_COPY_MIN_TOKENS = 8


def _default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


class _Captured(Exception):
    """Carries the arguments llama-cpp-python's chat handler would generate with."""

    def __init__(self, arguments: dict[str, Any]) -> None:
        super().__init__("captured")
        self.arguments = arguments


class _CaptureLlama:
    """Stands in for ``Llama`` in its own ``create_chat_completion``: the chat handler renders
    the template, tokenizes and builds the grammar (tools, JSON mode) exactly as for ``Llama``,
    then calls ``create_completion``, which here hands its arguments back instead of
    generating. Generation is this engine's batched loop."""

    verbose = False

    def __init__(self, llama: Llama) -> None:
        self._llama = llama
        self.chat_handler = llama.chat_handler
        self._chat_handlers = llama._chat_handlers
        self.chat_format = llama.chat_format

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        return self._llama.tokenize(text, add_bos=add_bos, special=special)

    def create_completion(self, **arguments: Any) -> Any:
        raise _Captured(arguments)


@dataclass
class _Job:
    """One request in the batch loop. Only the worker thread touches the generation state;
    the event loop sets ``cancelled`` and reads events from ``queue``."""

    prompt: list[int]
    options: dict[str, Any]
    max_tokens: int
    stop: list[bytes]
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[tuple[str, Any]]
    cancelled: threading.Event = field(default_factory=threading.Event)
    # a non-streamed answer gets its text in one piece at the end: no wake-up of the event
    # loop per token, whose GIL time the worker would wait for
    streaming: bool = True
    # worker state
    slot: int = -1
    pending: list[int] = field(default_factory=list)  # prompt tokens not yet decoded
    position: int = 0  # next KV position of this sequence
    generated: list[int] = field(default_factory=list)
    text: bytes = b""
    sent: int = 0  # bytes of text already handed out
    row: int = -1  # this step's logits row, or -1
    sampler: Any = None

    def emit(self, kind: str, value: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))
        except RuntimeError:  # the caller's event loop is gone: nobody is listening
            self.cancelled.set()


class _BatchLoop:
    """The worker thread that owns the llama.cpp context and runs every sequence."""

    def __init__(
        self,
        llama: Llama,
        parallel: int,
        context_window: int,
        threads: int,
        width: int | None = None,
        kv_unified: bool = False,
    ) -> None:
        import llama_cpp
        from llama_cpp import _internals

        self._lib = llama_cpp
        self._internals = _internals
        self.llama = llama
        self.parallel = parallel
        self.context_window = context_window
        # Llama's own settings (flash attention off, f16 KV, ...), so answers match it token
        # for token; only the size and the sequence count change
        params = llama_cpp.llama_context_params.from_buffer_copy(llama.context_params)
        params.n_ctx = context_window * parallel
        params.n_batch = _BATCH_TOKENS
        params.n_ubatch = _BATCH_TOKENS
        params.n_seq_max = parallel
        params.n_threads = threads
        params.n_threads_batch = threads
        # kv_unified False: one KV stream per slot, so a sequence attends over its own cache only
        # and its results do not depend on what else is in the batch (greedy answers repeat
        # under load). True: one shared cache (a sequence's own cells masked in), which llama.cpp
        # decodes faster in a batch; a slot's window is still held to context_window here.
        params.kv_unified = kv_unified
        self.context = _internals.LlamaContext(model=llama._model, params=params, verbose=False)
        self.memory = llama_cpp.llama_get_memory(self.context.ctx)
        self.batch = llama_cpp.llama_batch_init(_BATCH_TOKENS, 0, 1)
        self.vocab = llama._model.vocab
        self.n_vocab = llama.n_vocab()
        self.slot_tokens: list[list[int]] = [[] for _ in range(parallel)]
        self.free_slots = list(range(parallel))
        self.waiting: deque[_Job] = deque()
        self.running: list[_Job] = []
        self.lock = threading.Condition()
        self.closing = False
        self.generated_total = 0
        self.cached_total = 0
        self.copies = 0
        self.steps = 0
        # sequences admitted to run together (at most every slot)
        self.width = parallel if width is None else min(width, parallel)
        self.thread = threading.Thread(target=self._run, name="llamacpp-batch", daemon=True)
        self.thread.start()

    # --- called from the event loop ---

    def submit(self, job: _Job) -> None:
        with self.lock:
            if self.closing:
                raise ServiceUnavailable("the llama.cpp engine is closing")
            self.waiting.append(job)
            self.lock.notify()

    def wake(self) -> None:
        with self.lock:
            self.lock.notify()

    def close(self) -> None:
        with self.lock:
            self.closing = True
            self.lock.notify()
        self.thread.join()
        self._lib.llama_batch_free(self.batch)
        self.context.close()  # type: ignore[no-untyped-call]

    def stats(self) -> dict[str, float]:
        with self.lock:
            running = list(self.running)
            waiting = len(self.waiting)
            busy = self.parallel - len(self.free_slots)
        return {
            "batch_size": float(busy),
            "waiting": float(waiting),
            "slots": float(self.parallel),
            "batch_width": float(self.width),
            "kv_tokens_used": float(sum(job.position for job in running)),
            "kv_tokens_total": float(self.parallel * self.context_window),
            "tokens_generated_total": float(self.generated_total),
            "prompt_tokens_cached_total": float(self.cached_total),
            "prefix_copies_total": float(self.copies),
            "decode_steps_total": float(self.steps),
        }

    # --- the worker thread ---

    def _run(self) -> None:
        try:
            while True:
                with self.lock:
                    while not self.closing and not self.waiting and not self.running:
                        self.lock.wait()
                    if self.closing:
                        break
                    self._admit()
                self._drop_cancelled()
                if self.running:
                    try:
                        self._step()
                    except Exception as exc:  # one bad step fails its sequences, not the engine
                        self._fail_running(
                            ServiceUnavailable(
                                f"llama.cpp generation failed: {type(exc).__name__}: {exc}"
                            )
                        )
        except BaseException as exc:  # never leave a caller waiting on a dead thread
            error = ServiceUnavailable(f"llama.cpp generation failed: {type(exc).__name__}: {exc}")
            for job in self.running:
                job.emit("error", error)
            self.running.clear()
            with self.lock:
                self.closing = True
        with self.lock:
            leftover = list(self.waiting) + self.running
            self.waiting.clear()
            self.running = []
        for job in leftover:
            job.emit("error", ServiceUnavailable("the llama.cpp engine was closed"))

    def _admit(self) -> None:
        """Waiting requests take free slots, preferring the slot whose cached tokens share the
        longest prefix with the prompt (called with the lock held).

        A request whose prefix a running sequence is about to compute (its prompt is still
        pending, e.g. the chat template's system prompt in a wave of new requests) waits one
        step and then copies that cache, instead of computing the same tokens again.
        """
        deferred: list[_Job] = []
        while self.waiting and self.free_slots and len(self.running) < self.width:
            job = self.waiting.popleft()
            if job.cancelled.is_set():
                job.emit("end", ("cancelled", 0))
                continue
            # what each slot's cache (busy or not) shares with this prompt, measured once
            shared = [_common_prefix(tokens, job.prompt) for tokens in self.slot_tokens]
            if self._prefix_soon(job, max(shared)):
                deferred.append(job)
                continue
            best = max(self.free_slots, key=lambda slot: shared[slot])
            keep = shared[best]
            self.free_slots.remove(best)
            # another slot (busy or not) may hold a longer prefix, e.g. the chat template's
            # system prompt on a fresh slot: copy its cache over (llama.cpp copies a whole KV
            # stream at the next decode, a memcpy far cheaper than recomputing the prefix)
            donor = max(range(self.parallel), key=lambda slot: shared[slot])
            if donor != best and shared[donor] >= keep + _COPY_MIN_TOKENS:
                self._lib.llama_memory_seq_cp(self.memory, donor, best, -1, -1)
                self.slot_tokens[best] = list(self.slot_tokens[donor])
                keep = shared[donor]
                self.copies += 1
            # the last prompt token is always decoded again: its logits pick the first token
            keep = min(keep, len(job.prompt) - 1)
            self._lib.llama_memory_seq_rm(self.memory, best, keep, -1)
            self.slot_tokens[best] = job.prompt[:keep]
            self.cached_total += keep
            job.slot, job.position, job.pending = best, keep, job.prompt[keep:]
            job.sampler = self._sampler(job.options)
            self.running.append(job)
        self.waiting.extendleft(reversed(deferred))  # first in the queue again, order kept

    def _prefix_soon(self, job: _Job, cached: int) -> bool:
        """True when a running sequence's pending prompt shares at least ``_COPY_MIN_TOKENS``
        more of ``job``'s prompt than the best cache (``cached`` tokens) holds now: one step
        later it can be copied (never counting the prompt's last token, decoded again anyway)."""
        limit = len(job.prompt) - 1
        soon = max(
            (_common_prefix(other.prompt, job.prompt) for other in self.running if other.pending),
            default=0,
        )
        return min(soon, limit) >= min(cached, limit) + _COPY_MIN_TOKENS

    def _sampler(self, options: dict[str, Any]) -> Any:
        """The same sampler chain ``Llama`` builds for these options (see Llama._init_sampler)."""
        sampler = self._internals.LlamaSampler()  # type: ignore[no-untyped-call]
        if options.get("logit_bias"):
            bias = {int(k): float(v) for k, v in options["logit_bias"].items()}
            sampler.add_logit_bias(self.n_vocab, bias)
        sampler.add_penalties(
            n_vocab=self.n_vocab,
            penalty_last_n=self.llama.last_n_tokens_size,
            penalty_repeat=options["repeat_penalty"],
            penalty_freq=options["frequency_penalty"],
            penalty_present=options["presence_penalty"],
        )
        if options.get("grammar") is not None:
            sampler.add_grammar(self.llama._model, options["grammar"])
        temperature = options["temperature"]
        seed = options["seed"]
        if temperature < 0.0:
            sampler.add_dist(seed)
        elif temperature == 0.0:
            sampler.add_greedy()  # type: ignore[no-untyped-call]
        else:
            sampler.add_top_k(options["top_k"])
            sampler.add_typical(options["typical_p"], 1)
            sampler.add_top_p(options["top_p"], 1)
            sampler.add_min_p(options["min_p"], 1)
            sampler.add_temp(temperature)
            sampler.add_dist(seed)
        return sampler

    def _fail_running(self, error: Exception) -> None:
        """End every running sequence with ``error``; their slots start empty again."""
        for job in self.running:
            self._lib.llama_memory_seq_rm(self.memory, job.slot, 0, -1)
            self.slot_tokens[job.slot] = []
            job.sampler = None
            with self.lock:
                self.free_slots.append(job.slot)
            job.emit("error", error)
        self.running = []

    def _drop_cancelled(self) -> None:
        kept = []
        for job in self.running:
            if job.cancelled.is_set():
                self._finish(job, "cancelled")
            else:
                kept.append(job)
        self.running = kept

    def _finish(self, job: _Job, reason: str) -> None:
        """End a sequence: its slot (and the tokens in its KV cache) goes back to the pool."""
        job.sampler = None
        with self.lock:
            self.free_slots.append(job.slot)
        job.emit("end", (reason, len(job.generated)))

    def _step(self) -> None:
        """One llama_decode over every running sequence, then one token for each that is due."""
        batch = self.batch
        batch.n_tokens = 0
        budget = _BATCH_TOKENS
        # decoders first (one token each), so that a long prompt never stalls their answers
        ordered = sorted(self.running, key=lambda job: bool(job.pending))
        for job in ordered:
            job.row = -1
            if budget <= 0:
                continue
            if job.pending:
                chunk, job.pending = job.pending[:budget], job.pending[budget:]
            else:
                chunk = job.generated[-1:]
            for offset, token in enumerate(chunk):
                index = batch.n_tokens
                batch.token[index] = token
                batch.pos[index] = job.position + offset
                batch.n_seq_id[index] = 1
                batch.seq_id[index][0] = job.slot
                last = offset == len(chunk) - 1 and not job.pending
                batch.logits[index] = last
                if last:
                    job.row = index
                batch.n_tokens += 1
            job.position += len(chunk)
            self.slot_tokens[job.slot].extend(chunk)
            budget -= len(chunk)
        status = self._lib.llama_decode(self.context.ctx, batch)
        self.steps += 1
        if status != 0:
            # the cache has no room (cannot happen while every slot keeps to its own window)
            raise RuntimeError(f"llama_decode returned {status}")
        kept = []
        for job in self.running:
            if job.row < 0 or self._sample(job):
                kept.append(job)
        self.running = kept

    def _sample(self, job: _Job) -> bool:
        """Sample ``job``'s next token; hand out its text. False once the sequence ended."""
        token = job.sampler.sample(self.context, job.row)
        self.generated_total += 1
        if self._lib.llama_vocab_is_eog(self.vocab, token):
            self._flush(job, len(job.text))
            self._finish(job, "stop")
            return False
        job.generated.append(token)
        job.text += self.llama._model.detokenize([token], special=False)
        if _incomplete_utf8(job.text):
            return self._check_length(job)
        for stop in job.stop:
            at = job.text.find(stop)
            if at >= 0:
                self._flush(job, at)
                self._finish(job, "stop")
                return False
        if job.streaming:  # a non-streamed answer's text goes out once, when it ends
            # hold back what could be the start of a stop sequence
            hold = max((_overlap(job.text, stop) for stop in job.stop), default=0)
            self._flush(job, len(job.text) - hold)
        return self._check_length(job)

    def _check_length(self, job: _Job) -> bool:
        if len(job.generated) >= job.max_tokens:
            self._flush(job, len(job.text))
            self._finish(job, "length")
            return False
        return True

    @staticmethod
    def _flush(job: _Job, end: int) -> None:
        """Hand out the text up to byte ``end`` (whole characters only)."""
        piece = job.text[job.sent : end]
        while piece and _incomplete_utf8(piece):
            piece = piece[:-1]
        if piece:
            job.sent += len(piece)
            job.emit("text", piece.decode("utf-8", errors="ignore"))


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _overlap(text: bytes, stop: bytes) -> int:
    """The length of the longest end of ``text`` that begins ``stop``."""
    for size in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:size]):
            return size
    return 0


def _incomplete_utf8(data: bytes) -> bool:
    """Whether ``data`` ends in the middle of a UTF-8 character."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # a lead byte (or ASCII): does its character fit?
            need = 1 if byte < 0x80 else 2 if byte >= 0xC0 and byte < 0xE0 else 3
            if byte >= 0xF0:
                need = 4
            return need > back
    return False


class LlamaCppChatModel:
    """A GGUF chat model run by llama.cpp in this process, ``parallel`` sequences at a time.

    Args:
        model: a packaged model's name (``smollm2``) or a path to a ``.gguf`` file.
        context_window: tokens of context per sequence (prompt + answer).
        threads: CPU threads for generation (default: the CPUs this process may use).
        default_max_tokens: the answer's cap when a request sets none.
        seed: the sampler's seed when a request sets none, so runs repeat.
        parallel: sequence slots (each holds its own KV cache of ``context_window`` tokens);
            more requests wait for a free slot.
        batch_width: how many slots generate together in one batch (``None``: every slot; see
            the module docstring for when fewer answer sooner).
        kv_unified: one KV cache shared by every slot instead of one per slot. llama.cpp decodes
            a batch over it faster on a CPU (measured in the README's server benchmark), but a
            sequence's sums then depend on what else is cached, so greedy answers can differ
            under load where a near-tie flips (the default keeps them repeatable).
    """

    def __init__(
        self,
        model: str = "smollm2",
        context_window: int = 2048,
        threads: int | None = None,
        default_max_tokens: int = 256,
        seed: int = 0,
        parallel: int = 4,
        batch_width: int | None = None,
        kv_unified: bool = False,
    ) -> None:
        if context_window < 64:
            raise ValueError("context_window must be at least 64 tokens")
        if default_max_tokens < 1:
            raise ValueError("default_max_tokens must be at least 1")
        if not 1 <= parallel <= 256:
            raise ValueError("parallel must be at least 1 and at most 256")
        if batch_width is not None and (
            isinstance(batch_width, bool)
            or not isinstance(batch_width, int)
            or not 1 <= batch_width <= parallel
        ):
            raise ValueError("batch_width must be a whole number from 1 to parallel, or null")
        if not isinstance(kv_unified, bool):
            raise ValueError("kv_unified must be true or false")
        self.model = model
        self.context_window = context_window
        self.threads = threads
        self.default_max_tokens = default_max_tokens
        self.seed = seed
        self.parallel = parallel
        self.batch_width = batch_width
        self.kv_unified = kv_unified
        self._path: Path = resolve_model_path(model)
        self._llama: Llama | None = None
        self._loop: _BatchLoop | None = None
        self._load_lock = threading.Lock()

    def _load(self) -> _BatchLoop:
        with self._load_lock:
            if self._loop is None:
                from llama_cpp import Llama  # heavy import: only when a model is used

                threads = self.threads or _default_threads()
                # the high-level object's own context is never used for generation: keep it small
                llama = Llama(
                    model_path=str(self._path),
                    n_ctx=256,
                    n_batch=64,
                    n_threads=threads,
                    seed=self.seed,
                    verbose=False,
                )
                try:
                    self._loop = _BatchLoop(
                        llama,
                        self.parallel,
                        self.context_window,
                        threads,
                        self.batch_width,
                        self.kv_unified,
                    )
                except BaseException:
                    llama.close()
                    raise
                self._llama = llama
            return self._loop

    def load(self) -> None:
        """Read the weights and run one token through them now (blocking), so the first
        request does not pay for paging the file in."""
        with self._load_lock:
            fresh = self._loop is None
        loop = self._load()
        if fresh:
            llama = loop.llama
            llama.eval(llama.tokenize(b"Hello", add_bos=True))
            llama.reset()  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Free the weights and the context; the next request loads them again."""
        with self._load_lock:
            loop, self._loop = self._loop, None
            llama, self._llama = self._llama, None
        if loop is not None:
            loop.close()
        if llama is not None:
            llama.close()

    @property
    def loaded(self) -> bool:
        return self._loop is not None

    def memory_bytes(self) -> int:
        """Weights plus the KV cache for ``parallel`` x ``context_window`` tokens (once loaded)."""
        total = self._path.stat().st_size
        llama = self._llama
        if llama is not None:
            meta = llama.metadata
            arch = meta.get("general.architecture", "llama")
            try:
                layers = int(meta[f"{arch}.block_count"])
                width = int(meta[f"{arch}.embedding_length"])
                heads = int(meta[f"{arch}.attention.head_count"])
                kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", heads))
            except (KeyError, ValueError):
                return total
            # keys and values, f16 (2 bytes), for every layer and every token of every slot
            tokens = self.context_window * self.parallel
            total += 2 * layers * tokens * (width // heads) * kv_heads * 2
        return total

    def stats(self) -> dict[str, float]:
        """Gauges for a server's /metrics: running sequences, waiting ones, KV tokens held, and
        counters of generated tokens and decode steps."""
        loop = self._loop
        if loop is None:
            return {
                "batch_size": 0.0,
                "waiting": 0.0,
                "slots": float(self.parallel),
                "kv_tokens_used": 0.0,
                "kv_tokens_total": float(self.parallel * self.context_window),
                "tokens_generated_total": 0.0,
                "prompt_tokens_cached_total": 0.0,
                "prefix_copies_total": 0.0,
                "decode_steps_total": 0.0,
            }
        return loop.stats()

    @staticmethod
    def _message(index: int, message: ChatMessage) -> dict[str, Any]:
        """A message as the chat template expects it: text content, never None or parts."""
        if isinstance(message.content, list):
            for part_index, part in enumerate(message.content):
                if part.type != "text":
                    raise ValidationError(
                        f"this model reads text only; content part of type '{part.type}' "
                        "is not supported",
                        param=f"messages.{index}.content.{part_index}",
                        code="unsupported_content",
                    )
        data = message.model_dump(exclude_none=True)
        data["content"] = message.text()
        if message.tool_calls and not data["content"]:
            # the template renders content only: show the model the calls it made
            data["content"] = json.dumps(
                [call.function.model_dump() for call in message.tool_calls], ensure_ascii=False
            )
        return data

    def _arguments(self, request: ChatCompletionRequest) -> dict[str, Any]:
        messages = [self._message(i, message) for i, message in enumerate(request.messages)]
        args: dict[str, Any] = {
            "messages": messages,
            "max_tokens": request.output_limit or self.default_max_tokens,
            "seed": request.seed if request.seed is not None else self.seed,
        }
        if request.temperature is not None:
            args["temperature"] = request.temperature
        if request.top_p is not None:
            args["top_p"] = request.top_p
        if request.stop is not None:
            args["stop"] = request.stop
        if request.presence_penalty is not None:
            args["presence_penalty"] = request.presence_penalty
        if request.frequency_penalty is not None:
            args["frequency_penalty"] = request.frequency_penalty
        if request.tools:
            args["tools"] = [tool.model_dump(exclude_none=True) for tool in request.tools]
        if request.tool_choice is not None:
            choice = request.tool_choice
            args["tool_choice"] = choice if isinstance(choice, str) else choice.model_dump()
        if request.response_format is not None and request.response_format.type != "text":
            fmt = request.response_format
            # llama.cpp constrains output with a grammar built from the schema (json_object + schema)
            schema = fmt.json_schema.schema_ if fmt.json_schema is not None else fmt.schema_
            args["response_format"] = {"type": "json_object"} | (
                {"schema": schema} if schema else {}
            )
        return args

    def _prepare(
        self,
        loop: _BatchLoop,
        request: ChatCompletionRequest,
        event_loop: asyncio.AbstractEventLoop,
    ) -> tuple[_Job, str | None]:
        """Render, tokenize and build the grammar as llama-cpp-python would (in a worker
        thread: schemas compile to grammars); a job for the batch loop and the forced tool."""
        from llama_cpp import Llama

        args = self._arguments(request)
        try:
            Llama.create_chat_completion(_CaptureLlama(loop.llama), **args)  # type: ignore[arg-type]
        except _Captured as captured:
            options = captured.arguments
        except Exception as exc:
            raise _client_error(exc) from None
        else:  # pragma: no cover - the handler always asks for a completion
            raise ServiceUnavailable("the chat handler did not ask for a completion")
        prompt: list[int] = list(options["prompt"])
        if len(prompt) >= self.context_window:
            raise ValidationError(
                f"this model's context window is {self.context_window} tokens; the messages "
                f"take {len(prompt)}",
                param="messages",
                code="context_length_exceeded",
            )
        max_tokens = options.get("max_tokens") or self.default_max_tokens
        max_tokens = min(max_tokens, self.context_window - len(prompt))
        stop = options.get("stop") or []
        stop = [stop] if isinstance(stop, str) else stop
        tool = None
        choice = args.get("tool_choice")
        if isinstance(choice, dict) and args.get("tools"):
            tool = str(choice["function"]["name"])
        job = _Job(
            prompt=prompt,
            options=options,
            max_tokens=max_tokens,
            stop=[s.encode("utf-8") for s in stop if s],
            loop=event_loop,
            queue=asyncio.Queue(),
        )
        return job, tool

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        """One answer to ``request``, generated token by token: cancelling the awaiting task
        stops generation at the next step."""
        loop, job, tool = await self._submit(request, streaming=False)
        pieces: list[str] = []
        try:
            while True:
                kind, value = await job.queue.get()
                if kind == "text":
                    pieces.append(value)
                elif kind == "error":
                    raise value
                else:
                    reason, completion_tokens = value
                    break
        finally:
            job.cancelled.set()  # a no-op once the sequence ended; else it ends at the next step
            loop.wake()
        text = "".join(pieces)
        completion_id = f"chatcmpl-{uuid.uuid4()}"
        message: dict[str, Any] = {"role": "assistant", "content": text}
        finish = reason
        if tool is not None:
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call__0_{tool}_{completion_id}",
                        "type": "function",
                        "function": {"name": tool, "arguments": text},
                    }
                ],
            }
            finish = "tool_calls"
        usage = Usage(prompt_tokens=len(job.prompt), completion_tokens=completion_tokens)
        response = parse(
            ChatCompletionResponse,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request.model,
                "choices": [
                    {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
                ],
                "usage": usage.model_dump(),
            },
        )
        return response

    async def _submit(
        self, request: ChatCompletionRequest, streaming: bool = True
    ) -> tuple[_BatchLoop, _Job, str | None]:
        loop = await asyncio.to_thread(self._load)
        event_loop = asyncio.get_running_loop()
        job, tool = await asyncio.to_thread(self._prepare, loop, request, event_loop)
        job.streaming = streaming
        loop.submit(job)
        return loop, job, tool

    async def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        """Chunks of the answer as they are generated; the last carries the finish reason."""
        loop, job, tool = await self._submit(request)
        completion_id = f"chatcmpl-{uuid.uuid4()}"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> ChatCompletionChunk:
            return parse(
                ChatCompletionChunk,
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": request.model,
                    "choices": [
                        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                    ],
                },
            )

        tool_id = f"call__0_{tool}_{completion_id}"
        first = True
        try:
            while True:
                kind, value = await job.queue.get()
                if kind == "error":
                    raise value
                if first:
                    first = False
                    yield chunk({"role": "assistant"})
                if kind == "text":
                    if tool is None:
                        yield chunk({"content": value})
                    else:
                        call = {"name": tool, "arguments": value}
                        yield chunk(
                            {
                                "tool_calls": [
                                    {
                                        "index": 0,
                                        "id": tool_id,
                                        "type": "function",
                                        "function": call,
                                    }
                                ]
                            }
                        )
                    continue
                reason, completion_tokens = value
                yield chunk({}, "tool_calls" if tool is not None else reason)
                options = request.stream_options
                if options is not None and options.include_usage:
                    usage = Usage(
                        prompt_tokens=len(job.prompt), completion_tokens=completion_tokens
                    )
                    yield ChatCompletionChunk(
                        id=completion_id, model=request.model, created=created, usage=usage
                    )
                return
        finally:
            # a closed or cancelled stream ends its sequence at the next step
            job.cancelled.set()
            loop.wake()

    def to_params(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "context_window": self.context_window,
            "threads": self.threads,
            "default_max_tokens": self.default_max_tokens,
            "seed": self.seed,
            "parallel": self.parallel,
            "batch_width": self.batch_width,
            "kv_unified": self.kv_unified,
        }


def _client_error(exc: Exception) -> Exception:
    """llama.cpp's exceptions, sorted into the client's mistakes (400) and ours (503)."""
    from jinja2 import TemplateError

    if isinstance(exc, ValidationError | ServiceUnavailable):
        return exc
    if isinstance(exc, ValueError):  # e.g. a tool_choice naming no tool, a prompt too long
        return ValidationError(str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, TemplateError):  # the messages do not fit the model's chat template
        return ValidationError(
            f"the messages do not fit this model's chat template: {exc}",
            param="messages",
            code="invalid_messages",
        )
    return ServiceUnavailable(f"llama.cpp generation failed: {type(exc).__name__}: {exc}")
