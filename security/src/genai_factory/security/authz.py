"""Authorisation: RBAC with role inheritance through org -> team -> user, ABAC conditions, deny by
default, compiled into an index so a decision costs a handful of dict lookups.

**Resources** are ``type:id`` strings (``model:gpt-4o-mini``, ``prompt:summarise``,
``kb:hr-handbook``, ``tool:web_search``, ``admin:keys``) or a bare ``type``. A rule names
resources as ``*``, ``type`` (every resource of that type) or ``type:id``; actions as a name
(``invoke``, ``read``, ``update``...) or ``*``.

**Roles** come from the principal (API key, token claims) and from assignments to its org, its
team (``org/team``) and its user id; a role ``inherits`` others (``admin`` inherits ``editor``
inherits ``viewer``). Allow rules grant to roles (``*`` = every authenticated principal).

**Conditions** (ABAC), on the resource attributes the caller passes in ``context``
(``classification``, ``owner``, ``region``, ``now``) and the principal's attributes
(``clearance``): ``classification_at_most`` / ``classification_at_least`` (levels ``public`` <
``internal`` < ``confidential`` < ``restricted``), ``within_clearance``, ``owner``, ``regions`` /
``regions_not``, ``hours_utc`` ([start, end), may wrap midnight). An attribute the caller did not
supply is *unknown*: an allow rule then does not apply and a deny rule does (fail closed both ways);
a policy's ``defaults`` (e.g. ``classification: internal``) fill in what callers leave out.

**Decision**: a principal whose scopes do not cover the request is denied (rule ``scope``); then
the first deny rule that applies; then the first allow rule that applies; otherwise
``default-deny``. Deny rules bind everyone (no ``roles``), so holding fewer roles can never grant
more. The decision names the rule that decided.

Example:
    >>> import asyncio
    >>> from genai_factory.security.authz import PolicyAuthorizer
    >>> from genai_factory.shared.models import Principal
    >>> authz = PolicyAuthorizer({
    ...     "roles": {"editor": {"inherits": ["viewer"]}},
    ...     "assignments": {"teams": {"acme/ml": ["editor"]}},
    ...     "rules": [
    ...         {"id": "viewers-invoke", "roles": ["viewer"], "actions": ["invoke"],
    ...          "resources": ["model"], "conditions": {"classification_at_most": "internal"}},
    ...         {"id": "no-restricted-outside-eu", "effect": "deny", "actions": ["*"],
    ...          "resources": ["*"], "conditions": {"classification_at_least": "restricted",
    ...                                             "regions_not": ["eu"]}},
    ...     ]})
    >>> alice = Principal(subject="alice", org_id="acme", team_id="ml")
    >>> asyncio.run(authz.authorize(alice, "invoke", "model:small", {"classification": "internal"}))
    AuthDecision(allowed=True, rule='viewers-invoke', reason='allowed by viewers-invoke')
    >>> authz.decide(alice, "delete", "model:small", {"classification": "internal"}).rule
    'default-deny'
    >>> authz.decide(alice, "invoke", "model:small").rule  # classification unknown: fail closed
    'no-restricted-outside-eu'
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from genai_factory.shared.contracts import AuthDecision
from genai_factory.shared.errors import ConfigError, Forbidden
from genai_factory.shared.models import Principal
from genai_factory.shared.settings import read_yaml

__all__ = [
    "CLASSIFICATION_LEVELS",
    "Assignments",
    "CompiledPolicy",
    "Conditions",
    "Policy",
    "PolicyAuthorizer",
    "RoleAdministrator",
    "RoleDef",
    "Rule",
    "parse_resource",
]

logger = logging.getLogger(__name__)

Level = Literal["public", "internal", "confidential", "restricted"]
CLASSIFICATION_LEVELS: dict[str, int] = {
    "public": 0,
    "internal": 1,
    "confidential": 2,
    "restricted": 3,
}
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,100}")
_ACTION = re.compile(r"\*|[A-Za-z0-9_.-]{1,100}")
_RESOURCE = re.compile(r"\*|[A-Za-z0-9_.-]{1,100}(:[A-Za-z0-9_.:@/-]{1,200})?")
WILDCARD = "*"
DEFAULT_DENY = "default-deny"
SCOPE_RULE = "scope"

# A condition answers True, False, or None (an attribute it needs was not supplied).
Check = Callable[[Principal, Mapping[str, Any]], bool | None]


def parse_resource(resource: str) -> tuple[str, str]:
    """``type:id`` -> (type, id); a bare ``type`` -> (type, "").

    >>> parse_resource("kb:hr:2024"), parse_resource("model")
    (('kb', 'hr:2024'), ('model', ''))
    """
    rtype, _, rid = resource.partition(":")
    return rtype, rid


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Conditions(_Strict):
    """ABAC conditions of a rule; every one given must hold for the rule to apply."""

    classification_at_most: Level | None = None
    classification_at_least: Level | None = None
    within_clearance: bool | None = Field(
        default=None,
        description="True: the resource's classification is at most the principal's clearance; "
        "False: it is above it",
    )
    owner: bool | None = Field(
        default=None, description="True: the principal owns the resource; False: it does not"
    )
    regions: tuple[str, ...] | None = None
    regions_not: tuple[str, ...] | None = None
    hours_utc: tuple[int, int] | None = Field(
        default=None, description="[start, end) hours in UTC, 0-24; start > end wraps midnight"
    )

    @field_validator("hours_utc")
    @classmethod
    def _hours(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not (0 <= value[0] <= 24 and 0 <= value[1] <= 24):
            raise ValueError("hours must be between 0 and 24")
        return value

    def checks(self) -> tuple[Check, ...]:
        """The conditions as small functions, built once when the policy is compiled."""
        checks: list[Check] = []
        if self.classification_at_most is not None:
            limit = CLASSIFICATION_LEVELS[self.classification_at_most]
            checks.append(lambda p, c: _cmp(_level(c.get("classification")), limit, le=True))
        if self.classification_at_least is not None:
            floor = CLASSIFICATION_LEVELS[self.classification_at_least]
            checks.append(lambda p, c: _cmp(_level(c.get("classification")), floor, le=False))
        if self.within_clearance is not None:
            want = self.within_clearance
            checks.append(lambda p, c: _within_clearance(p, c, want))
        if self.owner is not None:
            want_owner = self.owner
            checks.append(lambda p, c: _owns(p, c, want_owner))
        if self.regions is not None:
            allowed = frozenset(self.regions)
            checks.append(lambda p, c: _region_in(c, allowed, want=True))
        if self.regions_not is not None:
            refused = frozenset(self.regions_not)
            checks.append(lambda p, c: _region_in(c, refused, want=False))
        if self.hours_utc is not None:
            start, end = self.hours_utc
            checks.append(lambda p, c: _in_hours(c, start, end))
        return tuple(checks)


def _level(value: Any) -> int | None:
    return CLASSIFICATION_LEVELS.get(value) if isinstance(value, str) else None


def _cmp(level: int | None, bound: int, *, le: bool) -> bool | None:
    if level is None:
        return None
    return level <= bound if le else level >= bound


def _within_clearance(principal: Principal, context: Mapping[str, Any], want: bool) -> bool | None:
    level = _level(context.get("classification"))
    clearance = _level(principal.attributes.get("clearance"))
    if level is None or clearance is None:
        return None
    return (level <= clearance) == want


def _owns(principal: Principal, context: Mapping[str, Any], want: bool) -> bool | None:
    owner = context.get("owner")
    if not isinstance(owner, str) or not owner:
        return None
    mine = owner in (principal.user_id, principal.subject)
    return mine == want


def _region_in(context: Mapping[str, Any], regions: frozenset[str], *, want: bool) -> bool | None:
    region = context.get("region")
    if not isinstance(region, str) or not region:
        return None
    return (region in regions) == want


def _in_hours(context: Mapping[str, Any], start: int, end: int) -> bool | None:
    now = context.get("now")
    if now is None:
        now = time.time()
    if isinstance(now, datetime):
        moment = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    elif isinstance(now, int | float):
        moment = datetime.fromtimestamp(now, UTC)
    else:
        return None
    hour = moment.hour + moment.minute / 60
    if start <= end:
        return start <= hour < end
    return hour >= start or hour < end  # wraps midnight


class Rule(_Strict):
    """One allow or deny rule. Deny rules bind every principal, so they take no ``roles``."""

    id: str = Field(pattern=f"^{_NAME.pattern}$")
    effect: Literal["allow", "deny"] = "allow"
    roles: tuple[str, ...] = (WILDCARD,)
    actions: tuple[str, ...] = Field(min_length=1)
    resources: tuple[str, ...] = Field(min_length=1)
    conditions: Conditions = Field(default_factory=Conditions)
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> Rule:
        if self.effect == "deny" and self.roles != (WILDCARD,):
            raise ValueError(
                "deny rules bind everyone and take no roles (so fewer roles never grant more)"
            )
        for role in self.roles:
            if role != WILDCARD and not _NAME.fullmatch(role):
                raise ValueError(f"invalid role name {role!r}")
        for action in self.actions:
            if not _ACTION.fullmatch(action):
                raise ValueError(f"invalid action {action!r}")
        for resource in self.resources:
            if not _RESOURCE.fullmatch(resource):
                raise ValueError(f"invalid resource pattern {resource!r}")
        return self


class RoleDef(_Strict):
    inherits: tuple[str, ...] = ()
    description: str = ""


class Assignments(_Strict):
    """Roles given to whole orgs, to teams (keyed ``org/team``) and to user ids."""

    orgs: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    teams: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    users: dict[str, tuple[str, ...]] = Field(default_factory=dict)


class Policy(_Strict):
    """Roles, assignments and rules: the whole authorisation configuration."""

    roles: dict[str, RoleDef] = Field(default_factory=dict)
    assignments: Assignments = Field(default_factory=Assignments)
    rules: tuple[Rule, ...] = ()
    defaults: dict[str, str] = Field(
        default_factory=dict,
        description="context attributes assumed when the caller supplies none, e.g. "
        "{classification: internal} so unclassified resources count as internal",
    )

    @model_validator(mode="after")
    def _check(self) -> Policy:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"duplicate rule id {rule.id!r}")
            seen.add(rule.id)
        for name in self.roles:
            if not _NAME.fullmatch(name):
                raise ValueError(f"invalid role name {name!r}")
        _closures(self.roles)  # raises on cycles
        return self


def _closures(roles: Mapping[str, RoleDef]) -> dict[str, frozenset[str]]:
    """Each declared role -> itself and every role it inherits, transitively."""
    result: dict[str, frozenset[str]] = {}

    def visit(name: str, path: tuple[str, ...]) -> frozenset[str]:
        if name in result:
            return result[name]
        if name in path:
            raise ValueError(f"role inheritance cycle: {' -> '.join((*path, name))}")
        found = {name}
        definition = roles.get(name)
        for parent in definition.inherits if definition else ():
            found |= visit(parent, (*path, name))
        result[name] = frozenset(found)
        return result[name]

    for name in roles:
        visit(name, ())
    return result


_Entry = tuple[int, Rule, tuple[Check, ...]]


class CompiledPolicy:
    """A policy turned into dict indexes: (role, action, type, id) for allows, (action, type,
    id) for denies, with ``*`` as a key value; role inheritance is expanded at compile time."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        closures = _closures(policy.roles)
        self.closures = closures
        # role -> every role that holds its permissions (itself and the roles inheriting it)
        holders: dict[str, set[str]] = {}
        for role, closure in closures.items():
            for inherited in closure:
                holders.setdefault(inherited, {inherited}).add(role)
        self._allow: dict[tuple[str, str, str, str], list[_Entry]] = {}
        self._deny: dict[tuple[str, str, str], list[_Entry]] = {}
        for order, rule in enumerate(policy.rules):
            entry: _Entry = (order, rule, rule.conditions.checks())
            for action in rule.actions:
                for resource in rule.resources:
                    rtype, rid = (
                        (WILDCARD, WILDCARD) if resource == WILDCARD else parse_resource(resource)
                    )
                    rid = rid or WILDCARD
                    if rule.effect == "deny":
                        self._deny.setdefault((action, rtype, rid), []).append(entry)
                        continue
                    for role in rule.roles:
                        for holder in holders.get(role, {role}):
                            self._allow.setdefault((holder, action, rtype, rid), []).append(entry)
        self.size = len(policy.rules)
        self._defaults = dict(policy.defaults)

    def direct_roles(self, principal: Principal) -> frozenset[str]:
        """The principal's own roles plus those assigned to its org, team and user id."""
        assignments = self.policy.assignments
        roles = set(principal.roles)
        if principal.org_id is not None:
            roles.update(assignments.orgs.get(principal.org_id, ()))
            if principal.team_id is not None:
                roles.update(assignments.teams.get(f"{principal.org_id}/{principal.team_id}", ()))
        if principal.user_id is not None:
            roles.update(assignments.users.get(principal.user_id, ()))
        return frozenset(roles)

    def effective_roles(self, principal: Principal) -> frozenset[str]:
        """Direct roles and everything they inherit."""
        roles: set[str] = set()
        for role in self.direct_roles(principal):
            roles |= self.closures.get(role, frozenset({role}))
        return frozenset(roles)

    def decide(
        self,
        principal: Principal,
        action: str,
        resource: str,
        context: Mapping[str, Any],
        *,
        enforce_scopes: bool = True,
    ) -> AuthDecision:
        if self._defaults:
            context = {**self._defaults, **context}
        rtype, rid = parse_resource(resource)
        if (
            enforce_scopes
            and principal.scopes
            and not _scope_covers(principal.scopes, rtype, action)
        ):
            return AuthDecision(
                False, SCOPE_RULE, f"the credential's scopes do not cover {rtype}:{action}"
            )
        actions = (action, WILDCARD)
        targets = (
            ((rtype, rid), (rtype, WILDCARD), (WILDCARD, WILDCARD))
            if rid
            else (
                (rtype, WILDCARD),
                (WILDCARD, WILDCARD),
            )
        )
        deny = self._deny
        denies = [e for a in actions for t in targets for e in deny.get((a, t[0], t[1]), ())]
        if denies:
            if len(denies) > 1:
                denies.sort(key=_order)
            for _, rule, checks in denies:
                # a deny applies unless a condition is known to be false (unknown counts as true)
                if all(check(principal, context) is not False for check in checks):
                    return AuthDecision(False, rule.id, f"denied by {rule.id}")
        allow = self._allow
        candidates: list[_Entry] = []
        for role in (*self.direct_roles(principal), WILDCARD):
            for a in actions:
                for t in targets:
                    found = allow.get((role, a, t[0], t[1]))
                    if found:
                        candidates.extend(found)
        if len(candidates) > 1:
            candidates.sort(key=_order)
        for _, rule, checks in candidates:
            if all(check(principal, context) is True for check in checks):
                return AuthDecision(True, rule.id, f"allowed by {rule.id}")
        return AuthDecision(False, DEFAULT_DENY, f"no rule allows {action} on {resource}")


