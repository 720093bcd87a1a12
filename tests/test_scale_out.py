"""Several nodes on loopback, as the real launchers start them: two `torchrun` processes with
--nnodes 2, four tasks with the environment srun gives, a node killed or hung mid-epoch, and a job
array of sessions started from two working directories that share one save folder.

Every multi-process run here is 4 CPU processes (gloo) training the digits MLP for a few steps; the
uninterrupted 1x4 run is the reference the others must equal, bitwise.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from helpers import ROOT, read_metrics, run_tool, tiny_config, write_config

USER = Path(__file__).resolve().parent / "user_project"
PEER_MESSAGE = "another DDP process died or stopped answering"
STEPS = 18  # 3 epochs x 6 batches per rank


def node_args(nodes: int, per_node: int) -> list[str]:
    """What the README's commands add to configs/digits.yaml for a run on `nodes` x `per_node` processes."""
    return [f"trainer_params.num_nodes={nodes}", f"trainer_params.devices={per_node}", "trainer_params.strategy=ddp"]


# the same run made small and stochastic: 16 samples per rank and step (a global batch of 64 whatever the
# node count), 6 steps an epoch, dropout (it draws from every rank's RNG), a step checkpoint every 3 steps
SMALL = ["trainer_params.max_epochs=3", "trainer_params.limit_train_batches=6", "trainer_params.limit_val_batches=2",
         "trainer_params.enable_progress_bar=false", "data_module.args.batch_size=16",
         "train_wrapper.args.model_spec.args.dropout=0.2", "checkpoint.every_n_train_steps=3",
         "checkpoint.save_top_k=-1", "checkpoint.monitor=null"]
DIGITS = ["--config", str(ROOT / "configs" / "digits.yaml")]


def run_args(name: str, nodes: int, per_node: int, *more: str) -> list[str]:
    return [*DIGITS, "--name", name, "--save-dir", "save", *node_args(nodes, per_node), *SMALL, *more]


def paced(seconds: float = 0.25) -> list[str]:
    """Overrides that slow the run down with a user's callback that changes no number."""
    return ["+imports=[pace]", f"+callbacks=[{{name: pace, args: {{seconds: {seconds}}}}}]"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any launcher's variables, with torchx and the user's modules
    importable, one thread per process (4 processes share 2 cores)."""
    drop = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
            "LOCAL_WORLD_SIZE", "PL_GLOBAL_SEED", "TORCHELASTIC_RUN_ID")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("SLURM_")}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(USER)]), OMP_NUM_THREADS="1", **extra)
    return env


def torchrun(node_rank: int, nodes: int, per_node: int, port: int, argv: list[str], cwd: Path,
             log: Path) -> subprocess.Popen:
    """One node: `torchrun --nnodes N --nproc-per-node P --node-rank R --master-addr 127.0.0.1 ...`, in a
    process group of its own (the node's agent and its workers), so a test can take the node down whole."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--nproc-per-node",
           str(per_node), "--node-rank", str(node_rank), "--master-addr", "127.0.0.1", "--master-port",
           str(port), str(ROOT / "train_pl.py"), *argv]
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, cwd=cwd, env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def launch_nodes(nodes: int, per_node: int, argv: list[str], cwd: Path, tag: str) -> list[subprocess.Popen]:
    port = free_port()
    return [torchrun(r, nodes, per_node, port, argv, cwd, cwd / f"{tag}-node{r}.log") for r in range(nodes)]


def wait_all(procs: list[subprocess.Popen], timeout: float = 240) -> list[int]:
    end = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(end - time.monotonic(), 1)))
        except subprocess.TimeoutExpired:
            for q in procs:
                kill_group(q)
            raise
    return codes


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (a session's experiment runs in a process group of its own)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """`proc` and every process below it (torchrun starts its workers in sessions of their own)."""
    for pid in [*descendants(proc.pid), proc.pid]:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def wait_for_step(run_dir: Path, procs: list[subprocess.Popen], step: int, timeout: float = 180) -> None:
    """Until the run has written its checkpoint of `step`: training is then between two known steps."""
    end = time.monotonic() + timeout
    while not list((run_dir / "ckpt").glob(f"*step={step}.ckpt")):
        if any(p.poll() is not None for p in procs) or time.monotonic() > end:
            for p in procs:
                kill_group(p)
            raise AssertionError(f"the run ended or stalled before step {step}: "
                                 f"{[p.returncode for p in procs]}")
        time.sleep(0.05)


def log_text(cwd: Path, tag: str) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(cwd.glob(f"{tag}*.log")))


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs between {a.name} and {b.name}"


def provenance(run_dir: Path, suffix: str = "") -> dict:
    return json.loads((run_dir / f"provenance{suffix}.json").read_text())


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("nodes")


