"""Shared test helpers: tiny configs, in-process runs, and the run-directory assertion."""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import json
import os
import struct
import threading
from importlib import metadata
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"


def tiny_config(**trainer_params) -> dict:
    """digits + mlp, two epochs of a few batches: seconds on a CPU."""
    params = {"max_epochs": 2, "limit_train_batches": 4, "limit_val_batches": 2, "limit_test_batches": 2,
              "enable_progress_bar": False, "enable_model_summary": False}
    params.update(trainer_params)
    return {
        "data_module": {"name": "digits", "args": {"batch_size": 16}},
        "train_wrapper": {"name": "base", "args": {
            "model_spec": {"name": "mlp", "args": {"in_dim": 64, "hidden": [32], "out_dim": 10}},
            "loss_spec": {"name": "ce"},
            "optim_spec": {"name": "SGD", "args": {"lr": 0.1, "momentum": 0.9}},
            "sched_spec": {"name": "StepLR", "args": {"step_size": 1, "gamma": 0.5}, "interval": "epoch"},
        }},
        "trainer_params": params,
        "checkpoint": {"monitor": "val/acc", "mode": "max"},
        "seed": 7,
    }


def rekey(cfg: dict, where: tuple, key: str, new_key: str, value: object) -> dict:
    """Replace `key` in the mapping at path `where` by `new_key: value` (a sweep key `lr_`, a search
    key `lr~`); returns `cfg`."""
    node = cfg
    for part in where:
        node = node[part]
    node.pop(key, None)
    node[new_key] = value
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def idx_bytes(array: torch.Tensor, type_byte: int = 0x08) -> bytes:
    """The IDX encoding of a uint8 tensor: 0, 0, type, ndim, big-endian uint32 sizes, data."""
    header = bytes([0, 0, type_byte, array.dim()]) + b"".join(struct.pack(">I", s) for s in array.shape)
    return header + array.to(torch.uint8).contiguous().numpy().tobytes()