def _order(entry: _Entry) -> int:
    return entry[0]


def _scope_covers(scopes: frozenset[str], rtype: str, action: str) -> bool:
    return (
        WILDCARD in scopes
        or f"{rtype}:{action}" in scopes
        or f"{rtype}:{WILDCARD}" in scopes
        or f"{WILDCARD}:{action}" in scopes
    )


def _load_policy(policy: Mapping[str, Any] | Policy | None, policy_file: str | None) -> Policy:
    if isinstance(policy, Policy):
        return policy
    if policy is not None and policy_file is not None:
        raise ConfigError("give policy or policy_file, not both", param="policy")
    where = "policy"
    data: Mapping[str, Any] = policy or {}
    if policy_file is not None:
        data, where = read_yaml(Path(policy_file)), policy_file
    try:
        return Policy.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"invalid authorisation policy ({where}) at '{field or 'policy'}': {first['msg']}",
            param=f"policy.{field}" if field else "policy",
        ) from None


class PolicyAuthorizer:
    """The :class:`~genai_factory.shared.contracts.Authorizer` over a compiled :class:`Policy`.

    ``policy`` is the policy mapping (or ``policy_file`` a YAML file holding it).
    ``enforce_scopes``: a principal that carries scopes (API key or OAuth token scopes, written
    ``type:action``, ``type:*``, ``*:action`` or ``*``) may only do what they cover.
    """

    def __init__(
        self,
        policy: dict[str, Any] | None = None,
        *,
        policy_file: str | None = None,
        enforce_scopes: bool = True,
    ) -> None:
        self.policy_file = policy_file
        self.enforce_scopes = enforce_scopes
        self._compiled = CompiledPolicy(_load_policy(policy, policy_file))

    def to_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"enforce_scopes": self.enforce_scopes}
        if self.policy_file is not None:
            params["policy_file"] = self.policy_file
        else:
            params["policy"] = self.policy.model_dump(mode="json", exclude_defaults=True)
        return params

    @property
    def policy(self) -> Policy:
        return self._compiled.policy

    @property
    def compiled(self) -> CompiledPolicy:
        return self._compiled

    def replace_policy(self, policy: Policy | Mapping[str, Any]) -> None:
        """Compile ``policy`` and swap it in; decisions in flight keep the old one."""
        self._compiled = CompiledPolicy(_load_policy(policy, None))
        self.policy_file = None

    def effective_roles(self, principal: Principal) -> frozenset[str]:
        return self._compiled.effective_roles(principal)

    def decide(
        self,
        principal: Principal,
        action: str,
        resource: str,
        context: Mapping[str, Any] | None = None,
    ) -> AuthDecision:
        """The decision, synchronously (the contract's ``authorize`` awaits nothing else)."""
        return self._compiled.decide(
            principal, action, resource, context or {}, enforce_scopes=self.enforce_scopes
        )

    async def authorize(
        self,
        principal: Principal,
        action: str,
        resource: str,
        context: Mapping[str, Any] | None = None,
    ) -> AuthDecision:
        decision = self.decide(principal, action, resource, context)
        if not decision.allowed and logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "authorisation denied",
                extra={
                    "subject": principal.subject,
                    "action": action,
                    "resource": resource,
                    "rule": decision.rule,
                },
            )
        return decision


