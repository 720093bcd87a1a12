"""Name -> constructor tables, one per kind of thing a config can build."""

from __future__ import annotations

import collections.abc
import copy
import difflib
import inspect
import numbers
import os
import pathlib
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from torchx.errors import ConfigError, RegistryError, short_repr


class UnknownArgumentError(ConfigError):
    """A spec gives an argument its constructor does not take; `argument` is its name."""

    def __init__(self, message: str, argument: str) -> None:
        super().__init__(message)
        self.argument = argument


def close_matches(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """' (did you mean 'x'?)' when `word` looks like a typo of one of `choices`, else ''."""
    found = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    if not found:
        return ""
    return " (did you mean " + " or ".join(repr(f) for f in found) + "?)"


def _origin(obj: Any) -> str:
    """'module:line' where obj is defined, for messages and listings."""
    try:
        line = inspect.getsourcelines(obj)[1]
    except (OSError, TypeError):
        line = "?"
    return f"{getattr(obj, '__module__', '?')}:{line}"


class Registry:
    """Maps names to classes or factory functions of one kind.

    An entry is called with the keyword arguments of a spec, `{name: ..., args: {...}}`,
    and returns the built object. `fallback(name)` may supply entries that were never
    registered (torch.optim classes for the optimizer registry); registered names win.
    """

    def __init__(self, kind: str, fallback: Callable[[str], Any] | None = None,
                 fallback_names: Callable[[], list[str]] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._fallback = fallback
        self._fallback_names = fallback_names

    def register(self, name: str) -> Callable[[Any], Any]:
        """Decorator: `@registry.register('name')` on a class or a function."""
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{self.kind} names must be non-empty strings, got {name!r}")

        def decorator(obj: Any) -> Any:
            if name in self._entries:
                raise RegistryError(
                    f"{self.kind} '{name}' is already registered by {_origin(self._entries[name])}; "
                    f"{_origin(obj)} registers it again. Pick another name.")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> Any:
        if isinstance(name, str) and name in self._entries:
            return self._entries[name]
        obj = self._fallback(name) if self._fallback and isinstance(name, str) else None
        if obj is None:
            known = self.keys()
            raise ConfigError(
                f"unknown {self.kind} '{name}'{close_matches(str(name), known)}; "
                f"known {self.kind} names: {', '.join(known) or '(none)'}")
        return obj

    def check(self, spec: Any, args: Mapping[str, Any] | None = None,
              supplied: tuple[str, ...] = ()) -> tuple[Any, dict[str, Any]]:
        """Resolve a spec and bind its arguments without building anything.

        `supplied` names arguments the caller passes at build time (e.g. `params`).
        Returns the constructor and the merged keyword arguments.
        """
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ConfigError(f"a {self.kind} spec must be a mapping with 'name' (and optional "
                              f"'args'), got {spec!r}")
        name = spec["name"]
        if not isinstance(name, str):
            raise ConfigError(f"a {self.kind} name must be a string, got {name!r}")
        ctor = self.get(name)
        kwargs = spec.get("args") or {}
        if not isinstance(kwargs, Mapping):
            raise ConfigError(f"{self.kind} '{name}': 'args' must be a mapping, got {kwargs!r}")
        kwargs = copy.deepcopy(dict(kwargs))
        from_spec = [k for k in kwargs if k not in (args or {})]  # what the caller passes is not checked
        kwargs.update(args or {})
        self._bind(name, ctor, kwargs, supplied, from_spec)
        return ctor, kwargs

    def make(self, spec: Any, args: Mapping[str, Any] | None = None) -> Any:
        """Build `spec`: a deep copy of `spec['args']`, then `args` merged over it."""
        ctor, kwargs = self.check(spec, args)
        try:
            return ctor(**kwargs)
        except (ValueError, TypeError) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"{self.kind} '{spec['name']}' rejected its arguments "
                              f"{spec.get('args') or {}}: {e}") from e

    def _bind(self, name: str, ctor: Any, kwargs: dict[str, Any], supplied: tuple[str, ...],
              typed: list[str] = ()) -> None:
        """Check kwargs against the signature: unknown and missing names, and the values of `typed`
        against their parameters' annotations."""
        try:
            sig = inspect.signature(ctor)
        except (TypeError, ValueError):  # some builtins have no signature; let the call decide
            return
        params = sig.parameters
        takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
        named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        accepted = ", ".join(named) or "(none)"
        if not takes_any:
            for key in kwargs:
                if key not in named:
                    raise UnknownArgumentError(f"{self.kind} '{name}' got an unknown argument '{key}'"
                                               f"{close_matches(str(key), named)}; accepted: {accepted}", key)
        for n in named:
            p = params[n]
            if p.default is p.empty and n not in kwargs and n not in supplied:
                raise ConfigError(f"{self.kind} '{name}' is missing the required argument '{n}'; "
                                  f"accepted: {accepted}")
        for key in typed:
            p = params.get(key)
            if p is None or p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                continue
            value = kwargs[key]
            if _is_default(value, p.default) or (value is None and p.default is None):
                continue  # the default itself, or None for `x: int = None`, whatever the annotation says
            hint = _annotation(p, ctor)
            if not conforms(value, hint):
                raise ConfigError(f"{self.kind} '{name}' argument '{key}': expected {describe_type(hint)}, "
                                  f"got {short_repr(value)}")

    def keys(self) -> list[str]:
        names = set(self._entries)
        if self._fallback_names:
            names.update(self._fallback_names())
        return sorted(names)

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str) and name in self._entries:
            return True
        try:
            return bool(self._fallback and isinstance(name, str) and self._fallback(name) is not None)
        except ConfigError:  # a fallback that refuses the name
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def describe(self) -> list[tuple[str, str, str]]:
        """(name, 'module:line', first docstring line) for every entry."""
        rows = []
        for name in self.keys():
            obj = self.get(name)
            rows.append((name, _origin(obj), _own_doc(obj)))
        return rows

    def __repr__(self) -> str:
        lines = [f"Registry({self.kind!r}, {len(self)} entries)"]
        lines += [f"  {n:<28} {o:<40} {d}" for n, o, d in self.describe()]
        return "\n".join(lines)


