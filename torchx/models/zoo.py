"""torchvision and timm models by name: the models registry's fallback for names it does not register.

    model_spec: {name: resnet50, args: {num_classes: 10}}             # torchvision's, randomly initialised
    model_spec: {name: resnet50, args: {weights: IMAGENET1K_V2}}      # or DEFAULT, or ResNet50_Weights.IMAGENET1K_V2
    model_spec: {name: torchvision:resnet18}                          # torchvision's, not torchx's own resnet18
    model_spec: {name: timm:resnet18, args: {pretrained: true, num_classes: 10}}
    model_spec: {name: convnext_atto}                                 # timm's: torchvision has no such name

A name is looked up in the registered models, then torchvision's classification builders, then
timm's `create_model` names (when timm is installed); `torchvision:` or `timm:` picks one zoo.
Weights are read from the local caches (torch hub's for torchvision, Hugging Face's for timm); a
file that is not there is downloaded once, and where that cannot be done quickly the error says
where the file was expected. torchvision and timm are imported only when a name is looked up or
listed here, never at `import torchx`.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import os
import pickle
import re
import socket
import sys
import typing
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from torchx.errors import ConfigError, first_line, short_repr
from torchx.registry import close_matches

TIMM_PIN = "timm==1.0.31"  # the version the optional extra `.[timm]` installs
INSTALL_TIMM = f"pip install '{TIMM_PIN}' (or the extra: pip install -e '.[timm]')"
# Connecting to a download server gives up after this long: an offline or firewalled machine gets
# the error in seconds, not after the minutes of retries the libraries would spend.
TIMEOUT_S = 10.0
PREFIXES = ("torchvision", "timm")
EXAMPLES = {"torchvision": ("resnet50", "vit_b_16", "convnext_tiny", "efficientnet_b0", "mobilenet_v3_small"),
            "timm": ("resnet50d", "vit_small_patch16_224", "convnext_atto", "efficientnet_b0", "resnet18.a1_in1k")}
# torchvision's model classes whose __init__ takes **kwargs and drops what it does not know (a typo like
# num_class would quietly build 1000 classes): their arguments are checked here instead, the class's own
# names accepted and, after the name, what their builders read before the class sees the rest.
_DROPS_UNKNOWN = {"MobileNetV3": ("width_mult", "reduced_tail", "dilated"), "ConvNeXt": ()}
_NOT_CLASSIFICATION = ("detection", "segmentation", "video", "optical_flow", "quantization")


# ---------------------------------------------------------------- names


@cache
def torchvision_names() -> tuple[str, ...]:
    """torchvision.models' classification builders (not detection, segmentation, video, flow or quantized)."""
    import torchvision.models as tvm

    return tuple(tvm.list_models(module=tvm))


def timm_module() -> ModuleType | None:
    """The timm package, or None when it is not installed."""
    try:
        return importlib.import_module("timm")
    except ImportError:
        return None
    except Exception as e:  # installed, but broken (e.g. built for another torch)
        raise ConfigError(f"timm is installed but does not import ({type(e).__name__}: {first_line(e)}); "
                          f"reinstall it: {INSTALL_TIMM}") from e


@cache
def _timm_names(timm: ModuleType) -> tuple[str, ...]:
    """timm's model names, without pretrained tags (resnet18, not resnet18.a1_in1k)."""
    return tuple(timm.list_models())


def find(name: str, registered: Iterable[str] = ()) -> TorchvisionModel | TimmModel:
    """The zoo model `name` stands for, for a name that is not registered (`registered`: those that are,
    for the message); ConfigError saying what is known when there is none."""
    zoo, sep, bare = name.partition(":")
    if sep and zoo in PREFIXES:
        if not bare:
            raise ConfigError(f"model '{name}' names no model after '{zoo}:'; write e.g. {zoo}:{EXAMPLES[zoo][0]}")
        return _find_torchvision(name, bare) if zoo == "torchvision" else _find_timm(name, bare)
    if name in torchvision_names():
        return TorchvisionModel(name, name)
    timm = timm_module()
    if timm is not None and timm.is_model(name):
        return _timm_model(timm, name, name)
    raise ConfigError(_unknown(name, sorted(registered), timm))


