"""Transforms from config: the batched forms against torchvision's own transforms, seeding by
(seed, epoch, batch), loop parity and exact resume with augmentation on, the recorded pipeline,
${data:...} references, and bad input."""

from __future__ import annotations

import hashlib
import inspect

import pytest
import torch
import yaml
from pytorch_lightning import LightningDataModule
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms import v2

import torchx.transforms as T
from helpers import read_metrics, run_train, run_train_pl, tiny_config, write_config, write_fake_mnist
from torchx import datasets
from torchx.errors import ConfigError

RUNNERS = {"train_pl": run_train_pl, "train": run_train}
AUGMENT = [{"name": "RandomCrop", "args": {"size": 8, "padding": 2}},
           {"name": "RandomHorizontalFlip"},
           {"name": "RandomErasing", "args": {"p": 0.5, "scale": [0.05, 0.2]}}]


def images(n: int = 64, c: int = 3, h: int = 8, w: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def pipeline(specs: list[dict], mean: float = 0.0, std: float = 1.0) -> T.Pipeline:
    return T.Pipeline(specs, mean, std, "train_transforms")


# ---------------------------------------------------------------- the batched forms


def test_random_crop_takes_each_sample_from_its_own_padded_window():
    x = images(200)
    t = v2.RandomCrop(8, padding=2)
    out = T._random_crop(t, x, T.generator(1))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(len(x)):
        found = [(a, b) for a in range(5) for b in range(5) if torch.equal(padded[i, :, a:a + 8, b:b + 8], out[i])]
        assert found, f"sample {i} is no crop of its padded image"
        offsets.add(found[0])
    assert len(offsets) == 25  # every window position is drawn somewhere in 200 samples


@pytest.mark.parametrize("mode", ["edge", "reflect"])
def test_random_crop_pads_as_torchvision_does(mode):
    x = images(4)
    t = v2.RandomCrop(12, padding=2, padding_mode=mode)  # the padded size: one window, no randomness
    out = T._random_crop(t, x, T.generator(0))
    assert torch.equal(out, torch.stack([t(img) for img in x]))


def test_flips_are_all_or_nothing_per_sample_at_rate_p():
    x = images(400)
    out = T._flip(-1)(v2.RandomHorizontalFlip(p=0.3), x, T.generator(2))
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    assert all(f or torch.equal(o, i) for f, o, i in zip(flipped, out, x))
    assert 0.2 < sum(flipped) / len(x) < 0.4
    out = T._flip(-2)(v2.RandomVerticalFlip(p=1.0), x, T.generator(2))
    assert torch.equal(out, x.flip(-2))


def test_random_erasing_fills_one_rectangle_of_the_drawn_size():
    x = images(300, h=16, w=16).float()
    t = v2.RandomErasing(p=1.0, scale=(0.05, 0.2), value=-7.0)
    out = T._random_erasing(t, x, T.generator(3))
    erased = 0
    for o in out:
        mask = (o == -7.0).all(0)
        if not mask.any():
            continue
        erased += 1
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert mask.sum() == h * w  # one filled rectangle
        assert 0.05 * 256 - 16 <= h * w <= 0.2 * 256 + 16  # its area drawn from `scale` (rounding aside)
    assert erased > 280  # p=1: every sample, but for the rare draws that fit nowhere in 10 tries


def test_center_crop_and_normalize_equal_torchvisions_per_image_result():
    x = images(8, h=10, w=12)
    crop = v2.CenterCrop(6)
    assert torch.equal(T._center_crop(crop, x, T.generator(0)), torch.stack([crop(i) for i in x]))
    norm = v2.Normalize([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    ref = torch.stack([norm(v2.ToDtype(torch.float32, scale=True)(v2.ToImage()(i))) for i in x])
    torch.testing.assert_close(T._normalize(norm, x, T.generator(0)), ref)


def test_the_batchable_tail_runs_on_the_device_and_the_rest_per_image():
    p = pipeline([{"name": "ColorJitter", "args": {"brightness": 0.5}}, {"name": "RandomHorizontalFlip"},
                  {"name": "RandomCrop", "args": {"size": 8, "padding": 1}}])
    assert [type(t).__name__ for t in p.per_image] == ["ColorJitter"]
    assert [type(t).__name__ for t in p.batched] == ["RandomHorizontalFlip", "RandomCrop", "Normalize"]
    # an op with no batched form after batchable ones keeps them all per image: order is kept
    p = pipeline([{"name": "RandomHorizontalFlip"}, {"name": "RandomRotation", "args": {"degrees": 10}}])
    assert [type(t).__name__ for t in p.per_image] == ["RandomHorizontalFlip", "RandomRotation"]
    p = pipeline([{"name": "RandomCrop", "args": {"size": 8, "pad_if_needed": True}}])
    assert [type(t).__name__ for t in p.per_image] == ["RandomCrop"]  # pad_if_needed has no batched form
    # images that may differ in size as read (a folder): crops stay per image, to make them one size
    specs = [{"name": "Resize", "args": {"size": 9}}, {"name": "CenterCrop", "args": {"size": 8}},
             {"name": "RandomHorizontalFlip"}]
    p = T.Pipeline(specs, 0.0, 1.0, "eval_transforms", same_size=False)
    assert [type(t).__name__ for t in p.per_image] == ["Resize", "CenterCrop"]
    assert [type(t).__name__ for t in p.batched] == ["RandomHorizontalFlip", "Normalize"]
    sizes = [torch.zeros(3, 9, 14, dtype=torch.uint8), torch.zeros(3, 20, 9, dtype=torch.uint8)]
    assert p.image_ops(sizes, 0).shape == (2, 3, 8, 8)


def test_per_image_draws_depend_only_on_the_seed_and_leave_the_global_rng_alone():
    p = pipeline([{"name": "ColorJitter", "args": {"brightness": 0.8, "contrast": 0.8}}])
    x = images(6)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a = p.image_ops(x, seed=11)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(99)
    assert torch.equal(p.image_ops(x, seed=11), a)
    assert not torch.equal(p.image_ops(x, seed=12), a)


def test_batch_seeds_differ_in_every_coordinate():
    base = T.batch_seed(7, 1, 2, 0)
    others = {T.batch_seed(8, 1, 2, 0), T.batch_seed(7, 2, 2, 0), T.batch_seed(7, 1, 3, 0), T.batch_seed(7, 1, 2, 1)}
    assert base not in others and len(others) == 4
    assert T.batch_seed(7, 1, 2, 0) == base


def test_a_data_modules_batches_are_augmented_identically_whoever_asks():
    dm = datasets.make({"name": "digits", "args": {"batch_size": 32, "train_transforms": AUGMENT}})
    dm.setup()
    torch.manual_seed(5)

    def epoch() -> list[torch.Tensor]:
        return [dm.on_after_batch_transfer(b, 0)[0] for b in dm.train_dataloader()]

    a, b = epoch(), epoch()
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    plain = datasets.make({"name": "digits", "args": {"batch_size": 32}})
    plain.setup()
    first = next(iter(plain.train_dataloader()))[0]
    assert first.shape == a[0].shape and not torch.equal(first, a[0])  # same order, other pixels


def test_workers_serve_the_same_augmented_batches_as_the_main_process():
    spec = {"name": "digits", "args": {"batch_size": 64, "train_transforms": [
        {"name": "RandomRotation", "args": {"degrees": 20}}, *AUGMENT]}}
    out = {}
    for workers in (0, 2):
        dm = datasets.make({**spec, "args": {**spec["args"], "num_workers": workers}})
        dm.setup()
        torch.manual_seed(3)
        out[workers] = [dm.on_after_batch_transfer(b, 0)[0] for _, b in zip(range(4), dm.train_dataloader())]
    assert all(torch.equal(x, y) for x, y in zip(out[0], out[2]))


# ---------------------------------------------------------------- both loops, resume, the record


def augmented_config(**trainer_params) -> dict:
    cfg = tiny_config(**trainer_params)
    cfg["data_module"]["args"]["train_transforms"] = AUGMENT
    cfg["data_module"]["args"]["eval_transforms"] = [{"name": "CenterCrop", "args": {"size": 8}}]
    cfg["train_wrapper"]["args"]["model_spec"]["args"]["out_dim"] = "${data:num_classes}"
    return cfg


def test_both_loops_agree_with_augmentation_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path / "a.yaml", augmented_config())
    for loop, run in RUNNERS.items():
        assert run(["--config", str(path), "--name", loop]) == 0
    pl_rows, plain_rows = (read_metrics(tmp_path / "save" / n / "metrics.csv") for n in RUNNERS)
    assert len(pl_rows) == len(plain_rows) > 0
    for a, b in zip(pl_rows, plain_rows):
        assert a.keys() == b.keys()
        for k in a:
            assert (a[k] is None) == (b[k] is None) and (a[k] is None or abs(a[k] - b[k]) < 1e-5), k


@pytest.mark.parametrize("first, second", [("train_pl", "train"), ("train", "train_pl")])
def test_mid_epoch_resume_with_augmentation_ends_bitwise_where_an_uninterrupted_run_ends(first, second, tmp_path,
                                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = augmented_config(max_epochs=3, limit_train_batches=6)
    cfg["checkpoint"] = {"every_n_train_steps": 3, "save_top_k": -1}
    path = write_config(tmp_path / "m.yaml", cfg)
    assert RUNNERS[first](["--config", str(path), "--name", "full"]) == 0
    assert RUNNERS[first](["--config", str(path), "--name", "cut", "+trainer_params.max_steps=9"]) == 0
    assert RUNNERS[second](["--name", "cut", "--resume", "trainer_params.max_steps=-1"]) == 0
    a, b = (torch.load(tmp_path / "save" / n / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
            for n in ("full", "cut"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_run_directory_records_the_pipeline_and_the_resolved_references(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = augmented_config(max_epochs=1)
    cfg["data_module"]["args"]["train_transforms"].insert(0, {"name": "ColorJitter", "args": {"brightness": 0.2}})
    assert run_train(["--config", str(write_config(tmp_path / "a.yaml", cfg)), "--name", "r"]) == 0
    run = tmp_path / "save" / "r"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train_wrapper"]["args"]["model_spec"]["args"]["out_dim"] == 10
    record = (run / "data.txt").read_text()
    recorded = yaml.safe_load(record.split("\n\n")[0])["data_module"]
    assert recorded == saved["data_module"]
    lines = [line.strip() for line in record.splitlines() if line.strip().startswith(("train:", "val/test:"))]
    assert [line.split(": ", 2)[1] + ": " + line.split(": ", 2)[2].split("(")[0] for line in lines] == [
        "per image (data loader): ColorJitter", "per batch (device): RandomCrop", "per batch (device): "
        "RandomHorizontalFlip", "per batch (device): RandomErasing", "per batch (device): Normalize",
        "per batch (device): CenterCrop", "per batch (device): Normalize"]
    assert "splits: train 1350, val 150, test 297" in record


class UserData(LightningDataModule):
    """A plain LightningDataModule that learns its number of classes only when it reads its data."""

    def __init__(self, n: int = 64) -> None:
        super().__init__()
        self.n = n
        self.num_classes = None

    def setup(self, stage: str | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(self.n, 64, generator=g), torch.randint(0, 3, (self.n,), generator=g)
        self.num_classes = 3

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=16)

    def val_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=16)


def test_a_users_data_module_attribute_set_in_setup_feeds_the_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = inspect.getsource(UserData)
    (tmp_path / "userdata.py").write_text(
        "import torch\nimport torchx.datasets as datasets\nfrom pytorch_lightning import LightningDataModule\n"
        "from torch.utils.data import DataLoader, TensorDataset\n\n\n@datasets.register('user_data_for_refs')\n"
        + source)
    cfg = tiny_config(max_epochs=1)
    cfg["imports"] = ["userdata"]
    cfg["data_module"] = {"name": "user_data_for_refs", "args": {"n": 64}}
    cfg["train_wrapper"]["args"]["model_spec"]["args"]["out_dim"] = "${data:num_classes}"
    assert run_train(["--config", str(write_config(tmp_path / "u.yaml", cfg)), "--name", "u"]) == 0
    saved = yaml.safe_load((tmp_path / "save" / "u" / "config.yaml").read_text())
    assert saved["train_wrapper"]["args"]["model_spec"]["args"]["out_dim"] == 3


# ---------------------------------------------------------------- bad input


def bad(transforms: object, where: str = "train_transforms") -> dict:
    cfg = tiny_config(max_epochs=1)
    cfg["data_module"]["args"][where] = transforms
    return cfg


def ref(value: str, key: str = "out_dim") -> dict:
    cfg = tiny_config(max_epochs=1)
    cfg["train_wrapper"]["args"]["model_spec"]["args"][key] = value
    return cfg


def in_data_module() -> dict:
    cfg = tiny_config(max_epochs=1)
    cfg["data_module"]["args"]["batch_size"] = "${data:num_classes}"
    return cfg


BAD = {
    "unknown name": (bad([{"name": "RandomCrap", "args": {"size": 8}}]), "did you mean 'RandomCrop'"),
    "unknown argument": (bad([{"name": "RandomCrop", "args": {"size": 8, "paddding": 1}}]), "paddding"),
    "bad argument value": (bad([{"name": "RandomErasing", "args": {"p": 3}}]), "train_transforms.0"),
    "not a list": (bad({"name": "RandomCrop"}), "argument 'train_transforms': expected list of mapping"),
    "not a spec": (bad(["RandomCrop"]), "argument 'train_transforms': expected list of mapping"),
    "a spec without a name": (bad([{"args": {"size": 8}}]), "train_transforms.0 must be a {name, args} transform spec"),
    "a python function": (bad([{"name": "Lambda", "args": {}}]), "takes a Python function"),
    "mixes labels": (bad([{"name": "MixUp"}]), "mixes labels"),
    "bad dtype": (bad([{"name": "ToDtype", "args": {"dtype": "float33"}}]), "dtype 'float33' is not a torch dtype"),
    "bad interpolation": (bad([{"name": "Resize", "args": {"size": 8, "interpolation": "bicubc"}}], "eval_transforms"),
                          "did you mean 'bicubic'"),
    "empty Compose": (bad([{"name": "RandomApply", "args": {"transforms": []}}]), "RandomApply takes `transforms`"),
    "crop larger than the images": (bad([{"name": "RandomCrop", "args": {"size": 12}}]), "larger than"),
    "training images the model cannot take": (bad([{"name": "RandomResizedCrop", "args": {"size": 6}}]), None),
    "undeclared ${data:...}": (ref("${data:num_clases}"), "does not declare 'num_clases' (did you mean 'num_classes'"),
    "${data:...} inside data_module": (in_data_module(), "the data module's own arguments cannot use"),
}


@pytest.mark.parametrize("case", BAD)
@pytest.mark.parametrize("loop", RUNNERS)
def test_bad_transforms_and_references_are_one_message_and_exit_2(case, loop, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg, expected = BAD[case]
    if expected is None:  # train 6x6, eval 8x8: the model (64 inputs) cannot take the training batch
        expected = "cannot take a batch"
    path = write_config(tmp_path / "bad.yaml", cfg)
    assert RUNNERS[loop](["--config", str(path), "--name", "b"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "save").exists()


def test_registered_transforms_shadow_torchvisions_and_run_per_image():
    class Invert(torch.nn.Module):
        """255 - x."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 255 - x

    T.registry._entries.pop("invert_for_test", None)
    T.register("invert_for_test")(Invert)
    try:
        p = pipeline([{"name": "invert_for_test"}])
        x = images(3)
        assert torch.equal(p.device_ops(p.image_ops(x, 0), 0), (255 - x).float() / 255)  # mean 0, std 1
    finally:
        T.registry._entries.pop("invert_for_test")


def test_unknown_names_in_a_data_module_fail_at_construction():
    with pytest.raises(ConfigError, match="did you mean 'RandomHorizontalFlip'"):
        datasets.make({"name": "digits", "args": {"eval_transforms": [{"name": "RandomHorizontalFlp"}]}})


def test_data_txt_gives_each_data_files_sha256(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = write_fake_mnist(tmp_path / "mnist")
    cfg = tiny_config(max_epochs=1)
    cfg["data_module"] = {"name": "mnist", "args": {"root_dir": str(root), "batch_size": 16, "val_split": 32}}
    cfg["train_wrapper"]["args"]["model_spec"]["args"]["in_dim"] = 784
    assert run_train(["--config", str(write_config(tmp_path / "m.yaml", cfg)), "--name", "m"]) == 0
    record = (tmp_path / "save" / "m" / "data.txt").read_text()
    files = sorted(root.iterdir())
    assert len(files) == 4 and f"files ({len(files)}):" in record
    for path in files:
        assert f"sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}" in record and str(path) in record
