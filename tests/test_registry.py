"""Tests for torchx.registry.Registry and the optimizer/scheduler registries of torchx.optim.

Every test builds its own Registry('thing') so nothing leaks into the package's registries.
"""

from __future__ import annotations

import re

import pytest
import torch

from torchx import optim
from torchx.errors import ConfigError, RegistryError
from torchx.registry import Registry, close_matches


def _origin(func) -> str:
    """'module:line' of a function defined in this file, computed without inspect."""
    return f"{__name__}:{func.__code__.co_firstlineno}"


@pytest.fixture
def reg() -> Registry:
    return Registry("thing")


@pytest.fixture
def bag_reg(reg: Registry) -> Registry:
    """A registry holding 'bag', a class with a required `items` and an optional `scale`."""

    @reg.register("bag")
    class Bag:
        """A bag of items."""

        def __init__(self, items, scale=1):
            self.items = items
            self.scale = scale

    return reg


# ---------------------------------------------------------------- register / make


def test_register_returns_the_object_unchanged(reg):
    class Foo:
        pass

    assert reg.register("foo")(Foo) is Foo
    assert reg.get("foo") is Foo


def test_make_builds_a_class(bag_reg):
    obj = bag_reg.make({"name": "bag", "args": {"items": [1, 2], "scale": 3}})
    assert type(obj).__name__ == "Bag"
    assert (obj.items, obj.scale) == ([1, 2], 3)


def test_make_calls_a_factory_function(reg):
    @reg.register("pair")
    def pair(a, b=10):
        return (a, b)

    assert reg.make({"name": "pair", "args": {"a": 1}}) == (1, 10)
    assert reg.make({"name": "pair", "args": {"a": 1, "b": 2}}) == (1, 2)


def test_make_deep_copies_spec_args(bag_reg):
    spec = {"name": "bag", "args": {"items": [1, [2]]}}
    obj = bag_reg.make(spec)
    obj.items.append(3)
    obj.items[1].append(4)
    assert spec == {"name": "bag", "args": {"items": [1, [2]]}}
    assert bag_reg.make(spec).items == [1, [2]]


def test_make_merges_args_over_spec_args_without_touching_spec(bag_reg):
    spec = {"name": "bag", "args": {"items": [1], "scale": 2}}
    obj = bag_reg.make(spec, args={"scale": 5})
    assert (obj.items, obj.scale) == ([1], 5)
    assert spec["args"] == {"items": [1], "scale": 2}


def test_make_passes_args_objects_through_uncopied(bag_reg):
    items = [object()]
    obj = bag_reg.make({"name": "bag"}, args={"items": items})
    assert obj.items is items


@pytest.mark.parametrize("spec", [{"name": "nothing"}, {"name": "nothing", "args": None},
                                  {"name": "nothing", "args": {}}])
def test_make_spec_without_args(reg, spec):
    @reg.register("nothing")
    def nothing():
        return "built"

    assert reg.make(spec) == "built"


def test_check_returns_ctor_and_merged_kwargs_without_building(reg):
    calls = []

    @reg.register("f")
    def f(x, y=0):
        calls.append((x, y))

    ctor, kwargs = reg.check({"name": "f", "args": {"x": 1}}, args={"y": 2})
    assert ctor is f
    assert kwargs == {"x": 1, "y": 2}
    assert calls == []


@pytest.mark.parametrize("spec", [None, "bag", ["bag"], {"args": {}}])
def test_spec_must_be_a_mapping_with_name(bag_reg, spec):
    with pytest.raises(ConfigError, match=r"a thing spec must be a mapping with 'name'"):
        bag_reg.make(spec)


def test_spec_args_must_be_a_mapping(bag_reg):
    with pytest.raises(ConfigError, match=r"thing 'bag': 'args' must be a mapping, got \[1, 2\]"):
        bag_reg.make({"name": "bag", "args": [1, 2]})


# ---------------------------------------------------------------- registration errors