def _find_torchvision(label: str, name: str) -> TorchvisionModel:
    names = torchvision_names()
    if name in names:
        return TorchvisionModel(name, label)
    other = _other_torchvision_kind(name)
    if other:
        raise ConfigError(f"unknown model '{label}': {other}")
    suggest = _prefixed_matches(name, names, "torchvision")
    raise ConfigError(f"unknown model '{label}'{suggest}; torchvision has {len(names)} classification models, "
                      f"e.g. {', '.join(EXAMPLES['torchvision'][:3])}: `python -m torchx list models`")


def _find_timm(label: str, name: str) -> TimmModel:
    timm = timm_module()
    if timm is None:
        raise ConfigError(f"model '{label}' needs timm, which is not installed: {INSTALL_TIMM}")
    if timm.is_model(name):
        return _timm_model(timm, name, label)
    names = _timm_names(timm)
    suggest = _prefixed_matches(name, names, "timm")
    raise ConfigError(f"unknown model '{label}'{suggest}; timm {timm.__version__} has {len(names)} models, "
                      f"e.g. {', '.join(EXAMPLES['timm'][:3])}: `python -m torchx list models`")


def _prefixed_matches(word: str, names: Iterable[str], prefix: str) -> str:
    """close_matches among the bare names (a shared prefix would make everything look alike), shown prefixed."""
    found = difflib.get_close_matches(word, list(names), n=3, cutoff=0.6)
    return " (did you mean " + " or ".join(repr(f"{prefix}:{f}") for f in found) + "?)" if found else ""


def _timm_model(timm: ModuleType, name: str, label: str) -> TimmModel:
    if "." in name:  # a pretrained tag (resnet18.a1_in1k): timm itself would only say so when building
        try:
            timm.models.get_pretrained_cfg(name)
        except RuntimeError:
            arch, _, tag = name.partition(".")
            tags = [t.partition(".")[2] for t in timm.list_pretrained(f"{arch}.*")]
            raise ConfigError(f"model '{label}': timm has no weights tagged '{tag}' for {arch}"
                              f"{close_matches(tag, tags)}; its tags: {', '.join(tags) or '(none)'}") from None
    return TimmModel(name, label)


def _other_torchvision_kind(name: str) -> str:
    """For a torchvision builder that is not a classifier: what it is, else ''."""
    import torchvision.models as tvm

    for kind in _NOT_CLASSIFICATION:
        module = getattr(tvm, kind, None)
        if module is not None and name in tvm.list_models(module=module):
            return (f"torchvision's {name} is a {kind} model (torchvision.models.{kind}); only classification "
                    f"models are built by name: register a factory with @torchx.models.register for it")
    return ""


def _unknown(name: str, registered: list[str], timm: ModuleType | None) -> str:
    other = _other_torchvision_kind(name)
    if other:
        return f"unknown model '{name}': {other}"
    tv = torchvision_names()
    tm = _timm_names(timm) if timm is not None else ()
    suggest = close_matches(name, sorted({*registered, *tv, *tm}))
    looked = f"not a registered model ({', '.join(registered) or 'none'}), nor one of torchvision's {len(tv)} " \
             f"classification models"
    if timm is not None:
        return f"unknown model '{name}'{suggest}; {looked} or timm's {len(tm)}: `python -m torchx list models`"
    return (f"unknown model '{name}'{suggest}; {looked}; timm is not installed, so its models are not known: "
            f"{INSTALL_TIMM}")


def summary(registered: int) -> list[str]:
    """The last lines of `python -m torchx list models`: the zoos a name is looked up in, in order."""
    tv = torchvision_names()
    lines = ["  where a model name is looked up, in order:",
             f"    registered   {registered} names, listed above",
             f"    torchvision  {len(tv)} classification models, e.g. {_examples('torchvision', tv)}; "
             f"args: weights: DEFAULT or a name like IMAGENET1K_V1 (null: random init); "
             f"torchvision:NAME skips the registered names"]
    timm = timm_module()
    if timm is None:
        lines.append(f"    timm         not installed: {INSTALL_TIMM}")
    else:
        tm = _timm_names(timm)
        lines.append(f"    timm         {len(tm)} models (timm {timm.__version__}), e.g. {_examples('timm', tm)}; "
                     f"args: pretrained: true for weights; timm:NAME skips the others")
    return lines