def _own_doc(obj: Any) -> str:
    """The first line of obj's own docstring; '' when it has none (not its base class's)."""
    if inspect.isroutine(obj):
        doc = obj.__doc__
    else:  # a class, or an instance (a partial): only what it defines itself
        doc = vars(obj).get("__doc__") if hasattr(obj, "__dict__") else None
    if not isinstance(doc, str):
        return ""
    lines = inspect.cleandoc(doc).strip().splitlines()
    return lines[0] if lines else ""


# ---------------------------------------------------------------- argument values against annotations


def _annotation(param: inspect.Parameter, ctor: Any) -> Any:
    """The parameter's annotation as an object; Any where there is none or it cannot be evaluated."""
    hint = param.annotation
    if hint is param.empty:
        return Any
    if isinstance(hint, str):  # `from __future__ import annotations`: evaluate where the code was written
        fn = ctor.__init__ if inspect.isclass(ctor) else ctor
        namespace = getattr(inspect.unwrap(fn), "__globals__", None)
        if namespace is None:
            namespace = vars(sys.modules[ctor.__module__]) if ctor.__module__ in sys.modules else {}
        try:
            return eval(hint, dict(namespace))  # noqa: S307  (an annotation of code that is already imported)
        except Exception:
            return Any
    return hint


def _is_default(value: Any, default: Any) -> bool:
    if not isinstance(default, (str, int, float, bool, tuple, list)):
        return False
    try:
        return type(value) is type(default) and bool(value == default)
    except Exception:
        return False


_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.MutableSequence)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def _is_path_type(hint: Any) -> bool:
    return hint is os.PathLike or (inspect.isclass(hint) and issubclass(hint, pathlib.PurePath))


def conforms(value: Any, hint: Any) -> bool:
    """Whether a config value fits a type hint. Only plain types are judged (str, int, float, bool,
    None, Optional/Union, Literal, list/tuple/Sequence, dict/Mapping, Path); anything else is
    accepted, as the constructor knows best. bool is not an int; an int is a float; a list is a tuple."""
    if hint is Any or isinstance(hint, (str, typing.TypeVar)):
        return True
    if hint is None or hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(conforms(value, a) for a in args)
    if origin is typing.Literal:
        if not all(isinstance(a, (str, int, float, bool, type(None))) for a in args):
            return True  # enum members and the like: the constructor knows how to read them
        return any(type(value) is type(a) and value == a for a in args)
    if origin is typing.Annotated:
        return conforms(value, args[0])
    if origin is os.PathLike or _is_path_type(hint):
        return isinstance(value, (str, os.PathLike))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    base = origin or hint
    if base in _SEQUENCES:
        if not isinstance(value, (list, tuple)):
            return False
        if base is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(conforms(v, a) for v, a in zip(value, args))
        return not args or all(conforms(v, args[0]) for v in value)
    if base in _MAPPINGS:
        if not isinstance(value, Mapping):
            return False
        if len(args) != 2:
            return True
        return all(conforms(k, args[0]) and conforms(v, args[1]) for k, v in value.items())
    return True


def describe_type(hint: Any) -> str:
    """A type hint in words: 'float or list of float', "'step', 'epoch' or null"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is None or hint is type(None):
        return "null"
    if origin is typing.Union or origin is types.UnionType or origin is typing.Literal:
        arms = args if origin is not typing.Literal else (hint,)
        literals = [v for a in arms if typing.get_origin(a) is typing.Literal for v in typing.get_args(a)]
        words = [describe_type(a) for a in arms if a is not type(None) and typing.get_origin(a) is not typing.Literal]
        if len(literals) > 3:
            words.append(f"one of {', '.join(map(repr, literals))}")
        else:
            words.extend(map(repr, literals))
        if type(None) in arms:
            words.append("null")
        return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"
    if origin is typing.Annotated:
        return describe_type(args[0])
    if origin is os.PathLike or _is_path_type(hint):
        return "a path"
    base = origin or hint
    if base in _SEQUENCES:
        if base is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return f"list of {len(args)} ({', '.join(describe_type(a) for a in args)})"
        return f"list of {describe_type(args[0])}" if args else "list"
    if base in _MAPPINGS:
        return f"mapping of {describe_type(args[0])} to {describe_type(args[1])}" if len(args) == 2 else "mapping"
    return getattr(hint, "__name__", None) or str(hint)
