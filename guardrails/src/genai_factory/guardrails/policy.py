"""The policy engine: declarative rules per tenant and route, evaluated in order.

A policy file lists policies; each applies to the tenants and routes its globs match (the tenant
is ``principal.tenant``; the route is the request's ``route`` field, else its model) and holds
rules evaluated in file order. Rule types:

- ``banned_topic``: embedding similarity of any sentence to any listed topic >= ``threshold``
- ``regex``: a pattern; ``keywords``: whole words or phrases, case-insensitive
- ``allowed_domains``: every URL's host must be one of ``domains`` (or a subdomain)
- ``length``: ``max_chars`` (and ``min_chars``)
- ``required_disclaimer``: the answer must contain ``text``

Actions: ``block`` and ``escalate`` stop evaluation (escalate marks the finding for human review);
``redact`` rewrites the matches (a missing disclaimer is appended; a disallowed URL replaced);
``warn`` only reports; ``re-ask`` (output) asks ``reask_model`` for a compliant answer and checks
it again, or blocks when there is none. Every rule's time is reported. An invalid file or rule is
a ConfigError naming the rule.

Example:
    >>> engine = PolicyEngine(policies=[{"id": "p", "rules": [
    ...     {"id": "no-secrets-word", "type": "keywords", "words": ["project x"], "action": "block"}]}])
    >>> import asyncio
    >>> from genai_factory.shared.models import ChatCompletionRequest
    >>> req = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "Tell me about Project X"}])
    >>> verdict = asyncio.run(engine.check_input(req, None))
    >>> verdict.decision, verdict.findings[0].rule_id, sorted(verdict.timings_ms)
    ('block', 'no-secrets-word', ['policy.no-secrets-word'])
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import numpy as np
import pydantic
from pydantic import BaseModel, ConfigDict, Field

from genai_factory.guardrails.base import Decision, combine, encode_rewrites, request_segments
from genai_factory.guardrails.embeddings import MiniLMEmbedder
from genai_factory.guardrails.output.grounding import split_sentences
from genai_factory.shared.contracts import ChatModel
from genai_factory.shared.errors import ConfigError
from genai_factory.shared.models import (
    ChatCompletionRequest,
    ChatMessage,
    Finding,
    Principal,
    Verdict,
)
from genai_factory.shared.settings import read_yaml

__all__ = ["PolicyEngine", "PolicyFile"]

Action = Literal["block", "redact", "warn", "re-ask", "escalate"]
Direction = Literal["input", "output", "both"]
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'`)\]]+", re.IGNORECASE)


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128)
    direction: Direction = "both"
    action: Action = "block"
    message: str = ""


class BannedTopicRule(_Rule):
    type: Literal["banned_topic"]
    topics: list[str] = Field(min_length=1)
    threshold: float = Field(default=0.55, gt=0.0, lt=1.0)


class RegexRule(_Rule):
    type: Literal["regex"]
    pattern: str = Field(min_length=1)
    ignore_case: bool = True

    @pydantic.field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return value


class KeywordsRule(_Rule):
    type: Literal["keywords"]
    words: list[str] = Field(min_length=1)


class AllowedDomainsRule(_Rule):
    type: Literal["allowed_domains"]
    domains: list[str] = Field(min_length=1)


class LengthRule(_Rule):
    type: Literal["length"]
    max_chars: int | None = Field(default=None, ge=1)
    min_chars: int = Field(default=0, ge=0)


class DisclaimerRule(_Rule):
    type: Literal["required_disclaimer"]
    text: str = Field(min_length=1)
    direction: Direction = "output"


Rule = Annotated[
    BannedTopicRule | RegexRule | KeywordsRule | AllowedDomainsRule | LengthRule | DisclaimerRule,
    Field(discriminator="type"),
]


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    tenants: list[str] = Field(default_factory=lambda: ["*"])
    routes: list[str] = Field(default_factory=lambda: ["*"])
    rules: list[Rule] = Field(default_factory=list)

    def applies(self, tenant: str, route: str) -> bool:
        return any(fnmatch.fnmatchcase(tenant, t) for t in self.tenants) and any(
            fnmatch.fnmatchcase(route, r) for r in self.routes
        )


class PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policies: list[Policy] = Field(default_factory=list)


def _rule_name(data: Any, loc: tuple[int | str, ...]) -> str:
    """The id of the rule a validation error points at (or its position)."""
    try:
        policy = data["policies"][loc[1]]
        if len(loc) > 3 and loc[2] == "rules":
            rule = policy["rules"][loc[3]]
            return f"rule '{rule.get('id', f'#{loc[3]}')}' of policy '{policy.get('id', loc[1])}'"
        return f"policy '{policy.get('id', loc[1])}'"
    except (KeyError, IndexError, TypeError, AttributeError):
        return "policy file"


def parse_policies(data: Any, source: str = "policies") -> PolicyFile:
    """Validate raw policy data; ConfigError names the rule and the field."""
    if isinstance(data, list):
        data = {"policies": data}
    try:
        parsed = PolicyFile.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = tuple(first["loc"])
        field = ".".join(str(p) for p in loc)
        raise ConfigError(
            f"{source}: invalid {_rule_name(data, loc)} at '{field}': {first['msg']}", param=field
        ) from None
    seen: set[str] = set()
    for policy in parsed.policies:
        for rule in policy.rules:
            if rule.id in seen:
                raise ConfigError(f"{source}: rule id '{rule.id}' is used twice", param=rule.id)
            seen.add(rule.id)
    return parsed


class PolicyEngine:
    """Evaluates the policies that apply to a request, rule by rule, short-circuiting on block.

    ``path`` is a YAML file (``policies: [...]``); ``policies`` gives the same data inline.
    ``embedder`` serves banned-topic rules; ``reask_model`` serves re-ask actions.
    """

    def __init__(
        self,
        path: str | None = None,
        policies: list[dict[str, Any]] | None = None,
        embedder: MiniLMEmbedder | None = None,
        reask_model: ChatModel | None = None,
    ) -> None:
        if (path is None) == (policies is None):
            raise ConfigError("PolicyEngine needs exactly one of 'path' or 'policies'")
        self.path = path
        self.policies = policies
        data: Any = read_yaml(Path(path)) if path is not None else {"policies": policies}
        self._file = parse_policies(data, source=path or "policies")
        self._patterns: dict[str, re.Pattern[str]] = {}
        for policy in self._file.policies:
            for rule in policy.rules:
                if isinstance(rule, RegexRule):
                    self._patterns[rule.id] = re.compile(
                        rule.pattern, re.IGNORECASE if rule.ignore_case else 0
                    )
                elif isinstance(rule, KeywordsRule):
                    words = "|".join(
                        re.escape(w) for w in sorted(rule.words, key=len, reverse=True)
                    )
                    self._patterns[rule.id] = re.compile(
                        rf"(?<!\w)(?:{words})(?!\w)", re.IGNORECASE
                    )
        needs_embeddings = any(
            isinstance(rule, BannedTopicRule) for p in self._file.policies for rule in p.rules
        )
        self.embedder = (
            embedder if embedder is not None or not needs_embeddings else MiniLMEmbedder()
        )
        self.reask_model = reask_model
        self._topic_vectors: dict[str, np.ndarray[Any, Any]] = {}

    def to_params(self) -> dict[str, object]:
        params: dict[str, object] = (
            {"path": self.path} if self.path else {"policies": self.policies}
        )
        if self.embedder is not None:
            params["embedder"] = self.embedder
        return params

    @property
    def rule_ids(self) -> list[str]:
        return [rule.id for p in self._file.policies for rule in p.rules]

    def rules_for(
        self, tenant: str, route: str, direction: Literal["input", "output"]
    ) -> list[Rule]:
        return [
            rule
            for policy in self._file.policies
            if policy.applies(tenant, route)
            for rule in policy.rules
            if rule.direction in (direction, "both")
        ]

    @staticmethod
    def route_of(request: ChatCompletionRequest) -> str:
        route = (request.model_extra or {}).get("route")
        return route if isinstance(route, str) and route else request.model

    # -------------------------------------------------------------------------- single rules

    def _topic_hit(self, rule: BannedTopicRule, text: str) -> tuple[float, tuple[int, int] | None]:
        assert self.embedder is not None
        if rule.id not in self._topic_vectors:
            self._topic_vectors[rule.id] = self.embedder.encode(rule.topics)
        sentences = split_sentences(text) or [(0, len(text), text)]
        vectors = self.embedder.encode([s for _, _, s in sentences])
        sims = vectors @ self._topic_vectors[rule.id].T
        row, _ = np.unravel_index(int(np.argmax(sims)), sims.shape)
        best = float(sims.max())
        return best, (sentences[row][0], sentences[row][1]) if best >= rule.threshold else None

    def _matches(self, rule: Rule, text: str) -> list[tuple[int, int]]:
        """Spans that violate ``rule`` in ``text`` ((0, 0) for a whole-text violation)."""
        if isinstance(rule, RegexRule | KeywordsRule):
            return [(m.start(), m.end()) for m in self._patterns[rule.id].finditer(text)]
        if isinstance(rule, AllowedDomainsRule):
            spans = []
            for match in _URL.finditer(text):
                url = match.group()
                host = (urlsplit(url if "://" in url else f"http://{url}").hostname or "").lower()
                allowed = any(
                    host == d.lower() or host.endswith("." + d.lower()) for d in rule.domains
                )
                if not allowed:
                    spans.append((match.start(), match.end()))
            return spans
        if isinstance(rule, LengthRule):
            too_long = rule.max_chars is not None and len(text) > rule.max_chars
            return [(0, 0)] if too_long or len(text) < rule.min_chars else []
        if isinstance(rule, DisclaimerRule):
            return [] if rule.text.lower() in text.lower() else [(0, 0)]
        hit = self._topic_hit(rule, text)[1]
        return [hit] if hit else []

    def _rewrite(self, rule: Rule, text: str, spans: list[tuple[int, int]]) -> str:
        if isinstance(rule, DisclaimerRule):
            return f"{text.rstrip()}\n\n{rule.text}"
        if isinstance(rule, LengthRule):
            return text[: rule.max_chars] if rule.max_chars is not None else text
        out, cursor = [], 0
        for start, end in sorted(spans):
            out += [text[cursor:start], f"[REDACTED:{rule.id}]"]
            cursor = max(cursor, end)
        return "".join(out) + text[cursor:]

    # ------------------------------------------------------------------------------ evaluation

    def _evaluate(
        self, rules: Sequence[Rule], text: str, timings: dict[str, float], where: str
    ) -> tuple[Decision, list[Finding], str, Rule | None]:
        """Rules in order on one text: (decision, findings, rewritten text, re-ask rule)."""
        findings: list[Finding] = []
        decisions: list[Decision] = []
        for rule in rules:
            started = time.perf_counter()
            spans = self._matches(rule, text)
            if spans:
                category = "escalation" if rule.action == "escalate" else "policy"
                start, end = spans[0]
                findings.append(
                    Finding(
                        rule_id=rule.id,
                        category=category,
                        layer="policy",
                        start=start if end > start else None,
                        end=end if end > start else None,
                        message=rule.message or f"{rule.type} rule ({rule.action}) on {where}",
                    )
                )
                if rule.action == "redact":
                    text = self._rewrite(rule, text, spans)
                    decisions.append("redact")
            key = f"policy.{rule.id}"
            timings[key] = timings.get(key, 0.0) + (time.perf_counter() - started) * 1000
            if spans and rule.action in ("block", "escalate"):
                return "block", findings, text, None
            if spans and rule.action == "re-ask":
                return "block", findings, text, rule
        decision: Decision = "redact" if "redact" in decisions else "allow"
        return decision, findings, text, None

    async def check_input(
        self, request: ChatCompletionRequest, principal: Principal | None
    ) -> Verdict:
        tenant = principal.tenant if principal else "anonymous"
        rules = self.rules_for(tenant, self.route_of(request), "input")
        timings: dict[str, float] = {}
        findings: list[Finding] = []
        rewrites: dict[int, str] = {}
        decision: Decision = "allow"
        for segment in request_segments(request, roles=["user"]):
            result, found, text, _ = await asyncio.to_thread(
                self._evaluate, rules, segment.text, timings, f"message {segment.index}"
            )
            findings += found
            if text != segment.text:
                rewrites[segment.index] = text
            if result == "block":
                return combine(["block"], findings, timings)
            if result == "redact":
                decision = "redact"
        text_out = encode_rewrites(request, rewrites) if decision == "redact" else None
        return combine([decision], findings, timings, text_out)

    async def check_output(
        self, text: str, request: ChatCompletionRequest, principal: Principal | None
    ) -> Verdict:
        tenant = principal.tenant if principal else "anonymous"
        rules = self.rules_for(tenant, self.route_of(request), "output")
        timings: dict[str, float] = {}
        decision, findings, new_text, reask = await asyncio.to_thread(
            self._evaluate, rules, text, timings, "the answer"
        )
        if reask is not None and self.reask_model is not None:
            started = time.perf_counter()
            instruction = (
                f"Your answer broke the rule '{reask.id}' ({reask.message or reask.type}). "
                + (f"It must include: {reask.text}. " if isinstance(reask, DisclaimerRule) else "")
                + "Answer again, following the rule."
            )
            follow_up = request.model_copy(
                update={
                    "messages": [
                        *request.messages,
                        ChatMessage(role="assistant", content=text),
                        ChatMessage(role="user", content=instruction),
                    ],
                    "stream": False,
                }
            )
            answer = (await self.reask_model.complete(follow_up)).text()
            timings["policy.reask"] = (time.perf_counter() - started) * 1000
            again, more, fixed, still = await asyncio.to_thread(
                self._evaluate, rules, answer, timings, "the re-asked answer"
            )
            findings += more
            if still is None and again != "block":
                return combine(["redact"], findings, timings, fixed)
            return combine(["block"], findings, timings)
        return combine([decision], findings, timings, new_text if new_text != text else None)
