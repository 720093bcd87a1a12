"""Every command README.md (and docs/) shows, and every command a message suggests, runs as written.

The commands are read from the files themselves: indented and fenced code lines, and inline
`python ...` code. Each must be in COMMANDS below, which says how it is run: as written, in a
fresh folder holding the project's entry points, with only overrides that make it tiny (few
batches) appended; after the commands it depends on; or not at all, with the reason. A command
added to the README without an entry here fails `test_every_readme_command_is_in_the_table`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from helpers import ROOT, SHARED_MNIST

README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]  # the README and the reference it links
LEAD = ("python ", "srun ", "torchrun ", "tensorboard ", "pip ", "bash ", "TORCHX_DEBUG=1 python ", "mlflow ", "wandb ",
        "comet ")
ENTRY_POINTS = ("torchx", "train_pl.py", "train.py", "configs", "examples")


def readme_commands(text: str) -> list[str]:
    """Commands in code: indented (4 spaces) or fenced lines, and inline `...` spans."""
    found: list[str] = []
    fenced = False
    pending = ""
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        code = line[4:] if line.startswith("    ") and not fenced else line if fenced else None
        if code is None:
            continue
        code = pending + code.strip()
        pending = ""
        if code.endswith("\\"):
            pending = code[:-1].strip() + " "
            continue
        if code.startswith(LEAD):
            found.append(" ".join(without_comment(code).split()))
    for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", text):
        span = " ".join(span.split())
        if span.startswith(LEAD):
            found.append(span)
    return list(dict.fromkeys(found))


def without_comment(code: str) -> str:
    return re.sub(r"\s+#.*$", "", code).strip()


TINY = ["trainer_params.limit_train_batches=2", "trainer_params.limit_val_batches=2",
        "trainer_params.limit_test_batches=2", "trainer_params.enable_progress_bar=false"]
TINY_EPOCHS = ["trainer_params.max_epochs=2"]


@dataclass
class Case:
    """How one README command is checked."""

    skip: str = ""  # why it is not run
    tail: list[str] = field(default_factory=lambda: TINY + TINY_EPOCHS)  # appended overrides
    after: list[str] = field(default_factory=list)  # commands run first, in the same folder
    replace: dict[str, str] = field(default_factory=dict)  # placeholder -> value ({ckpt} is found)
    code: int = 0
    says: str = ""  # what stdout + stderr must hold


DIGITS = "python train_pl.py --config configs/digits.yaml"
SWEEP = "python train_pl.py --config configs/mnist-sweep.yaml --jobs 2"
SWEPT = f"{SWEEP} trainer_params.log_every_n_steps=1"  # so that train/loss_step is logged in 2 batches
NO_TAIL: list[str] = []
SEARCH = "python train_pl.py --config configs/mnist-search.yaml --jobs 2 data_module.args.root_dir=PATH/TO/mnist"
SEARCH_TAIL = TINY + ["trainer_params.max_epochs=2", "search.n_trials=2"]
SEARCHED = f"{SEARCH.replace('PATH/TO/mnist', 'load/mnist')} search.n_trials=2"
needs_mnist = "needs the MNIST files"
TRACKED = "python train_pl.py --config configs/digits.yaml +loggers='[{name: mlflow}]'"
TRACKED_SESSION = ("python train_pl.py --config configs/digits.yaml --name digits-lr +loggers='[{name: mlflow}]' "
                   "train_wrapper.args.optim_spec.args.lr_='[0.001,0.003]' --jobs 2")
no_mlflow = "" if importlib.util.find_spec("mlflow") else "needs the mlflow extra (pip install -e '.[mlflow]')"

COMMANDS: dict[str, Case] = {
    "pip install -r requirements.txt": Case(skip="installs packages (what .ci/run does)"),
    "python -m pytest": Case(skip="runs this suite"),
    "pip install -e .": Case(skip="installs torchx into the environment"),
    "pip install -e '.[timm]'": Case(skip="installs torchx and timm (.ci/run installs timm's pin)"),
    "python bench/data.py --only cifar --quick": Case(skip="a benchmark (a minute)"),
    'python -m pytest -m "not slow"': Case(skip="runs this suite"),
    DIGITS: Case(),
    "python train_pl.py --config configs/mnist.yaml --gpu 1,2 --name test":
        Case(skip="needs CUDA devices 1 and 2") if torch.cuda.device_count() >= 3 else
        Case(code=2, says="CUDA", tail=NO_TAIL),
    "python train_pl.py --config configs/mnist-cnn.yaml": Case(),
    "python train_pl.py --config configs/mnist-cnn.yaml data_module.args.download=true": Case(),
    "python -m torchx plot save/a save/b --metrics val/acc,val/loss -o curves.png":
        Case(tail=NO_TAIL, after=[f"{DIGITS} --name a", f"{DIGITS} --name b"], says="curves.png"),
    "python train_pl.py --config FILE [--name NAME] [--gpu IDS] [--resume [CKPT]]": Case(skip="synopsis"),
    "python train.py (the same arguments)": Case(skip="synopsis"),
    "python train.py ...": Case(skip="synopsis"),
    "python train.py --config ... [--gpu 0]": Case(skip="synopsis"),
    "python -m torchx list [KIND] [--config FILE]": Case(skip="synopsis; `list` is run below"),
    "python -m torchx config FILE [KEY=VALUE ...]": Case(skip="synopsis; `config` is run below"),
    "python -m torchx plot RUN [RUN ...] [--metrics a,b] [-o out.png]": Case(skip="synopsis"),
    "python -m torchx plot": Case(skip="names the tool in prose"),
    "python -m torchx list models": Case(tail=NO_TAIL, says="mlp"),
    "python train_pl.py --config configs/digits-custom.yaml --dry-run": Case(tail=NO_TAIL, says="conv_digits"),
    "python train_pl.py --config configs/mnist-gan.yaml": Case(),
    "python train_pl.py --name test --resume":
        Case(tail=NO_TAIL, after=[f"{DIGITS} --name test"]),
    "python train_pl.py --name test --resume trainer_params.max_epochs=20":
        Case(tail=TINY, after=[f"{DIGITS} --name test"]),
    "python train_pl.py --config c.yaml --name new --resume save/old/ckpt/epoch=3-step=400.ckpt":
        Case(after=["cp configs/digits.yaml c.yaml", f"{DIGITS} --name old"],
             replace={"save/old/ckpt/epoch=3-step=400.ckpt": "{ckpt}"}),
    "python train_pl.py --config configs/digits.yaml +trainer_params.devices=2 +trainer_params.strategy=ddp":
        Case(),
    "python train_pl.py --config configs/mnist-sweep.yaml --dry-run": Case(tail=NO_TAIL, says="batch_size=32"),
    SWEEP: Case(),
    "python train_pl.py --name mnist-sweep --resume": Case(tail=NO_TAIL, after=[SWEPT]),
    "python -m torchx plot save/mnist-sweep -o curves.png": Case(tail=NO_TAIL, after=[SWEPT]),
    "python train_pl.py --config configs/mnist-sweep.yaml --jobs 2 data_module.args.root_dir=PATH/TO/mnist":
        Case(replace={"PATH/TO/mnist": "load/mnist"}, tail=TINY + ["trainer_params.max_epochs=1"]),
    "python -m torchx plot save/mnist-sweep --metrics train/loss_step,val/loss,val/acc -o docs/mnist-sweep.png":
        Case(tail=NO_TAIL, after=[SWEPT], says="docs/mnist-sweep.png"),
    "python train_pl.py --name mnist-sweep --resume --dry-run": Case(tail=NO_TAIL, after=[SWEPT], says="done"),
    "srun python train_pl.py --config configs/mnist-cnn.yaml --name $NAME --gpu 0,1 $RESUME":
        Case(skip="a SLURM job step on two GPUs"),
    "srun python train_pl.py --config configs/mnist-sweep.yaml --name mnist-sweep --gpu 0 "
    "--only $SLURM_ARRAY_TASK_ID --resume": Case(skip="a SLURM array task on a GPU"),
    "tensorboard --logdir save": Case(skip="starts a web server"),
    "python bench/accuracy.py": Case(skip="a benchmark (minutes of real MNIST training)"),
    "python bench/chaos.py": Case(skip="a benchmark (20 killed runs)"),
    "python bench/all.py": Case(skip="every benchmark (16 minutes)"),
    "python bench/accuracy.py --loop both": Case(skip="a benchmark"),
    "python bench/chaos.py [--loop train.py]": Case(skip="a benchmark"),
    "python bench/overhead.py --model tiny_cnn": Case(skip="a benchmark (3 minutes)"),
    "python bench/startup.py --quick": Case(skip="a benchmark (a minute)"),
    "python -m torchx test save/digits": Case(tail=NO_TAIL, after=[DIGITS], says="results.json"),
    "python -m torchx validate save/digits --ckpt last": Case(tail=NO_TAIL, after=[DIGITS], says="val/acc"),
    "python -m torchx test save/digits data_module.args.eval_batch_size=10":
        Case(tail=NO_TAIL, after=[DIGITS], says="override: data_module.args.eval_batch_size"),
    "python -m torchx predict save/digits --input split:test": Case(tail=NO_TAIL, after=[DIGITS], says="accuracy"),
    "python -m torchx export save/digits --format onnx":
        Case(tail=NO_TAIL, after=[DIGITS], says="max abs difference vs eager"),
    "python -m torchx rerun save/digits": Case(tail=NO_TAIL, after=[DIGITS], says="identical"),
    "torchrun --nnodes 2 --nproc-per-node 2 --node-rank 0 --master-addr 127.0.0.1 --master-port 29500 train_pl.py "
    "--config configs/digits.yaml --name two trainer_params.num_nodes=2 trainer_params.devices=2 "
    "trainer_params.strategy=ddp": Case(skip="node 0 of two: tests/test_scale_out.py starts both nodes"),
    "torchrun --nnodes 2 --nproc-per-node 2 --node-rank 1 --master-addr 127.0.0.1 --master-port 29500 train_pl.py "
    "--config configs/digits.yaml --name two trainer_params.num_nodes=2 trainer_params.devices=2 "
    "trainer_params.strategy=ddp": Case(skip="node 1 of two: tests/test_scale_out.py starts both nodes"),
    "srun python train_pl.py --config configs/digits.yaml --name two --gpu 0,1 trainer_params.num_nodes=2 $RESUME":
        Case(skip="a SLURM job step on two GPU nodes; tests/test_scale_out.py starts its tasks as srun does"),
    "python -m torchx test save/two": Case(skip="needs a run trained on several nodes (tests/test_scale_out.py)"),
    "python bench/gpu.py": Case(skip="a benchmark for a GPU (tests/test_gpu_path.py runs its CPU path)"),
    "pip install -e '.[onnx]'": Case(skip="installs torchx and the onnx extra (.ci/run installs its pins)"),
    "python train_pl.py --config configs/mnist-search.yaml --dry-run":
        Case(tail=NO_TAIL, says="first trials drawn"),
    SEARCH: Case(replace={"PATH/TO/mnist": "load/mnist"}, tail=SEARCH_TAIL),
    "python -m torchx plot save/mnist-search -o docs/mnist-search.png":
        Case(tail=NO_TAIL, after=[SEARCHED], says="docs/mnist-search.png"),
    "python train_pl.py --config save/mnist-search/best.yaml --name mnist-best":
        Case(tail=TINY + ["trainer_params.max_epochs=1"], after=[SEARCHED]),
    "python train_pl.py --config configs/mnist-cv.yaml --jobs 2 data_module.args.root_dir=PATH/TO/mnist":
        Case(replace={"PATH/TO/mnist": "load/mnist"}, tail=TINY + ["trainer_params.max_epochs=1"]),
    "python train_pl.py --config configs/digits.yaml 'train_wrapper.args.optim_spec.args.lr~={loguniform: "
    "[1.e-4, 1.e-1]}' +search.n_trials=2": Case(),
    "pip install -e '.[search]'": Case(skip="installs torchx and the search extra (.ci/run installs its pins)"),
    "python bench/search.py": Case(skip="a benchmark (32 trials on MNIST, about 15 minutes)"),
    "pip install -e '.[mlflow]'": Case(skip="installs torchx and MLflow (.ci/run installs the tracking pins)"),
    TRACKED: Case(skip=no_mlflow, says="final:"),
    TRACKED_SESSION: Case(skip=no_mlflow, tail=TINY + ["trainer_params.max_epochs=1"], says="2 done"),
    "mlflow ui --backend-store-uri sqlite:///save/mlflow.db": Case(skip="starts a web server (the test of a real "
                                                                      "`mlflow server` is in test_tracking.py)"),
    "wandb sync save/wandb/offline-run-20261206_102341-1a2b3c4d5e6f7a8b":
        Case(skip="uploads to W&B's servers (needs an account and the network)"),
    "comet upload save/comet/0123456789abcdef0123456789abcdef-AbCdEf.zip":
        Case(skip="uploads to Comet's servers (needs an account and the network)"),
    "python bench/tracking.py": Case(skip="a benchmark (minutes)"),
    "python bench/tracking.py --rounds 7": Case(skip="a benchmark (minutes)"),
    "TORCHX_DEBUG=1 python train_pl.py ...":
        Case(tail=NO_TAIL, replace={"...": "--config missing.yaml"}, code=1, says="Traceback"),
}


def test_every_readme_command_is_in_the_table():
    shown = [c for doc in DOCS for c in readme_commands(doc.read_text())]
    assert len(shown) > 20, shown
    unknown = [c for c in shown if c not in COMMANDS]
    assert not unknown, f"README commands with no entry in COMMANDS: {unknown}"
    stale = [c for c in COMMANDS if c not in shown]
    assert not stale, f"COMMANDS entries the README no longer shows: {stale}"


def test_the_extractor_finds_each_kind_of_command():
    text = ("Run\n\n    python a.py --x 1   # a comment\n\n```bash\nsrun python b.py \\\n   --y 2\n```\n"
            "and `python c.py\n--z 3` inline, not `pip` or ``python d.py``.\n")
    assert readme_commands(text) == ["python a.py --x 1", "srun python b.py --y 2", "python c.py --z 3"]


def workdir(tmp: Path) -> Path:
    """A fresh folder holding what a clone holds: the entry points, configs and the MNIST files."""
    for name in ENTRY_POINTS:
        (tmp / name).symlink_to(ROOT / name)
    (tmp / "docs").mkdir()
    if (SHARED_MNIST / "train-images-idx3-ubyte.gz").is_file():
        (tmp / "load").mkdir()
        (tmp / "load" / "mnist").symlink_to(SHARED_MNIST)
    return tmp


ENTRIES = {"train_pl.py": ("train_pl.py", "torchx.fit"), "train.py": ("train.py", "torchx.loop")}


def in_process(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """What `python train_pl.py ...`, `python train.py ...` or `python -m torchx ...` does, run in
    this process (the entry points only call these functions): seconds of imports saved a command."""
    from torchx.cli import main, tool_main

    out, err = io.StringIO(), io.StringIO()
    here, env = os.getcwd(), dict(os.environ)
    os.chdir(cwd)
    os.environ["TORCHX_PROGRESS_EVERY"] = "5"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if argv[1] == "-m":
                code = tool_main(argv[3:])
            else:
                code = main(argv[2:], *ENTRIES[argv[1]])
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(env)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def shell(command: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a command line in `cwd`: in this process where that is the same, else as a process
    (DDP, which starts its own processes from the command line, and environment variables)."""
    argv = shlex.split(command)
    if argv[0] == "python" and (argv[1] in ENTRIES or argv[1:3] == ["-m", "torchx"]) and \
            "+trainer_params.strategy=ddp" not in argv:
        return in_process(argv, cwd)
    env = {**os.environ, "PYTHONPATH": str(cwd), "TORCHX_PROGRESS_EVERY": "5"}
    env.pop("TORCHX_DEBUG", None)
    while argv and re.fullmatch(r"[A-Z_]+=.*", argv[0]):
        key, value = argv.pop(0).split("=", 1)
        env[key] = value
    if argv[0] == "cp":
        shutil.copy(cwd / argv[1], cwd / argv[2])
        return subprocess.CompletedProcess(argv, 0, "", "")
    if argv[0] == "python":
        argv[0] = sys.executable
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def uses_mnist(command: str, case: Case) -> bool:
    return "mnist" in command or any("mnist" in c for c in case.after)


