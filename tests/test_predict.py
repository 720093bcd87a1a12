"""`python -m torchx predict`: predictions agree with the run's own test accuracy, image files agree
with the same pixels in a split, tensor outputs are the model's, and bad input is refused whole."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import run_tool, run_train, run_train_pl, tiny_config, tool_refused, trained_run, tree, write_config

USER = Path(__file__).resolve().parent / "user_project"
N_TEST = 297  # digits' default test split
N_FILES = 12


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Digits classifiers from both loops, tested on the whole test split, and one whose eval
    transforms run through the on-device pipeline (a Resize to the size the images already have)."""
    save = tmp_path_factory.mktemp("runs") / "save"
    found = {loop: trained_run(save, loop, loop=loop, limit_test_batches=1.0) for loop in ("train_pl", "train")}
    cfg = tiny_config(limit_test_batches=1.0)
    cfg["data_module"]["args"]["eval_transforms"] = [{"name": "Resize", "args": {"size": [8, 8]}}]
    path = write_config(save.parent / "piped.yaml", cfg)
    assert run_train(["--config", str(path), "--name", "piped", "--save-dir", str(save)]) == 0
    found["piped"] = save / "piped"
    return found


@pytest.fixture(scope="module")
def test_pixels() -> tuple[torch.Tensor, torch.Tensor]:
    """The digits test split's uint8 images [N, 1, 8, 8] and labels, as the data module holds them."""
    from torchx.datasets.digits import Digits

    data = Digits()
    data.setup()
    return data.splits["test"]


@pytest.fixture(scope="module")
def pngs(tmp_path_factory, test_pixels) -> Path:
    """The first test images as 8x8 grayscale PNG files, and a file that is not an image (skipped)."""
    from torchvision.io import write_png

    folder = tmp_path_factory.mktemp("pngs") / "digits"
    folder.mkdir()
    for i in range(N_FILES):
        write_png(test_pixels[0][i], str(folder / f"{i:03d}.png"))
    (folder / "README.txt").write_text("not an image\n")
    return folder


def predict(run: Path, *argv: str, capsys=None) -> tuple[list[dict], str]:
    """`predict RUN ...` in this process: the CSV it wrote, read back, and its last stdout line."""
    if capsys is not None:
        capsys.readouterr()
    assert run_tool(["predict", str(run), *argv]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1] if capsys is not None else ""
    path = Path(line.split("wrote ", 1)[1].split(" (", 1)[0])
    with open(path, newline="") as f:
        return list(csv.DictReader(f)), line


@pytest.fixture(scope="module")
def split_rows(runs) -> dict[str, list[dict]]:
    """Each run's predictions on split:test, written once to a file outside the run."""
    out = {}
    for name, run in runs.items():
        path = run.parent.parent / f"{name}-test.csv"
        assert run_tool(["predict", str(run), "--input", "split:test", "--out", str(path)]) == 0
        with open(path, newline="") as f:
            out[name] = list(csv.DictReader(f))
    return out


@pytest.mark.parametrize("loop", ["train_pl", "train"])
def test_predictions_on_the_test_split_agree_with_the_runs_test_accuracy(runs, loop, capsys):
    rows, line = predict(runs[loop], "--input", "split:test", capsys=capsys)
    assert len(rows) == N_TEST and [r["input"] for r in rows] == [f"split:test#{i}" for i in range(N_TEST)]
    correct = sum(r["class"] == r["label"] for r in rows)
    test_acc = json.loads((runs[loop] / "results.json").read_text())["test"]["test/acc"]
    assert correct == round(test_acc * N_TEST) and correct / N_TEST == pytest.approx(test_acc, abs=1e-7)
    assert line.startswith(f"wrote {runs[loop] / 'predictions' / 'test-best.csv'} ({N_TEST} predictions)")
    assert line.endswith(f"accuracy {correct / N_TEST:.4f} ({correct}/{N_TEST} correct)")
    for r in rows:  # top-5 in order, softmax scores, the first the predicted class
        scores = [float(r[f"score_{i}"]) for i in range(1, 6)]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-5
        assert r["class_1"] == r["class"]


def test_the_labels_column_is_the_test_splits_labels(split_rows, test_pixels):
    assert [int(r["label"]) for r in split_rows["train_pl"]] == test_pixels[1].tolist()


