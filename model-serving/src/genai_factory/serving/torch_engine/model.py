"""Our own Llama forward pass over a paged KV cache, built from a Hugging Face model's weights.

Every token of a step (prompt chunks of new requests and one token per running request) is packed
into one flat batch, so each projection and MLP is one matrix multiply for the whole step. K/V of
each layer are written into the block pool at the slots the block tables give, then attention
reads them back: running requests in one padded, masked call; each multi-token chunk (a prompt,
or a speculative verification run) in its own causal call.

The architecture is Llama (SmolLM2): RMSNorm, rotary position embeddings (rotate-half form), grouped
query attention, SwiGLU MLP. q/k/v and gate/up projections are fused into one matrix each.

Example (shapes only; the real model comes from :func:`load_hf_model`):

    model = PagedLlama.from_hf(hf_model)
    cache = model.new_cache(num_blocks=64, block_size=16)
    logits = model(batch, cache)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn
from torch.nn import functional

from genai_factory.serving.registry import resolve_model_path
from genai_factory.shared.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "ForwardBatch",
    "LlamaShape",
    "PagedKVCache",
    "PagedLlama",
    "SpanInput",
    "load_hf_model",
]


def load_hf_model(model: str = "smollm2") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a packaged GGUF model (or a ``.gguf`` path) with transformers, in fp32, offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(model)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    hf_model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    hf_model.eval()  # type: ignore[no-untyped-call]
    return hf_model, tokenizer


@dataclass(frozen=True, slots=True)
class LlamaShape:
    """The numbers that define a Llama model's tensors."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_positions: int

    @classmethod
    def from_hf_config(cls, config: Any) -> LlamaShape:
        if getattr(config, "model_type", None) not in {"llama", "mistral"}:
            raise ConfigError(
                f"the torch engine runs Llama-architecture models, not '{config.model_type}'",
                param="model",
            )
        rope = getattr(config, "rope_parameters", None) or {}
        if rope.get("rope_type", "default") != "default":
            raise ConfigError(
                f"rope scaling '{rope['rope_type']}' is not supported by the torch engine",
                param="model",
            )
        heads = int(config.num_attention_heads)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(
            vocab_size=int(config.vocab_size),
            hidden_size=int(config.hidden_size),
            intermediate_size=int(config.intermediate_size),
            num_layers=int(config.num_hidden_layers),
            num_heads=heads,
            num_kv_heads=int(config.num_key_value_heads or heads),
            head_dim=int(head_dim),
            rms_norm_eps=float(config.rms_norm_eps),
            rope_theta=float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))),
            max_positions=int(config.max_position_embeddings),
        )

    def kv_bytes_per_token(self, dtype: torch.dtype = torch.float32) -> int:
        element = torch.tensor([], dtype=dtype).element_size()
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * element


class PagedKVCache:
    """Per layer, K and V pools of shape ``[num_blocks, block_size, num_kv_heads, head_dim]``."""

    def __init__(
        self, shape: LlamaShape, num_blocks: int, block_size: int, dtype: torch.dtype
    ) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        dims = (num_blocks, block_size, shape.num_kv_heads, shape.head_dim)
        self.keys = [torch.zeros(dims, dtype=dtype) for _ in range(shape.num_layers)]
        self.values = [torch.zeros(dims, dtype=dtype) for _ in range(shape.num_layers)]

    def copy_blocks(self, pairs: Sequence[tuple[int, int]]) -> None:
        """Copy-on-write: block ``source`` -> ``destination`` in every layer."""
        if not pairs:
            return
        sources = torch.tensor([s for s, _ in pairs], dtype=torch.long)
        targets = torch.tensor([d for _, d in pairs], dtype=torch.long)
        for pool in (*self.keys, *self.values):
            pool[targets] = pool[sources]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


@dataclass(slots=True)
class SpanInput:
    """A run of ``length`` query tokens of one sequence, at flat rows ``start..start+length``.

    ``context_len`` counts the tokens of the sequence visible to the last query (cached ones
    included); ``block_table`` lists the blocks that hold them.
    """

    start: int
    length: int
    context_len: int
    block_table: Tensor


@dataclass(slots=True)
class ForwardBatch:
    """One step's tokens, flat. Single-token decodes come first (rows ``0..num_decodes``)."""

    token_ids: Tensor
    positions: Tensor
    slot_mapping: Tensor
    num_decodes: int
    decode_block_tables: Tensor  # [num_decodes, max_blocks]
    decode_context_lens: Tensor  # [num_decodes]
    spans: list[SpanInput]
    logits_rows: Tensor