RUN = {c: case for c, case in COMMANDS.items() if not case.skip}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A folder per list of commands to run first, made once: the commands that need the same
    runs (a session, a run named test) share it, and none of them changes what another reads."""
    folders: dict[tuple[str, ...], Path] = {}

    def get(after: list[str]) -> Path:
        if tuple(after) not in folders:
            cwd = workdir(tmp_path_factory.mktemp("readme"))
            for before in after:
                tail = [] if before.startswith("cp ") or "plot" in before else TINY + TINY_EPOCHS
                done = shell(" ".join([before, *tail]), cwd)
                assert done.returncode == 0, f"{before}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
            folders[tuple(after)] = cwd
        return folders[tuple(after)]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("command", RUN, ids=list(RUN))
def test_readme_command_runs_as_written(command, tmp_path, prepared):
    case = COMMANDS[command]
    if uses_mnist(command, case) and not (SHARED_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(needs_mnist)
    cwd = prepared(case.after) if case.after else workdir(tmp_path)
    written = command
    for old, new in case.replace.items():
        if new == "{ckpt}":
            new = str(next(p for p in sorted((cwd / "save" / "old" / "ckpt").glob("*.ckpt"))
                           if p.name != "last.ckpt").relative_to(cwd))
        written = written.replace(old, new)
    res = shell(" ".join([written, *case.tail]), cwd)
    out = res.stdout + res.stderr
    assert res.returncode == case.code, f"{written}:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    assert case.says in out, out[-3000:]
    if case.code:
        assert not (cwd / "save").exists()
    if "Traceback" not in case.says:
        assert "Traceback" not in out, out[-3000:]


@pytest.mark.slow
def test_the_readmes_load_run_example_runs(prepared):
    """The notebook-style block of "After training", as written, after the quick start's run."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(b for b in blocks if "torchx.load_run(" in b)
    cwd = prepared([DIGITS])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert re.fullmatch(r"tensor\(0\.\d+\)\n", res.stdout), res.stdout