@pytest.mark.parametrize("name", ["train_pl", "piped"])
def test_a_folder_of_png_files_predicts_what_the_same_pixels_in_the_split_do(runs, split_rows, pngs, name, capsys):
    rows, line = predict(runs[name], "--input", str(pngs), capsys=capsys)
    assert [r["input"] for r in rows] == [f"{i:03d}.png" for i in range(N_FILES)]  # README.txt skipped
    assert [r["class"] for r in rows] == [r["class"] for r in split_rows[name][:N_FILES]]
    for got, want in zip(rows, split_rows[name]):
        assert float(got["score_1"]) == pytest.approx(float(want["score_1"]), abs=1e-5)
    assert "label" not in rows[0]
    assert line == f"wrote {runs[name] / 'predictions' / 'digits-best.csv'} ({N_FILES} predictions)"


def test_a_single_image_file(runs, split_rows, pngs, tmp_path, capsys):
    out = tmp_path / "one.csv"
    rows, _ = predict(runs["train"], "--input", str(pngs / "005.png"), "--out", str(out), "--top-k", "50",
                      capsys=capsys)
    assert len(rows) == 1 and rows[0]["input"] == "005.png" and rows[0]["class"] == split_rows["train"][5]["class"]
    assert [k for k in rows[0] if k.startswith("score_")] == [f"score_{i}" for i in range(1, 11)]  # capped at C


def test_an_image_of_another_size_goes_through_a_resizing_eval_transform(runs, test_pixels, tmp_path, capsys):
    from torchvision.io import write_png

    big = test_pixels[0][3].repeat_interleave(2, 1).repeat_interleave(2, 2)  # 16x16, each pixel doubled
    write_png(big, str(tmp_path / "big.png"))
    rows, _ = predict(runs["piped"], "--input", str(tmp_path / "big.png"), "--out", str(tmp_path / "b.csv"),
                      capsys=capsys)
    assert len(rows) == 1 and 0 <= int(rows[0]["class"]) < 10


def test_a_folder_of_mixed_sizes_that_the_eval_transforms_make_one_size(runs, split_rows, test_pixels, tmp_path,
                                                                        capsys):
    from torchvision.io import write_png

    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(5):
        image = test_pixels[0][i]
        write_png(image.repeat_interleave(2, 1).repeat_interleave(2, 2) if i % 2 else image, str(folder / f"{i}.png"))
    rows, _ = predict(runs["piped"], "--input", str(folder), "--out", str(tmp_path / "m.csv"), "--batch-size", "4",
                      capsys=capsys)
    assert [r["input"] for r in rows] == [f"{i}.png" for i in range(5)]
    assert [r["class"] for r in rows[::2]] == [r["class"] for r in split_rows["piped"][:5:2]]  # the 8x8 ones
    line = tool_refused(["predict", str(runs["train"]), "--input", str(folder)], capsys)  # no Resize there
    assert f"'{folder / '1.png'}' is 1x16x16 (channels x height x width), but the model takes 1x8x8" in line


def test_the_default_output_is_never_overwritten(runs, capsys):
    run = runs["train"]
    before = tree(run)
    _, first = predict(run, "--input", "split:val", capsys=capsys)
    kept = (run / "predictions" / "val-best.csv").read_bytes()
    _, second = predict(run, "--input", "split:val", "--ckpt", "best", capsys=capsys)
    assert "val-best.csv" in first and "val-best-2.csv" in second
    assert (run / "predictions" / "val-best.csv").read_bytes() == kept
    assert set(tree(run)) - set(before) == {"predictions/val-best.csv", "predictions/val-best-2.csv"}


def test_split_train_is_read_like_an_evaluation_split(runs, capsys):
    rows, _ = predict(runs["train_pl"], "--input", "split:train", "--batch-size", "100", "--top-k", "2",
                      capsys=capsys)
    rows2, _ = predict(runs["train_pl"], "--input", "split:train", "--batch-size", "7", "--top-k", "2",
                       capsys=capsys)
    # no shuffling, no augmentation: the same rows in the same order whatever the batch size
    assert [(r["input"], r["label"], r["class"]) for r in rows] == [(r["input"], r["label"], r["class"]) for r in rows2]
    assert rows[0]["input"] == "split:train#0" and "class_3" not in rows[0]


def test_predict_step_serves_lightnings_trainer_predict_and_bare_inputs(runs):
    import pytorch_lightning as pl

    import torchx

    run = torchx.load_run(runs["train_pl"])
    data = run.data_module("test")
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    outs = torch.cat(trainer.predict(run.wrapper, dataloaders=data.test_dataloader()))
    x, _ = data.splits["test"]
    x = x.float() / 255 / data.std - data.mean / data.std
    with torch.no_grad():
        assert torch.allclose(outs, run.model(x), atol=1e-6)
        assert torch.equal(run.wrapper.predict_step(x[:4]), run.wrapper.predict_step((x[:4], torch.zeros(4))))


# ---------------------------------------------------------------- a regression run and a user's LightningModule


