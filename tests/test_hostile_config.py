"""Hostile configs: input built to cost, to loop or to slip past the checks.

Files and values too large or too deep, YAML alias bombs ("billion laughs"), `${...}` cycles
and interpolation bombs, new keys under a spec's `args`, keys inherited from a `_base_` file
that `_delete_: true` would replace, argument values of the wrong type, seeds out of range and
`imports:` modules that exit. Each ends as one ConfigError naming the bad value and what would
be valid; from the command line: exit status 2, one line on stderr, no traceback, no save dir.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Optional, Union

import pytest
import torch
import yaml

from torchx import config as C
from torchx.errors import ConfigError
from torchx.registry import Registry

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "configs" / "digits.yaml"
MNIST_CNN = REPO / "configs" / "mnist-cnn.yaml"
MIB = 1 << 20


# ---------------------------------------------------------------- helpers


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging) when the block runs longer than `seconds`."""

    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def refused_quickly(call: Callable[[], Any], *pieces: str, seconds: float = 5.0) -> str:
    """`call()` raises one ConfigError holding every piece, on one line, within `seconds`."""
    start = time.perf_counter()
    with deadline(int(seconds) + 5), pytest.raises(ConfigError) as info:
        call()
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert elapsed < seconds, f"took {elapsed:.1f} s: {message}"
    assert "\n" not in message, message
    for piece in pieces:
        assert piece in message, f"{piece!r} not in {message!r}"
    return message


