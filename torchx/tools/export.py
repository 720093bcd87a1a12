"""`python -m torchx export RUN_DIR --format torchscript|onnx|exported-program [--out FILE] [--ckpt ...]`.

The run's network (`run.model`: the wrapper's model, in eval mode with the checkpoint's weights) is
written as a file that runs without torchx, traced on a real batch: the first --batch-size inputs
of the run's test split (else val, else train), after the same loader and transforms as its
evaluation. The file is then loaded back as its users will load it (torch.jit.load,
torch.export.load, onnxruntime) and its outputs compared with the eager model's on that batch and
on a batch of another size (every format is written with a dynamic batch dimension); the largest
absolute difference is printed and must be within the format's tolerance, else the file is not
kept and the exit status is 1. A sidecar `<file>.json` says what to feed it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from torchx.errors import ConfigError, first_line
from torchx.tools.api import LoadedRun, load_run, pick_checkpoint, run_dir_of

SUFFIX = {"torchscript": ".pt", "exported-program": ".pt2", "onnx": ".onnx"}
# the largest |exported - eager| accepted: float32 kernels of the same library (TorchScript, torch.export)
# agree to rounding; onnxruntime's own kernels sum in other orders (measured ~1e-6 on torchx's models)
TOLERANCE = {"torchscript": 1e-5, "exported-program": 1e-5, "onnx": 1e-4}
ONNX_INSTALL = "pip install -e '.[onnx]' (onnx, onnxruntime, onnxscript)"


def main(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} must be at least 1")
    if args.format == "onnx":
        check_onnx()
    run_dir = run_dir_of(args.run_dir)
    _, label = pick_checkpoint(run_dir, args.ckpt)
    out = output_path(run_dir, args.format, label, args.out)
    run = load_run(run_dir, args.ckpt, trust_checkpoint=args.trust_checkpoint)
    x = real_batch(run, args.batch_size)
    model = exportable(run, x, args.output_key)
    with torch.no_grad():
        expected = tensor_out(model(x), "the model")
    # the temporary file keeps the suffix: torch.export's reader and writer check it
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp{out.suffix}")
    made = [] if out.parent.is_dir() else [out.parent, *(p for p in out.parent.parents if not p.exists())]
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write(args.format, model, x, tmp)
            diff, checked = compare(args.format, tmp, model, x, expected)
        tolerance = TOLERANCE[args.format]
        if diff is not None and not diff <= tolerance:
            print(f"export: the {args.format} file's outputs differ from the model's by up to {diff:.3g} "
                  f"(tolerance {tolerance:g}); it was not kept", file=sys.stderr)
            return 1
        os.link(tmp, out)  # fails rather than replace a file written meanwhile
        kept = True
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".data").unlink(missing_ok=True)  # an exporter's external weights, if any
        for folder in made if not kept else []:  # a refused export leaves the run directory as it was
            try:
                folder.rmdir()
            except OSError:
                break
    sidecar(out, run, args.format, x, expected, diff, checked)
    size = out.stat().st_size
    print(f"wrote {out} ({size / 1e6:.2f} MB) and {out.name}.json: {args.format} of {type(model).__name__} "
          f"from {run.ckpt_path}, input {list(x.shape[1:])} {str(x.dtype).replace('torch.', '')} with any batch size")
    if diff is None:
        print(f"not compared: {checked}")
    else:
        print(f"max abs difference vs eager: {diff:.3g} (tolerance {tolerance:g}) on batches of {checked}")
    return 0


def check_onnx() -> None:
    """--format onnx needs onnx and onnxscript (torch's exporter); onnxruntime only for the comparison."""
    for package in ("onnx", "onnxscript"):
        try:
            __import__(package)
        except ImportError:
            raise ConfigError(f"--format onnx needs the {package} package, which is not installed: "
                              f"{ONNX_INSTALL}") from None


def output_path(run_dir: Path, fmt: str, label: str, given: str | None) -> Path:
    if given is not None:
        path = Path(given)
        if path.suffix != SUFFIX[fmt]:
            raise ConfigError(f"--out {given}: a {fmt} file ends in {SUFFIX[fmt]}, e.g. --out model{SUFFIX[fmt]}")
        if path.exists():
            raise ConfigError(f"--out {given} already exists; torchx does not replace it, give another --out")
        if not path.parent.is_dir() and path.parent.exists():
            raise ConfigError(f"--out {given}: '{path.parent}' is not a folder")
        return path
    n = 1
    while True:
        path = run_dir / "export" / (f"model-{label}" + (f"-{n}" if n > 1 else "") + SUFFIX[fmt])
        if not path.exists():
            return path
        n += 1


def real_batch(run: LoadedRun, size: int) -> torch.Tensor:
    """The model's input for the first `size` samples of the run's test split (else val, else train),
    through the data module's evaluation loader and batch hooks, as `test` sees them."""
    from torchx.datasets.base import TensorDataModule
    from torchx.loop import to_device

    data = run.data_module("test")
    for split, hook in (("test", "test_dataloader"), ("val", "val_dataloader"), ("train", "train_dataloader")):
        if isinstance(data, TensorDataModule):
            if not data.has_split(split):
                continue
            data.eval_batch_size = size
            loader = data._loader(split, train=False)
        else:
            try:
                loader = getattr(data, hook)()
            except Exception:  # a hook the module does not implement
                continue
        if not loader:
            continue
        split_batch = getattr(run.wrapper, "split", None)
        chunks, have = [], 0
        for batch in loader:  # a loader of small batches: as many as make `size` samples
            batch = to_device(batch, torch.device("cpu"), data, run.wrapper)
            x = split_batch(batch)[0] if callable(split_batch) else batch[0] if isinstance(batch, (list, tuple)) \
                else batch
            if not isinstance(x, torch.Tensor):
                raise ConfigError(f"the model's input is a {type(x).__name__}, not a tensor; export takes models "
                                  f"of one tensor input")
            chunks.append(x)
            have += len(x)
            if have >= size:
                break
        if not chunks:
            continue
        x = torch.cat(chunks)[:size]
        # torch.export fixes a dimension seen as 1: a split of one sample is traced as two copies of it
        return x if len(x) > 1 else x.expand(2, *x.shape[1:]).contiguous()
    raise ConfigError(f"the data module {type(data).__name__} has no split to take a real batch from")


class Picked(torch.nn.Module):
    """A model whose output is a dict or tuple, reduced to the entry the wrapper's output_key names, as
    the wrapper reads it in training: the exported file then gives that one tensor."""

    def __init__(self, model: torch.nn.Module, key: str | int) -> None:
        super().__init__()
        self.model, self.key = model, key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[self.key]


def exportable(run: LoadedRun, x: torch.Tensor, key: str | None = None) -> torch.nn.Module:
    """The run's network in eval mode; one with several outputs gives the entry `key` names (an int
    when written in digits), by default the one its wrapper trains on (`output_key`)."""
    model = run.model.eval()
    if key is None:
        key = getattr(run.wrapper, "output_key", None)
    elif key.lstrip("-").isdigit():
        key = int(key)
    if key is None:
        return model
    with torch.no_grad():
        out = model(x)
    if isinstance(out, dict) and key in out or isinstance(out, (list, tuple)) and isinstance(key, int) \
            and -len(out) <= key < len(out):
        return Picked(model, key).eval()
    tensor_out(out, f"the model (asked for output {key!r})")
    return model  # a single tensor: there is nothing to pick


def tensor_out(out: Any, what: str) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        which = f"keys: {', '.join(map(repr, out))}"
    elif isinstance(out, (list, tuple)):
        which = f"indices 0 to {len(out) - 1}"
    else:
        raise ConfigError(f"{what} returns a {type(out).__name__}, not a tensor; export takes models with one "
                          f"tensor output")
    raise ConfigError(f"{what} returns a {type(out).__name__} ({which}), not a tensor; export takes one tensor "
                      f"output: name it with --output-key")


def write(fmt: str, model: torch.nn.Module, x: torch.Tensor, path: Path) -> None:
    """Write `model`, traced on `x`, with a dynamic batch dimension."""
    try:
        if fmt == "torchscript":
            # tracing records the ops run on x; batch size stays free since torchx's models do not branch on it
            traced = torch.jit.trace(model, (x,), check_trace=False)
            torch.jit.save(traced, str(path))
        elif fmt == "exported-program":
            torch.export.save(export_program(model, x), str(path))
        else:
            program = export_program(model, x)
            # weights inside the one file (not beside it in a .data file that would keep the temporary name)
            torch.onnx.export(program, (x,), str(path), input_names=["input"], output_names=["output"],
                              dynamo=True, verbose=False, external_data=False)
            import onnx

            onnx.checker.check_model(str(path))
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"--format {fmt}: {type(model).__name__} cannot be exported: {type(e).__name__}: "
                          f"{first_line(e, 300)}") from None


