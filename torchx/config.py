"""Configs: YAML files with `_base_` inheritance, KEY=VALUE overrides, `_`-key sweeps, checks.

A config moves through these steps, each a plain function on plain dicts:

    cfg = load(path)                      # _base_ merged, interpolations still unresolved
    cfg = apply_overrides(cfg, ["a.b=1"])  # command-line KEY=VALUE and +KEY=VALUE
    for name, c in expand(cfg):           # one config per sweep combination
        c = resolve(c)                    # ${...} interpolation (OmegaConf)
        import_modules(c); check(c)       # user @register lines run, then everything is checked

OmegaConf merges files and resolves interpolation; overrides are walked here so that a
mistyped key gets a message with close matches instead of silently creating a new key.
"""

from __future__ import annotations

import copy
import importlib
import itertools
import json
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from torchx.errors import ConfigError, TorchxError
from torchx.registry import Registry, close_matches

# Every top-level key a config may have, and what it is for (shown in `unknown key` errors).
TOP_LEVEL_KEYS = {
    "imports": "modules to import so that their @register lines run",
    "vars": "free-form values for ${vars.x} interpolation",
    "seed": "global seed (int) or null",
    "data_module": "spec of the data module (datasets registry)",
    "train_wrapper": "spec of the training wrapper (wrappers registry)",
    "trainer_params": "keyword arguments of pl.Trainer",
    "checkpoint": "keyword arguments of pl.callbacks.ModelCheckpoint",
    "callbacks": "list of callback specs (callbacks registry)",
    "metrics": "list of metric specs (torchmetrics by snake_case name, or the metrics registry)",
}
REQUIRED_KEYS = ("data_module", "train_wrapper")

# Extra keys a scheduler spec may carry besides name/args, with Lightning's meaning.
SCHED_KEYS = ("interval", "frequency", "monitor", "strict")


# ---------------------------------------------------------------- YAML reading


class _Loader(yaml.SafeLoader):
    """Safe loader that reads 1e-4 as a float (YAML 1.2) and refuses duplicate keys."""


_Loader.yaml_implicit_resolvers = {
    k: [r for r in v if r[0] not in ("tag:yaml.org,2002:float", "tag:yaml.org,2002:int")]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(  # YAML 1.2 integers: no base-60 (1:30 stays a string)
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9][0-9_]*|0x[0-9a-fA-F_]+|0o[0-7_]+)$"),
    list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                   |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def _mapping_without_duplicates(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"keys must be plain names, got {key!r}", key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key].line + 1})",
                key_node.start_mark)
        seen[key] = key_node.start_mark
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def parse_value(text: str, what: str = "value") -> Any:
    """A command-line value as YAML: '3' -> 3, '1e-4' -> 0.0001, '[1,2]' -> [1, 2], 'a' -> 'a'."""
    try:
        return yaml.load(text, Loader=_Loader) if text.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {text!r} is not valid YAML: {_yaml_problem(e)}") from None


def _yaml_problem(e: yaml.YAMLError) -> str:
    problem = getattr(e, "problem", None) or str(e)
    mark = getattr(e, "problem_mark", None)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem


def read_yaml(path: str | os.PathLike) -> dict:
    """One YAML file as a dict; syntax errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist" if not path.exists()
                          else f"config '{path}' is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config '{path}': {e}") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys to values, "
                          f"got a {type(data).__name__}")
    return data


class _Dumper(yaml.SafeDumper):
    """Safe dumper that quotes what _Loader would read as another type ('1e-4' stays a string),
    and writes a value shared by two keys twice rather than as an anchor and alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_Dumper.yaml_implicit_resolvers = {k: list(v) for k, v in _Loader.yaml_implicit_resolvers.items()}


