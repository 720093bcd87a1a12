"""Configs: YAML files with `_base_` inheritance, KEY=VALUE overrides, `_`-key sweeps, checks.

A config moves through these steps, each a plain function on plain dicts:

    cfg = load(path)                      # _base_ merged, interpolations still unresolved
    cfg = apply_overrides(cfg, ["a.b=1"])  # command-line KEY=VALUE and +KEY=VALUE
    for name, c in expand(cfg):           # one config per sweep combination
        c = resolve(c)                    # ${...} interpolation (OmegaConf)
        import_modules(c); check(c)       # user @register lines run, then everything is checked

OmegaConf resolves interpolation; merging and overrides are walked here so that a mistyped
key gets a message with close matches instead of silently creating a new key (keys under a
spec's `args`, `trainer_params` and `checkpoint` may be added: the signature checks them).

Reading a config costs little whatever the file holds: files and values are bounded in size
and nesting, YAML aliases and `${...}` interpolations in how far they expand.
"""

from __future__ import annotations

import copy
import functools
import importlib
import itertools
import json
import os
import re
import sys
import sysconfig
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from torchx.errors import ConfigError, TorchxError, first_line, short_repr
from torchx.registry import Registry, UnknownArgumentError, close_matches

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
    "compile": "true, or torch.compile's arguments: compile the network in both loops",
    "distributed": "multi-process settings: timeout_s, how long a collective waits for a silent peer",
    "search": "a session's search over the keys ending in '~': method, n_trials, metric, direction, seed, pruner, "
              "storage",
    "cross_validation": "k-fold cross-validation of each experiment: {folds: K, seed: S}",
    "loggers": "list of tracker specs (loggers registry: mlflow, wandb, comet, sacred); TensorBoard and "
               "metrics.csv are always on",
    "system_metrics": "{every_s: N}: CPU, memory and GPU figures every N seconds to every logger",
}
REQUIRED_KEYS = ("data_module", "train_wrapper")

# Extra keys a scheduler spec may carry besides name/args, with Lightning's meaning.
SCHED_KEYS = ("interval", "frequency", "monitor", "strict")

# What reading one config may cost: a config is a page of settings, not a data file.
MAX_CONFIG_BYTES = 1 << 20  # 1 MiB, for a file and for a command-line value
MAX_DEPTH = 64  # nested mappings and lists
MAX_ALIAS_NODES = 10_000  # nodes that YAML aliases (*name) repeat, all together
MAX_INTERPOLATED_CHARS = 1_000_000  # characters one ${...} value expands to
MAX_INTERPOLATIONS = 10_000  # ${...} references OmegaConf follows to resolve a config
SEED_MAX = 2**32 - 1  # numpy's and Lightning's largest seed


# ---------------------------------------------------------------- YAML reading


class _Refused(yaml.MarkedYAMLError):
    """YAML that is well-formed but costs more than a config may (too deep, aliases expanding too far)."""