AssignmentLevel = Literal["org", "team", "user"]


class RoleAdministrator:
    """Edits a :class:`PolicyAuthorizer`'s policy on behalf of an actor, without escalation.

    Assigning or unassigning a role needs ``assign`` on ``role:<name>`` *and* the actor must
    hold that role itself (nobody hands out more than they have). Changing what a role inherits
    needs ``update`` on ``role:<name>`` and the actor must hold everything the role would
    inherit. Adding or removing rules needs ``update`` on ``admin:policy``. Every change is
    logged with the actor.
    """

    def __init__(self, authorizer: PolicyAuthorizer) -> None:
        self.authorizer = authorizer

    def _require(self, actor: Principal, action: str, resource: str) -> None:
        decision = self.authorizer.decide(actor, action, resource)
        if not decision.allowed:
            raise Forbidden(f"{actor.subject} may not {action} {resource} ({decision.rule})")

    def _require_held(self, actor: Principal, roles: Iterable[str]) -> None:
        held = self.authorizer.effective_roles(actor)
        missing = sorted(set(roles) - held)
        if missing:
            raise Forbidden(
                f"{actor.subject} cannot grant roles it does not hold: {', '.join(missing)}",
                code="privilege_escalation",
            )

    def _commit(self, actor: Principal, policy: Policy, change: str) -> None:
        self.authorizer.replace_policy(policy)
        logger.info("policy changed", extra={"actor": actor.subject, "change": change})

    def assign(self, actor: Principal, level: AssignmentLevel, target: str, role: str) -> None:
        self._require(actor, "assign", f"role:{role}")
        self._require_held(actor, [role])
        self._set_assignment(actor, level, target, role, add=True)

    def unassign(self, actor: Principal, level: AssignmentLevel, target: str, role: str) -> None:
        self._require(actor, "assign", f"role:{role}")
        self._require_held(actor, [role])
        self._set_assignment(actor, level, target, role, add=False)

    def _set_assignment(
        self, actor: Principal, level: AssignmentLevel, target: str, role: str, *, add: bool
    ) -> None:
        policy = self.authorizer.policy
        field = {"org": "orgs", "team": "teams", "user": "users"}[level]
        table = dict(getattr(policy.assignments, field))
        current = set(table.get(target, ()))
        current = current | {role} if add else current - {role}
        if current:
            table[target] = tuple(sorted(current))
        else:
            table.pop(target, None)
        assignments = policy.assignments.model_copy(update={field: table})
        change = f"{'assign' if add else 'unassign'} {role} to {level} {target}"
        self._commit(actor, policy.model_copy(update={"assignments": assignments}), change)

    def set_inherits(self, actor: Principal, role: str, inherits: Sequence[str]) -> None:
        self._require(actor, "update", f"role:{role}")
        self._require_held(actor, inherits)
        policy = self.authorizer.policy
        roles = dict(policy.roles)
        roles[role] = RoleDef(
            inherits=tuple(inherits), description=roles.get(role, RoleDef()).description
        )
        data = policy.model_dump()
        data["roles"] = {name: definition.model_dump() for name, definition in roles.items()}
        self._commit(actor, _load_policy(data, None), f"role {role} inherits {list(inherits)}")

    def put_rule(self, actor: Principal, rule: Rule | Mapping[str, Any]) -> None:
        self._require(actor, "update", "admin:policy")
        new = rule if isinstance(rule, Rule) else Rule.model_validate(rule)
        policy = self.authorizer.policy
        rules = [r for r in policy.rules if r.id != new.id] + [new]
        data = policy.model_dump()
        data["rules"] = [r.model_dump() for r in rules]
        self._commit(actor, _load_policy(data, None), f"put rule {new.id}")

    def remove_rule(self, actor: Principal, rule_id: str) -> None:
        self._require(actor, "update", "admin:policy")
        policy = self.authorizer.policy
        data = policy.model_dump()
        data["rules"] = [r.model_dump() for r in policy.rules if r.id != rule_id]
        self._commit(actor, _load_policy(data, None), f"remove rule {rule_id}")
