"""`python -m torchx export`: each format is a file that a process without torchx loads and runs,
with the eager model's outputs on a real batch; runs of both loops, a model with BatchNorm, a dict
output, a user's module that only the run's snapshot has and Lightning's own BoringModel; bad input
is refused whole and leaves the run directory as it was."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import ROOT, run_tool, run_train, run_train_pl, tiny_config, tool_refused, tree, write_config

USER = Path(__file__).resolve().parent / "user_project"
FORMATS = ("torchscript", "exported-program", "onnx")
TOLERANCE = {"torchscript": 1e-5, "exported-program": 1e-5, "onnx": 1e-4}
SUFFIX = {"torchscript": ".pt", "exported-program": ".pt2", "onnx": ".onnx"}
def needs(fmt: str) -> None:
    if fmt == "onnx":
        for package in ("onnx", "onnxscript", "onnxruntime"):
            pytest.importorskip(package, reason=f"--format onnx needs {package} (pip install -e '.[onnx]')")


# a user's module in a project folder of their own: a network whose forward returns a dict, as Hugging Face
# models do (names of its own, so that it can share a process with the suite's other user modules)
HEADS = """
import torch
import torchx.models as models


@models.register("export_two_heads")
class TwoHeads(torch.nn.Module):
    def __init__(self, in_dim: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(in_dim, num_classes)

    def forward(self, x):
        x = x.flatten(1)
        return {"logits": self.layer(x), "features": x}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Digits runs: the MLP under train.py, a ResNet-18 (convolutions, batch norm) under train_pl.py, a
    dict-output network from a user's module whose project folder is then deleted (only the run's
    snapshot has it), and Lightning's BoringModel (the LightningModule is the network)."""
    base = tmp_path_factory.mktemp("export")
    save = base / "save"
    path = write_config(base / "mlp.yaml", tiny_config())
    assert run_train(["--config", str(path), "--name", "mlp", "--save-dir", str(save)]) == 0
    cfg = tiny_config(max_epochs=1, limit_train_batches=2)
    cfg["train_wrapper"]["args"]["model_spec"] = {"name": "resnet18", "args": {"num_classes": 10}}
    path = write_config(base / "resnet.yaml", cfg)
    assert run_train_pl(["--config", str(path), "--name", "resnet", "--save-dir", str(save)]) == 0

    project = base / "project"
    project.mkdir()
    (project / "my_heads.py").write_text(HEADS)
    cfg = tiny_config(max_epochs=1)
    cfg["imports"] = ["my_heads"]
    cfg["train_wrapper"]["args"]["model_spec"] = {"name": "export_two_heads"}
    cfg["train_wrapper"]["args"]["output_key"] = "logits"
    path = write_config(project / "heads.yaml", cfg)
    boring = {"imports": ["lightning_user"], "data_module": {"name": "boring_datamodule"},
              "train_wrapper": {"name": "boring_model"}, "seed": 3,
              "trainer_params": {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1,
                                 "limit_test_batches": 1, "enable_progress_bar": False, "enable_model_summary": False}}
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(project))
        mp.syspath_prepend(str(USER))
        assert run_train_pl(["--config", str(path), "--name", "heads", "--save-dir", str(save)]) == 0
        path = write_config(project / "boring.yaml", boring)
        assert run_train_pl(["--config", str(path), "--name", "boring", "--save-dir", str(save)]) == 0
    shutil.rmtree(project)
    return {name: save / name for name in ("mlp", "resnet", "heads", "boring")}


