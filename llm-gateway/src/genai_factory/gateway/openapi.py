"""The gateway's OpenAPI document (served at ``/openapi.json``; schemathesis tests against it).

Examples:
    >>> sorted(openapi_spec()["paths"])[:3]
    ['/admin/deployments', '/admin/reload', '/admin/usage']
"""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_spec"]

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_CONTENT_PART = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["text", "image_url"]},
        "text": {"type": "string"},
        "image_url": {"type": "object", "properties": {"url": {"type": "string"}}},
    },
}
_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": _CONTENT_PART},
                {"type": "null"},
            ]
        },
        "name": {"type": "string"},
        "tool_call_id": {"type": "string"},
        "tool_calls": {"type": "array", "items": {"type": "object"}},
    },
}
_TOOL = {
    "type": "object",
    "required": ["type", "function"],
    "properties": {
        "type": {"type": "string", "enum": ["function"]},
        "function": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "description": {"type": "string"},
                "parameters": {"type": "object"},
            },
        },
    },
}
_MODEL = {"type": "string", "examples": ["smollm2"]}
_CHAT_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": _MODEL,
        "messages": {"type": "array", "items": _MESSAGE},
        "temperature": {"type": "number"},
        "top_p": {"type": "number"},
        "n": {"type": "integer"},
        "stream": {"type": "boolean"},
        "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        "max_tokens": {"type": "integer"},
        "max_completion_tokens": {"type": "integer"},
        "seed": {"type": "integer"},
        "user": {"type": "string"},
        "tools": {"type": "array", "items": _TOOL},
        "tool_choice": {"oneOf": [{"type": "string"}, {"type": "object"}]},
        "response_format": {
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"type": "string", "enum": ["text", "json_object", "json_schema"]},
                "json_schema": {"type": "object"},
            },
        },
    },
}
_MESSAGES_REQUEST = {
    "type": "object",
    "required": ["model", "max_tokens", "messages"],
    "properties": {
        "model": _MODEL,
        "max_tokens": {"type": "integer"},
        "system": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
        "messages": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"type": "string", "enum": ["user", "assistant"]},
                    "content": {
                        "oneOf": [
                            {"type": "string"},
                            {"type": "array", "items": {"type": "object"}},
                        ]
                    },
                },
            },
        },
        "temperature": {"type": "number"},
        "stream": {"type": "boolean"},
        "stop_sequences": {"type": "array", "items": {"type": "string"}},
        "tools": {"type": "array", "items": {"type": "object"}},
        "tool_choice": {"type": "object"},
    },
}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _answers(ok: str, *statuses: str) -> dict[str, Any]:
    answers: dict[str, Any] = {"200": {"description": ok}}
    for status in statuses:
        answers[status] = {
            "description": "error",
            "content": {"application/json": {"schema": _ERROR}},
        }
    return answers


_CALL_ERRORS = ("400", "401", "404", "413", "429", "502", "503", "504")


def openapi_spec() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every public endpoint."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "GenAI Factory LLM gateway", "version": "0.1.0"},
        "paths": {
            "/v1/chat/completions": {
                "post": {
                    "summary": "OpenAI chat completions (JSON or SSE stream)",
                    "requestBody": _json_body(_CHAT_REQUEST),
                    "responses": _answers("a chat completion or an SSE stream", *_CALL_ERRORS),
                }
            },
            "/v1/messages": {
                "post": {
                    "summary": "Anthropic Messages (JSON or SSE stream)",
                    "requestBody": _json_body(_MESSAGES_REQUEST),
                    "responses": _answers("an Anthropic message", *_CALL_ERRORS),
                }
            },
            "/v1/completions": {
                "post": {
                    "summary": "legacy text completions (JSON or SSE stream)",
                    "requestBody": _json_body(
                        {
                            "type": "object",
                            "required": ["model", "prompt"],
                            "properties": {
                                "model": _MODEL,
                                "prompt": {"type": "string"},
                                "max_tokens": {"type": "integer"},
                                "temperature": {"type": "number"},
                                "stream": {"type": "boolean"},
                            },
                        }
                    ),
                    "responses": _answers(
                        "a text completion or an SSE stream of text_completion events",
                        *_CALL_ERRORS,
                    ),
                }
            },
            "/v1/embeddings": {
                "post": {
                    "summary": "embeddings",
                    "requestBody": _json_body(
                        {
                            "type": "object",
                            "required": ["model", "input"],
                            "properties": {
                                "model": _MODEL,
                                "input": {
                                    "oneOf": [
                                        {"type": "string"},
                                        {"type": "array", "items": {"type": "string"}},
                                    ]
                                },
                            },
                        }
                    ),
                    "responses": _answers("embeddings", *_CALL_ERRORS),
                }
            },
            "/v1/models": {
                "get": {"summary": "model names", "responses": _answers("models", "401")}
            },
            "/health/liveness": {"get": {"summary": "alive", "responses": _answers("ok")}},
            "/health/readiness": {
                "get": {"summary": "ready", "responses": _answers("ready", "503")}
            },
            "/admin/deployments": {
                "get": {
                    "summary": "deployment health and breaker states (master key)",
                    "responses": _answers("deployments", "401", "403"),
                }
            },
            "/admin/reload": {
                "post": {
                    "summary": "reload the config file (master key)",
                    "responses": _answers("reloaded", "401", "403", "409", "422"),
                }
            },
            "/admin/usage": {
                "get": {
                    "summary": "usage counters (master key)",
                    "responses": _answers("usage", "401", "403", "404"),
                }
            },
        },
    }
