"""Tests for torchx.config: YAML reading, _base_ inheritance, overrides, sweeps, imports, checks."""

from __future__ import annotations

import copy
import itertools
import os
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from torchx import config
from torchx.config import (
    apply_overrides,
    check,
    expand,
    import_modules,
    load,
    load_config,
    merge,
    parse_value,
    read_yaml,
    resolve,
)
from torchx.errors import ConfigError


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# ---------------------------------------------------------------- read_yaml


def test_read_yaml_returns_mapping(tmp_path):
    path = write(tmp_path, "c.yaml", """\
        a: 1
        b: {c: [1, 2]}
        """)
    assert read_yaml(path) == {"a": 1, "b": {"c": [1, 2]}}


def test_read_yaml_empty_file_is_empty_dict(tmp_path):
    assert read_yaml(write(tmp_path, "empty.yaml", "# only a comment\n")) == {}


def test_read_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "broken.yaml", """\
        a: 1
        b: 2
        c: d: e
        """)
    with pytest.raises(ConfigError, match=r"broken\.yaml:3:\d+: YAML syntax error"):
        read_yaml(path)


def test_read_yaml_duplicate_key_rejected(tmp_path):
    path = write(tmp_path, "dup.yaml", """\
        lr: 1
        seed: 2
        lr: 3
        """)
    with pytest.raises(ConfigError, match=r"dup\.yaml:3:\d+: .*duplicate key 'lr' \(first at line 1\)"):
        read_yaml(path)


def test_read_yaml_nested_duplicate_key_rejected(tmp_path):
    path = write(tmp_path, "dup.yaml", """\
        trainer_params:
          max_epochs: 1
          max_epochs: 2
        """)
    with pytest.raises(ConfigError, match=r"duplicate key 'max_epochs'"):
        read_yaml(path)


@pytest.mark.parametrize("text, kind", [("- 1\n- 2\n", "list"), ("just a string\n", "str"), ("3\n", "int")])
def test_read_yaml_top_level_must_be_mapping(tmp_path, text, kind):
    path = write(tmp_path, "notmap.yaml", text)
    with pytest.raises(ConfigError, match=rf"notmap\.yaml: a config must be a mapping .*got a {kind}$"):
        read_yaml(path)


def test_read_yaml_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config file '.*nope\.yaml' does not exist"):
        read_yaml(tmp_path / "nope.yaml")


def test_read_yaml_directory_is_not_a_file(tmp_path):
    with pytest.raises(ConfigError, match=r"is not a file"):
        read_yaml(tmp_path)


@pytest.mark.parametrize("text, expected", [
    ("1e-4", 0.0001), ("1.e-3", 0.001), ("1E5", 100000.0), ("-2.5e-1", -0.25), ("3.0", 3.0),
    (".5", 0.5), ("1_000.5", 1000.5),
])
def test_read_yaml_floats_in_exponent_notation(tmp_path, text, expected):
    value = read_yaml(write(tmp_path, "f.yaml", f"v: {text}\n"))["v"]
    assert type(value) is float
    assert value == expected


@pytest.mark.parametrize("text, expected", [
    ("3", 3), ("true", True), ("null", None), ("1.2.3", "1.2.3"), ("abc", "abc"), ("'1e-4'", "1e-4"),
])
def test_read_yaml_other_scalars_unchanged(tmp_path, text, expected):
    value = read_yaml(write(tmp_path, "s.yaml", f"v: {text}\n"))["v"]
    assert type(value) is type(expected)
    assert value == expected


def test_read_yaml_dot_underscore_is_a_string(tmp_path):
    assert read_yaml(write(tmp_path, "s.yaml", "v: ._\n")) == {"v": "._"}


def test_read_yaml_unhashable_key_is_config_error(tmp_path):
    path = write(tmp_path, "k.yaml", "? [a, b]\n: 1\n")
    with pytest.raises(ConfigError, match=r"k\.yaml:1"):
        read_yaml(path)


@pytest.mark.parametrize("text, expected", [
    ("3", 3), ("1e-4", 0.0001), ("[1,2]", [1, 2]), ("{a: 1}", {"a": 1}), ("a", "a"), ("", ""),
    ("null", None),
])
def test_parse_value(text, expected):
    assert parse_value(text) == expected


def test_parse_value_invalid_yaml():
    with pytest.raises(ConfigError, match=r"value '\[1,2' is not valid YAML"):
        parse_value("[1,2")


