"""`python -m torchx predict RUN_DIR --input PATH|split:NAME [--out FILE] [--ckpt ...] [--top-k K]
[--batch-size N] [--gpu ID]`.

Runs a run's model (its checkpoint's weights, in eval mode, under torch.no_grad) on

- `split:train|val|test`: the data module's own loader for that split, batches moved and finished
  by the same hooks as in training (torchx.loop.to_device). For torchx's data modules split:train is
  read like an evaluation split: eval transforms, no shuffling; a plain LightningDataModule's train
  loader shuffles and augments, so it is refused there.
- an image file or a folder of them: PNG and JPEG (.png .jpg .jpeg, any case). A folder is read
  recursively in sorted order of the files' paths; other files and hidden ones are skipped (and
  counted in a note), a PNG or JPEG that does not decode is refused. Images are read gray when the
  data module takes 1 channel, RGB when 3, and go through the same dataset class, normalisation and
  eval transforms as the data module's evaluation splits, so a file and the same pixels in a split
  give the same prediction. Sizes and channels the model cannot take are refused before anything
  runs, naming the file.

The model is called through the wrapper's `predict_step` (Lightning's hook; torchx's base wrapper
has one), or its forward on the batch's input when it has none. Classifiers (class scores [N, C]
against integer labels) give a CSV: input, class (and class_name when the data module has
`classes`), the top-k classes with softmax scores, and the true label for split inputs. Other
models give a tensor file: `.pt` holds {"inputs": [names], "outputs": tensor}; `.npy` the outputs
alone, one row per input in the order above (use .pt to keep the names with them).

The default output is RUN_DIR/predictions/<input>-<ckpt>.csv (or .pt), -2, -3, ... when that
exists; an --out that exists is refused, never replaced.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from torchx.datasets.base import BatchTensorDataset
from torchx.errors import ConfigError, first_line
from torchx.tools.api import load_run, pick_checkpoint, run_dir_of

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
OUT_SUFFIXES = (".csv", ".pt", ".npy")
SPLITS = ("train", "val", "test")
LOADERS = {"train": "train_dataloader", "val": "val_dataloader", "test": "test_dataloader"}
BAR_AFTER = 4  # batches; fewer finish before a bar would be worth drawing


@dataclass
class Inputs:
    """What to predict on: a label for file names, how many batches, and the batches themselves as
    (what the model's step takes, the true labels or None)."""

    label: str
    names: list[str] | None  # file inputs' names; a split's are split:NAME#index
    n_batches: int | None
    batches: Callable[[], Iterator[tuple[Any, torch.Tensor | None]]]


def main(args: argparse.Namespace) -> int:
    check_numbers(args)
    out = check_out(args.out)
    device = pick_device(args.gpu)
    run_dir = run_dir_of(args.run_dir)
    pick_checkpoint(run_dir, args.ckpt)  # a run without a checkpoint is named before the inputs are read
    split, path = parse_input(args.input)
    run = load_run(run_dir, args.ckpt, trust_checkpoint=args.trust_checkpoint)
    data = run.data_module(stage=None)
    wrapper = run.wrapper
    inputs = split_inputs(data, split, args.batch_size, device, wrapper) if split else \
        file_inputs(data, path, args.batch_size, device, wrapper)
    wrapper.to(device)
    names, outputs, labels, classifies = predict(wrapper, data, inputs, out)
    suffix = out.suffix.lower() if out else (".csv" if classifies else ".pt")
    if suffix == ".csv":
        k = min(args.top_k, outputs.shape[1])
        body = csv_bytes(names, outputs, labels, k, class_names(data, outputs.shape[1]))
    else:
        body = tensor_bytes(names, outputs, suffix)
    written = write_new(out, body) if out else \
        write_free(run_dir / "predictions", f"{safe(inputs.label)}-{safe(run.ckpt_label)}", suffix, body)
    print(f"wrote {written} ({len(names)} prediction{'' if len(names) == 1 else 's'})"
          + accuracy_note(outputs, labels, classifies))
    return 0


# ---------------------------------------------------------------- arguments, checked before anything is read


def check_numbers(args: argparse.Namespace) -> None:
    if args.top_k < 1:
        raise ConfigError(f"--top-k {args.top_k}: the number of best classes to list must be at least 1 "
                          f"(default 5)")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size}: images per batch must be at least 1 "
                          f"(default: the run's eval batch size)")


