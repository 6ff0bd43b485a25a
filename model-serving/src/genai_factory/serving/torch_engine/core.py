"""The engine core: an iteration-level scheduler with continuous batching over a paged KV cache.

Each :meth:`EngineCore.step` is one forward pass. Before it, the scheduler makes room for every
running request's next token (preempting the youngest request if the cache is full; it is
recomputed later, mostly from the prefix cache), then admits waiting requests while the batch and
token budget allow, reusing cached prefix blocks. The step computes the new requests' prompts and
one token of every running request (or a draft to verify, with speculative decoding) together.
After it, finished requests leave the batch and free their blocks, so the next step has room.

Synchronous and single-threaded: :class:`~genai_factory.serving.torch_engine.engine.TorchEngine`
drives it from a worker thread. Tests drive it directly:

    core = EngineCore(PagedLlama.from_hf(hf_model), EngineConfig(), eos_token_ids={2})
    core.add_request(GenerationRequest("r1", prompt_ids, SamplingParams(temperature=0)))
    while core.has_work():
        for event in core.step():
            print(event.request_id, event.token_ids, event.finish_reason)
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from genai_factory.serving.torch_engine.block_manager import BlockCopy, BlockManager
from genai_factory.serving.torch_engine.model import ForwardBatch, PagedLlama, SpanInput
from genai_factory.serving.torch_engine.sampling import (
    SamplingParams,
    TokenLogprob,
    choose_token,
    logprobs_of,
    target_probs,
    verify_draft,
)
from genai_factory.serving.torch_engine.speculative import (
    DraftLength,
    NgramProposer,
    SpeculativeConfig,
)
from genai_factory.shared.errors import GFError, ServiceUnavailable, ValidationError

__all__ = ["EngineConfig", "EngineCore", "EngineStats", "GenerationRequest", "TokenEvent"]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Scheduler and cache sizes.

    Args:
        block_size: token slots per KV-cache block.
        num_blocks: blocks in the KV-cache pool.
        max_batch_size: requests running at once.
        max_batched_tokens: tokens computed per step; the first prompt of a step always fits.
        max_model_len: prompt plus answer tokens per request.
        enable_prefix_caching: reuse the KV of equal prompt prefixes across requests.
        speculative: speculative decoding settings, or ``None``.
        seed: the generator seed of requests that give none.
    """

    block_size: int = 16
    num_blocks: int = 512
    max_batch_size: int = 32
    max_batched_tokens: int = 2048
    max_model_len: int = 2048
    enable_prefix_caching: bool = True
    speculative: SpeculativeConfig | None = None
    seed: int = 0


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A tokenised prompt and how to continue it."""

    request_id: str
    prompt_token_ids: tuple[int, ...]
    params: SamplingParams


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """New tokens of one request after a step; the last event has ``finished=True``.

    ``finish_reason`` is ``stop`` (EOS or a stop token), ``length`` (max tokens or context),
    ``cancelled`` or ``error`` (then ``error`` says why).
    """

    request_id: str
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    finished: bool = False
    finish_reason: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    error: GFError | None = None


@dataclass(slots=True)
class EngineStats:
    """Counters since the engine started."""

    steps: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    computed_prompt_tokens: int = 0
    generated_tokens: int = 0
    draft_tokens: int = 0
    accepted_draft_tokens: int = 0
    preemptions: int = 0
    max_running: int = 0
    finished_requests: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_draft_tokens / self.draft_tokens if self.draft_tokens else 0.0


@dataclass(slots=True)
class _Sequence:
    request: GenerationRequest
    tokens: list[int]
    generator: torch.Generator
    arrival: float
    generated: int = 0
    cached_tokens: int = 0
    admitted: bool = False
    draft_length: DraftLength | None = None

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def params(self) -> SamplingParams:
        return self.request.params


@dataclass(slots=True)
class _Scheduled:
    sequence: _Sequence
    lookahead: int = 0
    prefill: bool = False
    cached: int = 0
    draft: list[int] = field(default_factory=list)
    draft_probs: Tensor | None = None


class EngineCore:
    """Scheduler, KV cache and model runner for one model.

    Args:
        model: our paged Llama.
        config: cache and batch sizes.
        eos_token_ids: tokens that end every request (unless it sets ``ignore_eos``).
    """

    def __init__(
        self, model: PagedLlama, config: EngineConfig, eos_token_ids: Iterable[int]
    ) -> None:
        self.model = model
        self.config = config
        self.eos_token_ids = frozenset(eos_token_ids)
        self.blocks = BlockManager(
            config.num_blocks, config.block_size, config.enable_prefix_caching
        )
        self.cache = model.new_cache(config.num_blocks, config.block_size)
        self.waiting: deque[_Sequence] = deque()
        self.running: list[_Sequence] = []
        self.stats = EngineStats()
        speculative = config.speculative
        self._proposer: NgramProposer | None = None
        if speculative is not None and speculative.method == "ngram":
            self._proposer = NgramProposer(
                speculative.num_tokens, speculative.max_ngram, speculative.min_ngram
            )
        if (
            speculative is not None
            and speculative.method == "draft"
            and speculative.draft_layers >= model.shape.num_layers
        ):
            raise ValidationError(
                f"draft_layers must be fewer than the model's {model.shape.num_layers}",
                param="speculative",
            )

    # ------------------------------------------------------------------ requests

    def add_request(self, request: GenerationRequest) -> None:
        """Queue a request; it joins the running batch at the next step with room."""
        prompt = request.prompt_token_ids
        if not prompt:
            raise ValidationError("the prompt has no tokens", param="messages")
        if len(prompt) >= self.config.max_model_len:
            raise ValidationError(
                f"this engine's context is {self.config.max_model_len} tokens; the prompt "
                f"takes {len(prompt)}",
                param="messages",
                code="context_length_exceeded",
            )
        if self.blocks.blocks_needed(len(prompt) + 1) > self.config.num_blocks:
            raise ValidationError(
                "the prompt does not fit the KV cache",
                param="messages",
                code="context_length_exceeded",
            )
        vocab = self.model.shape.vocab_size
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise ValidationError(f"token ids must be in 0..{vocab - 1}", param="prompt")
        known = {s.request_id for s in (*self.waiting, *self.running)}
        if request.request_id in known:
            raise ValidationError(f"request id {request.request_id!r} is already running")
        seed = request.params.seed if request.params.seed is not None else self.config.seed
        generator = torch.Generator().manual_seed(seed)
        speculative = self.config.speculative
        draft_length = None
        if speculative is not None and speculative.adaptive:
            cost = speculative.draft_cost(self.model.shape.num_layers) + speculative.verify_cost
            draft_length = DraftLength(speculative.num_tokens, cost)
        self.waiting.append(
            _Sequence(
                request,
                list(prompt),
                generator,
                arrival=time.perf_counter(),
                draft_length=draft_length,
            )
        )

    def abort(self, request_id: str) -> TokenEvent | None:
        """Cancel a request now: its blocks go back to the pool before this returns."""
        for sequence in list(self.waiting):
            if sequence.request_id == request_id:
                self.waiting.remove(sequence)
                self.blocks.free(request_id)
                return self._final(sequence, "cancelled")
        for sequence in self.running:
            if sequence.request_id == request_id:
                self.running.remove(sequence)
                self.blocks.free(request_id)
                return self._final(sequence, "cancelled")
        return None

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def fail_all(self, error: GFError) -> list[TokenEvent]:
        """End every request with ``error`` and forget cached prefixes (their KV is suspect)."""
        events = []
        for sequence in [*self.running, *self.waiting]:
            self.blocks.free(sequence.request_id)
            events.append(self._final(sequence, "error", error))
        self.running.clear()
        self.waiting.clear()
        self.blocks.reset_prefix_cache()
        return events

    # ------------------------------------------------------------------ one step

    def step(self) -> list[TokenEvent]:
        """Schedule, run one forward pass, sample; returns the tokens each request got."""
        events: list[TokenEvent] = []
        scheduled, copies = self._schedule(events)
        if not scheduled:
            return events
        self.stats.steps += 1
        self.stats.max_running = max(self.stats.max_running, len(self.running))
        self.cache.copy_blocks([(c.source, c.destination) for c in copies])
        self._draft(scheduled)
        # single-token decodes first (one batched attention call), then multi-token spans
        ordered = sorted(scheduled, key=lambda item: not self._is_plain_decode(item))
        batch, row_groups = self._build_batch(ordered)
        logits = self.model(batch, self.cache)
        for item, rows in zip(ordered, row_groups, strict=True):
            event = self._advance(item, logits[rows])
            if event is not None:
                events.append(event)
        return events

    def _is_plain_decode(self, item: _Scheduled) -> bool:
        return not item.prefill and not item.draft

    def _schedule(self, events: list[TokenEvent]) -> tuple[list[_Scheduled], list[BlockCopy]]:
        config = self.config
        speculating = self._speculating()
        scheduled: list[_Scheduled] = []
        copies: list[BlockCopy] = []
        preempted = False
        for sequence in list(self.running):
            if sequence not in self.running:  # preempted while making room for an older one
                continue
            lookahead = self._lookahead(sequence) if speculating else 0
            while not self.blocks.can_reserve(sequence.request_id, lookahead):
                if lookahead:
                    lookahead = 0  # drop speculation before dropping requests
                    continue
                victim = self.running[-1]
                self._preempt(victim)
                preempted = True
                if victim is sequence:
                    break
            if sequence in self.running:
                copies.extend(self.blocks.reserve(sequence.request_id, lookahead))
                scheduled.append(_Scheduled(sequence, lookahead))
        budget = config.max_batched_tokens - sum(1 + item.lookahead for item in scheduled)
        admitted = 0
        while self.waiting and not preempted and len(self.running) < config.max_batch_size:
            sequence = self.waiting[0]
            if not self.blocks.can_allocate(sequence.tokens):
                if self.running or admitted:
                    break  # wait for running requests to free blocks
                self.waiting.popleft()  # cannot fit even in an empty cache
                error = ServiceUnavailable(
                    "the KV cache cannot hold this request", code="kv_cache_exhausted"
                )
                events.append(self._final(sequence, "error", error))
                continue
            hits = len(self.blocks.cached_prefix_blocks(sequence.tokens)) * config.block_size
            new_tokens = len(sequence.tokens) - hits
            if admitted and new_tokens > budget:
                break
            self.waiting.popleft()
            cached = self.blocks.allocate(sequence.request_id, sequence.tokens)
            if not sequence.admitted:
                sequence.cached_tokens = cached
                sequence.admitted = True
                self.stats.prompt_tokens += len(sequence.tokens)
                self.stats.cached_prompt_tokens += cached
            self.stats.computed_prompt_tokens += len(sequence.tokens) - cached
            self.running.append(sequence)
            scheduled.append(_Scheduled(sequence, prefill=True, cached=cached))
            budget -= new_tokens
            admitted += 1
        return scheduled, copies

    def _speculating(self) -> bool:
        """Whether this step drafts at all (off above the configured batch size)."""
        speculative = self.config.speculative
        if speculative is None:
            return False
        limit = speculative.max_batch_size
        return limit is None or len(self.running) <= limit

    def _lookahead(self, sequence: _Sequence) -> int:
        """Draft tokens to reserve room for: fixed, or what the request's controller picks."""
        room = self._room(sequence) - 1
        if room <= 0:
            return 0
        if sequence.draft_length is not None:
            return sequence.draft_length.next_length(room)
        speculative = self.config.speculative
        assert speculative is not None
        return min(speculative.num_tokens, room)

    def _room(self, sequence: _Sequence) -> int:
        """Tokens the sequence may still generate."""
        left = sequence.params.max_tokens - sequence.generated
        return min(left, self.config.max_model_len - len(sequence.tokens))

    def _preempt(self, sequence: _Sequence) -> None:
        self.running.remove(sequence)
        self.blocks.free(sequence.request_id)
        self.waiting.appendleft(sequence)
        self.stats.preemptions += 1

    # ------------------------------------------------------------------ drafting

    def _draft(self, scheduled: list[_Scheduled]) -> None:
        speculative = self.config.speculative
        candidates = [item for item in scheduled if item.lookahead > 0 and not item.prefill]
        if speculative is None or not candidates:
            return
        if self._proposer is not None:
            for item in candidates:
                item.draft = self._proposer.propose(item.sequence.tokens, item.lookahead)
        else:
            self._draft_with_model(candidates, speculative.draft_layers)
        self.stats.draft_tokens += sum(len(item.draft) for item in candidates)

    def _draft_with_model(self, items: list[_Scheduled], layers: int) -> None:
        """Run the first ``layers`` layers autoregressively; they share the target's KV cache."""
        inputs = {id(item): item.sequence.tokens[-1] for item in items}
        probs: dict[int, list[Tensor]] = {id(item): [] for item in items}
        for step in range(max(item.lookahead for item in items)):
            active = [item for item in items if item.lookahead > step]
            positions = [len(item.sequence.tokens) - 1 + step for item in active]
            tables = [self.blocks.block_table(item.sequence.request_id) for item in active]
            batch = self._decode_batch([inputs[id(item)] for item in active], positions, tables)
            logits = self.model(batch, self.cache, num_layers=layers)
            for row, item in enumerate(active):
                params = item.sequence.params
                if params.greedy:
                    token = int(torch.argmax(logits[row]))
                else:
                    distribution = target_probs(logits[row], params)
                    probs[id(item)].append(distribution)
                    token = int(
                        torch.multinomial(distribution, 1, generator=item.sequence.generator)
                    )
                item.draft.append(token)
                inputs[id(item)] = token
        for item in items:
            if probs[id(item)]:
                item.draft_probs = torch.stack(probs[id(item)])

    def _decode_batch(
        self, tokens: list[int], positions: list[int], tables: list[list[int]]
    ) -> ForwardBatch:
        block_size = self.config.block_size
        width = max(len(t) for t in tables)
        padded = torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.long)
        position_tensor = torch.tensor(positions, dtype=torch.long)
        rows = torch.arange(len(tokens))
        slots = padded[rows, position_tensor // block_size] * block_size + (
            position_tensor % block_size
        )
        return ForwardBatch(
            token_ids=torch.tensor(tokens, dtype=torch.long),
            positions=position_tensor,
            slot_mapping=slots,
            num_decodes=len(tokens),
            decode_block_tables=padded,
            decode_context_lens=position_tensor + 1,
            spans=[],
            logits_rows=rows,
        )

    # ------------------------------------------------------------------ the forward batch

    def _build_batch(self, ordered: list[_Scheduled]) -> tuple[ForwardBatch, list[slice]]:
        block_size = self.config.block_size
        token_ids: list[int] = []
        positions: list[Tensor] = []
        slots: list[Tensor] = []
        spans: list[SpanInput] = []
        logits_rows: list[int] = []
        row_groups: list[slice] = []
        decode_tables: list[list[int]] = []
        decode_lengths: list[int] = []
        for item in ordered:
            sequence = item.sequence
            table_list = self.blocks.block_table(sequence.request_id)
            table = torch.tensor(table_list, dtype=torch.long)
            start = self.blocks.num_computed(sequence.request_id)
            chunk = sequence.tokens[start:] + item.draft
            first_row = len(token_ids)
            span_positions = torch.arange(start, start + len(chunk))
            token_ids.extend(chunk)
            positions.append(span_positions)
            slots.append(
                table[span_positions // block_size] * block_size + span_positions % block_size
            )
            context = start + len(chunk)
            if self._is_plain_decode(item):
                decode_tables.append(table_list)
                decode_lengths.append(context)
            else:
                spans.append(SpanInput(first_row, len(chunk), context, table))
            wanted = len(chunk) if item.draft else 1  # a draft needs every row verified
            group_start = len(logits_rows)
            logits_rows.extend(range(first_row + len(chunk) - wanted, first_row + len(chunk)))
            row_groups.append(slice(group_start, len(logits_rows)))
        width = max((len(t) for t in decode_tables), default=1)
        padded = [t + [0] * (width - len(t)) for t in decode_tables]
        batch = ForwardBatch(
            token_ids=torch.tensor(token_ids, dtype=torch.long),
            positions=torch.cat(positions),
            slot_mapping=torch.cat(slots),
            num_decodes=len(decode_tables),
            decode_block_tables=torch.tensor(padded, dtype=torch.long).reshape(-1, width),
            decode_context_lens=torch.tensor(decode_lengths, dtype=torch.long),
            spans=spans,
            logits_rows=torch.tensor(logits_rows, dtype=torch.long),
        )
        return batch, row_groups

    # ------------------------------------------------------------------ after the step

    def _advance(self, item: _Scheduled, logits: Tensor) -> TokenEvent | None:
        sequence = item.sequence
        params = sequence.params
        if item.draft:
            kept = verify_draft(logits, item.draft, item.draft_probs, params, sequence.generator)
            self.stats.accepted_draft_tokens += len(kept) - 1
            if sequence.draft_length is not None:
                sequence.draft_length.update(len(item.draft), len(kept) - 1)
        else:
            kept = [choose_token(logits[-1], params, sequence.generator)]
        computed = len(sequence.tokens) + len(kept) - 1
        new_tokens: list[int] = []
        logprobs: list[TokenLogprob] = []
        reason: str | None = None
        for row, token in enumerate(kept):
            new_tokens.append(token)
            if params.logprobs is not None:
                logprobs.append(logprobs_of(logits[row], token, params.logprobs))
            sequence.generated += 1
            reason = self._stop_reason(sequence, token, len(sequence.tokens) + len(new_tokens))
            if reason is not None:
                break
        sequence.tokens.extend(new_tokens)
        self.blocks.append_tokens(sequence.request_id, new_tokens)
        self.blocks.mark_computed(sequence.request_id, min(computed, len(sequence.tokens)))
        self.stats.generated_tokens += len(new_tokens)
        if reason is not None:
            self.running.remove(sequence)
            self.blocks.free(sequence.request_id)
            self.stats.finished_requests += 1
        return TokenEvent(
            request_id=sequence.request_id,
            token_ids=tuple(new_tokens),
            logprobs=tuple(logprobs),
            finished=reason is not None,
            finish_reason=reason,
            prompt_tokens=len(sequence.request.prompt_token_ids),
            cached_tokens=sequence.cached_tokens,
        )

    def _stop_reason(self, sequence: _Sequence, token: int, length: int) -> str | None:
        params = sequence.params
        if not params.ignore_eos and (
            token in self.eos_token_ids or token in params.stop_token_ids
        ):
            return "stop"
        if sequence.generated >= params.max_tokens or length >= self.config.max_model_len:
            return "length"
        return None

    def _final(self, sequence: _Sequence, reason: str, error: GFError | None = None) -> TokenEvent:
        return TokenEvent(
            request_id=sequence.request_id,
            finished=True,
            finish_reason=reason,
            prompt_tokens=len(sequence.request.prompt_token_ids),
            cached_tokens=sequence.cached_tokens,
            error=error,
        )
