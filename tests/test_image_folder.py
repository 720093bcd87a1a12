"""Tests for the image_folder data module and configs/image-folder.yaml.

The folders hold real PNG files, written into tmp_path: scikit-learn's 8x8 handwritten digits,
upscaled (nearest neighbour, so each source pixel is a block) to 16x16 or to several sizes, in
grayscale, or in RGB with a different view of the digit in each channel. The class folders are
named after the digits in words, so their sorted order (eight, five, four, ...) is not the digits'
and a label taken from the wrong order shows.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import torchx.datasets as datasets
from helpers import ROOT, read_metrics, refused, run_train, run_train_pl, tiny_config, write_config
from torchx.datasets.folder import FileList, FolderBatchDataset, ImageFolder
from torchx.errors import ConfigError

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SORTED = sorted(NAMES)
MIXED = [(16, 16), (24, 24), (16, 24), (24, 16)]  # (height, width) by image number, for mixed-size folders


@functools.cache
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images * 15).astype(np.uint8), bunch.target  # 0..16 -> 0..240


def digit_pixels(i: int, size: tuple[int, int], rgb: bool) -> np.ndarray:
    """Digit i at (height, width): [H, W] grayscale, or [H, W, 3] with red the digit, green it
    mirrored left-right, blue it upside down."""
    image = Image.fromarray(digits()[0][i]).resize((size[1], size[0]), Image.NEAREST)
    gray = np.array(image)
    return np.stack([gray, gray[:, ::-1], gray[::-1]], axis=-1) if rgb else gray


def write_images(top: Path, numbers, size=(16, 16), rgb: bool = False, skip_classes=()) -> list[Path]:
    """Digits `numbers` as top/<digit in words>/<number>.png; `size` is one (height, width) or a
    function of the number."""
    paths = []
    for i in numbers:
        name = NAMES[digits()[1][i]]
        if name in skip_classes:
            continue
        folder = top / name
        folder.mkdir(parents=True, exist_ok=True)
        hw = size(i) if callable(size) else size
        Image.fromarray(np.ascontiguousarray(digit_pixels(i, hw, rgb))).save(folder / f"{i:04d}.png")
        paths.append(folder / f"{i:04d}.png")
    return paths


def mixed(i: int) -> tuple[int, int]:
    return MIXED[i % len(MIXED)]


def flat(root: Path, n: int = 120, **kwargs) -> Path:
    write_images(root, range(n), **kwargs)
    return root


def split_layout(root: Path, **kwargs) -> Path:
    """train/ of 100 digits, val/ of 30 without any 'nine', test/ of 30."""
    write_images(root / "train", range(100), **kwargs)
    write_images(root / "val", range(100, 130), skip_classes=("nine",), **kwargs)
    write_images(root / "test", range(130, 160), **kwargs)
    return root


def make(root: Path, **kwargs) -> ImageFolder:
    return datasets.make({"name": "image_folder", "args": {"root_dir": str(root), "batch_size": 16, **kwargs}})


def number(path: str | Path) -> int:
    return int(Path(path).stem)


def expected(paths, rgb: bool, size=None) -> torch.Tensor:
    """The [N, C, H, W] uint8 images the files hold, from the digits they were written from."""
    out = []
    for p in paths:
        pixels = digit_pixels(number(p), size or (16, 16), rgb)
        out.append(torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1) if rgb else pixels[None])))
    return torch.stack(out)


def epoch(dm: ImageFolder, split: str = "train") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every batch of one epoch of a split, finished as the training loops finish it."""
    loader = dm.train_dataloader() if split == "train" else dm.val_dataloader()
    return [dm.on_after_batch_transfer(batch, 0) for batch in loader]


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b) > 0
    for (xa, ya), (xb, yb) in zip(a, b):
        assert xa.dtype == torch.float32 and torch.equal(ya, yb) and torch.equal(xa, xb)


# ---------------------------------------------------------------- layouts and labels