def check_out(text: str | None) -> Path | None:
    if text is None:
        return None
    out = Path(text)
    if out.suffix.lower() not in OUT_SUFFIXES:
        raise ConfigError(f"--out '{out}': the suffix must say the format: .csv (classifiers), .pt or .npy "
                          f"(tensor files), not '{out.suffix or '(none)'}'")
    if out.is_dir():
        raise ConfigError(f"--out '{out}' is a folder; give a file name ending in .csv, .pt or .npy")
    if out.exists() or out.is_symlink():
        raise ConfigError(f"--out '{out}' exists and is not replaced; give another --out, or leave --out out "
                          f"to write a new file under RUN_DIR/predictions/")
    return out


def pick_device(text: str | None) -> torch.device:
    from torchx.build import check_gpus
    from torchx.cli import parse_gpus

    gpus = parse_gpus(text)
    if gpus is None:
        return torch.device("cpu")
    if len(gpus) > 1:
        raise ConfigError(f"--gpu {text!r}: predict runs on one device; give one id, e.g. --gpu {gpus[0]}")
    check_gpus(gpus)
    return torch.device("cuda", gpus[0])


def parse_input(text: str) -> tuple[str | None, Path | None]:
    """('test', None) for split:test, or (None, path) for an existing file or folder."""
    if text.startswith("split:"):
        name = text[len("split:"):]
        if name not in SPLITS:
            raise ConfigError(f"--input {text!r}: the split must be one of {', '.join('split:' + s for s in SPLITS)}")
        return name, None
    path = Path(text)
    if not path.exists():
        raise ConfigError(f"--input '{path}' does not exist; give an image file (PNG or JPEG), a folder of "
                          f"images, or split:train|val|test")
    if path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ConfigError(f"--input '{path}' is not a PNG or JPEG file (it ends in "
                          f"'{path.suffix or '(no suffix)'}'); give a .png, .jpg or .jpeg file or a folder of them")
    return None, path


# ---------------------------------------------------------------- a split of the run's data module


def split_inputs(data: Any, split: str, batch_size: int | None, device: torch.device, wrapper: Any) -> Inputs:
    """The split's own loader, read as for evaluation; batches moved and finished as in training."""
    from torchx.loop import to_device

    loader, size = split_loader(data, split, batch_size)

    def batches() -> Iterator[tuple[Any, torch.Tensor | None]]:
        for batch in loader:
            batch = to_device(batch, device, data, wrapper)
            yield batch, labels_of(batch, wrapper)

    try:
        n = len(loader)
    except TypeError:  # an iterable loader without a length: no bar total
        n = None
    return Inputs(label=split, names=None, n_batches=n, batches=batches)


def split_loader(data: Any, split: str, batch_size: int | None) -> tuple[Any, int | None]:
    from pytorch_lightning.utilities.model_helpers import is_overridden

    from torchx.datasets.base import TensorDataModule

    name = type(data).__name__
    if isinstance(data, TensorDataModule):
        data.prepare_data()
        data.setup("predict")
        if not data.has_split(split):
            there = ", ".join(f"split:{s}" for s in SPLITS if data.has_split(s))
            raise ConfigError(f"--input split:{split}: the data module {name} has no {split} split (it has: "
                              f"{there})")
        if batch_size is not None:
            data.eval_batch_size = batch_size
        # train=False: the eval transforms and no shuffling, for split:train as for val and test
        return data._loader(split, train=False), data.split_size(split)
    if split == "train":
        raise ConfigError(f"--input split:train: {name} is not one of torchx's data modules, so its "
                          f"train_dataloader may shuffle and augment and cannot be read as an evaluation split; "
                          f"use split:val or split:test")
    if not is_overridden(LOADERS[split], data):
        raise ConfigError(f"--input split:{split}: the data module {name} has no {LOADERS[split]}")
    if batch_size is not None:
        raise ConfigError(f"--batch-size {batch_size}: the data module {name} builds its own loaders, with its "
                          f"own batch size; leave --batch-size out (or set it in the run's data_module.args)")
    data.prepare_data()
    data.setup("test" if split == "test" else "validate")
    loader = getattr(data, LOADERS[split])()
    if isinstance(loader, (list, tuple)):
        if len(loader) != 1:
            raise ConfigError(f"--input split:{split}: {name}.{LOADERS[split]} returns {len(loader)} loaders; "
                              f"predict reads one")
        loader = loader[0]
    dataset = getattr(loader, "dataset", None)
    return loader, len(dataset) if hasattr(dataset, "__len__") else None