class _Loader(yaml.SafeLoader):
    """Safe loader that reads 1e-4 as a float (YAML 1.2), refuses duplicate keys, nesting deeper
    than MAX_DEPTH and aliases that repeat more than MAX_ALIAS_NODES nodes ("billion laughs")."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> nodes in it once its aliases are expanded
        self._repeated = 0  # nodes reached through aliases so far

    def compose_node(self, parent: Any, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            node = self.anchors.get(event.anchor)
            if node is not None:
                size = self._sizes.get(id(node))
                if size is None:
                    raise _Refused(problem=f"alias '*{event.anchor}' refers to a node that contains it; "
                                           f"a config cannot hold a recursive structure",
                                   problem_mark=event.start_mark)
                self._repeated += size
                if self._repeated > MAX_ALIAS_NODES:
                    raise _Refused(problem=f"YAML aliases repeat more than {MAX_ALIAS_NODES} nodes (at "
                                           f"'*{event.anchor}', which alone holds {size}); anchors and aliases "
                                           f"may repeat a setting, not build a structure this large",
                                   problem_mark=event.start_mark)
            return super().compose_node(parent, index)
        nests = isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent))
        if nests:
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise _Refused(problem=f"nesting deeper than {MAX_DEPTH} levels of mappings and lists",
                               problem_mark=event.start_mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            if nests:
                self._depth -= 1
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        self._sizes[id(node)] = 1 + sum(self._sizes.get(id(c), 1) for c in children)
        return node


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
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} is {size} bytes long, more than the {MAX_CONFIG_BYTES} bytes (1 MiB) "
                          f"a value may have")
    try:
        return yaml.load(text, Loader=_Loader) if text.strip() else ""
    except _Refused as e:
        raise ConfigError(f"{what} {short_repr(text)} is refused: {_yaml_problem(e)}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {short_repr(text)} is not valid YAML: {_yaml_problem(e)}") from None
    except RecursionError:
        raise ConfigError(f"{what} {short_repr(text)} nests too deeply to read") from None


def _yaml_problem(e: yaml.YAMLError) -> str:
    problem = getattr(e, "problem", None) or str(e)
    mark = getattr(e, "problem_mark", None)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem


def read_yaml(path: str | os.PathLike) -> dict:
    """One YAML file as a dict; syntax errors name the file and the line. A file over 1 MiB,
    nesting deeper than MAX_DEPTH or aliases repeating more than MAX_ALIAS_NODES nodes is refused."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist" if not path.exists()
                          else f"config '{path}' is not a file")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)  # never more than the bound, whatever the file is
        if len(raw) > MAX_CONFIG_BYTES:
            size = path.stat().st_size
            shown = f"{size} bytes" if size > MAX_CONFIG_BYTES else f"more than {MAX_CONFIG_BYTES} bytes"
            raise ConfigError(f"config '{path}' is {shown}, more than the {MAX_CONFIG_BYTES} bytes (1 MiB) "
                              f"a config file may have")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config '{path}': {e}") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e)
        kind = "" if isinstance(e, _Refused) else "YAML syntax error: "
        raise ConfigError(f"{where}: {kind}{problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nests too deeply to read (more than {MAX_DEPTH} levels)") from None
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
    try:
        for cfg in configs:
            merged = _merge2(merged, cfg)
    except RecursionError:
        raise ConfigError(f"configs nest too deeply to merge (more than {MAX_DEPTH} levels)") from None
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
    try:
        return _load(Path(path), tuple(_stack))
    except RecursionError:
        raise ConfigError(f"{path}: its _base_ files nest too deeply to load") from None


def _load(path: Path, stack: tuple[Path, ...]) -> dict:
    path = path.resolve() if stack else path
    data, bases = _read_with_bases(path, stack)
    parents = [_load(base, (*stack, path.resolve())) for base in bases]
    return merge(*parents, _plain(data, path))


def _read_with_bases(path: Path, stack: tuple[Path, ...]) -> tuple[dict, list[Path]]:
    """The file's own keys (without `_base_`) and the paths of its `_base_` files."""
    real = path.resolve()
    if real in stack:
        chain = " -> ".join(str(p) for p in (*stack, real))
        raise ConfigError(f"_base_ cycle: {chain}")
    if len(stack) >= MAX_DEPTH:
        raise ConfigError(f"{stack[0]}: its _base_ files nest more than {MAX_DEPTH} deep (reached {path})")
    data = read_yaml(path)
    bases = data.pop("_base_", None)
    if bases is None:
        return data, []
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a file name or a list of file names, got {bases!r}")
    paths = []
    for base in bases:
        base_path = real.parent / base
        if not base_path.exists():
            raise ConfigError(f"{path}: _base_ file '{base}' not found (looked for {base_path})")
        paths.append(base_path)
    return data, paths


def inherited_keys(path: str | os.PathLike) -> set[str]:
    """Dotted keys of `load(path)` ('train_wrapper.args.model_spec.args.in_dim', 'callbacks.0.name')
    whose values come from `_base_` files rather than from `path` itself."""
    return set(_inherited(Path(path))[1])


def _inherited(path: Path) -> tuple[set[str], dict[str, Path]]:
    """(the dotted keys `path` writes itself, {each inherited dotted key: the _base_ file writing it})."""
    own = _keys(_read_with_bases(path, ())[0])
    return own, {k: f for k, f in _provenance(path).items() if k not in own}


def _provenance(path: Path, stack: tuple[Path, ...] = ()) -> dict[str, Path]:
    """Every dotted key of load(path) -> the file that writes the value it has there."""
    data, bases = _read_with_bases(path, stack)
    found = {key: path for key in _keys(data)}
    parents = [_provenance(base, (*stack, path.resolve())) for base in bases]
    for key in _keys(load(path)) - found.keys():
        for parent in reversed(parents):  # the last base to give a key is the one that wins
            if key in parent:
                found[key] = parent[key]
                break
    return found


