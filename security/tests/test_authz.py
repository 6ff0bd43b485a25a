"""RBAC + ABAC: inheritance, assignments, conditions, deny-by-default, the compiled index."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genai_factory.security.authz import (
    Policy,
    PolicyAuthorizer,
    RoleAdministrator,
    parse_resource,
)
from genai_factory.shared.contracts import AuthDecision, Authorizer
from genai_factory.shared.errors import ConfigError, Forbidden
from genai_factory.shared.factory import build_component, dump_component
from genai_factory.shared.models import Principal

EXAMPLE_POLICY = Path(__file__).resolve().parents[1] / "examples" / "policy.yaml"
NOON = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)


def who(subject: str = "u", **kwargs: Any) -> Principal:
    return Principal(subject=subject, **kwargs)


@pytest.fixture
def example() -> PolicyAuthorizer:
    return PolicyAuthorizer(policy_file=str(EXAMPLE_POLICY))


async def test_it_implements_the_authorizer_contract(example: PolicyAuthorizer) -> None:
    assert isinstance(example, Authorizer)
    decision = await example.authorize(who(roles=frozenset({"viewer"})), "read", "model:m")
    assert decision == AuthDecision(True, "read-catalogue", "allowed by read-catalogue")


def test_roles_inherit_permissions(example: PolicyAuthorizer) -> None:
    admin = who(roles=frozenset({"admin"}))
    assert example.effective_roles(admin) == {
        "admin",
        "editor",
        "invoker",
        "viewer",
        "team-lead",
    }
    assert example.decide(admin, "read", "prompt:p").allowed  # from viewer, 3 levels down
    assert example.decide(admin, "publish", "prompt:p").allowed  # from editor
    viewer = who(roles=frozenset({"viewer"}))
    assert not example.decide(viewer, "publish", "prompt:p").allowed  # never upwards


def test_roles_come_from_org_team_and_user_assignments(example: PolicyAuthorizer) -> None:
    in_org = who("bob", org_id="acme", user_id="bob")
    in_team = who("carol", org_id="acme", team_id="ml", user_id="carol")
    alice = who("alice", org_id="acme", team_id="ml", user_id="alice")
    other_org_same_team_name = who("eve", org_id="evil", team_id="ml", user_id="eve")
    assert example.effective_roles(in_org) == {"viewer"}
    assert example.effective_roles(in_team) == {"viewer", "invoker"}
    assert "admin" in example.effective_roles(alice)
    assert example.effective_roles(other_org_same_team_name) == frozenset()
    tool = "tool:web_search"
    assert not example.decide(in_org, "invoke", tool).allowed
    assert example.decide(in_team, "invoke", tool).rule == "invoke-tools"
    assert example.decide(other_org_same_team_name, "read", "model:m").rule == "default-deny"


@pytest.mark.parametrize(
    ("clearance", "classification", "allowed"),
    [
        ("confidential", "internal", True),
        ("confidential", "confidential", True),
        ("internal", "confidential", False),
        (None, "internal", False),  # no clearance attribute: unknown, fail closed
        ("confidential", "unknown-level", False),
    ],
)
def test_models_are_invoked_within_clearance(
    example: PolicyAuthorizer, clearance: str | None, classification: str, allowed: bool
) -> None:
    attributes = {"clearance": clearance} if clearance else {}
    invoker = who(roles=frozenset({"invoker"}), attributes=attributes)
    context = {"classification": classification, "region": "eu-west-1"}
    decision = example.decide(invoker, "invoke", "model:m", context)
    assert decision.allowed is allowed
    if not allowed:
        assert decision.rule in ("default-deny", "restricted-data-stays-in-the-eu")


def test_owners_edit_their_own_prompts_only(example: PolicyAuthorizer) -> None:
    dana = who("dana", user_id="dana", roles=frozenset({"invoker"}))
    assert example.decide(dana, "update", "prompt:p", {"owner": "dana"}).rule == "edit-own-prompts"
    assert not example.decide(dana, "update", "prompt:p", {"owner": "erin"}).allowed
    assert not example.decide(dana, "update", "prompt:p").allowed  # owner unknown


@pytest.mark.parametrize(
    ("region", "classification", "rule"),
    [
        ("eu-west-1", "restricted", "admins-do-everything"),
        ("us-east-1", "restricted", "restricted-data-stays-in-the-eu"),
        (None, "restricted", "restricted-data-stays-in-the-eu"),  # region unknown: deny applies
        ("us-east-1", "confidential", "admins-do-everything"),
    ],
)
def test_deny_rules_override_any_role(
    example: PolicyAuthorizer, region: str | None, classification: str, rule: str
) -> None:
    admin = who(roles=frozenset({"admin"}))
    context: dict[str, Any] = {"classification": classification}
    if region:
        context["region"] = region
    assert example.decide(admin, "invoke", "model:m", context).rule == rule


@pytest.mark.parametrize(
    ("now", "allowed"),
    [
        (NOON, True),
        (datetime(2025, 3, 3, 22, 0, tzinfo=UTC), False),
        (datetime(2025, 3, 3, 5, 59), False),  # naive datetimes are UTC
        (datetime(2025, 3, 3, 12, 0, tzinfo=timezone(timedelta(hours=10))), True),  # 02:00 UTC?
        (NOON.timestamp(), True),
        ("noon", False),  # not a time: unknown, the deny applies
    ],
)
def test_time_windows(example: PolicyAuthorizer, now: Any, allowed: bool) -> None:
    if isinstance(now, datetime) and now.utcoffset() == timedelta(hours=10):
        allowed = False  # 12:00 at +10 is 02:00 UTC: inside the night window
    invoker = who(roles=frozenset({"invoker"}))
    decision = example.decide(invoker, "invoke", "tool:code_interpreter", {"now": now})
    assert decision.allowed is allowed
    assert decision.rule == ("invoke-tools" if allowed else "no-code-execution-at-night")


def test_the_time_window_uses_the_clock_when_no_time_is_given() -> None:
    authz = PolicyAuthorizer(
        {
            "rules": [
                {
                    "id": "always",
                    "actions": ["a"],
                    "resources": ["r"],
                    "conditions": {"hours_utc": [0, 24]},
                }
            ]
        }
    )
    assert authz.decide(who(), "a", "r").allowed


def test_scopes_limit_what_a_credential_may_do(example: PolicyAuthorizer) -> None:
    admin = who(roles=frozenset({"admin"}), scopes=frozenset({"model:invoke", "prompt:*"}))
    assert example.decide(admin, "invoke", "model:m").allowed
    assert example.decide(admin, "delete", "prompt:p").allowed
    denied = example.decide(admin, "delete", "model:m")
    assert (denied.allowed, denied.rule) == (False, "scope")
    star_action = who(roles=frozenset({"admin"}), scopes=frozenset({"*:read"}))
    assert example.decide(star_action, "read", "kb:k").allowed
    unscoped = PolicyAuthorizer(policy_file=str(EXAMPLE_POLICY), enforce_scopes=False)
    assert unscoped.decide(admin, "delete", "model:m").allowed


def test_resource_specific_and_wildcard_rules() -> None:
    authz = PolicyAuthorizer(
        {
            "rules": [
                {
                    "id": "one-model",
                    "roles": ["r"],
                    "actions": ["invoke"],
                    "resources": ["model:small"],
                },
                {"id": "all-actions-on-kbs", "roles": ["r"], "actions": ["*"], "resources": ["kb"]},
                {"id": "everyone-lists", "actions": ["list"], "resources": ["*"]},
            ]
        }
    )
    r = who(roles=frozenset({"r"}))
    assert authz.decide(r, "invoke", "model:small").rule == "one-model"
    assert not authz.decide(r, "invoke", "model:large").allowed
    assert not authz.decide(r, "invoke", "model").allowed  # the type as a whole: no
    assert authz.decide(r, "drop", "kb:hr").rule == "all-actions-on-kbs"
    assert authz.decide(who(), "list", "anything:at-all").rule == "everyone-lists"
    assert authz.decide(who(), "list", "anything").rule == "everyone-lists"


def test_the_first_rule_in_the_policy_names_the_decision() -> None:
    rules = [
        {"id": "first", "roles": ["a"], "actions": ["x"], "resources": ["t"]},
        {"id": "second", "roles": ["b"], "actions": ["*"], "resources": ["*"]},
    ]
    authz = PolicyAuthorizer({"rules": rules})
    assert authz.decide(who(roles=frozenset({"a", "b"})), "x", "t:1").rule == "first"
    authz = PolicyAuthorizer({"rules": list(reversed(rules))})
    assert authz.decide(who(roles=frozenset({"a", "b"})), "x", "t:1").rule == "second"


@pytest.mark.parametrize(
    ("policy", "match"),
    [
        ({"roles": {"a": {"inherits": ["b"]}, "b": {"inherits": ["a"]}}}, "cycle"),
        ({"rules": [{"id": "x", "actions": ["a"], "resources": ["r"]}] * 2}, "duplicate"),
        (
            {
                "rules": [
                    {
                        "id": "x",
                        "effect": "deny",
                        "roles": ["r"],
                        "actions": ["a"],
                        "resources": ["r"],
                    }
                ]
            },
            "deny rules",
        ),
        ({"rules": [{"id": "x", "actions": ["a b"], "resources": ["r"]}]}, "action"),
        ({"rules": [{"id": "x", "actions": ["a"], "resources": ["r r"]}]}, "resource"),
        (
            {"rules": [{"id": "x", "roles": ["bad role"], "actions": ["a"], "resources": ["r"]}]},
            "role",
        ),
        ({"rules": [{"id": "x", "actions": [], "resources": ["r"]}]}, "rules"),
        ({"rules": [{"id": "x y", "actions": ["a"], "resources": ["r"]}]}, "rules"),
        (
            {
                "rules": [
                    {
                        "id": "x",
                        "actions": ["a"],
                        "resources": ["r"],
                        "conditions": {"hours_utc": [0, 25]},
                    }
                ]
            },
            "hours",
        ),
        (
            {
                "rules": [
                    {
                        "id": "x",
                        "actions": ["a"],
                        "resources": ["r"],
                        "conditions": {"colour": "red"},
                    }
                ]
            },
            "colour",
        ),
        ({"roles": {"bad name": {}}}, "role"),
        ({"rulez": []}, "rulez"),
    ],
)
def test_invalid_policies_are_config_errors(policy: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PolicyAuthorizer(policy)


def test_policy_sources_and_round_trip(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not both"):
        PolicyAuthorizer({"rules": []}, policy_file=str(EXAMPLE_POLICY))
    from_file = build_component(
        {
            "type": "genai_factory.security.authz:PolicyAuthorizer",
            "params": {"policy_file": str(EXAMPLE_POLICY)},
        },
        Authorizer,
    )
    assert dump_component(from_file)["params"]["policy_file"] == str(EXAMPLE_POLICY)
    inline = PolicyAuthorizer(from_file.policy.model_dump(mode="json"))
    rebuilt = build_component(dump_component(inline))
    assert rebuilt.policy == from_file.policy
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [{id: x}]\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        PolicyAuthorizer(policy_file=str(bad))


def test_parse_resource() -> None:
    assert parse_resource("kb:hr:2024") == ("kb", "hr:2024")
    assert parse_resource("admin") == ("admin", "")


# ----------------------------------------------------------------------------- role edits


def test_role_administration_applies_changes_and_recompiles(example: PolicyAuthorizer) -> None:
    admin_tool = RoleAdministrator(example)
    alice = who("alice", user_id="alice")  # admin through the users assignment
    frank = who("frank", user_id="frank")
    assert not example.decide(frank, "invoke", "tool:web_search").allowed
    admin_tool.assign(alice, "user", "frank", "invoker")
    assert example.decide(frank, "invoke", "tool:web_search").allowed
    admin_tool.unassign(alice, "user", "frank", "invoker")
    assert not example.decide(frank, "invoke", "tool:web_search").allowed
    admin_tool.put_rule(
        alice,
        {"id": "auditors-list", "roles": ["auditor"], "actions": ["list"], "resources": ["admin"]},
    )
    auditor = who(roles=frozenset({"auditor"}))
    assert example.decide(auditor, "list", "admin:keys").rule == "auditors-list"
    admin_tool.remove_rule(alice, "auditors-list")
    assert not example.decide(auditor, "list", "admin:keys").allowed
    admin_tool.set_inherits(alice, "auditor", ["viewer"])
    assert example.decide(auditor, "read", "model:m").rule == "read-catalogue"


def test_team_leads_hand_out_only_what_the_policy_lets_them(example: PolicyAuthorizer) -> None:
    lead = who("lena", roles=frozenset({"team-lead"}))
    admin_tool = RoleAdministrator(example)
    admin_tool.assign(lead, "team", "acme/data", "viewer")
    assert example.policy.assignments.teams["acme/data"] == ("viewer",)
    with pytest.raises(Forbidden):
        admin_tool.assign(lead, "team", "acme/data", "editor")


# ----------------------------------------------------------------------------- properties

ROLES = ["r0", "r1", "r2", "r3", "r4"]
ACTIONS = ["read", "invoke", "update"]
TYPES = ["model", "prompt", "kb"]
IDS = ["a", "b"]
LEVELS = ["public", "internal", "confidential", "restricted"]

conditions_strategy = st.fixed_dictionaries(
    {},
    optional={
        "classification_at_most": st.sampled_from(LEVELS),
        "classification_at_least": st.sampled_from(LEVELS),
        "within_clearance": st.booleans(),
        "owner": st.booleans(),
        "regions": st.lists(st.sampled_from(["eu", "us"]), min_size=1, max_size=2),
        "regions_not": st.lists(st.sampled_from(["eu", "us"]), min_size=1, max_size=2),
    },
)
resource_pattern = st.one_of(
    st.just("*"),
    st.sampled_from(TYPES),
    st.builds(lambda t, i: f"{t}:{i}", st.sampled_from(TYPES), st.sampled_from(IDS)),
)


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    roles = {
        role: {"inherits": draw(st.lists(st.sampled_from(ROLES[:i]), max_size=2)) if i else []}
        for i, role in enumerate(ROLES)
    }  # a role inherits only lower-numbered roles: no cycles
    rules = []
    for n in range(draw(st.integers(0, 8))):
        effect = draw(st.sampled_from(["allow", "allow", "deny"]))
        rule: dict[str, Any] = {
            "id": f"rule{n}",
            "effect": effect,
            "actions": draw(st.lists(st.sampled_from([*ACTIONS, "*"]), min_size=1, max_size=2)),
            "resources": draw(st.lists(resource_pattern, min_size=1, max_size=2)),
            "conditions": draw(conditions_strategy),
        }
        if effect == "allow":
            rule["roles"] = draw(st.lists(st.sampled_from([*ROLES, "*"]), min_size=1, max_size=2))
        rules.append(rule)
    assignments = {"orgs": {"o": draw(st.lists(st.sampled_from(ROLES), max_size=1))}}
    return {"roles": roles, "rules": rules, "assignments": assignments}


principals = st.builds(
    lambda roles, clearance, org, user: Principal(
        subject=user,
        user_id=user,
        org_id=org,
        roles=frozenset(roles),
        attributes={"clearance": clearance} if clearance else {},
    ),
    st.lists(st.sampled_from([*ROLES, "stranger"]), max_size=3),
    st.none() | st.sampled_from(LEVELS),
    st.none() | st.just("o"),
    st.sampled_from(["u1", "u2"]),
)
contexts = st.fixed_dictionaries(
    {},
    optional={
        "classification": st.sampled_from(LEVELS),
        "owner": st.sampled_from(["u1", "u2"]),
        "region": st.sampled_from(["eu", "us"]),
    },
)
requests = st.tuples(
    st.sampled_from(ACTIONS),
    st.one_of(
        st.sampled_from(TYPES),
        st.builds(lambda t, i: f"{t}:{i}", st.sampled_from(TYPES), st.sampled_from(IDS)),
    ),
)


def reference_decision(
    policy: Policy, principal: Principal, action: str, resource: str, context: dict[str, Any]
) -> bool:
    """A deliberately naive evaluator: scan every rule, expand inheritance by walking."""
    rtype, rid = parse_resource(resource)

    def holds(name: str) -> set[str]:
        found, todo = set(), [name]
        while todo:
            role = todo.pop()
            if role not in found:
                found.add(role)
                todo.extend(policy.roles[role].inherits if role in policy.roles else ())
        return found

    direct = set(principal.roles)
    if principal.org_id:
        direct |= set(policy.assignments.orgs.get(principal.org_id, ()))
    effective = set().union(*(holds(r) for r in direct)) if direct else set()

    def matches(rule: Any) -> bool:
        if "*" not in rule.actions and action not in rule.actions:
            return False
        for pattern in rule.resources:
            if pattern == "*":
                return True
            ptype, pid = parse_resource(pattern)
            if ptype == rtype and (not pid or pid == rid):
                return True
        return False

    def verdicts(rule: Any) -> list[bool | None]:
        return [check(principal, context) for check in rule.conditions.checks()]

    for rule in policy.rules:
        if rule.effect == "deny" and matches(rule) and False not in verdicts(rule):
            return False
    for rule in policy.rules:
        if (
            rule.effect == "allow"
            and matches(rule)
            and ("*" in rule.roles or effective & set(rule.roles))
        ) and all(v is True for v in verdicts(rule)):
            return True
    return False


@settings(max_examples=120, deadline=None)
@given(policies(), principals, requests, contexts)
def test_the_compiled_index_decides_like_a_naive_scan(
    policy: dict[str, Any], principal: Principal, request: tuple[str, str], context: dict[str, Any]
) -> None:
    authz = PolicyAuthorizer(policy)
    action, resource = request
    expected = reference_decision(authz.policy, principal, action, resource, context)
    assert authz.decide(principal, action, resource, context).allowed is expected


@settings(max_examples=120, deadline=None)
@given(policies(), principals, requests, contexts, st.data())
def test_removing_a_role_never_grants_more(
    policy: dict[str, Any],
    principal: Principal,
    request: tuple[str, str],
    context: dict[str, Any],
    data: st.DataObject,
) -> None:
    authz = PolicyAuthorizer(policy)
    action, resource = request
    before = authz.decide(principal, action, resource, context)
    if principal.roles:
        removed = data.draw(st.sampled_from(sorted(principal.roles)))
        fewer = principal.model_copy(update={"roles": principal.roles - {removed}})
        after = authz.decide(fewer, action, resource, context)
        assert before.allowed or not after.allowed
    # and dropping every org assignment never grants more either
    orgless = principal.model_copy(update={"org_id": None})
    assert before.allowed or not authz.decide(orgless, action, resource, context).allowed


@settings(max_examples=120, deadline=None)
@given(policies(), principals, requests, contexts)
def test_principals_without_grants_are_denied_by_default(
    policy: dict[str, Any], principal: Principal, request: tuple[str, str], context: dict[str, Any]
) -> None:
    # strip every allow rule that could reach this principal: nothing may then be allowed
    policy = dict(policy)
    policy["rules"] = [r for r in policy["rules"] if r["effect"] == "deny"]
    action, resource = request
    decision = PolicyAuthorizer(policy).decide(principal, action, resource, context)
    assert not decision.allowed
    assert decision.rule == "default-deny" or decision.rule.startswith("rule")


@functools.cache
def example_authorizer() -> PolicyAuthorizer:
    return PolicyAuthorizer(policy_file=str(EXAMPLE_POLICY))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40), st.text(max_size=60))
def test_any_action_and_resource_string_gets_a_decision(action: str, resource: str) -> None:
    authz = example_authorizer()
    decision = authz.decide(who(roles=frozenset({"admin"})), action, resource)
    assert isinstance(decision.allowed, bool) and decision.rule