def labels_of(batch: Any, wrapper: Any) -> torch.Tensor | None:
    """The batch's true labels [N], as the wrapper reads them in training, or None."""
    from torchx.wrappers.base import BaseWrapper

    try:
        if isinstance(wrapper, BaseWrapper):
            y = wrapper.split(batch)[1]
        elif isinstance(batch, (list, tuple)) and len(batch) >= 2:
            y = batch[1]
        else:
            return None
    except ConfigError:  # a batch without a target
        return None
    return y.detach().cpu() if isinstance(y, torch.Tensor) and y.dim() == 1 else None


# ---------------------------------------------------------------- image files


def file_inputs(data: Any, path: Path, batch_size: int | None, device: torch.device, wrapper: Any) -> Inputs:
    """Image files decoded, checked against what the model takes, and batched as an eval split."""
    from torchx.datasets.base import TensorDataModule
    from torchx.loop import to_device

    if not isinstance(data, TensorDataModule):
        raise ConfigError(f"--input '{path}': the run's data module {type(data).__name__} is not one of torchx's "
                          f"image data modules, so predict does not know how it prepares an image for the model; "
                          f"use --input split:val or split:test")
    channels = data.in_channels
    if channels not in (1, 3):
        raise ConfigError(f"--input '{path}': the model takes {channels}-channel images, and image files are read "
                          f"as gray (1 channel) or RGB (3); use --input split:NAME")
    from torchx.datasets.folder import ImageFolder

    files, names = image_files(path)
    resize = data.size if isinstance(data, ImageFolder) else None  # image_folder resizes images as it reads them
    images = [read_image(f, channels, resize) for f in files]
    pipeline = data.pipelines["eval"] if data.pipelines else None
    check_shapes(images, files, data, pipeline)
    size = batch_size or data.eval_batch_size
    chunks = same_shape_chunks(images, size)

    def batches() -> Iterator[tuple[Any, torch.Tensor | None]]:
        for chunk in chunks:
            # the data module's own dataset class: its normalisation, or the eval pipeline's per-image ops
            dataset = BatchTensorDataset(torch.stack(chunk), torch.zeros(len(chunk), dtype=torch.long),
                                         data.mean, data.std, pipeline)
            batch = dataset.batch(list(range(len(chunk))))
            x = to_device(batch, device, data, wrapper)[0]  # the input alone: the labels are placeholders
            yield x, None

    return Inputs(label=path.stem if path.is_file() else (path.resolve().name or "images"), names=names,
                  n_batches=len(chunks), batches=batches)


def same_shape_chunks(images: list[torch.Tensor], size: int) -> list[list[torch.Tensor]]:
    """Batches of at most `size` images in order, a new one where the shape changes: images of several
    sizes (which eval transforms make one size) are stacked as they are read, one size a batch."""
    chunks: list[list[torch.Tensor]] = []
    for image in images:
        if chunks and len(chunks[-1]) < size and chunks[-1][0].shape == image.shape:
            chunks[-1].append(image)
        else:
            chunks.append([image])
    return chunks


def image_files(path: Path) -> tuple[list[Path], list[str]]:
    """The PNG and JPEG files `path` names (itself, or those in the folder, recursively, sorted by
    path) and their names in the output: relative to the folder, or the file's own name."""
    if path.is_file():
        return [path], [path.name]
    found = sorted((p for p in path.rglob("*") if p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)),
                   key=lambda p: p.relative_to(path).as_posix())
    images = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES]
    skipped = len(found) - len(images)
    if not images:
        other = f" ({skipped} other file{'s' if skipped != 1 else ''} skipped)" if skipped else ""
        raise ConfigError(f"--input '{path}' holds no PNG or JPEG files (.png, .jpg, .jpeg){other}; give a "
                          f"folder of images or an image file")
    if skipped:
        print(f"note: skipped {skipped} file{'s' if skipped != 1 else ''} in '{path}' that are not PNG or JPEG",
              file=sys.stderr)
    return images, [p.relative_to(path).as_posix() for p in images]