def export(run_dir: Path, fmt: str, *argv: str, cwd: Path | None = None) -> tuple[Path, float, str]:
    """`python -m torchx export` in a fresh process (so that only the snapshot has a user's module):
    the file it wrote, the max abs difference it printed, and its stdout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "torchx", "export", str(run_dir), "--format", fmt, *argv],
                         cwd=cwd or run_dir.parent, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return parse_export(out.stdout)


def parse_export(stdout: str) -> tuple[Path, float, str]:
    written = Path(re.search(r"^wrote (\S+) \(", stdout, re.M).group(1))
    diff = float(re.search(r"max abs difference vs eager: (\S+) \(tolerance", stdout).group(1))
    return written, diff, stdout


# a process that has never seen torchx: each exported file loaded as its users load it, run on real inputs
LOAD_ALL = """
import sys, torch
jobs = torch.load(sys.argv[1])
outputs = {}
for key, (fmt, file, x) in jobs.items():
    if fmt == "torchscript":
        model = torch.jit.load(file)
    elif fmt == "exported-program":
        model = torch.export.load(file).module()
    else:
        import onnxruntime
        session = onnxruntime.InferenceSession(file, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        model = lambda x, s=session, n=name: torch.from_numpy(s.run(None, {n: x.numpy()})[0])
    with torch.no_grad():
        outputs[key] = model(x)
assert not any(m == "torchx" or m.startswith("torchx.") for m in sys.modules)
torch.save(outputs, sys.argv[2])
"""


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory) -> dict[tuple[str, str], dict]:
    """Every run in every format it can be exported to here: the file, the difference export printed,
    and the file's outputs on 5 real inputs computed by a process without torchx, beside the eager
    model's."""
    work = tmp_path_factory.mktemp("exported")
    formats = [f for f in FORMATS if f != "onnx" or all(has(p) for p in ("onnx", "onnxscript", "onnxruntime"))]
    found: dict[tuple[str, str], dict] = {}
    for name in ("mlp", "resnet", "heads"):
        for fmt in formats:
            found[name, fmt] = in_process(runs[name], fmt)
    inputs = {name: real_inputs(runs[name], 5) for name in ("mlp", "resnet", "heads")}
    jobs = {f"{name}/{fmt}": (fmt, str(info["file"]), inputs[name]) for (name, fmt), info in found.items()}
    torch.save(jobs, work / "jobs.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", LOAD_ALL, str(work / "jobs.pt"), str(work / "out.pt")], cwd=work,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    outputs = torch.load(work / "out.pt")
    for (name, fmt), info in found.items():
        info["got"], info["want"] = outputs[f"{name}/{fmt}"], eager(runs[name], inputs[name])
    return found


def in_process(run_dir: Path, fmt: str, *argv: str) -> dict:
    """`python -m torchx export` in this process: the file, the difference it printed, its stdout."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert run_tool(["export", str(run_dir), "--format", fmt, *argv]) == 0
    return dict(zip(("file", "diff", "stdout"), parse_export(buf.getvalue())))


def has(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is not None


def eager(run_dir: Path, x: torch.Tensor, ckpt: str = "best") -> torch.Tensor:
    import torchx

    run = torchx.load_run(run_dir, ckpt=ckpt)
    with torch.no_grad():
        y = run.model(x)
    key = getattr(run.wrapper, "output_key", None)
    return y[key] if key is not None else y


def real_inputs(run_dir: Path, n: int) -> torch.Tensor:
    """`n` real inputs from the run's test split, as its evaluation sees them."""
    import torchx

    data = torchx.load_run(run_dir, ckpt="last").data_module("test")
    batch = next(iter(data.test_dataloader()))
    x = batch[0] if isinstance(batch, (list, tuple)) else batch
    return x[:n]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", ["mlp", "resnet", "heads"])
def test_each_format_round_trips_in_a_process_without_torchx(exported, runs, name, fmt):
    needs(fmt)
    info = exported[name, fmt]
    written, diff = info["file"], info["diff"]
    assert written.parent == runs[name] / "export" and written.suffix == SUFFIX[fmt]
    assert 0 <= diff <= TOLERANCE[fmt]
    sidecar = json.loads(Path(f"{written}.json").read_text())
    assert sidecar["format"] == fmt and sidecar["tolerance"] == TOLERANCE[fmt]
    assert sidecar["max_abs_diff"] == pytest.approx(diff, rel=1e-2)  # printed with 3 digits
    # a batch size other than the two it was checked on: the batch dimension is dynamic in every format
    got, want = info["got"], info["want"]
    assert got.shape == want.shape == (5, 10) and float((got - want).abs().max()) <= TOLERANCE[fmt]
    assert not list((runs[name] / "export").glob(".*"))  # no temporary file left behind


def test_a_second_export_gets_its_own_file_and_the_first_is_kept(runs):
    run_dir = runs["mlp"]
    first = in_process(run_dir, "torchscript", "--ckpt", "last")["file"]
    before = first.read_bytes()
    second = in_process(run_dir, "torchscript", "--ckpt", "last")["file"]
    assert first.name == "model-last.pt" and second.name == "model-last-2.pt"
    assert first.read_bytes() == before


def test_out_writes_where_asked_and_the_snapshot_module_is_announced(runs, tmp_path):
    before = tree(runs["heads"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "torchx", "export", str(runs["heads"]), "--format",
                          "exported-program", "--out", "head.pt2"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "'my_heads' is not importable here; using the run's snapshot copy" in out.stderr
    assert (tmp_path / "head.pt2").is_file() and (tmp_path / "head.pt2.json").is_file()
    assert tree(runs["heads"]) == before  # --out writes nothing into the run directory
    exported = torch.export.load(str(tmp_path / "head.pt2")).module()
    x = real_inputs(runs["heads"], 3)
    assert torch.allclose(exported(x), eager(runs["heads"], x), atol=1e-5)


def test_another_output_of_a_dict_model_by_output_key(runs, tmp_path):
    """--output-key picks another entry of a dict output: the network's 'features' are its flattened input."""
    info = in_process(runs["heads"], "torchscript", "--output-key", "features", "--out", str(tmp_path / "f.pt"))
    x = real_inputs(runs["heads"], 4)
    assert info["diff"] == 0 and torch.equal(torch.jit.load(str(info["file"]))(x), x.flatten(1))


def test_lightnings_boring_model_exports_itself(runs):
    """A LightningModule with no `.model`: the module itself is the network exported."""
    info = in_process(runs["boring"], "exported-program", "--ckpt", "last")
    written, diff = info["file"], info["diff"]
    x = torch.randn(4, 32)
    got = torch.export.load(str(written)).module()(x)
    assert diff <= TOLERANCE["exported-program"]
    assert torch.allclose(got, eager(runs["boring"], x, ckpt="last"), atol=1e-5)


# ---------------------------------------------------------------- bad input


def _exists(tmp: Path) -> Path:
    (tmp / "taken.pt").write_bytes(b"someone's file")
    return tmp / "taken.pt"


BAD = [  # (what, argv after `export {run}`, message part)
    ("unknown format", ["--format", "tflite"], "invalid choice: 'tflite'"),
    ("batch size 0", ["--format", "torchscript", "--batch-size", "0"], "--batch-size 0 must be at least 1"),
    ("wrong suffix", ["--format", "onnx", "--out", "{tmp}/model.pt"], "a onnx file ends in .onnx"),
    ("out exists", ["--format", "torchscript", "--out", "{taken}"], "already exists; torchx does not replace it"),
    ("out in a file", ["--format", "torchscript", "--out", "{taken}/m.pt"], "is not a folder"),
    ("missing ckpt", ["--format", "torchscript", "--ckpt", "{tmp}/gone.ckpt"], "does not exist; give a checkpoint"),
    ("no such output", ["--format", "torchscript", "--output-key", "nope"], "asked for output 'nope'"),
]


@pytest.mark.parametrize("what,argv,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_message_and_changes_nothing(runs, what, argv, message, tmp_path, capsys):
    taken = _exists(tmp_path)
    run_dir = runs["heads"] if what == "no such output" else runs["mlp"]
    before, here = tree(run_dir), tree(tmp_path)
    argv = [a.format(tmp=tmp_path, taken=taken) for a in argv]
    if what == "unknown format":  # argparse's own refusal: exit 2 and its usage line
        with pytest.raises(SystemExit) as e:
            run_tool(["export", str(run_dir), *argv])
        assert e.value.code == 2 and message in capsys.readouterr().err
    else:
        line = tool_refused(["export", str(run_dir), *argv], capsys)
        assert message in line, line
    assert tree(run_dir) == before and tree(tmp_path) == here


def test_a_model_whose_output_is_a_dict_without_output_key_is_refused_naming_its_keys(runs, tmp_path, capsys):
    """The heads run with its output_key dropped from the config: the dict's keys and the option to use."""
    copy = tmp_path / "save" / "heads"
    shutil.copytree(runs["heads"], copy)
    cfg = (copy / "config.yaml").read_text().replace("output_key: logits", "output_key: null")
    (copy / "config.yaml").write_text(cfg)
    before = tree(copy)
    line = tool_refused(["export", str(copy), "--format", "torchscript"], capsys)
    assert "returns a dict (keys: 'logits', 'features')" in line and "--output-key" in line
    assert tree(copy) == before


def test_onnx_without_its_package_names_the_install(runs, tmp_path):
    """A Python where `import onnx` fails, as where the extra is not installed: exit 2 before anything."""
    before = tree(runs["mlp"])
    code = ("import sys\nsys.modules['onnx'] = None\nfrom torchx.cli import tool_main\n"
            f"sys.exit(tool_main(['export', {str(runs['mlp'])!r}, '--format', 'onnx']))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == ("python -m torchx: error: --format onnx needs the onnx package, which is not "
                                  "installed: pip install -e '.[onnx]' (onnx, onnxruntime, onnxscript)")
    assert tree(runs["mlp"]) == before


def test_a_file_that_drifts_beyond_tolerance_is_not_kept(runs, tmp_path, capsys, monkeypatch):
    """The check is real: with a tolerance below the onnxruntime difference measured, the file is dropped,
    exit 1, and the run directory is as it was."""
    needs("onnx")
    from torchx.tools import export as E

    monkeypatch.setitem(E.TOLERANCE, "onnx", 0.0)
    before = tree(runs["resnet"])
    capsys.readouterr()
    code = run_tool(["export", str(runs["resnet"]), "--format", "onnx"])
    err = capsys.readouterr().err
    assert code == 1 and "it was not kept" in err and "(tolerance 0)" in err
    assert tree(runs["resnet"]) == before
