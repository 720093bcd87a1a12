"""Models by name from torchvision and timm (torchx.models.zoo), through the real entry points.

Weights are loaded for real from caches this test fills (TORCH_HOME and a Hugging Face cache in
tmp_path); a download attempt goes to a local port where nothing listens, so the offline paths fail
at once whether or not this machine has network. timm's parts skip where timm is not installed;
timm's absence itself is shown by hiding it (None in sys.modules makes `import timm` fail).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import torchx.models as models
from helpers import ROOT, run_train, run_train_pl, write_config
from torchx import cli
from torchx.models import zoo
from torchx.models.resnet import resnet18 as torchx_resnet18

PROG = "train_pl.py"


def config(model_spec: dict) -> dict:
    """Synthetic 3x32x32 images, one epoch of two batches of 8."""
    return {
        "data_module": {"name": "synthetic", "args": {"n_train": 24, "n_test": 8, "shape": [3, 32, 32],
                                                      "batch_size": 8, "val_split": 0.34}},
        "train_wrapper": {"name": "base", "args": {
            "model_spec": model_spec,
            "loss_spec": {"name": "ce"},
            "optim_spec": {"name": "SGD", "args": {"lr": 0.01}},
        }},
        "trainer_params": {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "limit_test_batches": 1,
                           "enable_progress_bar": False, "enable_model_summary": False},
        "checkpoint": {"monitor": "val/acc", "mode": "max"},
        "seed": 3,
    }


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path as the working directory, an empty TORCH_HOME in it, and no network for downloads."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("TORCHX_DEBUG", "PL_GLOBAL_SEED"):
        monkeypatch.delenv(var, raising=False)
    offline(monkeypatch)
    return tmp_path


def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every download goes through a proxy that refuses at once (urllib, httpx and zoo's probe honour it)."""
    with socket.socket() as s:  # a free port: nobody listens there once it is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{port}")
    for var in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def no_timm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError


def state_equal(model: torch.nn.Module, saved: dict[str, torch.Tensor], skip: str = "\0") -> bool:
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(skip)}
    return bool(own) and all(torch.equal(v, saved[k]) for k, v in own.items())


# ---------------------------------------------------------------- training through the entry points


def test_torchvision_model_trains_with_train_pl(workdir):
    path = write_config(workdir / "tv.yaml", config({"name": "mobilenet_v3_small", "args": {"num_classes": 10}}))
    assert run_train_pl(["--config", str(path), "--save-dir", "save"]) == 0
    assert (workdir / "save" / "tv" / "results.json").is_file()
    saved = yaml.safe_load((workdir / "save" / "tv" / "config.yaml").read_text())
    assert saved["train_wrapper"]["args"]["model_spec"]["name"] == "mobilenet_v3_small"
    assert not (workdir / "torch").exists()  # weights: null reads and writes no cache


def test_timm_model_trains_with_train(workdir):
    pytest.importorskip("timm")
    path = write_config(workdir / "tm.yaml", config({"name": "timm:test_resnet", "args": {"num_classes": 10}}))
    assert run_train(["--config", str(path), "--save-dir", "save"]) == 0
    assert (workdir / "save" / "tm" / "results.json").is_file()


# ---------------------------------------------------------------- which zoo a name comes from


def test_registered_names_shadow_the_zoos():
    assert models.registry.get("resnet18") is torchx_resnet18
    ours = models.make({"name": "resnet18"})
    assert ours.conv1.kernel_size == (3, 3) and ours.conv1.in_channels == 1  # torchx's small-input stem
    theirs = models.make({"name": "torchvision:resnet18", "args": {"num_classes": 7}})
    assert theirs.conv1.kernel_size == (7, 7) and theirs.conv1.in_channels == 3 and theirs.fc.out_features == 7
    # the zoos stay out of the registry's own names: listing and every-model tests walk only those
    assert "resnet50" not in models.registry.keys() and "resnet50" in models.registry


def test_torchvision_comes_before_timm_and_timm_prefix_picks_it():
    pytest.importorskip("timm")
    assert type(models.make({"name": "resnet50"})).__module__.startswith("torchvision.")
    assert type(models.make({"name": "timm:resnet18"})).__module__ == "timm.models.resnet"
    assert type(models.make({"name": "convnext_atto"})).__module__ == "timm.models.convnext"  # timm only


