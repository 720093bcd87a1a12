"""Fault tolerance: atomic checkpoints under kill -9, and resumed runs that end bitwise where
an uninterrupted run ends."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
import uuid

import pytest
import torch

from helpers import ROOT, left_by_a_kill_after, run_train, run_train_pl, scalars, tiny_config, write_config

RUNNERS = {"train_pl": run_train_pl, "train": run_train}
SCRIPTS = {"train_pl": "train_pl.py", "train": "train.py"}


def dropout_config(**trainer_params) -> dict:
    cfg = tiny_config(**{"max_epochs": 4, **trainer_params})
    cfg["train_wrapper"]["args"]["model_spec"]["args"]["dropout"] = 0.3  # draws from the global RNG
    return cfg


def weights(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@pytest.mark.parametrize("loop", RUNNERS)
def test_resume_at_an_epoch_boundary_is_bitwise_exact(loop, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = RUNNERS[loop]
    path = write_config(tmp_path / "d.yaml", dropout_config())
    assert run(["--config", str(path), "--save-dir", "save", "--name", "full"]) == 0
    assert run(["--config", str(path), "--save-dir", "save", "--name", "cut", "trainer_params.max_epochs=1"]) == 0
    torch.manual_seed(12345)  # whatever the RNGs hold now, the checkpoint's states must win
    assert run(["--save-dir", "save", "--name", "cut", "--resume", "trainer_params.max_epochs=4"]) == 0
    assert_bitwise_equal(weights(tmp_path / "save" / "full"), weights(tmp_path / "save" / "cut"))


def chaos_config() -> dict:
    """Digits with a wide MLP: ~4M parameters, so a checkpoint (with Adam's state) is ~50 MB and
    writing it takes a large share of every epoch: kills often land mid-write."""
    cfg = dropout_config(max_epochs=8, limit_train_batches=6, limit_val_batches=1, limit_test_batches=1)
    args = cfg["train_wrapper"]["args"]
    args["model_spec"]["args"].update(hidden=[2048, 1024])
    args["optim_spec"] = {"name": "Adam", "args": {"lr": 1e-3}}
    cfg["checkpoint"] = {"save_top_k": -1}  # every epoch writes its own file and last.ckpt
    return cfg


def launch(script: str, argv: list[str], cwd) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "PL_GLOBAL_SEED")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen([sys.executable, str(ROOT / script), *argv], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(path, proc: subprocess.Popen, timeout: float = 120) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    raise TimeoutError(f"{path} did not appear")


@pytest.mark.parametrize("every", ["epoch", "step"])
@pytest.mark.parametrize("loop", SCRIPTS)
def test_kill_9_at_random_points_loses_nothing_and_resumes_bitwise(loop, every, tmp_path):
    cfg = chaos_config()
    if every == "step":  # checkpoints every 4 steps: most kills resume mid-epoch
        cfg["checkpoint"] = {"every_n_train_steps": 4}
    path = write_config(tmp_path / "chaos.yaml", cfg)
    script, rng = SCRIPTS[loop], random.Random(2026)
    full = launch(script, ["--config", str(path), "--save-dir", "save", "--name", "full"], tmp_path)
    assert full.wait(timeout=300) == 0, full.stderr.read()[-2000:]
    last = tmp_path / "save" / "cut" / "ckpt" / "last.ckpt"
    argv = ["--config", str(path), "--save-dir", "save", "--name", "cut"]
    kills, steps = 0, []
    while True:
        proc = launch(script, argv, tmp_path)
        if kills < 4 and wait_for(last, proc):
            time.sleep(rng.uniform(0.0, 1.5))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                ckpt = torch.load(last, weights_only=True)  # never torn: the old file or the new one
                # epoch-end (every 6 steps) or, with step checkpoints, every 4 steps
                assert ckpt["global_step"] % 6 == 0 or (every == "step" and ckpt["global_step"] % 4 == 0)
                steps.append(ckpt["global_step"])
                argv = ["--save-dir", "save", "--name", "cut", "--resume"]
                continue
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
        break
    assert kills >= 2, "the run finished before it could be killed twice; make it longer"
    assert steps == sorted(steps)
    assert_bitwise_equal(weights(tmp_path / "save" / "full"), weights(tmp_path / "save" / "cut"))
    assert not list((tmp_path / "save" / "cut" / "ckpt").glob(".*.tmp"))
    # the loggers went on: no step logged twice, nothing lost, the same values as the uninterrupted run
    for name in ("full", "cut"):
        with open(tmp_path / "save" / name / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        csv_steps = [int(r["step"]) for r in rows]
        assert csv_steps == sorted(set(csv_steps)), csv_steps
    # what was logged equals the uninterrupted run's values at the same steps (under Lightning a kill
    # between an epoch's checkpoint and its train-metric write can lose that one row)
    full_tb = dict(scalars(tmp_path / "save" / "full")["train/loss"])
    cut_tb = scalars(tmp_path / "save" / "cut")["train/loss"]
    assert [s for s, _ in cut_tb] == sorted({s for s, _ in cut_tb}) and len(cut_tb) >= 7
    assert all(abs(full_tb[s] - v) < 1e-6 for s, v in cut_tb)
    if loop == "train":  # the plain loop logs each epoch before checkpointing it: nothing is lost
        assert [s for s, _ in cut_tb] == [6 * e - 1 for e in range(1, 9)]


PAIRS = [("train_pl", "train_pl"), ("train", "train"), ("train", "train_pl"), ("train_pl", "train")]


@pytest.mark.parametrize("loop", RUNNERS)
def test_resume_chain_through_a_last_batch_checkpoint(loop, tmp_path, monkeypatch):
    """Step checkpoints land on an epoch's last batch (before validation) too; resuming from one,
    then from a mid-epoch checkpoint of that resumed run, must still serve every batch once."""
    monkeypatch.chdir(tmp_path)
    run = RUNNERS[loop]
    cfg = dropout_config(limit_train_batches=6)
    cfg["checkpoint"] = {"every_n_train_steps": 3, "save_top_k": -1}
    path = write_config(tmp_path / "m.yaml", cfg)
    assert run(["--config", str(path), "--save-dir", "save", "--name", "full"]) == 0
    assert run(["--config", str(path), "--save-dir", "save", "--name", "cut", "+trainer_params.max_steps=6"]) == 0
    for stop in (9, -1):  # from the last-batch checkpoint at step 6, then from step 9, mid-epoch
        assert run(["--save-dir", "save", "--name", "cut", "--resume", f"trainer_params.max_steps={stop}"]) == 0
    assert_bitwise_equal(weights(tmp_path / "save" / "full"), weights(tmp_path / "save" / "cut"))


@pytest.mark.parametrize("first, second", PAIRS, ids=[f"{a}-then-{b}" for a, b in PAIRS])
def test_resume_mid_epoch_serves_exactly_the_unseen_batches(first, second, tmp_path, monkeypatch):
    """A checkpoint every 3 steps; the first run stops at step 9, half-way through epoch 2; the
    resumed run (under either loop) must end bitwise where an uninterrupted run ends."""
    monkeypatch.chdir(tmp_path)
    cfg = dropout_config(limit_train_batches=6)
    cfg["checkpoint"] = {"every_n_train_steps": 3, "save_top_k": -1}
    path = write_config(tmp_path / "m.yaml", cfg)
    assert RUNNERS[first](["--config", str(path), "--save-dir", "save", "--name", "full"]) == 0
    assert RUNNERS[first](["--config", str(path), "--save-dir", "save", "--name", "cut",
                           "+trainer_params.max_steps=9"]) == 0
    ckpt = torch.load(tmp_path / "save" / "cut" / "ckpt" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 9 and ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == \
        [{"epoch": 1, "batches": 3}]
    assert RUNNERS[second](["--save-dir", "save", "--name", "cut", "--resume", "trainer_params.max_steps=-1"]) == 0
    assert_bitwise_equal(weights(tmp_path / "save" / "full"), weights(tmp_path / "save" / "cut"))
    log = (tmp_path / "save" / "cut" / "log.txt").read_text().splitlines()
    # epoch 2 twice: cut short at step 9, then completed by the resumed run
    assert [line.split(" | ")[:2] for line in log] == [["epoch 1/4", "step 6"], ["epoch 2/4", "step 9"],
                                                      ["epoch 2/4", "step 12"], ["epoch 3/4", "step 18"],
                                                      ["epoch 4/4", "step 24"]]


@pytest.mark.parametrize("loop, signame", [("train_pl", "SIGTERM"), ("train", "SIGUSR1")])
def test_preemption_signal_saves_at_a_step_and_exits_75(loop, signame, tmp_path):
    cfg = chaos_config()
    cfg["trainer_params"]["max_epochs"] = 5
    path = write_config(tmp_path / "pre.yaml", cfg)
    script = SCRIPTS[loop]
    full = launch(script, ["--config", str(path), "--save-dir", "save", "--name", "full"], tmp_path)
    assert full.wait(timeout=300) == 0, full.stderr.read()[-2000:]
    proc = launch(script, ["--config", str(path), "--save-dir", "save", "--name", "cut"], tmp_path)
    assert wait_for(tmp_path / "save" / "cut" / "ckpt" / "last.ckpt", proc)
    time.sleep(0.3)
    proc.send_signal(getattr(signal, signame))
    assert proc.wait(timeout=120) == 75
    err = proc.stderr.read()
    assert f"preempted: {signame} received" in err and "Traceback" not in err
    ckpt = torch.load(tmp_path / "save" / "cut" / "ckpt" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] < 30  # it stopped early, at a step boundary
    resumed = launch(script, ["--save-dir", "save", "--name", "cut", "--resume"], tmp_path)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-2000:]
    assert_bitwise_equal(weights(tmp_path / "save" / "full"), weights(tmp_path / "save" / "cut"))


# ---------------------------------------------------------------- bad or foreign checkpoints


def good_checkpoint(tmp_path) -> tuple[dict, object]:
    path = write_config(tmp_path / "g.yaml", tiny_config(max_epochs=1))
    assert run_train(["--config", str(path), "--save-dir", "made", "--name", "g"]) == 0
    ckpt_path = tmp_path / "made" / "g" / "ckpt" / "last.ckpt"
    return torch.load(ckpt_path, weights_only=True), ckpt_path


def corrupt(kind: str, tmp_path):
    ckpt, path = good_checkpoint(tmp_path)
    out = tmp_path / f"{kind}.ckpt"
    if kind == "truncated":
        out.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "garbage":
        out.write_bytes(bytes(range(256)) * 64)
    elif kind == "a-tensor":
        torch.save(torch.zeros(3), out)
    elif kind == "no-state-dict":
        torch.save({"epoch": 1, "global_step": 4}, out)
    elif kind == "other-torchx":
        ckpt["callbacks"]["torchx"]["version"] = "9.9.0"
        torch.save(ckpt, out)
    elif kind == "pickled-object":
        import argparse

        ckpt["hyper_parameters"]["args"] = argparse.Namespace(x=1)
        torch.save(ckpt, out)
    return out


CORRUPT = {
    "truncated": "is not a readable PyTorch checkpoint; it may be truncated",
    "garbage": "is not a readable PyTorch checkpoint",
    "a-tensor": "holds a Tensor, not a training checkpoint",
    "no-state-dict": "is not a training checkpoint (missing state_dict, optimizer_states)",
    "other-torchx": "was written by torchx 9.9.0",
    "pickled-object": "only full unpickling can load",
}


@pytest.mark.parametrize("loop", RUNNERS)
@pytest.mark.parametrize("kind", CORRUPT)
def test_bad_checkpoint_is_one_clear_message_and_exit_2(kind, loop, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    bad = corrupt(kind, tmp_path)
    path = write_config(tmp_path / "r.yaml", tiny_config())
    capsys.readouterr()
    assert RUNNERS[loop](["--config", str(path), "--save-dir", "save", "--resume", str(bad)]) == 2
    err = capsys.readouterr().err
    assert CORRUPT[kind] in err and "Traceback" not in err
    assert not (tmp_path / "save").exists()


@pytest.mark.parametrize("loop", RUNNERS)
def test_checkpoint_of_another_model_lists_the_mismatched_keys(loop, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _, ckpt_path = good_checkpoint(tmp_path)
    cfg = tiny_config()
    cfg["train_wrapper"]["args"]["model_spec"]["args"]["hidden"] = [16, 8]
    path = write_config(tmp_path / "other.yaml", cfg)
    capsys.readouterr()
    assert RUNNERS[loop](["--config", str(path), "--save-dir", "save", "--resume", str(ckpt_path)]) == 2
    err = capsys.readouterr().err
    assert "is from another model than this config builds" in err
    assert "missing from the checkpoint: model.net.5.bias" in err
    assert "different shapes: model.net.1.bias [32] vs [16]" in err
    assert not (tmp_path / "save").exists()


def test_trust_checkpoint_loads_what_weights_only_refuses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = corrupt("pickled-object", tmp_path)
    path = write_config(tmp_path / "r.yaml", tiny_config())
    assert run_train(["--config", str(path), "--save-dir", "save", "--resume", str(bad), "--trust-checkpoint"]) == 0


# ---------------------------------------------------------------- non-finite loss

NAN_LOSS_MODULE = '''
import torch
from torch import nn
import torchx.losses as losses

@losses.register("{name}")
class NanEvery(nn.Module):
    """Cross-entropy, but NaN on every `every`-th training call."""
    def __init__(self, every: int = 5):
        super().__init__()
        self.every, self.calls = every, 0
    def forward(self, out, y):
        loss = nn.functional.cross_entropy(out, y)
        if self.training:
            self.calls += 1
            if self.calls % self.every == 0:
                return loss * float("nan")
        return loss
'''


def nan_config(tmp_path, monkeypatch, policy: str) -> object:
    module, name = f"nan_loss_{uuid.uuid4().hex[:8]}", f"nan_every_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(NAN_LOSS_MODULE.format(name=name))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = tiny_config(max_epochs=3)
    cfg["imports"] = [module]
    cfg["train_wrapper"]["args"].update(loss_spec={"name": name, "args": {"every": 6}}, nonfinite_loss=policy)
    return write_config(tmp_path / "nan.yaml", cfg)


@pytest.mark.parametrize("loop", RUNNERS)
def test_nonfinite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(loop, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = nan_config(tmp_path, monkeypatch, "stop")
    capsys.readouterr()
    assert RUNNERS[loop](["--config", str(path), "--save-dir", "save"]) == 3
    err = capsys.readouterr().err
    assert "stopped: the training loss is nan at step 5 (epoch 1)" in err and "Traceback" not in err
    ckpt = torch.load(tmp_path / "save" / "nan" / "ckpt" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4  # the end of epoch 1: the last good state
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


@pytest.mark.parametrize("loop", RUNNERS)
def test_nonfinite_loss_skip_drops_the_batch_and_goes_on(loop, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = nan_config(tmp_path, monkeypatch, "skip")
    assert RUNNERS[loop](["--config", str(path), "--save-dir", "save"]) == 0
    ckpt = torch.load(tmp_path / "save" / "nan" / "ckpt" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 12  # as Lightning counts it: skipped batches step without gradients
    losses = [line.split("train/loss ")[1].split(" ")[0] for line in
              (tmp_path / "save" / "nan" / "log.txt").read_text().splitlines()]
    assert len(losses) == 3 and "nan" not in losses  # the epoch means leave the skipped batches out
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


DIE_MODULE = '''
import os
import time
import pytorch_lightning as pl
import torchx.callbacks as callbacks

@callbacks.register("die_on_rank1")
class Die(pl.Callback):
    """Rank 1 exits abruptly at step 2, as an OOM kill would end it; with `rank0_busy_s`, rank 0 is then
    busy that long before its next collective (a slow data load, a long validation on rank 0 alone)."""
    def __init__(self, rank0_busy_s=0):
        self.rank0_busy_s = rank0_busy_s

    def on_train_batch_end(self, trainer, pl_module, *args):
        if trainer.global_step == 2:
            if trainer.global_rank == 1:
                os._exit(9)
            time.sleep(self.rank0_busy_s)
'''


def test_a_dying_ddp_rank_takes_the_job_down_with_a_clear_message(tmp_path):
    (tmp_path / "die_cb.py").write_text(DIE_MODULE)
    cfg = tiny_config(accelerator="cpu", devices=2, strategy="ddp", max_epochs=50)
    cfg.update(imports=["die_cb"], callbacks=[{"name": "die_on_rank1"}])
    path = write_config(tmp_path / "ddp.yaml", cfg)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "PL_GLOBAL_SEED")}
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{tmp_path}"
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "train_pl.py"), "--config", str(path), "--save-dir", "save"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 1 and time.monotonic() - start < 200, proc.stderr[-2000:]  # it did not hang
    assert proc.stderr.count("another DDP process died or stopped answering") == 1, proc.stderr[-2000:]
    assert "Continue with --name ddp --resume." in proc.stderr  # the run, named as it was started
    assert [p.name for p in (tmp_path / "save").iterdir()] == ["ddp"]


def test_a_dying_rank_whose_peer_is_busy_elsewhere_still_ends_the_job_with_torchx_message(tmp_path):
    """Rank 0 does not meet the dead rank in a collective for a long while: torchx's watch of the ranks
    Lightning started stops it after its grace period, with the one message and exit 1 (Lightning's own
    watcher killed it with SIGKILL after at most 5 s, saying only that a child had ended)."""
    (tmp_path / "die_cb.py").write_text(DIE_MODULE)
    cfg = tiny_config(accelerator="cpu", devices=2, strategy="ddp", max_epochs=50)
    cfg.update(imports=["die_cb"], callbacks=[{"name": "die_on_rank1", "args": {"rank0_busy_s": 600}}])
    path = write_config(tmp_path / "ddp.yaml", cfg)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "PL_GLOBAL_SEED")}
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{tmp_path}"
    proc = subprocess.run([sys.executable, str(ROOT / "train_pl.py"), "--config", str(path), "--save-dir", "save"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("train_pl.py: error: another DDP process died or stopped answering"), last
    assert "Continue with --name ddp --resume." in last and "rank 1 (process " in last
    assert last.endswith("ended with status 9]") and proc.stderr.count("another DDP process") == 1
    assert "Forcefully terminating" not in proc.stderr
    run_dir = tmp_path / "save" / "ddp"
    for ckpt in (run_dir / "ckpt").glob("*.ckpt"):  # no torn checkpoint: every file loads
        torch.load(ckpt, weights_only=True)
    assert not list((run_dir / "ckpt").glob(".*.tmp"))


WATCH_SCRIPT = """
import subprocess, sys, threading, time
from torchx.distributed import ChildWatch
run_over = threading.Event()
first = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(%d)"])
second = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
ChildWatch([first, second], "train_pl.py", "--name r", every_s=0.05, grace_s=2.0, run_over=run_over).start()
if %s:  # this process's training returns by itself within the grace (it met the loss, or raised)
    first.wait()
    time.sleep(0.5)
    run_over.set()
time.sleep(5)  # this process, busy: the watch ends it after its grace, or leaves it alone
print("second child:", second.poll(), flush=True)
second.kill()
"""


@pytest.mark.parametrize("first_exits, over, code, second, says", [
    (9, False, 1, None, "rank 1 (process "),  # died: the other child stopped, this process ended after the grace
    (9, True, 0, "second child: -9", "rank 1 (process "),  # died, and this process stopped by itself: left to end
    (75, False, 0, "second child: None", None),  # preempted: this process saves and exits by itself
    (0, False, 0, "second child: None", None),  # a rank that finished is no loss
])
def test_the_child_watch_ends_the_job_only_for_a_rank_that_died(first_exits, over, code, second, says):
    proc = subprocess.run([sys.executable, "-c", WATCH_SCRIPT % (first_exits, over)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == code, proc.stderr[-2000:]
    assert proc.stdout.strip() == (second or "")
    if says is None:
        assert proc.stderr == ""
    else:
        assert proc.stderr.count("another DDP process died") == 1
        assert says in proc.stderr and f"ended with status {first_exits}]" in proc.stderr
        assert "Continue with --name r --resume." in proc.stderr


# what gloo raised in collectives on a 2-node run when a node was killed or stopped (SIGSTOP), both
# the side whose timeout fired and the side that then saw its pair closed, and errors that are not a loss
@pytest.mark.parametrize("text, lost", [
    ("[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 10000ms for recv "
     "operation to complete", True),
    ("Application timeout caused pair closure", True),
    ("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:41337", True),
    ("[../third_party/gloo/gloo/transport/tcp/pair.cc:598] Connection reset by peer", True),
    ("NCCL communicator was aborted on rank 1", True),
    ("[Rank 0] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=42, OpType=ALLREDUCE) ran for "
     "1800000 milliseconds before timing out.", True),
    ("mat1 and mat2 shapes cannot be multiplied (64x10 and 12x10)", False),
    ("CUDA out of memory. Tried to allocate 2.00 GiB", False),
    ("DataLoader timed out after 5 seconds", False),  # the user's loader on this rank, not a peer
    ("HTTPSConnectionPool(host='example.org', port=443): Read timed out. (read timeout=10)", False),
    ("The server socket has failed to listen on any local network address. port: 29500, useIpv6: 0, "
     "code: -98, name: EADDRINUSE, message: address already in use", False),
])
def test_which_collective_errors_mean_a_lost_peer(text, lost):
    from torchx.distributed import is_peer_failure

    assert is_peer_failure(RuntimeError(text)) is lost


SEE_WATCH_MODULE = '''
import pytorch_lightning as pl
from pytorch_lightning.strategies.launchers import subprocess_script
import torchx.callbacks as callbacks

SEEN = []

@callbacks.register("see_watch")
class SeeWatch(pl.Callback):
    """Records whose child-process watcher a DDP launch would start while the run trains."""
    def on_train_start(self, trainer, pl_module):
        SEEN.append(subprocess_script._launch_process_observer)
'''


def test_the_child_watch_is_in_place_only_while_a_run_trains(tmp_path, monkeypatch):
    """torchx's watch replaces Lightning's only during the run: a later Trainer in the same process
    (a notebook, another tool) gets Lightning's own back."""
    from pytorch_lightning.strategies.launchers import subprocess_script

    lightnings = subprocess_script._launch_process_observer
    (tmp_path / "see_watch.py").write_text(SEE_WATCH_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(max_epochs=1)
    cfg.update(imports=["see_watch"], callbacks=[{"name": "see_watch"}])
    assert run_train_pl(["--config", str(write_config(tmp_path / "c.yaml", cfg))]) == 0
    import see_watch

    assert len(see_watch.SEEN) == 1 and see_watch.SEEN[0] is not lightnings
    assert see_watch.SEEN[0].__module__ == "torchx.distributed"
    assert subprocess_script._launch_process_observer is lightnings


def test_a_preempted_one_node_ddp_run_saves_and_exits_75_with_no_lost_peer(tmp_path):
    """SIGTERM to every process of a run on two devices (as scancel or a Ctrl-C at the terminal sends
    it): the children exit 75 as rank 0 does; torchx's watch of them takes that for the preemption it
    is, not for a lost rank, and lets rank 0 save last.ckpt and exit 75."""
    cfg = tiny_config(accelerator="cpu", devices=2, strategy="ddp", max_epochs=200)
    cfg["checkpoint"] = {"every_n_train_steps": 2}
    path = write_config(tmp_path / "ddp.yaml", cfg)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "PL_GLOBAL_SEED")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen([sys.executable, str(ROOT / "train_pl.py"), "--config", str(path), "--save-dir", "save"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert wait_for(tmp_path / "save" / "ddp" / "ckpt" / "last.ckpt", proc)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) == 75
    err = proc.stderr.read()
    assert "preempted: SIGTERM received" in err and "another DDP process" not in err, err[-2000:]
    assert torch.load(tmp_path / "save" / "ddp" / "ckpt" / "last.ckpt", weights_only=True)["global_step"] < 800


def test_two_runs_claiming_one_name_at_once_cannot_share_it(tmp_path):
    """Both pass the existence check; the atomic mkdir lets exactly one create the directory."""
    from torchx.errors import ConfigError
    from torchx.run import Run, claim, locate

    run_dir, _ = locate(str(tmp_path), "same", None)
    first, second = Run(dir=run_dir, config={"seed": 1}), Run(dir=run_dir, config={"seed": 2})
    claim(first)
    with pytest.raises(ConfigError, match="was created by another process just now"):
        claim(second)
    assert "seed: 1" in (run_dir / "config.yaml").read_text()


def test_nonfinite_loss_ignore_leaves_the_check_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = nan_config(tmp_path, monkeypatch, "ignore")
    # no monitor, so last.ckpt is written every epoch (with one, only when val/acc improves)
    assert run_train(["--config", str(path), "--save-dir", "save", "checkpoint.monitor=null"]) == 0
    ckpt = torch.load(tmp_path / "save" / "nan" / "ckpt" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 12
    assert not all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())  # the NaN went through


TERM_LOSS_MODULE = '''
import os, signal
from pathlib import Path
from torch import nn
import torchx.losses as losses

@losses.register("{name}")
class TermOnce(nn.Module):
    """Cross-entropy; on its `at`-th training call of the first run, SIGTERM to this process."""
    def __init__(self, at: int, marker: str):
        super().__init__()
        self.at, self.marker, self.calls = at, marker, 0
    def forward(self, out, y):
        if self.training:
            self.calls += 1
            if self.calls == self.at and not Path(self.marker).exists():
                Path(self.marker).touch()
                os.kill(os.getpid(), signal.SIGTERM)
        return nn.functional.cross_entropy(out, y)
'''


@pytest.mark.parametrize("loop", RUNNERS)
def test_preemption_on_an_epochs_last_batch_keeps_that_epochs_validation(loop, tmp_path, monkeypatch):
    """SIGTERM during the last batch of epoch 1: its validation (and checkpoint) still run, the run
    stops after the next batch, and the resumed run has every epoch's validation."""
    monkeypatch.chdir(tmp_path)
    module, name = f"term_loss_{uuid.uuid4().hex[:8]}", f"term_once_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(TERM_LOSS_MODULE.format(name=name))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = tiny_config(max_epochs=3)
    cfg["imports"] = [module]
    cfg["train_wrapper"]["args"]["loss_spec"] = {"name": name, "args": {"at": 4, "marker": str(tmp_path / "sent")}}
    path = write_config(tmp_path / "term.yaml", cfg)
    assert RUNNERS[loop](["--config", str(path), "--save-dir", "save"]) == 75
    run = tmp_path / "save" / "term"
    assert torch.load(run / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 5  # epoch 1 ended
    assert [s for s, _ in scalars(run)["val/loss"]] == [3]
    assert RUNNERS[loop](["--save-dir", "save", "--name", "term", "--resume"]) == 0
    assert [s for s, _ in scalars(run)["val/loss"]] == [3, 7, 11]


@pytest.mark.parametrize("first, second", PAIRS, ids=[f"{a}-then-{b}" for a, b in PAIRS])
def test_a_finished_runs_last_ckpt_holds_its_final_state_whether_or_not_it_was_killed(first, second, tmp_path,
                                                                                       monkeypatch):
    """12 steps, a checkpoint every 5: the last 2 steps are on disk too, in last.ckpt, and a run
    killed after step 10 and resumed ends with the same last.ckpt, bitwise."""
    monkeypatch.chdir(tmp_path)
    cfg = dropout_config(max_epochs=3)
    cfg["checkpoint"] = {"every_n_train_steps": 5, "save_top_k": -1}
    path = write_config(tmp_path / "s.yaml", cfg)
    for name in ("full", "cut"):
        assert RUNNERS[first](["--config", str(path), "--save-dir", "save", "--name", name]) == 0
    full, cut = tmp_path / "save" / "full", tmp_path / "save" / "cut"
    assert torch.load(full / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 12
    left_by_a_kill_after(cut, 10)
    torch.manual_seed(12345)
    assert RUNNERS[second](["--save-dir", "save", "--name", "cut", "--resume"]) == 0
    assert torch.load(cut / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 12
    assert_bitwise_equal(weights(full), weights(cut))