# ---------------------------------------------------------------- commands that messages suggest


def suggestion(err: str, pattern: str) -> str:
    found = re.search(pattern, err)
    assert found, f"{pattern!r} not in {err!r}"
    return found.group(1)


def without(argv: list[str], *drop: str) -> list[str]:
    return [a for a in argv if a not in drop]


def with_args(argv: list[str], words: str, replace: dict[str, str] | None = None) -> list[str]:
    words = " ".join((replace or {}).get(w, w) for w in words.split())
    return [*argv, *shlex.split(words)]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A user's folder: a tiny digits config (c.yaml), run in this process."""
    from helpers import tiny_config, write_config

    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "c.yaml", tiny_config(max_epochs=1))
    return tmp_path


def run_pl(argv: list[str], capsys) -> tuple[int, str]:
    """Exit status and what it printed (stderr, then stdout)."""
    from helpers import run_train_pl

    code = run_train_pl(argv)
    out = capsys.readouterr()
    return code, out.err + out.out


BASE_ARGV = ["--config", "c.yaml", "--name", "r"]


def test_an_existing_run_message_offers_resume_and_a_new_name(project, capsys):
    assert run_pl(BASE_ARGV, capsys)[0] == 0
    code, err = run_pl(BASE_ARGV, capsys)
    assert code == 2
    resume = suggestion(err, r"Continue it with (--resume)")
    other = suggestion(err, r"start a new one with (--name <other name>)")
    assert run_pl(with_args(BASE_ARGV, resume, {}) + ["trainer_params.max_epochs=2"], capsys)[0] == 0
    assert run_pl(with_args(without(BASE_ARGV, "--name", "r"), other, {"<other": "other", "name>": ""}),
                  capsys)[0] == 0
    assert (project / "save" / "other" / "results.json").is_file()