@pytest.mark.parametrize("rgb", [False, True], ids=["gray", "rgb"])
def test_flat_layout_labels_follow_sorted_class_folders(tmp_path, rgb):
    root = flat(tmp_path / "digits", rgb=rgb)
    dm = make(root, grayscale=not rgb, val_split=20)
    assert dm.classes == SORTED and dm.num_classes == 10 and dm.class_to_idx["eight"] == 0
    assert dm.in_channels == (3 if rgb else 1) and dm.image_size == 16 and dm.layout == "flat"
    files = dm.data_files()
    assert len(files) == 120 and all(p.suffix == ".png" and p.is_file() for p in files)
    data = dm.load()
    images, labels = data["train"]
    assert set(data) == {"train"} and images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert torch.equal(images, expected(files, rgb))
    assert [dm.classes[y] for y in labels.tolist()] == [NAMES[digits()[1][number(p)]] for p in files]
    assert [dm.classes[y] for y in labels.tolist()] == [p.parent.name for p in files]
    dm = make(root, grayscale=not rgb, val_split=20)
    dm.setup()
    assert dm.stored_in_memory and {k: len(v[1]) for k, v in dm.splits.items()} == {"train": 100, "val": 20}
    together = torch.cat([dm.splits["train"][1], dm.splits["val"][1]])
    assert torch.equal(together.sort().values, labels.sort().values)


def test_split_layout_reads_train_val_and_test_folders(tmp_path):
    root = split_layout(tmp_path / "digits", rgb=True)
    for in_memory in (True, False):
        dm = make(root, in_memory=in_memory)
        dm.setup()
        assert dm.layout == "split" and dm.classes == SORTED and dm.stored_in_memory is in_memory
        sizes = {k: len(v[1]) for k, v in dm.splits.items()}
        n_val = sum(NAMES[t] != "nine" for t in digits()[1][100:130])
        assert sizes == {"train": 100, "val": n_val, "test": 30}
        val_labels = dm.splits["val"][1]
        assert SORTED.index("nine") not in val_labels.tolist()  # a class missing from val/ is fine
        files = dm.data_files()
        assert [p.parent.parent.name for p in files] == ["train"] * 100 + ["val"] * n_val + ["test"] * 30
        # val/ and test/ keep their file order and are labelled with train's class indices
        val_files = [p for p in files if p.parent.parent.name == "val"]
        assert [SORTED[y] for y in val_labels.tolist()] == [p.parent.name for p in val_files]
        if in_memory:
            assert torch.equal(dm.splits["val"][0], expected(val_files, rgb=True))
        else:
            assert dm.splits["val"][0].paths == [str(p) for p in val_files]
        assert dm.labels().numel() == 100 + n_val + 30


@pytest.mark.parametrize("val_split, test_split, sizes", [
    (10, 20, {"train": 90, "val": 10, "test": 20}),
    (0.1, 0.25, {"train": 81, "val": 9, "test": 30}),
    (0, None, {"train": 120}),
    (None, None, {"train": 108, "val": 12}),  # the default: a tenth of train for validation, no test set
])
def test_flat_layout_carves_val_and_test(tmp_path, val_split, test_split, sizes):
    root = flat(tmp_path / "digits")
    args = {k: v for k, v in (("val_split", val_split), ("test_split", test_split)) if v is not None}
    dm = make(root, grayscale=True, **args)
    dm.setup()
    assert {k: len(v[1]) for k, v in dm.splits.items()} == sizes
    everything = torch.cat([images for images, _ in dm.splits.values()])
    assert len({bytes(img.numpy()) for img in everything}) == len(everything) == 120  # disjoint, all there
    again = make(root, grayscale=True, **args)
    again.setup()
    assert all(torch.equal(dm.splits[k][0], again.splits[k][0]) for k in sizes)  # split_seed decides