# ---------------------------------------------------------------- load / _base_


def test_load_without_base(tmp_path):
    path = write(tmp_path, "c.yaml", "a: 1\n")
    assert load(path) == {"a": 1}


def test_load_single_base(tmp_path):
    write(tmp_path, "base.yaml", """\
        trainer_params: {max_epochs: 10, devices: 1}
        seed: 0
        """)
    path = write(tmp_path, "child.yaml", """\
        _base_: base.yaml
        trainer_params: {max_epochs: 3}
        """)
    assert load(path) == {"trainer_params": {"max_epochs": 3, "devices": 1}, "seed": 0}


def test_load_base_list_merged_left_to_right_then_including_file(tmp_path):
    write(tmp_path, "one.yaml", """\
        a: {x: 1, y: 1, l: [1, 2, 3]}
        only_one: 1
        """)
    write(tmp_path, "two.yaml", """\
        a: {y: 2, z: 2, l: [9]}
        only_two: 2
        """)
    path = write(tmp_path, "top.yaml", """\
        _base_: [one.yaml, two.yaml]
        a: {z: 3}
        """)
    cfg = load(path)
    assert cfg == {"a": {"x": 1, "y": 2, "z": 3, "l": [9]}, "only_one": 1, "only_two": 2}
    assert "_base_" not in cfg


def test_load_child_list_replaces_base_list(tmp_path):
    write(tmp_path, "base.yaml", "callbacks: [{name: a}, {name: b}]\n")
    path = write(tmp_path, "child.yaml", "_base_: base.yaml\ncallbacks: [{name: c}]\n")
    assert load(path) == {"callbacks": [{"name": "c"}]}


def test_load_nested_chain(tmp_path):
    write(tmp_path, "c.yaml", "x: c\ny: c\nz: c\n")
    write(tmp_path, "b.yaml", "_base_: c.yaml\ny: b\nz: b\n")
    path = write(tmp_path, "a.yaml", "_base_: b.yaml\nz: a\n")
    assert load(path) == {"x": "c", "y": "b", "z": "a"}