def read_image(path: Path, channels: int, size: Any = None) -> torch.Tensor:
    """uint8 [C, H, W] with the model's channel count (gray or RGB), decoded by torchvision; resized to
    `size` (height, width) when the data module resizes as it reads (image_folder's image_size)."""
    from torchvision.io import ImageReadMode, decode_image

    from torchx.datasets.folder import read_size

    # PIL's integrity check first: libpng would print its own complaint about a broken file to stderr
    read_size(str(path), verify=True)
    try:
        raw = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
        image = decode_image(raw, mode=ImageReadMode.UNCHANGED)
    except Exception as e:  # RuntimeError from the decoders, ValueError for an empty file, OSError
        raise ConfigError(f"'{path}': cannot decode it as a PNG or JPEG image ({decoder_says(e)}); the file is "
                          f"corrupt or not an image: replace or remove it") from None
    want = "gray (1 channel)" if channels == 1 else "RGB (3 channels)"
    if image.dtype != torch.uint8:
        raise ConfigError(f"'{path}' has {str(image.dtype).replace('torch.', '')} pixels; the model takes 8-bit "
                          f"{want} images: save it with 8 bits per channel")
    if image.shape[0] not in (1, 3):
        kind = {2: "a gray + alpha", 4: "an RGBA"}.get(image.shape[0], f"a {image.shape[0]}-channel")
        raise ConfigError(f"'{path}' is {kind} image of shape {list(image.shape)}; the model takes {want} "
                          f"images: save it without the alpha channel (as {'L' if channels == 1 else 'RGB'})")
    if image.shape[0] != channels:
        image = decode_image(raw, mode=ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB)
    if isinstance(size, tuple) and tuple(image.shape[-2:]) != size:
        from torchvision.transforms.v2.functional import resize

        image = resize(image, list(size), antialias=True)  # as torchx.datasets.folder.decode does
    return image


def decoder_says(e: Exception) -> str:
    """The decoder's reason, without the C++ source location torchvision puts first, to its first sentence."""
    text = re.sub(r"^.*?\.(?:cpp|h):\d+,\s*", "", first_line(e))
    return text.split(". ")[0].rstrip(".") or type(e).__name__


def check_shapes(images: list[torch.Tensor], files: list[Path], data: Any, pipeline: Any) -> None:
    """Every image must come out of the eval transforms in the shape the data module's images do
    (or, where that size is not known, all in one shape): else name the file and how to fix it."""
    final: dict[tuple[int, ...], tuple[int, ...]] = {}

    def after(shape: tuple[int, ...], where: Path | None) -> tuple[int, ...]:
        if shape not in final:
            final[shape] = transformed_shape(shape, pipeline, where)
        return final[shape]

    size = expected_size(data)
    channels = data.in_channels
    expected = after((channels, *size), None) if size else None
    first: tuple[Path, torch.Tensor, tuple[int, ...]] | None = None
    for image, path in zip(images, files):
        got = after(tuple(image.shape), path)
        if expected is not None and got != expected:
            h, w = size
            raise ConfigError(f"'{path}' is {shape_text(image.shape)}, but the model takes {channels}x{h}x{w} "
                              f"images (the data module's image_size), and the eval transforms do not make it "
                              f"that size; resize the image to {w}x{h} pixels (width x height), or add a Resize "
                              f"or CenterCrop to data_module.args.eval_transforms")
        if first is None:
            first = (path, image, got)
        elif got != first[2]:
            raise ConfigError(f"the images have different sizes: '{first[0]}' is {shape_text(first[1].shape)}, "
                              f"'{path}' is {shape_text(image.shape)}; the model takes one size: resize them "
                              f"alike, or predict on them one folder per size")


def expected_size(data: Any) -> tuple[int, int] | None:
    """(height, width) of the data module's images, or None where it does not say."""
    try:
        size = getattr(data, "image_size", None)
    except ConfigError:  # image_folder reads its files to tell; they need not be here to predict
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    return None