def test_hidden_and_other_files_are_ignored_extensions_any_case(tmp_path):
    root = flat(tmp_path / "digits", n=30)
    Image.fromarray(digit_pixels(0, (16, 16), False)).save(root / "zero" / ".hidden.png")
    (root / "zero" / "notes.txt").write_text("not an image")
    (root / "zero" / "broken.gif").write_bytes(b"GIF89a and nothing else")  # .gif: not an IMG_EXTENSION
    (root / ".ipynb_checkpoints").mkdir()
    Image.fromarray(digit_pixels(1, (16, 16), False)).save(root / ".ipynb_checkpoints" / "0001.png")
    (root / "one" / "more" / ".cache").mkdir(parents=True)
    Image.fromarray(digit_pixels(1, (16, 16), False)).save(root / "one" / "more" / "9001.PNG")  # nested, upper case
    Image.fromarray(digit_pixels(1, (16, 16), False)).save(root / "one" / "more" / ".cache" / "9002.png")
    Image.fromarray(np.stack([digit_pixels(2, (16, 16), False)] * 3, -1)).save(root / "two" / "9003.JPeG",
                                                                               quality=95)
    dm = make(root, grayscale=True, val_split=0)
    assert dm.classes == SORTED  # no '.ipynb_checkpoints' class
    names = {p.name for p in dm.data_files()}
    assert len(names) == 32 and {"9001.PNG", "9003.JPeG"} <= names
    assert not {".hidden.png", "notes.txt", "broken.gif", "9002.png"} & names
    dm.setup()
    assert len(dm.splits["train"][1]) == 32


def test_grayscale_files_read_as_rgb_and_rgb_files_as_grayscale(tmp_path):
    gray_root, rgb_root = flat(tmp_path / "gray", n=20), flat(tmp_path / "rgb", n=20, rgb=True)
    dm = make(gray_root, val_split=0)  # RGB by default: a grayscale file's one channel three times
    images = dm.load()["train"][0]
    assert images.shape == (20, 3, 16, 16) and torch.equal(images[:, 0], images[:, 2])
    assert torch.equal(images[:, :1], expected(dm.data_files(), rgb=False))
    dm = make(rgb_root, grayscale=True, val_split=0)
    images = dm.load()["train"][0]
    luminance = [np.asarray(Image.open(p).convert("L")) for p in dm.data_files()]
    assert images.shape == (20, 1, 16, 16) and torch.equal(images[:, 0], torch.from_numpy(np.stack(luminance)))


# ---------------------------------------------------------------- storage modes


@pytest.mark.parametrize("limit, image_size, sizes, in_memory", [
    (0.1, None, (16, 16), True),      # 120 x 3 x 16 x 16 bytes = 0.088 MiB
    (0.08, None, (16, 16), False),
    (0.03, 8, (16, 16), True),        # resized to 8x8 as read: 0.022 MiB
    (2048, None, mixed, False),       # several sizes and no image_size: lazy, whatever the limit
    (0.3, [16, 20], mixed, True),     # 120 x 3 x 16 x 20
])
def test_auto_storage_rule(tmp_path, limit, image_size, sizes, in_memory):
    dm = make(flat(tmp_path / "digits", size=sizes, rgb=True), memory_limit_mb=limit, image_size=image_size,
              train_transforms=[{"name": "Resize", "args": {"size": [12, 12]}}],
              eval_transforms=[{"name": "Resize", "args": {"size": [12, 12]}}])
    dm.setup()
    assert dm.stored_in_memory is in_memory
    images = dm.splits["train"][0]
    assert isinstance(images, torch.Tensor if in_memory else FileList)
    assert dm.image_size == (None if sizes is mixed and image_size is None else image_size or 16)
    x, y = epoch(dm)[0]
    assert x.shape == (16, 3, 12, 12)


@pytest.mark.parametrize("case", ["one-size", "resized-as-read"])
def test_in_memory_and_lazy_give_the_same_batches(tmp_path, case):
    if case == "one-size":
        root, args = flat(tmp_path / "digits", rgb=True), {}
    else:  # several sizes, made one by image_size; a deterministic per-image resize, a flip on the device
        transforms = [{"name": "Resize", "args": {"size": [18, 18]}}, {"name": "CenterCrop", "args": {"size": 16}},
                      {"name": "RandomHorizontalFlip"}]
        root = flat(tmp_path / "digits", rgb=True, size=mixed)
        args = {"image_size": [20, 20], "train_transforms": transforms, "eval_transforms": transforms[:2]}
    runs = {}
    for in_memory in (True, False):
        torch.manual_seed(3)  # the run's seed decides the data order and the augmentation draws
        dm = make(root, in_memory=in_memory, val_split=24, **args)
        dm.setup()
        assert dm.stored_in_memory is in_memory
        runs[in_memory] = epoch(dm, "train"), epoch(dm, "val")
    assert_same_batches(runs[True][0], runs[False][0])
    assert_same_batches(runs[True][1], runs[False][1])