def test_zoos_are_imported_only_when_a_zoo_name_is_looked_up():
    code = ("import sys, torchx, torchx.models as m\n"
            "assert 'torchvision' not in sys.modules and 'timm' not in sys.modules\n"
            "m.make({'name': 'mlp', 'args': {'in_dim': 4, 'hidden': [], 'out_dim': 2}})\n"
            "assert 'torchvision' not in sys.modules and 'timm' not in sys.modules\n"
            "m.registry.get('squeezenet1_1')\n"
            "assert 'torchvision' in sys.modules and 'timm' not in sys.modules  # found before timm is needed\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------- weights from the local caches


def test_torchvision_weights_load_from_the_torch_hub_cache(workdir):
    import torchvision.models as tvm

    url = tvm.ResNet18_Weights.IMAGENET1K_V1.url
    file = workdir / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    assert zoo.torch_hub_file(url) == file  # where torch hub looks, under TORCH_HOME
    file.parent.mkdir(parents=True)
    torch.manual_seed(11)
    saved = tvm.resnet18().state_dict()
    torch.save(saved, file)
    for weights in ("IMAGENET1K_V1", "DEFAULT", "ResNet18_Weights.IMAGENET1K_V1"):
        model = models.make({"name": "torchvision:resnet18", "args": {"weights": weights}})
        assert state_equal(model, saved), weights
    assert not state_equal(models.make({"name": "torchvision:resnet18"}), saved)  # weights: null is random


def test_timm_pretrained_loads_from_the_hugging_face_cache(workdir):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    repo = timm.models.get_pretrained_cfg("test_resnet").hf_hub_id
    commit = "0" * 40
    cache = workdir / "hf"
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    torch.manual_seed(5)
    saved = timm.create_model("test_resnet").state_dict()
    save_file(saved, folder / "snapshots" / commit / "model.safetensors")
    args = {"pretrained": True, "cache_dir": str(cache)}
    assert state_equal(models.make({"name": "timm:test_resnet", "args": args}), saved)
    # another number of classes: timm keeps the features and gives the head a fresh start
    tuned = models.make({"name": "timm:test_resnet", "args": {**args, "num_classes": 3}})
    assert state_equal(tuned, saved, skip="fc.") and tuned.fc.out_features == 3


# ---------------------------------------------------------------- bad input: exit 2, one message, nothing created


@dataclass
class Case:
    """A bad model_spec for train_pl.py (a real run, not --dry-run); `expect`: phrases of the message
    ({tmp}: the working directory); `timm`: needs timm (True), or runs with timm hidden (False)."""

    id: str
    spec: dict
    expect: list[str]
    timm: bool | None = None
    args: list[str] = field(default_factory=list)


TIMM_PIP = "pip install 'timm==1.0.31'"
RESNET18_FILE = "{tmp}/torch/hub/checkpoints/resnet18-f37072fd.pth"
CASES = [
    Case("unknown-name", {"name": "resnt50"}, ["unknown model 'resnt50'", "did you mean 'resnet50'"]),
    Case("unknown-name-without-timm", {"name": "resnt50"},
         ["unknown model 'resnt50'", "did you mean 'resnet50'", "timm is not installed", TIMM_PIP,
          "pip install -e '.[timm]'"], timm=False),
    Case("unknown-torchvision-name", {"name": "torchvision:resnt18"}, ["did you mean 'torchvision:resnet18'"]),
    Case("unknown-timm-name", {"name": "timm:resnt18"}, ["did you mean 'timm:resnet18'"], timm=True),
    Case("timm-prefix-without-timm", {"name": "timm:resnet18"},
         ["model 'timm:resnet18' needs timm, which is not installed", TIMM_PIP], timm=False),
    Case("not-a-classifier", {"name": "fasterrcnn_resnet50_fpn"},
         ["fasterrcnn_resnet50_fpn is a detection model", "only classification models"]),
    Case("bad-weights-name", {"name": "resnet50", "args": {"weights": "IMAGENET1K_V9"}},
         ["unknown weights 'IMAGENET1K_V9'", "valid: IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT (= IMAGENET1K_V2)"]),
    Case("weights-of-another-model", {"name": "resnet50", "args": {"weights": "ResNet18_Weights.IMAGENET1K_V1"}},
         ["weights 'ResNet18_Weights.IMAGENET1K_V1' are not resnet50's", "valid: IMAGENET1K_V1"]),
    Case("weights-not-a-string", {"name": "resnet50", "args": {"weights": True}},
         ["argument 'weights': expected str or null, got True"]),
    Case("torchvision-pretrained", {"name": "mobilenet_v3_small", "args": {"pretrained": True}},
         ["'pretrained' is replaced by 'weights'", "weights: DEFAULT"]),
    Case("registered-name-has-no-weights", {"name": "resnet18", "args": {"weights": "DEFAULT", "num_classes": 10}},
         ["unknown argument 'weights'"]),  # torchx's own resnet18 has no weights
    Case("weights-and-num-classes", {"name": "torchvision:resnet18", "args": {"weights": "DEFAULT", "num_classes": 10}},
         ["weights IMAGENET1K_V1 score 1000 classes, so num_classes must be 1000 or left out, got 10"]),
    Case("weights-not-cached-offline", {"name": "torchvision:resnet18", "args": {"weights": "IMAGENET1K_V1"}},
         [f"the weights file was expected at {RESNET18_FILE}",
          "could not be downloaded from https://download.pytorch.org/models/resnet18-f37072fd.pth"]),
    Case("bad-argument", {"name": "mobilenet_v3_small", "args": {"num_class": 10}},
         ["model 'mobilenet_v3_small' (torchvision.models.mobilenet_v3_small) got an unknown argument "
          "'num_class' (did you mean 'num_classes'?)", "accepted: weights, progress,"]),
    Case("bad-argument-value", {"name": "mobilenet_v3_small", "args": {"dropout": 2.0}},
         ["model 'mobilenet_v3_small' (torchvision.models.mobilenet_v3_small) argument 'dropout' = 2.0:"]),
    Case("bad-timm-argument", {"name": "timm:test_resnet", "args": {"num_clases": 10}},
         ["model 'timm:test_resnet' (timm.create_model('test_resnet')) got an unknown argument 'num_clases'",
          "did you mean 'num_classes'"], timm=True),
    Case("timm-weights-argument", {"name": "timm:test_resnet", "args": {"weights": "DEFAULT"}},
         ["takes pretrained: true"], timm=True),
    Case("timm-bad-tag", {"name": "resnet18.a9_in1k"},
         ["timm has no weights tagged 'a9_in1k' for resnet18", "a1_in1k"], timm=True),
    Case("timm-no-pretrained-weights", {"name": "timm:coatnet_0_224", "args": {"pretrained": True}},
         ["timm has no pretrained weights for coatnet_0_224"], timm=True),
    Case("timm-pretrained-not-cached-offline",
         {"name": "timm:test_resnet", "args": {"pretrained": True, "cache_dir": "{tmp}/hf"}},
         ["pretrained weights timm/test_resnet.r160_in1k", "are not in the Hugging Face cache {tmp}/hf",
          "cannot be downloaded from"], timm=True),
]


def _fill(value: Any, tmp: Path) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, tmp) for k, v in value.items()}
    return value.replace("{tmp}", str(tmp)) if isinstance(value, str) else value


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_model_spec(case: Case, workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    if case.timm:
        pytest.importorskip("timm")
    elif case.timm is False:
        no_timm(monkeypatch)
    write_config(workdir / "cfg.yaml", config(_fill(case.spec, workdir)))
    before = files_under(workdir)
    capsys.readouterr()
    try:
        code = cli.main(["--config", "cfg.yaml", "--save-dir", "save", *case.args], PROG, "torchx.fit")
    except Exception:  # what a real process would print
        traceback.print_exc()
        code = 1
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith(f"{PROG}: error:")]
    assert len(errors) == 1, err
    for phrase in case.expect:
        assert _fill(phrase, workdir) in errors[0], f"{_fill(phrase, workdir)!r} not in:\n{err}"
    assert not (workdir / "save").exists()
    assert files_under(workdir) == before  # nor anything else: no checkpoints folder left in TORCH_HOME


