"""Super-resolution: the paired_images and div2k data modules, the edsr model, the psnr metric and
configs/div2k-sr.yaml, under both loops.

The high-resolution images are PNGs written by the tests from scikit-learn's two sample photos
(427x640 RGB), shrunk and cropped, in the folder layout and in DIV2K's. DIV2K's download runs
against an HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import functools
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import nn

import torchx.datasets as datasets
import torchx.metrics as metrics
import torchx.models as models
import torchx.models.edsr  # noqa: F401  (registers edsr, whatever torchx.models imports)
from helpers import ROOT, read_metrics, refused, run_train, run_train_pl, serve_folder, write_config
from torchx.datasets.base import BatchKey
from torchx.datasets.pairs import DIV2K, PairedImages, dihedral, downscale, read_image
from torchx.errors import ConfigError

RUNNERS = {"train_pl": run_train_pl, "train": run_train}
CONFIG = ROOT / "configs" / "div2k-sr.yaml"


# ---------------------------------------------------------------- test images


@functools.cache
def photos() -> tuple[np.ndarray, ...]:
    """scikit-learn's sample photos (china, flower), 427x640 RGB uint8."""
    from sklearn.datasets import load_sample_images

    return tuple(np.ascontiguousarray(im) for im in load_sample_images().images)


@functools.cache
def small_photos() -> tuple[np.ndarray, ...]:
    """The photos shrunk to 213x320, so that small crops still hold real texture."""
    return tuple(np.array(Image.fromarray(im).resize((320, 213), Image.BICUBIC)) for im in photos())


def save_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_folders(root: Path, val: bool = True, test: bool = True) -> Path:
    """train/: four crops of 100x140 to 100x150; val/ and test/: two crops each, 60x70 to 100x100."""
    for k, im in enumerate(small_photos()):
        save_png(root / "train" / f"{k}a.png", im[:100, :140])
        save_png(root / "train" / f"{k}b.png", im[100:200, 150:300])
        if val:
            save_png(root / "val" / f"{k}.png", im[110:210, 0:100])
        if test:
            save_png(root / "test" / f"{k}.png", im[:60, 250:320])
    return root


def write_single(root: Path) -> Path:
    """Four images directly in root."""
    for k, im in enumerate(small_photos()):
        save_png(root / f"{k}a.png", im[:100, :140])
        save_png(root / f"{k}b.png", im[100:200, 150:300])
    return root


def write_div2k(root: Path) -> Path:
    """DIV2K_train_HR/: four 200x200 full-resolution crops; DIV2K_valid_HR/: two 227x220 crops."""
    n = 1
    for im in photos():
        for top, left in ((0, 0), (200, 300)):
            save_png(root / "DIV2K_train_HR" / f"{n:04d}.png", im[top:top + 200, left:left + 200])
            n += 1
    for k, im in enumerate(photos()):
        save_png(root / "DIV2K_valid_HR" / f"{801 + k:04d}.png", im[200:427, 420:640])
    return root