def test_register_twice_names_both_definitions(reg):
    def first():
        pass

    def second():
        pass

    reg.register("dup")(first)
    with pytest.raises(RegistryError) as info:
        reg.register("dup")(second)
    msg = str(info.value)
    assert re.search(r"thing 'dup' is already registered", msg)
    assert _origin(first) in msg
    assert _origin(second) in msg
    assert msg.index(_origin(first)) < msg.index(_origin(second))
    assert reg.get("dup") is first  # the first registration is kept


@pytest.mark.parametrize("name", ["", None, 3])
def test_register_rejects_non_string_or_empty_names(reg, name):
    with pytest.raises(RegistryError, match=r"thing names must be non-empty strings"):
        reg.register(name)


def test_registry_error_and_config_error_are_value_errors():
    assert issubclass(RegistryError, ValueError)
    assert issubclass(ConfigError, ValueError)


# ---------------------------------------------------------------- unknown names


def test_unknown_name_suggests_close_match_and_lists_known(reg):
    reg.register("resnet18")(lambda: None)
    reg.register("vgg11")(lambda: None)
    with pytest.raises(ConfigError, match=r"unknown thing 'resnet19' \(did you mean 'resnet18'\?\); "
                                          r"known thing names: resnet18, vgg11$"):
        reg.make({"name": "resnet19"})


def test_unknown_name_without_close_match_has_no_suggestion(reg):
    reg.register("resnet18")(lambda: None)
    with pytest.raises(ConfigError, match=r"^unknown thing 'zzz'; known thing names: resnet18$"):
        reg.get("zzz")


def test_unknown_name_in_empty_registry(reg):
    with pytest.raises(ConfigError, match=r"unknown thing 'x'; known thing names: \(none\)"):
        reg.get("x")


@pytest.mark.parametrize("word, choices, expected", [
    ("resnet19", ["resnet18", "vgg"], " (did you mean 'resnet18'?)"),
    ("qqq", ["resnet18"], ""),
    ("x", [], ""),
])
def test_close_matches(word, choices, expected):
    assert close_matches(word, choices) == expected


def test_close_matches_joins_several_with_or():
    found = close_matches("ab", ["abc", "abd", "xyz"])
    assert found in (" (did you mean 'abc' or 'abd'?)", " (did you mean 'abd' or 'abc'?)")


@pytest.mark.parametrize("name", [["bag"], {"a": 1}])
def test_unhashable_name_is_a_config_error(bag_reg, name):
    with pytest.raises(ConfigError, match=r"thing"):
        bag_reg.check({"name": name})


# ---------------------------------------------------------------- argument binding


def test_unknown_argument_suggests_and_lists_accepted(bag_reg):
    with pytest.raises(ConfigError, match=r"^thing 'bag' got an unknown argument 'sclae' "
                                          r"\(did you mean 'scale'\?\); accepted: items, scale$"):
        bag_reg.make({"name": "bag", "args": {"items": [], "sclae": 2}})


def test_unknown_argument_from_make_args_is_checked_too(bag_reg):
    with pytest.raises(ConfigError, match=r"thing 'bag' got an unknown argument 'colour'; "
                                          r"accepted: items, scale"):
        bag_reg.make({"name": "bag", "args": {"items": []}}, args={"colour": "red"})


def test_missing_required_argument(bag_reg):
    with pytest.raises(ConfigError, match=r"^thing 'bag' is missing the required argument 'items'; "
                                          r"accepted: items, scale$"):
        bag_reg.make({"name": "bag", "args": {"scale": 2}})


def test_missing_required_argument_of_function_with_no_optional(reg):
    @reg.register("needs")
    def needs(a, *, b):
        return a, b

    with pytest.raises(ConfigError, match=r"thing 'needs' is missing the required argument 'b'; "
                                          r"accepted: a, b"):
        reg.check({"name": "needs", "args": {"a": 1}})


def test_supplied_lets_required_argument_be_absent(bag_reg):
    ctor, kwargs = bag_reg.check({"name": "bag", "args": {"scale": 2}}, supplied=("items",))
    assert kwargs == {"scale": 2}
    with pytest.raises(ConfigError, match=r"missing the required argument 'items'"):
        bag_reg.check({"name": "bag", "args": {"scale": 2}})


