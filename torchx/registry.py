"""Name -> constructor tables, one per kind of thing a config can build."""

from __future__ import annotations

import copy
import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from torchx.errors import ConfigError, RegistryError


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
        kwargs.update(args or {})
        self._bind(name, ctor, kwargs, supplied)
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

    def _bind(self, name: str, ctor: Any, kwargs: dict[str, Any], supplied: tuple[str, ...]) -> None:
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
                    raise ConfigError(f"{self.kind} '{name}' got an unknown argument '{key}'"
                                      f"{close_matches(key, named)}; accepted: {accepted}")
        for n in named:
            p = params[n]
            if p.default is p.empty and n not in kwargs and n not in supplied:
                raise ConfigError(f"{self.kind} '{name}' is missing the required argument '{n}'; "
                                  f"accepted: {accepted}")

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
            doc = (inspect.getdoc(obj) or "").strip().splitlines()
            rows.append((name, _origin(obj), doc[0] if doc else ""))
        return rows

    def __repr__(self) -> str:
        lines = [f"Registry({self.kind!r}, {len(self)} entries)"]
        lines += [f"  {n:<28} {o:<40} {d}" for n, o, d in self.describe()]
        return "\n".join(lines)
