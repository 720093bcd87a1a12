"""Hostile input: files and arguments that look almost right.

Corrupt metrics.csv files and unwritable outputs for `python -m torchx plot`, checkpoints with
the right keys and wrong contents (or flipped bytes), broken gzip streams, out-of-range digits
splits, `--gpu` ids in other scripts' digits, and run names the file system cannot hold. Each
must end as one ConfigError: one line on stderr naming the bad value, exit status 2, no
traceback, and nothing created or changed.
"""

from __future__ import annotations

import copy
import gzip
import os
import shutil
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from helpers import run_train, run_train_pl, snapshot_files, tiny_config, write_config, write_fake_mnist
from torchx import datasets
from torchx.cli import tool_main
from torchx.datasets.mnist import read_idx
from torchx.errors import ConfigError
from torchx.run import check_run_name, check_save_dir, inspect_checkpoint

RUNNERS = {"train_pl": run_train_pl, "train": run_train}


def refused(capsys: pytest.CaptureFixture, code: int, *expected: str) -> str:
    """Exit 2 and one line on stderr holding every `expected` piece, no traceback."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    for piece in expected:
        assert piece in err, f"{piece!r} not in {err!r}"
    return err


# ---------------------------------------------------------------- python -m torchx plot

GOOD_CSV = "step,epoch,train/loss,val/acc\n3,0,2.3,0.5\n7,1,2.1,0.6\n"


def fake_run(folder: Path, metrics: str | bytes = GOOD_CSV) -> Path:
    folder.mkdir(parents=True)
    path = folder / "metrics.csv"
    path.write_bytes(metrics.encode() if isinstance(metrics, str) else metrics)
    return folder


BAD_CSV = {  # id -> (file contents, line named, what the message says)
    "binary-garbage": (b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x01", 1, "is not text"),
    "binary-after-good-rows": (GOOD_CSV.encode() + b"\xc3\x28\xa0\xa1\n", 4, "is not text"),
    "nul-byte": (GOOD_CSV + "9,2,\x00,0.7\n", 4, "a NUL byte"),
    "not-a-number": (GOOD_CSV + "9,2,abc,0.7\n", 4, "column 'train/loss' holds 'abc', not a number"),
    "step-not-a-number": (GOOD_CSV + "x,2,1.0,0.7\n", 4, "column 'step' holds 'x', not a number"),
    "epoch-not-a-number": (GOOD_CSV + "9,two,1.0,0.7\n", 4, "column 'epoch' holds 'two'"),
    "step-nan": (GOOD_CSV + "nan,2,1.0,0.7\n", 4, "step is 'nan'; it must be a whole number >= 0"),
    "header-without-step": ("epoch,train/loss\n0,2.3\n", 1, "has no 'step' column"),
    "header-column-twice": ("step,epoch,val/acc,val/acc\n3,0,0.5,0.6\n", 1, "names a column twice"),
    "ragged-short-row": (GOOD_CSV + "9,2\n", 4, "2 values under 4 columns"),
    "ragged-long-row": (GOOD_CSV + "9,2,1.0,0.7,5\n", 4, "5 values under 4 columns"),
}


@pytest.mark.parametrize("contents, line, message", BAD_CSV.values(), ids=BAD_CSV.keys())
def test_plot_refuses_a_corrupt_metrics_csv_naming_file_and_line(contents, line, message, tmp_path, capsys):
    run = fake_run(tmp_path / "run", contents)
    out = tmp_path / "out.png"
    code = tool_main(["plot", str(run), "-o", str(out)])
    refused(capsys, code, f"{run / 'metrics.csv'}:{line}:", message)
    assert not out.exists()


def test_plot_refuses_an_empty_metrics_csv(tmp_path, capsys):
    run = fake_run(tmp_path / "run", b"")
    refused(capsys, tool_main(["plot", str(run), "-o", str(tmp_path / "out.png")]),
            f"{run / 'metrics.csv'} is empty")


UNWRITABLE = {  # id -> (-o relative to tmp_path, what the message says)
    "folder-missing": ("nowhere/x.png", "the folder '{tmp}/nowhere' does not exist"),
    "folder-missing-trailing-slash": ("nowhere/", "there is no folder '{tmp}/nowhere'"),
    "under-a-file": ("file.txt/x.png", "the folder '{tmp}/file.txt' is a file, not a folder"),
    "name-too-long": ("a" * 300 + ".png", "File name too long"),
}


@pytest.mark.parametrize("out, message", UNWRITABLE.values(), ids=UNWRITABLE.keys())
def test_plot_refuses_an_unwritable_output_naming_it(out, message, tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    (tmp_path / "file.txt").write_text("a regular file\n")
    before = snapshot_files(tmp_path)
    code = tool_main(["plot", str(run), "-o", f"{tmp_path}/{out}"])  # a trailing '/' kept
    err = refused(capsys, code, message.format(tmp=tmp_path))
    assert str(tmp_path / out.rstrip("/")) in err
    assert snapshot_files(tmp_path) == before


@pytest.mark.parametrize("out, written", [("figs", "figs/plot.png"), ("curves", "curves.png")],
                         ids=["existing-folder", "no-extension"])
def test_plot_says_the_file_it_really_wrote(out, written, tmp_path, capsys):
    run = fake_run(tmp_path / "run")
    (tmp_path / "figs").mkdir()
    assert tool_main(["plot", str(run), "-o", str(tmp_path / out)]) == 0
    assert capsys.readouterr().out == f"wrote {tmp_path / written}\n"
    assert (tmp_path / written).read_bytes().startswith(b"\x89PNG")
    assert not (tmp_path / "figs.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"run", "figs", written.split("/")[0]})


@pytest.mark.parametrize("out", ["curves.xyz", "curves.png.bak", "figs/plot.docx"])
def test_plot_refuses_a_format_matplotlib_cannot_write_before_drawing(out, tmp_path, capsys, monkeypatch):
    import matplotlib.pyplot as plt

    def no_drawing(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("drew a figure for an output it cannot write")

    monkeypatch.setattr(plt, "subplots", no_drawing)
    run = fake_run(tmp_path / "run")
    (tmp_path / "figs").mkdir()
    code = tool_main(["plot", str(run), "-o", str(tmp_path / out)])
    refused(capsys, code, str(tmp_path / out), f"cannot write '{Path(out).suffix}' files", "png", "pdf", "svg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figs", "run"]


# ---------------------------------------------------------------- checkpoints: wrong contents, flipped bytes


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny run (train_pl.py); tests copy it and corrupt copies of its checkpoint."""
    folder = tmp_path_factory.mktemp("trained")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        write_config(folder / "c.yaml", tiny_config())
        assert run_train_pl(["--config", "c.yaml", "--save-dir", "save", "--name", "g"]) == 0
    finally:
        os.chdir(cwd)
    return folder / "save" / "g"