def test_var_keyword_accepts_anything(reg):
    @reg.register("anything")
    def anything(**kwargs):
        return kwargs

    assert reg.make({"name": "anything", "args": {"whatever": 1, "x": [2]}}) == {"whatever": 1, "x": [2]}


def test_var_keyword_still_requires_named_arguments(reg):
    @reg.register("partly")
    def partly(needed, **kwargs):
        return needed, kwargs

    assert reg.make({"name": "partly", "args": {"needed": 1, "extra": 2}}) == (1, {"extra": 2})
    with pytest.raises(ConfigError, match=r"thing 'partly' is missing the required argument 'needed'"):
        reg.make({"name": "partly", "args": {"extra": 2}})


def test_no_arguments_accepted_lists_none(reg):
    @reg.register("plain")
    def plain():
        return 1

    with pytest.raises(ConfigError, match=r"thing 'plain' got an unknown argument 'x'; accepted: \(none\)"):
        reg.make({"name": "plain", "args": {"x": 1}})


@pytest.mark.parametrize("exc", [ValueError, TypeError])
def test_constructor_error_becomes_config_error_naming_entry(reg, exc):
    @reg.register("picky")
    def picky(n=1):
        raise exc("n must be positive")

    with pytest.raises(ConfigError, match=r"^thing 'picky' rejected its arguments \{'n': -1\}: "
                                          r"n must be positive$") as info:
        reg.make({"name": "picky", "args": {"n": -1}})
    assert isinstance(info.value.__cause__, exc)


def test_constructor_config_error_passes_through_unwrapped(reg):
    @reg.register("strict")
    def strict():
        raise ConfigError("already a good message")

    with pytest.raises(ConfigError, match=r"^already a good message$"):
        reg.make({"name": "strict"})


def test_constructor_other_errors_propagate(reg):
    @reg.register("broken")
    def broken():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match=r"^boom$"):
        reg.make({"name": "broken"})


# ---------------------------------------------------------------- container protocol, listings


def test_contains(bag_reg):
    assert "bag" in bag_reg
    assert "nope" not in bag_reg
    assert 3 not in bag_reg


def test_keys_sorted_iter_and_len(reg):
    for name in ("b", "c", "a"):
        reg.register(name)(lambda: None)
    assert reg.keys() == ["a", "b", "c"]
    assert list(reg) == ["a", "b", "c"]
    assert len(reg) == 3
    assert len(Registry("empty")) == 0


def test_describe_rows(reg):
    def alpha():
        """First line of alpha.

        More text that is not shown.
        """

    def beta():
        pass

    reg.register("beta")(beta)
    reg.register("alpha")(alpha)
    assert reg.describe() == [
        ("alpha", _origin(alpha), "First line of alpha."),
        ("beta", _origin(beta), ""),
    ]


def test_describe_class_origin_is_module_and_line(bag_reg):
    [(name, origin, doc)] = bag_reg.describe()
    assert name == "bag"
    assert re.fullmatch(rf"{re.escape(__name__)}:\d+", origin)
    assert doc == "A bag of items."


def test_repr_lists_entries(reg):
    def alpha():
        """Alpha doc."""

    def beta():
        """Beta doc."""

    reg.register("alpha")(alpha)
    reg.register("beta")(beta)
    lines = repr(reg).splitlines()
    assert lines[0] == "Registry('thing', 2 entries)"
    assert len(lines) == 3
    for line, name, func, doc in zip(lines[1:], ("alpha", "beta"), (alpha, beta), ("Alpha doc.", "Beta doc.")):
        assert line.split() == [name, _origin(func), *doc.split()]


# ---------------------------------------------------------------- fallback


@pytest.fixture
def fallback_reg() -> Registry:
    table = {"Adam": torch.optim.Adam, "SGD": torch.optim.SGD}
    return Registry("optimizer", fallback=table.get, fallback_names=lambda: list(table))


