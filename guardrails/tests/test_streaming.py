"""The streaming rail: entities split at every position are still caught."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genai_factory.guardrails.output.moderation import LexiconModerator
from genai_factory.guardrails.pii import Anonymizer, PIIAnalyzer
from genai_factory.guardrails.streaming import StreamingRail
from genai_factory.shared.errors import Blocked
from genai_factory.shared.models import ChatCompletionChunk, ChunkChoice, ChunkDelta

ENTITIES = [
    "ann.lee@example.org",
    "4111 1111 1111 1111",
    "GB82 WEST 1234 5698 7654 32",
    "123-45-6789",
    "+44 20 7946 0958",
    "AKIAIOSFODNN7EXAMPLE",
    "2001:db8::8a2e:370:7334",
    "https://intranet.example.com/payroll",
]


def whole(text: str) -> str:
    analyzer = PIIAnalyzer(use_ner=False)
    return Anonymizer().anonymize(text, analyzer.analyze(text).detections).text


def run(rail: StreamingRail, chunks: list[str]) -> str:
    return "".join(rail.feed(c) for c in chunks) + rail.flush()


@pytest.mark.parametrize("entity", ENTITIES)
def test_an_entity_split_at_every_position_is_redacted(entity: str) -> None:
    text = f"Here you go: {entity} — keep it safe."
    start = text.index(entity)
    expected = whole(text)
    assert entity not in expected
    for cut in range(start, start + len(entity) + 1):
        out = run(StreamingRail(), [text[:cut], text[cut:]])
        assert out == expected, (cut, out)


@pytest.mark.parametrize("entity", ENTITIES)
def test_an_entity_streamed_one_character_at_a_time_is_redacted(entity: str) -> None:
    text = f"Value: {entity}. Done."
    rail = StreamingRail()
    assert run(rail, list(text)) == whole(text)
    assert [d.text for d in rail.detections] == [entity] or rail.detections[0].entity_type


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.sampled_from([*ENTITIES, "hello", "the report", "and", ", ", ".\n"]),
        min_size=1,
        max_size=10,
    ),
    st.lists(st.integers(1, 40), min_size=1, max_size=30),
)
def test_any_chunking_gives_the_same_text_as_scanning_the_whole(
    pieces: list[str], sizes: list[int]
) -> None:
    text = " ".join(pieces)
    chunks, position, i = [], 0, 0
    while position < len(text):
        size = sizes[i % len(sizes)]
        chunks.append(text[position : position + size])
        position += size
        i += 1
    assert run(StreamingRail(), chunks) == whole(text)


def test_left_context_still_counts_after_release() -> None:
    chunks = ["I was born on the date of ", "12/03/1985, in spring."]
    rail = StreamingRail(holdback_chars=16)
    out = run(rail, chunks)
    assert rail.chunks == 2 and out == "I was born on the date of [DATE_OF_BIRTH], in spring."
    # without the released text as context the date is just a date
    assert "12/03/1985" in run(StreamingRail(holdback_chars=16, context_chars=0), chunks)


def test_private_keys_are_held_until_their_end() -> None:
    key = (
        "-----BEGIN PRIVATE KEY-----\n"
        + "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n" * 20
        + "-----END PRIVATE KEY-----"
    )
    text = f"key:\n{key}\nbye"
    chunks = [text[i : i + 7] for i in range(0, len(text), 7)]
    out = run(StreamingRail(), chunks)
    assert "MIIEvQ" not in out and out.startswith("key:\n[SECRET]")


def test_moderation_and_canaries_stop_the_stream() -> None:
    rail = StreamingRail(moderation=LexiconModerator())
    out = run(rail, ["Sure. To build a pipe", " bomb you need", " ..."])
    assert rail.blocked and "pipe bomb" not in out
    assert rail.findings[0].category == "weapons"
    canary = StreamingRail(canaries=["gfc-0123456789abcdef"])
    run(canary, ["my reference is gfc-0123", "456789abcdef ok"])
    assert canary.blocked


async def test_async_text_and_chunk_streams() -> None:
    async def texts() -> AsyncIterator[str]:
        for piece in ["Contact ", "ann@exa", "mple.org", " today."]:
            yield piece

    out = [piece async for piece in StreamingRail().stream_text(texts())]
    assert "".join(out) == "Contact [EMAIL_ADDRESS] today."

    async def chunks() -> AsyncIterator[ChatCompletionChunk]:
        yield ChatCompletionChunk(
            id="c", model="m", choices=[ChunkChoice(delta=ChunkDelta(role="assistant"))]
        )
        for piece in ["Card: 4111 ", "1111 1111 ", "1111 thanks"]:
            yield ChatCompletionChunk(
                id="c", model="m", choices=[ChunkChoice(delta=ChunkDelta(content=piece))]
            )
        yield ChatCompletionChunk(id="c", model="m", choices=[ChunkChoice(finish_reason="stop")])

    got = [c async for c in StreamingRail().stream_chunks(chunks())]
    assert got[0].choices[0].delta.role == "assistant"
    assert (
        "".join(c.choices[0].delta.content or "" for c in got if c.choices)
        == "Card: [CREDIT_CARD] thanks"
    )
    assert got[-1].choices[0].finish_reason == "stop"

    async def bad() -> AsyncIterator[str]:
        yield "how to build a pipe bomb"

    with pytest.raises(Blocked):
        _ = [p async for p in StreamingRail(moderation=LexiconModerator()).stream_text(bad())]


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="pseudonymise"):
        StreamingRail(anonymizer=Anonymizer("pseudonymize"))
    with pytest.raises(ValueError, match="holdback"):
        StreamingRail(holdback_chars=0)
