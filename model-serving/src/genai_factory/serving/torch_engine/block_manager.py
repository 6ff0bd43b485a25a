"""Paged KV-cache bookkeeping: fixed-size blocks, block tables, reference counts, prefix caching.

The KV cache is a pool of ``num_blocks`` blocks of ``block_size`` token slots. Each sequence owns a
*block table* (the ids of its blocks in order), so token ``p`` of a sequence lives in slot
``table[p // block_size] * block_size + p % block_size``. No tensor lives here: this is pure
Python, and the engine turns tables into tensor indices.

Prefix caching: once every slot of a block holds computed KV, the block is keyed by a hash chain
over ``(parent block's hash, the block's tokens)`` and so stands for the whole token prefix up to
its end. A new sequence whose prompt starts with the same tokens reuses those blocks (reference
counted, read-only) instead of computing them again. A block whose last user leaves keeps its
KV and its key; such blocks are evicted least recently used first when the pool runs dry.

A block that is shared (after :meth:`BlockManager.fork`) and is about to be written is copied
first (copy-on-write): :meth:`BlockManager.reserve` returns the ``(source, destination)`` block
copies the engine must apply to its KV tensors before the next forward pass.

Example:
    >>> from genai_factory.serving.torch_engine.block_manager import BlockManager
    >>> blocks = BlockManager(num_blocks=8, block_size=4)
    >>> blocks.allocate("a", [1, 2, 3, 4, 5, 6])     # nothing cached yet
    0
    >>> blocks.block_table("a")
    [0, 1]
    >>> blocks.mark_computed("a", 6)                 # the engine wrote KV for all 6 tokens
    >>> blocks.free("a")                             # block 0 (full, computed) stays cached
    >>> blocks.allocate("b", [1, 2, 3, 4, 9])        # same first block: 4 tokens come from cache
    4
    >>> blocks.block_table("b")[0]
    0
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from genai_factory.shared.errors import ServiceUnavailable

__all__ = ["BlockCopy", "BlockManager", "PrefixCacheStats", "block_hash"]

_ROOT_HASH = b""


def block_hash(parent: bytes, tokens: Sequence[int]) -> bytes:
    """The key of a full block: a digest of the parent block's key and this block's tokens.

    Chaining makes the key stand for the whole prefix, so equal keys mean equal prefixes (up to a
    128-bit digest collision).

    >>> block_hash(b"", [1, 2]) == block_hash(b"", [1, 2]) != block_hash(b"", [2, 1])
    True
    """
    digest = hashlib.blake2b(parent, digest_size=16)
    digest.update(b"|")
    digest.update(",".join(map(str, tokens)).encode("ascii"))
    return digest.digest()


@dataclass(frozen=True, slots=True)
class BlockCopy:
    """Copy every slot of block ``source`` into block ``destination`` (copy-on-write)."""

    source: int
    destination: int


@dataclass(slots=True)
class PrefixCacheStats:
    """Prompt tokens asked for and found in the prefix cache, since the manager was made."""

    queried_tokens: int = 0
    hit_tokens: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.queried_tokens if self.queried_tokens else 0.0


@dataclass(slots=True)
class _Sequence:
    table: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    num_computed: int = 0
    # keys of this sequence's full computed blocks, in order (a prefix of its table)
    hashes: list[bytes] = field(default_factory=list)


class BlockManager:
    """Allocates KV-cache blocks to sequences and shares full blocks by prefix.

    Args:
        num_blocks: blocks in the pool.
        block_size: token slots per block.
        enable_prefix_caching: reuse full computed blocks across sequences with equal prefixes.

    Operations on one sequence are atomic: one that would run out of blocks raises
    :class:`~genai_factory.shared.errors.ServiceUnavailable` (code ``kv_cache_exhausted``) and
    changes nothing. Not thread-safe: one scheduler owns it.
    """

    def __init__(
        self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True
    ) -> None:
        if num_blocks < 1:
            raise ValueError("num_blocks must be at least 1")
        if block_size < 1:
            raise ValueError("block_size must be at least 1")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._ref_counts = [0] * num_blocks
        self._block_keys: list[bytes | None] = [None] * num_blocks
        self._free: deque[int] = deque(range(num_blocks))
        # unused blocks that still hold a cached prefix, least recently used first
        self._evictable: OrderedDict[int, None] = OrderedDict()
        self._cached: dict[bytes, int] = {}
        self._sequences: dict[Hashable, _Sequence] = {}
        self.stats = PrefixCacheStats()

    # ---------------------------------------------------------------- queries

    @property
    def num_free_blocks(self) -> int:
        """Blocks no sequence uses (including evictable cached ones)."""
        return len(self._free) + len(self._evictable)

    @property
    def num_cached_blocks(self) -> int:
        """Blocks that hold a reusable prefix, in use or not."""
        return len(self._cached)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    def has_sequence(self, seq_id: Hashable) -> bool:
        return seq_id in self._sequences

    def sequence_ids(self) -> list[Hashable]:
        return list(self._sequences)

    def block_table(self, seq_id: Hashable) -> list[int]:
        return list(self._seq(seq_id).table)

    def tokens(self, seq_id: Hashable) -> list[int]:
        return list(self._seq(seq_id).tokens)

    def num_tokens(self, seq_id: Hashable) -> int:
        return len(self._seq(seq_id).tokens)

    def num_computed(self, seq_id: Hashable) -> int:
        return self._seq(seq_id).num_computed

    def ref_count(self, block: int) -> int:
        return self._ref_counts[block]

    def slot(self, seq_id: Hashable, position: int) -> int:
        """The pool slot that holds token ``position`` of the sequence."""
        table = self._seq(seq_id).table
        return table[position // self.block_size] * self.block_size + position % self.block_size

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # ---------------------------------------------------------------- allocation

    def cached_prefix_blocks(self, tokens: Sequence[int]) -> list[int]:
        """Blocks that already hold a prefix of ``tokens``.

        The last token is never served from cache: the engine needs at least one token to run
        through the model to get the next token's logits.
        """
        if not self.enable_prefix_caching:
            return []
        blocks: list[int] = []
        parent = _ROOT_HASH
        for start in range(0, len(tokens) - 1 - self.block_size + 1, self.block_size):
            key = block_hash(parent, tokens[start : start + self.block_size])
            block = self._cached.get(key)
            if block is None:
                break
            blocks.append(block)
            parent = key
        return blocks

    def can_allocate(self, tokens: Sequence[int], lookahead: int = 0) -> bool:
        """Whether :meth:`allocate` (plus ``lookahead`` spare slots) would succeed now."""
        hits = self.cached_prefix_blocks(tokens)
        idle_hits = sum(1 for block in hits if self._ref_counts[block] == 0)
        needed = self.blocks_needed(len(tokens) + lookahead) - len(hits)
        return needed <= self.num_free_blocks - idle_hits

    def allocate(self, seq_id: Hashable, tokens: Sequence[int]) -> int:
        """Start a sequence with its prompt; returns how many prompt tokens came from the cache.

        The returned count is also the sequence's ``num_computed``: the engine computes KV for
        ``tokens[cached:]`` only.
        """
        if seq_id in self._sequences:
            raise ValueError(f"sequence {seq_id!r} already has blocks")
        if not tokens:
            raise ValueError("a sequence needs at least one token")
        if not self.can_allocate(tokens):
            raise self._exhausted(self.blocks_needed(len(tokens)))
        hits = self.cached_prefix_blocks(tokens)
        sequence = _Sequence(tokens=list(tokens))
        for block in hits:
            self._acquire(block)
            sequence.table.append(block)
            key = self._block_keys[block]
            assert key is not None
            sequence.hashes.append(key)
        while len(sequence.table) < self.blocks_needed(len(tokens)):
            sequence.table.append(self._take_free_block())
        sequence.num_computed = len(hits) * self.block_size
        self._sequences[seq_id] = sequence
        if self.enable_prefix_caching:
            self.stats.queried_tokens += len(tokens)
            self.stats.hit_tokens += sequence.num_computed
        return sequence.num_computed

    def append_tokens(self, seq_id: Hashable, tokens: Sequence[int]) -> None:
        """Record new tokens (e.g. sampled ones); :meth:`reserve` finds their slots."""
        self._seq(seq_id).tokens.extend(tokens)

    def can_reserve(self, seq_id: Hashable, lookahead: int = 0) -> bool:
        sequence = self._seq(seq_id)
        return self._reserve_cost(sequence, lookahead) <= self.num_free_blocks

    def reserve(self, seq_id: Hashable, lookahead: int = 0) -> list[BlockCopy]:
        """Make slots for every token plus ``lookahead`` more writable by this sequence alone.

        Adds blocks to the table as needed and copies any shared block that a coming write
        would touch. Returns the block copies to apply to the KV tensors first.
        """
        sequence = self._seq(seq_id)
        cost = self._reserve_cost(sequence, lookahead)
        if cost > self.num_free_blocks:
            raise self._exhausted(cost)
        copies: list[BlockCopy] = []
        first = sequence.num_computed // self.block_size
        for index in range(first, len(sequence.table)):
            block = sequence.table[index]
            if self._ref_counts[block] > 1:
                fresh = self._take_free_block()
                self._ref_counts[block] -= 1
                sequence.table[index] = fresh
                copies.append(BlockCopy(block, fresh))
        while len(sequence.table) < self.blocks_needed(len(sequence.tokens) + lookahead):
            sequence.table.append(self._take_free_block())
        return copies

    def mark_computed(self, seq_id: Hashable, num_tokens: int) -> None:
        """KV for the first ``num_tokens`` tokens is written; full blocks join the prefix cache."""
        sequence = self._seq(seq_id)
        if not 0 <= num_tokens <= len(sequence.tokens):
            raise ValueError(f"num_tokens {num_tokens} outside 0..{len(sequence.tokens)}")
        if num_tokens > len(sequence.table) * self.block_size:
            raise ValueError("tokens marked computed before their slots were reserved")
        sequence.num_computed = num_tokens
        if not self.enable_prefix_caching:
            return
        while (len(sequence.hashes) + 1) * self.block_size <= num_tokens:
            index = len(sequence.hashes)
            parent = sequence.hashes[-1] if sequence.hashes else _ROOT_HASH
            start = index * self.block_size
            key = block_hash(parent, sequence.tokens[start : start + self.block_size])
            sequence.hashes.append(key)
            block = sequence.table[index]
            if key not in self._cached and self._block_keys[block] is None:
                self._cached[key] = block
                self._block_keys[block] = key

    def fork(self, parent_id: Hashable, child_id: Hashable) -> None:
        """The child shares every block of the parent; writes copy shared blocks first."""
        if child_id in self._sequences:
            raise ValueError(f"sequence {child_id!r} already has blocks")
        parent = self._seq(parent_id)
        for block in parent.table:
            self._ref_counts[block] += 1
        self._sequences[child_id] = _Sequence(
            table=list(parent.table),
            tokens=list(parent.tokens),
            num_computed=parent.num_computed,
            hashes=list(parent.hashes),
        )

    def free(self, seq_id: Hashable) -> None:
        """Release the sequence's blocks (finished or cancelled); unknown ids are ignored."""
        sequence = self._sequences.pop(seq_id, None)
        if sequence is None:
            return
        # the tail first, so that the LRU order evicts a prefix's later blocks before its start
        for block in reversed(sequence.table):
            self._ref_counts[block] -= 1
            if self._ref_counts[block] == 0:
                if self._block_keys[block] is not None:
                    self._evictable[block] = None
                    self._evictable.move_to_end(block)
                else:
                    self._free.append(block)

    def reset_prefix_cache(self) -> None:
        """Forget every cached prefix (e.g. after a failed forward pass left KV undefined)."""
        for block in list(self._evictable):
            self._free.append(block)
        self._evictable.clear()
        self._cached.clear()
        self._block_keys = [None] * self.num_blocks
        for sequence in self._sequences.values():
            sequence.hashes.clear()

    # ---------------------------------------------------------------- internals

    def _seq(self, seq_id: Hashable) -> _Sequence:
        try:
            return self._sequences[seq_id]
        except KeyError:
            raise KeyError(f"unknown sequence {seq_id!r}") from None

    def _reserve_cost(self, sequence: _Sequence, lookahead: int) -> int:
        first = sequence.num_computed // self.block_size
        shared = sum(1 for block in sequence.table[first:] if self._ref_counts[block] > 1)
        grow = self.blocks_needed(len(sequence.tokens) + lookahead) - len(sequence.table)
        return shared + max(0, grow)

    def _acquire(self, block: int) -> None:
        if self._ref_counts[block] == 0:
            self._evictable.pop(block, None)
        self._ref_counts[block] += 1

    def _take_free_block(self) -> int:
        if self._free:
            block = self._free.popleft()
        elif self._evictable:
            block, _ = self._evictable.popitem(last=False)
            key = self._block_keys[block]
            if key is not None:
                del self._cached[key]
                self._block_keys[block] = None
        else:  # callers check capacity first; this guards the invariant
            raise self._exhausted(1)
        self._ref_counts[block] = 1
        return block

    def _exhausted(self, needed: int) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"KV cache is full: {needed} blocks needed, {self.num_free_blocks} of "
            f"{self.num_blocks} free",
            code="kv_cache_exhausted",
            retry_after=1,
        )
