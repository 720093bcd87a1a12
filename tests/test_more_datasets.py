"""Tests for the cifar10, cifar100 and fashion_mnist data modules.

The files are small but in the real formats, written into tmp_path: CIFAR pickle batches of
scikit-learn's handwritten digits (upscaled to 32x32, a different view of the digit in each colour
plane), pickled the way Python 2 wrote the official batches, and gzipped IDX files for
Fashion-MNIST. Downloads run against an HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import pickle
import struct
import tarfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR10 as TV_CIFAR10
from torchvision.datasets import CIFAR100 as TV_CIFAR100
from torchvision.datasets import FashionMNIST as TV_FASHION

import torchx.datasets as datasets
from helpers import (
    refused,
    run_train,
    run_train_pl,
    scalars,
    serve_folder,
    tiny_config,
    write_config,
    write_fake_mnist,
    write_idx,
)
from torchx.datasets.cifar import CIFAR10, CIFAR100, BatchUnpickler
from torchx.datasets.fashion_mnist import FashionMNIST
from torchx.errors import ConfigError

N_PER_BATCH, N_TEST = 60, 100  # CIFAR-10: five training batches of 60 images; 100 test images
N_TRAIN = 5 * N_PER_BATCH
OFFICIAL_MD5 = {name: md5 for name, md5 in TV_CIFAR10.train_list + TV_CIFAR10.test_list
                + TV_CIFAR100.train_list + TV_CIFAR100.test_list}


# ---------------------------------------------------------------- writing files in the real formats


@functools.cache
def digit_planes() -> tuple[torch.Tensor, torch.Tensor]:
    """The 1797 sklearn digits as 3x32x32 uint8 images and their labels. Red is the digit, green
    the digit mirrored left-right, blue the digit transposed: a mix-up of channels, rows or columns
    shows."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    digits = torch.from_numpy(bunch.images * 15).to(torch.uint8)  # 0..16 -> 0..240
    big = digits.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)  # [1797, 32, 32]
    images = torch.stack([big, big.flip(-1), big.transpose(1, 2)], dim=1).contiguous()
    return images, torch.from_numpy(bunch.target).long()


def cifar_rows(images: torch.Tensor) -> np.ndarray:
    """What b'data' holds: one row of 3072 bytes per image, the red plane's 1024 values (row by
    row), then green's, then blue's."""
    planes = [images[:, c].reshape(len(images), 1024).numpy() for c in range(3)]
    return np.ascontiguousarray(np.concatenate(planes, axis=1))


class Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the official batches: protocol 2, byte strings as
    Python 2 str opcodes (SHORT_BINSTRING / BINSTRING), numpy under its numpy 1 module name."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def pickle_batch(batch: object, protocol: int | str = "py2") -> bytes:
    if protocol != "py2":
        return pickle.dumps(batch, protocol=protocol)
    out = io.BytesIO()
    Py2Pickler(out, protocol=2).dump(batch)
    return out.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def make_batch(images: torch.Tensor, labels: dict[bytes, torch.Tensor], title: bytes) -> dict:
    batch = {b"batch_label": title, b"data": cifar_rows(images)}
    batch.update({key: value.tolist() for key, value in labels.items()})
    batch[b"filenames"] = [f"digit_{i}.png".encode() for i in range(len(images))]
    return batch


def write_cifar10(root: Path, protocol: int | str = "py2") -> Path:
    """data_batch_1..5 and test_batch: the first 300 digits for training, the next 100 for testing."""
    images, labels = digit_planes()
    root.mkdir(parents=True, exist_ok=True)
    for k in range(5):
        part = slice(k * N_PER_BATCH, (k + 1) * N_PER_BATCH)
        batch = make_batch(images[part], {b"labels": labels[part]}, f"training batch {k + 1} of 5".encode())
        (root / f"data_batch_{k + 1}").write_bytes(pickle_batch(batch, protocol))
    test = slice(N_TRAIN, N_TRAIN + N_TEST)
    batch = make_batch(images[test], {b"labels": labels[test]}, b"testing batch 1 of 1")
    (root / "test_batch").write_bytes(pickle_batch(batch, protocol))
    return root