def transformed_shape(shape: tuple[int, ...], pipeline: Any, where: Path | None) -> tuple[int, ...]:
    """The shape of one image of `shape` after the eval transforms (tried on a blank image)."""
    if pipeline is None:
        return shape
    blank = torch.zeros((1, *shape), dtype=torch.uint8)
    try:
        return tuple(pipeline.device_ops(pipeline.image_ops(blank, 0), 0).shape[1:])
    except ConfigError:
        raise
    except Exception as e:  # a transform that cannot take this size
        what = f"'{where}' ({shape_text(shape)})" if where else f"an image of {shape_text(shape)}"
        raise ConfigError(f"the eval transforms cannot take {what}: {first_line(e)}") from None


def shape_text(shape: Any) -> str:
    c, h, w = shape
    return f"{c}x{h}x{w} (channels x height x width)"


# ---------------------------------------------------------------- the model


def predict(wrapper: Any, data: Any, inputs: Inputs,
            out: Path | None) -> tuple[list[str], torch.Tensor, torch.Tensor | None, bool]:
    """Every batch through the model: input names, outputs (on the CPU), true labels (or None) and
    whether the outputs are class scores. The format is checked against --out at the first batch."""
    step = model_call(wrapper)
    outs, labels, count = [], [], 0
    classifies: bool | None = None
    wrapper.eval()
    with torch.no_grad():
        for i, (batch, y) in enumerate(progress(inputs.batches(), inputs.n_batches)):
            output = checked_output(step(batch, i), batch)
            if classifies is None:
                classifies = is_classifier(output, y, data, wrapper)
                check_format(out, classifies, output)
            outs.append(output.detach().cpu())
            labels.append(y)
            count += len(output)
    if not outs:
        raise ConfigError(f"--input split:{inputs.label}: its loader gave no batches, so there is nothing to predict")
    if inputs.names is not None and count != len(inputs.names):
        raise ConfigError(f"the model gave {count} rows of predictions for {len(inputs.names)} images; its output's "
                          f"first dimension must be the batch's")
    names = inputs.names if inputs.names is not None else [f"split:{inputs.label}#{i}" for i in range(count)]
    known = labels if labels and all(y is not None and len(y) == len(o) for y, o in zip(labels, outs)) else None
    return names, torch.cat(outs), torch.cat(known) if known else None, bool(classifies)


def model_call(wrapper: Any) -> Callable[[Any, int], Any]:
    """The wrapper's predict_step, or its forward on the batch's input when it has none."""
    import pytorch_lightning as pl
    from pytorch_lightning.utilities.model_helpers import is_overridden

    if not isinstance(wrapper, pl.LightningModule) or is_overridden("predict_step", wrapper):
        return lambda batch, i: wrapper.predict_step(batch, i)
    print(f"note: {type(wrapper).__name__} has no predict_step; predicting with its forward on each batch's input",
          file=sys.stderr)

    def forward(batch: Any, i: int) -> Any:
        if isinstance(batch, Mapping):
            raise ConfigError(f"the batches are dicts (keys: {', '.join(map(repr, batch))}) and "
                              f"{type(wrapper).__name__} has no predict_step to pick its input; give it one")
        return wrapper(batch[0] if isinstance(batch, (list, tuple)) else batch)

    return forward


def checked_output(output: Any, batch: Any) -> torch.Tensor:
    if not isinstance(output, torch.Tensor) or output.dim() == 0:
        shown = f"a {type(output).__name__}" if not isinstance(output, torch.Tensor) else "a scalar tensor"
        raise ConfigError(f"the model's prediction is {shown}, not a tensor with one row per input; set "
                          f"train_wrapper.args.output_key to the output to keep, or give the wrapper a "
                          f"predict_step that returns one")
    return output


def is_classifier(output: torch.Tensor, labels: torch.Tensor | None, data: Any, wrapper: Any) -> bool:
    """Class scores [N, C >= 2] against integer labels (the split's, else the data module's classes)."""
    if output.dim() != 2 or output.shape[1] < 2 or not output.is_floating_point():
        return False
    known = getattr(wrapper, "classifies", None)
    if known is not None:
        return bool(known)
    if labels is not None:
        return not labels.is_floating_point() and labels.dtype != torch.bool
    try:
        return getattr(data, "num_classes", None) == output.shape[1]
    except ConfigError:  # image_folder reads its class folders to tell
        return False