def dump_yaml(data: Any) -> str:
    """YAML text that `read_yaml` reads back as the same values, in the same key order."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


# ---------------------------------------------------------------- _base_ and merging


def merge(*configs: dict) -> dict:
    """Deep-merge dicts left to right: later wins, lists and scalars are replaced whole.

    A mapping with `_delete_: true` replaces what it lands on instead of merging into it
    (MMEngine's convention): a new model's args should not inherit the old model's.
    OmegaConf.merge is not used: it refuses to put a list where a dict was.
    """
    merged: dict = {}
    for cfg in configs:
        merged = _merge2(merged, cfg)
    return merged


def _merge2(a: Any, b: Any) -> Any:
    if isinstance(b, dict) and b.get("_delete_") is True:
        return {k: _merge2({}, v) for k, v in b.items() if k != "_delete_"}
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = _merge2(a[k] if k in a else None, v)
        return out
    return copy.deepcopy(b)


def load(path: str | os.PathLike, _stack: tuple[Path, ...] = ()) -> dict:
    """Read `path`, merging its `_base_` file(s) (relative to it) under it, recursively."""
    path = Path(path).resolve() if _stack else Path(path)
    real = path.resolve()
    if real in _stack:
        chain = " -> ".join(str(p) for p in (*_stack, real))
        raise ConfigError(f"_base_ cycle: {chain}")
    data = read_yaml(path)
    bases = data.pop("_base_", None)
    if bases is None:
        return _plain(data, path)
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a file name or a list of file names, got {bases!r}")
    parents = []
    for base in bases:
        base_path = real.parent / base
        if not base_path.exists():
            raise ConfigError(f"{path}: _base_ file '{base}' not found (looked for {base_path})")
        parents.append(load(base_path, (*_stack, real)))
    return merge(*parents, _plain(data, path))


def _plain(data: dict, path: Path) -> dict:
    """Refuse what OmegaConf cannot hold (dates, non-string keys) with the file named."""
    try:
        return OmegaConf.to_container(OmegaConf.create(data), resolve=False)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{path}: {_omegaconf_problem(e)}") from None


def _omegaconf_problem(e: OmegaConfBaseException) -> str:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    key = getattr(e, "full_key", None)
    return f"{msg} (at '{key}')" if key else msg


# ---------------------------------------------------------------- overrides

_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=VALUE` (key must exist) and `+a.b.c=VALUE` (key must not) to a copy of cfg.

    `key_=[v1,v2]` turns an existing `key` into a sweep key. Values are parsed as YAML and
    replace what was there (a dict value replaces the whole section).
    """
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or key == "+":
            raise ConfigError(f"override '{item}' is not KEY=VALUE (e.g. trainer_params.max_epochs=3, "
                              f"or +new.key=VALUE to add a key)")
        add = key.startswith("+")
        key = key[1:] if add else key
        if not _KEY_RE.match(key):
            raise ConfigError(f"override key '{key}' is not a dotted key like 'a.b.c'")
        _set(cfg, key, parse_value(raw, f"value of '{key}'"), add)
    return cfg


def _set(cfg: dict, key: str, value: Any, add: bool) -> None:
    parts = key.split(".")
    node: Any = cfg
    for depth, part in enumerate(parts[:-1]):
        here = ".".join(parts[: depth + 1])
        node = _child(node, part, here, key, add)
    leaf, where = parts[-1], key
    if isinstance(node, list):
        node[_index(node, leaf, where)] = value
        return
    if not isinstance(node, dict):
        parent = ".".join(parts[:-1])
        raise ConfigError(f"override '{key}': '{parent}' holds {node!r}, not a section with keys")
    if leaf.endswith("_") and not add and leaf not in node and leaf[:-1] in node:
        _rename(node, leaf[:-1], leaf, value)  # `lr_=[...]` sweeps over an existing `lr`
    elif leaf in node:
        if add:
            raise ConfigError(f"override '+{key}': '{key}' already exists; write '{key}=VALUE' "
                              f"to change it")
        node[leaf] = value
    elif add:
        node[leaf] = value
    else:
        raise ConfigError(_unknown_key(key, leaf, node) + f"; to add a new key write '+{key}=VALUE'")


def _child(node: Any, part: str, here: str, key: str, add: bool) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, here)]
    if not isinstance(node, dict):
        raise ConfigError(f"override '{key}': '{here.rpartition('.')[0]}' holds {node!r}, "
                          f"not a section with keys")
    if part not in node or (node[part] is None and add):
        if not add:
            raise ConfigError(_unknown_key(here, part, node) + f"; to add a new key write '+{key}=VALUE'")
        node[part] = {}
    return node[part]