def test_a_run_without_checkpoint_message_restarts_it_in_place(project, capsys):
    run_dir = project / "save" / "r"
    (run_dir / "ckpt").mkdir(parents=True)
    shutil.copy(project / "c.yaml", run_dir / "config.yaml")  # as a crash before the first checkpoint leaves it
    code, err = run_pl(BASE_ARGV, capsys)
    assert code == 2
    assert run_pl(with_args(BASE_ARGV, suggestion(err, r"Restart it in place with (--resume)")), capsys)[0] == 0
    assert (run_dir / "attempts" / "1" / "config.yaml").is_file() and (run_dir / "results.json").is_file()


def test_a_resume_of_no_run_message_says_drop_resume(project, capsys):
    code, err = run_pl([*BASE_ARGV, "--resume"], capsys)
    assert code == 2 and "drop --resume to start it" in err
    assert run_pl(BASE_ARGV, capsys)[0] == 0


def test_a_resume_of_a_folder_message_names_the_command(project, capsys):
    assert run_pl(BASE_ARGV, capsys)[0] == 0
    code, err = run_pl(["--name", "again", "--resume", "save/r"], capsys)
    assert code == 2
    fix = suggestion(err, r"continue that run with (--name \S+ --resume)")
    assert fix == "--name r --resume"
    ckpt = suggestion(err, r"a checkpoint file such as (\S+),")
    assert Path(ckpt) == Path("save/r/ckpt/last.ckpt") and (project / ckpt).is_file()
    assert run_pl(with_args([], fix) + ["trainer_params.max_epochs=2"], capsys)[0] == 0


