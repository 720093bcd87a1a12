"""Tests for the cluttered_mnist data module and configs/cluttered-mnist.yaml.

The MNIST source is four gzipped IDX files in the real format, written into a temporary folder:
the first few hundred real digits when the shared MNIST folder exists, else scikit-learn's 8x8
handwritten digits upscaled to 28x28. The generated images are checked against a slow reference
that pastes one fragment at a time with plain slicing.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

import pytest
import torch

import torchx.datasets as datasets
from helpers import (
    ROOT,
    SHARED_MNIST,
    read_metrics,
    refused,
    run_train,
    run_train_pl,
    tiny_config,
    write_config,
    write_idx,
)
from torchx.datasets.cluttered import ClutteredMNIST, compose, plan
from torchx.datasets.mnist import read_idx
from torchx.errors import ConfigError

N_TRAIN, N_TEST = 240, 60
STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# ---------------------------------------------------------------- the MNIST source files


@functools.cache
def source_digits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{'train': (images [N, 28, 28] uint8, labels uint8), 'test': ...} of real handwritten digits."""
    if (SHARED_MNIST / "t10k-labels-idx1-ubyte.gz").is_file():
        read = {stem: read_idx(SHARED_MNIST / f"{stem}.gz") for stem in STEMS}
        return {"train": (read[STEMS[0]][:N_TRAIN], read[STEMS[1]][:N_TRAIN]),
                "test": (read[STEMS[2]][:N_TEST], read[STEMS[3]][:N_TEST])}
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = torch.from_numpy(bunch.images * 15).to(torch.uint8)  # 0..16 -> 0..240
    big = torch.nn.functional.pad(small.repeat_interleave(3, 1).repeat_interleave(3, 2), (2, 2, 2, 2))
    labels = torch.from_numpy(bunch.target).to(torch.uint8)
    return {"train": (big[:N_TRAIN], labels[:N_TRAIN]),
            "test": (big[N_TRAIN:N_TRAIN + N_TEST], labels[N_TRAIN:N_TRAIN + N_TEST])}


def write_mnist(folder: Path, digits: dict | None = None) -> Path:
    digits = digits or source_digits()
    for (split, prefix) in (("train", "train"), ("test", "t10k")):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", digits[split][0])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", digits[split][1])
    return folder


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("mnist"))


def make(mnist: Path, cache: Path, **kwargs) -> ClutteredMNIST:
    args = {"root_dir": str(cache), "mnist_dir": str(mnist), "batch_size": 16, "val_split": 40, **kwargs}
    return datasets.make({"name": "cluttered_mnist", "args": args})


def generated(mnist: Path, cache: Path, **kwargs) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return make(mnist, cache, **kwargs).load()


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------- defaults and attributes


def test_registered_with_its_defaults():
    assert datasets.registry.get("cluttered_mnist") is ClutteredMNIST
    dm = ClutteredMNIST()
    assert dm.root_dir == Path("./load/cluttered_mnist") and dm.source.root_dir == Path("./load/mnist")
    assert (dm.canvas, dm.n_clutter, dm.fragment, dm.data_seed) == ((60, 60), 8, (8, 8), 0)
    assert (dm.n_train, dm.n_test, dm.val_split, dm.download) == (None, None, 5000, False)
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (10, 1, 60)
    assert (dm.mean, dm.std) == (0.0572, 0.2146)
    wide = ClutteredMNIST(canvas=[40, 64], fragment=[4, 12])
    assert (wide.canvas, wide.fragment, wide.image_size) == ((40, 64), (4, 12), [40, 64])


# ---------------------------------------------------------------- what the images are