def _examples(zoo: str, names: tuple[str, ...]) -> str:
    return ", ".join(n for n in EXAMPLES[zoo] if n.partition(".")[0] in names)


# ---------------------------------------------------------------- the zoos' models


class TorchvisionModel:
    """A torchvision.models classification builder; `weights` by name, read from torch hub's cache."""

    def __init__(self, name: str, label: str) -> None:
        self.name = name
        self.label = label  # the name as the config wrote it, for messages

    def __repr__(self) -> str:
        return f"torchvision.models.{self.name}"

    def __call__(self, weights: str | None = None, **kwargs: Any) -> Any:
        import torchvision.models as tvm

        if "pretrained" in kwargs:  # torchvision still takes it (deprecated), and would download behind our back
            raise ConfigError(f"model '{self.label}': torchvision's 'pretrained' is replaced by 'weights': write "
                              f"weights: DEFAULT instead of pretrained: {short_repr(kwargs['pretrained'])} (valid "
                              f"weights: {self._valid()})")
        builder = tvm.get_model_builder(self.name)
        self._check_dropped(builder, kwargs)
        chosen, path = self.weights(weights), None
        if chosen is not None:
            classes = len(chosen.meta.get("categories") or ())
            if classes and "num_classes" in kwargs and kwargs["num_classes"] != classes:
                raise ConfigError(f"model '{self.label}': weights {chosen.name} score {classes} classes, so "
                                  f"num_classes must be {classes} or left out, got {short_repr(kwargs['num_classes'])} "
                                  f"(timm's models take pretrained: true with any num_classes)")
            path = fetch(chosen.url, self.label)
        try:
            return builder(weights=chosen, **kwargs)
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            cls = _class_in(e, sys.modules.get(builder.__module__))
            raise rejected(self.label, repr(self), e, kwargs, _accepted(builder, cls)) from e
        except (RuntimeError, pickle.UnpicklingError, EOFError) as e:
            if path is None:
                raise
            raise ConfigError(f"model '{self.label}': the weights file {path} does not load "
                              f"({type(e).__name__}: {first_line(e)}); delete it to download it again") from e

    def _check_dropped(self, builder: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        """Unknown arguments of the model classes that would silently drop them (see _DROPS_UNKNOWN)."""
        try:
            cls = typing.get_type_hints(builder).get("return")
        except Exception:  # an annotation that does not evaluate: leave it to the builder
            return
        if not inspect.isclass(cls) or cls.__name__ not in _DROPS_UNKNOWN:
            return
        accepted = _accepted(builder, cls, _DROPS_UNKNOWN[cls.__name__])
        for key in kwargs:
            if key not in accepted:
                raise unknown_argument(self.label, repr(self), key, accepted)

    def weights(self, value: Any) -> Any:
        """The weights enum member `value` names: IMAGENET1K_V1, DEFAULT or ResNet50_Weights.IMAGENET1K_V1;
        None for random initialisation."""
        import torchvision.models as tvm

        if value is None:
            return None
        enum = tvm.get_model_weights(self.name)
        if isinstance(value, enum):
            return value
        member = value
        if isinstance(value, str):
            owner, dot, member = value.rpartition(".")
            if dot and owner != enum.__name__:
                raise ConfigError(f"model '{self.label}': weights {short_repr(value)} are not {self.name}'s; "
                                  f"valid: {self._valid()}, or null for random initialisation")
            if member in enum.__members__:
                return enum[member]
        suggest = close_matches(str(member).upper(), list(enum.__members__))
        raise ConfigError(f"model '{self.label}': unknown weights {short_repr(value)}{suggest}; valid: "
                          f"{self._valid()}, or null for random initialisation")

    def _valid(self) -> str:
        import torchvision.models as tvm

        enum = tvm.get_model_weights(self.name)
        names = [m.name for m in enum]
        if "DEFAULT" in enum.__members__:
            names.append(f"DEFAULT (= {enum.DEFAULT.name})")
        return ", ".join(names)


class TimmModel:
    """timm.create_model(name, ...); `pretrained: true` reads the weights from the Hugging Face cache."""

    def __init__(self, name: str, label: str) -> None:
        self.name = name
        self.label = label  # the name as the config wrote it, for messages

    def __repr__(self) -> str:
        return f"timm.create_model('{self.name}')"

    def __call__(self, pretrained: bool = False, **kwargs: Any) -> Any:
        timm = timm_module()
        if timm is None:  # found while timm was there, built after it went
            raise ConfigError(f"model '{self.label}' needs timm, which is not installed: {INSTALL_TIMM}")
        if "weights" in kwargs:
            raise ConfigError(f"model '{self.label}' is timm's: it takes pretrained: true (and a weights tag in the "
                              f"name, e.g. resnet18.a1_in1k), not weights: {short_repr(kwargs['weights'])}")
        given = dict(kwargs)
        if pretrained:
            overlay = self._cached_weights(timm, kwargs.get("cache_dir"))
            if overlay:
                kwargs["pretrained_cfg_overlay"] = {**(kwargs.get("pretrained_cfg_overlay") or {}), **overlay}
        try:
            return timm.create_model(self.name, pretrained=pretrained, **kwargs)
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            module = sys.modules.get(timm.models.model_entrypoint(self.name.partition(".")[0]).__module__)
            raise rejected(self.label, repr(self), e, given, _accepted(timm.create_model, _class_in(e, module))) from e
        except Exception as e:  # a failed download or a file that does not load: the hub's errors are many
            if not pretrained:
                raise
            raise ConfigError(f"model '{self.label}': timm's pretrained weights did not load "
                              f"({type(e).__name__}: {first_line(e)}); or use pretrained: false") from e

    def _cached_weights(self, timm: ModuleType, cache_dir: str | os.PathLike | None) -> dict[str, Any] | None:
        """A pretrained_cfg overlay pointing timm at the weights file in the local cache; None when it is not
        there but can be downloaded (timm then does so)."""
        cfg = timm.models.get_pretrained_cfg(self.name)
        if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file or cfg.state_dict):
            arch = self.name.partition(".")[0]
            tagged = timm.list_pretrained(f"{arch}*")
            some = f" (names with weights: {', '.join(tagged[:5])})" if tagged else ""
            raise ConfigError(f"model '{self.label}': timm has no pretrained weights for {self.name}{some}; use "
                              f"pretrained: false, or a model that timm.list_pretrained() names")
        if cfg.file or cfg.state_dict:
            return None  # local already
        if cfg.hf_hub_id:
            return _hub_weights(self.label, cfg, cache_dir)
        # timm keeps url weights where torch hub does, or directly in cache_dir when one is given
        return {"file": str(fetch(cfg.url, self.label, cache_dir, instead="pretrained: false")), "source": None}