def first_key(d: dict) -> str:
    return next(iter(d))


def drop(key: str) -> Callable[[dict], None]:
    return lambda d: d.pop(key)


BAD_CONTENTS: dict[str, tuple[Callable[[dict], Any], str]] = {  # id -> (change, what the message says)
    "state-dict-an-int": (lambda c: c.update(state_dict=5),
                          "state_dict is 5 (an int), not a mapping of parameter names to tensors"),
    "state-dict-a-list": (lambda c: c.update(state_dict=[1, 2]), "state_dict is [1, 2] (a list), not a mapping"),
    "state-dict-value-not-a-tensor": (lambda c: c["state_dict"].update({first_key(c["state_dict"]): [0.5]}),
                                      "] is [0.5] (a list), not a tensor"),
    "state-dict-key-not-a-string": (lambda c: c["state_dict"].update({7: torch.zeros(1)}),
                                    "a key of state_dict is 7 (an int), not a parameter name"),
    "epoch-negative": (lambda c: c.update(epoch=-1), "epoch is -1 (an int), not a whole number >= 0"),
    "epoch-a-string": (lambda c: c.update(epoch="1"), "epoch is '1', not a whole number >= 0"),
    "epoch-a-float": (lambda c: c.update(epoch=1.0), "epoch is 1.0 (a float), not a whole number"),
    "global-step-a-bool": (lambda c: c.update(global_step=True), "global_step is True (a bool), not a whole number"),
    "global-step-none": (lambda c: c.update(global_step=None), "global_step is None, not a whole number"),
    "optimizer-states-a-dict": (lambda c: c.update(optimizer_states=c["optimizer_states"][0]),
                                "optimizer_states is {"),
    "optimizer-state-an-int": (lambda c: c["optimizer_states"].__setitem__(0, 5),
                               "optimizer_states[0] is 5 (an int), not an optimizer's state_dict"),
    "optimizer-without-state": (lambda c: drop("state")(c["optimizer_states"][0]),
                                "optimizer_states[0]['state'] is missing; it must be a dict"),
    "optimizer-state-a-list": (lambda c: c["optimizer_states"][0].update(state=[]),
                               "optimizer_states[0]['state'] is [] (a list), not a dict"),
    "param-groups-a-dict": (lambda c: c["optimizer_states"][0].update(param_groups={"params": [0]}),
                            "optimizer_states[0]['param_groups'] is {'params': [0]} (a dict), not a non-empty list"),
    "param-groups-empty": (lambda c: c["optimizer_states"][0].update(param_groups=[]),
                           "optimizer_states[0]['param_groups'] is [] (a list), not a non-empty list"),
    "param-group-a-string": (lambda c: c["optimizer_states"][0].update(param_groups=["lr"]),
                             "optimizer_states[0]['param_groups'][0] is 'lr', not a dict holding 'params'"),
    "param-group-without-params": (lambda c: drop("params")(c["optimizer_states"][0]["param_groups"][0]),
                                   "['param_groups'][0]['params'] is missing; it must be a list of parameter"),
    "params-not-indices": (lambda c: c["optimizer_states"][0]["param_groups"][0].update(params=["w"]),
                           "['param_groups'][0]['params'] is ['w'] (a list), not a list of parameter indices"),
    "lr-schedulers-a-dict": (lambda c: c.update(lr_schedulers=c["lr_schedulers"][0]), "lr_schedulers is {"),
    "lr-scheduler-an-int": (lambda c: c.update(lr_schedulers=[3]),
                            "lr_schedulers[0] is 3 (an int), not a scheduler's state_dict"),
    "loops-a-list": (lambda c: c.update(loops=[]), "loops is [] (a list), not a dict"),
    "loops-none": (lambda c: c.update(loops=None), "loops is None, not a dict"),
    "fit-loop-a-string": (lambda c: c["loops"].update(fit_loop="done"), "loops['fit_loop'] is 'done', not a dict"),
    "progress-counter-a-string": (
        lambda c: c["loops"]["fit_loop"]["epoch_progress"]["current"].update(processed="2"),
        "loops['fit_loop']['epoch_progress']['current']['processed'] is '2', not a whole number >= 0"),
    "batches-that-stepped-negative": (
        lambda c: c["loops"]["fit_loop"]["epoch_loop.state_dict"].update(_batches_that_stepped=-3),
        "['_batches_that_stepped'] is -3 (an int), not a whole number >= 0"),
    "callbacks-a-list": (lambda c: c.update(callbacks=[]), "callbacks is [] (a list), not a dict"),
    "torchx-state-an-int": (lambda c: c["callbacks"].update(torchx=1), "callbacks['torchx'] is 1 (an int), not a dict"),
    "torchx-version-a-float": (lambda c: c["callbacks"]["torchx"].update(version=0.1),
                               "callbacks['torchx']['version'] is 0.1 (a float), not a version string"),
}