def _keys(node: Any, prefix: str = "") -> set[str]:
    """The dotted keys of every value in a tree of dicts and lists, `_delete_` markers left out."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    keys = set()
    for k, v in items:
        if k == "_delete_":
            continue
        key = f"{prefix}{k}"
        keys.add(key)
        keys |= _keys(v, key + ".")
    return keys


def _plain(data: dict, path: Path) -> dict:
    """Refuse what OmegaConf cannot hold (dates, non-string keys) with the file named."""
    try:
        return OmegaConf.to_container(OmegaConf.create(data), resolve=False)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{path}: {_omegaconf_problem(e)}") from None


def _omegaconf_problem(e: OmegaConfBaseException) -> str:
    msg = first_line(e, limit=10**6)
    key = getattr(e, "full_key", None)
    return f"{msg} (at '{key}')" if key else msg


# ---------------------------------------------------------------- overrides

_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*~?$")  # a last `~`: a search key


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=VALUE` and `+a.b.c=VALUE` (the key must not exist yet) to a copy of cfg.

    Without `+` the key must exist, unless it is new in a spec's `args` or in `trainer_params`
    or `checkpoint` (`data_module.args.download=true`): `check` then holds it against the
    constructor's signature, so a typo is still named. Elsewhere a new key needs `+`.
    `key_=[v1,v2]` turns an existing `key` into a sweep key, `key~={choice: [v1, v2]}` into a search
    key. Values are parsed as YAML and
    replace what was there (a dict value replaces the whole section).
    """
    try:
        cfg = copy.deepcopy(cfg)
    except RecursionError:
        raise ConfigError(f"the config nests too deeply (more than {MAX_DEPTH} levels)") from None
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or key == "+":
            raise ConfigError(f"override '{_cut(item)}' is not KEY=VALUE (e.g. trainer_params.max_epochs=3, "
                              f"or +new.key=VALUE to add a key)")
        add = key.startswith("+")
        key = key[1:] if add else key
        if not _KEY_RE.match(key):
            raise ConfigError(f"override key '{_cut(key)}' is not a dotted key like 'a.b.c'")
        if key.count(".") >= MAX_DEPTH:
            raise ConfigError(f"override key '{_cut(key)}' has {key.count('.') + 1} parts; a config nests "
                              f"at most {MAX_DEPTH} levels")
        _set(cfg, key, parse_value(raw, f"value of '{_cut(key)}'"), add)
    deep = _too_deep(cfg)
    if deep is not None:
        raise ConfigError(f"overrides make the config nest deeper than {MAX_DEPTH} levels (at "
                          f"'{_cut(_dotted(deep))}')")
    return cfg


def _cut(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."


# Top-level sections that are keyword arguments of a Lightning class: a new key needs no `+`.
OPEN_SECTIONS = ("trainer_params", "checkpoint")


def _is_spec(node: Any) -> bool:
    return isinstance(node, dict) and ("name" in node or "name_" in node)


def _may_add(parts: list[str], i: int, trail: list[Any]) -> bool:
    """Whether `parts[i]`, missing from `trail[i]` (the node at parts[:i]), may be added without `+`:
    the last key of the override in a spec's args or in trainer_params or checkpoint, a spec's
    missing `args`, or a missing trainer_params or checkpoint on the way to a key of theirs."""
    last = i == len(parts) - 1
    if i == 0:
        return parts[0] in OPEN_SECTIONS and not last
    if parts[i] == "args" and _is_spec(trail[i]):
        return True
    if not last:
        return False
    return (i == 1 and parts[0] in OPEN_SECTIONS) or (parts[i - 1] == "args" and _is_spec(trail[i - 1]))


def _set(cfg: dict, key: str, value: Any, add: bool) -> None:
    parts = key.split(".")
    node: Any = cfg
    trail = [cfg]  # trail[i]: the node at parts[:i]
    for depth, part in enumerate(parts[:-1]):
        here = ".".join(parts[: depth + 1])
        node = _child(node, part, here, key, add or _may_add(parts, depth, trail))
        trail.append(node)
    leaf, where = parts[-1], key
    if isinstance(node, list):
        node[_index(node, leaf, where)] = value
        return
    if not isinstance(node, dict):
        parent = ".".join(parts[:-1])
        raise ConfigError(f"override '{key}': '{parent}' holds {short_repr(node)}, not a section with keys")
    if leaf.endswith(("_", "~")) and not add and leaf not in node and leaf[:-1] in node:
        _rename(node, leaf[:-1], leaf, value)  # `lr_=[...]` sweeps over an existing `lr`, `lr~=...` searches it
    elif leaf in node:
        if add:
            raise ConfigError(f"override '+{key}': '{key}' already exists; write '{key}=VALUE' "
                              f"to change it")
        node[leaf] = value
    elif add or _may_add(parts, len(parts) - 1, trail):
        node[leaf] = value
    else:
        raise ConfigError(_unknown_key(key, leaf, node) + f"; to add a new key write '+{key}=VALUE'")


def _child(node: Any, part: str, here: str, key: str, create: bool) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, here)]
    if not isinstance(node, dict):
        raise ConfigError(f"override '{key}': '{here.rpartition('.')[0]}' holds {short_repr(node)}, "
                          f"not a section with keys")
    if part not in node or (node[part] is None and create):
        if not create:
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