def png_tensor(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


def make(root: Path, name: str = "paired_images", **args) -> PairedImages:
    return datasets.make({"name": name, "args": {"root_dir": str(root), "patch_size": 24, "batch_size": 4, **args}})


def sr_config(root: Path, name: str = "paired_images", **data_args) -> dict:
    """A tiny EDSR on 24x24 patches: seconds per run."""
    return {
        "data_module": {"name": name, "args": {"root_dir": str(root), "patch_size": 24, "batch_size": 4,
                                               **data_args}},
        "train_wrapper": {"name": "base", "args": {
            "model_spec": {"name": "edsr", "args": {"scale": 2, "n_resblocks": 1, "n_feats": 8}},
            "loss_spec": {"name": "l1"},
            "optim_spec": {"name": "Adam", "args": {"lr": 1.0e-3}},
        }},
        "metrics": [{"name": "psnr"}],
        "trainer_params": {"max_epochs": 2, "limit_train_batches": 3, "limit_val_batches": 2, "limit_test_batches": 1,
                           "enable_progress_bar": False, "enable_model_summary": False},
        "checkpoint": {"monitor": "val/psnr", "mode": "max"},
        "seed": 3,
    }


def found_in(patch: torch.Tensor, image: torch.Tensor) -> list[tuple[int, int]]:
    """Every (top, left) at which `patch` [C, P, P] is exactly a crop of `image` [C, H, W]."""
    p = patch.shape[-1]
    rows = image[:, :image.shape[1] - p + 1].unfold(2, p, 1)  # [C, H-P+1, W-P+1, P]: every row of P pixels
    starts = (rows == patch[:, 0][:, None, None]).all(-1).all(0).nonzero().tolist()  # where the first row fits
    return [(t, left) for t, left in starts if torch.equal(image[:, t:t + p, left:left + p], patch)]


def turns_of_crops(patches: torch.Tensor, images: list[torch.Tensor]) -> list[set[int]]:
    """For each patch [C, P, P], every turn k (see pairs.dihedral) for which it is turn k of some crop
    of one of `images`. Crops whose pixel sum differs from the patch's (a sum no flip or turn changes)
    are skipped unseen."""
    p = patches.shape[-1]
    sums = [F.avg_pool2d(img.double()[None], p, stride=1)[0].sum(0) * (p * p) for img in images]  # every crop's
    found = []
    for patch in patches:
        target, turns = float(patch.double().sum()), set()
        for img, crop_sums in zip(images, sums):
            for top, left in ((crop_sums - target).abs() < 0.5).nonzero().tolist():
                crop = img[:, top:top + p, left:left + p]
                turns |= {k for k in range(8) if torch.equal(dihedral(crop, k), patch)}
        found.append(turns)
    return found


# ---------------------------------------------------------------- reading the layouts


@pytest.mark.parametrize("layout", ["folders", "single", "div2k"])
def test_reads_each_layout(layout, tmp_path):
    root = tmp_path / "data"
    if layout == "folders":
        write_folders(root)
        dm = make(root)
        expect = {"train": sorted((root / "train").iterdir()), "val": sorted((root / "val").iterdir()),
                  "test": sorted((root / "test").iterdir())}
    elif layout == "single":
        write_single(root)
        dm = make(root, val_split=1)
        expect = None
    else:
        write_div2k(root)
        dm = make(root, "div2k", val_split=1)
        expect = None
    dm.setup()
    if expect is None:  # val_split carved one image off the training folder
        folder = root if layout == "single" else root / "DIV2K_train_HR"
        files = sorted(folder.glob("*.png"))
        assert len(dm.files["train"]) == 3 and len(dm.files["val"]) == 1
        assert sorted(dm.files["train"] + dm.files["val"]) == files
        if layout == "div2k":
            assert dm.files["test"] == sorted((root / "DIV2K_valid_HR").iterdir())
        else:
            assert "test" not in dm.files and not dm.has_split("test")
    else:
        assert dm.files == expect
    for split, (images, paths) in dm.splits.items():
        assert len(images) == len(paths) == dm.split_size(split)
        for img, path in zip(images, paths):
            assert img.dtype == torch.uint8 and torch.equal(img, png_tensor(path))  # as Pillow reads the file
    assert dm.data_files() == [p for s in ("train", "val", "test") for p in dm.files.get(s, [])]
    assert dm.labels() is None and dm.in_channels == 3 and dm.scale == 2


def test_defaults():
    dm = DIV2K()
    assert dm.root_dir == Path("./load/div2k") and dm.download is False and dm.val_split == 0
    assert (dm.scale, dm.patch_size, dm.eval_patch_size, dm.samples_per_image, dm.augment) == (2, 96, 192, 1, True)
    assert (dm.mean, dm.std, dm.batch_size) == (0.0, 1.0, 16)
    assert PairedImages(root_dir="x", scale=3, patch_size=48).eval_patch_size == 96
    assert "eval_patch_size=192" in dm.describe()  # without reading anything


def test_images_become_rgb(tmp_path):
    """Grayscale (8 and 16 bit), palette, RGBA and JPEG files all give uint8 RGB [3, H, W]."""
    rgb = small_photos()[0][:40, :50]
    gray = np.array(Image.fromarray(rgb).convert("L"))
    save_png(tmp_path / "gray.png", gray)
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).save(tmp_path / "photo.JPG", quality=95)
    for name in ("gray.png", "gray16.png"):
        img = read_image(tmp_path / name)
        assert img.shape == (3, 40, 50) and torch.equal(img[0], torch.from_numpy(gray)) and torch.equal(img[0], img[2])
    assert torch.equal(read_image(tmp_path / "rgba.png"), torch.from_numpy(rgb).permute(2, 0, 1))
    assert torch.equal(read_image(tmp_path / "palette.png"), png_tensor(tmp_path / "palette.png"))
    jpeg = read_image(tmp_path / "photo.JPG")
    assert jpeg.shape == (3, 40, 50) and (jpeg.float() - torch.from_numpy(rgb).permute(2, 0, 1)).abs().mean() < 4
    assert [p.name for p in PairedImages(root_dir=str(tmp_path)).find_files()["train"]] == \
        ["gray.png", "gray16.png", "palette.png", "photo.JPG", "rgba.png"]