def test_lazy_loader_workers_give_the_same_batches(tmp_path):
    """Random per-image crops and device flips, drawn from the batch's key alone: the same pixels
    from the main process and from two worker processes, on a folder of four sizes."""
    root = flat(tmp_path / "digits", n=80, rgb=True, size=mixed)
    args = {"in_memory": False, "val_split": 16,
            "train_transforms": [{"name": "RandomResizedCrop", "args": {"size": 12, "scale": [0.3, 1.0]}},
                                 {"name": "RandomHorizontalFlip"}],
            "eval_transforms": [{"name": "Resize", "args": {"size": [12, 12]}}]}
    runs = {}
    for workers in (0, 2):
        torch.manual_seed(11)
        dm = make(root, num_workers=workers, **args)
        dm.setup()
        runs[workers] = epoch(dm, "train"), epoch(dm, "val")
    assert_same_batches(runs[0][0], runs[2][0])
    assert_same_batches(runs[0][1], runs[2][1])
    first = runs[0][0][0][0]
    assert first.shape == (16, 3, 12, 12) and not torch.equal(first[0], first[1])


def test_lazy_batch_of_two_sizes_without_transforms_names_both_files(tmp_path):
    paths = write_images(tmp_path / "d", [0, 1], size=mixed)
    files = FileList([str(p) for p in paths], [mixed(0), mixed(1)])
    data = FolderBatchDataset(files, torch.tensor([0, 1]), 0.5, 0.5)
    with pytest.raises(ConfigError, match="different sizes") as info:
        data[[0, 1]]
    assert str(paths[0]) in str(info.value) and str(paths[1]) in str(info.value)
    assert "image_size" in str(info.value)
    x, y = data[[1]]  # one image is one size
    assert x.shape == (1, 3, 24, 24) and y.tolist() == [1]


@pytest.mark.parametrize("workers", [0, 2])
def test_lazy_decode_error_later_names_the_file(tmp_path, workers):
    """A file broken after setup (it passed the header check then) fails its batch with one message
    naming it, from the main process or a worker."""
    root = flat(tmp_path / "digits", n=40)
    dm = make(root, in_memory=False, val_split=0, num_workers=workers, shuffle=False)
    dm.setup()
    victim = Path(dm.splits["train"][0].paths[20])
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 2])
    with pytest.raises(ConfigError) as info:
        epoch(dm)
    message = str(info.value)
    assert message.startswith(f"{victim}: cannot decode it") and "truncated" in message
    assert "Traceback" not in message and len(message.splitlines()) == 1


# ---------------------------------------------------------------- bad input, through the entry points