def reference(digits: torch.Tensor, layout, canvas: tuple[int, int], fragment: tuple[int, int]) -> torch.Tensor:
    """The images of `layout`, one fragment at a time with plain slicing."""
    n, k = layout.source.shape
    (fh, fw), out = fragment, torch.zeros(n, 1, *canvas, dtype=torch.uint8)
    for i in range(n):
        pieces = [(digits[int(layout.source[i, j])], *layout.cut_at[i, j].tolist(), *layout.paste_at[i, j].tolist(),
                   fh, fw) for j in range(k)]
        pieces.append((digits[i], 0, 0, *layout.digit_at[i].tolist(), 28, 28))
        for digit, cy, cx, py, px, h, w in pieces:
            region = out[i, 0, py:py + h, px:px + w]
            region.copy_(torch.maximum(region, digit[cy:cy + h, cx:cx + w]))
    return out


@pytest.mark.parametrize("canvas,n_clutter,fragment", [((60, 60), 8, (8, 8)), ((40, 64), 3, (4, 12)),
                                                       ((28, 28), 2, (28, 28)), ((50, 50), 0, (8, 8))])
def test_images_match_a_slow_reference(canvas, n_clutter, fragment):
    digits = source_digits()["train"][0]
    n = 80  # the first 80 images, with fragments from all the split's digits
    layout = plan(n, len(digits), canvas, n_clutter, fragment, seed=3)
    assert torch.equal(compose(digits, layout, canvas, fragment), reference(digits, layout, canvas, fragment))
    # every fragment comes from another digit of the split, and everything lies on the canvas
    assert not (layout.source == torch.arange(n).unsqueeze(1)).any()
    assert layout.source.shape == (n, n_clutter) and ((layout.source >= 0) & (layout.source < len(digits))).all()
    assert (layout.digit_at >= 0).all() and (layout.digit_at <= torch.tensor(canvas) - 28).all()
    assert (layout.paste_at <= torch.tensor(canvas) - torch.tensor(fragment)).all()
    assert (layout.cut_at <= 28 - torch.tensor(fragment)).all()
    if canvas[0] > 28:  # the positions really vary
        assert len(set(map(tuple, layout.digit_at.tolist()))) > n // 2
    if n_clutter:
        assert len(set(layout.source.flatten().tolist())) > min(n * n_clutter, len(digits)) // 3


def digit_offsets(image: torch.Tensor, digit: torch.Tensor) -> list[tuple[int, int]]:
    """The offsets at which the canvas [H, W] holds at least the digit's pixels."""
    windows = image.unfold(0, 28, 1).unfold(1, 28, 1)  # [H - 27, W - 27, 28, 28]
    return [tuple(p) for p in (windows >= digit).flatten(2).all(2).nonzero().tolist()]


def test_the_digit_is_on_the_canvas_and_nothing_else_without_clutter(mnist_dir, tmp_path):
    data = generated(mnist_dir, tmp_path, n_clutter=0)
    for split in ("train", "test"):
        images, labels = data[split]
        digits, source_labels = source_digits()[split]
        assert images.shape == (len(digits), 1, 60, 60) and images.dtype == torch.uint8
        assert torch.equal(labels, source_labels.long())
        places = set()
        for image, digit in zip(images[:50, 0], digits[:50]):
            (top, left), *_ = digit_offsets(image, digit)
            assert torch.equal(image[top:top + 28, left:left + 28], digit)
            assert int(image.sum()) == int(digit.sum())  # nothing outside the digit
            places.add((top, left))
        assert len(places) > 25  # at a random place


def test_the_digit_is_there_among_clutter(mnist_dir, tmp_path):
    images, labels = generated(mnist_dir, tmp_path)["train"]
    digits = source_digits()["train"][0][:80]
    cluttered = 0
    for image, digit in zip(images[:80, 0], digits):
        found = digit_offsets(image, digit)
        assert found, "the digit is not on its canvas"
        top, left = found[0]
        outside = image.clone()
        outside[top:top + 28, left:left + 28] = 0
        cluttered += int(outside.sum() > 0)
    assert cluttered > 0.9 * len(digits)  # fragments outside the digit on nearly every canvas
    assert images.float().mean() > source_digits()["train"][0].float().mean() * 784 / 3600 * 1.3


