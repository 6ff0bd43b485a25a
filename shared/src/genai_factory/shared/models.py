"""The platform's data models: OpenAI-compatible chat, embeddings, documents, principals, verdicts, cost.

Every module speaks these. Unknown request fields are kept (``extra="allow"``) so a gateway can
forward provider-specific options; known fields are validated strictly. Use :func:`parse` to turn
untrusted input into a model with a typed :class:`~genai_factory.shared.errors.ValidationError`
naming the offending field.

Example:
    >>> from genai_factory.shared.models import ChatCompletionRequest, parse
    >>> req = parse(ChatCompletionRequest, {"model": "smollm2",
    ...                                     "messages": [{"role": "user", "content": "Hi"}]})
    >>> req.messages[0].text()
    'Hi'
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from genai_factory.shared.errors import ValidationError

__all__ = [
    "ChatCompletionChoice",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatMessage",
    "Chunk",
    "ChunkChoice",
    "ChunkDelta",
    "CompletionRequest",
    "ContentPart",
    "CostRecord",
    "Document",
    "EmbeddingData",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "Finding",
    "FunctionCall",
    "FunctionDefinition",
    "ImageURL",
    "ModelCard",
    "ModelList",
    "Principal",
    "ResponseFormat",
    "ScoredChunk",
    "StreamOptions",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "Verdict",
    "new_id",
    "parse",
]

M = TypeVar("M", bound=BaseModel)

_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def new_id(prefix: str) -> str:
    """A random id with an OpenAI-style prefix, e.g. ``chatcmpl-3f2a...``."""
    return f"{prefix}-{uuid.uuid4().hex}"


def _loc_to_param(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def parse(model: type[M], data: Any) -> M:
    """Validate untrusted ``data`` into ``model``; raise ValidationError naming the first bad field."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        param = _loc_to_param(tuple(first["loc"])) or None
        where = f"'{param}'" if param else "request body"
        raise ValidationError(f"invalid {where}: {first['msg']}", param=param) from None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Open(BaseModel):
    """Provider payloads grow new fields all the time: keep them rather than reject them."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --------------------------------------------------------------------------------------------
# Chat: messages, content parts, tools


class ImageURL(_Model):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(_Open):
    """One part of a multimodal message: text, an image URL, or input audio."""

    type: Literal["text", "image_url", "input_audio", "file"]
    text: str | None = None
    image_url: ImageURL | None = None
    input_audio: dict[str, Any] | None = None
    file: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _payload_matches_type(self) -> ContentPart:
        if getattr(self, self.type) is None:
            raise ValueError(f"content part of type '{self.type}' needs a '{self.type}' field")
        return self


class FunctionCall(_Model):
    name: str
    arguments: str = Field(description="JSON-encoded arguments, exactly as the model produced them")


class ToolCall(_Model):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Open):
    """One chat message. ``content`` is text, a list of parts, or None (assistant tool calls)."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _content_rules(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a 'tool' message needs 'tool_call_id'")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a '{self.role}' message needs 'content'")
        return self

    def text(self) -> str:
        """The message's text, with the text parts of a multimodal message joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content if part.type == "text")


def _schema_problem(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` is not a valid JSON Schema (2020-12), or None when it is."""
    # Imported on first use: jsonschema is a quarter of this module's import time, and most
    # processes (a gateway at start-up, a worker) never see a tool schema.
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return str(exc.message)
    return None


class FunctionDefinition(_Model):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _TOOL_NAME.match(value):
            raise ValueError("function name must be 1-64 characters of a-z, A-Z, 0-9, _ or -")
        return value

    @field_validator("parameters")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return value
        problem = _schema_problem(value)
        if problem is not None:
            raise ValueError(f"parameters is not a valid JSON schema: {problem}")
        if value.get("type", "object") != "object":
            raise ValueError("parameters must describe a JSON object (type: object)")
        return value


class Tool(_Model):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedToolChoice(_Model):
    type: Literal["function"] = "function"
    function: dict[str, str]

    @field_validator("function")
    @classmethod
    def _has_name(cls, value: dict[str, str]) -> dict[str, str]:
        if "name" not in value:
            raise ValueError("tool_choice.function needs 'name'")
        return value


class JSONSchemaFormat(_Model):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            problem = _schema_problem(value)
            if problem is not None:
                raise ValueError(f"not a valid JSON schema: {problem}")
        return value


class ResponseFormat(_Model):
    """``{"type": "text" | "json_object"}`` or ``{"type": "json_schema", "json_schema": {...}}``."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None
    # llama.cpp's extension: a schema alongside json_object
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")

    @model_validator(mode="after")
    def _schema_when_needed(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type 'json_schema' needs 'json_schema'")
        return self


class StreamOptions(_Open):
    include_usage: bool = False


class ChatCompletionRequest(_Open):
    """An OpenAI ``/v1/chat/completions`` request. Unknown fields are kept for the provider."""

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    seed: int | None = None
    user: str | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    @model_validator(mode="after")
    def _tool_choice_needs_tools(self) -> ChatCompletionRequest:
        if isinstance(self.tool_choice, NamedToolChoice):
            names = {tool.function.name for tool in self.tools or []}
            wanted = self.tool_choice.function["name"]
            if wanted not in names:
                raise ValueError(f"tool_choice names '{wanted}', which is not in tools")
        return self

    @property
    def output_limit(self) -> int | None:
        """The caller's cap on generated tokens (``max_completion_tokens`` wins)."""
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Open):
    """A legacy ``/v1/completions`` request."""

    model: str = Field(min_length=1, max_length=256)
    prompt: str | list[str]
    max_tokens: int | None = Field(default=16, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=128)
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None