def broken_bytes(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def layout_flat(root: Path) -> None:
    flat(root, n=60, rgb=True)


def bad(build, args=None, phrases=(), names=()):
    """build(root) makes the folder; `names` are paths relative to root that the message must name."""
    return build, args or {}, phrases, names


def with_damage(base, damage):
    def build(root: Path) -> None:
        base(root)
        damage(root)
    return build


def truncate(rel: str):
    return lambda root: broken_bytes(root / rel)


def garbage(rel: str):
    return lambda root: (root / rel).write_bytes(b"\x89PNG\r\n\x1a\n but then nothing a PNG holds")


def empty_class(root: Path) -> None:
    (root / "eleven").mkdir()
    (root / "eleven" / "readme.txt").write_text("no images here")


def mixed_flat(root: Path) -> None:
    flat(root, n=60, rgb=True, size=mixed)


def loose_images(root: Path) -> None:
    root.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(digit_pixels(i, (16, 16), False)).save(root / f"{i}.png")


def only_text(root: Path) -> None:
    (root / "zero").mkdir(parents=True)
    (root / "zero" / "a.txt").write_text("x")
    (root / "one").mkdir()


def split_with(extra) -> callable:
    def build(root: Path) -> None:
        write_images(root / "train", range(60), rgb=True)
        extra(root)
    return build


def extra_val_class(root: Path) -> None:
    write_images(root / "val", range(60, 70), rgb=True)
    (root / "val" / "eleven").mkdir()
    Image.fromarray(digit_pixels(0, (16, 16), True)).save(root / "val" / "eleven" / "x.png")


FIRST = "zero/0000.png"  # digit 0 is a zero
RESIZE_INT = [{"name": "Resize", "args": {"size": 12}}]  # the shorter side only: mixed aspects stay mixed

BAD = {
    "root-missing": bad(lambda root: None, phrases=["root_dir", "does not exist", "class folders"], names=[""]),
    "root-is-a-file": bad(lambda root: root.write_text("x"), phrases=["is a file, not a folder"], names=[""]),
    "empty-folder": bad(lambda root: root.mkdir(), phrases=["has no class folders and no images", ".png .ppm"],
                        names=[""]),
    "images-but-no-class-folders": bad(loose_images, phrases=["no class folders", "3 images lie directly"],
                                       names=["", "0.png"]),
    "no-images-anywhere": bad(only_text, phrases=["has no images", ".jpg .jpeg .png"], names=["one"]),
    "class-folder-without-images": bad(with_damage(layout_flat, empty_class), phrases=["has no images"],
                                       names=["eleven"]),
    "truncated-png-in-memory": bad(with_damage(layout_flat, truncate(FIRST)), {"in_memory": True},
                                   ["cannot decode it", "truncated or corrupt"], [FIRST]),
    "truncated-png-lazy": bad(with_damage(layout_flat, truncate(FIRST)), {"in_memory": False},
                              ["cannot read it as an image", "truncated"], [FIRST]),
    "truncated-png-auto": bad(with_damage(layout_flat, truncate(FIRST)), {},
                              ["cannot read it as an image"], [FIRST]),
    "not-an-image-in-memory": bad(with_damage(layout_flat, garbage(FIRST)), {"in_memory": True},
                                  ["cannot read it as an image", "not an image"], [FIRST]),
    "not-an-image-lazy": bad(with_damage(layout_flat, garbage(FIRST)), {"in_memory": False},
                             ["cannot read it as an image", "not an image"], [FIRST]),
    "mixed-sizes-in-memory": bad(mixed_flat, {"in_memory": True},
                                 ["in_memory: true needs images of one size", "0008.png is 16x16 and",
                                  "0018.png is 24x16", "set data_module.args.image_size (e.g. 24)"]),
    "mixed-sizes-lazy-no-transforms": bad(mixed_flat, {"in_memory": False},
                                          ["the train images differ in size", "has no per-image transform",
                                           "data_module.args.train_transforms"]),
    "mixed-sizes-auto-no-transforms": bad(mixed_flat, {}, ["images differ in size", "image_size"]),
    "mixed-aspect-after-resize": bad(mixed_flat, {"train_transforms": RESIZE_INT, "eval_transforms": RESIZE_INT},
                                     ["after the per-image part of data_module.args.train_transforms",
                                      "becomes [3, 18, 12]", "[height, width]"]),
    "extra-class-in-val": bad(split_with(extra_val_class), phrases=["has class folder 'eleven'", "lacks"],
                              names=["val", "train"]),
    "unknown-split-folder": bad(split_with(lambda root: write_images(root / "validation", range(5))),
                                phrases=["it also holds 'validation'", "train/, val/ and test/"]),
    "val-split-and-val-folder": bad(split_with(lambda root: write_images(root / "val", range(60, 70), rgb=True)),
                                    {"val_split": 0.2}, ["val_split=0.2 and a val/ folder"]),
    "test-split-too-large": bad(layout_flat, {"test_split": 60}, ["test_split=60 leaves no training images"]),
    "bad-image-size": bad(layout_flat, {"image_size": [16, 0]}, ["image_size=[16, 0] is not a size",
                                                                 "[height, width]"]),
    "bad-in-memory": bad(layout_flat, {"in_memory": "yes"}, ["in_memory", "'yes'"]),
    "bad-memory-limit": bad(layout_flat, {"memory_limit_mb": 0}, ["memory_limit_mb must be a positive number"]),
    "negative-test-split": bad(layout_flat, {"test_split": -1}, ["test_split must be a count"]),
}
BOTH_LOOPS = {"truncated-png-lazy", "mixed-sizes-in-memory", "extra-class-in-val"}


def folder_config(tmp_path: Path, root: Path, **args) -> Path:
    cfg = tiny_config()
    cfg["data_module"] = {"name": "image_folder", "args": {"root_dir": str(root), "batch_size": 16, **args}}
    cfg["train_wrapper"]["args"]["model_spec"] = {"name": "tiny_cnn", "args": {"in_channels": 3, "num_classes": 10}}
    return write_config(tmp_path / "bad.yaml", cfg)


@pytest.mark.parametrize("case, loop", [(c, loop) for c in BAD for loop in ("train_pl", "train")
                                        if loop == "train_pl" or c in BOTH_LOOPS])
def test_bad_input(case, loop, tmp_path, monkeypatch, capsys):
    build, args, phrases, names = BAD[case]
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "images"
    build(root)
    config = folder_config(tmp_path, root, **args)
    before = sorted(tmp_path.rglob("*"))
    err = refused(loop, config, capsys)
    for phrase in phrases:
        assert phrase in err, f"{phrase!r} not in {err!r}"
    for rel in names:
        assert str(root / rel if rel else root) in err, f"{root / rel} not named in {err!r}"
    assert not (tmp_path / "save").exists()
    assert sorted(tmp_path.rglob("*")) == before


def test_mixed_sizes_message_names_two_files_of_different_sizes(tmp_path):
    """The lazy check names a pair whose sizes really differ, with those sizes (width x height)."""
    mixed_flat(tmp_path / "d")
    dm = make(tmp_path / "d", in_memory=False, val_split=0)
    with pytest.raises(ConfigError) as info:
        dm.setup()
    named = re.findall(r"([^\s(]+\.png) is (\d+)x(\d+)", str(info.value))
    assert len(named) == 2
    for path, width, height in named:
        assert Image.open(path).size == (int(width), int(height))
    assert named[0][1:] != named[1][1:]


# ---------------------------------------------------------------- configs/image-folder.yaml


def test_image_folder_config_runs_under_both_loops(tmp_path, monkeypatch):
    from torchx.config import load

    config = ROOT / "configs" / "image-folder.yaml"
    cfg = load(config)
    assert cfg["data_module"]["name"] == "image_folder"
    monkeypatch.chdir(tmp_path)
    root = split_layout(tmp_path / "images", rgb=True, size=mixed)  # four sizes: read lazily
    common = ["--config", str(config), "--save-dir", "save", f"data_module.args.root_dir={root}",
              "data_module.args.batch_size=8", "trainer_params.max_epochs=1",
              "+trainer_params.limit_train_batches=2", "+trainer_params.limit_val_batches=1",
              "+trainer_params.limit_test_batches=1", "+trainer_params.enable_progress_bar=false"]
    assert cfg["data_module"]["args"]["num_workers"] > 0
    assert run_train_pl([*common, "--name", "pl"]) == 0  # batches decoded in the config's worker processes
    assert run_train([*common, "--name", "plain", "data_module.args.num_workers=0"]) == 0  # and in this one
    rows = {}
    for run in ("pl", "plain"):
        run_dir = tmp_path / "save" / run
        assert (run_dir / "ckpt" / "last.ckpt").is_file()
        assert "decoded per batch in the data loader" in (run_dir / "data.txt").read_text()
        rows[run] = [{k: None if v is None else round(v, 5) for k, v in row.items()}
                     for row in read_metrics(run_dir / "metrics.csv")]
    assert rows["pl"] == rows["plain"]
    assert any(r.get("val/acc") is not None for r in rows["pl"])
    saved = yaml.safe_load((tmp_path / "save" / "pl" / "config.yaml").read_text())  # ${data:...} resolved
    classes = sorted(p.name for p in (root / "train").iterdir())
    assert saved["train_wrapper"]["args"]["model_spec"]["args"] == {"num_classes": len(classes), "in_channels": 3,
                                                                     "small_input": True}
    assert all(np.isfinite(r["train/loss"]) for r in rows["pl"] if r.get("train/loss") is not None)