def check_format(out: Path | None, classifies: bool, output: torch.Tensor) -> None:
    if out is not None and out.suffix.lower() == ".csv" and not classifies:
        raise ConfigError(f"--out '{out}': a CSV of classes and scores is for classifiers, and this model's "
                          f"output is {list(output.shape)} {str(output.dtype).replace('torch.', '')} (not class "
                          f"scores against integer labels); use --out with .pt or .npy")


def progress(batches: Iterator[Any], total: int | None) -> Iterator[Any]:
    """A tqdm bar on stderr for long inputs, when stderr is a terminal."""
    try:
        drawn = sys.stderr.isatty()
    except (AttributeError, ValueError):
        drawn = False
    if not drawn or (total is not None and total <= BAR_AFTER):
        return batches
    from tqdm import tqdm

    return iter(tqdm(batches, total=total, desc="predict", unit="batch", file=sys.stderr, leave=False))


# ---------------------------------------------------------------- writing


def class_names(data: Any, n: int) -> list[str] | None:
    try:
        names = getattr(data, "classes", None)
    except ConfigError:
        return None
    return [str(c) for c in names] if isinstance(names, (list, tuple)) and len(names) == n else None


def csv_bytes(names: list[str], outputs: torch.Tensor, labels: torch.Tensor | None, k: int,
              classes: list[str] | None) -> bytes:
    """input, class[, class_name], class_1, score_1, ... class_k, score_k[, label]: softmax scores."""
    predicted = outputs.argmax(1).tolist()  # on the raw scores, as the accuracy the run logged
    scores, top = outputs.float().softmax(1).topk(k, dim=1)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = ["input", "class"] + (["class_name"] if classes else [])
    header += [f"{kind}_{i}" for i in range(1, k + 1) for kind in ("class", "score")]
    writer.writerow(header + (["label"] if labels is not None else []))
    for row, name in enumerate(names):
        cells = [name, predicted[row]] + ([classes[predicted[row]]] if classes else [])
        for c, s in zip(top[row].tolist(), scores[row].tolist()):
            cells += [c, f"{s:.6g}"]
        writer.writerow(cells + ([int(labels[row])] if labels is not None else []))
    return buf.getvalue().encode()


def tensor_bytes(names: list[str], outputs: torch.Tensor, suffix: str) -> bytes:
    buf = io.BytesIO()
    if suffix == ".pt":
        torch.save({"inputs": names, "outputs": outputs}, buf)
    else:
        import numpy as np

        # numpy has no bfloat16: such outputs are written as float32
        np.save(buf, (outputs.float() if outputs.dtype == torch.bfloat16 else outputs).numpy())
    return buf.getvalue()


def accuracy_note(outputs: torch.Tensor, labels: torch.Tensor | None, classifies: bool) -> str:
    if not classifies or labels is None:
        return ""
    correct = int((outputs.argmax(1) == labels).sum())
    return f"; accuracy {correct / len(labels):.4f} ({correct}/{len(labels)} correct)"


def safe(label: str) -> str:
    """A label as a file name part: letters, digits, '.', '_' and '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "input"


def write_free(folder: Path, stem: str, suffix: str, body: bytes) -> Path:
    """folder/stem.suffix, or stem-2.suffix, -3, ...: the first name not taken."""
    n = 1
    while True:
        path = folder / (f"{stem}{suffix}" if n == 1 else f"{stem}-{n}{suffix}")
        if not path.exists() and link_new(path, body):
            return path
        n += 1


def write_new(path: Path, body: bytes) -> Path:
    if not link_new(path, body):
        raise ConfigError(f"--out '{path}' appeared while predicting and is not replaced; give another --out")
    return path


def link_new(path: Path, body: bytes) -> bool:
    """Write `body` whole (torchx.run.atomic_write, into a hidden name beside `path`), then give it the
    name `path` only if no file has it: a hard link, which fails rather than replace. False: taken."""
    from torchx.run import atomic_write

    tmp = path.with_name(f".{path.name}.{os.getpid()}.predict")
    atomic_write(tmp, lambda f: f.write(body))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links
        if path.exists():
            return False
        os.replace(tmp, path)
        return True
    finally:
        tmp.unlink(missing_ok=True)
