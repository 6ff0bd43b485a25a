from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genai_factory.shared.contracts import Guard, ResponseCache
from genai_factory.shared.errors import ConfigError
from genai_factory.shared.factory import ComponentSpec, build_component, dump_component

from .components import Chain, KeywordGuard

MOD = __name__.rsplit(".", 1)[0] + ".components"


def spec(cls: str, **params: Any) -> dict[str, Any]:
    return {"type": f"{MOD}:{cls}", "params": params}


def test_builds_a_component_and_checks_its_contract() -> None:
    guard = build_component(spec("KeywordGuard", words=["secret"]), Guard)
    assert isinstance(guard, KeywordGuard)
    assert guard.words == ["secret"] and guard.mode == "block"


def test_values_are_validated_and_coerced_by_the_init_type_hints() -> None:
    guard = build_component(spec("KeywordGuard", words=["a"], threshold="0.25"))
    assert guard.threshold == 0.25


def test_nested_components_build_from_one_config_tree() -> None:
    chain = build_component(
        spec(
            "Chain",
            primary=spec("KeywordGuard", words=["x"]),
            others=[spec("KeywordGuard", words=["y"]), "plain"],
            options={
                "type": "not-a-component",
                "params": {},
            },  # dict-typed param keeps data as data
            store="/tmp/cache.db",
        )
    )
    assert isinstance(chain.primary, KeywordGuard)
    assert isinstance(chain.others[0], KeywordGuard) and chain.others[1] == "plain"
    assert chain.options == {"type": "not-a-component", "params": {}}
    assert chain.store == Path("/tmp/cache.db")


def test_dump_then_build_gives_an_equal_component() -> None:
    chain = Chain(KeywordGuard(["x"], mode="redact"), [KeywordGuard(["y"])], {"a": 1}, Path("s.db"))
    dumped = dump_component(chain)
    assert dumped["type"] == f"{MOD}:Chain"
    assert dumped["params"]["primary"]["params"] == {"words": ["x"], "mode": "redact"}
    rebuilt = build_component(dumped)
    assert dump_component(rebuilt) == dumped
    with_kwargs = build_component(spec("WithKwargs", name="n", colour="blue"))
    assert with_kwargs.extra == {"colour": "blue"}
    assert dump_component(with_kwargs)["params"] == {"name": "n", "colour": "blue"}
    assert ComponentSpec.model_validate(dumped).type == dumped["type"]


@pytest.mark.parametrize(
    ("config", "param", "message"),
    [
        (spec("KeywordGuard"), "params.words", "missing"),
        (spec("KeywordGuard", words="notalist"), "params.words", "invalid value"),
        (spec("KeywordGuard", words=["a"], mode="explode"), "params.mode", "invalid value"),
        (spec("KeywordGuard", words=["a"], colour="red"), "params.colour", "unknown parameter"),
        (
            spec("Chain", primary=spec("KeywordGuard", words=5)),
            "params.primary.params.words",
            "invalid value",
        ),
        (spec("Chain", primary=spec("Nope")), "params.primary.type", "no attribute"),
        ({"type": "no_such_module_gf:Thing"}, "type", "cannot import"),
        ({"type": "not an import path"}, "type", "invalid"),
        ({"type": f"{MOD}:KeywordGuard", "params": [1]}, "params", "invalid"),
        ({"params": {}}, "type", "invalid"),
        ({"type": f"{MOD}:KeywordGuard", "colour": 1}, "colour", "invalid"),
        ({"type": f"{MOD}:NOT_CALLABLE"}, "type", "not callable"),
    ],
)
def test_bad_config_is_a_config_error_naming_the_field(
    config: dict[str, Any], param: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build_component(config, where="gateway.guards.0")
    assert info.value.param == f"gateway.guards.0.{param}"
    assert message in info.value.message


def test_errors_inside_the_constructor_and_contract_mismatches_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="at most 10"):
        build_component(spec("Exploding", size=11))
    with pytest.raises(ConfigError, match="does not implement ResponseCache"):
        build_component(spec("KeywordGuard", words=["a"]), ResponseCache)
    with pytest.raises(ConfigError, match="must be a mapping"):
        build_component("KeywordGuard")  # type: ignore[arg-type]


def test_a_component_that_keeps_nothing_cannot_be_dumped() -> None:
    forgetful = build_component(spec("Forgetful", size=3))
    with pytest.raises(ConfigError, match="size"):
        dump_component(forgetful)


keys = st.sampled_from(["type", "params", "words", "mode", "x"])
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=12)
    | st.sampled_from([f"{MOD}:KeywordGuard", f"{MOD}:Chain", "os:getcwd", "os:system", "x:y"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, values, max_size=3))
def test_arbitrary_config_builds_or_raises_config_error(config: dict[str, Any]) -> None:
    if config.get("type") == "os:system":
        config["type"] = "os:getcwd"  # never run a shell from generated input
    try:
        build_component(config)
    except ConfigError as exc:
        assert exc.message


def test_a_factory_function_gets_nested_components_and_checked_params() -> None:
    chain = build_component(
        spec(
            "guard_pair",
            first=spec("KeywordGuard", words=["a"]),
            second=spec("KeywordGuard", words=["b"], mode="redact"),
            weight="0.5",
        )
    )
    assert isinstance(chain.primary, KeywordGuard) and chain.primary.words == ["a"]
    assert chain.others[0].mode == "redact"
    assert chain.options == {"weight": 0.5}
    with pytest.raises(ConfigError, match=r"unknown parameter 'params\.colour'"):
        build_component(spec("guard_pair", first=spec("KeywordGuard", words=["a"]), colour=1))
    with pytest.raises(ConfigError, match=r"params\.weight"):
        build_component(
            spec(
                "guard_pair",
                first=spec("KeywordGuard", words=["a"]),
                second=spec("KeywordGuard", words=["b"]),
                weight="heavy",
            )
        )