def test_same_seed_same_bits_other_seed_other_images(mnist_dir, tmp_path):
    first = generated(mnist_dir, tmp_path / "a")
    again = generated(mnist_dir, tmp_path / "b")  # a fresh generation: its own cache folder
    other = generated(mnist_dir, tmp_path / "c", data_seed=1)
    for split in ("train", "test"):
        assert torch.equal(first[split][0], again[split][0]) and torch.equal(first[split][1], again[split][1])
        assert not torch.equal(first[split][0], other[split][0])
        assert torch.equal(first[split][1], other[split][1])  # the labels are the digits'


def test_smaller_counts_take_the_first_digits(mnist_dir, tmp_path):
    full = generated(mnist_dir, tmp_path / "all")
    part = generated(mnist_dir, tmp_path / "part", n_train=50, n_test=7, val_split=10)
    assert torch.equal(part["train"][0], full["train"][0][:50]) and torch.equal(part["test"][0], full["test"][0][:7])
    assert torch.equal(part["train"][1], source_digits()["train"][1][:50].long())
    dm = make(mnist_dir, tmp_path / "none", n_test=0, val_split=10)
    dm.setup()
    assert sorted(dm.splits) == ["train", "val"] and dm.test_dataloader() == []


# ---------------------------------------------------------------- the cache


def test_second_setup_reads_the_cache(mnist_dir, tmp_path):
    dm = make(mnist_dir, tmp_path)
    dm.setup()
    (cache,) = tmp_path.iterdir()
    assert dm.data_files() == [cache, *(mnist_dir / f"{stem}.gz" for stem in STEMS)]
    assert cache.name.startswith("cluttered-v1-canvas60x60-clutter8-fragment8x8-seed0-trainall-testall-mnist")
    before = os.stat(cache)
    again = make(mnist_dir, tmp_path)
    again.setup()
    after = os.stat(cache)
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    assert files(tmp_path) == [cache.name]
    for split in ("train", "val", "test"):
        assert torch.equal(dm.splits[split][0], again.splits[split][0])
        assert torch.equal(dm.splits[split][1], again.splits[split][1])
    assert again.data_files()[0] == cache


@pytest.mark.parametrize("change", [{"canvas": 64}, {"canvas": [60, 61]}, {"n_clutter": 4}, {"fragment": 6},
                                    {"fragment": [8, 9]}, {"data_seed": 5}, {"n_train": 100}, {"n_test": 30}])
def test_other_settings_other_cache_file(mnist_dir, tmp_path, change):
    make(mnist_dir, tmp_path).setup()
    base = files(tmp_path)
    dm = make(mnist_dir, tmp_path, **change)
    dm.setup()
    assert len(files(tmp_path)) == 2 and dm.data_files()[0].name not in base
    assert dm.data_files()[0].is_file()


def test_changed_mnist_files_make_new_images(mnist_dir, tmp_path):
    mnist = write_mnist(tmp_path / "mnist")
    first = make(mnist, tmp_path / "cache")
    old = first.load()
    digits = {split: (images.clone(), labels) for split, (images, labels) in source_digits().items()}
    digits["train"][0][0] = 255 - digits["train"][0][0]  # one digit changed
    write_mnist(mnist, digits)
    second = make(mnist, tmp_path / "cache")
    new = second.load()
    assert second.data_files()[0] != first.data_files()[0]
    assert len(files(tmp_path / "cache")) == 2
    assert not torch.equal(new["train"][0][0], old["train"][0][0])
    assert torch.equal(new["test"][0], old["test"][0])  # made from the test digits, which did not change


def truncate(raw: bytes) -> bytes:
    return raw[: len(raw) - 1000]


def flip_one_pixel(raw: bytes) -> bytes:
    return raw[:-5000] + bytes([raw[-5000] ^ 0x40]) + raw[-4999:]


