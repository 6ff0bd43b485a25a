"""Names from the OpenTelemetry GenAI semantic conventions, plus the few ``gf.*`` names we add.

The GenAI conventions are still in development and moved to their own repository
(``open-telemetry/semantic-conventions-genai``); the incubating constants in
``opentelemetry-semantic-conventions`` are marked deprecated for that reason, so the names we emit
live here, in one place, and the schema test checks them against a table written from the docs.

Example:
    >>> from genai_factory.observability.conventions import span_name
    >>> span_name("chat", "gpt-4o-mini")
    'chat gpt-4o-mini'
    >>> span_name("execute_tool", None)
    'execute_tool'
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DURATION_BUCKETS_S",
    "SERVER_TPOT_BUCKETS_S",
    "SERVER_TTFT_BUCKETS_S",
    "TOKEN_BUCKETS",
    "span_name",
]

# --- gen_ai.* attributes ----------------------------------------------------------------------
OPERATION_NAME: Final = "gen_ai.operation.name"
PROVIDER_NAME: Final = "gen_ai.provider.name"
REQUEST_MODEL: Final = "gen_ai.request.model"
REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
REQUEST_TOP_P: Final = "gen_ai.request.top_p"
REQUEST_TOP_K: Final = "gen_ai.request.top_k"
REQUEST_SEED: Final = "gen_ai.request.seed"
REQUEST_STREAM: Final = "gen_ai.request.stream"
REQUEST_CHOICE_COUNT: Final = "gen_ai.request.choice.count"
REQUEST_STOP_SEQUENCES: Final = "gen_ai.request.stop_sequences"
REQUEST_FREQUENCY_PENALTY: Final = "gen_ai.request.frequency_penalty"
REQUEST_PRESENCE_PENALTY: Final = "gen_ai.request.presence_penalty"
REQUEST_ENCODING_FORMATS: Final = "gen_ai.request.encoding_formats"
RESPONSE_ID: Final = "gen_ai.response.id"
RESPONSE_MODEL: Final = "gen_ai.response.model"
RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
OUTPUT_TYPE: Final = "gen_ai.output.type"
CONVERSATION_ID: Final = "gen_ai.conversation.id"
INPUT_MESSAGES: Final = "gen_ai.input.messages"
OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS: Final = "gen_ai.system_instructions"
EMBEDDINGS_DIMENSION_COUNT: Final = "gen_ai.embeddings.dimension.count"
DATA_SOURCE_ID: Final = "gen_ai.data_source.id"
RETRIEVAL_QUERY_TEXT: Final = "gen_ai.retrieval.query.text"
RETRIEVAL_DOCUMENTS: Final = "gen_ai.retrieval.documents"
TOOL_NAME: Final = "gen_ai.tool.name"
TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
TOOL_TYPE: Final = "gen_ai.tool.type"
TOOL_DESCRIPTION: Final = "gen_ai.tool.description"
TOOL_CALL_ARGUMENTS: Final = "gen_ai.tool.call.arguments"
TOOL_CALL_RESULT: Final = "gen_ai.tool.call.result"
AGENT_ID: Final = "gen_ai.agent.id"
AGENT_NAME: Final = "gen_ai.agent.name"
AGENT_DESCRIPTION: Final = "gen_ai.agent.description"
AGENT_VERSION: Final = "gen_ai.agent.version"
TOKEN_TYPE: Final = "gen_ai.token.type"  # noqa: S105 (a name, not a secret)
ERROR_TYPE: Final = "error.type"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"

# --- gf.* attributes (ours: attribution and gateway stages) -----------------------------------
GF_REQUEST_ID: Final = "gf.request_id"
GF_ORG_ID: Final = "gf.org_id"
GF_TEAM_ID: Final = "gf.team_id"
GF_USER_ID: Final = "gf.user_id"
GF_KEY_ID: Final = "gf.key_id"
GF_ROUTE: Final = "gf.route"
GF_FEATURE: Final = "gf.feature"
GF_COST_USD: Final = "gf.cost.usd"
GF_CACHE_HIT: Final = "gf.cache.hit"
GF_CACHE_NAME: Final = "gf.cache.name"
GF_GUARD_NAME: Final = "gf.guard.name"
GF_GUARD_STAGE: Final = "gf.guard.stage"
GF_GUARD_DECISION: Final = "gf.guard.decision"

# --- operation names (well-known values) ------------------------------------------------------
OP_CHAT: Final = "chat"
OP_TEXT_COMPLETION: Final = "text_completion"
OP_GENERATE_CONTENT: Final = "generate_content"
OP_EMBEDDINGS: Final = "embeddings"
OP_RETRIEVAL: Final = "retrieval"
OP_EXECUTE_TOOL: Final = "execute_tool"
OP_INVOKE_AGENT: Final = "invoke_agent"

# --- metric names -----------------------------------------------------------------------------
M_TOKEN_USAGE: Final = "gen_ai.client.token.usage"  # noqa: S105
M_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
M_TIME_TO_FIRST_CHUNK: Final = "gen_ai.client.operation.time_to_first_chunk"
M_TIME_PER_OUTPUT_CHUNK: Final = "gen_ai.client.operation.time_per_output_chunk"
M_SERVER_REQUEST_DURATION: Final = "gen_ai.server.request.duration"
M_SERVER_TTFT: Final = "gen_ai.server.time_to_first_token"
M_SERVER_TPOT: Final = "gen_ai.server.time_per_output_token"
M_CACHE_HITS: Final = "gf.cache.hits"
M_CACHE_MISSES: Final = "gf.cache.misses"
M_GUARD_VERDICTS: Final = "gf.guard.verdicts"
M_ERRORS: Final = "gf.errors"
M_SPEND: Final = "gf.spend"
M_AGGREGATED: Final = "gf.metrics.aggregated"

# Bucket boundaries the conventions say these histograms SHOULD use.
TOKEN_BUCKETS: Final[tuple[float, ...]] = tuple(float(4**i) for i in range(14))
DURATION_BUCKETS_S: Final[tuple[float, ...]] = tuple(round(0.01 * 2**i, 2) for i in range(14))
SERVER_TTFT_BUCKETS_S: Final[tuple[float, ...]] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
SERVER_TPOT_BUCKETS_S: Final[tuple[float, ...]] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)  # fmt: skip

# error.type for failures without a better low-cardinality name.
ERROR_OTHER: Final = "_OTHER"


def span_name(operation: str, target: str | None) -> str:
    """``{operation} {target}``: the model, tool, agent or data source; the bare operation if none."""
    return f"{operation} {target}" if target else operation