# ---------------------------------------------------------------- python -m torchx list


def test_list_models_summarises_the_zoos(capsys):
    import torchvision.models as tvm

    assert cli.tool_main(["list", "models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    registered = models.registry.keys()
    assert lines[0] == "models:" and len(lines) == 1 + len(registered) + 4  # a summary, not thousands of names
    assert [line.split()[0] for line in lines[1:1 + len(registered)]] == registered
    head, mine, tv, tm = lines[-4:]
    assert "where a model name is looked up, in order" in head
    assert mine.split()[:2] == ["registered", str(len(registered))]
    assert tv.split()[:2] == ["torchvision", str(len(tvm.list_models(module=tvm)))] and "resnet50" in tv
    timm = zoo.timm_module()
    if timm is None:
        assert tm.split()[:3] == ["timm", "not", "installed:"] and TIMM_PIP in tm
    else:
        assert tm.split()[:2] == ["timm", str(len(timm.list_models()))] and "timm:NAME" in tm


def test_list_models_without_timm_names_the_pip_command(monkeypatch, capsys):
    no_timm(monkeypatch)
    assert cli.tool_main(["list", "models"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.split()[:3] == ["timm", "not", "installed:"] and TIMM_PIP in last and "'.[timm]'" in last


def test_list_all_kinds_summarises_the_zoos_once(capsys):
    assert cli.tool_main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.count("where a model name is looked up") == 1 and "\n  resnet50 " not in out