def write_bad_contents(trained: Path, change: Callable[[dict], Any], out: Path) -> Path:
    ckpt = copy.deepcopy(torch.load(trained / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True))
    change(ckpt)
    torch.save(ckpt, out)
    return out


def flip_a_tensor_byte(src: Path, out: Path) -> str:
    """A copy of `src` with one byte inverted inside its largest tensor's data; returns that member."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as archive:
        member = max((m for m in archive.infolist() if "/data/" in m.filename), key=lambda m: m.file_size)
    name_len, extra_len = struct.unpack("<HH", data[member.header_offset + 26:member.header_offset + 30])
    start = member.header_offset + 30 + name_len + extra_len  # after the member's local header
    data[start + member.file_size // 2] ^= 0xFF
    out.write_bytes(data)
    return member.filename


def refuses_to_resume(trained: Path, bad: Path, loop: str, tmp_path: Path, capsys, *expected: str) -> None:
    """`--resume bad` is refused both into the existing run (left byte for byte as it was) and
    into a new run name (nothing created)."""
    save = tmp_path / "save"
    shutil.copytree(trained, save / "g")
    write_config(tmp_path / "c.yaml", tiny_config())
    before = snapshot_files(save)
    capsys.readouterr()
    code = RUNNERS[loop](["--save-dir", str(save), "--name", "g", "--resume", str(bad)])
    refused(capsys, code, str(bad), *expected)
    code = RUNNERS[loop](["--config", str(tmp_path / "c.yaml"), "--save-dir", str(save), "--name", "new",
                          "--resume", str(bad)])
    refused(capsys, code, str(bad), *expected)
    assert snapshot_files(save) == before
    assert sorted(p.name for p in save.iterdir()) == ["g"]


@pytest.mark.parametrize("loop", RUNNERS)
@pytest.mark.parametrize("change, message", BAD_CONTENTS.values(), ids=BAD_CONTENTS.keys())
def test_resume_refuses_a_checkpoint_with_wrong_contents(change, message, loop, trained, tmp_path, monkeypatch,
                                                         capsys):
    monkeypatch.chdir(tmp_path)
    bad = write_bad_contents(trained, change, tmp_path / "bad.ckpt")
    refuses_to_resume(trained, bad, loop, tmp_path, capsys, "is not a usable training checkpoint", message)


@pytest.mark.parametrize("loop", RUNNERS)
def test_resume_refuses_a_checkpoint_with_a_flipped_byte_naming_the_member(loop, trained, tmp_path, monkeypatch,
                                                                          capsys):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "flipped.ckpt"
    member = flip_a_tensor_byte(trained / "ckpt" / "last.ckpt", bad)
    # the damage is silent to torch: the file loads, with one weight changed
    good = torch.load(trained / "ckpt" / "last.ckpt", weights_only=True)
    flipped = torch.load(bad, weights_only=True)
    assert any(not torch.equal(a, b) for a, b in zip(_tensors(good), _tensors(flipped)))
    refuses_to_resume(trained, bad, loop, tmp_path, capsys, "is corrupt", f"its member '{member}'", "CRC-32")


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def test_a_legacy_format_checkpoint_is_read_without_a_crc_check(trained, tmp_path):
    ckpt = torch.load(trained / "ckpt" / "last.ckpt", weights_only=True)
    legacy = tmp_path / "legacy.ckpt"
    torch.save(ckpt, legacy, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(legacy)
    loaded = inspect_checkpoint(legacy)
    assert loaded["global_step"] == ckpt["global_step"]
    assert loaded["state_dict"].keys() == ckpt["state_dict"].keys()


@pytest.mark.parametrize("loop", RUNNERS)
def test_a_legacy_format_checkpoint_resumes(loop, trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    legacy = tmp_path / "legacy.ckpt"
    torch.save(torch.load(trained / "ckpt" / "last.ckpt", weights_only=True), legacy,
               _use_new_zipfile_serialization=False)
    path = write_config(tmp_path / "c.yaml", tiny_config(max_epochs=3))
    assert RUNNERS[loop](["--config", str(path), "--save-dir", "save", "--name", "more", "--resume",
                          str(legacy)]) == 0
    assert (tmp_path / "save" / "more" / "ckpt" / "last.ckpt").is_file()


# ---------------------------------------------------------------- MNIST: broken gzip streams


def gzip_with(deflate: bytes) -> bytes:
    """A valid gzip header (magic, deflate, no flags) followed by `deflate` and a trailer."""
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + deflate + b"\x00" * 8


BAD_GZIP = {
    "invalid-block-type": gzip_with(b"\xff" * 64),
    "garbage-deflate": gzip_with(bytes((i * 37 + 11) % 256 for i in range(200))),
    "good-header-then-noise": gzip.compress(b"\x00\x00\x08\x01" + bytes(100))[:10] + b"\x07" * 50,
}


@pytest.mark.parametrize("data", BAD_GZIP.values(), ids=BAD_GZIP.keys())
def test_read_idx_refuses_a_corrupt_gzip_stream(data, tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=rf"{path}: cannot decompress .*truncated or corrupt"):
        read_idx(path)


@pytest.mark.parametrize("loop", RUNNERS)
def test_a_corrupt_mnist_file_is_one_message_and_creates_nothing(loop, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    root = write_fake_mnist(tmp_path / "mnist")
    bad = root / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(BAD_GZIP["invalid-block-type"])
    cfg = tiny_config()
    cfg["data_module"] = {"name": "mnist", "args": {"root_dir": str(root), "batch_size": 16, "val_split": 32}}
    cfg["train_wrapper"]["args"]["model_spec"]["args"]["in_dim"] = 784
    path = write_config(tmp_path / "m.yaml", cfg)
    code = RUNNERS[loop](["--config", str(path), "--save-dir", str(tmp_path / "save")])
    refused(capsys, code, f"{bad}: cannot decompress")
    assert not (tmp_path / "save").exists()


# ---------------------------------------------------------------- digits: test_split

BAD_TEST_SPLIT = [  # (value, what the message says)
    (5000, "test_split=5000 is more than the 1797 digits"),
    (1797, "test_split=1797 is all the 1797 digits"),
    (-1, "test_split=-1 is negative"),
    (True, "test_split=True is not a count of test digits"),
    (297.0, "test_split=297.0 is not a count of test digits"),
    ("100", "test_split='100' is not a count of test digits"),
]


@pytest.mark.parametrize("value, message", BAD_TEST_SPLIT, ids=[repr(v) for v, _ in BAD_TEST_SPLIT])
def test_digits_refuses_a_bad_test_split_when_built(value, message):
    """The class's own check, for code that builds it directly (from a config, the registry's type
    check answers first for values that are not ints)."""
    with pytest.raises(ConfigError) as e:
        datasets.registry.get("digits")(test_split=value)
    assert message in str(e.value) and "from 0 to 1796" in str(e.value)


@pytest.mark.parametrize("loop", RUNNERS)
@pytest.mark.parametrize("value", [5000, 1797])
def test_digits_test_split_too_large_is_named_not_blamed_on_val_split(value, loop, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path / "c.yaml", tiny_config())
    code = RUNNERS[loop](["--config", str(path), "--save-dir", str(tmp_path / "save"),
                          f"+data_module.args.test_split={value}"])
    err = refused(capsys, code, f"test_split={value} ", "the 1797 digits", "from 0 to 1796")
    assert "val_split" not in err
    assert not (tmp_path / "save").exists()


def test_digits_test_split_zero_means_no_test_set():
    dm = datasets.make({"name": "digits", "args": {"test_split": 0, "val_split": 0}})
    dm.setup()
    assert not dm.has_split("test") and len(dm.splits["train"][1]) == 1797


# ---------------------------------------------------------------- --gpu

BAD_GPUS = {  # id -> (--gpu value, what the message says)
    "arabic-indic-digit": ("\u0663", ["--gpu '\u0663'", "'\u0663' is not a number written in the digits 0-9"]),
    "superscript-digit": ("\u00b3", ["'\u00b3' is not a number written in the digits 0-9"]),
    "fullwidth-digit": ("1,\uff10", ["--gpu '1,\uff10'", "'\uff10' is not a number written in the digits 0-9"]),
    "negative": ("-1", ["device ids are not negative ('-1')"]),
    "negative-among-others": ("0,-2", ["device ids are not negative ('-2')"]),
    "empty": ("", ["--gpu '' is not a list of CUDA device ids like 0 or 1,2: it is empty"]),
    "blank": ("  ", ["--gpu '  '", "it is empty"]),
    "trailing-comma": ("0,", ["--gpu '0,' is not a list of CUDA device ids like 0 or 1,2: an id is empty"]),
    "double-comma": ("1,,2", ["--gpu '1,,2'", "an id is empty"]),
    "only-a-comma": (",", ["an id is empty"]),
    "too-large": ("1024", ["device id 1024 is out of range (0 to 1023)"]),
    "absurdly-large": ("9" * 5000, ["(5000 characters)", "is out of range (0 to 1023)"]),
}


@pytest.mark.parametrize("value, messages", BAD_GPUS.values(), ids=BAD_GPUS.keys())
def test_gpu_ids_must_be_ascii_digits_in_range(value, messages, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path / "c.yaml", tiny_config())
    code = run_train_pl(["--config", str(path), "--save-dir", str(tmp_path / "save"), f"--gpu={value}"])
    refused(capsys, code, *messages)
    assert not (tmp_path / "save").exists()


# ---------------------------------------------------------------- run names and save dirs

BAD_NAMES = {  # id -> (--name, what the message says)
    "empty": ("", "--name '' is empty"),
    "dot": (".", "--name '.' must be a plain folder name"),
    "dotdot": ("..", "--name '..' must be a plain folder name"),
    "slash": ("a/b", "--name 'a/b' must be a plain folder name"),
    "backslash": ("a\\b", "--name 'a\\\\b' must be a plain folder name"),
    "nul": ("a\0b", "--name 'a\\x00b' must be a plain folder name"),
    "256-bytes": ("n" * 256, "is 256 bytes long in UTF-8; a folder name holds at most 255"),
    "128-two-byte-chars": ("\u00e9" * 128, "is 256 bytes long in UTF-8"),
    "not-utf8": (b"caf\xe9".decode("utf-8", "surrogateescape"),
                 "--name 'caf\\udce9' is not valid UTF-8 (byte 0xe9); the name must be valid UTF-8"),
}


@pytest.mark.parametrize("name, message", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_check_run_name_refuses(name, message):
    with pytest.raises(ConfigError) as e:
        check_run_name(name)
    assert message in str(e.value)
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


@pytest.mark.parametrize("name", ["test", "n" * 255, "\u00e9" * 127, "mnist-cnn_lr=0.1", "a b"])
def test_check_run_name_accepts(name):
    check_run_name(name)


BAD_SAVE_DIRS = {  # id -> (--save-dir, what the message says)
    "empty": ("", ["--save-dir '' is empty"]),
    "nul": ("save\0x", ["--save-dir 'save\\x00x' holds a NUL byte"]),
    "long-component": ("save/" + "d" * 256, ["the folder name 'ddd", "is 256 bytes long in UTF-8"]),
    "long-path": ("/" + "/".join(["p" * 200] * 21),
                  ["is 4221 bytes long as an absolute path; paths hold at most 4000"]),
    "not-utf8": (b"sav\xff".decode("utf-8", "surrogateescape"),
                 ["--save-dir 'sav\\udcff' is not valid UTF-8 (byte 0xff); the path must be valid UTF-8"]),
}


@pytest.mark.parametrize("save_dir, messages", BAD_SAVE_DIRS.values(), ids=BAD_SAVE_DIRS.keys())
def test_check_save_dir_refuses(save_dir, messages):
    with pytest.raises(ConfigError) as e:
        check_save_dir(save_dir)
    for message in messages:
        assert message in str(e.value)
    assert "\n" not in str(e.value) and len(str(e.value)) < 400


@pytest.mark.parametrize("save_dir", ["save", "./save", "/tmp/runs/", "d" * 255, "/" + "/".join(["p" * 200] * 19)])
def test_check_save_dir_accepts(save_dir):
    check_save_dir(save_dir)


SESSION_OR_SINGLE = {"single": {}, "session": {"seed_": [1, 2]}}


@pytest.mark.parametrize("kind", SESSION_OR_SINGLE)
@pytest.mark.parametrize("loop", RUNNERS)
@pytest.mark.parametrize("name, message", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_a_bad_name_on_the_command_line_creates_nothing(name, message, loop, kind, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = {**tiny_config(), **SESSION_OR_SINGLE[kind]}
    path = write_config(tmp_path / "c.yaml", cfg)
    code = RUNNERS[loop](["--config", str(path), "--save-dir", str(tmp_path / "save"), "--name", name])
    refused(capsys, code, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


@pytest.mark.parametrize("kind", SESSION_OR_SINGLE)
@pytest.mark.parametrize("save_dir, messages", [v for k, v in BAD_SAVE_DIRS.items() if k != "long-path"],
                         ids=[k for k in BAD_SAVE_DIRS if k != "long-path"])
def test_a_bad_save_dir_on_the_command_line_creates_nothing(save_dir, messages, kind, tmp_path, monkeypatch,
                                                            capsys):
    monkeypatch.chdir(tmp_path)
    cfg = {**tiny_config(), **SESSION_OR_SINGLE[kind]}
    path = write_config(tmp_path / "c.yaml", cfg)
    code = run_train_pl(["--config", str(path), "--save-dir", save_dir])
    refused(capsys, code, *messages)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]