def _index(node: list, part: str, where: str) -> int:
    if not re.fullmatch(r"-?[0-9]+", part) or not -len(node) <= int(part) < len(node):
        valid = f"valid: 0..{len(node) - 1}" if node else "the list is empty"
        raise ConfigError(f"override key '{where}': '{part}' is not an index of a list of "
                          f"{len(node)} item(s) ({valid})")
    return int(part)


def _unknown_key(where: str, leaf: str, node: dict) -> str:
    known = [str(k) for k in node]
    return (f"unknown key '{where}'{close_matches(leaf, known)}; "
            f"keys there: {', '.join(known) or '(none)'}")


def _rename(node: dict, old: str, new: str, value: Any) -> None:
    items = [(new, value) if k == old else (k, v) for k, v in node.items()]
    node.clear()
    node.update(items)


# ---------------------------------------------------------------- sweeps


def is_sweep_key(key: Any) -> bool:
    return isinstance(key, str) and len(key) > 1 and key.endswith("_") and not key.startswith("_")


def sweep_keys(cfg: Any, prefix: tuple = ()) -> list[tuple[tuple, list]]:
    """(path, values) of every `_`-key in the tree, in document order."""
    found = []
    items = cfg.items() if isinstance(cfg, dict) else enumerate(cfg) if isinstance(cfg, list) else ()
    for k, v in items:
        path = (*prefix, k)
        if is_sweep_key(k):
            if not isinstance(v, list) or not v:
                raise ConfigError(f"sweep key '{_dotted(path)}' must hold a non-empty list of "
                                  f"values, got {v!r}")
            found.append((path, v))
        else:
            found.extend(sweep_keys(v, path))
    return found


def expand(cfg: dict) -> list[tuple[str, dict]]:
    """One (name, config) per combination of the sweep keys; [('', cfg)] without any.

    Names read like 'lr=0.01,batch_size=16' (the key without its `_`, lengthened to its
    dotted path where two keys would share a name).
    """
    return [(name, c) for name, _, c in combinations(cfg)]


def combinations(cfg: dict) -> list[tuple[str, dict, dict]]:
    """(name, params, config) per combination, in `itertools.product` order of the sweep keys
    (the last key varies fastest); `params` maps each key's label ('lr') to its value here.
    A sweep key replaces a plain key of the same name beside it (one inherited from `_base_`)."""
    found = sweep_keys(cfg)
    if not found:
        return [("", {}, copy.deepcopy(cfg))]
    labels = _labels([p for p, _ in found])
    runs, seen = [], set()
    for combo in itertools.product(*[values for _, values in found]):
        c = copy.deepcopy(cfg)
        for (path, _), value in zip(found, combo):
            parent = _walk(c, path[:-1])
            if isinstance(parent, dict):  # `lr_` beside an inherited `lr`: the swept value wins
                parent.pop(path[-1][:-1], None)
            _rename(parent, path[-1], path[-1][:-1], copy.deepcopy(value))
        name = ",".join(f"{label}={_fmt(v)}" for label, v in zip(labels, combo))
        if name in seen:  # values that print alike (0.1 and '0.1'): keep names unique
            name = f"{name},#{len(runs)}"
        seen.add(name)
        runs.append((name, dict(zip(labels, copy.deepcopy(combo))), c))
    return runs


def sweep_labels(cfg: dict) -> list[tuple[str, str, list]]:
    """(dotted key, label, values) of every sweep key: the grid a session records."""
    found = sweep_keys(cfg)
    labels = _labels([p for p, _ in found])
    return [(_dotted(p), label, values) for (p, values), label in zip(found, labels)]


def _labels(paths: list[tuple]) -> list[str]:
    depth = [1] * len(paths)
    while True:
        labels = [_dotted(p[-d:])[:-1] for p, d in zip(paths, depth)]
        dup = {lab for lab in labels if labels.count(lab) > 1}
        grow = [i for i, lab in enumerate(labels) if lab in dup and depth[i] < len(paths[i])]
        if not grow:
            return labels
        for i in grow:
            depth[i] += 1