@pytest.fixture(scope="module")
def reference(work) -> Path:
    """The uninterrupted run: one node of four processes through torchrun."""
    codes = wait_all(launch_nodes(1, 4, run_args("one", 1, 4), work, "one"))
    assert codes == [0], log_text(work, "one")[-3000:]
    return work / "save" / "one"


# ---------------------------------------------------------------- two nodes through torchrun


@pytest.mark.slow
def test_two_nodes_train_one_run_with_the_rows_of_one_node(reference, work):
    procs = launch_nodes(2, 2, run_args("two", 2, 2), work, "two")
    assert wait_all(procs) == [0, 0], log_text(work, "two")[-3000:]
    run_dir = work / "save" / "two"
    # one run directory, written once, by global rank 0
    assert sorted(p.name for p in (work / "save").iterdir()) == ["one", "two"]
    assert [p.name for p in run_dir.glob("provenance*.json")] == ["provenance.json"]
    assert len((run_dir / "log.txt").read_text().splitlines()) == 3  # one line an epoch, not one per process
    launch = provenance(run_dir)["distributed"]
    assert launch == {"strategy": "DDPStrategy", "environment": "TorchElasticEnvironment", "world_size": 4,
                      "num_nodes": 2, "process_group_timeout_s": 1800.0}
    assert provenance(reference)["distributed"]["num_nodes"] == 1
    # the node count changes nothing: the same rows, the same weights
    rows, ref_rows = read_metrics(run_dir / "metrics.csv"), read_metrics(reference / "metrics.csv")
    assert [r["step"] for r in rows] == [r["step"] for r in ref_rows] and len(rows) >= 4
    for row, ref in zip(rows, ref_rows):
        assert row.keys() == ref.keys()
        for key in row:
            assert (row[key] is None) == (ref[key] is None), key
            assert row[key] is None or abs(row[key] - ref[key]) < 1e-5, (key, row[key], ref[key])
    assert_same_weights(run_dir, reference)
    # every test sample counted once across the four processes: one process over the same checkpoint agrees
    results = json.loads((run_dir / "results.json").read_text())
    # on its own, the command evaluates a 2-node run on this node only (not waiting for node 1), here in one process
    assert run_tool(["test", str(run_dir), "trainer_params.devices=1", "trainer_params.strategy=auto"]) == 0
    single = json.loads((run_dir / "eval" / "test-best.json").read_text())
    assert single["samples"] == 297 and single["devices"] == 1
    assert single["metrics"] == pytest.approx(results["test"], abs=1e-6)


# ---------------------------------------------------------------- srun