def test_a_finished_run_message_names_the_override_that_trains_longer(project, capsys):
    assert run_pl(BASE_ARGV, capsys)[0] == 0
    code, err = run_pl(["--name", "r", "--resume"], capsys)
    assert code == 0 and "nothing left to do" in err
    fix = suggestion(err, r"raise the limit: (--resume trainer_params\.max_epochs=N)")
    assert run_pl(["--name", "r", *fix.replace("=N", "=3").split()], capsys)[0] == 0
    assert json.loads((project / "save" / "r" / "results.json").read_text())["epochs"] == 3


def test_an_unknown_key_message_gives_the_form_that_adds_it(project, capsys):
    code, err = run_pl([*BASE_ARGV, "newkey=1"], capsys)
    assert code == 2
    fix = suggestion(err, r"write '(\+newkey=VALUE)'")
    code, err = run_pl([*BASE_ARGV, fix.replace("VALUE", "1")], capsys)
    assert code == 2 and "unknown top-level key 'newkey'" in err  # added, then refused by the config check


def test_the_missing_mnist_message_override_runs_as_written(tmp_path, monkeypatch, capsys):
    from helpers import tiny_config, write_config, write_fake_mnist

    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(max_epochs=1)
    cfg["data_module"] = {"name": "mnist", "args": {"root_dir": "m", "batch_size": 16, "val_split": 32}}
    cfg["train_wrapper"]["args"]["model_spec"] = {"name": "tiny_cnn"}
    write_config(tmp_path / "c.yaml", cfg)
    code, err = run_pl(BASE_ARGV, capsys)
    assert code == 2 and not (tmp_path / "save").exists()
    fix = suggestion(err, r"or set (data_module\.args\.download=true)\n")
    write_fake_mnist(tmp_path / "m")  # what the download leaves; present files are not fetched again
    assert run_pl([*BASE_ARGV, fix], capsys)[0] == 0