def is_search_key(key: Any) -> bool:
    return isinstance(key, str) and len(key) > 1 and key.endswith("~")


def search_keys(cfg: Any, prefix: tuple = ()) -> list[tuple[tuple, Any]]:
    """(path, distribution) of every `~`-key in the tree, in document order; the values are checked
    by torchx.session.space."""
    found = []
    items = cfg.items() if isinstance(cfg, dict) else enumerate(cfg) if isinstance(cfg, list) else ()
    for k, v in items:
        path = (*prefix, k)
        if is_search_key(k):
            found.append((path, v))
        else:
            found.extend(search_keys(v, path))
    return found


def labels(paths: list[tuple]) -> list[str]:
    """Short names of sweep or search keys: the key without its last character, lengthened to its
    dotted path where two would share a name."""
    return _labels(paths)


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
            assign(c, path, value)
        name = ",".join(f"{label}={_fmt(v)}" for label, v in zip(labels, combo))
        if name in seen:  # values that print alike (0.1 and '0.1'): keep names unique
            name = f"{name},#{len(runs)}"
        seen.add(name)
        runs.append((name, dict(zip(labels, copy.deepcopy(combo))), c))
    return runs


def assign(cfg: dict, path: tuple, value: Any) -> None:
    """Give the sweep or search key at `path` (`lr_`, `lr~`) a value, in place: it becomes the plain
    key `lr` where it stood, replacing a plain `lr` beside it (one inherited from `_base_`)."""
    parent = _walk(cfg, path[:-1])
    if isinstance(parent, dict):
        parent.pop(path[-1][:-1], None)
    _rename(parent, path[-1], path[-1][:-1], copy.deepcopy(value))


def value_text(value: Any) -> str:
    """A value as it appears in an experiment's name: short, and safe in a folder name."""
    return _fmt(value)


def dotted(path: tuple) -> str:
    return _dotted(path)


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
    """Resolve ${a.b} interpolations; the result is a plain dict with no references left.

    Before OmegaConf follows them, the references are walked here: a cycle is named whole, and
    a value that would expand too far (strings of copies of copies) is refused.
    """
    deep = _too_deep(cfg)
    if deep is not None:
        raise ConfigError(f"the config nests deeper than {MAX_DEPTH} levels (at '{_cut(_dotted(deep))}')")
    cfg = _walk_strings(cfg, lambda s: _DATA_REF.sub(lambda m: f"{_HELD}{m.group(1)}{_HELD}", s))
    check_interpolations(cfg)
    try:
        resolved = OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)
        return _walk_strings(resolved, lambda s: _HELD_REF.sub(lambda m: "${data:" + m.group(1) + "}", s))
    except OmegaConfBaseException as e:
        raise ConfigError(f"interpolation failed: {_omegaconf_problem(e)}") from None
    except RecursionError:
        raise ConfigError("interpolation failed: the references nest too deeply to resolve") from None


# ${data:NAME} refers to an attribute of the built data module: kept as written through OmegaConf's
# resolution (it is not a resolver) and replaced by `resolve_data_refs` once the data module exists
_DATA_REF = re.compile(r"\$\{data:([^${}]*)\}")
_HELD = "\x02data:"
_HELD_REF = re.compile("\x02data:([^\x02]*)\x02data:")


def _walk_strings(node: Any, fn: Any) -> Any:
    if isinstance(node, str):
        return fn(node)
    if isinstance(node, dict):
        return {k: _walk_strings(v, fn) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk_strings(v, fn) for v in node]
    return node