def cifar100_labels(n: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fine labels 0..99 built from the digit and the position; coarse = fine // 5 (0..19)."""
    digit = digit_planes()[1][offset:offset + n]
    fine = digit * 10 + (torch.arange(n) + offset) % 10
    return fine, fine // 5


def write_cifar100(root: Path) -> Path:
    images = digit_planes()[0]
    root.mkdir(parents=True, exist_ok=True)
    for name, offset, n in (("train", 0, N_TRAIN), ("test", N_TRAIN, N_TEST)):
        fine, coarse = cifar100_labels(n, offset)
        batch = make_batch(images[offset:offset + n], {b"fine_labels": fine, b"coarse_labels": coarse},
                           name.encode())
        (root / name).write_bytes(pickle_batch(batch))
    return root


def make(name: str, root: Path, **kwargs):
    return datasets.make({"name": name, "args": {"root_dir": str(root), "batch_size": 16, **kwargs}})


# ---------------------------------------------------------------- CIFAR-10


def test_py2_pickles_look_like_the_official_files(tmp_path):
    raw = (write_cifar10(tmp_path) / "data_batch_1").read_bytes()
    assert raw.startswith(b"\x80\x02}q\x00(U\x0bbatch_label")  # protocol 2, a dict, py2 str keys
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw and b"_codecs" not in raw


@pytest.mark.parametrize("layout", [".", "cifar-10-batches-py"])
def test_cifar10_reads_both_layouts(tmp_path, layout):
    write_cifar10(tmp_path / "root" / layout)
    dm = make("cifar10", tmp_path / "root")
    assert dm.missing() == []
    data = dm.load()
    images, labels = digit_planes()
    train_x, train_y = data["train"]
    assert train_x.shape == (N_TRAIN, 3, 32, 32) and train_x.dtype == torch.uint8
    assert train_y.shape == (N_TRAIN,) and train_y.dtype == torch.int64
    assert torch.equal(train_x, images[:N_TRAIN])  # batches in order, channel-major planes
    assert torch.equal(train_y, labels[:N_TRAIN])
    assert torch.equal(data["test"][0], images[N_TRAIN:N_TRAIN + N_TEST])
    assert set(train_y.tolist()) == set(range(10))


def test_cifar10_pixel_layout(tmp_path):
    """Byte c*1024 + h*32 + w of an image's row is its pixel [c, h, w]."""
    root = write_cifar10(tmp_path)
    batch = pickle.loads((root / "data_batch_2").read_bytes(), encoding="bytes")
    batch[b"data"][:] = 0
    batch[b"data"][7, 2 * 1024 + 5 * 32 + 11] = 201
    batch[b"data"][7, 1 * 1024 + 31 * 32 + 0] = 77
    (root / "data_batch_2").write_bytes(pickle_batch(batch))
    images = make("cifar10", root).load()["train"][0]
    image = images[N_PER_BATCH + 7]  # the 8th image of the second batch
    assert image[2, 5, 11] == 201 and image[1, 31, 0] == 77
    assert int(image.count_nonzero()) == 2
    assert int(images[N_PER_BATCH:2 * N_PER_BATCH].count_nonzero()) == 2


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_reads_python3_pickles(tmp_path, protocol):
    """A copy re-pickled by Python 3 (other opcodes and numpy globals) reads the same."""
    root = write_cifar10(tmp_path, protocol=protocol)
    data = make("cifar10", root).load()
    assert torch.equal(data["train"][0], digit_planes()[0][:N_TRAIN])
    assert torch.equal(data["test"][1], digit_planes()[1][N_TRAIN:N_TRAIN + N_TEST])


def test_cifar10_defaults_and_splits(tmp_path):
    dm = make("cifar10", write_cifar10(tmp_path), val_split=50, eval_batch_size=40)
    assert CIFAR10().root_dir == Path("./load/cifar10") and CIFAR10().val_split == 5000
    assert (dm.mean, dm.std) == (0.4734, 0.2516) and dm.download is False
    dm.setup()
    assert {k: len(v[1]) for k, v in dm.splits.items()} == {"train": 250, "val": 50, "test": N_TEST}
    seen = torch.cat([dm.splits["train"][0], dm.splits["val"][0]])
    assert sorted(seen.flatten(1).sum(1).tolist()) == sorted(digit_planes()[0][:N_TRAIN].flatten(1).sum(1).tolist())
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    lo, hi = -dm.mean / dm.std, (1 - dm.mean) / dm.std
    assert lo - 1e-5 <= x.min() and x.max() <= hi + 1e-5
    assert [len(b[1]) for b in dm.test_dataloader()] == [40, 40, 20]
    for split in ("train", "val", "test"):
        assert dm.splits[split][0].dtype == torch.uint8  # normalised a batch at a time, stored as bytes


def test_cifar10_default_val_split_needs_the_full_set(tmp_path):
    with pytest.raises(ConfigError, match=f"val_split=5000 leaves no training data \\({N_TRAIN} training"):
        make("cifar10", write_cifar10(tmp_path)).setup()


def test_cifar10_missing_files(tmp_path):
    root = write_cifar10(tmp_path / "partial")
    (root / "data_batch_3").unlink()
    (root / "test_batch").unlink()
    dm = make("cifar10", root)
    assert dm.missing() == ["data_batch_3", "test_batch"]
    dm.prepare_data()  # download=false: nothing fetched
    with pytest.raises(ConfigError) as info:
        dm.setup()
    message = str(info.value)
    assert f"CIFAR-10 files missing in '{root}': data_batch_3, test_batch." in message
    assert "cifar-10-batches-py/" in message and "data_module.args.download=true" in message
    assert "data_batch_1" not in message
    assert sorted(p.name for p in root.iterdir()) == ["data_batch_1", "data_batch_2", "data_batch_4", "data_batch_5"]


def test_cifar10_empty_folder_names_every_file(tmp_path):
    with pytest.raises(ConfigError, match=f"files missing in '{tmp_path}': data_batch_1, data_batch_2, "
                                          "data_batch_3, data_batch_4, data_batch_5, test_batch. .*download=true"):
        make("cifar10", tmp_path).setup()


# ---------------------------------------------------------------- CIFAR-100


@pytest.mark.parametrize("label, n_classes", [("fine", 100), ("coarse", 20)])
def test_cifar100_labels(tmp_path, label, n_classes):
    dm = make("cifar100", write_cifar100(tmp_path / "cifar-100-python").parent, label=label, val_split=0)
    data = dm.load()
    fine, coarse = cifar100_labels(N_TRAIN)
    assert torch.equal(data["train"][1], fine if label == "fine" else coarse)
    assert torch.equal(data["test"][1], cifar100_labels(N_TEST, N_TRAIN)[0 if label == "fine" else 1])
    assert data["train"][1].max() < n_classes and data["train"][1].dtype == torch.int64
    assert torch.equal(data["train"][0], digit_planes()[0][:N_TRAIN])
    assert data["test"][0].shape == (N_TEST, 3, 32, 32) and data["test"][0].dtype == torch.uint8


def test_cifar100_defaults_and_bad_label():
    dm = CIFAR100()
    assert dm.root_dir == Path("./load/cifar100") and dm.label == "fine" and dm.val_split == 5000
    assert (dm.mean, dm.std) == (0.4782, 0.2682)
    with pytest.raises(ConfigError, match="label must be 'fine' .* or 'coarse' .*, got 'fine_labels'"):
        CIFAR100(label="fine_labels")


def test_cifar100_missing_files(tmp_path):
    (tmp_path / "train").write_bytes(b"")
    with pytest.raises(ConfigError, match=f"CIFAR-100 files missing in '{tmp_path}': test. .*cifar-100-python/"
                                          ".*data_module.args.download=true"):
        make("cifar100", tmp_path).setup()


def test_registered():
    for name, cls in (("cifar10", CIFAR10), ("cifar100", CIFAR100), ("fashion_mnist", FashionMNIST)):
        assert datasets.registry.get(name) is cls


# ---------------------------------------------------------------- what is unpickled, and how


class RunsACommand:
    """Unpickling this runs `touch <marker>`, as any pickle may make its loader do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_the_hostile_pickle_is_live(tmp_path):
    """Loaded with plain pickle, the file of the hostile case runs its command."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps({b"x": RunsACommand(marker)}, protocol=2), encoding="bytes")
    assert marker.exists()


def test_unpickler_refuses_globals_before_calling_them(tmp_path):
    marker = tmp_path / "ran"
    for hostile in (RunsACommand(marker), OrderedDict(a=1), eval):
        with pytest.raises(Exception, match=r"posix\.system|collections\.OrderedDict|builtins\.eval"):
            BatchUnpickler(io.BytesIO(pickle.dumps({b"data": hostile}, protocol=2))).load()
    assert not marker.exists()


def test_official_md5_is_unpickled_as_it_is(tmp_path, monkeypatch):
    """A file with the official md5 is trusted: an OrderedDict (a global the restricted unpickler
    refuses) loads when the file's md5 is the one torchvision lists, and is refused otherwise."""
    root = write_cifar10(tmp_path)
    for path in root.iterdir():
        batch = pickle.loads(path.read_bytes(), encoding="bytes")
        path.write_bytes(pickle.dumps(OrderedDict(batch), protocol=2))
    with pytest.raises(ConfigError, match=r"data_batch_1: it refers to collections\.OrderedDict"):
        make("cifar10", root).load()
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in root.iterdir()}
    monkeypatch.setattr(TV_CIFAR10, "train_list", [[f"data_batch_{k}", md5[f"data_batch_{k}"]] for k in range(1, 6)])
    monkeypatch.setattr(TV_CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    assert torch.equal(make("cifar10", root).load()["train"][0], digit_planes()[0][:N_TRAIN])


# ---------------------------------------------------------------- bad files through the command line


def rewrite(name: str, change):
    """A case that unpickles `name`, lets `change(batch)` edit it (or return a replacement) and
    writes it back in the official format."""
    def apply(root: Path, tmp: Path) -> None:
        batch = pickle.loads((root / name).read_bytes(), encoding="bytes")
        new = change(batch)
        (root / name).write_bytes(pickle_batch(batch if new is None else new))
    return apply


def raw(name: str, content):
    def apply(root: Path, tmp: Path) -> None:
        (root / name).write_bytes(content((root / name).read_bytes()) if callable(content) else content)
    return apply


def hostile(name: str):
    def apply(root: Path, tmp: Path) -> None:
        batch = pickle.loads((root / name).read_bytes(), encoding="bytes")
        batch[b"batch_label"] = RunsACommand(tmp / "hostile-ran")
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
    return apply


def gz_labels(labels: torch.Tensor):
    def apply(root: Path, tmp: Path) -> None:
        write_idx(root / "train-labels-idx1-ubyte.gz", labels)
    return apply


def delete(name: str):
    return lambda root, tmp: (root / name).unlink()


def set_item(key: bytes, value):
    def change(batch):
        batch[key] = value
    return change


def set_label(key: bytes, index: int, value: int):
    def change(batch):
        batch[key][index] = value
    return change


def drop(key: bytes, last: bool = False):
    """Remove the key, or (last=True) the last item of its list."""
    def change(batch):
        if last:
            batch[key].pop()
        else:
            del batch[key]
    return change


def data_as(make_value):
    def change(batch):
        batch[b"data"] = make_value(batch[b"data"])
    return change


# id -> (dataset, file, how to break it, phrases stderr must hold beside the file's path)
BAD_FILES = {
    "cifar10-missing-batch": ("cifar10", "data_batch_4", delete("data_batch_4"),
                              ["CIFAR-10 files missing", "data_batch_4", "data_module.args.download=true"]),
    "cifar10-empty-file": ("cifar10", "data_batch_1", raw("data_batch_1", b""),
                           ["cannot unpickle it", "truncated or corrupt", "official data_batch_1 has md5"]),
    "cifar10-truncated": ("cifar10", "data_batch_2", raw("data_batch_2", lambda b: b[: len(b) // 2]),
                          ["cannot unpickle it", "truncated or corrupt", "official data_batch_2 has md5"]),
    "cifar10-garbage": ("cifar10", "test_batch", raw("test_batch", bytes(range(256)) * 8),
                        ["cannot unpickle it", "official test_batch has md5"]),
    "cifar10-runs-a-command": ("cifar10", "data_batch_3", hostile("data_batch_3"),
                               ["it refers to posix.system", "it was refused without being called",
                                "official data_batch_3 has md5"]),
    "cifar10-calls-eval": ("cifar10", "data_batch_1", rewrite("data_batch_1", set_item(b"batch_label", eval)),
                           ["it refers to builtins.eval"]),
    "cifar10-not-a-dict": ("cifar10", "data_batch_5", rewrite("data_batch_5", lambda b: [b[b"data"]]),
                           ["it holds a list, not the dict of a CIFAR batch"]),
    "cifar10-missing-key": ("cifar10", "data_batch_1", rewrite("data_batch_1", drop(b"filenames")),
                            ["its keys are [b'batch_label', b'data', b'labels']", "a CIFAR-10 batch has exactly"]),
    "cifar10-cifar100-keys": ("cifar10", "test_batch",
                              rewrite("test_batch", lambda b: {**{k: v for k, v in b.items() if k != b"labels"},
                                                               b"fine_labels": b[b"labels"]}),
                              ["b'fine_labels'", "has exactly [b'batch_label', b'data', b'filenames', b'labels']"]),
    "cifar10-data-3000-wide": ("cifar10", "data_batch_2", rewrite("data_batch_2", data_as(lambda d: d[:, :3000])),
                               ["b'data' is a uint8 array of shape [60, 3000]", "[N, 3072]"]),
    "cifar10-data-as-images": ("cifar10", "data_batch_2",
                               rewrite("data_batch_2", data_as(lambda d: d.reshape(-1, 3, 32, 32))),
                               ["b'data' is a uint8 array of shape [60, 3, 32, 32]"]),
    "cifar10-data-float": ("cifar10", "data_batch_2", rewrite("data_batch_2", data_as(lambda d: d.astype(np.float32))),
                           ["b'data' is a float32 array of shape [60, 3072]"]),
    "cifar10-data-bytes": ("cifar10", "test_batch", rewrite("test_batch", data_as(lambda d: d.tobytes())),
                           ["b'data' is a bytes"]),
    "cifar10-no-images": ("cifar10", "test_batch", rewrite("test_batch", data_as(lambda d: d[:0])),
                          ["b'data' is a uint8 array of shape [0, 3072]", "N >= 1"]),
    "cifar10-label-10": ("cifar10", "data_batch_5", rewrite("data_batch_5", set_label(b"labels", 3, 10)),
                         ["label 10 in b'labels' is out of range", "CIFAR-10 has classes 0 to 9"]),
    "cifar10-label-negative": ("cifar10", "data_batch_1",
                               rewrite("data_batch_1", set_label(b"labels", 0, -1)),
                               ["label -1 in b'labels' is out of range"]),
    "cifar10-labels-short": ("cifar10", "data_batch_3", rewrite("data_batch_3", drop(b"labels", last=True)),
                             ["b'labels' is a list of 59 items; it must be a list of 60 whole numbers"]),
    "cifar10-labels-text": ("cifar10", "data_batch_3", rewrite("data_batch_3", set_item(b"labels", [b"cat"] * 60)),
                            ["b'labels' is a list of 60 items; it must be a list of 60 whole numbers"]),
    "cifar10-filenames-short": ("cifar10", "test_batch",
                                rewrite("test_batch", drop(b"filenames", last=True)),
                                ["b'filenames' is a list; it must be a list of 100 file names"]),
    "cifar100-coarse-20": ("cifar100", "train",
                           rewrite("train", set_label(b"coarse_labels", 5, 20)),
                           ["label 20 in b'coarse_labels' is out of range", "CIFAR-100 has classes 0 to 19"]),
    "cifar100-fine-100": ("cifar100", "test", rewrite("test", set_label(b"fine_labels", 5, 100)),
                          ["label 100 in b'fine_labels' is out of range", "classes 0 to 99"]),
    "cifar100-cifar10-keys": ("cifar100", "train", rewrite("train", lambda b: {
        b"batch_label": b[b"batch_label"], b"labels": b[b"fine_labels"], b"data": b[b"data"],
        b"filenames": b[b"filenames"]}), ["its keys are", "b'coarse_labels'", "b'fine_labels'"]),
    "cifar100-truncated": ("cifar100", "test", raw("test", lambda b: b[:-1]),
                           ["truncated or corrupt", "official test has md5"]),
    "fashion-missing-file": ("fashion_mnist", "t10k-images-idx3-ubyte.gz", delete("t10k-images-idx3-ubyte.gz"),
                             ["Fashion-MNIST files missing", "t10k-images-idx3-ubyte.gz", "download=true"]),
    "fashion-corrupt-gz": ("fashion_mnist", "train-images-idx3-ubyte.gz",
                           raw("train-images-idx3-ubyte.gz", lambda b: b[:10] + bytes(len(b) - 10)),
                           ["cannot decompress", "truncated or corrupt"]),
    "fashion-truncated-gz": ("fashion_mnist", "t10k-labels-idx1-ubyte.gz",
                             raw("t10k-labels-idx1-ubyte.gz", lambda b: b[: len(b) // 2]),
                             ["cannot decompress", "truncated or corrupt"]),
    "fashion-not-gzip": ("fashion_mnist", "train-labels-idx1-ubyte.gz",
                         raw("train-labels-idx1-ubyte.gz", b"not gzip at all"), ["cannot decompress"]),
    "fashion-label-10": ("fashion_mnist", "train-labels-idx1-ubyte.gz", gz_labels(torch.arange(256) % 11),
                         ["label 10 is out of range", "classes 0 to 9"]),
}


def write_good(dataset: str, root: Path) -> Path:
    if dataset == "cifar10":
        return write_cifar10(root)
    if dataset == "cifar100":
        return write_cifar100(root)
    return write_fake_mnist(root)


def bad_case_config(tmp_path: Path, dataset: str, root: Path) -> Path:
    cfg = tiny_config()
    cfg["data_module"] = {"name": dataset, "args": {"root_dir": str(root), "batch_size": 16, "val_split": 20}}
    in_channels, classes = (1, 10) if dataset == "fashion_mnist" else (3, 100 if dataset == "cifar100" else 10)
    cfg["train_wrapper"]["args"]["model_spec"] = {"name": "tiny_cnn",
                                                  "args": {"in_channels": in_channels, "num_classes": classes}}
    return write_config(tmp_path / "bad.yaml", cfg)


@pytest.mark.parametrize("loop", ["train_pl", "train"])
@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_data_file(case, loop, tmp_path, monkeypatch, capsys):
    dataset, name, damage, phrases = BAD_FILES[case]
    monkeypatch.chdir(tmp_path)
    root = write_good(dataset, tmp_path / "data")
    damage(root, tmp_path)
    config = bad_case_config(tmp_path, dataset, root)
    before = sorted(tmp_path.rglob("*"))
    err = refused(loop, config, capsys)
    assert (str(root / name) if "missing" not in case else str(root)) in err
    for phrase in phrases:
        assert phrase in err, f"{phrase!r} not in {err!r}"
    if dataset != "fashion_mnist" and "missing" not in case:
        # every other broken batch differs from the official file: its md5 and the official one are named
        assert f"the official {name} has md5 {OFFICIAL_MD5[name]}" in err
    assert not (tmp_path / "save").exists()
    assert not (tmp_path / "hostile-ran").exists()  # the hostile pickle's command never ran
    assert sorted(tmp_path.rglob("*")) == before


# ---------------------------------------------------------------- Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
@pytest.mark.parametrize("layout", [".", "FashionMNIST/raw"])
def test_fashion_mnist_reads_both_layouts(tmp_path, layout, gz):
    images, labels = digit_planes()
    images = images[:, 0, 2:30, 2:30].contiguous()  # the upscaled digits, cropped to 28x28
    folder = tmp_path / "root" / layout
    suffix = ".gz" if gz else ""
    for prefix, part in (("train", slice(0, 200)), ("t10k", slice(200, 250))):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images[part])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels[part])
    dm = make("fashion_mnist", tmp_path / "root", val_split=20)
    assert dm.missing() == []
    data = dm.load()
    assert data["train"][0].shape == (200, 1, 28, 28) and data["train"][0].dtype == torch.uint8
    assert torch.equal(data["train"][0][:, 0], images[:200]) and torch.equal(data["test"][1], labels[200:250])
    assert data["train"][1].dtype == torch.int64
    dm.setup()
    assert {k: len(v[1]) for k, v in dm.splits.items()} == {"train": 180, "val": 20, "test": 50}


def test_fashion_mnist_defaults():
    dm = FashionMNIST()
    assert dm.root_dir == Path("./load/fashion_mnist") and dm.val_split == 5000 and dm.download is False
    assert (dm.mean, dm.std) == (0.2860, 0.3530)


def test_fashion_mnist_never_takes_mnist_files(tmp_path):
    """torchvision keeps MNIST/raw and FashionMNIST/raw under one root: only the second is Fashion-MNIST."""
    write_fake_mnist(tmp_path / "MNIST" / "raw")
    dm = make("fashion_mnist", tmp_path)
    assert len(dm.missing()) == 4
    with pytest.raises(ConfigError) as info:
        dm.setup()
    message = str(info.value)
    assert message.startswith(f"Fashion-MNIST files missing in '{tmp_path}': train-images-idx3-ubyte.gz, "
                              "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz.")
    assert "Copy the four IDX files" in message and "data_module.args.download=true" in message
    write_fake_mnist(tmp_path / "FashionMNIST" / "raw", n_train=64, n_test=16)
    dm = make("fashion_mnist", tmp_path, val_split=0)
    dm.setup()
    assert len(dm.splits["train"][1]) == 64 and len(dm.splits["test"][1]) == 16


def test_fashion_mnist_mismatched_counts(tmp_path):
    root = write_fake_mnist(tmp_path, n_train=64, n_test=16)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", torch.zeros(15, dtype=torch.uint8))
    with pytest.raises(ConfigError, match=r"Fashion-MNIST test files in .* disagree: images \[16, 28, 28\], "
                                          r"labels \[15\]"):
        make("fashion_mnist", root).setup()


# ---------------------------------------------------------------- downloads from a local server


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    with serve_folder(www) as url:
        yield www, url


def test_cifar10_download_extracts_and_checks_md5(tmp_path, server, monkeypatch):
    www, url = server
    write_cifar10(tmp_path / "release" / "cifar-10-batches-py")
    with tarfile.open(www / "cifar.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "release" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    md5 = hashlib.md5((www / "cifar.tar.gz").read_bytes()).hexdigest()
    monkeypatch.setattr(TV_CIFAR10, "url", url + "cifar.tar.gz")
    monkeypatch.setattr(TV_CIFAR10, "tgz_md5", "0" * 32)
    dm = make("cifar10", tmp_path / "data", download=True, val_split=50)
    with pytest.raises(ConfigError, match=f"could not download {url}cifar.tar.gz \\(md5 0{{32}}\\)"):
        dm.prepare_data()
    assert not list((tmp_path / "data").iterdir())  # the wrong archive is not kept, nothing extracted
    monkeypatch.setattr(TV_CIFAR10, "tgz_md5", md5)
    dm.prepare_data()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["cifar-10-batches-py"]  # archive removed
    dm.setup()
    assert torch.equal(dm.splits["test"][0], digit_planes()[0][N_TRAIN:N_TRAIN + N_TEST])


def test_fashion_mnist_download_checks_md5(tmp_path, server, monkeypatch):
    www, url = server
    write_fake_mnist(www, n_train=40, n_test=10)
    resources = [(f"{stem}.gz", hashlib.md5((www / f"{stem}.gz").read_bytes()).hexdigest())
                 for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                              "t10k-labels-idx1-ubyte")]
    monkeypatch.setattr(TV_FASHION, "mirrors", [url + "missing/", url])
    monkeypatch.setattr(TV_FASHION, "resources", [(name, "0" * 32) for name, _ in resources])
    with pytest.raises(ConfigError, match=r"could not download train-images-idx3-ubyte.gz \(md5 0{32}\): "
                                          r".*missing/: .*404.*; http://127.0.0.1:\d+/: File not found or corrupted"):
        make("fashion_mnist", tmp_path / "data", download=True).prepare_data()
    assert not list((tmp_path / "data").iterdir())  # nothing half-written is left
    monkeypatch.setattr(TV_FASHION, "resources", resources)
    dm = make("fashion_mnist", tmp_path / "data", download=True, val_split=5)
    dm.prepare_data()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted(name for name, _ in resources)
    dm.setup()
    assert len(dm.splits["train"][1]) == 35 and len(dm.splits["test"][1]) == 10


# ---------------------------------------------------------------- training under both loops


def train_config(dataset: str, root: Path, **args) -> dict:
    cfg = tiny_config()
    cfg["data_module"] = {"name": dataset, "args": {"root_dir": str(root), "batch_size": 16, "val_split": 50,
                                                    **args}}
    in_channels = 1 if dataset == "fashion_mnist" else 3
    classes = 20 if args.get("label") == "coarse" else 10
    cfg["train_wrapper"]["args"]["model_spec"] = {"name": "tiny_cnn",
                                                  "args": {"in_channels": in_channels, "num_classes": classes}}
    return cfg


def epoch_scalars(run_dir: Path) -> dict[str, list[float]]:
    tags = scalars(run_dir)
    return {t: [round(v, 5) for _, v in tags[t]] for t in ("train/loss", "val/loss", "val/acc")}


@pytest.mark.parametrize("dataset", ["cifar10", "fashion_mnist"])
def test_both_loops_train_the_same(dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = write_good(dataset, tmp_path / "data")
    path = write_config(tmp_path / "cfg.yaml", train_config(dataset, root))
    assert run_train_pl(["--config", str(path), "--save-dir", "save", "--name", "pl"]) == 0
    assert run_train(["--config", str(path), "--save-dir", "save", "--name", "plain"]) == 0
    pl_run, plain_run = epoch_scalars(tmp_path / "save" / "pl"), epoch_scalars(tmp_path / "save" / "plain")
    assert len(pl_run["train/loss"]) == 2 and all(np.isfinite(pl_run["train/loss"]))
    assert plain_run == pl_run
    for run in ("pl", "plain"):
        assert (tmp_path / "save" / run / "ckpt" / "last.ckpt").is_file()
        assert "test/acc" in (tmp_path / "save" / run / "results.json").read_text()


def test_cifar100_coarse_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = write_cifar100(tmp_path / "data")
    cfg = train_config("cifar100", root, label="coarse")
    assert run_train_pl(["--config", str(write_config(tmp_path / "c.yaml", cfg)), "--save-dir", "save"]) == 0
    assert len(epoch_scalars(tmp_path / "save" / "c")["val/acc"]) == 2


def test_cifar100_fine_labels_exceed_a_20_class_model(tmp_path, monkeypatch, capsys):
    """The fine labels (up to 99) do not fit a model with 20 outputs: found before training."""
    monkeypatch.chdir(tmp_path)
    cfg = train_config("cifar100", write_cifar100(tmp_path / "data"), label="coarse")
    cfg["data_module"]["args"]["label"] = "fine"
    assert run_train_pl(["--config", str(write_config(tmp_path / "f.yaml", cfg)), "--save-dir", "save"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "labels run from 0 to 99" in err and "20 classes" in err
    assert not (tmp_path / "save").exists()


# ---------------------------------------------------------------- configs/fashion-mnist.yaml


def test_fashion_mnist_config(tmp_path, monkeypatch, capsys):
    from helpers import ROOT
    from torchx.config import load

    config = ROOT / "configs" / "fashion-mnist.yaml"
    cfg = load(config)
    assert cfg["data_module"]["name"] == "fashion_mnist"
    assert cfg["data_module"]["args"]["root_dir"] == "./load/fashion_mnist"
    monkeypatch.chdir(tmp_path)
    write_fake_mnist(tmp_path / "load" / "fashion_mnist")
    common = ["--config", str(config), "--save-dir", "save", "+data_module.args.val_split=32"]
    assert run_train_pl([*common, "--dry-run"]) == 0
    assert "dry run: nothing was created" in capsys.readouterr().out
    assert not (tmp_path / "save").exists()
    assert run_train_pl([*common, "trainer_params.max_epochs=1", "+trainer_params.limit_train_batches=2",
                         "+trainer_params.limit_val_batches=1", "+trainer_params.limit_test_batches=1",
                         "+trainer_params.enable_progress_bar=false"]) == 0
    assert (tmp_path / "save" / "fashion-mnist" / "ckpt" / "last.ckpt").is_file()

