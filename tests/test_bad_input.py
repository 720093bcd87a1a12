"""A table of bad configs and bad command lines for train_pl.py.

Every case must end the way cli.py promises: exit status 2, one message on stderr that names
the bad value (and, where there is one, what would be valid), no traceback, and nothing
created or changed under --save-dir (nor anywhere else in the working directory).

Most cases run `torchx.cli.main` in-process with --dry-run (the mistake is found before
training); the few that only show when training starts (data files, pl.Trainer arguments,
checkpoints) run for real and must still create nothing. Three cases also run as real
subprocesses of train_pl.py. Cases that show a real bug are strict xfails; see their reasons.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from torchx import cli

REPO = Path(__file__).resolve().parent.parent
TRAIN_PL = REPO / "train_pl.py"
PROG = "train_pl.py"

# The tiny digits config every case starts from (configs/digits.yaml, shrunk to seconds).
BASE: dict[str, Any] = {
    "data_module": {"name": "digits", "args": {"batch_size": 32, "val_split": 0.1}},
    "train_wrapper": {
        "name": "base",
        "args": {
            "model_spec": {"name": "mlp", "args": {"in_dim": 64, "hidden": [32], "out_dim": 10}},
            "loss_spec": {"name": "ce"},
            "optim_spec": {"name": "Adam", "args": {"lr": 1.0e-3}},
            "sched_spec": {"name": "StepLR", "args": {"step_size": 5, "gamma": 0.5}, "interval": "epoch"},
        },
    },
    "trainer_params": {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1},
    "checkpoint": {"monitor": "val/acc", "mode": "max", "save_last": True},
    "seed": 42,
}

MISCONF = "MisconfigurationException (a plain Exception, not a ValueError)"
DELETE = object()  # a `set` value that removes the key

# User modules for the `imports:` cases, written into the working directory.
USER_MODULES = {
    "bad_input_raises.py": "VALUE = 1\nraise RuntimeError('boom at import 42')\n",
    "bad_input_syntax.py": "def f(:\n    pass\n",
    "bad_input_dup_register.py": (
        "import torchx.models\n\n\n"
        "@torchx.models.register('mlp')\n"
        "class MyMLP:\n"
        "    pass\n"),
    "bad_input_missing_dep.py": "import bad_input_no_such_dependency_xyz\n",
}

MNIST_MODEL = {"name": "mlp", "args": {"in_dim": 784, "hidden": [16], "out_dim": 10}}


@dataclass
class Case:
    """One bad input.

    set:     dotted path -> value applied to a copy of BASE (DELETE removes the key)
    text:    raw config text (str or bytes) instead of the YAML of the edited BASE
    files:   extra files relative to the working directory (str or bytes)
    dirs:    extra folders relative to the working directory
    config:  the --config argument (None: no --config)
    args:    further command-line arguments
    dry:     add --dry-run (mistakes found before training); False: a real run
    expect:  phrases that must all appear in stderr ({tmp} = the working directory)
    save_exists: the save dir exists before (made by `files`) and must be byte-identical after
    """

    id: str
    expect: list[str]
    set: dict[str, Any] = field(default_factory=dict)
    text: str | bytes | None = None
    files: dict[str, str | bytes] = field(default_factory=dict)
    dirs: list[str] = field(default_factory=list)
    config: str | None = "cfg.yaml"
    args: list[str] = field(default_factory=list)
    dry: bool = True
    save_exists: bool = False


def xfail(case: Case, reason: str) -> Any:
    return pytest.param(case, id=case.id, marks=pytest.mark.xfail(strict=True, reason=reason))


def no_cuda(case: Case) -> Any:
    return pytest.param(case, id=case.id, marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="needs a machine without CUDA"))


BASE_YAML = yaml.safe_dump(BASE, sort_keys=False)
SWEEP = "train_wrapper.args.optim_spec.args.lr_=[0.1,0.01]"  # makes the config a session of two experiments
A_CKPT = b"not really a checkpoint\n"

CASES: list[Any] = [
    # ------------------------------------------------------------ the config file itself
    Case("yaml-syntax-error",
         text="seed: 1\ndata_module:\n  name: digits\n  args: {batch_size: 32\ntrain_wrapper: {name: base}\n",
         expect=["cfg.yaml:5:", "YAML syntax error"]),
    Case("yaml-duplicate-key", text=BASE_YAML + "seed: 7\n",
         expect=["cfg.yaml:", "duplicate key 'seed' (first at line"]),
    Case("yaml-top-level-list", text="- data_module\n- train_wrapper\n",
         expect=["cfg.yaml", "must be a mapping of keys to values, got a list"]),
    Case("yaml-unsupported-date-value", text=BASE_YAML.replace("seed: 42", "seed: 2020-01-01"),
         expect=["cfg.yaml", "'date' is not a supported primitive type", "seed"]),
    Case("config-not-utf8", text=b"seed: \xff\xfe\x00\x01\n", expect=["cannot read config", "cfg.yaml"]),
    Case("config-empty-file", text="# nothing here\n",
         expect=["no 'data_module' section", "every config needs data_module and train_wrapper"]),
    Case("config-file-missing", config="nope.yaml", expect=["config file 'nope.yaml' does not exist"]),
    Case("config-is-a-directory", config="confdir", dirs=["confdir"], expect=["config 'confdir' is not a file"]),
    Case("no-config-no-name", config=None, expect=["give --config FILE"]),
    Case("unknown-cli-option", args=["--bogus"], expect=["unrecognized arguments: --bogus"]),
    # ------------------------------------------------------------ top-level keys
    Case("unknown-top-level-key", set={"trainer_param": {"max_epochs": 1}},
         expect=["unknown top-level key 'trainer_param' (did you mean 'trainer_params'", "valid keys: imports"]),
    Case("missing-data-module", set={"data_module": DELETE},
         expect=["no 'data_module' section", "datasets registry"]),
    Case("missing-train-wrapper", set={"train_wrapper": DELETE},
         expect=["no 'train_wrapper' section", "wrappers registry"]),
    Case("seed-string", set={"seed": "abc"}, expect=["seed must be a non-negative integer or null, got 'abc'"]),
    Case("seed-negative", set={"seed": -1}, expect=["seed must be a non-negative integer or null, got -1"]),
    Case("seed-bool", set={"seed": True}, expect=["seed must be a non-negative integer or null, got True"]),
    Case("seed-float", set={"seed": 1.5}, expect=["seed must be a non-negative integer or null, got 1.5"]),
    Case("callbacks-not-a-list", set={"callbacks": {"name": "lr_monitor"}},
         expect=["callbacks must be a list of {name, args} specs, got {'name': 'lr_monitor'}"]),
    Case("callback-unknown-name", set={"callbacks": [{"name": "early_stop"}]},
         expect=["callbacks.0: unknown callback 'early_stop' (did you mean 'early_stopping'", "lr_monitor"]),
    Case("checkpoint-top-k-without-monitor", set={"checkpoint": {"save_top_k": 2}},
         expect=["checkpoint {'save_top_k': 2}", "not a valid configuration"]),
    Case("metric-unknown-name", set={"metrics": [{"name": "accurcy", "args": {"task": "multiclass"}}]},
         expect=["metrics.0: unknown metric 'accurcy' (did you mean 'accuracy'", "f1_score"]),
    Case("metric-missing-required-argument", set={"metrics": [{"name": "accuracy"}]},
         expect=["metrics.0: metric 'accuracy' is missing the required argument 'task'"]),
    Case("metric-listed-twice", set={"metrics": [{"name": "accuracy", "args": {"task": "binary"}}] * 2},
         expect=["metrics.1: 'accuracy' is listed twice"]),
    Case("metrics-not-a-list", set={"metrics": {"name": "accuracy"}}, expect=["metrics must be a list"]),
    Case("metric-monitor-not-logged", set={"checkpoint.monitor": "val/f1"},
         expect=["checkpoint.monitor: the wrapper does not log 'val/f1'", "val/loss"]),
    Case("gan-unknown-loss", set={"train_wrapper": {"name": "gan", "args": {
        "generator_spec": {"name": "dcgan_generator"}, "discriminator_spec": {"name": "dcgan_discriminator"},
        "g_optim_spec": {"name": "Adam"}, "d_optim_spec": {"name": "Adam"}, "loss": "hinge"}}},
         expect=["gan: loss must be one of bce, wasserstein, got 'hinge'"]),
    Case("sequential-without-schedulers", set={"train_wrapper.args.sched_spec": {
        "name": "sequential", "args": {"milestones": [1], "schedulers": []}}},
         expect=["'schedulers' must be a non-empty list of scheduler specs"]),
    Case("sequential-inner-unknown", set={"train_wrapper.args.sched_spec": {"name": "sequential", "args": {
        "milestones": [1], "schedulers": [{"name": "LinearLR"}, {"name": "Cosine"}]}}},
         expect=["sched_spec.args.schedulers.1: unknown lr_scheduler 'Cosine'"]),
    Case("callback-unknown-arg", set={"callbacks": [{"name": "early_stopping", "args": {"monitr": "val/acc"}}]},
         expect=["callbacks.0: callback 'early_stopping' got an unknown argument 'monitr' (did you mean 'monitor'"]),
    Case("trainer-params-not-a-mapping", set={"trainer_params": 5},
         expect=["trainer_params must be a mapping of argument names to values, got 5"]),
    Case("imports-not-a-list", set={"imports": 5}, expect=["imports must be a list of module names, got 5"]),
    # ------------------------------------------------------------ registry names
    Case("data-module-unknown-name", set={"data_module.name": "digit"},
         expect=["data_module: unknown dataset 'digit' (did you mean 'digits'", "mnist"]),
    Case("wrapper-unknown-name", set={"train_wrapper.name": "basic"},
         expect=["train_wrapper: unknown wrapper 'basic' (did you mean 'base'"]),
    Case("model-unknown-name", set={"train_wrapper.args.model_spec.name": "mlpp"},
         expect=["unknown model 'mlpp' (did you mean 'mlp'", "tiny_cnn"]),
    Case("loss-unknown-name", set={"train_wrapper.args.loss_spec.name": "cross_entropy"},
         expect=["train_wrapper.args.loss_spec: unknown loss 'cross_entropy'", "mnist_ce"]),
    Case("optimizer-unknown-name", set={"train_wrapper.args.optim_spec.name": "Adamm"},
         expect=["train_wrapper.args.optim_spec: unknown optimizer 'Adamm' (did you mean 'Adam'", "SGD"]),
    Case("scheduler-unknown-name", set={"train_wrapper.args.sched_spec.name": "StepLRR"},
         expect=["unknown lr_scheduler 'StepLRR' (did you mean 'StepLR'", "CosineAnnealingLR"]),
    Case("scheduler-lambdalr-refused", set={"train_wrapper.args.sched_spec": {"name": "LambdaLR",
                                                                              "args": {"lr_lambda": "x"}}},
         expect=["lr_scheduler 'LambdaLR' cannot be built from a config", "Python callables", "register_scheduler"]),
    # ------------------------------------------------------------ spec structure and arguments
    Case("model-unknown-argument", set={"train_wrapper.args.model_spec.args.hiden": [8]},
         expect=["model 'mlp' got an unknown argument 'hiden' (did you mean 'hidden'", "accepted: in_dim"]),
    Case("wrapper-missing-required-argument", set={"train_wrapper.args.optim_spec": DELETE},
         expect=["wrapper 'base' is missing the required argument 'optim_spec'", "accepted: model_spec"]),
    Case("spec-without-name", set={"train_wrapper.args.model_spec.name": DELETE},
         expect=["train_wrapper.args.model_spec must be a spec {name: ..., args: {...}}", "'in_dim': 64"]),
    Case("spec-args-not-a-mapping", set={"train_wrapper.args.model_spec.args": [64, 10]},
         expect=["model 'mlp': 'args' must be a mapping, got [64, 10]"]),
    Case("spec-unknown-key", set={"train_wrapper.args.loss_spec.arg": {"reduction": "sum"}},
         expect=["loss_spec: unknown spec key 'arg' (did you mean 'args'", "a spec has name, args"]),
    Case("sched-interval-batch", set={"train_wrapper.args.sched_spec.interval": "batch"},
         expect=["sched_spec.interval must be 'epoch' or 'step', got 'batch'"]),
    Case("sched-frequency-zero", set={"train_wrapper.args.sched_spec.frequency": 0},
         expect=["sched_spec.frequency must be a positive integer, got 0"]),
    Case("optimizer-unknown-argument", set={"train_wrapper.args.optim_spec.args.lrr": 0.1},
         expect=["optimizer 'Adam' got an unknown argument 'lrr' (did you mean 'lr'"]),
    Case("optimizer-rejects-value", set={"train_wrapper.args.optim_spec.args.lr": -1.0},
         expect=["optimizer 'Adam' rejected its arguments", "Invalid learning rate: -1.0"]),
    Case("loss-unknown-argument", set={"train_wrapper.args.loss_spec.args": {"label_smothing": 0.1}},
         expect=["loss 'ce' got an unknown argument 'label_smothing' (did you mean 'label_smoothing'"]),
    Case("model-constructor-rejects-value",
         set={"train_wrapper.args.model_spec": {"name": "cnn", "args": {"image_size": 2}}},
         expect=["model 'cnn' rejected its arguments", "image_size=2 is too small for cnn; it needs at least 6"]),
    Case("data-module-batch-size-zero", set={"data_module.args.batch_size": 0},
         expect=["batch_size must be a positive integer, got 0"]),
    Case("sched-list-with-a-bad-entry", set={"train_wrapper.args.sched_spec": [
        {"name": "StepLR", "args": {"step_size": 5}}, {"name": "ExponentialLRR", "args": {"gamma": 0.9}}]},
         expect=["train_wrapper.args.sched_spec.1: unknown lr_scheduler 'ExponentialLRR' "
                 "(did you mean 'ExponentialLR'"]),
    Case("sched-missing-required-argument", set={"train_wrapper.args.sched_spec.args": {"gamma": 0.5}},
         expect=["lr_scheduler 'StepLR' is missing the required argument 'step_size'"]),
    Case("data-module-val-split-negative", set={"data_module.args.val_split": -0.1},
         expect=["val_split must be a count (>= 1) or a fraction in [0, 1), got -0.1"]),
    Case("data-module-num-workers-negative", set={"data_module.args.num_workers": -1},
         expect=["num_workers must be a non-negative integer, got -1"]),
    Case("model-argument-wrong-type", set={"train_wrapper.args.model_spec.args.in_dim": "sixty-four"},
         expect=["model 'mlp' argument 'in_dim': expected int, got 'sixty-four'"]),
    Case("callback-rejects-value",
               set={"callbacks": [{"name": "early_stopping", "args": {"monitor": "val/acc", "mode": "maxx"}}]},
               expect=["callbacks.0 (early_stopping", "maxx"]),
    Case("lr-monitor-rejects-value",
               set={"callbacks": [{"name": "lr_monitor", "args": {"logging_interval": "batch"}}]},
               expect=["callbacks.0: callback 'lr_monitor' argument 'logging_interval': expected 'step', "
                       "'epoch' or null, got 'batch'"]),
    Case("trainer-params-unknown-key", set={"trainer_params.max_epoch": 1},
         expect=["trainer_params got an unknown argument 'max_epoch' (did you mean 'max_epochs'"]),
    Case("trainer-params-logger-reserved", set={"trainer_params.logger": False},
         expect=["trainer_params.logger cannot be set", "TensorBoard and metrics.csv", "`loggers:` list"]),
    Case("trainer-params-default-root-dir-reserved", set={"trainer_params.default_root_dir": "x"},
         expect=["trainer_params.default_root_dir cannot be set", "--save-dir/--name"]),
    Case("checkpoint-dirpath-reserved", set={"checkpoint.dirpath": "ckpts"},
         expect=["checkpoint.dirpath cannot be set", "<run dir>/ckpt"]),
    Case("checkpoint-unknown-key", set={"checkpoint.monitr": "val/loss"},
         expect=["checkpoint got an unknown argument 'monitr' (did you mean 'monitor'"]),
    # ------------------------------------------------------------ imports
    Case("imports-missing-module", set={"imports": ["bad_input_no_such_module"]},
         expect=["imports: cannot import 'bad_input_no_such_module': no module named 'bad_input_no_such_module'"]),
    Case("imports-module-raises", set={"imports": ["bad_input_raises"]}, files=USER_MODULES,
         expect=["importing 'bad_input_raises' failed: RuntimeError: boom at import 42",
                 "bad_input_raises.py, line 2"]),
    Case("imports-module-syntax-error", set={"imports": ["bad_input_syntax"]}, files=USER_MODULES,
         expect=["importing 'bad_input_syntax' failed: SyntaxError", "bad_input_syntax.py, line 1"]),
    Case("imports-duplicate-registration", set={"imports": ["bad_input_dup_register"]}, files=USER_MODULES,
         expect=["importing 'bad_input_dup_register' failed: model 'mlp' is already registered by "
                 "torchx.models.mlp:", "Pick another name"]),
    Case("imports-module-missing-dependency", set={"imports": ["bad_input_missing_dep"]}, files=USER_MODULES,
         expect=["importing 'bad_input_missing_dep' failed: ModuleNotFoundError",
                 "bad_input_no_such_dependency_xyz"]),
    # ------------------------------------------------------------ _base_ and interpolation
    Case("base-cycle", config="a.yaml",
         files={"a.yaml": "_base_: b.yaml\nseed: 1\n", "b.yaml": "_base_: a.yaml\nseed: 2\n"},
         expect=["_base_ cycle:", "a.yaml -> ", "b.yaml -> "]),
    Case("base-file-missing", text="_base_: nothere.yaml\n" + BASE_YAML,
         expect=["_base_ file 'nothere.yaml' not found", "cfg.yaml"]),
    Case("base-not-a-file-name", text="_base_: 3\n" + BASE_YAML,
         expect=["_base_ must be a file name or a list of file names, got 3"]),
    Case("interpolation-missing-key", set={"vars": {"a": 1}, "seed": "${vars.nope}"},
         expect=["interpolation failed", "'vars.nope' not found", "seed"]),
    Case("sweep-key-not-a-list", set={"train_wrapper.args.optim_spec.args.lr_": 0.1,
                                      "train_wrapper.args.optim_spec.args.lr": DELETE},
         expect=["sweep key 'train_wrapper.args.optim_spec.args.lr_' must hold a non-empty list of values, got 0.1"]),
    Case("sweep-one-combination-bad", set={"train_wrapper.args.optim_spec.args.lr_": [0.1, -1.0],
                                           "train_wrapper.args.optim_spec.args.lr": DELETE},
         expect=["experiment 1 (lr=-1.0)", "-1.0"]),
    # ------------------------------------------------------------ KEY=VALUE overrides
    Case("override-without-equals", args=["trainer_params.max_epochs"],
         expect=["override 'trainer_params.max_epochs' is not KEY=VALUE"]),
    Case("override-empty-key", args=["=3"], expect=["override '=3' is not KEY=VALUE"]),
    Case("override-bad-key", args=["trainer_params..max_epochs=3"],
         expect=["override key 'trainer_params..max_epochs' is not a dotted key"]),
    Case("override-unknown-key", args=["trainer_params.max_epoch=3"],
         expect=["trainer_params got an unknown argument 'max_epoch' (did you mean 'max_epochs'"]),
    Case("override-unknown-section", args=["trainer_param.max_epochs=3"],
         expect=["unknown key 'trainer_param' (did you mean 'trainer_params'", "+trainer_param.max_epochs=VALUE"]),
    Case("override-plus-existing-key", args=["+seed=1"],
         expect=["override '+seed': 'seed' already exists; write 'seed=VALUE'"]),
    Case("override-invalid-yaml-value", args=["trainer_params.max_epochs=[1,"],
         expect=["value of 'trainer_params.max_epochs' '[1,' is not valid YAML"]),
    Case("override-list-index-out-of-range", args=["train_wrapper.args.model_spec.args.hidden.3=8"],
         expect=["'3' is not an index of a list of 1 item(s) (valid: 0..0)"]),
    Case("override-into-a-scalar", args=["seed.x=1"],
         expect=["override 'seed.x': 'seed' holds 42, not a section with keys"]),
    Case("override-gives-unknown-optimizer", args=["train_wrapper.args.optim_spec.name=Adamm"],
         expect=["unknown optimizer 'Adamm' (did you mean 'Adam'"]),
    Case("override-makes-a-bad-sweep", args=["train_wrapper.args.optim_spec.name_=[Adam,Adamm]"],
         expect=["experiment 1 (name=Adamm)", "unknown optimizer 'Adamm' (did you mean 'Adam'"]),
    # ------------------------------------------------------------ sessions: --jobs, --only, --resume
    Case("session-only-out-of-range", args=[SWEEP, "--only", "5"],
         expect=["--only '5' is not an experiment of this session; give an index from 0 to 1",
                 "lr=0.1, lr=0.01"]),
    Case("session-only-unknown-name", args=[SWEEP, "--only", "lr=0.5"],
         expect=["--only 'lr=0.5' is not an experiment of this session", "lr=0.1, lr=0.01"]),
    Case("jobs-zero", args=[SWEEP, "--jobs", "0"], expect=["--jobs '0' must be a positive whole number"]),
    Case("jobs-not-a-number", args=["--jobs", "two"], expect=["--jobs 'two' must be a positive whole number"]),
    Case("jobs-on-a-single-run", args=["--jobs", "2"],
         expect=["--jobs 2 applies to a session, a config with sweep keys", "'cfg.yaml' has none"]),
    Case("only-on-a-single-run", args=["--only", "0"], expect=["--only 0 applies to a session"]),
    Case("session-jobs-with-only", args=[SWEEP, "--jobs", "2", "--only", "0"],
         expect=["--jobs 2 runs several experiments at once and --only 0 runs one"]),
    Case("session-resume-without-session", args=[SWEEP, "--resume"],
         expect=["--resume: there is no session '{tmp}/save/cfg' to resume; drop --resume"]),
    Case("session-resume-from-checkpoint", args=[SWEEP, "--resume", "a.ckpt"], files={"a.ckpt": A_CKPT},
         expect=["--resume a.ckpt: a session continues with a bare --resume"]),
    Case("session-over-a-run-directory", args=[SWEEP], save_exists=True, files={"save/cfg/config.yaml": BASE_YAML},
         expect=["'{tmp}/save/cfg' exists and is not a session", "--name"]),
    # ------------------------------------------------------------ --gpu, --name, --resume
    Case("gpu-not-a-number", args=["--gpu", "abc"], expect=["--gpu 'abc' is not a list of CUDA device ids"]),
    Case("gpu-empty", args=["--gpu="], expect=["--gpu '' is not a list of CUDA device ids"]),
    Case("gpu-negative", args=["--gpu=-1"], expect=["--gpu '-1' is not a list of CUDA device ids"]),
    no_cuda(Case("gpu-without-cuda", args=["--gpu", "0"],
                 expect=["--gpu 0: CUDA is not available on this machine", "drop --gpu"])),
    Case("gpu-same-device-twice", args=["--gpu", "0,0"], expect=["--gpu '0,0' names a device twice"]),
    Case("name-with-slash", args=["--name", "a/b"], expect=["--name 'a/b' must be a plain folder name"]),
    Case("name-dotdot", args=["--name", ".."], expect=["--name '..' must be a plain folder name"]),
    Case("resume-without-run-dir", args=["--resume"],
         expect=["--resume: there is no run '{tmp}/save/cfg' to resume", "drop --resume to start it"]),
    Case("resume-missing-checkpoint", args=["--resume", "missing.ckpt"],
         expect=["--resume: checkpoint 'missing.ckpt' does not exist"]),
    Case("resume-a-folder", args=["--resume", "save/old"], dirs=["save/old/ckpt"],
         files={"save/old/config.yaml": BASE_YAML}, save_exists=True,
         expect=["--resume: 'save/old' is a folder; --resume PATH takes a checkpoint file such as "
                 "save/old/ckpt/last.ckpt", "or continue that run with --name old --resume"]),
    Case("resume-a-folder-that-is-not-a-run", args=["--resume", "elsewhere"], dirs=["elsewhere"],
         expect=["--resume: 'elsewhere' is a folder; --resume PATH takes a checkpoint file"]),
    Case("resume-a-folder-that-is-not-a-run-dir", args=["--name", "notrun", "--resume"], dirs=["save/notrun"],
         save_exists=True, expect=["--resume: '{tmp}/save/notrun' is not a run directory (it has no config.yaml)"]),
    Case("resume-run-without-last-ckpt", args=["--resume"], save_exists=True,
         files={"save/cfg/config.yaml": BASE_YAML, "save/cfg/ckpt/epoch=0.ckpt": A_CKPT},
         expect=["--resume: no checkpoint '{tmp}/save/cfg/ckpt/last.ckpt'", "checkpoints there: epoch=0.ckpt"]),
    Case("resume-without-config-or-saved-config", config=None, args=["--name", "old", "--resume"],
         save_exists=True, files={"save/old/ckpt/last.ckpt": A_CKPT},
         expect=["--config FILE is required", "'{tmp}/save/old' has no saved config.yaml"]),
    Case("resume-with-broken-saved-config", config=None, args=["--name", "old", "--resume"], save_exists=True,
         files={"save/old/config.yaml": "seed: [1,\n", "save/old/ckpt/last.ckpt": A_CKPT},
         expect=["{tmp}/save/old/config.yaml:", "YAML syntax error"]),
    Case("run-already-exists", dry=False, save_exists=True,
         files={"save/cfg/notes.txt": "an earlier run\n", "save/cfg/ckpt/last.ckpt": A_CKPT},
         expect=["run directory '{tmp}/save/cfg' already exists", "--resume", "--name"]),
    Case("run-already-exists-dry-run", save_exists=True, files={"save/cfg/notes.txt": "an earlier run\n"},
         expect=["run directory '{tmp}/save/cfg' already exists"]),
    # ------------------------------------------------------------ found only when training starts
    Case("mnist-root-dir-empty", dry=False, dirs=["empty"],
         set={"data_module": {"name": "mnist", "args": {"root_dir": "{tmp}/empty", "batch_size": 32}},
              "train_wrapper.args.model_spec": MNIST_MODEL},
         expect=["MNIST files missing in '{tmp}/empty'", "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                 "Copy the four IDX files", "download=true"]),
    Case("val-split-leaves-no-training-data", dry=False, set={"data_module.args.val_split": 5000},
         expect=["val_split=5000 leaves no training data", "1500 training samples"]),
    Case("trainer-accelerator-unknown", dry=False, set={"trainer_params.accelerator": "bogus"},
         expect=["trainer_params {", "accelerator='bogus'", "Available names are"]),
    Case("trainer-precision-unknown", dry=False, set={"trainer_params.precision": "bogus"},
         expect=["trainer_params argument 'precision': expected one of", "got 'bogus'"]),
    Case("checkpoint-mode-unknown", dry=False, set={"checkpoint.mode": "maxx"},
               expect=["checkpoint", "maxx"]),
    Case("trainer-max-epochs-string", dry=False, set={"trainer_params.max_epochs": "abc"},
               expect=["trainer_params", "max_epochs", "abc"]),
    Case("trainer-limit-train-batches-negative", dry=False,
               set={"trainer_params.limit_train_batches": -1},
               expect=["trainer_params", "limit_train_batches", "-1"]),
    Case("save-dir-is-a-file", dry=False, save_exists=True, files={"save": "not a folder\n"},
               expect=["--save-dir '{tmp}/save' is a file, not a folder"]),
    Case("trainer-accelerator-unknown-dry-run", set={"trainer_params.accelerator": "bogus"},
               expect=["trainer_params {", "accelerator='bogus'"]),
    Case("trainer-accelerator-tpu", dry=False, set={"trainer_params.accelerator": "tpu"},
               expect=["trainer_params {", "tpu", "torch_xla"]),
    Case("trainer-devices-not-a-number", dry=False, set={"trainer_params.devices": "abc"},
               expect=["trainer_params {", "devices", "'abc'"]),
    Case("trainer-devices-zero", dry=False, set={"trainer_params.devices": 0},
               expect=["trainer_params {", "devices=0"]),
    Case("resume-from-corrupt-checkpoint", dry=False, files={"bad.ckpt": A_CKPT},
               args=["--resume", "bad.ckpt"], expect=["bad.ckpt"]),
    Case("checkpoint-monitor-typo", dry=False, set={"checkpoint.monitor": "val/accc"},
               expect=["val/accc", "val/acc"]),
    # ------------------------------------------------------------ training counted in steps
    Case("val-check-interval-zero", set={"trainer_params.val_check_interval": 0},
         expect=["trainer_params.val_check_interval must be an int >= 1 (validate every N training batches) "
                 "or a float in (0.0, 1.0] (a fraction of an epoch), got 0"]),
    Case("val-check-interval-fraction-above-one", set={"trainer_params.val_check_interval": 1.5},
         expect=["trainer_params.val_check_interval must be", "got 1.5"]),
    Case("val-check-interval-whole-float", set={"trainer_params.val_check_interval": 4.0},
         expect=["got 4.0; write 4 to validate every 4 batches"]),
    Case("val-check-interval-time-string", set={"trainer_params.val_check_interval": "00:00:05:00"},
         expect=["got '00:00:05:00'", "time-based intervals are not supported"]),
    Case("val-check-interval-bool", set={"trainer_params.val_check_interval": True},
         expect=["trainer_params.val_check_interval must be", "got True"]),
    Case("check-val-every-n-epoch-zero", set={"trainer_params.check_val_every_n_epoch": 0},
         expect=["trainer_params.check_val_every_n_epoch must be a positive number of epochs, or null", "got 0"]),
    Case("check-val-every-n-epoch-null-with-a-fraction",
         set={"trainer_params.check_val_every_n_epoch": None, "trainer_params.val_check_interval": 0.5},
         expect=["check_val_every_n_epoch=null counts val_check_interval in training batches across epochs",
                 "must be an int >= 1; got 0.5"]),
    Case("log-every-n-steps-zero", set={"trainer_params.log_every_n_steps": 0},
         expect=["trainer_params.log_every_n_steps must be a positive number of steps, got 0"]),
    Case("max-steps-below-minus-one", set={"trainer_params.max_steps": -5},
         expect=["trainer_params.max_steps must be a number of optimizer steps (>= 0), or -1 for no limit, got -5"]),
    Case("val-check-interval-longer-than-an-epoch", dry=False, set={"trainer_params.val_check_interval": 3},
         expect=["trainer_params.val_check_interval=3 is more than the 2 training batches of an epoch",
                 "check_val_every_n_epoch=null"]),
]

# The cases also run as real processes of train_pl.py.
SUBPROCESS_IDS = ["yaml-syntax-error", "optimizer-unknown-name", "mnist-root-dir-empty"]


def _case(param: Any) -> Case:
    return param.values[0] if hasattr(param, "values") else param


def _params(cases: list[Any]) -> list[Any]:
    return [c if hasattr(c, "values") else pytest.param(c, id=c.id) for c in cases]


# ------------------------------------------------------------------------- helpers


def set_path(cfg: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = cfg
    for part in parents:
        node = node.setdefault(part, {})
    if value is DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = copy.deepcopy(value)


def subst(value: Any, tmp: Path) -> Any:
    if isinstance(value, str):
        return value.replace("{tmp}", str(tmp))
    if isinstance(value, dict):
        return {k: subst(v, tmp) for k, v in value.items()}
    if isinstance(value, list):
        return [subst(v, tmp) for v in value]
    return value


def write(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


def materialize(case: Case, tmp: Path) -> list[str]:
    """Write the case's files into `tmp`; return its command line (without the program)."""
    for d in case.dirs:
        (tmp / d).mkdir(parents=True, exist_ok=True)
    for rel, content in case.files.items():
        write(tmp / rel, subst(content, tmp) if isinstance(content, str) else content)
    if case.text is not None:
        write(tmp / "cfg.yaml", case.text)
    else:
        cfg = copy.deepcopy(BASE)
        for dotted, value in case.set.items():
            set_path(cfg, dotted, subst(value, tmp))
        write(tmp / "cfg.yaml", yaml.safe_dump(cfg, sort_keys=False))
    importlib.invalidate_caches()  # user modules written just now must be found
    argv = ["--config", case.config] if case.config is not None else []
    argv += ["--save-dir", str(tmp / "save")]
    if case.dry:
        argv.append("--dry-run")
    return argv + [subst(a, tmp) for a in case.args]


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root with its kind, mtime and (for files) bytes."""
    if not root.exists():
        return {}
    if root.is_file():
        return {".": ("file", root.stat().st_mtime_ns, root.read_bytes())}
    out: dict[str, tuple] = {".": ("dir", root.stat().st_mtime_ns)}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(root))
        out[rel] = (("file", st.st_mtime_ns, path.read_bytes()) if path.is_file()
                    else ("dir" if path.is_dir() else "other", st.st_mtime_ns))
    return out


def check_result(case: Case, tmp: Path, code: Any, err: str, save_before: dict, cwd_before: dict) -> None:
    assert "Traceback" not in err, f"a traceback reached stderr:\n{err}"
    assert code == 2, f"exit status {code!r}, expected 2; stderr:\n{err}"
    assert f"{PROG}: error:" in err, err
    for phrase in case.expect:
        assert subst(phrase, tmp) in err, f"{subst(phrase, tmp)!r} not in stderr:\n{err}"
    save = tmp / "save"
    if case.save_exists:
        assert save_before, "the case should have made the save dir beforehand"
        assert snapshot(save) == save_before, f"the existing save dir changed: {sorted(snapshot(save))}"
    else:
        assert not save.exists(), f"the save dir was created: {sorted(snapshot(save))}"
    after = snapshot(tmp)
    assert sorted(set(after) - set(cwd_before)) == [], "files appeared in the working directory"
    assert after == cwd_before, "files in the working directory changed"


@pytest.fixture(scope="module")
def train() -> str:
    """The loop module train_pl.py hands to torchx.cli.main."""
    return "torchx.fit"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path as the working directory, with sys.path, sys.modules and the environment restored after."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # import_modules may add the working directory
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no __pycache__ in the working directory
    for var in ("TORCHX_DEBUG", "RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "PL_GLOBAL_SEED"):
        monkeypatch.setenv(var, "0")  # records the old value (or its absence) for teardown...
        monkeypatch.delenv(var)  # ...so that seed_everything's PL_GLOBAL_SEED does not leak either
    modules_before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - modules_before:
        if name.startswith("bad_input_"):
            del sys.modules[name]


# ------------------------------------------------------------------------- tests


def test_table_is_large_and_ids_unique():
    ids = [_case(c).id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 45


@pytest.mark.parametrize("case", _params(CASES))
def test_bad_input(case: Case, workdir: Path, train: Callable, capsys: pytest.CaptureFixture) -> None:
    argv = materialize(case, workdir)
    save_before, cwd_before = snapshot(workdir / "save"), snapshot(workdir)
    capsys.readouterr()
    try:
        code = cli.main(argv, PROG, train)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    except Exception:  # what a real process would print
        traceback.print_exc()
        code = 1
    err = capsys.readouterr().err
    check_result(case, workdir, code, err, save_before, cwd_before)


@pytest.mark.parametrize("case", [p for p in _params(CASES) if _case(p).id in SUBPROCESS_IDS])
def test_bad_input_real_process(case: Case, tmp_path: Path) -> None:
    argv = materialize(case, tmp_path)
    save_before, cwd_before = snapshot(tmp_path / "save"), snapshot(tmp_path)
    env = {k: v for k, v in os.environ.items()
           if k not in ("TORCHX_DEBUG", "RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "PL_GLOBAL_SEED")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    proc = subprocess.run([sys.executable, str(TRAIN_PL), *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    check_result(case, tmp_path, proc.returncode, proc.stderr, save_before, cwd_before)


def test_subprocess_cases_exist():
    assert {_case(c).id for c in CASES} >= set(SUBPROCESS_IDS)


# ------------------------------------------------------------------------- valid inputs (sanity)


def run_valid(argv: list[str], train: Callable, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(argv, PROG, train)
    out, err = capsys.readouterr()
    return code, out, err


def test_valid_config_dry_run_creates_nothing(workdir: Path, train: Callable, capsys: pytest.CaptureFixture) -> None:
    argv = materialize(Case("valid", expect=[]), workdir)
    before = snapshot(workdir)
    code, out, err = run_valid(argv, train, capsys)
    assert code == 0, err
    assert "Traceback" not in err
    assert "dry run: nothing was created" in out
    assert "optimizer     : Adam(lr=0.001" in out
    assert not (workdir / "save").exists()
    assert snapshot(workdir) == before


def test_valid_list_of_schedulers_dry_run(workdir: Path, train: Callable, capsys: pytest.CaptureFixture) -> None:
    case = Case("valid-sched-list", expect=[], set={"train_wrapper.args.sched_spec": [
        {"name": "StepLR", "args": {"step_size": 5}},
        {"name": "ExponentialLR", "args": {"gamma": 0.9}, "interval": "step"}]})
    argv = materialize(case, workdir)
    code, out, err = run_valid(argv, train, capsys)
    assert code == 0, err
    assert "lr_scheduler  : ExponentialLR every 1 step(s)" in out
    assert not (workdir / "save").exists()