def data_refs(cfg: dict) -> list[tuple[tuple, str]]:
    """(path, NAME) of every ${data:NAME} left in a resolved config."""
    found: list[tuple[tuple, str]] = []
    stack: list[tuple[Any, tuple]] = [(cfg, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            found += [(path, m.group(1)) for m in _DATA_REF.finditer(node)]
        elif isinstance(node, (dict, list)):
            stack += [(v, (*path, k)) for k, v in (node.items() if isinstance(node, dict) else enumerate(node))]
    return sorted(found, key=lambda f: _dotted(f[0]))


DATA_ATTRIBUTES = ("num_classes", "in_channels", "image_size")  # what torchx's data modules declare


def declared_data(data: Any) -> list[str]:
    """The names a data module offers to ${data:...}: torchx's usual ones it has, the ones its class
    lists in `data_args`, and (for a module not built on torchx's base class) its public plain attributes."""
    from torchx.datasets.base import TensorDataModule

    names = [n for n in (*DATA_ATTRIBUTES, *getattr(data, "data_args", ())) if getattr(data, n, None) is not None]
    if isinstance(data, TensorDataModule):
        return names
    names += [n for n, v in vars(data).items() if not n.startswith("_") and n not in names
              and isinstance(v, (int, float, str, list, tuple)) and not isinstance(v, bool) and n != "hparams"]
    return names


def refuse_data_refs_in_data_module(cfg: dict) -> None:
    inside = [_dotted(path) for path, _ in data_refs(cfg) if path and path[0] == "data_module"]
    if inside:
        raise ConfigError(f"{inside[0]}: the data module's own arguments cannot use ${{data:...}}; it refers to "
                          f"the data module once it is built")


def resolve_data_refs(cfg: dict, data: Any) -> None:
    """Replace every ${data:NAME} in `cfg` (in place) by the data module's attribute NAME. A value that
    is all one reference takes the attribute's type (an int stays an int); inside text, its str."""
    refs = data_refs(cfg)
    refuse_data_refs_in_data_module(cfg)
    values: dict[str, Any] = {}
    for path, name in refs:
        if name in values:
            continue
        value = getattr(data, name, None) if name.isidentifier() and not name.startswith("_") else None
        if value is None or callable(value):
            known = declared_data(data)
            raise ConfigError(f"{_dotted(path)}: ${{data:{name}}}: the data module '{type(data).__name__}' does not "
                              f"declare '{name}'{close_matches(name, known)}; it declares: "
                              f"{', '.join(known) or '(nothing)'}")
        values[name] = list(value) if isinstance(value, tuple) else value
    for path, _ in refs:
        parent = _walk(cfg, path[:-1])
        text = parent[path[-1]]
        whole = _DATA_REF.fullmatch(text)
        parent[path[-1]] = values[whole.group(1)] if whole else \
            _DATA_REF.sub(lambda m: str(values[m.group(1)]), text)


PREBUILT: dict[str, Any] = {}  # data modules built to answer ${data:...}, kept for build.data_module


def spec_key(spec: Any) -> str:
    import json

    return json.dumps(spec, sort_keys=True, default=str)


def _data_for_refs(cfg: dict) -> Any:
    """The data module, built to read its attributes; set up (without touching the global RNG)
    only when an attribute a reference names is not known before its data is read."""
    import torch

    from torchx import datasets

    data = datasets.make(cfg["data_module"])
    if any(getattr(data, name, None) is None for _, name in data_refs(cfg)) and callable(getattr(data, "setup", None)):
        with torch.random.fork_rng(devices=[]):
            data.setup("fit")
    PREBUILT.clear()  # only the latest check's module is reused: an earlier one may describe other files
    PREBUILT[spec_key(cfg["data_module"])] = data
    return data


def _too_deep(node: Any) -> tuple | None:
    """The path of a mapping or list nested deeper than MAX_DEPTH, or None."""
    stack = [(node, (), 1)] if isinstance(node, (dict, list)) else []
    while stack:
        here, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            return path
        for k, v in here.items() if isinstance(here, dict) else enumerate(here):
            if isinstance(v, (dict, list)):
                stack.append((v, (*path, k), depth + 1))
    return None


_ESCAPE = re.compile(r"(\\*)\$\{")
_INNERMOST = re.compile(r"\$\{([^${}]*)\}")  # an interpolation with none inside it
_OPAQUE = "\x00"  # stands for a resolved ${...} while the string is scanned


def check_interpolations(cfg: dict) -> None:
    """Refuse ${...} references that form a cycle (naming it: a -> b -> a) or that would make
    OmegaConf build more than MAX_INTERPOLATED_CHARS characters for one value or follow more
    than MAX_INTERPOLATIONS references; found by walking them, without resolving anything."""
    parsed: dict[tuple, tuple[int, list[tuple], int]] = {}
    cost: dict[tuple, tuple[int, int]] = {}  # path -> (characters, references followed)
    total = 0
    for path, value in _leaves(cfg):
        if not (isinstance(value, str) and "${" in value):
            continue
        _walk_references(cfg, path, parsed, cost)
        total += cost[path][1]
        if total > MAX_INTERPOLATIONS:
            raise ConfigError(f"the config's ${{...}} interpolations follow more than {MAX_INTERPOLATIONS} "
                              f"references in all (counted up to '{_dotted(path)}'); use fewer or "
                              f"write the values out")


def _leaves(cfg: Any) -> Iterator[tuple[tuple, Any]]:
    stack: list[tuple[tuple, Any]] = [((), cfg)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, (dict, list)):
            items = list(node.items() if isinstance(node, dict) else enumerate(node))
            stack.extend(((*path, k), v) for k, v in reversed(items))
        else:
            yield path, node


def _walk_references(cfg: dict, start: tuple, parsed: dict, cost: dict) -> None:
    """Depth-first from `start` through what its value refers to, filling `cost` bottom-up."""
    stack = [(start, iter(_successors(cfg, start, parsed)))]
    on_stack = {start: 0}
    while stack:
        path, successors = stack[-1]
        for nxt in successors:
            if nxt in cost:
                continue
            if nxt in on_stack:
                chain = [p for p, _ in stack[on_stack[nxt]:]] + [nxt]
                raise ConfigError(f"interpolation cycle: {' -> '.join(_dotted(p) or '(root)' for p in chain)}; "
                                  f"a value cannot depend on itself")
            on_stack[nxt] = len(stack)
            stack.append((nxt, iter(_successors(cfg, nxt, parsed))))
            break
        else:
            stack.pop()
            del on_stack[path]
            cost[path] = _cost(cfg, path, parsed, cost)


def _successors(cfg: dict, path: tuple, parsed: dict) -> list[tuple]:
    value = _walk(cfg, path)
    if isinstance(value, dict):
        return [(*path, k) for k in value]
    if isinstance(value, list):
        return [(*path, i) for i in range(len(value))]
    if isinstance(value, str) and "${" in value:
        if path not in parsed:
            parsed[path] = _parse_interpolations(cfg, path, value)
        return list(dict.fromkeys(parsed[path][1]))
    return []


def _cost(cfg: dict, path: tuple, parsed: dict, cost: dict) -> tuple[int, int]:
    value = _walk(cfg, path)
    if isinstance(value, (dict, list)):
        children = [cost[c] for c in _successors(cfg, path, parsed)]
        return sum(c for c, _ in children) + len(children), sum(r for _, r in children)
    if path not in parsed:
        return len(str(value)), 0
    literal, targets, references = parsed[path]
    chars = literal + sum(cost[t][0] for t in targets)
    followed = references + sum(cost[t][1] for t in targets)
    where = f"'{_dotted(path)}' ({short_repr(value)})"
    if chars > MAX_INTERPOLATED_CHARS:
        raise ConfigError(f"interpolation at {where} expands to more than {MAX_INTERPOLATED_CHARS} characters; "
                          f"a config value may not be built from that many copies")
    if followed > MAX_INTERPOLATIONS:
        raise ConfigError(f"interpolation at {where} follows more than {MAX_INTERPOLATIONS} references "
                          f"to expand (copies of copies); a config value may not be built that way")
    return chars, followed


def _parse_interpolations(cfg: dict, path: tuple, text: str) -> tuple[int, list[tuple], int]:
    """(characters outside ${...}, paths of the values referred to, references) of one string.

    Innermost ${...} first, as OmegaConf reads them; `${a.${b}}` refers to b (and to a key
    known only once b is resolved, left to OmegaConf). `\\${...}` is text, not a reference.
    """
    def unescape(m: re.Match) -> str:
        slashes = len(m.group(1))
        return "\\" * (slashes // 2) + ("$" + _OPAQUE if slashes % 2 else "${")

    text = _ESCAPE.sub(unescape, text)
    targets: list[tuple] = []
    references = extra = 0
    for _ in range(MAX_DEPTH + 1):
        found = False

        def step(m: re.Match) -> str:
            nonlocal found, references, extra
            found = True
            body = m.group(1).strip()
            if ":" in body:  # a resolver call (oc.env:HOME): its result's length is unknown
                extra += len(body)
            elif _OPAQUE not in body:
                references += 1
                target = _target(cfg, path, body)
                if target is not None:
                    targets.append(target)
            return _OPAQUE

        text = _INNERMOST.sub(step, text)
        if not found:
            return len(text) - text.count(_OPAQUE) + extra, targets, references
    raise ConfigError(f"interpolations at '{_dotted(path)}' nest more than {MAX_DEPTH} levels deep "
                      f"(${{a.${{b.${{...}}}}}})")


def _target(cfg: dict, here: tuple, body: str) -> tuple | None:
    """The path `body` (absolute 'a.b[0]' or relative '..a') refers to from the value at `here`;
    where the path passes through another interpolation, that one's path. None: not found."""
    dots = len(body) - len(body.lstrip("."))
    segments = re.findall(r"[^.\[\]]+", body[dots:])
    if not segments and not dots or dots > len(here):
        return None
    path = list(here[:-dots] if dots else ())
    node = _walk(cfg, tuple(path))
    for seg in segments:
        if isinstance(node, str) and "${" in node:
            break
        if isinstance(node, dict):
            key = seg if seg in node else int(seg) if re.fullmatch(r"-?[0-9]+", seg) and int(seg) in node else None
            if key is None:
                return None
        elif isinstance(node, list):
            if not re.fullmatch(r"-?[0-9]+", seg) or not -len(node) <= int(seg) < len(node):
                return None
            key = int(seg) % len(node)
        else:
            return None
        node = node[key]
        path.append(key)
    return tuple(path)


def load_config(path: str | os.PathLike, overrides: list[str] = ()) -> dict:
    """load + overrides + resolve, for a config without sweep keys."""
    cfg = apply_overrides(load(path), list(overrides))
    found = sweep_keys(cfg)
    if found:
        keys = ", ".join(_dotted(p) for p, _ in found)
        raise ConfigError(f"this config is a sweep (keys ending in '_': {keys}); this command takes one "
                          f"experiment: run the sweep as a session with train_pl.py or train.py, or drop the '_'")
    searched = search_keys(cfg)
    if searched:
        keys = ", ".join(_dotted(p) for p, _ in searched)
        raise ConfigError(f"this config is a search (keys ending in '~': {keys}); this command takes one "
                          f"experiment: run the search as a session with train_pl.py or train.py, or give the keys "
                          f"values without the '~'")
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
        except KeyboardInterrupt:
            raise
        except SystemExit as e:  # sys.exit() at import time: even exit(0) would end the run unexplained
            raise ConfigError(f"imports: importing '{name}' raised SystemExit({e.code!r}){_at(e)}; a module "
                              f"listed under imports must define things, not exit") from None
        except BaseException as e:  # user code: report it, do not crash with a traceback
            raise ConfigError(f"imports: importing '{name}' failed: {_where(e)}") from None
        if getattr(module, "__file__", None):
            files.append(module.__file__)
    return files


def _where(e: BaseException) -> str:
    if isinstance(e, SyntaxError):
        return f"SyntaxError: {e.msg} ({e.filename}, line {e.lineno})"
    return f"{type(e).__name__}: {e}{_at(e)}"


def _at(e: BaseException) -> str:
    """' (file, line N)' of the innermost frame that raised `e`, outside Python's own library
    where there is one (`exit(0)` is raised in _sitebuiltins.py, but written in the user's file)."""
    frames = traceback.extract_tb(e.__traceback__)
    stdlib = sysconfig.get_paths()["stdlib"]
    own = [f for f in frames if not f.filename.startswith(("<frozen", stdlib))]
    frame = (own or frames)[-1] if frames else None
    return f" ({frame.filename}, line {frame.lineno})" if frame else ""


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


# hint(dotted key, dotted mapping) -> what to add to a message about that key ('' for nothing)
Hint = Callable[[str, str], str]


def _no_hint(key: str, mapping: str) -> str:
    return ""


def _base_hint(config_file: str | os.PathLike | None) -> Hint:
    """For a key that `config_file` inherits from a `_base_` file: say so, and how to replace it."""
    if config_file is None:
        return _no_hint

    @functools.cache
    def origins() -> tuple[set[str], dict[str, Path]]:
        try:
            return _inherited(Path(config_file))
        except ConfigError:  # the file changed or went away since: no hint rather than a wrong one
            return set(), {}

    def hint(key: str, mapping: str) -> str:
        own, inherited = origins()
        if key not in inherited:
            return ""
        said = (f"; '{key.rpartition('.')[2]}' is inherited from the _base_ file '{_relative(inherited[key])}', "
                f"not written in '{config_file}'")
        if mapping not in own and mapping.rpartition(".")[0] not in own:
            return said  # the file does not touch that mapping: the base alone is wrong
        return f"{said}: write `_delete_: true` in '{mapping}' to replace the base's mapping instead of merging into it"

    return hint


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def check(cfg: dict, config_file: str | os.PathLike | None = None) -> None:
    """Everything that can be checked before building: keys, names, arguments, types.

    `config_file`: the file `cfg` was loaded from; an unknown argument it inherits from a
    `_base_` file is then named as such, with the `_delete_: true` that replaces it.
    """
    hint = _base_hint(config_file)
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
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX):
        raise ConfigError(f"seed must be a non-negative integer or null, got {short_repr(seed)}; a seed is an int "
                          f"from 0 to 2**32-1 = {SEED_MAX}")
    refuse_data_refs_in_data_module(cfg)
    _check_spec(cfg["data_module"], "data_module", spec_registry("data_module"), hint)
    if data_refs(cfg):
        resolve_data_refs(cfg, _data_for_refs(cfg))
    _check_spec(cfg["train_wrapper"], "train_wrapper", spec_registry("train_wrapper"), hint)
    _check_metrics(cfg, hint)
    callbacks = cfg.get("callbacks") or []
    if not isinstance(callbacks, list):
        raise ConfigError(f"callbacks must be a list of {{name, args}} specs, got {callbacks!r}")
    for i, spec in enumerate(callbacks):
        _check_spec(spec, f"callbacks.{i}", spec_registry("callbacks"), hint)
    _check_kwargs(cfg.get("trainer_params"), "trainer_params", _trainer_class,
                  reserved={"logger": "torchx sets the loggers itself (TensorBoard and metrics.csv, and the config's "
                                      "`loggers:` list)",
                            "default_root_dir": "the run directory is --save-dir/--name"}, hint=hint)
    _check_trainer_types(cfg.get("trainer_params") or {})
    _check_kwargs(cfg.get("checkpoint"), "checkpoint", _checkpoint_class,
                  reserved={"dirpath": "checkpoints always go to <run dir>/ckpt"}, hint=hint)
    from torchx import loggers  # the trackers' names, packages and arguments

    loggers.check(cfg)

    from torchx.precision import check_compile

    check_compile(cfg.get("compile"))
    _check_distributed(cfg.get("distributed"))


def _check_distributed(section: Any) -> None:
    if section is None:
        return
    if not isinstance(section, dict):
        raise ConfigError(f"distributed must be a mapping such as {{timeout_s: 1800}}, got {short_repr(section)}")
    for key in section:
        if key != "timeout_s":
            raise ConfigError(f"distributed.{key} is not a setting{close_matches(str(key), ['timeout_s'])}; "
                              f"distributed takes timeout_s (seconds a collective waits for a silent peer)")
    timeout = section.get("timeout_s")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not 1 <= timeout <= 7 * 86400):
        raise ConfigError(f"distributed.timeout_s must be a number of seconds from 1 to 604800 (a week), got "
                          f"{short_repr(timeout)}")


def _check_spec(spec: Any, where: str, registry: Registry, hint: Hint = _no_hint) -> None:
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
    except UnknownArgumentError as e:
        raise ConfigError(f"{where}: {e}{hint(f'{where}.args.{e.argument}', f'{where}.args')}") from None
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    for key, value in (spec.get("args") or {}).items():
        nested = spec_registry(key) if key not in ("data_module", "train_wrapper", "callbacks") else None
        if nested is None or value is None:
            continue
        if isinstance(value, list) and nested.kind == "lr_scheduler":  # schedulers may be chained
            for i, item in enumerate(value):
                _check_spec(item, f"{where}.args.{key}.{i}", nested, hint)
        else:
            _check_spec(value, f"{where}.args.{key}", nested, hint)


def _check_metrics(cfg: dict, hint: Hint = _no_hint) -> None:
    specs = cfg.get("metrics")
    if specs is None:
        return
    if not isinstance(specs, list):
        raise ConfigError(f"metrics must be a list of {{name, args}} specs, got {specs!r}")
    seen = set()
    for i, spec in enumerate(specs):
        _check_spec(spec, f"metrics.{i}", spec_registry("metrics"), hint)
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


def _check_kwargs(section: Any, where: str, cls: Callable[[], type], reserved: dict[str, str],
                  hint: Hint = _no_hint) -> None:
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
    except UnknownArgumentError as e:
        message = str(e).replace(f"{where} '{where}'", where)
        raise ConfigError(message + hint(f"{where}.{e.argument}", where)) from None
    except ConfigError as e:
        raise ConfigError(str(e).replace(f"{where} '{where}'", where)) from None