# ---------------------------------------------------------------- the pairs


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_lr_is_exactly_the_bicubic_downscale_of_hr(scale, tmp_path):
    dm = make(write_folders(tmp_path / "data"), scale=scale, patch_size=8 * scale, eval_patch_size=48, augment=False)
    dm.setup()
    torch.manual_seed(0)
    lr, hr = next(iter(dm.train_dataloader()))
    p = 8 * scale
    assert hr.shape == (4, 3, p, p) and lr.shape == (4, 3, 8, 8)
    assert hr.dtype == lr.dtype == torch.float32 and 0 <= lr.min() and lr.max() <= 1
    expect = F.interpolate(hr, size=(8, 8), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    assert torch.equal(lr, expect)
    assert not torch.equal(lr, F.interpolate(hr, size=(8, 8), mode="bicubic", align_corners=False).clamp(0, 1))
    # each HR patch is a crop of a training image, pixel for pixel
    images = dm.splits["train"][0]
    for patch in (hr * 255).round().to(torch.uint8):
        assert any(found_in(patch, img) for img in images)
    # evaluation: the centre crop of each image, eval_patch_size wide
    lr, hr = next(iter(dm.val_dataloader()))
    e = 48
    assert hr.shape == (2, 3, e, e) and torch.equal(lr, downscale(hr, scale))
    for patch, img in zip((hr * 255).round().to(torch.uint8), dm.splits["val"][0]):
        h, w = img.shape[-2:]
        assert found_in(patch, img) == [((h - e) // 2, (w - e) // 2)]


def test_augmented_patches_are_turned_crops(tmp_path):
    dm = make(write_folders(tmp_path / "data"), samples_per_image=8, batch_size=32)
    dm.setup()
    torch.manual_seed(0)
    lr, hr = next(iter(dm.train_dataloader()))
    assert len(hr) == 32 and torch.equal(lr, downscale(hr, 2))
    found = turns_of_crops((hr * 255).round().to(torch.uint8), dm.splits["train"][0])
    assert all(found), "an augmented patch is no flip or turn of any crop"
    assert len(set().union(*found)) >= 6  # 32 draws from 8 turns


def test_eval_full_gives_whole_images(tmp_path):
    root = write_folders(tmp_path / "data")
    save_png(root / "test" / "odd.png", small_photos()[1][:61, :77])
    dm = make(root, scale=3, patch_size=24, eval_patch_size="full", eval_batch_size=1)
    dm.setup()
    shapes = [tuple(hr.shape) for _, hr in dm.test_dataloader()]
    assert shapes == [(1, 3, 60, 69), (1, 3, 60, 69), (1, 3, 60, 75)]  # 0.png, 1.png, odd.png, cut to multiples of 3
    lr, hr = list(dm.test_dataloader())[2]
    assert torch.equal(hr[0], png_tensor(root / "test" / "odd.png")[:, :60, :75].float() / 255)
    assert lr.shape == (1, 3, 20, 25)


def batches(dm: PairedImages, epoch: int, workers: int = 0) -> list[torch.Tensor]:
    dm.num_workers = workers
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return [hr for _, hr in loader]


def test_crops_depend_only_on_seed_epoch_and_batch(tmp_path):
    root = write_folders(tmp_path / "data")
    torch.manual_seed(11)
    a = make(root, samples_per_image=3)
    a.setup()
    first = batches(a, 0)
    assert len(first) == 3 and all(len(hr) == 4 for hr in first)  # 4 images x 3 patches, batches of 4
    torch.rand(5)  # the global RNG's state does not matter, only its seed
    b = make(root, samples_per_image=3)
    b.setup()
    assert all(torch.equal(x, y) for x, y in zip(first, batches(b, 0)))
    assert all(torch.equal(x, y) for x, y in zip(first, batches(b, 0, workers=2)))  # in worker processes too
    again = batches(a, 1)
    assert not any(torch.equal(x, y) for x, y in zip(first, again))  # another epoch, other patches
    # a batch is made from its key alone: the same key twice is the same batch, a neighbour's differs
    ds = a.make_dataset("train", train=True)
    key = BatchKey([0, 5, 6, 11], epoch=4, number=2, rank=0)
    lr, hr = ds[key]
    assert torch.equal(hr, ds[key][1]) and torch.equal(lr, ds[key][0])
    for other in (key._replace(number=3), key._replace(epoch=5), key._replace(rank=1)):
        assert not torch.equal(hr, ds[other][1])
    # samples 0, 4 and 8 are three patches of one image: different crops of it
    same_image = ds[BatchKey([0, 4, 8], 0, 0, 0)][1]
    assert not torch.equal(same_image[0], same_image[1]) and not torch.equal(same_image[1], same_image[2])
    torch.manual_seed(12)  # another run seed: other patches
    c = make(root, samples_per_image=3)
    c.setup()
    assert not torch.equal(first[0], batches(c, 0)[0])


def test_transforms_change_hr_and_lr_follows(tmp_path):
    root = write_folders(tmp_path / "data")
    torch.manual_seed(0)
    plain = make(root, augment=False)
    jitter = make(root, augment=False, train_transforms=[{"name": "ColorJitter", "args": {"brightness": 0.5}}])
    plain.setup()
    jitter.setup()
    (_, hr0), (lr1, hr1) = next(iter(plain.train_dataloader())), next(iter(jitter.train_dataloader()))
    assert hr1.shape == hr0.shape and not torch.equal(hr0, hr1) and torch.equal(lr1, downscale(hr1, 2))
    assert any("ColorJitter" in line for line in jitter.pipeline_lines())


def test_mean_and_std_normalise_the_input_only(tmp_path):
    dm = make(write_folders(tmp_path / "data"), mean=0.5, std=0.25)
    dm.setup()
    lr, hr = next(iter(dm.train_dataloader()))
    assert torch.allclose(lr * 0.25 + 0.5, downscale(hr, 2), atol=1e-6)
    assert 0 <= hr.min() and hr.max() <= 1


# ---------------------------------------------------------------- psnr and edsr


def test_psnr_metric_per_image_pooled_clamped_and_shaved():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(3, 3, 16, 16, generator=g)
    noise = torch.linspace(0.01, 0.2, 3).reshape(3, 1, 1, 1) * torch.randn(3, 3, 16, 16, generator=g)
    out = target + noise

    def db(mse: float) -> float:
        return 10 * math.log10(1.0 / mse)

    clamped = out.clamp(0, 1).double()
    per_image = np.mean([db(float(((clamped[i] - target[i]) ** 2).mean())) for i in range(3)])
    metric = metrics.make({"name": "psnr"})
    metric.update(out[:2], target[:2])
    metric.update(out[2:], target[2:])  # two batches: per-image values are kept, not averaged per batch
    assert float(metric.compute()) == pytest.approx(per_image, abs=1e-4)
    pooled = metrics.make({"name": "psnr", "args": {"per_image": False}})
    pooled.update(out, target)
    assert float(pooled.compute()) == pytest.approx(db(float(((clamped - target) ** 2).mean())), abs=1e-4)
    raw = metrics.make({"name": "psnr", "args": {"clamp": False, "per_image": False}})
    raw.update(out, target)
    assert float(raw.compute()) < float(pooled.compute())  # clamping can only bring the output closer
    shaved = metrics.make({"name": "psnr", "args": {"crop_border": 2, "per_image": False}})
    shaved.update(out, target)
    inner = (clamped - target)[..., 2:-2, 2:-2]
    assert float(shaved.compute()) == pytest.approx(db(float((inner ** 2).mean())), abs=1e-4)
    with pytest.raises(ConfigError, match="data_range must be a positive number"):
        metrics.make({"name": "psnr", "args": {"data_range": 0}})


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edsr_upscales_and_learns_a_residual(scale):
    torch.manual_seed(0)
    model = models.make({"name": "edsr", "args": {"scale": scale, "n_resblocks": 2, "n_feats": 8}})
    x = torch.rand(2, 3, 10, 12)
    out = model(x)
    assert out.shape == (2, 3, 10 * scale, 12 * scale)
    out.abs().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():  # a silent tail leaves only the mean shift: the DIV2K mean, per channel
        model.tail.weight.zero_()
        model.tail.bias.zero_()
        mean = torch.tensor([0.4488, 0.4371, 0.4040]).reshape(1, 3, 1, 1)
        assert torch.equal(model(x), mean.expand(2, 3, 10 * scale, 12 * scale))


def test_edsr_size_and_bad_arguments():
    n = sum(p.numel() for p in models.make({"name": "edsr"}).parameters())
    assert n == 195_971  # 8 blocks of 32 features, x2
    gray = models.make({"name": "edsr", "args": {"in_channels": 1, "mean_shift": False}})
    assert gray(torch.rand(1, 1, 8, 8)).shape == (1, 1, 16, 16) and float(gray.shift.abs().sum()) == 0
    for args, message in (({"scale": 5}, "scale must be 2, 3 or 4"), ({"n_feats": 0}, "n_feats must be a whole"),
                          ({"kernel_size": 4}, "kernel_size must be an odd"), ({"res_scale": 0}, "res_scale must be"),
                          ({"mean": [0.5, 0.5]}, "mean has 2 values")):
        with pytest.raises(ConfigError, match=message):
            models.make({"name": "edsr", "args": args})


# ---------------------------------------------------------------- training runs


class BicubicBaseline(nn.Module):
    """Bicubic upsampling, with one parameter that stays 0 (SGD at lr 0) so that an optimizer can be built."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.zero = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False) + self.zero


def test_psnr_of_a_bicubic_baseline_is_what_numpy_computes(tmp_path, monkeypatch):
    if "sr_bicubic_baseline" not in models.registry.keys():
        models.register("sr_bicubic_baseline")(BicubicBaseline)
    monkeypatch.chdir(tmp_path)
    root = write_folders(tmp_path / "data")
    cfg = sr_config(root)
    cfg["train_wrapper"]["args"]["model_spec"] = {"name": "sr_bicubic_baseline", "args": {"scale": 2}}
    cfg["train_wrapper"]["args"]["optim_spec"] = {"name": "SGD", "args": {"lr": 0.0}}
    cfg["trainer_params"].update(max_epochs=1, limit_train_batches=1, limit_val_batches=1.0, limit_test_batches=1.0)
    path = write_config(tmp_path / "b.yaml", cfg)
    assert run_train(["--config", str(path), "--save-dir", "save", "--name", "b"]) == 0

    def expected(split: str) -> float:
        """PSNR of the bicubic upsampling of each image's centre 48x48 crop, from the PNG files."""
        values = []
        for path in sorted((root / split).iterdir()):
            img = np.array(Image.open(path)).astype(np.float64) / 255
            top, left = (img.shape[0] - 48) // 2, (img.shape[1] - 48) // 2
            hr = torch.from_numpy(img[top:top + 48, left:left + 48]).permute(2, 0, 1)[None].float()
            lr = F.interpolate(hr, size=(24, 24), mode="bicubic", antialias=True).clamp(0, 1)
            up = F.interpolate(lr, size=(48, 48), mode="bicubic").clamp(0, 1)
            mse = np.mean((up.double().numpy() - hr.double().numpy()) ** 2)
            values.append(10 * np.log10(1.0 / mse))
        return float(np.mean(values))

    rows = read_metrics(tmp_path / "save" / "b" / "metrics.csv")
    val = [r["val/psnr"] for r in rows if r.get("val/psnr") is not None]
    results = json.loads((tmp_path / "save" / "b" / "results.json").read_text())
    assert "val/acc" not in rows[0] and "test/acc" not in results["test"]  # images are regression targets
    assert val[0] == pytest.approx(expected("val"), abs=1e-3)
    assert results["test"]["test/psnr"] == pytest.approx(expected("test"), abs=1e-3)
    assert 20 < val[0] < 45


def test_training_resumed_mid_epoch_ends_bitwise_where_an_uninterrupted_run_ends(tmp_path, monkeypatch):
    """The patches of a resumed epoch are the ones it would have drawn: a run cut at step 5 (epoch 2,
    batch 2 of 3) under train_pl.py and resumed under train.py ends with the weights of an
    uninterrupted train.py run."""
    monkeypatch.chdir(tmp_path)
    cfg = sr_config(write_folders(tmp_path / "data"), samples_per_image=3)
    cfg["checkpoint"] = {"every_n_train_steps": 1, "save_top_k": -1}
    path = write_config(tmp_path / "r.yaml", cfg)
    assert run_train(["--config", str(path), "--save-dir", "save", "--name", "full"]) == 0
    cut = ["--config", str(path), "--save-dir", "save", "--name", "cut", "+trainer_params.max_steps=5"]
    assert run_train_pl(cut) == 0
    ckpt = torch.load(tmp_path / "save" / "cut" / "ckpt" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 5
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 2}]
    assert run_train(["--save-dir", "save", "--name", "cut", "--resume", "trainer_params.max_steps=-1"]) == 0
    full, cut = (torch.load(tmp_path / "save" / n / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
                 for n in ("full", "cut"))
    assert full.keys() == cut.keys() and all(torch.equal(full[k], cut[k]) for k in full)


def test_the_config_runs_under_both_loops_with_the_same_numbers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = write_div2k(tmp_path / "div2k")
    cfg = yaml.safe_load(CONFIG.read_text())
    assert cfg["data_module"]["name"] == "div2k" and cfg["checkpoint"]["monitor"] == "val/psnr"
    argv = ["--config", str(CONFIG), "--save-dir", "save", f"data_module.args.root_dir={root}",
            "data_module.args.val_split=1", "data_module.args.batch_size=4", "data_module.args.samples_per_image=2",
            "data_module.args.patch_size=48",  # evaluation crops of 96: a quarter of the default's cost
            "+data_module.args.eval_batch_size=2", "trainer_params.max_epochs=1",
            "+trainer_params.limit_train_batches=2", "+trainer_params.limit_test_batches=1",
            "+trainer_params.enable_progress_bar=false"]
    out = {}
    for loop, run in RUNNERS.items():
        assert run([*argv, "--name", loop]) == 0
        out[loop] = read_metrics(tmp_path / "save" / loop / "metrics.csv")
        results = json.loads((tmp_path / "save" / loop / "results.json").read_text())
        assert {"test/loss", "test/psnr"} == set(results["test"])
        assert (tmp_path / "save" / loop / "ckpt" / "last.ckpt").is_file()
    assert out["train_pl"][0].keys() == out["train"][0].keys()
    assert {"train/loss", "val/loss", "val/psnr", "test/psnr"} <= out["train"][0].keys()
    assert len(out["train"]) == len(out["train_pl"]) == 2  # the epoch, then the test
    for a, b in zip(out["train_pl"], out["train"]):
        assert a.keys() == b.keys()
        for k in a:
            assert (a[k] is None) == (b[k] is None), k
            if a[k] is not None:
                assert round(a[k], 5) == round(b[k], 5), (k, a[k], b[k])
    psnr = out["train"][0]["val/psnr"]
    assert 5 < psnr < 60  # an untrained EDSR: far from the images, but a finite number of dB


def test_the_model_can_take_its_scale_from_the_data(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = sr_config(write_folders(tmp_path / "data"), scale=3)
    cfg["train_wrapper"]["args"]["model_spec"]["args"]["scale"] = "${data:scale}"
    path = write_config(tmp_path / "s.yaml", cfg)
    capsys.readouterr()
    assert run_train(["--config", str(path), "--save-dir", "save", "--dry-run"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out.split("\n---\n")[0])
    assert printed["train_wrapper"]["args"]["model_spec"]["args"]["scale"] == 3
    assert not (tmp_path / "save").exists()


# ---------------------------------------------------------------- DIV2K's download, from a local server


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    with serve_folder(www) as url:
        yield www, url


def test_div2k_download_fetches_what_is_missing(tmp_path, server, monkeypatch):
    www, url = server
    release = write_div2k(tmp_path / "release")
    for folder in ("DIV2K_train_HR", "DIV2K_valid_HR"):
        with zipfile.ZipFile(www / f"{folder}.zip", "w") as z:
            for p in sorted((release / folder).iterdir()):
                z.write(p, f"{folder}/{p.name}")
    monkeypatch.setattr(DIV2K, "archives", {"train": url + "missing.zip", "test": url + "DIV2K_valid_HR.zip"})
    root = tmp_path / "data"
    with pytest.raises(ConfigError, match=f"could not download {url}missing.zip into '{root}': .*404"):
        make(root, "div2k", download=True).prepare_data()
    monkeypatch.setattr(DIV2K, "archives", {"train": url + "DIV2K_train_HR.zip", "test": url + "DIV2K_valid_HR.zip"})
    dm = make(root, "div2k", download=True, val_split=1)
    dm.setup()  # downloads, unpacks and removes the zips, then reads
    assert sorted(p.name for p in root.iterdir()) == ["DIV2K_train_HR", "DIV2K_valid_HR"]
    assert [p.name for p in dm.files["test"]] == ["0801.png", "0802.png"] and len(dm.files["train"]) == 3
    assert torch.equal(dm.splits["test"][0][0], png_tensor(release / "DIV2K_valid_HR" / "0801.png"))


# ---------------------------------------------------------------- bad input through the command line


def truncate(rel: str):
    def apply(root: Path) -> None:
        data = (root / rel).read_bytes()
        (root / rel).write_bytes(data[: len(data) // 2])
    return apply


def write(rel: str, content):
    def apply(root: Path) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            save_png(path, content)
    return apply


def delete(*rels: str):
    def apply(root: Path) -> None:
        for rel in rels:
            target = root / rel
            for p in sorted(target.iterdir()) if target.is_dir() else [target]:
                p.unlink()
    return apply


# id -> (layout, damage, data_module.args overrides, model overrides, phrases; {root} is the data folder)
BAD = {
    "empty-train-folder": ("folders", delete("train"), {}, {},
                           ["no images in '{root}/train'", "looked for .png, .jpg, .jpeg, .bmp"]),
    "empty-root-folder": ("empty", None, {}, {},
                          ["no images in '{root}'", "train/ (and optionally val/ and test/) folders of images"]),
    "root-dir-missing": ("folders", None, {"root_dir": "{root}/nope"}, {}, ["root_dir '{root}/nope' is not a folder"]),
    "truncated-png": ("folders", truncate("train/1a.png"), {}, {},
                      ["{root}/train/1a.png: cannot decode it", "truncated or corrupt"]),
    "truncated-test-png": ("folders", truncate("test/0.png"), {}, {}, ["{root}/test/0.png: cannot decode it"]),
    "text-file-named-png": ("folders", write("train/notes.png", b"not a picture\n"), {}, {},
                            ["{root}/train/notes.png: not an image that Pillow can read"]),
    "empty-png-file": ("single", write("0c.png", b""), {"val_split": 1}, {},
                       ["{root}/0c.png: the file is empty (0 bytes)"]),
    "image-smaller-than-patch": ("folders", write("train/tiny.png", np.zeros((20, 30, 3), np.uint8)), {}, {},
                                 ["{root}/train/tiny.png is 30x20 pixels", "smaller than patch_size=24",
                                  "lower patch_size"]),
    "val-image-smaller-than-eval-crop": ("folders", write("val/small.png", np.zeros((40, 60, 3), np.uint8)), {}, {},
                                         ["{root}/val/small.png is 60x40 pixels", "smaller than eval_patch_size=48"]),
    "patch-not-divisible-by-scale": ("folders", None, {"patch_size": 25}, {},
                                     ["patch_size=25 is not divisible by scale=2", "such as 24 or 26"]),
    "eval-patch-not-divisible": ("folders", None, {"scale": 3, "eval_patch_size": 50}, {"scale": 3},
                                 ["eval_patch_size=50 is not divisible by scale=3"]),
    "scale-5": ("folders", None, {"scale": 5}, {}, ["scale must be 2, 3 or 4", "got 5"]),
    "scale-float": ("folders", None, {"scale": 2.5}, {}, ["argument 'scale': expected int, got 2.5"]),
    "patch-zero": ("folders", None, {"patch_size": 0}, {}, ["patch_size must be a positive whole number, got 0"]),
    "samples-per-image-zero": ("folders", None, {"samples_per_image": 0}, {},
                               ["samples_per_image must be a positive whole number, got 0"]),
    "eval-patch-word": ("folders", None, {"eval_patch_size": "whole"}, {},
                        ["argument 'eval_patch_size': expected int, 'full' or null, got 'whole'"]),
    "eval-full-with-batches": ("folders", None, {"eval_patch_size": "full"}, {},
                               ["eval_patch_size: full", "set eval_batch_size: 1 (it is 4)"]),
    "val-folder-and-val-split": ("folders", None, {"val_split": 1}, {},
                                 ["'{root}' has a val/ folder and val_split=1", "set val_split: 0"]),
    "val-split-takes-every-image": ("single", None, {"val_split": 4}, {},
                                    ["val_split=4 leaves no training images (4 images in '{root}')"]),
    "model-scale-differs": ("folders", None, {}, {"scale": 3},
                            ["loss 'l1' cannot take the model's output [2, 3, 36, 36]", "target [2, 3, 24, 24]"]),
    "transform-changes-size": ("folders", None, {"train_transforms": [{"name": "Resize", "args": {"size": 16}}]}, {},
                               ["data_module.args.train_transforms turned HR patches of [3, 24, 24] into "
                                "[3, 16, 16]", "must keep their size"]),
    "div2k-missing-valid": ("div2k", delete("DIV2K_valid_HR"), {}, {},
                            ["DIV2K folders missing in '{root}': DIV2K_valid_HR/.", "Download DIV2K_valid_HR.zip from "
                             "http://data.vision.ee.ethz.ch/cvl/DIV2K/", "data_module.args.download=true",
                             "no checksums"]),
    "div2k-nothing-there": ("empty", None, {}, {},
                            ["DIV2K folders missing in '{root}': DIV2K_train_HR/, DIV2K_valid_HR/.",
                             "DIV2K_train_HR.zip and DIV2K_valid_HR.zip"]),
}


@pytest.mark.parametrize("loop", RUNNERS)
@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_message_and_creates_nothing(case, loop, tmp_path, monkeypatch, capsys):
    layout, damage, data_args, model_args, phrases = BAD[case]
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "data"
    root.mkdir()
    if layout == "folders":
        write_folders(root)
    elif layout == "single":
        write_single(root)
    elif layout == "div2k":
        write_div2k(root)
    if damage is not None:
        damage(root)
    name = "div2k" if case.startswith("div2k") else "paired_images"
    cfg = sr_config(root, name, **{k: (v.format(root=root) if isinstance(v, str) else v) for k, v in data_args.items()})
    if name == "div2k":
        cfg["data_module"]["args"].update(patch_size=96, val_split=1)
    cfg["train_wrapper"]["args"]["model_spec"]["args"].update(model_args)
    config = write_config(tmp_path / "bad.yaml", cfg)
    before = sorted(tmp_path.rglob("*"))
    err = refused(loop, config, capsys)
    for phrase in phrases:
        assert phrase.format(root=root) in err, f"{phrase.format(root=root)!r} not in {err!r}"
    assert not (tmp_path / "save").exists()
    assert sorted(tmp_path.rglob("*")) == before