@pytest.fixture(scope="module")
def user_runs(tmp_path_factory) -> dict[str, Path]:
    """A regression head on float targets (a plain LightningDataModule from tests/user_project), and
    Lightning's BoringModel, which has no predict_step of its own."""
    save = tmp_path_factory.mktemp("user") / "save"
    regression = tiny_config(max_epochs=2, limit_train_batches=5)
    regression.update(imports=["lightning_user"], checkpoint={"monitor": "val/loss", "mode": "min"},
                      data_module={"name": "digits_with_test", "args": {"regression": True}})
    regression["train_wrapper"]["args"].update(model_spec={"name": "mlp", "args": {"in_dim": 64, "hidden": [32],
                                                                                    "out_dim": 1}},
                                               loss_spec={"name": "mse"})
    boring = {"imports": ["lightning_user"], "data_module": {"name": "boring_datamodule"},
              "train_wrapper": {"name": "boring_model"}, "seed": 3,
              "trainer_params": {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1,
                                 "limit_test_batches": 1, "enable_progress_bar": False, "enable_model_summary": False}}
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(USER))
        for name, cfg in (("reg", regression), ("boring", boring)):
            path = write_config(save.parent / f"{name}.yaml", cfg)
            assert run_train_pl(["--config", str(path), "--name", name, "--save-dir", str(save)]) == 0
        yield {"reg": save / "reg", "boring": save / "boring"}


def test_a_regression_run_writes_the_models_outputs_as_pt_and_npy(user_runs, tmp_path, capsys):
    import torchx

    run = torchx.load_run(user_runs["reg"])
    with torch.no_grad():
        want = torch.cat([run.model(x) for x, _ in run.data_module("test").test_dataloader()])
    capsys.readouterr()
    assert run_tool(["predict", str(user_runs["reg"]), "--input", "split:test", "--out", str(tmp_path / "r.pt")]) == 0
    assert run_tool(["predict", str(user_runs["reg"]), "--input", "split:test", "--out", str(tmp_path / "r.npy")]) == 0
    assert run_tool(["predict", str(user_runs["reg"]), "--input", "split:test"]) == 0
    out = capsys.readouterr().out
    saved = torch.load(tmp_path / "r.pt", weights_only=True)
    assert want.shape == (397, 1) and torch.equal(saved["outputs"], want)
    assert saved["inputs"] == [f"split:test#{i}" for i in range(397)]
    assert np.array_equal(np.load(tmp_path / "r.npy"), want.numpy())
    assert torch.equal(torch.load(user_runs["reg"] / "predictions" / "test-best.pt", weights_only=True)["outputs"],
                       want)
    assert "(397 predictions)" in out and "accuracy" not in out


def test_a_csv_for_a_regression_run_is_refused_with_the_reason(user_runs, tmp_path, capsys):
    before = tree(user_runs["reg"])
    line = tool_refused(["predict", str(user_runs["reg"]), "--input", "split:test", "--out",
                         str(tmp_path / "r.csv")], capsys)
    assert "is for classifiers" in line and "[64, 1] float32" in line and "use --out with .pt or .npy" in line
    assert tree(user_runs["reg"]) == before and not (tmp_path / "r.csv").exists()


def test_a_lightning_module_without_predict_step_predicts_with_its_forward(user_runs, tmp_path, capsys):
    import torchx

    capsys.readouterr()
    # BoringDataModule draws its random data from the global RNG when built: the same seed, the same data
    with torch.random.fork_rng():
        torch.manual_seed(5)
        assert run_tool(["predict", str(user_runs["boring"]), "--input", "split:test", "--ckpt", "last",
                         "--out", str(tmp_path / "b.pt")]) == 0
        torch.manual_seed(5)
        run = torchx.load_run(user_runs["boring"], ckpt="last")
        data = run.data_module("test")
    err = capsys.readouterr().err
    assert err.count("BoringModel has no predict_step; predicting with its forward") == 1
    with torch.no_grad():
        want = torch.cat([run.wrapper(x) for x in data.test_dataloader()])
    assert torch.equal(torch.load(tmp_path / "b.pt", weights_only=True)["outputs"], want)


# ---------------------------------------------------------------- bad input