def test_fallback_supplies_unregistered_names(fallback_reg):
    assert fallback_reg.get("SGD") is torch.optim.SGD
    assert "SGD" in fallback_reg
    assert fallback_reg.keys() == ["Adam", "SGD"]


def test_registered_name_shadows_fallback(fallback_reg):
    @fallback_reg.register("Adam")
    def my_adam(params, lr=0.5):
        return ("mine", lr)

    assert fallback_reg.get("Adam") is my_adam
    assert fallback_reg.make({"name": "Adam"}, args={"params": []}) == ("mine", 0.5)
    assert fallback_reg.keys() == ["Adam", "SGD"]  # listed once
    assert fallback_reg.get("SGD") is torch.optim.SGD


def test_registered_name_shadows_torch_optimizer_table():
    """The same construction as torchx/optim.py, with a registered 'Adam' on top."""
    table = optim._TORCH_OPTIMIZERS
    fresh = Registry("optimizer", fallback=table.get, fallback_names=lambda: list(table))
    assert fresh.get("Adam") is torch.optim.Adam

    @fresh.register("Adam")
    class MyAdam(torch.optim.SGD):
        pass

    assert fresh.get("Adam") is MyAdam
    assert optim.optimizers.get("Adam") is torch.optim.Adam  # the package registry is untouched


def test_fallback_unknown_name_suggests_from_fallback_names(fallback_reg):
    with pytest.raises(ConfigError, match=r"unknown optimizer 'Adma' \(did you mean 'Adam'\?\); "
                                          r"known optimizer names: Adam, SGD"):
        fallback_reg.get("Adma")


# ---------------------------------------------------------------- torchx.optim


def test_optimizers_resolve_torch_classes():
    assert optim.optimizers.get("Adam") is torch.optim.Adam
    assert optim.optimizers.get("SGD") is torch.optim.SGD
    assert "AdamW" in optim.optimizers
    assert "Optimizer" not in optim.optimizers


def test_optimizer_make_with_supplied_params():
    model = torch.nn.Linear(2, 1)
    opt = optim.optimizers.make({"name": "SGD", "args": {"lr": 0.1}}, args={"params": model.parameters()})
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["lr"] == 0.1
    assert opt.param_groups[0]["params"][0] is model.weight


def test_optimizer_check_needs_params_unless_supplied():
    optim.optimizers.check({"name": "Adam", "args": {"lr": 1e-3}}, supplied=("params",))
    with pytest.raises(ConfigError, match=r"optimizer 'Adam' is missing the required argument 'params'"):
        optim.optimizers.check({"name": "Adam", "args": {"lr": 1e-3}})


def test_optimizer_unknown_argument():
    with pytest.raises(ConfigError, match=r"optimizer 'SGD' got an unknown argument 'momentun' "
                                          r"\(did you mean 'momentum'\?\)"):
        optim.optimizers.check({"name": "SGD", "args": {"momentun": 0.9}}, supplied=("params",))


def test_scheduler_make():
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
    sched = optim.schedulers.make({"name": "StepLR", "args": {"step_size": 2, "gamma": 0.5}},
                                  args={"optimizer": opt})
    assert isinstance(sched, torch.optim.lr_scheduler.StepLR)
    assert sched.step_size == 2


@pytest.mark.parametrize("name", ["LambdaLR", "MultiplicativeLR", "ChainedScheduler", "SequentialLR"])
def test_schedulers_taking_callables_are_not_resolvable(name):
    assert name not in optim.schedulers
    assert name not in optim.schedulers.keys()
    with pytest.raises(ConfigError, match=rf"lr_scheduler '{name}' cannot be built from a config"):
        optim.schedulers.get(name)


@pytest.mark.parametrize("name", ["StepLR", "CosineAnnealingLR", "OneCycleLR"])
def test_common_schedulers_are_resolvable(name):
    assert optim.schedulers.get(name) is getattr(torch.optim.lr_scheduler, name)


def test_reduce_lr_on_plateau_is_resolvable():
    assert optim.schedulers.get("ReduceLROnPlateau") is torch.optim.lr_scheduler.ReduceLROnPlateau
