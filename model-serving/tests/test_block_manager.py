"""The paged KV-cache block manager: property and stateful tests against a shadow KV store.

The state machine plays the engine: it "writes KV" into a shadow dict (slot -> the token prefix
whose last token the slot holds) exactly where the block tables say, applies copy-on-write
copies, and scribbles garbage into speculative lookahead slots. The invariant that every computed
position of every sequence holds its own prefix is what makes sharing and prefix caching safe.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from genai_factory.serving.torch_engine.block_manager import BlockCopy, BlockManager, block_hash
from genai_factory.shared.errors import ServiceUnavailable

pytestmark = pytest.mark.unit

BLOCK_SIZE = 4
# a few shared starts make prefix-cache hits and partial matches common
PREFIXES = [[], [1, 2, 3, 4], [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 9, 9, 9, 9], [5, 5]]
prompts = st.builds(
    lambda base, tail: base + tail,
    st.sampled_from(PREFIXES),
    st.lists(st.integers(0, 9), min_size=1, max_size=9),
)

Content = tuple[int, ...] | str


class PagedCacheMachine(RuleBasedStateMachine):
    sequences = Bundle("sequences")

    def __init__(self) -> None:
        super().__init__()
        self.blocks = BlockManager(num_blocks=12, block_size=BLOCK_SIZE)
        self.shadow: dict[int, Content] = {}
        self.next_id = 0

    @initialize(caching=st.booleans())
    def choose_caching(self, caching: bool) -> None:
        self.blocks.enable_prefix_caching = caching

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def _apply(self, copies: list[BlockCopy]) -> None:
        for copy in copies:
            for offset in range(BLOCK_SIZE):
                source = copy.source * BLOCK_SIZE + offset
                if source in self.shadow:
                    self.shadow[copy.destination * BLOCK_SIZE + offset] = self.shadow[source]

    def _write(self, seq: Hashable, upto: int) -> None:
        tokens = self.blocks.tokens(seq)
        for position in range(self.blocks.num_computed(seq), upto):
            self.shadow[self.blocks.slot(seq, position)] = tuple(tokens[: position + 1])
        self.blocks.mark_computed(seq, upto)

    @rule(target=sequences, prompt=prompts)
    def allocate(self, prompt: list[int]) -> int:
        seq = self._new_id()
        free_before = self.blocks.num_free_blocks
        if not self.blocks.can_allocate(prompt):
            with pytest.raises(ServiceUnavailable) as caught:
                self.blocks.allocate(seq, prompt)
            assert caught.value.code == "kv_cache_exhausted"
            assert self.blocks.num_free_blocks == free_before
            assert not self.blocks.has_sequence(seq)
            return seq
        cached = self.blocks.allocate(seq, prompt)
        assert cached % BLOCK_SIZE == 0 and cached <= len(prompt) - 1
        assert self.blocks.num_computed(seq) == cached
        # a cache hit hands over blocks that already hold exactly this prompt's prefix
        for position in range(cached):
            slot = self.blocks.slot(seq, position)
            assert self.shadow.get(slot) == tuple(prompt[: position + 1])
        return seq

    @rule(seq=sequences, data=st.data())
    def forward(self, seq: int, data: st.DataObject) -> None:
        if not self.blocks.has_sequence(seq):
            return
        if not self.blocks.can_reserve(seq):
            with pytest.raises(ServiceUnavailable):
                self.blocks.reserve(seq)
            return
        self._apply(self.blocks.reserve(seq))
        total = self.blocks.num_tokens(seq)
        upto = data.draw(st.integers(self.blocks.num_computed(seq), total), label="upto")
        self._write(seq, upto)

    @rule(seq=sequences, tokens=st.lists(st.integers(0, 9), min_size=1, max_size=5))
    def append(self, seq: int, tokens: list[int]) -> None:
        if self.blocks.has_sequence(seq):
            self.blocks.append_tokens(seq, tokens)

    @rule(seq=sequences, lookahead=st.integers(1, 6))
    def speculate(self, seq: int, lookahead: int) -> None:
        """Lookahead slots get draft KV that is never marked computed (all rejected)."""
        if not self.blocks.has_sequence(seq) or not self.blocks.can_reserve(seq, lookahead):
            return
        self._apply(self.blocks.reserve(seq, lookahead))
        total = self.blocks.num_tokens(seq)
        self._write(seq, total)
        for position in range(total, total + lookahead):
            self.shadow[self.blocks.slot(seq, position)] = "draft"

    @rule(target=sequences, parent=sequences)
    def fork(self, parent: int) -> int:
        child = self._new_id()
        if self.blocks.has_sequence(parent):
            self.blocks.fork(parent, child)
            assert self.blocks.block_table(child) == self.blocks.block_table(parent)
        return child

    @rule(seq=consumes(sequences))
    def finish_or_cancel(self, seq: int) -> None:
        self.blocks.free(seq)
        assert not self.blocks.has_sequence(seq)

    @precondition(lambda self: self.blocks.num_free_blocks < 3)
    @rule()
    def pressure_is_typed(self) -> None:
        too_long = list(range(100))
        assert not self.blocks.can_allocate(too_long)
        with pytest.raises(ServiceUnavailable):
            self.blocks.allocate(self._new_id(), too_long)

    @invariant()
    def every_block_is_accounted_for(self) -> None:
        uses: Counter[int] = Counter()
        for seq in self.blocks.sequence_ids():
            uses.update(self.blocks.block_table(seq))
        assert len(uses) + self.blocks.num_free_blocks == self.blocks.num_blocks
        for block in range(self.blocks.num_blocks):
            assert self.blocks.ref_count(block) == uses[block]

    @invariant()
    def computed_positions_hold_their_own_prefix(self) -> None:
        for seq in self.blocks.sequence_ids():
            tokens = self.blocks.tokens(seq)
            for position in range(self.blocks.num_computed(seq)):
                slot = self.blocks.slot(seq, position)
                assert self.shadow.get(slot) == tuple(tokens[: position + 1])

    @invariant()
    def shared_blocks_have_matching_prefixes(self) -> None:
        seqs = self.blocks.sequence_ids()
        for i, first in enumerate(seqs):
            for second in seqs[i + 1 :]:
                table_a = self.blocks.block_table(first)
                table_b = self.blocks.block_table(second)
                for index, block in enumerate(table_a):
                    if block not in table_b:
                        continue
                    assert table_b.index(block) == index
                    end = min(
                        (index + 1) * BLOCK_SIZE,
                        self.blocks.num_computed(first),
                        self.blocks.num_computed(second),
                    )
                    tokens_a = self.blocks.tokens(first)[:end]
                    assert tokens_a == self.blocks.tokens(second)[:end]

    def teardown(self) -> None:
        for seq in self.blocks.sequence_ids():
            self.blocks.free(seq)
        assert self.blocks.num_free_blocks == self.blocks.num_blocks
        assert all(self.blocks.ref_count(b) == 0 for b in range(self.blocks.num_blocks))


TestPagedCache = PagedCacheMachine.TestCase
TestPagedCache.settings = settings(
    max_examples=120,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@settings(max_examples=60, deadline=None)
@given(prompt=prompts, suffix=st.lists(st.integers(0, 9), min_size=1, max_size=6))
def test_a_cached_prefix_comes_back_as_the_very_same_blocks(
    prompt: list[int], suffix: list[int]
) -> None:
    blocks = BlockManager(num_blocks=16, block_size=BLOCK_SIZE)
    blocks.allocate("first", prompt)
    blocks.mark_computed("first", len(prompt))
    table = blocks.block_table("first")
    blocks.free("first")
    full = len(prompt) // BLOCK_SIZE
    cached = blocks.allocate("second", prompt + suffix)
    assert cached == full * BLOCK_SIZE
    assert blocks.block_table("second")[:full] == table[:full]
    # the same prompt again: everything but the block holding its last token is reused
    blocks.free("second")
    again = blocks.allocate("third", prompt)
    assert again == ((len(prompt) - 1) // BLOCK_SIZE) * BLOCK_SIZE
    blocks.free("third")
    assert blocks.num_free_blocks == blocks.num_blocks


def test_freed_cached_blocks_are_evicted_least_recently_used_first() -> None:
    blocks = BlockManager(num_blocks=4, block_size=2)
    blocks.allocate("a", [1, 2, 3])
    blocks.mark_computed("a", 3)
    blocks.allocate("b", [7, 8, 9])
    blocks.mark_computed("b", 3)
    blocks.free("a")  # a's block [1, 2] becomes the least recently used cached block
    blocks.free("b")
    assert blocks.num_cached_blocks == 2 and blocks.num_free_blocks == 4
    blocks.allocate("c", [5, 5, 5, 5, 5])  # 3 blocks: 2 plain free blocks + evict one
    assert blocks.num_cached_blocks == 1
    blocks.free("c")
    assert blocks.allocate("d", [7, 8, 0]) == 2  # b's prefix survived
    assert blocks.allocate("e", [1, 2, 0]) == 0  # a's was evicted
    assert blocks.stats.hit_tokens == 2 and blocks.stats.hit_rate > 0


def test_out_of_blocks_is_a_typed_retryable_error_and_changes_nothing() -> None:
    blocks = BlockManager(num_blocks=2, block_size=2)
    blocks.allocate("a", [1, 2, 3])
    with pytest.raises(ServiceUnavailable) as caught:
        blocks.allocate("b", [4, 5, 6])
    assert caught.value.code == "kv_cache_exhausted"
    assert caught.value.headers() == {"retry-after": "1"}
    blocks.append_tokens("a", [4, 5])
    with pytest.raises(ServiceUnavailable):
        blocks.reserve("a")
    assert blocks.block_table("a") == [0, 1] and blocks.num_free_blocks == 0


def test_fork_shares_blocks_and_copies_a_shared_block_before_writing() -> None:
    blocks = BlockManager(num_blocks=6, block_size=4)
    blocks.allocate("parent", [1, 2, 3, 4, 5, 6])
    blocks.mark_computed("parent", 5)
    blocks.fork("parent", "child")
    assert [blocks.ref_count(b) for b in blocks.block_table("parent")] == [2, 2]
    blocks.append_tokens("child", [7])
    copies = blocks.reserve("child")
    parent_table, child_table = blocks.block_table("parent"), blocks.block_table("child")
    assert copies == [BlockCopy(parent_table[1], child_table[1])]
    assert parent_table[0] == child_table[0] and parent_table[1] != child_table[1]
    blocks.free("parent")
    blocks.free("child")
    assert blocks.num_free_blocks == 6


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="num_blocks"):
        BlockManager(0, 4)
    with pytest.raises(ValueError, match="block_size"):
        BlockManager(4, 0)
    blocks = BlockManager(4, 4, enable_prefix_caching=False)
    with pytest.raises(ValueError, match="at least one token"):
        blocks.allocate("a", [])
    blocks.allocate("a", [1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="already"):
        blocks.allocate("a", [1])
    with pytest.raises(ValueError, match="already"):
        blocks.fork("a", "a")
    with pytest.raises(ValueError, match="outside"):
        blocks.mark_computed("a", 9)
    blocks.append_tokens("a", [1, 2, 3, 4])
    with pytest.raises(ValueError, match="reserved"):
        blocks.mark_computed("a", 9)
    with pytest.raises(KeyError, match="unknown"):
        blocks.block_table("nobody")
    blocks.free("nobody")  # freeing twice (e.g. cancel after finish) is harmless
    blocks.mark_computed("a", 5)
    assert blocks.num_cached_blocks == 0  # caching off: nothing is kept


def test_reset_prefix_cache_forgets_every_prefix() -> None:
    blocks = BlockManager(4, 2)
    blocks.allocate("a", [1, 2, 3])
    blocks.mark_computed("a", 3)
    blocks.free("a")
    blocks.reset_prefix_cache()
    assert blocks.num_cached_blocks == 0 and blocks.num_free_blocks == 4
    assert blocks.allocate("b", [1, 2, 3]) == 0
    assert block_hash(b"", [1]) != block_hash(b"", [1, 0])
