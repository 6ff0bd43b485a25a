"""JSON-schema validation of answers, with a re-ask hook.

The schema comes from the request's ``response_format`` (``json_schema`` or llama.cpp's
``json_object`` + ``schema``) or from the guard's config. An answer is parsed (a Markdown code
fence around it is tolerated) and validated with Draft 2020-12; the errors name the failing path.
:func:`reask_request` builds the follow-up request that shows the model its answer and the
errors and asks for valid JSON only.

Example:
    >>> errors = validate_json('{"age": "ten"}', {"type": "object",
    ...     "properties": {"age": {"type": "integer"}}, "required": ["age"]})
    >>> errors
    ["age: 'ten' is not of type 'integer'"]
    >>> validate_json('```json\\n{"age": 10}\\n```', {"type": "object"})
    []
    >>> validate_json("not json", None)
    ['not valid JSON: Expecting value at line 1, column 1']
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

from genai_factory.shared.models import ChatCompletionRequest, ChatMessage

__all__ = ["extract_json", "reask_request", "request_schema", "validate_json"]

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n\s*```\s*$", re.DOTALL)


def extract_json(text: str) -> Any:
    """The JSON value in ``text`` (inside a code fence or not); raises ValueError if none."""
    fenced = _FENCE.match(text)
    body = fenced.group(1) if fenced else text
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None


def validate_json(text: str, schema: dict[str, Any] | None, max_errors: int = 5) -> list[str]:
    """Human-readable problems with ``text`` against ``schema`` (empty when it is valid)."""
    try:
        value = extract_json(text)
    except ValueError as exc:
        return [str(exc)]
    if schema is None:
        return []
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in errors[:max_errors]
    ]


def request_schema(request: ChatCompletionRequest) -> tuple[bool, dict[str, Any] | None]:
    """(does the request want JSON?, the schema it names, if any)."""
    response_format = request.response_format
    if response_format is None or response_format.type == "text":
        return False, None
    if response_format.type == "json_schema" and response_format.json_schema is not None:
        return True, response_format.json_schema.schema_
    return True, response_format.schema_


def reask_request(
    request: ChatCompletionRequest, answer: str, errors: list[str]
) -> ChatCompletionRequest:
    """The follow-up request: the conversation, the bad answer, and what was wrong with it."""
    problems = "\n".join(f"- {e}" for e in errors)
    messages = [
        *request.messages,
        ChatMessage(role="assistant", content=answer),
        ChatMessage(
            role="user",
            content=(
                "Your previous answer is not valid against the required JSON schema:\n"
                f"{problems}\nReply again with only the corrected JSON, no other text."
            ),
        ),
    ]
    return request.model_copy(update={"messages": messages, "stream": False})