CORRUPT = {
    "truncated": (truncate, "it has"),
    "cut-in-the-header": (lambda raw: raw[:30], "header"),
    "one-pixel-flipped": (flip_one_pixel, "its checksum does not match its contents"),
    "empty": (lambda raw: b"", "it does not start like a cluttered_mnist cache file"),
    "not-a-cache": (lambda raw: b"PK\x03\x04 a zip file, say" * 100, "it does not start like"),
    "header-garbage": (lambda raw: raw[:16] + b"{" * (len(raw) - 16), "its header is unreadable"),
    "huge-header-length": (lambda raw: raw[:8] + (2**40).to_bytes(8, "little") + raw[16:], "its header claims"),
    "other-settings": (lambda raw: raw.replace(b'"data_seed": 0', b'"data_seed": 9', 1),
                       "its header records other settings"),
}


@pytest.mark.parametrize("case", CORRUPT)
def test_a_corrupt_cache_is_made_again(mnist_dir, tmp_path, capsys, case):
    damage, reason = CORRUPT[case]
    dm = make(mnist_dir, tmp_path, n_train=100, n_test=20)
    good = dm.load()
    cache = dm.data_files()[0]
    cache.write_bytes(damage(cache.read_bytes()))
    capsys.readouterr()
    again = make(mnist_dir, tmp_path, n_train=100, n_test=20).load()
    err = capsys.readouterr().err
    assert f"cluttered_mnist: the cache file {cache} is unusable (" in err and "making the images again" in err
    assert reason in err and "Traceback" not in err
    for split in ("train", "test"):
        assert torch.equal(again[split][0], good[split][0]) and torch.equal(again[split][1], good[split][1])
    assert files(tmp_path) == [cache.name]  # rewritten in place, no temporary file left
    make(mnist_dir, tmp_path, n_train=100, n_test=20).load()
    assert capsys.readouterr().err == ""  # and good again


def test_a_leftover_temporary_file_is_ignored(mnist_dir, tmp_path):
    """A process killed while writing leaves only its own temporary file, never a torn cache."""
    dm = make(mnist_dir, tmp_path, n_train=60, n_test=10, val_split=10)
    good = dm.load()
    cache = dm.data_files()[0]
    cache.unlink()
    torn = tmp_path / f".{cache.name}.12345-deadbeef.tmp"
    torn.write_bytes(b"TXCLUT1\n half of it")
    assert torch.equal(make(mnist_dir, tmp_path, n_train=60, n_test=10, val_split=10).load()["train"][0],
                       good["train"][0])
    assert files(tmp_path) == sorted([cache.name, torn.name])


def test_concurrent_setups_agree(mnist_dir, tmp_path):
    """Ranks that set up at once each write their own temporary file and replace the cache with it."""
    results, errors = [None] * 4, []

    def set_up(k: int) -> None:
        try:
            dm = make(mnist_dir, tmp_path, n_train=120, n_test=20)
            dm.setup()
            results[k] = dm.splits
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=set_up, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(files(tmp_path)) == 1  # one cache file, no temporary file left
    for splits in results[1:]:
        for split in ("train", "val", "test"):
            assert torch.equal(splits[split][0], results[0][split][0])
    make(mnist_dir, tmp_path, n_train=120, n_test=20).load()  # and what they left reads back