def _hub_weights(label: str, cfg: Any, cache_dir: str | os.PathLike | None) -> dict[str, Any] | None:
    from huggingface_hub import constants, try_to_load_from_cache

    repo, _, revision = cfg.hf_hub_id.partition("@")
    # timm's own order: the safetensors file if the repo has one, else the pickled one
    files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    cache_dir = str(cache_dir or constants.HF_HUB_CACHE)
    for file in files:
        found = try_to_load_from_cache(repo, file, cache_dir=cache_dir, revision=revision or None)
        if isinstance(found, str):
            return {"file": found, "source": None}
    reason = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else unreachable(constants.ENDPOINT)
    if reason is None:
        return None
    raise ConfigError(f"model '{label}': the pretrained weights {repo} ({' or '.join(files)}) are not in the "
                      f"Hugging Face cache {cache_dir} and cannot be downloaded from {constants.ENDPOINT}: {reason}; "
                      f"run once with network access (or set HF_HOME to a cache that has them), or use "
                      f"pretrained: false")


# ---------------------------------------------------------------- files and messages


def torch_hub_file(url: str, model_dir: str | os.PathLike | None = None) -> Path:
    """Where torch.hub keeps the file `url` downloads: torch.hub.get_dir()/checkpoints/<its name>
    (TORCH_HOME moves it), or `model_dir`/<its name>."""
    import torch

    folder = Path(model_dir) if model_dir is not None else Path(torch.hub.get_dir()) / "checkpoints"
    return folder / os.path.basename(urllib.parse.urlparse(url).path)