def write_idx(path: Path, data: torch.Tensor) -> Path:
    """An IDX file, gzipped when the name ends in .gz."""
    raw = idx_bytes(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def write_fake_mnist(root: Path, n_train: int = 256, n_test: int = 64) -> Path:
    """Four gzipped IDX files of random 28x28 images whose label is readable from the pixels."""
    root.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.arange(n) % 10
        images = torch.randint(0, 60, (n, 28, 28), generator=g, dtype=torch.uint8)
        images[torch.arange(n), 2 * labels + 3, 5:20] = 255  # a bright row per class
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def run_train_pl(argv: list[str]) -> int:
    """train_pl.py's main, in this process (DDP needs a real process: use subprocess there)."""
    from torchx.cli import main

    return main(argv, "train_pl.py", "torchx.fit")


def run_train(argv: list[str]) -> int:
    """train.py's main (the plain loop), in this process."""
    from torchx.cli import main

    return main(argv, "train.py", "torchx.loop")


def snapshot_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the run's TensorBoard events, read with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # the whole folder at once, as TensorBoard reads a run: a resumed run's purge step hides what
    # a killed process logged after its checkpoint, across event files
    acc = EventAccumulator(str(run_dir / "default" / "version_0"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def read_metrics(path: Path) -> list[dict[str, float | None]]:
    """metrics.csv read as strictly as pandas would: a header naming each column once, `step`
    and `epoch` first, every row as wide as the header, steps whole and increasing, every cell a
    number or empty. Returns the rows, empty cells as None."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert len(header) == len(set(header)), f"{path}: a column twice in {header}"
    assert header[:2] == ["step", "epoch"], header
    out = []
    for n, row in enumerate(body, start=2):
        assert len(row) == len(header), f"{path}:{n}: {len(row)} cells under {len(header)} columns"
        cells = {k: (float(v) if v != "" else None) for k, v in zip(header, row)}
        assert cells["step"] is not None and cells["step"].is_integer(), f"{path}:{n}: step {row[0]!r}"
        out.append(cells)
    steps = [r["step"] for r in out]
    assert steps == sorted(set(steps)), f"{path}: steps not increasing: {steps}"
    return out


def left_by_a_kill_after(run_dir, step: int) -> None:
    """Make ckpt/last.ckpt what a kill right after `step` leaves: the checkpoint written at that
    step (its top-k file holds the same state, save for the path of last.ckpt it records)."""
    ckpt = torch.load(next((run_dir / "ckpt").glob(f"*-step={step}.ckpt")), weights_only=True)
    for key, state in ckpt["callbacks"].items():
        if key.startswith("ModelCheckpoint"):
            state["last_model_path"] = os.path.realpath(run_dir / "ckpt" / "last.ckpt")
    torch.save(ckpt, run_dir / "ckpt" / "last.ckpt")


def assert_run_dir(run_dir: Path, epochs: int, tested: bool = True) -> dict:
    """What every finished run directory holds, whichever loop wrote it. Returns results.json."""
    for rel in ("config.yaml", "provenance.json", "log.txt", "results.json", "ckpt/last.ckpt",
                "default/version_0/hparams.yaml", "src/torchx/registry.py", "src/train_pl.py"):
        assert (run_dir / rel).is_file(), f"{rel} missing in {run_dir}"
    assert not (run_dir / "ckpt" / "last.ckpt").is_symlink()
    assert not list((run_dir / "src").rglob("__pycache__"))
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert {"command", "git", "versions", "seed", "host", "start_time"} <= prov.keys()
    assert prov["versions"]["torch"] == metadata.version("torch")
    lines = (run_dir / "log.txt").read_text().splitlines()
    assert len(lines) == epochs, lines
    assert all("eta" in line and "elapsed" in line and "train/loss" in line for line in lines)
    tags = scalars(run_dir)
    for tag in ("train/loss", "val/loss", "val/acc"):
        assert len(tags.get(tag, [])) == epochs, (tag, tags.get(tag))
    steps = [s for s, _ in tags["train/loss"]]
    assert steps == sorted(set(steps)), f"train/loss steps not strictly increasing: {steps}"
    results = json.loads((run_dir / "results.json").read_text())
    if tested:
        assert {"test/loss", "test/acc"} <= results["test"].keys()
        assert "test/acc" in tags
    return results


def refused(loop: str, config: Path, capsys) -> str:
    """Run `config` with train_pl.py or train.py (`loop`) in this process and check it is refused as
    bad input: exit 2, one line `<loop>.py: error: ...`, no traceback. Returns that line."""
    capsys.readouterr()
    code = (run_train_pl if loop == "train_pl" else run_train)(["--config", str(config), "--save-dir", "save"])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{loop}.py: error: "), err
    return err


@contextlib.contextmanager
def serve_folder(www: Path):
    """An HTTP server on 127.0.0.1 serving `www` (downloads tested without the internet); yields its URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def run_tool(argv: list[str]) -> int:
    """`python -m torchx ...` (test, validate, predict, export, rerun, ...), in this process."""
    from torchx.cli import tool_main

    return tool_main(argv)


def trained_run(save: Path, name: str = "run", loop: str = "train_pl", **trainer_params) -> Path:
    """A finished tiny digits run (tiny_config) trained by train_pl.py or train.py (`loop`) into
    `save/name`; returns its run directory."""
    cfg = write_config(save.parent / f"{name}.yaml", tiny_config(**trainer_params))
    code = (run_train_pl if loop == "train_pl" else run_train)(["--config", str(cfg), "--name", name,
                                                                "--save-dir", str(save)])
    assert code == 0
    return save / name


def tool_refused(argv: list[str], capsys) -> str:
    """Run `python -m torchx <argv>` in this process and check it is refused as bad input: exit 2,
    one line `python -m torchx: error: ...`, no traceback. Returns that line."""
    capsys.readouterr()
    code = run_tool(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m torchx: error: "), err
    return lines[0]


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time: a test that nothing changed."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}