def test_an_unwritable_cache_folder_still_trains(mnist_dir, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    dm = make(mnist_dir, blocker, n_train=60, n_test=10, val_split=10)
    dm.setup()
    err = capsys.readouterr().err
    assert f"cannot write the cache file {blocker}" in err and "using the images made in memory" in err
    assert len(dm.splits["train"][1]) == 50 and blocker.read_text() == "not a folder"


# ---------------------------------------------------------------- transforms


def test_random_crop_with_padding(mnist_dir, tmp_path):
    crop = [{"name": "RandomCrop", "args": {"size": 60, "padding": 4}}]
    plain = make(mnist_dir, tmp_path, n_train=100, n_test=20, val_split=20, shuffle=False)
    cropped = make(mnist_dir, tmp_path, n_train=100, n_test=20, val_split=20, shuffle=False,
                   train_transforms=crop)
    x, y = next(iter(plain.train_dataloader()))
    cx, cy = cropped.on_after_batch_transfer(next(iter(cropped.train_dataloader())), 0)
    assert cx.shape == x.shape == (16, 1, 60, 60) and cx.dtype == torch.float32 and torch.equal(cy, y)
    assert not torch.equal(cx, x)
    background = -plain.mean / plain.std
    assert torch.isclose(x.min(), torch.tensor(background)) and torch.isclose(cx.min(), torch.tensor(background))
    # a shifted copy of the same canvases: the same pixels, some pushed off the edge
    assert abs(float((cx > background + 1e-4).sum()) / float((x > background + 1e-4).sum()) - 1) < 0.2
    val_x, _ = cropped.on_after_batch_transfer(next(iter(cropped.val_dataloader())), 0)
    assert torch.allclose(val_x, next(iter(plain.val_dataloader()))[0])  # eval batches are not cropped
    again, _ = cropped.on_after_batch_transfer(next(iter(cropped.train_dataloader())), 0)
    assert torch.equal(again, cx)  # the crops are drawn from the run's seed and the batch, nothing else


# ---------------------------------------------------------------- bad input through the entry points


def bad_config(tmp_path: Path, mnist: Path, **args) -> Path:
    cfg = tiny_config(max_epochs=1, limit_train_batches=2, limit_val_batches=1, limit_test_batches=1)
    cfg["data_module"] = {"name": "cluttered_mnist", "args": {
        "root_dir": str(tmp_path / "cache"), "mnist_dir": str(mnist), "batch_size": 16, "val_split": 20,
        "n_train": 100, "n_test": 20, **args}}
    cfg["train_wrapper"]["args"]["model_spec"] = {"name": "tiny_cnn", "args": {"in_channels": 1, "num_classes": 10}}
    return write_config(tmp_path / "bad.yaml", cfg)


BAD_ARGS = {
    "canvas-too-small": ({"canvas": 20}, ["canvas=20 is not a canvas an MNIST digit fits on", "at least 28"]),
    "canvas-too-narrow": ({"canvas": [60, 27]}, ["canvas=[60, 27]", "[height, width] of at least 28"]),
    "canvas-three-sides": ({"canvas": [60, 60, 60]}, ["canvas=[60, 60, 60]", "an int or [height, width]"]),
    "canvas-text": ({"canvas": "60x60"}, ["argument 'canvas'", "'60x60'"]),
    "n-clutter-negative": ({"n_clutter": -1}, ["n_clutter=-1 must be a whole number of fragments, 0 or more"]),
    "n-clutter-fraction": ({"n_clutter": 2.5}, ["argument 'n_clutter'", "2.5"]),
    "fragment-too-large": ({"fragment": 29}, ["fragment=29 is not a fragment that can be cut from a digit",
                                              "from 1 to 28"]),
    "fragment-too-tall": ({"fragment": [30, 8]}, ["fragment=[30, 8]", "from 1 to 28"]),
    "fragment-zero": ({"fragment": 0}, ["fragment=0", "from 1 to 28"]),
    "data-seed-negative": ({"data_seed": -3}, ["data_seed=-3 must be a whole number from 0"]),
    "n-train-zero": ({"n_train": 0}, ["n_train=0 must be a whole number of images, at least 1"]),
    "n-test-negative": ({"n_test": -1}, ["n_test=-1 must be a whole number of images, at least 0"]),
    "n-train-too-many": ({"n_train": N_TRAIN + 1}, [f"n_train={N_TRAIN + 1} is more than the {N_TRAIN} digits of "
                                                    "MNIST's train split in", f"use at most {N_TRAIN}"]),
    "n-test-too-many": ({"n_test": 10_000}, [f"n_test=10000 is more than the {N_TEST} digits of MNIST's test split",
                                             f"use at most {N_TEST} (or null for all of them)"]),
    "missing-mnist": ({"mnist_dir": "{tmp}/no-mnist-here"}, [
        "MNIST files missing in '{tmp}/no-mnist-here': train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz", "point data_module.args.mnist_dir at them",
        "data_module.args.download=true"]),
    "unknown-argument": ({"clutter": 8}, ["unknown argument 'clutter'", "n_clutter"]),
}


@pytest.mark.parametrize("loop", ["train_pl", "train"])
@pytest.mark.parametrize("case", BAD_ARGS)
def test_bad_arguments(case, loop, mnist_dir, tmp_path, monkeypatch, capsys):
    args, phrases = BAD_ARGS[case]
    monkeypatch.chdir(tmp_path)
    args = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in args.items()}
    config = bad_config(tmp_path, mnist_dir, **args)
    before = sorted(tmp_path.rglob("*"))
    err = refused(loop, config, capsys)
    for phrase in phrases:
        assert phrase.format(tmp=tmp_path) in err, f"{phrase!r} not in {err!r}"
    assert sorted(tmp_path.rglob("*")) == before  # no save/, no cache folder, nothing else