def train_pl(tmp_path: Path, *argv: str, env: dict[str, str] | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess:
    """train_pl.py --dry-run in a real process, from the repository root."""
    clean = {k: v for k, v in os.environ.items() if k not in ("TORCHX_DEBUG", "PL_GLOBAL_SEED")}
    clean["PYTHONDONTWRITEBYTECODE"] = "1"
    clean.update(env or {})
    return subprocess.run([sys.executable, "train_pl.py", *argv, "--dry-run", "--save-dir", str(tmp_path / "save")],
                          cwd=REPO, env=clean, capture_output=True, text=True, timeout=timeout)


def assert_cli_refused(proc: subprocess.CompletedProcess, tmp_path: Path, *pieces: str) -> None:
    err = proc.stderr
    assert "Traceback" not in err, err
    assert proc.returncode == 2, f"exit status {proc.returncode}; stderr: {err}"
    assert err.count("\n") == 1 and err.startswith("train_pl.py: error: "), f"not one line: {err!r}"
    for piece in pieces:
        assert piece in err, f"{piece!r} not in {err!r}"
    assert not (tmp_path / "save").exists()


def digits_with(extra: str) -> str:
    """configs/digits.yaml with more YAML after it."""
    return DIGITS.read_text(encoding="utf-8") + "\n" + extra


def nested(depth: int) -> dict:
    """{'a': {'a': ... {}}}: `depth` mappings, built without recursion."""
    root: dict = {}
    node = root
    for _ in range(depth - 1):
        node["a"] = {}
        node = node["a"]
    return root


def laughs(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs" YAML: each anchor holds `width` aliases of the one before (~1 kB)."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def string_bomb(depth: int = 30, copies: int = 10) -> dict:
    """vars.x0 = 'ha', vars.xN = '${vars.x(N-1)}' * copies: 2 * copies**depth characters."""
    values = {"x0": "ha"}
    for i in range(1, depth + 1):
        values[f"x{i}"] = f"${{vars.x{i - 1}}}" * copies
    return values


# ---------------------------------------------------------------- 1. the cost of reading YAML


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text, encoding="utf-8")
    return path


HOSTILE_YAML = {  # id -> (file text, what the message says)
    "over-1-mib": ("seed: 1\n# " + "x" * MIB + "\n", ["cfg.yaml' is 1048587 bytes", "1048576 bytes (1 MiB)"]),
    "65-levels-of-lists": ("a: " + "[" * 65 + "]" * 65 + "\n", ["cfg.yaml:1:", "nesting deeper than 64 levels"]),
    "65-levels-of-mappings": ("".join(f"{'  ' * i}k{i}:\n" for i in range(65)) + "  " * 65 + "leaf: 1\n",
                              ["cfg.yaml:", "nesting deeper than 64 levels"]),
    "100000-levels": ("a: " + "[" * 100_000 + "]" * 100_000 + "\n", ["nesting deeper than 64 levels"]),
    "billion-laughs": (laughs(), ["cfg.yaml:", "YAML aliases repeat more than 10000 nodes", "'*l"]),
    "recursive-alias": ("a: &a [1, *a]\n", ["cfg.yaml:1:", "alias '*a' refers to a node that contains it"]),
}


@pytest.mark.parametrize("text, pieces", HOSTILE_YAML.values(), ids=HOSTILE_YAML.keys())
def test_read_yaml_refuses_costly_files(text, pieces, tmp_path):
    path = _write(tmp_path, text)
    refused_quickly(lambda: C.read_yaml(path), *pieces)


def test_nesting_bound_is_64_levels_and_64_still_load(tmp_path):
    ok = _write(tmp_path, "a: " + "[" * 63 + "]" * 63 + "\n")  # the top-level mapping is level 1
    cfg = C.resolve(C.load(ok))
    depth, node = 1, cfg["a"]
    while node:
        node, depth = node[0], depth + 1
    assert depth == 63
    refused_quickly(lambda: C.read_yaml(_write(tmp_path, "a: " + "[" * 64 + "]" * 64 + "\n")),
                    "nesting deeper than 64 levels")


def test_aliases_that_repeat_a_little_still_load(tmp_path):
    path = _write(tmp_path, "vars:\n  opt: &opt {name: SGD, args: {lr: 0.1}}\n  again: *opt\n"
                            + laughs(levels=6, width=9))
    with pytest.raises(ConfigError, match="YAML aliases repeat more than 10000 nodes"):
        C.read_yaml(path)
    fine = _write(tmp_path, "vars:\n  opt: &opt {name: SGD, args: {lr: 0.1}}\n  again: *opt\n"
                            + laughs(levels=3, width=9))
    data = C.read_yaml(fine)
    assert data["vars"]["again"] == {"name": "SGD", "args": {"lr": 0.1}}
    assert len(data["l2"]) == 9 and data["l2"][0][0] == ["lol"] * 9


HOSTILE_VALUES = {  # id -> (override value, what the message says)
    "over-1-mib": ("x" * (MIB + 1), ["value of 'vars.v' is 1048577 bytes long", "1048576 bytes (1 MiB)"]),
    "65-levels": ("[" * 65 + "]" * 65, ["value of 'vars.v'", "nesting deeper than 64 levels"]),
    "billion-laughs": ("{" + laughs().strip().replace("\n", ", ") + "}",
                       ["value of 'vars.v'", "YAML aliases repeat more than 10000 nodes"]),
}


@pytest.mark.parametrize("value, pieces", HOSTILE_VALUES.values(), ids=HOSTILE_VALUES.keys())
def test_override_values_are_bounded_like_files(value, pieces):
    message = refused_quickly(lambda: C.apply_overrides({"vars": {}}, [f"+vars.v={value}"]), *pieces)
    assert len(message) < 600


RECURSION = {  # id -> (call, what the message says)
    "resolve": (lambda: C.resolve(nested(5000)), ["nests deeper than 64 levels", "'a.a.a.a"]),
    "merge": (lambda: C.merge(nested(5000), nested(5000)), ["nest too deeply to merge"]),
    "apply-overrides-copy": (lambda: C.apply_overrides(nested(5000), []), ["nests too deeply"]),
    "override-key-parts": (lambda: C.apply_overrides({}, ["+" + ".".join(["a"] * 70) + "=1"]),
                           ["has 70 parts", "at most 64 levels"]),
    "override-key-and-value": (lambda: C.apply_overrides({}, ["+" + ".".join(["a"] * 40) + "=" + "[" * 40 + "]" * 40]),
                               ["overrides make the config nest deeper than 64 levels"]),
}


@pytest.mark.parametrize("call, pieces", RECURSION.values(), ids=RECURSION.keys())
def test_deep_configs_are_a_config_error_not_a_recursion_error(call, pieces):
    refused_quickly(call, *pieces)


def test_a_chain_of_base_files_is_bounded(tmp_path):
    for i in range(100):
        (tmp_path / f"c{i}.yaml").write_text(f"_base_: c{i + 1}.yaml\nv{i}: {i}\n" if i < 99 else "v99: 99\n")
    refused_quickly(lambda: C.load(tmp_path / "c0.yaml"), "_base_ files nest more than 64 deep", "c0.yaml")
    assert C.load(tmp_path / "c40.yaml") == {f"v{i}": i for i in range(99, 39, -1)}


def test_cli_refuses_a_file_over_1_mib(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(digits_with("# " + "x" * MIB + "\n"), encoding="utf-8")
    size = path.stat().st_size
    assert_cli_refused(train_pl(tmp_path, "--config", str(path)), tmp_path, f"is {size} bytes", "1 MiB")


def test_cli_refuses_a_billion_laughs_file_quickly(tmp_path):
    path = tmp_path / "laughs.yaml"
    assert len(laughs()) < 1100  # ~1 kB that would expand to 9**8 lists of 9 strings
    path.write_text(digits_with("vars:\n" + "".join(f"  {line}\n" for line in laughs().splitlines())))
    start = time.perf_counter()
    proc = train_pl(tmp_path, "--config", str(path), timeout=30)
    assert time.perf_counter() - start < 20
    assert_cli_refused(proc, tmp_path, "laughs.yaml:", "YAML aliases repeat more than 10000 nodes")


# ---------------------------------------------------------------- 1. interpolation: cycles and bombs


CYCLES = {  # id -> (config, the cycle named)
    "two-keys": ({"vars": {"a": "${vars.b}", "b": "${vars.a}"}}, "vars.a -> vars.b -> vars.a"),
    "three-keys": ({"vars": {"a": "x${vars.b}", "b": "${vars.c}/y", "c": "${vars.a}"}},
                   "vars.a -> vars.b -> vars.c -> vars.a"),
    "itself": ({"seed": "${seed}"}, "seed -> seed"),
    "its-own-section": ({"vars": {"all": "${vars}"}}, "vars.all -> vars -> vars.all"),
    "relative": ({"vars": {"a": "${.b}", "b": "${.a}"}}, "vars.a -> vars.b -> vars.a"),
    "through-a-list": ({"vars": {"l": [1, "${vars.m}"], "m": "${vars.l[1]}"}}, "vars.l.1 -> vars.m -> vars.l.1"),
    "any-key": ({"data_module": {"name": "${train_wrapper.name}"}, "train_wrapper": {"name": "${data_module.name}"}},
                "data_module.name -> train_wrapper.name -> data_module.name"),
}


@pytest.mark.parametrize("cfg, cycle", CYCLES.values(), ids=CYCLES.keys())
def test_interpolation_cycles_are_named_whole(cfg, cycle):
    refused_quickly(lambda: C.resolve(cfg), f"interpolation cycle: {cycle}")


def test_interpolations_that_only_look_circular_resolve():
    cfg = {"vars": {"lr": 0.1, "opt": {"name": "SGD", "args": {"lr": "${vars.lr}"}}, "copy": "${vars.opt}",
                    "path": "${vars.dir}/${vars.dir}", "dir": "runs", "list": [1, "${..lr}"],
                    "first": "${vars.list[0]}", "escaped": "\\${vars.escaped}"}}
    out = C.resolve(cfg)
    assert out["vars"]["copy"] == {"name": "SGD", "args": {"lr": 0.1}}
    assert out["vars"]["path"] == "runs/runs" and out["vars"]["list"] == [1, 0.1] and out["vars"]["first"] == 1
    assert out["vars"]["escaped"] == "${vars.escaped}"
    refused_quickly(lambda: C.resolve({"vars": {**cfg["vars"], "dir": "${vars.path}"}}),
                    "interpolation cycle: vars.path -> vars.dir -> vars.path")


def test_an_interpolation_bomb_is_refused_quickly_naming_the_key():
    cfg = {"vars": string_bomb(30), "seed": 1, "tag": "${vars.x30}"}
    message = refused_quickly(lambda: C.resolve(cfg), "interpolation at 'vars.x", "more than 10000 references")
    assert "'vars.x4'" in message  # the first key whose expansion passes the bound
    small = {"vars": string_bomb(2), "tag": "${vars.x2}"}  # 200 characters: fine
    assert C.resolve(small)["tag"] == "ha" * 100


def test_a_wide_interpolation_is_bounded_in_characters():
    cfg = {"vars": {"big": "x" * 200_000, "wide": "${vars.big}" * 6}}
    refused_quickly(lambda: C.resolve(cfg), "interpolation at 'vars.wide'", "more than 1000000 characters")
    assert len(C.resolve({"vars": {"big": "x" * 200_000, "wide": "${vars.big}" * 4}})["vars"]["wide"]) == 800_000


def test_cli_refuses_an_interpolation_bomb_before_resolving_it(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(digits_with(yaml.safe_dump({"vars": string_bomb(30)})))
    assert path.stat().st_size < 5000
    proc = train_pl(tmp_path, "--config", str(path), timeout=30)
    assert_cli_refused(proc, tmp_path, "interpolation at 'vars.x4'", "more than 10000 references")


def test_cli_names_an_interpolation_cycle(tmp_path):
    path = tmp_path / "cycle.yaml"
    path.write_text(digits_with("vars: {a: '${vars.b}', b: '${vars.a}'}\n"))
    assert_cli_refused(train_pl(tmp_path, "--config", str(path)), tmp_path,
                       "interpolation cycle: vars.a -> vars.b -> vars.a")


# ---------------------------------------------------------------- 2. new keys under a spec's args without `+`


NEW_ARGS = {  # id -> (config file, override, dotted key, value it has afterwards)
    "data-module-download": (MNIST_CNN, "data_module.args.download=true", "data_module.args.download", True),
    "data-module-num-workers": (DIGITS, "data_module.args.num_workers=0", "data_module.args.num_workers", 0),
    "spec-without-args": (DIGITS, "train_wrapper.args.loss_spec.args.label_smoothing=0.1",
                          "train_wrapper.args.loss_spec.args.label_smoothing", 0.1),
    "optimizer": (DIGITS, "train_wrapper.args.optim_spec.args.weight_decay=0.01",
                  "train_wrapper.args.optim_spec.args.weight_decay", 0.01),
    "scheduler": (DIGITS, "train_wrapper.args.sched_spec.args.last_epoch=-1",
                  "train_wrapper.args.sched_spec.args.last_epoch", -1),
    "wrapper": (DIGITS, "train_wrapper.args.nonfinite_loss=stop", "train_wrapper.args.nonfinite_loss", "stop"),
    "trainer-params": (DIGITS, "trainer_params.limit_train_batches=2", "trainer_params.limit_train_batches", 2),
    "checkpoint": (DIGITS, "checkpoint.save_top_k=2", "checkpoint.save_top_k", 2),
}


def _at(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = cfg[int(part)] if isinstance(cfg, list) else cfg[part]
    return cfg


@pytest.mark.parametrize("file, override, key, value", NEW_ARGS.values(), ids=NEW_ARGS.keys())
def test_a_new_argument_needs_no_plus_and_passes_the_checks(file, override, key, value):
    cfg = C.load_config(file, [override])
    assert _at(cfg, key) == value and type(_at(cfg, key)) is type(value)
    C.check(cfg)


def test_new_arguments_of_callbacks_and_metrics_and_missing_sections(tmp_path):
    base = yaml.safe_load(DIGITS.read_text())
    base["callbacks"] = [{"name": "early_stopping"}]
    base["metrics"] = [{"name": "accuracy", "args": None}]
    del base["checkpoint"]
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(base))
    cfg = C.load_config(path, ["callbacks.0.args.monitor=val/acc", "callbacks.0.args.patience=5",
                               "metrics.0.args.task=multiclass", "metrics.0.args.num_classes=10",
                               "checkpoint.monitor=val/acc"])
    assert cfg["callbacks"] == [{"name": "early_stopping", "args": {"monitor": "val/acc", "patience": 5}}]
    assert cfg["metrics"] == [{"name": "accuracy", "args": {"task": "multiclass", "num_classes": 10}}]
    assert cfg["checkpoint"] == {"monitor": "val/acc"}
    C.check(cfg)


STILL_PLUS = {  # id -> (an override now accepted, a neighbour that still needs `+`)
    "spec-key-not-in-args": ("train_wrapper.args.sched_spec.args.last_epoch=-1",
                             "train_wrapper.args.sched_spec.interva=step"),
    "args-of-a-non-spec": ("data_module.args.shuffle=false", "vars.args.x=1"),
    "below-a-new-trainer-param": ("trainer_params.limit_val_batches=1", "trainer_params.plugins.x=1"),
    "misspelt-section": ("checkpoint.every_n_epochs=1", "checkpoints.every_n_epochs=1"),
    "top-level": ("data_module.args.split_seed=3", "vars=1"),
}


@pytest.mark.parametrize("accepted, refused", STILL_PLUS.values(), ids=STILL_PLUS.keys())
def test_other_new_keys_still_need_plus(accepted, refused):
    cfg = C.apply_overrides(C.load(DIGITS), [accepted])
    key, _, value = accepted.partition("=")
    assert key.rpartition(".")[2] in _at(cfg, key.rpartition(".")[0])
    plus = "+" + refused.partition("=")[0]
    with pytest.raises(ConfigError, match="unknown key") as info:
        C.apply_overrides(C.load(DIGITS), [refused])
    assert f"write '{plus}=VALUE'" in str(info.value)


TYPOS = {  # id -> (config file, override, what the registry check says)
    "download": (MNIST_CNN, "data_module.args.downlod=true",
                 "data_module: dataset 'mnist' got an unknown argument 'downlod' (did you mean 'download'?)"),
    "num-workers": (DIGITS, "data_module.args.num_workrs=0",
                    "dataset 'digits' got an unknown argument 'num_workrs' (did you mean 'num_workers'?)"),
    "trainer-param": (DIGITS, "trainer_params.max_epoch=3",
                      "trainer_params got an unknown argument 'max_epoch' (did you mean 'max_epochs'"),
    "checkpoint": (DIGITS, "checkpoint.monitr=val/loss", "checkpoint got an unknown argument 'monitr' (did you mean "
                                                         "'monitor'?)"),
    "loss": (DIGITS, "train_wrapper.args.loss_spec.args.label_smothing=0.1",
             "loss 'ce' got an unknown argument 'label_smothing' (did you mean 'label_smoothing'?)"),
}


@pytest.mark.parametrize("file, override, message", TYPOS.values(), ids=TYPOS.keys())
def test_a_misspelt_new_argument_is_caught_by_the_registry_check(file, override, message):
    cfg = C.load_config(file, [override])  # the override itself is accepted...
    with pytest.raises(ConfigError) as info:  # ...and the signature names the typo
        C.check(cfg)
    assert message in str(info.value)
    assert "+" not in str(info.value).partition(";")[0]


def test_cli_refuses_a_misspelt_new_argument_with_a_close_match(tmp_path):
    proc = train_pl(tmp_path, "--config", "configs/digits.yaml", "data_module.args.num_workrs=0")
    assert_cli_refused(proc, tmp_path, "got an unknown argument 'num_workrs' (did you mean 'num_workers'?)")
    assert "+data_module" not in proc.stderr


def test_cli_config_tool_adds_a_new_argument_without_plus(capsys):
    from torchx.cli import tool_main

    assert tool_main(["config", str(DIGITS), "data_module.args.num_workers=0", "trainer_params.max_steps=5"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["data_module"]["args"]["num_workers"] == 0
    assert out["trainer_params"] == {"max_epochs": 10, "max_steps": 5}


# ---------------------------------------------------------------- 3. inherited keys and `_delete_: true`


MODEL_CNN = "train_wrapper:\n  args:\n    model_spec:\n      name: cnn\n      args: {image_size: 8}\n"
MODEL_CNN_REPLACED = ("train_wrapper:\n  args:\n    model_spec:\n      name: cnn\n"
                      "      args: {_delete_: true, image_size: 8}\n")


def _family(tmp_path: Path, child: str) -> Path:
    """base.yaml (configs/digits.yaml) and child.yaml, `_base_: base.yaml` plus `child`."""
    (tmp_path / "base.yaml").write_text(DIGITS.read_text())
    path = tmp_path / "child.yaml"
    path.write_text("_base_: base.yaml\n" + child)
    return path


def test_inherited_keys_are_those_the_file_does_not_write(tmp_path):
    keys = C.inherited_keys(_family(tmp_path, MODEL_CNN))
    assert {"seed", "data_module.args.batch_size", "train_wrapper.args.model_spec.args.in_dim",
            "train_wrapper.args.optim_spec.args.lr", "trainer_params.max_epochs"} <= keys
    assert "train_wrapper.args.model_spec.name" not in keys
    assert "train_wrapper.args.model_spec.args.image_size" not in keys
    replaced = C.inherited_keys(_family(tmp_path, MODEL_CNN_REPLACED))
    assert "train_wrapper.args.model_spec.args.in_dim" not in replaced
    assert C.load(tmp_path / "child.yaml")["train_wrapper"]["args"]["model_spec"] == {
        "name": "cnn", "args": {"image_size": 8}}
    assert C.inherited_keys(DIGITS) == set()


def test_an_inherited_unknown_argument_points_at_delete(tmp_path):
    path = _family(tmp_path, MODEL_CNN)
    cfg = C.load_config(path)
    with pytest.raises(ConfigError) as info:
        C.check(cfg, config_file=path)
    message = str(info.value)
    assert "train_wrapper.args.model_spec: model 'cnn' got an unknown argument 'in_dim'" in message
    assert "'in_dim' is inherited from the _base_ file" in message and "base.yaml" in message
    assert "`_delete_: true` in 'train_wrapper.args.model_spec.args'" in message
    assert "instead of merging" in message and "\n" not in message
    with pytest.raises(ConfigError) as plain:  # without the file: the message as before
        C.check(cfg)
    assert "got an unknown argument 'in_dim'" in str(plain.value) and "_base_" not in str(plain.value)


def test_cli_points_at_delete_for_an_inherited_argument(tmp_path):
    path = _family(tmp_path, MODEL_CNN)
    assert_cli_refused(train_pl(tmp_path, "--config", str(path)), tmp_path,
                       "model 'cnn' got an unknown argument 'in_dim'", "is inherited from the _base_ file",
                       "base.yaml", "`_delete_: true` in 'train_wrapper.args.model_spec.args'")


def test_an_unknown_argument_written_in_the_file_itself_gets_no_hint(tmp_path):
    path = _family(tmp_path, MODEL_CNN_REPLACED.replace("image_size: 8", "image_size: 8, in_dim: 64"))
    with pytest.raises(ConfigError) as info:
        C.check(C.load_config(path), config_file=path)
    assert "got an unknown argument 'in_dim'" in str(info.value)
    assert "_base_" not in str(info.value) and "_delete_" not in str(info.value)
    assert C.inherited_keys(path) >= {"seed"}


def test_an_inherited_trainer_param_names_the_file_it_comes_from(tmp_path):
    (tmp_path / "old.yaml").write_text(DIGITS.read_text().replace("max_epochs: 10", "max_epochs: 10\n  gpus: 1"))
    (tmp_path / "base.yaml").write_text("_base_: old.yaml\nseed: 1\n")
    path = tmp_path / "child.yaml"
    path.write_text("_base_: base.yaml\ntrainer_params: {max_epochs: 2}\n")
    assert "trainer_params.gpus" in C.inherited_keys(path)
    with pytest.raises(ConfigError) as info:
        C.check(C.load_config(path), config_file=path)
    message = str(info.value)
    assert "trainer_params got an unknown argument 'gpus'" in message
    assert "inherited from the _base_ file" in message and "old.yaml" in message
    assert "`_delete_: true` in 'trainer_params'" in message
    untouched = tmp_path / "untouched.yaml"  # a file that does not write trainer_params: no _delete_ advice
    untouched.write_text("_base_: base.yaml\nseed: 2\n")
    with pytest.raises(ConfigError) as info:
        C.check(C.load_config(untouched), config_file=untouched)
    assert "inherited from the _base_ file" in str(info.value) and "_delete_" not in str(info.value)


# ---------------------------------------------------------------- 4. argument values against annotations


class Typed:
    """Takes one parameter of every annotation the registry judges, and a few it does not."""

    def __init__(self, n: int = 1, x: float = 1.0, s: str = "a", flag: bool = False, maybe: int | None = None,
                 opt: Optional[float] = None,  # noqa: UP045  (typing's spelling is judged too)
                 either: Union[int, str] = 0,  # noqa: UP007
                 mode: Literal["min", "max"] = "min",
                 sizes: list[int] = (), pair: tuple[float, float] = (0.0, 1.0), many: tuple[int, ...] = (),
                 names: Sequence[str] = (), table: dict[str, float] | None = None, mapping: Mapping = None,
                 path: Path = Path("."), pathlike: os.PathLike | None = None, anything: Any = None,
                 fn: Callable | None = None, tensor: torch.Tensor | None = None,
                 unknown: NoSuchType = None,  # noqa: F821  (an annotation that cannot be evaluated)
                 lr: float | torch.Tensor = 0.1, loose: int = None) -> None:
        self.kwargs = {k: v for k, v in locals().items() if k != "self"}


TYPE_CASES = {  # id -> (argument, values accepted, a value refused, what the message says it expected)
    "int": ("n", [0, -3, 2**40], True, "int"),
    "int-not-float": ("n", [3], 3.0, "int"),
    "int-not-str": ("n", [3], "3", "int"),
    "float-takes-int": ("x", [1, 1.5, -0.0, 1e-4], "gray", "float"),
    "float-not-bool": ("x", [0.5], False, "float"),
    "str": ("s", ["", "val/acc"], 3, "str"),
    "bool": ("flag", [True, False], 1, "bool"),
    "bool-not-str": ("flag", [True], "yes", "bool"),
    "optional-int": ("maybe", [None, 4], "x", "int or null"),
    "optional-float": ("opt", [None, 2, 2.5], [2.5], "float or null"),
    "union": ("either", [1, "s"], 1.5, "int or str"),
    "literal": ("mode", ["min", "max"], "maxx", "'min' or 'max'"),
    "list-of-int": ("sizes", [[], [1, 2], (3,)], [1, "a"], "list of int"),
    "list-not-scalar": ("sizes", [[8]], 8, "list of int"),
    "tuple-from-list": ("pair", [[0.9, 0.999], (0, 1)], [0.9], "list of 2 (float, float)"),
    "tuple-items": ("pair", [[1, 2]], [1.0, "b"], "list of 2 (float, float)"),
    "tuple-ellipsis": ("many", [[], [1, 2, 3]], [1, 2.5], "list of int"),
    "sequence-of-str": ("names", [["a", "b"], []], "ab", "list of str"),
    "dict": ("table", [{}, {"a": 1, "b": 2.5}, None], {"a": "b"}, "mapping of str to float or null"),
    "mapping": ("mapping", [{"k": [1]}, {}], [1, 2], "mapping"),
    "path": ("path", ["some/dir", Path("x")], 3, "a path"),
    "pathlike": ("pathlike", ["x", Path("y"), None], ["x"], "a path or null"),
}


@pytest.fixture
def typed() -> Registry:
    reg = Registry("thing")
    reg.register("typed")(Typed)
    return reg


@pytest.mark.parametrize("arg, good, bad, expected", TYPE_CASES.values(), ids=TYPE_CASES.keys())
def test_argument_values_are_checked_against_annotations(typed, arg, good, bad, expected):
    for value in good:
        assert typed.make({"name": "typed", "args": {arg: value}}).kwargs[arg] == value
    with pytest.raises(ConfigError) as info:
        typed.check({"name": "typed", "args": {arg: bad}})
    assert str(info.value) == f"thing 'typed' argument '{arg}': expected {expected}, got {bad!r}"


def test_annotations_the_registry_cannot_judge_accept_anything(typed):
    odd = {"anything": object(), "fn": "not a callable", "tensor": "x", "unknown": 123, "lr": "fast",
           "loose": None}
    assert typed.make({"name": "typed", "args": odd}).kwargs["unknown"] == 123
    with pytest.raises(ConfigError, match=r"argument 'loose': expected int, got 'x'"):
        typed.check({"name": "typed", "args": {**odd, "loose": "x"}})


def test_values_the_caller_passes_at_build_time_are_not_judged(typed):
    built = typed.make({"name": "typed", "args": {"n": 2}}, args={"x": torch.tensor(1.0), "flag": 1})
    assert built.kwargs["flag"] == 1 and built.kwargs["n"] == 2
    with pytest.raises(ConfigError, match=r"argument 'n': expected int, got 'two'"):
        typed.make({"name": "typed", "args": {"n": "two"}}, args={"x": torch.tensor(1.0)})


REAL_TYPES = {  # id -> (registry, name, good args, bad args, what the message says)
    "early-stopping": ("callbacks", "early_stopping", {"monitor": "val/acc", "mode": "max", "patience": 3},
                       {"monitor": "val/acc", "patience": "x"},
                       "callback 'early_stopping' argument 'patience': expected int, got 'x'"),
    "lr-monitor": ("callbacks", "lr_monitor", {"logging_interval": "step"}, {"logging_interval": "batch"},
                   "argument 'logging_interval': expected 'step', 'epoch' or null, got 'batch'"),
    "adam": ("optimizers", "Adam", {"lr": 2e-4, "betas": [0.5, 0.999], "amsgrad": True, "weight_decay": 0},
             {"betas": [0.9]}, "optimizer 'Adam' argument 'betas': expected list of 2"),
    "sgd": ("optimizers", "SGD", {"lr": 0.1, "momentum": 0, "nesterov": True}, {"lr": 0.1, "nesterov": "yes"},
            "optimizer 'SGD' argument 'nesterov': expected bool, got 'yes'"),
    "step-lr": ("schedulers", "StepLR", {"step_size": 5, "gamma": 0.5}, {"step_size": "five"},
                "lr_scheduler 'StepLR' argument 'step_size': expected int, got 'five'"),
    "plateau": ("schedulers", "ReduceLROnPlateau", {"mode": "max", "factor": 0.5, "patience": 2, "min_lr": [0.0]},
                {"mode": "maxx"}, "lr_scheduler 'ReduceLROnPlateau' argument 'mode': expected 'min' or 'max', "
                                  "got 'maxx'"),
    "digits-mean": ("datasets", "digits", {"mean": 0.5, "std": 1, "batch_size": 8}, {"mean": "gray"},
                    "dataset 'digits' argument 'mean': expected float"),
    "mlp": ("models", "mlp", {"in_dim": 64, "hidden": [32, 16], "out_dim": 10}, {"in_dim": "sixty-four"},
            "model 'mlp' argument 'in_dim': expected int, got 'sixty-four'"),
}


def _registry(kind: str) -> Registry:
    from torchx import callbacks, datasets, models, optim

    return {"callbacks": callbacks.registry, "optimizers": optim.optimizers, "schedulers": optim.schedulers,
            "datasets": datasets.registry, "models": models.registry}[kind]


@pytest.mark.parametrize("kind, name, good, bad, message", REAL_TYPES.values(), ids=REAL_TYPES.keys())
def test_real_signatures_accept_valid_values_and_refuse_wrong_types(kind, name, good, bad, message):
    reg = _registry(kind)
    supplied = {"optimizers": ("params",), "schedulers": ("optimizer",)}.get(kind, ())
    reg.check({"name": name, "args": good}, supplied=supplied)
    with pytest.raises(ConfigError) as info:
        reg.check({"name": name, "args": bad}, supplied=supplied)
    assert message in str(info.value)


def test_trainer_params_and_checkpoint_values_are_type_checked():
    cfg = C.load_config(DIGITS, ["trainer_params={max_epochs: 1, precision: 16-mixed, devices: auto, "
                                 "limit_train_batches: 0.5, val_check_interval: 1.0, deterministic: warn, "
                                 "gradient_clip_val: 1, enable_progress_bar: false, accelerator: cpu}",
                                 "checkpoint={monitor: val/acc, mode: max, save_top_k: 2, save_last: link}"])
    C.check(cfg)
    for override, message in [
        ("trainer_params.enable_progress_bar=nope", "trainer_params argument 'enable_progress_bar': expected bool or "
                                                  "null, got 'nope'"),
        ("trainer_params.precision=bogus", "trainer_params argument 'precision': expected one of 64, 32, 16"),
        ("checkpoint.save_top_k=all", "checkpoint argument 'save_top_k': expected int, got 'all'"),
        ("checkpoint.save_last=always", "checkpoint argument 'save_last': expected bool, 'link' or null"),
    ]:
        with pytest.raises(ConfigError) as info:
            C.check(C.apply_overrides(cfg, [override]))
        assert message in str(info.value)


SHIPPED = sorted(p.name for p in (REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_passes_the_type_checks(name, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)  # `imports: [examples.my_modules]` is found from the repository root
    monkeypatch.setattr(sys, "path", list(sys.path))
    cfg = C.load(REPO / "configs" / name)
    if cfg["data_module"]["name"] == "image_folder":  # ${data:num_classes} counts its class folders
        from test_image_folder import split_layout

        cfg = C.apply_overrides(cfg, [f"data_module.args.root_dir={split_layout(tmp_path / 'images')}"])
    for _, combination in C.expand(cfg):
        if C.search_keys(combination):  # a search: checked with the first trial its sampler draws
            from torchx.session import search, space

            settings = space.search_settings(combination)
            for d, value in zip(settings.space, search.first_values(settings)):
                C.assign(combination, d.path, value)
        resolved = C.resolve(combination)
        C.import_modules(resolved)
        C.check(resolved, config_file=REPO / "configs" / name)
        with pytest.raises(ConfigError, match="argument 'enable_progress_bar': expected bool or null, got 'nope'"):
            C.check(C.apply_overrides(resolved, ["trainer_params.enable_progress_bar=nope"]))


# ---------------------------------------------------------------- 5. seed


@pytest.mark.parametrize("seed", [2**32, 2**64, -1, True, 1.5, "1"])
def test_seed_must_fit_in_32_bits(seed):
    cfg = C.load_config(DIGITS)
    for fine in (0, 2**32 - 1, None):
        C.check({**cfg, "seed": fine})
    with pytest.raises(ConfigError) as info:
        C.check({**cfg, "seed": seed})
    assert f"got {seed!r}" in str(info.value)
    assert "from 0 to 2**32-1 = 4294967295" in str(info.value)


def test_cli_refuses_a_seed_out_of_range(tmp_path):
    proc = train_pl(tmp_path, "--config", "configs/digits.yaml", "seed=4294967296")
    assert_cli_refused(proc, tmp_path, "seed", "got 4294967296", "0 to 2**32-1")


# ---------------------------------------------------------------- 6. `python -m torchx list`


def test_describe_shows_only_an_entry_s_own_docstring():
    class Documented:
        """Own first line.

        More.
        """

    class Undocumented(Documented):
        pass

    def function():
        """A function's line."""

    reg = Registry("thing")
    for name, obj in (("documented", Documented), ("undocumented", Undocumented), ("function", function)):
        reg.register(name)(obj)
    assert {n: d for n, _, d in reg.describe()} == {"documented": "Own first line.", "function": "A function's line.",
                                                    "undocumented": ""}


def test_list_shows_no_inherited_callback_docstring(capsys):
    from torchx.cli import tool_main

    assert tool_main(["list", "callbacks"]) == 0
    out = capsys.readouterr().out
    assert "Abstract base class used to build new callbacks" not in out
    swa = [line for line in out.splitlines() if line.strip().startswith("stochastic_weight_averaging ")]
    assert len(swa) == 1 and swa[0].rstrip().endswith(tuple("0123456789"))  # origin, then no text
    early = [line for line in out.splitlines() if line.strip().startswith("early_stopping ")]
    assert "Monitor a metric and stop training when it stops improving" in early[0]


# ---------------------------------------------------------------- 7. `imports:` modules that exit


EXITING_MODULES = {  # id -> (module source, what the message says)
    "sys-exit-0": ("import sys\nsys.exit(0)\n", "raised SystemExit(0)"),
    "sys-exit-text": ("import sys\nsys.exit('bye')\n", "raised SystemExit('bye')"),
    "bare-system-exit": ("raise SystemExit\n", "raised SystemExit(None)"),
    "exit-builtin": ("exit(3)\n", "raised SystemExit(3)"),
    "generator-exit": ("raise GeneratorExit('odd')\n", "failed: GeneratorExit: odd"),
    "base-exception": ("class Odd(BaseException):\n    pass\n\n\nraise Odd('very odd')\n", "failed: Odd: very odd"),
}


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """tmp_path as the working directory for `imports:`, with sys.path and sys.modules restored."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("hostile_"):
            del sys.modules[name]


@pytest.mark.parametrize("case", EXITING_MODULES)
def test_an_imported_module_that_exits_is_a_config_error(case, user_dir):
    source, message = EXITING_MODULES[case]
    name = "hostile_" + case.replace("-", "_")
    (user_dir / f"{name}.py").write_text(source)
    with pytest.raises(ConfigError) as info:
        C.import_modules({"imports": [name]})
    text = str(info.value)
    assert text.startswith(f"imports: importing '{name}' ") and message in text
    assert f"{name}.py, line" in text


def test_keyboard_interrupt_while_importing_is_not_swallowed(user_dir):
    (user_dir / "hostile_interrupt.py").write_text("raise KeyboardInterrupt\n")
    (user_dir / "hostile_exits.py").write_text("import sys\nsys.exit(0)\n")
    with pytest.raises(KeyboardInterrupt):
        C.import_modules({"imports": ["hostile_interrupt"]})
    with pytest.raises(ConfigError, match=r"importing 'hostile_exits' raised SystemExit\(0\)"):
        C.import_modules({"imports": ["hostile_exits"]})


def test_cli_refuses_an_imported_module_that_exits_0(tmp_path):
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "hostile_quits.py").write_text("import sys\n\nsys.exit(0)\n")
    path = tmp_path / "cfg.yaml"
    path.write_text(digits_with("imports: [hostile_quits]\n"))
    proc = train_pl(tmp_path, "--config", str(path), env={"PYTHONPATH": str(tmp_path / "mods")})
    assert_cli_refused(proc, tmp_path, "imports: importing 'hostile_quits' raised SystemExit(0)",
                       "hostile_quits.py, line 3")