def export_program(model: torch.nn.Module, x: torch.Tensor) -> Any:
    """torch.export with the batch dimension dynamic (as the file's users feed any batch size)."""
    batch = torch.export.Dim("batch", min=1)
    return torch.export.export(model, (x,), dynamic_shapes=({0: batch},))


def compare(fmt: str, path: Path, model: torch.nn.Module, x: torch.Tensor,
            expected: torch.Tensor) -> tuple[float | None, str]:
    """The largest |loaded file's output - eager output| on `x` and on a batch of another size."""
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError:
            return None, f"onnxruntime is not installed ({ONNX_INSTALL})"
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(inp: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run(None, {name: inp.numpy()})[0])
    elif fmt == "torchscript":
        loaded = torch.jit.load(str(path))
        run = loaded
    else:
        run = torch.export.load(str(path)).module()
    sizes = [len(x)] + ([max(1, len(x) // 2)] if len(x) > 1 else [])
    diff = 0.0
    with torch.no_grad():
        for n in sizes:
            want = expected if n == len(x) else model(x[:n])
            got = tensor_out(run(x[:n]), f"the loaded {fmt} file")
            if got.shape != want.shape:
                raise ConfigError(f"--format {fmt}: the loaded file gives shape {list(got.shape)} for a batch of "
                                  f"{n}, the model {list(want.shape)}")
            diff = max(diff, float((got.float() - want.float()).abs().max()))
    return diff, " and ".join(map(str, sizes))


def sidecar(out: Path, run: LoadedRun, fmt: str, x: torch.Tensor, y: torch.Tensor, diff: float | None,
            checked: str) -> None:
    """<file>.json: what the file takes and gives, how the data was prepared, where it came from."""
    from torchx.run import atomic_write

    data = run.config["data_module"]
    info = {"format": fmt, "file": out.name, "input": {"shape": ["batch", *x.shape[1:]],
                                                     "dtype": str(x.dtype).replace("torch.", "")},
            "output": {"shape": ["batch", *y.shape[1:]], "dtype": str(y.dtype).replace("torch.", "")},
            "data_module": data, "checkpoint": str(run.ckpt_path), "max_abs_diff": diff,
            "tolerance": TOLERANCE[fmt], "compared_on_batches": checked, "torch": torch.__version__,
            "load": {"torchscript": "torch.jit.load(file)", "exported-program": "torch.export.load(file).module()",
                     "onnx": "onnxruntime.InferenceSession(file)"}[fmt]}
    atomic_write(out.with_name(out.name + ".json"), lambda f: f.write((json.dumps(info, indent=2) + "\n").encode()))