class Usage(_Open):
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _fill_total(self) -> Usage:
        if self.total_tokens == 0:
            self.total_tokens = self.prompt_tokens + self.completion_tokens
        return self


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call", "error"]


class ChatCompletionChoice(_Open):
    index: int = 0
    message: ChatMessage
    finish_reason: FinishReason | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletionResponse(_Open):
    id: str = Field(default_factory=lambda: new_id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatCompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None

    def text(self) -> str:
        """The first choice's text."""
        return self.choices[0].message.text() if self.choices else ""


class ToolCallDelta(_Open):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: dict[str, str] | None = None


class ChunkDelta(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(_Open):
    index: int = 0
    delta: ChunkDelta = Field(default_factory=ChunkDelta)
    finish_reason: FinishReason | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletionChunk(_Open):
    """One SSE event of a streamed chat completion. The last one may carry only ``usage``."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChunkChoice] = Field(default_factory=list)
    usage: Usage | None = None


# --------------------------------------------------------------------------------------------
# Embeddings and models


class EmbeddingRequest(_Open):
    model: str = Field(min_length=1, max_length=256)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _not_empty(
        cls, value: str | list[str] | list[int] | list[list[int]]
    ) -> str | list[str] | list[int] | list[list[int]]:
        if isinstance(value, list) and not value:
            raise ValueError("input must not be empty")
        if isinstance(value, list) and len(value) > 2048:
            raise ValueError("at most 2048 inputs per request")
        return value

    def texts(self) -> list[str]:
        """The inputs as a list of strings (token-id inputs are not text and raise)."""
        if isinstance(self.input, str):
            return [self.input]
        if all(isinstance(item, str) for item in self.input):
            return [str(item) for item in self.input]
        raise ValidationError("token-id inputs are not supported here", param="input")


class EmbeddingData(_Model):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingResponse(_Model):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage = Field(default_factory=Usage)


class ModelCard(_Open):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "genai-factory"


class ModelList(_Model):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --------------------------------------------------------------------------------------------
# Documents


class Document(_Model):
    """A source document before chunking."""

    id: str = Field(default_factory=lambda: new_id("doc"))
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class Chunk(_Model):
    """A piece of a document, with its character span in the source."""

    id: str = Field(default_factory=lambda: new_id("chunk"))
    document_id: str
    text: str
    index: int = Field(default=0, ge=0)
    start: int = Field(default=0, ge=0)
    end: int = Field(default=0, ge=0)
    metadata: dict[str, Any] = Field(default_factory=dict)
    embedding: list[float] | None = None

    @model_validator(mode="after")
    def _span_order(self) -> Chunk:
        if self.end < self.start:
            raise ValueError("chunk end must not be before start")
        return self


class ScoredChunk(_Model):
    chunk: Chunk
    score: float


# --------------------------------------------------------------------------------------------
# Security, guards, cost


class Principal(_Model):
    """Who is calling: resolved by an Authenticator, read by every later stage."""

    subject: str = Field(min_length=1, description="stable id: a key id, a user id or a client id")
    org_id: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    key_id: str | None = None
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    attributes: dict[str, str] = Field(default_factory=dict)
    auth_method: Literal["api_key", "jwt", "oauth2", "anonymous"] = "anonymous"

    @property
    def tenant(self) -> str:
        """The isolation boundary for caches and quotas: the org, else the subject."""
        return self.org_id or self.subject


class Finding(_Model):
    """One reason behind a verdict: which rule, what it found, where, how sure, which layer."""

    rule_id: str
    category: str
    layer: str
    score: float = Field(default=1.0, ge=0.0, le=1.0)
    start: int | None = Field(default=None, ge=0)
    end: int | None = Field(default=None, ge=0)
    message: str = ""


class Verdict(_Model):
    """A guard's decision: allow, redact (use ``text``), or block; with findings and per-layer timing."""

    decision: Literal["allow", "redact", "block"]
    findings: list[Finding] = Field(default_factory=list)
    # For an input check: a JSON array, one entry per message (null = unchanged); for an output
    # check: the rewritten answer. See the Guard contract.
    text: str | None = Field(default=None, description="the rewritten content when redacted")
    timings_ms: dict[str, float] = Field(default_factory=dict)

    @property
    def allowed(self) -> bool:
        return self.decision != "block"


class CostRecord(_Model):
    """One metered model call, for the spend ledger and cost attribution."""

    request_id: str
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))
    model: str
    deployment: str | None = None
    provider: str | None = None
    subject: str | None = None
    org_id: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    key_id: str | None = None
    route: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cached_input_tokens: int = Field(default=0, ge=0)
    cost_usd: Annotated[Decimal, Field(ge=0, decimal_places=12)] = Decimal(0)
    cache_hit: bool = False