def test_a_broken_mnist_file_is_named(mnist_dir, tmp_path):
    mnist = write_mnist(tmp_path / "mnist")
    raw = (mnist / "t10k-images-idx3-ubyte.gz").read_bytes()
    (mnist / "t10k-images-idx3-ubyte.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ConfigError, match="t10k-images-idx3-ubyte.gz: cannot decompress .* truncated or corrupt"):
        make(mnist, tmp_path / "cache").setup()
    assert not (tmp_path / "cache").exists()


# ---------------------------------------------------------------- configs/cluttered-mnist.yaml


def test_the_config_runs_under_both_loops_with_equal_metrics(mnist_dir, tmp_path, monkeypatch, capsys):
    from torchx.config import load

    config = ROOT / "configs" / "cluttered-mnist.yaml"
    cfg = load(config)
    args = cfg["data_module"]["args"]
    assert cfg["data_module"]["name"] == "cluttered_mnist"
    assert (args["root_dir"], args["mnist_dir"]) == ("./load/cluttered_mnist", "./load/mnist")
    monkeypatch.chdir(tmp_path)
    common = ["--config", str(config), "--save-dir", "save", f"data_module.args.mnist_dir={mnist_dir}",
              f"data_module.args.root_dir={tmp_path / 'cache'}", "data_module.args.n_train=80",
              "data_module.args.n_test=16", "+data_module.args.val_split=16", "data_module.args.batch_size=16",
              "data_module.args.eval_batch_size=16", "trainer_params.max_epochs=1",
              "+trainer_params.limit_train_batches=2", "+trainer_params.limit_val_batches=1",
              "+trainer_params.limit_test_batches=1", "+trainer_params.enable_progress_bar=false"]
    assert run_train_pl([*common, "--dry-run"]) == 0
    assert "dry run: nothing was created" in capsys.readouterr().out
    assert not (tmp_path / "save").exists()
    assert run_train_pl([*common, "--name", "pl"]) == 0
    assert run_train([*common, "--name", "plain"]) == 0
    pl_rows, plain_rows = (read_metrics(tmp_path / "save" / run / "metrics.csv") for run in ("pl", "plain"))
    assert len(pl_rows) == len(plain_rows) >= 2

    def rounded(rows):
        return [{k: None if v is None else round(v, 5) for k, v in row.items()} for row in rows]

    assert rounded(pl_rows) == rounded(plain_rows)
    assert any(row.get("val/acc") is not None for row in pl_rows)
    assert len(files(tmp_path / "cache")) == 1  # both runs used one cache file
    for run in ("pl", "plain"):
        assert "test/acc" in (tmp_path / "save" / run / "results.json").read_text()