def _fmt(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return re.sub(r"[^A-Za-z0-9_.+\-\[\]{}:,=]", "_", text)


def _walk(node: Any, path: tuple) -> Any:
    for p in path:
        node = node[p]
    return node


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


# ---------------------------------------------------------------- interpolation


def resolve(cfg: dict) -> dict:
    """Resolve ${a.b} interpolations; the result is a plain dict with no references left."""
    try:
        return OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"interpolation failed: {_omegaconf_problem(e)}") from None


def load_config(path: str | os.PathLike, overrides: list[str] = ()) -> dict:
    """load + overrides + resolve, for a config without sweep keys."""
    cfg = apply_overrides(load(path), list(overrides))
    found = sweep_keys(cfg)
    if found:
        keys = ", ".join(_dotted(p) for p, _ in found)
        raise ConfigError(f"this config is a sweep (keys ending in '_': {keys}); this command takes one "
                          f"experiment: run the sweep as a session with train_pl.py or train.py, or drop the '_'")
    return resolve(cfg)


# ---------------------------------------------------------------- imports


def import_modules(cfg: dict) -> list[str]:
    """Import the modules listed under `imports:`; returns the files they came from."""
    names = cfg.get("imports") or []
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"imports must be a list of module names, got {names!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # `imports: [mypkg.models]` from the project root
    files = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and (name == e.name or name.startswith(e.name + ".")):
                raise ConfigError(f"imports: cannot import '{name}': no module named '{e.name}' "
                                  f"(searched the current directory and sys.path)") from None
            raise ConfigError(f"imports: importing '{name}' failed: {_where(e)}") from None
        except TorchxError as e:
            raise ConfigError(f"imports: importing '{name}' failed: {e}") from None
        except Exception as e:  # user code: report it, do not crash with a traceback
            raise ConfigError(f"imports: importing '{name}' failed: {_where(e)}") from None
        if getattr(module, "__file__", None):
            files.append(module.__file__)
    return files


def _where(e: BaseException) -> str:
    if isinstance(e, SyntaxError):
        return f"SyntaxError: {e.msg} ({e.filename}, line {e.lineno})"
    frames = traceback.extract_tb(e.__traceback__)
    at = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    return f"{type(e).__name__}: {e}{at}"


# ---------------------------------------------------------------- checks


def spec_registry(key: str) -> Registry | None:
    """The registry a nested spec key builds from: `*optim_spec` -> optimizers, ... else None."""
    from torchx import callbacks, datasets, losses, metrics, models, optim, wrappers

    if key == "data_module":
        return datasets.registry
    if key == "train_wrapper":
        return wrappers.registry
    if key == "callbacks":
        return callbacks.registry
    if key == "metrics":
        return metrics.registry
    if key == "schedulers":  # the inner specs of `sequential` / `chained`
        return optim.schedulers
    if not isinstance(key, str) or not key.endswith("_spec"):
        return None
    for suffix, reg in (("optim_spec", optim.optimizers), ("sched_spec", optim.schedulers),
                        ("loss_spec", losses.registry)):
        if key.endswith(suffix):
            return reg
    return models.registry


# Arguments that the builder passes itself, so a config need not (and must not) give them.
SUPPLIED = {"optimizer": ("params",), "lr_scheduler": ("optimizer",)}
NOT_LOGGABLE = ("loss", "acc")  # names the wrapper logs itself


