"""Legacy completions and embeddings walk the same stages as chat.

The stages (budget, guards, cache) speak the chat contracts, so a non-chat request gets a *chat
view*: one user message per prompt (completions) or per input text (embeddings). Guards judge
the view, a ``redact`` verdict on the view is carried back into the real request before it is
sent, and the completion cache key is the view marked ``gf_endpoint: completions`` so a
completion never answers a chat request or the other way round.

Embeddings have no response cache: the answer is a pure function of the input that an embedding
cache (semantic-cache's stages) keeps closer to the caller, and a chat cache cannot hold vectors.
Token-id inputs are not text: guards see an empty message for them and they pass unchanged.

Example:
    >>> body = CompletionRequest(model="m", prompt=["a", "b"], temperature=0)
    >>> view = completion_view(body)
    >>> [m.content for m in view.messages], view.model_extra
    (['a', 'b'], {'gf_endpoint': 'completions'})
    >>> screened = view.model_copy(update={"messages": [view.messages[0],
    ...     view.messages[1].model_copy(update={"content": "B"})]})
    >>> completion_with(body, screened).prompt
    ['a', 'B']
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, get_args

from genai_factory.gateway.failover import StreamOpener
from genai_factory.gateway.providers.base import (
    EmbeddingProvider,
    Provider,
    TextCompletionProvider,
    TextStreamProvider,
)
from genai_factory.shared.errors import ProviderError, ValidationError
from genai_factory.shared.models import (
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    FinishReason,
    Usage,
    parse,
)

__all__ = [
    "as_chat",
    "as_text_completion",
    "completion_view",
    "completion_with",
    "embed",
    "embedding_view",
    "embedding_with",
    "response_from_text",
    "text_answer",
    "text_complete",
    "text_stream",
]

# the chat fields a completion shares; the rest stay extras so they still tell cache keys apart
_SHARED = ("model", "temperature", "top_p", "n", "stop", "seed", "user", "max_tokens")


def _prompts(body: CompletionRequest) -> list[str]:
    return [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)


def completion_view(body: CompletionRequest) -> ChatCompletionRequest:
    """The chat the stages judge, budget and cache: one user message per prompt."""
    prompts = _prompts(body)
    if not prompts:
        raise ValidationError("prompt must not be empty", param="prompt")
    fields = body.model_dump(exclude_none=True, exclude={"prompt", "stream"})
    shared = {name: fields.pop(name) for name in _SHARED if name in fields}
    return parse(
        ChatCompletionRequest,
        {
            **shared,
            "messages": [{"role": "user", "content": p} for p in prompts],
            # the endpoint (and its own parameters, e.g. echo, suffix) are part of the cache key
            "gf_endpoint": "completions",
            **({"gf_params": fields} if fields else {}),
        },
    )


def completion_with(body: CompletionRequest, view: ChatCompletionRequest) -> CompletionRequest:
    """``body`` with the prompts of a (screened) view."""
    prompts = [m.text() for m in view.messages]
    if isinstance(body.prompt, str):
        return body if prompts[0] == body.prompt else body.model_copy(update={"prompt": prompts[0]})
    return body if prompts == body.prompt else body.model_copy(update={"prompt": prompts})


def embedding_view(body: EmbeddingRequest) -> ChatCompletionRequest:
    """The chat the stages judge and budget: one user message per input text."""
    items: list[Any] = [body.input] if isinstance(body.input, str) else list(body.input)
    if items and all(isinstance(item, int) for item in items):
        items = [items]  # one input given as token ids
    messages: list[ChatMessage] = [
        ChatMessage(role="user", content=item if isinstance(item, str) else "") for item in items
    ]
    return ChatCompletionRequest.model_validate(
        {"model": body.model, "messages": messages, "gf_endpoint": "embeddings"}
    )


def embedding_with(body: EmbeddingRequest, view: ChatCompletionRequest) -> EmbeddingRequest:
    """``body`` with the input texts of a (screened) view; token-id inputs are kept."""
    if isinstance(body.input, str):
        new = view.messages[0].text()
        return body if new == body.input else body.model_copy(update={"input": new})
    if not all(isinstance(item, str) for item in body.input):
        return body  # token ids: nothing a text guard could have rewritten
    texts = [m.text() for m in view.messages]
    return body if texts == body.input else body.model_copy(update={"input": texts})


# ------------------------------------------------------------------------- provider calls


def embed(request: EmbeddingRequest) -> Callable[[Provider], Awaitable[EmbeddingResponse]]:
    async def call(provider: Provider) -> EmbeddingResponse:
        if not isinstance(provider, EmbeddingProvider):
            raise ProviderError(
                "this deployment does not serve embeddings",
                retryable=False,
                code="unsupported_operation",
            )
        return await provider.embed(request)

    return call


def as_chat(request: CompletionRequest) -> ChatCompletionRequest:
    """A legacy completion as a one-message chat, for providers without a completions API."""
    prompt = request.prompt if isinstance(request.prompt, str) else "\n".join(request.prompt)
    return parse(
        ChatCompletionRequest,
        {
            **request.model_dump(exclude_none=True, exclude={"prompt", "stream"}),
            "messages": [{"role": "user", "content": prompt}],
        },
    )


def text_complete(request: CompletionRequest) -> Callable[[Provider], Awaitable[dict[str, Any]]]:
    async def call(provider: Provider) -> dict[str, Any]:
        if isinstance(provider, TextCompletionProvider):
            return await provider.text_complete(request)
        return as_text_completion(await provider.complete(as_chat(request)))

    return call


def text_stream(request: CompletionRequest) -> StreamOpener:
    def open_stream(provider: Provider) -> AsyncIterator[ChatCompletionChunk]:
        if isinstance(provider, TextStreamProvider):
            return provider.text_stream(request)
        return provider.stream(as_chat(request))

    return open_stream


def as_text_completion(response: ChatCompletionResponse) -> dict[str, Any]:
    """A chat answer in OpenAI's ``text_completion`` shape."""
    return {
        "id": response.id.replace("chatcmpl", "cmpl", 1),
        "object": "text_completion",
        "created": response.created,
        "model": response.model,
        "choices": [
            {
                "index": c.index,
                "text": c.message.text(),
                "finish_reason": c.finish_reason,
                "logprobs": None,
            }
            for c in response.choices
        ],
        "usage": response.usage.model_dump() if response.usage else None,
    }