def test_load_base_paths_are_relative_to_including_file(tmp_path, monkeypatch):
    write(tmp_path, "configs/sub/inner.yaml", "w: 4\nz: 0\n")
    write(tmp_path, "configs/sub/base.yaml", "_base_: inner.yaml\nz: 3\n")
    path = write(tmp_path, "configs/top.yaml", "_base_: sub/base.yaml\ny: 2\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load(path) == {"w": 4, "z": 3, "y": 2}
    assert load(os.path.relpath(path, elsewhere)) == {"w": 4, "z": 3, "y": 2}


def test_load_base_in_parent_directory(tmp_path):
    write(tmp_path, "base.yaml", "a: 1\n")
    path = write(tmp_path, "exp/run.yaml", "_base_: ../base.yaml\nb: 2\n")
    assert load(path) == {"a": 1, "b": 2}


def test_load_keeps_interpolations_unresolved(tmp_path):
    write(tmp_path, "base.yaml", "vars: {bs: 8}\n")
    path = write(tmp_path, "c.yaml", "_base_: base.yaml\nx: ${vars.bs}\n")
    assert load(path) == {"vars": {"bs": 8}, "x": "${vars.bs}"}


def test_load_missing_base(tmp_path):
    path = write(tmp_path, "c.yaml", "_base_: missing.yaml\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: _base_ file 'missing\.yaml' not found"):
        load(path)


@pytest.mark.parametrize("bases", ["3", "[a.yaml, 1]", "{a: b}"])
def test_load_base_must_be_names(tmp_path, bases):
    path = write(tmp_path, "c.yaml", f"_base_: {bases}\n")
    with pytest.raises(ConfigError, match=r"_base_ must be a file name or a list of file names"):
        load(path)


def test_load_self_cycle(tmp_path):
    path = write(tmp_path, "a.yaml", "_base_: a.yaml\nx: 1\n")
    with pytest.raises(ConfigError, match=r"_base_ cycle: .*a\.yaml -> .*a\.yaml"):
        load(path)


def test_load_two_file_cycle(tmp_path):
    write(tmp_path, "b.yaml", "_base_: a.yaml\n")
    path = write(tmp_path, "a.yaml", "_base_: b.yaml\n")
    with pytest.raises(ConfigError, match=r"_base_ cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load(path)


def test_load_diamond_is_not_a_cycle(tmp_path):
    write(tmp_path, "root.yaml", "r: 1\n")
    write(tmp_path, "left.yaml", "_base_: root.yaml\nl: 1\n")
    write(tmp_path, "right.yaml", "_base_: root.yaml\nri: 1\n")
    path = write(tmp_path, "top.yaml", "_base_: [left.yaml, right.yaml]\n")
    assert load(path) == {"r": 1, "l": 1, "ri": 1}


@pytest.mark.parametrize("base, child, value", [("[1, 2]", "{b: 1}", {"b": 1}), ("{b: 1}", "[1]", [1])])
def test_load_child_container_of_other_type_replaces(tmp_path, base, child, value):
    write(tmp_path, "base.yaml", f"a: {base}\n")
    path = write(tmp_path, "child.yaml", f"_base_: base.yaml\na: {child}\n")
    assert load(path) == {"a": value}  # later wins: the child's value replaces the base's


def test_merge_later_wins_and_does_not_mutate():
    a = {"x": {"y": 1, "l": [1]}}
    b = {"x": {"l": [2, 3]}}
    assert merge(a, b) == {"x": {"y": 1, "l": [2, 3]}}
    assert a == {"x": {"y": 1, "l": [1]}}


# ---------------------------------------------------------------- apply_overrides


@pytest.fixture
def base_cfg() -> dict:
    return {
        "seed": 0,
        "lr": 0.1,
        "trainer_params": {"max_epochs": 10, "devices": 1},
        "data_module": {"name": "digits", "args": {"batch_size": 64}},
        "callbacks": [{"name": "early_stopping", "args": {"patience": 3}}],
    }


@pytest.mark.parametrize("override, path, expected", [
    ("trainer_params.max_epochs=3", ("trainer_params", "max_epochs"), 3),
    ("lr=1e-4", ("lr",), 0.0001),
    ("data_module.args.batch_size=[1,2]", ("data_module", "args", "batch_size"), [1, 2]),
    ("seed=null", ("seed",), None),
    ("data_module.name=mnist", ("data_module", "name"), "mnist"),
    ("callbacks.0.args.patience=5", ("callbacks", 0, "args", "patience"), 5),
    ("callbacks.-1.args.patience=7", ("callbacks", 0, "args", "patience"), 7),
])
def test_override_existing_key(base_cfg, override, path, expected):
    out = apply_overrides(base_cfg, [override])
    node = out
    for p in path:
        node = node[p]
    assert node == expected
    assert type(node) is type(expected)


def test_override_value_containing_equals_sign(base_cfg):
    assert apply_overrides(base_cfg, ["data_module.name=a=b"])["data_module"]["name"] == "a=b"


def test_override_dict_value_replaces_section(base_cfg):
    out = apply_overrides(base_cfg, ["trainer_params={a: 1}"])
    assert out["trainer_params"] == {"a": 1}


def test_overrides_apply_in_order(base_cfg):
    out = apply_overrides(base_cfg, ["lr=1", "lr=2"])
    assert out["lr"] == 2


def test_override_does_not_mutate_input(base_cfg):
    before = copy.deepcopy(base_cfg)
    apply_overrides(base_cfg, ["trainer_params.max_epochs=3", "callbacks.0.args.patience=9",
                               "+new.key=1", "lr_=[1,2]"])
    assert base_cfg == before


def test_override_unknown_key_suggests_and_hints_plus(base_cfg):
    """Outside a spec's args, trainer_params and checkpoint, a new key needs `+`."""
    base_cfg["vars"] = {"width": 8}
    with pytest.raises(ConfigError, match=r"unknown key 'vars\.widht' "
                                          r"\(did you mean 'width'\?\); keys there: width; to add a new "
                                          r"key write '\+vars\.widht=VALUE'"):
        apply_overrides(base_cfg, ["vars.widht=3"])


def test_a_mistyped_trainer_param_is_added_by_the_override_and_refused_by_the_check():
    from helpers import tiny_config

    cfg = apply_overrides(tiny_config(), ["trainer_params.max_epoch=3"])
    assert cfg["trainer_params"]["max_epoch"] == 3
    with pytest.raises(ConfigError, match=r"unknown argument 'max_epoch' \(did you mean 'max_epochs'"):
        check(cfg)


def test_override_unknown_intermediate_key(base_cfg):
    with pytest.raises(ConfigError, match=r"unknown key 'trainer_param' \(did you mean "
                                          r"'trainer_params'\?\).*'\+trainer_param\.max_epochs=VALUE'"):
        apply_overrides(base_cfg, ["trainer_param.max_epochs=3"])


def test_override_plus_adds_key_with_intermediate_dicts(base_cfg):
    out = apply_overrides(base_cfg, ["+new.deep.key=5", "+trainer_params.precision=16"])
    assert out["new"] == {"deep": {"key": 5}}
    assert out["trainer_params"] == {"max_epochs": 10, "devices": 1, "precision": 16}


def test_override_plus_into_null_section(base_cfg):
    base_cfg["checkpoint"] = None
    out = apply_overrides(base_cfg, ["+checkpoint.monitor=val/loss"])
    assert out["checkpoint"] == {"monitor": "val/loss"}


@pytest.mark.parametrize("override", ["+seed=1", "+trainer_params.max_epochs=1"])
def test_override_plus_existing_key_errors(base_cfg, override):
    key = override[1:].partition("=")[0]
    with pytest.raises(ConfigError, match=rf"'\+{key}': '{key}' already exists; write '{key}=VALUE'"):
        apply_overrides(base_cfg, [override])


@pytest.mark.parametrize("override", ["callbacks.1.args.patience=5", "callbacks.-2.args.patience=5",
                                      "callbacks.x.args.patience=5"])
def test_override_bad_list_index(base_cfg, override):
    part = override.split(".")[1]
    with pytest.raises(ConfigError, match=rf"override key 'callbacks\.{part}': '{part}' is not an index "
                                          r"of a list of 1 item\(s\) \(valid: 0\.\.0\)"):
        apply_overrides(base_cfg, [override])


def test_override_list_leaf_index(base_cfg):
    base_cfg["hidden"] = [8, 16]
    assert apply_overrides(base_cfg, ["hidden.1=32"])["hidden"] == [8, 32]
    with pytest.raises(ConfigError, match=r"'2' is not an index of a list of 2 item\(s\)"):
        apply_overrides(base_cfg, ["hidden.2=32"])


def test_override_double_minus_index_is_config_error(base_cfg):
    with pytest.raises(ConfigError, match=r"'--1' is not an index"):
        apply_overrides(base_cfg, ["callbacks.--1.args.patience=5"])


def test_override_through_a_scalar(base_cfg):
    with pytest.raises(ConfigError, match=r"override 'seed\.x': 'seed' holds 0, not a section with keys"):
        apply_overrides(base_cfg, ["seed.x=1"])
    with pytest.raises(ConfigError, match=r"'seed' holds 0, not a section with keys"):
        apply_overrides(base_cfg, ["seed.x.y=1"])


@pytest.mark.parametrize("override", ["lr", "=3", "+=3", "+"])
def test_override_malformed(base_cfg, override):
    with pytest.raises(ConfigError, match=r"is not KEY=VALUE"):
        apply_overrides(base_cfg, [override])


@pytest.mark.parametrize("override", ["a..b=1", "a b=1", ".a=1", "a/b=1"])
def test_override_bad_key_syntax(base_cfg, override):
    with pytest.raises(ConfigError, match=r"is not a dotted key like 'a\.b\.c'"):
        apply_overrides(base_cfg, [override])


def test_override_bad_value_yaml(base_cfg):
    with pytest.raises(ConfigError, match=r"value of 'lr' '\[1,' is not valid YAML"):
        apply_overrides(base_cfg, ["lr=[1,"])


def test_override_turns_key_into_sweep_key(base_cfg):
    out = apply_overrides(base_cfg, ["lr_=[0.1,0.01]"])
    assert out["lr_"] == [0.1, 0.01]
    assert "lr" not in out
    assert list(out).index("lr_") == list(base_cfg).index("lr")  # stays where `lr` was


def test_override_nested_sweep_key(base_cfg):
    out = apply_overrides(base_cfg, ["data_module.args.batch_size_=[16,32]"])
    assert out["data_module"]["args"] == {"batch_size_": [16, 32]}


def test_override_existing_sweep_key_is_replaced(base_cfg):
    base_cfg["lr_"] = [1, 2]
    del base_cfg["lr"]
    assert apply_overrides(base_cfg, ["lr_=[3]"])["lr_"] == [3]


def test_override_sweep_key_without_base_key_is_unknown(base_cfg):
    with pytest.raises(ConfigError, match=r"unknown key 'momentum_'"):
        apply_overrides(base_cfg, ["momentum_=[1,2]"])


# ---------------------------------------------------------------- resolve


def test_resolve_interpolation():
    cfg = {"data_module": {"args": {"batch_size": 32}}, "vars": {"bs": "${data_module.args.batch_size}"},
           "label": "bs-${vars.bs}"}
    out = resolve(cfg)
    assert out["vars"]["bs"] == 32
    assert out["label"] == "bs-32"
    assert cfg["vars"]["bs"] == "${data_module.args.batch_size}"


def test_resolve_missing_key():
    with pytest.raises(ConfigError, match=r"interpolation failed: .*data_module\.args\.nope"):
        resolve({"data_module": {"args": {}}, "x": "${data_module.args.nope}"})


# ---------------------------------------------------------------- expand


def test_expand_without_sweep_keys():
    cfg = {"a": {"b": 1}, "_base_like_": 1}
    runs = expand(cfg)
    assert runs == [("", cfg)]
    runs[0][1]["a"]["b"] = 2
    assert cfg["a"]["b"] == 1


def sweep_cfg() -> dict:
    return {
        "train_wrapper": {"name": "base", "args": {"optim_spec": {"name": "Adam", "args": {"lr_": [0.1, 0.01]}}}},
        "data_module": {"name": "digits", "args": {"batch_size_": [16, 32, 64]}},
    }


def test_expand_grid_order_and_names():
    runs = expand(sweep_cfg())
    expected = list(itertools.product([0.1, 0.01], [16, 32, 64]))
    assert [name for name, _ in runs] == [f"lr={lr},batch_size={bs}" for lr, bs in expected]
    assert runs[0][0] == "lr=0.1,batch_size=16"
    for (_, c), (lr, bs) in zip(runs, expected):
        assert c["train_wrapper"]["args"]["optim_spec"]["args"] == {"lr": lr}
        assert c["data_module"]["args"] == {"batch_size": bs}


def test_expand_does_not_mutate_input_and_runs_are_independent():
    cfg = sweep_cfg()
    before = copy.deepcopy(cfg)
    runs = expand(cfg)
    runs[0][1]["data_module"]["args"]["batch_size"] = 0
    assert cfg == before
    assert runs[1][1]["data_module"]["args"]["batch_size"] == 32


def test_expand_strips_underscore_everywhere():
    for _, c in expand(sweep_cfg()):
        assert config.sweep_keys(c) == []
        assert "lr_" not in c["train_wrapper"]["args"]["optim_spec"]["args"]


def test_expand_same_leaf_names_get_dotted_labels():
    cfg = {"a": {"lr_": [1, 2]}, "b": {"lr_": [3]}, "other_": ["x"]}
    names = [name for name, _ in expand(cfg)]
    assert names == ["a.lr=1,b.lr=3,other=x", "a.lr=2,b.lr=3,other=x"]
    assert len(set(names)) == len(names)


def test_expand_deeper_label_only_where_needed():
    cfg = {"enc": {"args": {"dim_": [1]}}, "dec": {"args": {"dim_": [2]}}}
    assert [n for n, _ in expand(cfg)] == ["enc.args.dim=1,dec.args.dim=2"]


def test_expand_sweep_key_in_list():
    cfg = {"callbacks": [{"name": "es", "args": {"patience_": [1, 2]}}]}
    runs = expand(cfg)
    assert [n for n, _ in runs] == ["patience=1", "patience=2"]
    assert runs[1][1]["callbacks"][0]["args"] == {"patience": 2}


def test_expand_names_unique_when_values_print_alike():
    names = [n for n, _ in expand({"lr_": [0.1, "0.1"]})]
    assert len(set(names)) == 2
    assert names[0] == "lr=0.1"


def test_expand_formats_values_safely():
    names = [n for n, _ in expand({"opt_": ["a b/c", [1, 2], None, True]})]
    assert names == ["opt=a_b_c", "opt=[1,2]", "opt=null", "opt=true"]


@pytest.mark.parametrize("value", [0.1, "abc", [], {"a": 1}, None])
def test_expand_sweep_value_must_be_nonempty_list(value):
    with pytest.raises(ConfigError, match=r"sweep key 'x\.lr_' must hold a non-empty list of values"):
        expand({"x": {"lr_": value}})


def test_underscore_edge_keys_are_not_sweeps():
    assert config.sweep_keys({"_": [1], "__": [1], "_private_": [1], "a": {"_base_": [1]}}) == []
    assert [p for p, _ in config.sweep_keys({"a": {"b_": [1]}, "c_": [2]})] == [("a", "b_"), ("c_",)]


def test_expand_then_resolve_interpolates_swept_value():
    cfg = {"data_module": {"args": {"batch_size_": [16, 32]}},
           "vars": {"bs": "${data_module.args.batch_size}"}}
    resolved = [resolve(c) for _, c in expand(cfg)]
    assert [c["vars"]["bs"] for c in resolved] == [16, 32]


# ---------------------------------------------------------------- load_config


def test_load_config_loads_overrides_and_resolves(tmp_path):
    write(tmp_path, "base.yaml", "vars: {bs: 8}\ntrainer_params: {max_epochs: 10}\n")
    path = write(tmp_path, "c.yaml", "_base_: base.yaml\ndata_module: {args: {batch_size: '${vars.bs}'}}\n")
    cfg = load_config(path, ["vars.bs=4", "trainer_params.max_epochs=2"])
    assert cfg == {"vars": {"bs": 4}, "trainer_params": {"max_epochs": 2},
                   "data_module": {"args": {"batch_size": 4}}}


def test_load_config_rejects_sweep_in_file(tmp_path):
    path = write(tmp_path, "c.yaml", "train_wrapper: {args: {lr_: [1, 2]}}\n")
    with pytest.raises(ConfigError, match=r"this config is a sweep \(keys ending in '_': "
                                          r"train_wrapper\.args\.lr_\)"):
        load_config(path)


def test_load_config_rejects_sweep_from_override(tmp_path):
    path = write(tmp_path, "c.yaml", "lr: 1\n")
    with pytest.raises(ConfigError, match=r"sweep"):
        load_config(path, ["lr_=[1,2]"])


# ---------------------------------------------------------------- import_modules


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write a uniquely named module into tmp_path (on sys.path); returns (name, path) makers."""
    monkeypatch.syspath_prepend(str(tmp_path))
    created = []

    def make(source: str) -> tuple[str, Path]:
        name = f"usermod_{uuid.uuid4().hex}"
        created.append(name)
        return name, write(tmp_path, f"{name}.py", source)

    yield make
    for name in created:
        sys.modules.pop(name, None)


def test_import_modules_imports_and_returns_files(user_module):
    name, path = user_module("VALUE = 42\n")
    files = import_modules({"imports": [name]})
    assert name in sys.modules
    assert sys.modules[name].VALUE == 42
    assert len(files) == 1
    assert os.path.samefile(files[0], path)


def test_import_modules_accepts_a_single_string(user_module):
    name, path = user_module("VALUE = 1\n")
    files = import_modules({"imports": name})
    assert [Path(f).name for f in files] == [path.name]


@pytest.mark.parametrize("cfg", [{}, {"imports": None}, {"imports": []}])
def test_import_modules_nothing_to_import(cfg):
    assert import_modules(cfg) == []


@pytest.mark.parametrize("imports", [3, [1], [""], {"a": 1}])
def test_import_modules_rejects_non_names(imports):
    with pytest.raises(ConfigError, match=r"imports must be a list of module names"):
        import_modules({"imports": imports})


def test_import_modules_missing_module():
    name = f"no_such_module_{uuid.uuid4().hex}"
    with pytest.raises(ConfigError, match=rf"imports: cannot import '{name}': no module named '{name}'"):
        import_modules({"imports": [name]})


def test_import_modules_missing_dependency_of_user_module(user_module):
    dep = f"missing_dep_{uuid.uuid4().hex}"
    name, path = user_module(f"import {dep}\n")
    with pytest.raises(ConfigError, match=rf"importing '{name}' failed: ModuleNotFoundError: .*{dep}"):
        import_modules({"imports": [name]})


def test_import_modules_module_raising_at_import(user_module):
    name, path = user_module("X = 1\n\nraise RuntimeError('boom at import')\n")
    with pytest.raises(ConfigError) as info:
        import_modules({"imports": [name]})
    msg = str(info.value)
    assert f"imports: importing '{name}' failed: RuntimeError: boom at import" in msg
    assert f"({path}, line 3)" in msg
    assert name not in sys.modules


def test_import_modules_module_with_syntax_error(user_module):
    name, path = user_module("x = 1\ndef broken(:\n")
    with pytest.raises(ConfigError, match=rf"importing '{name}' failed: SyntaxError: .*{path.name}, line 2\)"):
        import_modules({"imports": [name]})


def test_import_modules_registry_error_is_reported(user_module):
    name, _ = user_module(textwrap.dedent("""\
        from torchx.registry import Registry
        r = Registry('thing')
        r.register('x')(len)
        r.register('x')(len)
        """))
    with pytest.raises(ConfigError, match=rf"importing '{name}' failed: thing 'x' is already registered"):
        import_modules({"imports": [name]})


# ---------------------------------------------------------------- check


def require_registries() -> None:
    """Skip (at test time) while a registry package of torchx cannot be imported yet."""
    for mod in ("torchx.models", "torchx.losses", "torchx.datasets", "torchx.wrappers", "torchx.callbacks"):
        pytest.importorskip(mod, exc_type=ImportError)


def valid_cfg() -> dict:
    return {
        "seed": 0,
        "data_module": {"name": "digits", "args": {"batch_size": 32}},
        "train_wrapper": {"name": "base", "args": {
            "model_spec": {"name": "mlp", "args": {"in_dim": 64, "hidden": [16]}},
            "loss_spec": {"name": "ce"},
            "optim_spec": {"name": "Adam", "args": {"lr": 1e-3}},
        }},
        "trainer_params": {"max_epochs": 1},
        "checkpoint": {"monitor": "val/loss"},
        "callbacks": [],
    }


def test_check_unknown_top_level_key():
    cfg = valid_cfg()
    cfg["trainer_param"] = cfg.pop("trainer_params")
    with pytest.raises(ConfigError, match=r"^unknown top-level key 'trainer_param' \(did you mean "
                                          r"'trainer_params'.*\?\); valid keys: imports, vars, seed"):
        check(cfg)


@pytest.mark.parametrize("missing", ["data_module", "train_wrapper"])
def test_check_missing_required_section(missing):
    cfg = valid_cfg()
    cfg[missing] = None
    with pytest.raises(ConfigError, match=rf"the config has no '{missing}' section"):
        check(cfg)
    del cfg[missing]
    with pytest.raises(ConfigError, match=rf"the config has no '{missing}' section"):
        check(cfg)


@pytest.mark.parametrize("seed", ["abc", -1, True, 1.0])
def test_check_bad_seed(seed):
    cfg = valid_cfg()
    cfg["seed"] = seed
    with pytest.raises(ConfigError, match=rf"seed must be a non-negative integer or null, got {seed!r}"):
        check(cfg)


def test_check_config_not_a_mapping():
    with pytest.raises(ConfigError, match=r"a config must be a mapping, got list"):
        check([])


def test_check_valid_config_passes():
    require_registries()
    cfg = valid_cfg()
    cfg["seed"] = None
    cfg["train_wrapper"]["args"]["sched_spec"] = {"name": "StepLR", "args": {"step_size": 1},
                                                  "interval": "step", "frequency": 2}
    check(cfg)


def test_check_unknown_trainer_param():
    require_registries()
    cfg = valid_cfg()
    cfg["trainer_params"] = {"max_epoch": 1}
    with pytest.raises(ConfigError, match=r"^trainer_params got an unknown argument 'max_epoch' "
                                          r"\(did you mean 'max_epochs'.*\?\); accepted: .*max_epochs"):
        check(cfg)


@pytest.mark.parametrize("section, key", [("trainer_params", "logger"), ("trainer_params", "default_root_dir"),
                                          ("checkpoint", "dirpath")])
def test_check_reserved_keys(section, key):
    require_registries()
    cfg = valid_cfg()
    cfg[section][key] = "x"
    with pytest.raises(ConfigError, match=rf"^{section}\.{key} cannot be set: "):
        check(cfg)


def test_check_unknown_checkpoint_arg():
    require_registries()
    cfg = valid_cfg()
    cfg["checkpoint"] = {"monitr": "val/loss"}
    with pytest.raises(ConfigError, match=r"^checkpoint got an unknown argument 'monitr' \(did you mean 'monitor'"):
        check(cfg)


@pytest.mark.parametrize("section", ["trainer_params", "checkpoint"])
def test_check_kwargs_section_must_be_mapping(section):
    require_registries()
    cfg = valid_cfg()
    cfg[section] = [1]
    with pytest.raises(ConfigError, match=rf"^{section} must be a mapping of argument names to values"):
        check(cfg)


def test_check_unknown_model_in_nested_spec():
    require_registries()
    cfg = valid_cfg()
    cfg["train_wrapper"]["args"]["model_spec"]["name"] = "mpl"
    with pytest.raises(ConfigError, match=r"^train_wrapper\.args\.model_spec: unknown model 'mpl' "
                                          r"\(did you mean 'mlp'\?\)"):
        check(cfg)


def test_check_unknown_argument_in_nested_spec():
    require_registries()
    cfg = valid_cfg()
    cfg["train_wrapper"]["args"]["optim_spec"]["args"]["lrr"] = 1
    with pytest.raises(ConfigError, match=r"^train_wrapper\.args\.optim_spec: optimizer 'Adam' got an "
                                          r"unknown argument 'lrr' \(did you mean 'lr'\?\)"):
        check(cfg)


def test_check_unknown_data_module():
    require_registries()
    cfg = valid_cfg()
    cfg["data_module"]["name"] = "digitz"
    with pytest.raises(ConfigError, match=r"^data_module: unknown dataset 'digitz' \(did you mean 'digits'"):
        check(cfg)


def test_check_unknown_spec_key():
    require_registries()
    cfg = valid_cfg()
    cfg["data_module"]["arg"] = {}
    with pytest.raises(ConfigError, match=r"^data_module: unknown spec key 'arg' \(did you mean 'args'"):
        check(cfg)


@pytest.mark.parametrize("extra, message", [
    ({"interval": "batch"}, r"sched_spec\.interval must be 'epoch' or 'step', got 'batch'"),
    ({"frequency": 0}, r"sched_spec\.frequency must be a positive integer, got 0"),
    ({"frequency": True}, r"sched_spec\.frequency must be a positive integer, got True"),
])
def test_check_sched_spec_keys(extra, message):
    require_registries()
    cfg = valid_cfg()
    cfg["train_wrapper"]["args"]["sched_spec"] = {"name": "StepLR", "args": {"step_size": 1}, **extra}
    with pytest.raises(ConfigError, match=rf"^train_wrapper\.args\.{message}"):
        check(cfg)


def test_check_accepts_list_of_sched_specs():
    require_registries()
    cfg = valid_cfg()
    cfg["train_wrapper"]["args"]["sched_spec"] = [{"name": "StepLR", "args": {"step_size": 1}},
                                                  {"name": "ExponentialLR", "args": {"gamma": 0.9}}]
    check(cfg)


def test_check_callbacks_must_be_a_list():
    require_registries()
    cfg = valid_cfg()
    cfg["callbacks"] = {"name": "x"}
    with pytest.raises(ConfigError, match=r"^callbacks must be a list of \{name, args\} specs"):
        check(cfg)


def test_check_unknown_callback_names_its_index():
    require_registries()
    cfg = valid_cfg()
    cfg["callbacks"] = [{"name": "surely_not_a_callback"}]
    with pytest.raises(ConfigError, match=r"^callbacks\.0: unknown callback 'surely_not_a_callback'"):
        check(cfg)


def test_merge_delete_replaces_instead_of_merging(tmp_path):
    write(tmp_path, "base.yaml", "spec: {name: mlp, args: {in_dim: 64, hidden: [8]}}\nkeep: 1\n")
    path = write(tmp_path, "child.yaml",
                 "_base_: base.yaml\nspec: {_delete_: true, name: conv, args: {width: 4}}\n")
    assert load(path) == {"spec": {"name": "conv", "args": {"width": 4}}, "keep": 1}


def test_saved_config_reads_back_the_same_values(tmp_path):
    """A run's config.yaml is what --resume reads: strings that look like YAML 1.2 numbers or
    booleans must stay strings, floats stay floats."""
    from torchx.run import _write_yaml, saved_config

    cfg = {"a": "1e-3", "b": 0.001, "c": "true", "d": "null", "e": "0x10", "f": [1, "2"], "g": None}
    _write_yaml(tmp_path / "config.yaml", cfg)
    assert saved_config(tmp_path) == cfg
