"""Resumable training: a run stopped after a checkpoint and rerun ends bit-identical to one that was
never stopped, for every method and engine; checkpoints of another run are not resumed."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from lota.core.errors import UserError
from lota.tasks.records import prepare_split
from lota.training import checkpoint
from lota.training.args import TrainArgs
from lota.training.loop import train
from tests.conftest import snakemake, snakemake_process, tiny_workdir, write_records
from tests.test_train import random_mask, write_preference_records

# What differs between two equal runs: the clock, and how a run got there.
MEASURED = {"tokens_per_s", "step_s", "peak_memory_mb", "train_wall_s", "checkpoint_s"}
HOW = {"resumed_from_step", "checkpoints", "args"}


class Stopped(Exception):
    """Stands for the job being killed right after a checkpoint reached the disk."""


@pytest.fixture(scope="module")
def records(tmp_path_factory, gsm8k_dir, smol_tokenizer):
    found = prepare_split("gsm8k", "train", gsm8k_dir, smol_tokenizer, size=10, seed=0)
    return write_records(tmp_path_factory.mktemp("records") / "train.jsonl", found)


@pytest.fixture(scope="module")
def mask(tmp_path_factory, tiny_model):
    path = tmp_path_factory.mktemp("mask") / "mask.safetensors"
    random_mask(tiny_model, 0.9, path)
    return path


def timeless_log(run_dir):
    return [
        {key: value for key, value in json.loads(line).items() if key not in MEASURED}
        for line in (run_dir / "log.jsonl").read_text().splitlines()
    ]


def timeless_summary(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    return {key: value for key, value in summary.items() if key not in MEASURED | HOW}


def assert_same_run(ours, theirs):
    assert sorted(path.name for path in ours.iterdir()) == sorted(path.name for path in theirs.iterdir())
    for name in ("weights.safetensors", "adapter.safetensors", "mask.safetensors"):
        if (ours / name).exists():
            assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
    assert timeless_log(ours) == timeless_log(theirs)
    assert timeless_summary(ours) == timeless_summary(theirs)


def stop_after_checkpoint(monkeypatch, step):
    """Make the checkpoint after `step` the last thing the run does."""
    save = checkpoint.save

    def save_then_stop(directory, slots, progress, *rest):
        save(directory, slots, progress, *rest)
        if progress.step == step:
            raise Stopped

    monkeypatch.setattr(checkpoint, "save", save_then_stop)


@pytest.mark.parametrize(
    "settings",
    [
        {"method": "fft"},
        {"method": "fft", "optimizer": "rmsprop", "grad_accum": 2, "clip": "global", "warmup_steps": 3},
        {"method": "lota", "weights": "bf16"},
        {"method": "lota", "optimizer_in_backward": False, "weight_decay": 0.1},
        {"method": "lora", "lora_dropout": 0.1},  # dropout: the random generator's state must resume too
        {"method": "rosa"},
        # RoSA's mask built after the warm-up: before the checkpoint resumed from, and after it.
        {"method": "rosa", "mask_warmup_steps": 3, "mask_sparsity": 0.9, "mask_batches": 2},
        {"method": "rosa", "mask_warmup_steps": 6, "mask_sparsity": 0.9, "mask_batches": 2},
        # The reference log-probs of the steps still to run come from the starting model, not the checkpoint's.
        {"method": "lota", "loss": "dpo", "precision": "bf16"},
    ],
    ids=[
        "fft",
        "fft-rmsprop-accum-global-warmup",
        "lota-bf16-weights",
        "lota-after-backward",
        "lora-dropout",
        "rosa",
        "rosa-mask-before-resume",
        "rosa-mask-after-resume",
        "lota-dpo",
    ],
)
def test_a_resumed_run_ends_bit_identical(tmp_path, monkeypatch, tiny_model, records, mask, settings):
    if settings.get("loss") == "dpo":
        records = write_preference_records(records, tmp_path / "pairs.jsonl")
    base = TrainArgs(model=tiny_model, data=records, out=tmp_path / "whole", lr=1e-3, batch_size=2, epochs=2)
    given_mask = settings["method"] in ("lota", "rosa") and "mask_warmup_steps" not in settings
    base = replace(base, mask=mask if given_mask else None, **settings)
    train(base)
    interrupted = replace(base, out=tmp_path / "interrupted", checkpoint_every=2)
    with monkeypatch.context() as patch:
        stop_after_checkpoint(patch, step=4)
        with pytest.raises(Stopped):
            train(interrupted)
    assert not interrupted.out.exists()
    assert json.loads((tmp_path / "interrupted.checkpoint" / "latest.json").read_text())["step"] == 4

    summary, _ = train(interrupted)
    assert summary["resumed_from_step"] == 4 and summary["steps"] == 10 // base.grad_accum
    assert summary["checkpoints"] == (2 if base.grad_accum == 1 else 0)  # after steps 6 and 8 of 10; none of 5
    assert_same_run(interrupted.out, base.out)
    assert not (tmp_path / "interrupted.checkpoint").exists()  # a finished run leaves no checkpoint


def test_a_checkpoint_of_other_settings_or_inputs_is_not_resumed(tmp_path, monkeypatch, tiny_model, records, caplog):
    args = TrainArgs(model=tiny_model, data=records, out=tmp_path / "run", batch_size=2, checkpoint_every=2)
    with monkeypatch.context() as patch:
        stop_after_checkpoint(patch, step=2)
        with pytest.raises(Stopped):
            train(args)
    summary, _ = train(replace(args, lr=2e-5))
    assert summary["resumed_from_step"] == 0
    assert "argument lr differs" in caplog.text

    with monkeypatch.context() as patch:
        stop_after_checkpoint(patch, step=2)
        with pytest.raises(Stopped):
            train(replace(args, out=tmp_path / "second"))
    os.utime(records)  # the data file was rewritten: Snakemake would rerun the job from scratch
    summary, _ = train(replace(args, out=tmp_path / "second", threads=1))
    assert summary["resumed_from_step"] == 0
    assert f"input {records} differs" in caplog.text


def test_a_damaged_checkpoint_is_named(tmp_path, monkeypatch, tiny_model, records):
    args = TrainArgs(model=tiny_model, data=records, out=tmp_path / "run", batch_size=2, checkpoint_every=2)
    with monkeypatch.context() as patch:
        stop_after_checkpoint(patch, step=2)
        with pytest.raises(Stopped):
            train(args)
    state = tmp_path / "run.checkpoint" / "step-2" / "rank-0.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(UserError, match=r"cannot resume from .*step-2 .*delete .*run.checkpoint to start over"):
        train(args)
    assert not args.out.exists()


@pytest.mark.slow  # over a minute; the parametrized resumes above check bit-identity in-process
def test_a_training_process_killed_mid_run_resumes_bit_identical(tmp_path, tiny_model, records, mask):
    """SIGKILL, not an exception: whatever the process was doing when it died."""
    command = [sys.executable, "-m", "lota.train", "--model", str(tiny_model), "--data", str(records)]
    command += ["--method", "lota", "--mask", str(mask), "--batch-size", "1", "--epochs", "10", "--lr", "1e-3"]
    command += ["--checkpoint-every", "10", "--threads", "1"]

    started = time.perf_counter()
    whole = subprocess.run([*command, "--out", str(tmp_path / "whole")], capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]
    whole_s = time.perf_counter() - started

    out, pointer = tmp_path / "killed", tmp_path / "killed.checkpoint" / "latest.json"
    started = time.perf_counter()
    job = subprocess.Popen([*command, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not pointer.exists() and job.poll() is None:
        time.sleep(0.01)
    job.send_signal(signal.SIGKILL)
    job.wait()
    killed_s = time.perf_counter() - started
    assert not out.exists(), "the run finished before it could be killed: give it more steps"

    started = time.perf_counter()
    rerun = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    rerun_s = time.perf_counter() - started

    summary = json.loads((out / "summary.json").read_text())
    assert 0 < summary["resumed_from_step"] < summary["steps"] == 100
    assert_same_run(out, tmp_path / "whole")
    print(
        f"uninterrupted {whole_s:.1f} s; killed after {killed_s:.1f} s (checkpoint of step"
        f" {summary['resumed_from_step']}); resumed run {rerun_s:.1f} s"
    )


@pytest.mark.slow
def test_a_killed_workflow_resumes_training_where_it_stopped(tmp_path, tiny_model, gsm8k_dir):
    """Kill the training job mid-run, as a cluster does at a job's time limit; the same target again
    resumes the run from its checkpoint and ends as an uninterrupted workflow does. A checkpoint
    interval is not a parameter: changing it leaves finished runs up to date."""
    target = "work/runs/fft_gsm8k/summary.json"
    overrides = {
        "train": {"fft": {"batch_size": 1, "epochs": 8}},  # 64 steps of one record
        "resources": {"train": {"mem_mb": 4000, "runtime": 30, "gpu": 0, "checkpoint_every": 5}},
    }
    runs = {name: tiny_workdir(tmp_path / name, tiny_model, gsm8k_dir) for name in ("whole", "killed")}
    assert snakemake(runs["whole"], "--cores", "1", target, overrides=overrides).returncode == 0

    workdir = runs["killed"]
    pointer = workdir / "work" / "runs" / "fft_gsm8k.checkpoint" / "latest.json"
    workflow = snakemake_process(workdir, "--cores", "1", target, overrides=overrides)
    while not pointer.exists() and workflow.poll() is None:
        time.sleep(0.05)
    for pid in processes_running("lota.train", session=workflow.pid):
        os.kill(pid, signal.SIGKILL)
    assert workflow.wait() != 0 and not (workdir / target).exists()

    rerun = snakemake(workdir, "--cores", "1", target, overrides=overrides)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads((workdir / target).read_text())["resumed_from_step"] >= 5
    assert_same_run(workdir / "work" / "runs" / "fft_gsm8k", runs["whole"] / "work" / "runs" / "fft_gsm8k")

    plan = snakemake(workdir, "-n", target, overrides={"train": overrides["train"]})  # the default interval, 20
    assert plan.returncode == 0 and "Nothing to be done" in plan.stdout + plan.stderr, plan.stdout[-2000:]


def processes_running(module, session):
    """The processes of a session that run `python -m module`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.getsid(int(entry.name)) == session:
                if module.encode() in (entry / "cmdline").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
        except (ProcessLookupError, FileNotFoundError):
            continue
    return found