class _RMSNorm(nn.Module):
    def __init__(self, weight: Tensor, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.eps = eps

    def forward(self, hidden: Tensor) -> Tensor:
        source_dtype = hidden.dtype
        hidden = hidden.float()
        hidden = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * hidden.to(source_dtype)


def _linear(weight: Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    layer.weight = nn.Parameter(weight.detach().contiguous(), requires_grad=False)
    return layer


class _DecoderLayer(nn.Module):
    def __init__(self, hf_layer: Any, shape: LlamaShape) -> None:
        super().__init__()
        attention, mlp = hf_layer.self_attn, hf_layer.mlp
        self.input_norm = _RMSNorm(hf_layer.input_layernorm.weight, shape.rms_norm_eps)
        self.post_attention_norm = _RMSNorm(
            hf_layer.post_attention_layernorm.weight, shape.rms_norm_eps
        )
        self.qkv_proj: nn.Module = _linear(
            torch.cat(
                [attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight], 0
            )
        )
        self.o_proj: nn.Module = _linear(attention.o_proj.weight)
        self.gate_up_proj: nn.Module = _linear(
            torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight], 0)
        )
        self.down_proj: nn.Module = _linear(mlp.down_proj.weight)


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class PagedLlama(nn.Module):
    """A Llama decoder that reads and writes its KV cache through block tables.

    Build it with :meth:`from_hf` from a loaded transformers ``LlamaForCausalLM``; the weights
    are copied into fused matrices, so the source model can be dropped afterwards.
    """

    rope_cos: Tensor
    rope_sin: Tensor

    def __init__(self, hf_model: Any) -> None:
        super().__init__()
        self.shape = LlamaShape.from_hf_config(hf_model.config)
        shape = self.shape
        core = hf_model.model
        self.embed = nn.Embedding(shape.vocab_size, shape.hidden_size)
        self.embed.weight = nn.Parameter(
            core.embed_tokens.weight.detach().clone(), requires_grad=False
        )
        self.layers = nn.ModuleList(_DecoderLayer(layer, shape) for layer in core.layers)
        self.norm = _RMSNorm(core.norm.weight, shape.rms_norm_eps)
        self.lm_head: nn.Module = _linear(hf_model.lm_head.weight.detach().clone())
        if getattr(hf_model.config, "tie_word_embeddings", False):
            self.lm_head.weight = self.embed.weight  # one tensor for both, as in the source
        inv_freq = 1.0 / (
            shape.rope_theta
            ** (torch.arange(0, shape.head_dim, 2, dtype=torch.int64).float() / shape.head_dim)
        )
        angles = torch.outer(torch.arange(shape.max_positions).float(), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("rope_cos", angles.cos(), persistent=False)
        self.register_buffer("rope_sin", angles.sin(), persistent=False)
        self.scale = 1.0 / math.sqrt(shape.head_dim)
        self.eval()

    @classmethod
    def from_hf(cls, hf_model: Any) -> PagedLlama:
        return cls(hf_model)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    def new_cache(self, num_blocks: int, block_size: int) -> PagedKVCache:
        return PagedKVCache(self.shape, num_blocks, block_size, self.dtype)

    def weight_bytes(self) -> int:
        """Bytes held by parameters and buffers (quantised weights included), rope tables aside."""
        total = 0
        for name, tensor in [*self.named_parameters(), *self.named_buffers()]:
            if not name.startswith("rope_"):
                total += tensor.numel() * tensor.element_size()
        for module in self.modules():
            weight_of = getattr(module, "weight", None)
            if hasattr(module, "_packed_params") and callable(weight_of):
                weight = weight_of()
                total += weight.numel() * weight.element_size()
        return total

    @torch.inference_mode()
    def forward(
        self, batch: ForwardBatch, cache: PagedKVCache, num_layers: int | None = None
    ) -> Tensor:
        """Logits ``[len(batch.logits_rows), vocab]`` after the first ``num_layers`` layers."""
        shape = self.shape
        hidden = self.embed(batch.token_ids)
        cos = self.rope_cos[batch.positions].unsqueeze(1)
        sin = self.rope_sin[batch.positions].unsqueeze(1)
        layers = cast(list[_DecoderLayer], list(self.layers)[:num_layers])
        q_size = shape.num_heads * shape.head_dim
        kv_size = shape.num_kv_heads * shape.head_dim
        for index, layer in enumerate(layers):
            residual = hidden
            normed = layer.input_norm(hidden)
            qkv = layer.qkv_proj(normed)
            q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
            q = q.view(-1, shape.num_heads, shape.head_dim)
            k = k.view(-1, shape.num_kv_heads, shape.head_dim)
            v = v.reshape(-1, shape.num_kv_heads, shape.head_dim)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            attention = self._attention(batch, cache, index, q, k, v)
            hidden = residual + layer.o_proj(attention.reshape(-1, q_size))
            residual = hidden
            gate, up = layer.gate_up_proj(layer.post_attention_norm(hidden)).chunk(2, dim=-1)
            hidden = residual + layer.down_proj(functional.silu(gate) * up)
        selected = self.norm(hidden[batch.logits_rows])
        logits: Tensor = self.lm_head(selected)
        return logits.float()

    def _attention(
        self, batch: ForwardBatch, cache: PagedKVCache, layer: int, q: Tensor, k: Tensor, v: Tensor
    ) -> Tensor:
        shape = self.shape
        key_pool, value_pool = cache.keys[layer], cache.values[layer]
        flat_keys = key_pool.view(-1, shape.num_kv_heads, shape.head_dim)
        flat_values = value_pool.view(-1, shape.num_kv_heads, shape.head_dim)
        # writes for every sequence first, so a chunk may read blocks another chunk fills now
        flat_keys.index_copy_(0, batch.slot_mapping, k.to(key_pool.dtype))
        flat_values.index_copy_(0, batch.slot_mapping, v.to(value_pool.dtype))
        out = torch.empty_like(q)
        decodes = batch.num_decodes
        if decodes:
            tables = batch.decode_block_tables
            keys = key_pool[tables].flatten(1, 2).transpose(1, 2)  # [B, kv_heads, L, dim]
            values = value_pool[tables].flatten(1, 2).transpose(1, 2)
            visible = torch.arange(keys.shape[2]) < batch.decode_context_lens[:, None]
            out[:decodes] = functional.scaled_dot_product_attention(
                q[:decodes].unsqueeze(2),
                keys.to(q.dtype),
                values.to(q.dtype),
                attn_mask=visible[:, None, None, :],
                scale=self.scale,
                enable_gqa=True,
            ).squeeze(2)
        for span in batch.spans:
            rows = slice(span.start, span.start + span.length)
            query = q[rows].transpose(0, 1).unsqueeze(0)
            if span.context_len == span.length:  # nothing cached before: attend to fresh K/V
                keys = k[rows].transpose(0, 1).unsqueeze(0)
                values = v[rows].transpose(0, 1).unsqueeze(0)
                mask = None
                causal = True
            else:
                count = span.context_len
                keys = key_pool[span.block_table].flatten(0, 1)[:count]
                values = value_pool[span.block_table].flatten(0, 1)[:count]
                keys = keys.transpose(0, 1).unsqueeze(0).to(q.dtype)
                values = values.transpose(0, 1).unsqueeze(0).to(q.dtype)
                first = count - span.length
                query_positions = torch.arange(first, count)[:, None]
                mask = torch.arange(count)[None, :] <= query_positions
                causal = False
            result = functional.scaled_dot_product_attention(
                query,
                keys,
                values,
                attn_mask=mask,
                is_causal=causal,
                scale=self.scale,
                enable_gqa=True,
            )
            out[rows] = result.squeeze(0).transpose(0, 1)
        return out

    @torch.inference_mode()
    def score(self, token_ids: Sequence[int]) -> Tensor:
        """Log-probabilities ``[len-1]`` of each token given the ones before (for perplexity)."""
        count = len(token_ids)
        block_size = 16
        blocks = -(-count // block_size)
        cache = self.new_cache(blocks, block_size)
        ids = torch.tensor(list(token_ids), dtype=torch.long)
        batch = ForwardBatch(
            token_ids=ids,
            positions=torch.arange(count),
            slot_mapping=torch.arange(count),
            num_decodes=0,
            decode_block_tables=torch.zeros((0, 1), dtype=torch.long),
            decode_context_lens=torch.zeros(0, dtype=torch.long),
            spans=[SpanInput(0, count, count, torch.arange(blocks))],
            logits_rows=torch.arange(count - 1),
        )
        logprobs = torch.log_softmax(self(batch, cache), dim=-1)
        return logprobs.gather(1, ids[1:, None]).squeeze(1)