def response_from_text(data: dict[str, Any], model: str) -> ChatCompletionResponse:
    """A ``text_completion`` answer as a chat answer (what output guards, cache and usage see)."""
    choices = [
        ChatCompletionChoice(
            index=int(c.get("index", i)) if isinstance(c, dict) else i,
            message=ChatMessage(
                role="assistant", content=str(c.get("text") or "") if isinstance(c, dict) else ""
            ),
            finish_reason=_finish(c.get("finish_reason") if isinstance(c, dict) else None),
        )
        for i, c in enumerate(data.get("choices") or [])
    ]
    raw = data.get("usage")
    return ChatCompletionResponse(
        id=str(data.get("id") or "cmpl"),
        model=str(data.get("model") or model),
        choices=choices,
        usage=Usage.model_validate(raw) if isinstance(raw, dict) else None,
    )


def _finish(value: Any) -> FinishReason | None:
    return value if value in get_args(FinishReason) else None


def text_answer(ctx_result: Any, response: ChatCompletionResponse) -> dict[str, Any]:
    """The completion to send: the provider's own body (logprobs etc. kept) with the screened
    texts, or the chat answer re-shaped when there is no such body (a cache hit)."""
    if not isinstance(ctx_result, dict):
        return as_text_completion(response)
    texts = {c.index: c.message.text() for c in response.choices}
    choices = [
        {**c, "text": texts.get(int(c.get("index", i)), c.get("text"))}
        if isinstance(c, dict)
        else c
        for i, c in enumerate(ctx_result.get("choices") or [])
    ]
    return {**ctx_result, "choices": choices}