def check(cfg: dict) -> None:
    """Everything that can be checked before building: keys, names, arguments, types."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"a config must be a mapping, got {type(cfg).__name__}")
    for key in cfg:
        if key not in TOP_LEVEL_KEYS:
            listing = ", ".join(TOP_LEVEL_KEYS)
            raise ConfigError(f"unknown top-level key '{key}'{close_matches(str(key), list(TOP_LEVEL_KEYS))}; "
                              f"valid keys: {listing}")
    for key in REQUIRED_KEYS:
        if cfg.get(key) is None:
            raise ConfigError(f"the config has no '{key}' section ({TOP_LEVEL_KEYS[key]}); "
                              f"every config needs {' and '.join(REQUIRED_KEYS)}")
    seed = cfg.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError(f"seed must be a non-negative integer or null, got {seed!r}")
    _check_spec(cfg["data_module"], "data_module", spec_registry("data_module"))
    _check_spec(cfg["train_wrapper"], "train_wrapper", spec_registry("train_wrapper"))
    _check_metrics(cfg)
    callbacks = cfg.get("callbacks") or []
    if not isinstance(callbacks, list):
        raise ConfigError(f"callbacks must be a list of {{name, args}} specs, got {callbacks!r}")
    for i, spec in enumerate(callbacks):
        _check_spec(spec, f"callbacks.{i}", spec_registry("callbacks"))
    _check_kwargs(cfg.get("trainer_params"), "trainer_params", _trainer_class,
                  reserved={"logger": "torchx sets the TensorBoard logger itself",
                            "default_root_dir": "the run directory is --save-dir/--name"})
    _check_trainer_types(cfg.get("trainer_params") or {})
    _check_kwargs(cfg.get("checkpoint"), "checkpoint", _checkpoint_class,
                  reserved={"dirpath": "checkpoints always go to <run dir>/ckpt"})


def _check_spec(spec: Any, where: str, registry: Registry) -> None:
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"{where} must be a spec {{name: ..., args: {{...}}}}, got {spec!r}")
    allowed = ("name", "args", *(SCHED_KEYS if registry.kind == "lr_scheduler" else ()))
    for key in spec:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown spec key '{key}'{close_matches(str(key), list(allowed))}; "
                              f"a spec has {', '.join(allowed)}")
    if registry.kind == "lr_scheduler":
        _check_sched_keys(spec, where)
    try:
        registry.check(spec, supplied=SUPPLIED.get(registry.kind, ()))
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    for key, value in (spec.get("args") or {}).items():
        nested = spec_registry(key) if key not in ("data_module", "train_wrapper", "callbacks") else None
        if nested is None or value is None:
            continue
        if isinstance(value, list) and nested.kind == "lr_scheduler":  # schedulers may be chained
            for i, item in enumerate(value):
                _check_spec(item, f"{where}.args.{key}.{i}", nested)
        else:
            _check_spec(value, f"{where}.args.{key}", nested)


def _check_metrics(cfg: dict) -> None:
    specs = cfg.get("metrics")
    if specs is None:
        return
    if not isinstance(specs, list):
        raise ConfigError(f"metrics must be a list of {{name, args}} specs, got {specs!r}")
    seen = set()
    for i, spec in enumerate(specs):
        _check_spec(spec, f"metrics.{i}", spec_registry("metrics"))
        if spec["name"] in seen or spec["name"] in NOT_LOGGABLE:
            raise ConfigError(f"metrics.{i}: '{spec['name']}' is listed twice or clashes with the wrapper's own "
                              f"{'/'.join(NOT_LOGGABLE)}; each metric is logged as val/<name>, so names must differ")
        seen.add(spec["name"])
    if specs:
        try:
            spec_registry("train_wrapper").check(cfg["train_wrapper"], args={"metrics": specs})
        except ConfigError:
            raise ConfigError(f"metrics: wrapper '{cfg['train_wrapper']['name']}' does not take a `metrics` "
                              f"argument; drop the metrics list or use a wrapper that logs them (e.g. base)") from None


def _check_sched_keys(spec: dict, where: str) -> None:
    interval = spec.get("interval", "epoch")
    if interval not in ("epoch", "step"):
        raise ConfigError(f"{where}.interval must be 'epoch' or 'step', got {interval!r}")
    freq = spec.get("frequency", 1)
    if isinstance(freq, bool) or not isinstance(freq, int) or freq < 1:
        raise ConfigError(f"{where}.frequency must be a positive integer, got {freq!r}")


def _trainer_class() -> type:
    import pytorch_lightning as pl

    return pl.Trainer


def _checkpoint_class() -> type:
    from pytorch_lightning.callbacks import ModelCheckpoint

    return ModelCheckpoint


# trainer_params that Lightning takes without checking their type, then fails on mid-run
_INT_PARAMS = ("max_epochs", "min_epochs", "max_steps", "min_steps", "check_val_every_n_epoch",
               "log_every_n_steps", "accumulate_grad_batches", "num_sanity_val_steps", "num_nodes")
_NUMBER_PARAMS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "gradient_clip_val")


def _check_trainer_types(params: dict) -> None:
    for key in _INT_PARAMS:
        v = params.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise ConfigError(f"trainer_params.{key} must be an integer, got {v!r}")
    for key in _NUMBER_PARAMS:
        v = params.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise ConfigError(f"trainer_params.{key} must be a non-negative number, got {v!r}")
    _check_step_keys(params)


def _check_step_keys(params: dict) -> None:
    """The keys that schedule training in steps, with the values both loops can honour alike."""
    max_steps = params.get("max_steps")
    if max_steps is not None and max_steps < -1:
        raise ConfigError(f"trainer_params.max_steps must be a number of optimizer steps (>= 0), or -1 for no "
                          f"limit, got {max_steps}")
    log_every = params.get("log_every_n_steps")
    if log_every is not None and log_every < 1:
        raise ConfigError(f"trainer_params.log_every_n_steps must be a positive number of steps, got {log_every}")
    every_epochs = params.get("check_val_every_n_epoch", 1)
    if every_epochs is not None and every_epochs < 1:
        raise ConfigError(f"trainer_params.check_val_every_n_epoch must be a positive number of epochs, or null to "
                          f"count val_check_interval in training batches across epochs, got {every_epochs}")
    interval = params.get("val_check_interval")
    valid = ("an int >= 1 (validate every N training batches) or a float in (0.0, 1.0] (a fraction of an "
             "epoch)")
    if interval is None:
        pass
    elif isinstance(interval, bool) or not isinstance(interval, (int, float)):
        why = "; time-based intervals are not supported, as they would validate at different steps on every run" \
            if isinstance(interval, (str, dict)) else ""
        raise ConfigError(f"trainer_params.val_check_interval must be {valid}, got {interval!r}{why}")
    elif isinstance(interval, int) and interval < 1:
        raise ConfigError(f"trainer_params.val_check_interval must be {valid}, got {interval}")
    elif isinstance(interval, float) and not 0.0 < interval <= 1.0:
        hint = f"; write {int(interval)} to validate every {int(interval)} batches" \
            if interval > 1 and interval.is_integer() else ""
        raise ConfigError(f"trainer_params.val_check_interval must be {valid}, got {interval}{hint}")
    if every_epochs is None and not isinstance(interval, int):
        got = f"got {interval!r}" if interval is not None else "it is not set (its default 1.0 is a fraction)"
        raise ConfigError(f"trainer_params.check_val_every_n_epoch=null counts val_check_interval in training "
                          f"batches across epochs, so val_check_interval must be an int >= 1; {got}")


def check_val_interval(params: dict, train_batches: int) -> None:
    """An int val_check_interval must fit in an epoch unless it counts across epochs, as pl.Trainer
    checks when training starts; `train_batches`: batches per epoch after limit_train_batches."""
    interval = params.get("val_check_interval")
    if not isinstance(interval, int) or isinstance(interval, bool) or params.get("check_val_every_n_epoch", 1) is None:
        return
    limit_val = params.get("limit_val_batches", 1.0)
    if interval > train_batches and limit_val > 0:
        raise ConfigError(f"trainer_params.val_check_interval={interval} is more than the {train_batches} training "
                          f"batches of an epoch; use a value up to {train_batches}, a float for a fraction of an "
                          f"epoch, or set check_val_every_n_epoch=null to count batches across epochs")


def _check_kwargs(section: Any, where: str, cls: Callable[[], type], reserved: dict[str, str]) -> None:
    if section is None:
        return
    if not isinstance(section, dict):
        raise ConfigError(f"{where} must be a mapping of argument names to values, got {section!r}")
    for key in section:
        if key in reserved:
            raise ConfigError(f"{where}.{key} cannot be set: {reserved[key]}")
    registry = Registry(where)
    registry.register(where)(cls())
    try:
        registry.check({"name": where, "args": section})
    except ConfigError as e:
        raise ConfigError(str(e).replace(f"{where} '{where}'", where)) from None