def _image(path: Path, shape: tuple[int, ...]) -> Path:
    """A PNG of random pixels, [C, H, W]; 4 channels (RGBA) through PIL, which torchvision cannot write."""
    from PIL import Image
    from torchvision.io import write_png

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = torch.randint(0, 255, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    if shape[0] == 4:
        Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGBA").save(path)
    else:
        write_png(pixels, str(path))
    return path


def bad_inputs(tmp: Path, run: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (arguments after RUN, a part of the refusal)."""
    (tmp / "x.png").write_text("hello, not a picture\n")
    whole = _image(tmp / "whole.png", (1, 8, 8)).read_bytes()
    (tmp / "cut.png").write_bytes(whole[:len(whole) // 2])
    _image(tmp / "big.png", (1, 10, 10))
    _image(tmp / "rgba.png", (4, 8, 8))
    _image(tmp / "mixed" / "a.png", (1, 8, 8))
    _image(tmp / "mixed" / "b.png", (1, 9, 8))
    (tmp / "empty").mkdir()
    (tmp / "texts").mkdir()
    (tmp / "texts" / "a.txt").write_text("a")
    (tmp / "taken.csv").write_text("mine\n")
    (tmp / "notes.txt").write_text("a")
    return {
        "missing path": (["--input", str(tmp / "nope")], "does not exist"),
        "text file named .png": (["--input", str(tmp / "x.png")], f"{tmp / 'x.png'}: cannot read it as an image"),
        "truncated png": (["--input", str(tmp / "cut.png")], f"{tmp / 'cut.png'}: cannot read it as an image"),
        "not an image suffix": (["--input", str(tmp / "notes.txt")], "is not a PNG or JPEG file"),
        "wrong size": (["--input", str(tmp / "big.png")],
                       f"'{tmp / 'big.png'}' is 1x10x10 (channels x height x width), but the model takes 1x8x8"),
        "rgba for a gray model": (["--input", str(tmp / "rgba.png")], "is an RGBA image of shape [4, 8, 8]"),
        "mixed sizes": (["--input", str(tmp / "mixed")], f"'{tmp / 'mixed' / 'b.png'}' is 1x9x8"),
        "empty folder": (["--input", str(tmp / "empty")], "holds no PNG or JPEG files"),
        "folder of other files": (["--input", str(tmp / "texts")], "(1 other file skipped)"),
        "out .txt": (["--input", "split:test", "--out", str(tmp / "p.txt")], "not '.txt'"),
        "out exists": (["--input", "split:test", "--out", str(tmp / "taken.csv")], "exists and is not replaced"),
        "out is a folder": (["--input", "split:test", "--out", str(tmp / "empty.csv")], None),
        "top-k 0": (["--input", "split:test", "--top-k", "0"], "--top-k 0"),
        "batch-size 0": (["--input", "split:test", "--batch-size", "0"], "--batch-size 0"),
        "split:nope": (["--input", "split:nope"], "split:train, split:val, split:test"),
        "two gpus": (["--input", "split:test", "--gpu", "0,1"], "predict runs on one device"),
        "bad gpu": (["--input", "split:test", "--gpu", "x"], "is not a list of CUDA device ids"),
        "missing ckpt file": (["--input", "split:test", "--ckpt", str(tmp / "no.ckpt")], "does not exist"),
    }


BAD = ["missing path", "text file named .png", "truncated png", "not an image suffix", "wrong size",
       "rgba for a gray model", "mixed sizes", "empty folder", "folder of other files", "out .txt", "out exists",
       "out is a folder", "top-k 0", "batch-size 0", "split:nope", "two gpus", "bad gpu", "missing ckpt file"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_refused_in_one_line_and_changes_nothing(runs, tmp_path, case, capsys):
    run = runs["train_pl"]
    cases = bad_inputs(tmp_path, run)
    assert set(cases) == set(BAD)
    argv, part = cases[case]
    if case == "out is a folder":
        (tmp_path / "empty.csv").mkdir()
        part = "is a folder"
    before, outside = tree(run), tree(tmp_path)
    line = tool_refused(["predict", str(run), *argv], capsys)
    assert part in line, line
    assert tree(run) == before and tree(tmp_path) == outside


def test_a_folder_that_is_not_a_run_and_a_run_without_checkpoints_are_refused(runs, tmp_path, capsys):
    line = tool_refused(["predict", str(tmp_path), "--input", "split:test"], capsys)
    assert "is not a run directory" in line
    bare = tmp_path / "bare"
    shutil.copytree(runs["train_pl"], bare, ignore=shutil.ignore_patterns("*.ckpt", "predictions"))
    before = tree(bare)
    line = tool_refused(["predict", str(bare), "--input", "split:test"], capsys)
    assert "has no checkpoint" in line and tree(bare) == before


def test_image_files_for_a_data_module_predict_cannot_read_images_for(user_runs, pngs, capsys):
    line = tool_refused(["predict", str(user_runs["reg"]), "--input", str(pngs)], capsys)
    assert "not one of torchx's image data modules" in line and "split:val or split:test" in line
    line = tool_refused(["predict", str(user_runs["reg"]), "--input", "split:train"], capsys)
    assert "split:train" in line and "shuffle" in line