def srun(argv: list[str], cwd: Path, job_id: str, tag: str) -> list[subprocess.Popen]:
    """Four tasks on two nodes, each with the variables srun gives its task, so Lightning's
    SLURMEnvironment (not torchrun's) sets the ranks."""
    procs = []
    for rank in range(4):
        env = clean_env(SLURM_JOB_ID=job_id, SLURM_JOB_NAME="digits", SLURM_NTASKS="4", SLURM_NNODES="2",
                        SLURM_NTASKS_PER_NODE="2", SLURM_TASKS_PER_NODE="2(x2)", SLURM_NODELIST="localhost",
                        SLURM_JOB_NODELIST="localhost", SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank % 2),
                        SLURM_NODEID=str(rank // 2), SLURM_STEP_NUM_TASKS="4", SLURM_CPUS_PER_TASK="1")
        with open(cwd / f"{tag}-task{rank}.log", "ab") as out:
            procs.append(subprocess.Popen([sys.executable, str(ROOT / "train_pl.py"), *argv], cwd=cwd, env=env,
                                          stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
    return procs


def slurm_job_id() -> str:
    """A job id whose port (Lightning: 15000 + its last four digits) is free here."""
    while True:
        port = free_port()
        if 15000 <= port < 25000:
            return str(100_000 + port - 15000)
        with socket.socket() as s:
            for candidate in range(15000 + os.getpid() % 9000, 25000):
                try:
                    s.bind(("127.0.0.1", candidate))
                except OSError:
                    continue
                return str(100_000 + candidate - 15000)


@pytest.mark.slow
def test_srun_tasks_requeued_by_sigusr1_end_bitwise_equal(reference, work):
    """The README's requeue flow: SIGUSR1 to every task, exit 75, the same command with --resume."""
    run_dir = work / "save" / "slurm"
    job = slurm_job_id()
    procs = srun(run_args("slurm", 2, 2, *paced()), work, job, "slurm")
    wait_for_step(run_dir, procs, 6)
    for p in procs:
        p.send_signal(signal.SIGUSR1)
    codes = wait_all(procs, timeout=120)
    assert codes == [75] * 4, log_text(work, "slurm")[-3000:]
    stopped = torch.load(run_dir / "ckpt" / "last.ckpt", weights_only=True)["global_step"]
    assert 6 <= stopped < STEPS
    assert "preempted: SIGUSR1 received" in log_text(work, "slurm")
    assert provenance(run_dir)["distributed"]["environment"] == "SLURMEnvironment"
    procs = srun(["--name", "slurm", "--save-dir", "save", "--resume"], work, job, "slurm-again")
    assert wait_all(procs) == [0] * 4, log_text(work, "slurm-again")[-3000:]
    assert provenance(run_dir, "-resume-1")["resumed_from"].endswith("last.ckpt")
    assert_same_weights(run_dir, reference)
    assert not list(work.glob("hpc_ckpt*")) and not list(run_dir.rglob("hpc_ckpt*"))  # Lightning's requeue is off


# ---------------------------------------------------------------- a node lost


@pytest.mark.slow
def test_a_killed_node_ends_the_other_with_one_message_and_a_resume_is_exact(reference, work):
    run_dir = work / "save" / "lost"
    procs = launch_nodes(2, 2, run_args("lost", 2, 2, *paced()), work, "lost")
    wait_for_step(run_dir, procs, 6)
    kill_group(procs[1])  # the node's agent and both its workers
    start = time.monotonic()
    code = procs[0].wait(timeout=120)
    took = time.monotonic() - start
    print(f"node 0 ended {took:.1f} s after node 1 was killed")
    procs[1].wait(timeout=30)
    node0 = log_text(work, "lost-node0")
    assert code == 1 and took < 60, (code, took, node0[-3000:])
    assert node0.count(PEER_MESSAGE) >= 1 and "Continue with --name lost" in node0
    for ckpt in (run_dir / "ckpt").glob("*.ckpt"):  # no torn checkpoint: every file loads
        torch.load(ckpt, weights_only=True)
    assert not list((run_dir / "ckpt").glob(".*.tmp"))
    procs = launch_nodes(2, 2, ["--name", "lost", "--save-dir", "save", "--resume"], work, "lost-again")
    assert wait_all(procs) == [0, 0], log_text(work, "lost-again")[-3000:]
    assert_same_weights(run_dir, reference)


@pytest.mark.slow
def test_a_hung_node_is_bounded_by_the_process_group_timeout(work):
    """A node that stops answering without closing its connections (SIGSTOP: hung, or cut off): the
    other node's processes give up after distributed.timeout_s, with the same message."""
    timeout = 10
    run_dir = work / "save" / "hung"
    procs = launch_nodes(2, 2, run_args("hung", 2, 2, *paced(), f"+distributed.timeout_s={timeout}"), work, "hung")
    try:
        wait_for_step(run_dir, procs, 3)
        kill_group(procs[1], signal.SIGSTOP)
        start = time.monotonic()
        code = procs[0].wait(timeout=timeout + 90)
        took = time.monotonic() - start
        print(f"node 0 ended {took:.1f} s after node 1 stopped answering (timeout {timeout} s)")
    finally:
        kill_group(procs[1])
        procs[1].wait(timeout=30)
    node0 = log_text(work, "hung-node0")
    assert code == 1 and timeout - 2 <= took < timeout + 60, (code, took, node0[-3000:])
    assert PEER_MESSAGE in node0
    assert provenance(run_dir)["distributed"]["process_group_timeout_s"] == timeout


# ---------------------------------------------------------------- a job array of sessions


@pytest.mark.slow
def test_a_job_array_from_two_folders_runs_every_experiment_once(tmp_path):
    """Four `--only K --resume` tasks at once, two started in each of two working directories (two
    clones, as on two machines) that share one save folder; task 3 is killed mid-run with all its
    processes and requeued: it continues its experiment from last.ckpt."""
    cfg = tiny_config(max_epochs=2, limit_train_batches=6)
    cfg["checkpoint"] = {"every_n_train_steps": 3}
    cfg["train_wrapper"]["args"]["optim_spec"]["args"].pop("lr")
    cfg["train_wrapper"]["args"]["optim_spec"]["args"]["lr_"] = [0.2, 0.1, 0.05, 0.02]
    cfg.update(imports=["pace"], callbacks=[{"name": "pace", "args": {"seconds": 0.2}}])
    shared = tmp_path / "shared" / "save"
    folders = [tmp_path / "machine-a", tmp_path / "machine-b"]
    for folder in folders:
        folder.mkdir()
        write_config(folder / "sweep.yaml", cfg)

    def task(k: int) -> subprocess.Popen:
        cwd = folders[k // 2]
        with open(tmp_path / f"task{k}.log", "ab") as out:
            return subprocess.Popen([sys.executable, str(ROOT / "train_pl.py"), "--config", "sweep.yaml",
                                     "--save-dir", str(shared), "--only", str(k), "--resume"], cwd=cwd,
                                    env=clean_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    tasks = [task(k) for k in range(4)]
    session = shared / "sweep"
    victim = session / "lr=0.02"
    try:
        wait_for_step(victim, [tasks[3]], 3)
        kill_group(tasks[3])  # as the scheduler ends a job: every process of the task
        tasks[3].wait(timeout=30)
        tasks[3] = task(3)  # requeued: the same command
        codes = wait_all(tasks, timeout=300)
    finally:
        for t in tasks:
            kill_group(t)
    logs = "".join((tmp_path / f"task{k}.log").read_text(errors="replace") for k in range(4))
    assert codes == [0, 0, 0, 0], logs[-3000:]
    doc = yaml.safe_load((session / "session.yaml").read_text())
    entries = {e["name"]: e for e in doc["experiments"]}
    assert [e["state"] for e in doc["experiments"]] == ["done"] * 4
    assert [entries[n]["attempts"] for n in ("lr=0.2", "lr=0.1", "lr=0.05")] == [1, 1, 1]
    assert entries["lr=0.02"]["attempts"] == 2
    for name in entries:  # each experiment ran once: one start, and the requeued one resumed once
        starts = sorted(p.name for p in (session / name).glob("provenance*.json"))
        assert starts == (["provenance-resume-1.json", "provenance.json"] if name == "lr=0.02" else
                          ["provenance.json"]), (name, starts)
        assert json.loads((session / name / "results.json").read_text())["global_step"] == 12
    # last.ckpt, or the step checkpoint written just before it when the kill came between the two writes
    assert Path(provenance(victim, "-resume-1")["resumed_from"]).resolve().parent == (victim / "ckpt").resolve()
    assert {Path(provenance(session / n)["cwd"]).name for n in entries} == {"machine-a", "machine-b"}
    assert not (folders[0] / "save").exists() and not (folders[1] / "save").exists()


def test_a_requeued_experiment_continues_from_its_step_checkpoint_when_last_ckpt_was_never_written(tmp_path):
    """Lightning writes a step checkpoint and then last.ckpt, each whole; a task killed between the two
    leaves only the step checkpoint. Its requeued session continues from that checkpoint (it does not
    start over) and ends with the weights of an uninterrupted session."""
    cfg = tiny_config(max_epochs=2, limit_train_batches=6)
    cfg["checkpoint"] = {"every_n_train_steps": 3}
    cfg["imports"] = ["faults"]
    cfg["train_wrapper"]["args"]["model_spec"]["name"] = "mlp_with_faults"
    cfg["train_wrapper"]["args"]["model_spec"]["args"]["dropout"] = 0.2  # the resumed RNG state matters
    cfg["train_wrapper"]["args"]["optim_spec"]["args"].pop("lr")
    cfg["train_wrapper"]["args"]["optim_spec"]["args"]["lr_"] = [0.1]
    write_config(tmp_path / "s.yaml", cfg)

    def session(save: str, *more: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", "s.yaml", "--save-dir", save,
                               *more], cwd=tmp_path, env=clean_env(**env), capture_output=True, text=True, timeout=300)

    assert session("whole").returncode == 0
    killed = session("save", FAULT_KILL_AT="5")  # the fifth training step: after the checkpoint of step 3
    assert killed.returncode != 0, killed.stderr[-2000:]
    run_dir = tmp_path / "save" / "s" / "lr=0.1"
    assert sorted(p.name for p in (run_dir / "ckpt").glob("*.ckpt")) == ["epoch=0-step=3.ckpt", "last.ckpt"]
    (run_dir / "ckpt" / "last.ckpt").unlink()  # as if the kill had come between the two writes
    resumed = session("save", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    doc = yaml.safe_load((tmp_path / "save" / "s" / "session.yaml").read_text())
    assert [(e["state"], e["attempts"], e.get("set_aside")) for e in doc["experiments"]] == [("done", 2, None)]
    assert not (tmp_path / "save" / "s" / "attempts").exists()
    assert sorted(p.name for p in run_dir.glob("provenance*.json")) == ["provenance-resume-1.json", "provenance.json"]
    assert provenance(run_dir, "-resume-1")["resumed_from"].endswith("epoch=0-step=3.ckpt")
    rows = read_metrics(run_dir / "metrics.csv")  # (it checks that the steps only increase)
    assert rows == read_metrics(tmp_path / "whole" / "s" / "lr=0.1" / "metrics.csv")
    assert_same_weights(run_dir, tmp_path / "whole" / "s" / "lr=0.1")