def fetch(url: str, label: str, model_dir: str | os.PathLike | None = None, instead: str = "weights: null") -> Path:
    """The cached weights file of `url`, downloaded first when it is not there (ConfigError if that fails;
    `instead`: what the config can say to do without the weights)."""
    import torch

    path = torch_hub_file(url, model_dir)
    if path.is_file():
        return path
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]  # deepest first
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"downloading {url} to {path}", file=sys.stderr)
        with _socket_timeout(TIMEOUT_S):
            torch.hub.download_url_to_file(url, str(path), hash_prefix=_hash_prefix(path.name), progress=True)
    except (OSError, RuntimeError, ValueError) as e:  # URLError and timeouts are OSErrors; a bad hash a RuntimeError
        for folder in made:  # leave the cache as it was
            with contextlib.suppress(OSError):
                folder.rmdir()
        elsewhere = ("point cache_dir at a folder that has it" if model_dir is not None
                     else "set TORCH_HOME to a folder whose hub/checkpoints has it")
        raise ConfigError(f"model '{label}': the weights file was expected at {path} and could not be downloaded "
                          f"from {url} ({type(e).__name__}: {first_line(e)}); download it there by hand (or "
                          f"{elsewhere}), or use {instead}") from e
    return path


def _hash_prefix(file_name: str) -> str | None:
    """The sha256 prefix torch hub file names carry (resnet18-f37072fd.pth), checked as torchvision does."""
    found = re.search(r"-([a-f0-9]+)\.", file_name)
    return found.group(1) if found else None


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """urllib (behind torch.hub) waits forever by default; a socket that cannot connect or read gives up."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds if before is None else min(before, seconds))
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def unreachable(url: str) -> str | None:
    """Why `url`'s server (or the proxy the environment names for it) cannot be connected to within
    TIMEOUT_S; None when it can."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        via = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = via.hostname or "", via.port or 80
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_S):
            return None
    except OSError as e:
        return f"cannot connect to {host}:{port} ({first_line(e)})"


# timm.create_model's arguments that a config has no business with: left out of the "accepted" lists
_INTERNAL = ("model_name", "pretrained_cfg", "pretrained_cfg_overlay", "scriptable", "exportable", "no_jit",
             "device", "dtype")
_UNKNOWN_ARGUMENT = re.compile(r"unexpected keyword argument '(\w+)'")


def rejected(label: str, origin: str, e: BaseException, given: dict[str, Any], accepted: list[str]) -> ConfigError:
    """One line for a zoo builder's TypeError or ValueError: the model, and the argument when it can be told."""
    text = first_line(e)
    unknown = _UNKNOWN_ARGUMENT.search(text)
    if unknown:
        return unknown_argument(label, origin, unknown.group(1), accepted)
    named = [k for k in given if re.search(rf"\b{re.escape(k)}\b", text)]
    if named:
        return ConfigError(f"model '{label}' ({origin}) argument '{named[0]}' = {short_repr(given[named[0]])}: {text}")
    return ConfigError(f"model '{label}' ({origin}) rejected its arguments {short_repr(given)}: "
                       f"{type(e).__name__}: {text}")


def unknown_argument(label: str, origin: str, arg: str, accepted: list[str]) -> ConfigError:
    listing = f"; accepted: {', '.join(accepted)}" if accepted else ""
    return ConfigError(f"model '{label}' ({origin}) got an unknown argument '{arg}'{close_matches(arg, accepted)}"
                       f"{listing}")


def _accepted(builder: Callable[..., Any], cls: Any, extra: Iterable[str] = ()) -> list[str]:
    """The builder's own keyword arguments, then the optional ones of the model class `cls` (its required
    ones are the builder's to give), then `extra`."""
    names = [n for n, p in inspect.signature(builder).parameters.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in _INTERNAL]
    if inspect.isclass(cls):
        names += [n for n, p in inspect.signature(cls).parameters.items()
                  if p.default is not p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                  and n not in names and n not in _INTERNAL]
    return names + [n for n in extra if n not in names]


def _class_in(e: BaseException, module: ModuleType | None) -> Any:
    """The model class an error names (`ResNet.__init__() got an unexpected ...`), looked up in `module`."""
    found = re.match(r"(\w+)\.__init__\(\)", first_line(e))
    return getattr(module, found.group(1), None) if found and module else None
