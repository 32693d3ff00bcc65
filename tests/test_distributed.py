"""Sharded training: torchrun with several processes (gloo, FSDP2) ends where one process does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lota.tasks.records import prepare_split
from tests.conftest import snakemake, tiny_workdir, write_records
from tests.test_train import random_mask

# 8 records in micro-batches of 3 over 1.125 epochs: 3, 3, 2, then 1, which leaves one of the
# two processes without an example of its own.
SETTINGS = ["--batch-size", "3", "--epochs", "1.125", "--lr", "1e-3", "--max-length", "128"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_model, gsm8k_dir, smol_tokenizer):
    root = tmp_path_factory.mktemp("sharded")
    records = prepare_split("gsm8k", "train", gsm8k_dir, smol_tokenizer, size=8, seed=0)
    mask = root / "mask.safetensors"
    random_mask(tiny_model, 0.7, mask)
    return {"model": tiny_model, "data": write_records(root / "train.jsonl", records), "mask": mask}


ONE_THREAD = os.environ | {"OMP_NUM_THREADS": "1"}


def train_command(inputs, out: Path, method: str, processes: int, *extra: str) -> list[str]:
    """`python -m lota.train --processes N`, which restarts itself under torchrun for N > 1."""
    mask = ["--mask", str(inputs["mask"])] if method == "lota" else []
    command = [sys.executable, "-m", "lota.train", "--processes", str(processes), "--method", method]
    command += ["--model", str(inputs["model"]), "--data", str(inputs["data"]), *mask, "--out", str(out)]
    return command + [*SETTINGS, *extra]


def train(inputs, out: Path, method: str, processes: int, *extra: str) -> Path:
    command = train_command(inputs, out, method, processes, *extra)
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=ONE_THREAD)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def read_run(out: Path) -> tuple[dict[str, torch.Tensor], list[dict], dict]:
    steps = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return load_file(out / "weights.safetensors"), steps, json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize(
    ("method", "processes", "extra", "atol"),
    [
        ("fft", 2, ["--precision", "fp32"], 1e-6),
        ("lota", 2, ["--precision", "fp32"], 1e-6),
        pytest.param("lora", 2, ["--precision", "fp32"], 1e-6, marks=pytest.mark.slow),
        # bf16 weights: fp32 masters of each shard are read from the checkpoint; bf16 compute on
        # different batch shapes rounds differently, so the tolerance is bf16's.
        pytest.param("lota", 2, ["--weights", "bf16"], 3e-3, marks=pytest.mark.slow),
        # 3 processes: uneven shards (16 rows), global clipping, and accumulation over 2 micro-batches.
        pytest.param(
            "lota", 3, ["--precision", "fp32", "--clip", "global", "--grad-accum", "2"], 1e-6, marks=pytest.mark.slow
        ),
    ],
)
def test_several_processes_end_with_the_weights_of_one(tmp_path, inputs, method, processes, extra, atol):
    single, single_steps, single_summary = read_run(train(inputs, tmp_path / "one", method, 1, *extra))
    sharded, sharded_steps, sharded_summary = read_run(train(inputs, tmp_path / "many", method, processes, *extra))

    assert sharded.keys() == single.keys()
    for name, tensor in single.items():
        assert sharded[name].dtype == tensor.dtype and sharded[name].shape == tensor.shape, name
        if tensor.dtype.is_floating_point:
            torch.testing.assert_close(sharded[name], tensor, atol=atol, rtol=0, msg=name)
        else:  # a sparse delta's indices: the same entries were trained
            assert torch.equal(sharded[name], tensor), name

    assert [s["tokens"] for s in sharded_steps] == [s["tokens"] for s in single_steps]
    losses = [s["loss"] for s in sharded_steps], [s["loss"] for s in single_steps]
    assert losses[0] == pytest.approx(losses[1], abs=1e-3)
    assert sharded_summary["processes"] == processes and not sharded_summary["updates_in_backward"]
    for key in ("trainable_params", "total_params", "steps", "tokens"):
        assert sharded_summary[key] == single_summary[key], key
    # The optimizer state is split between the processes, not repeated on each: together they hold
    # what one process does, plus a step counter per parameter of their own.
    assert single_summary["optimizer_state_bytes"] < sharded_summary["optimizer_state_bytes"]
    assert sharded_summary["optimizer_state_bytes"] < 1.02 * single_summary["optimizer_state_bytes"]


SHARDED = {"resources": {"train": {"mem_mb": 4000, "runtime": 30, "gpu": 0, "processes": 2}}}


@pytest.mark.slow
def test_the_workflow_trains_under_torchrun(tmp_path, tiny_model, gsm8k_dir):
    workdir = tiny_workdir(tmp_path, tiny_model, gsm8k_dir)
    done = snakemake(workdir, "--cores", "2", "work/runs/fft_gsm8k/summary.json", overrides=SHARDED)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((workdir / "work" / "runs" / "fft_gsm8k" / "summary.json").read_text())["processes"] == 2
    # The process count is a resource, not a parameter: with one process the run is up to date.
    plan = snakemake(workdir, "-n", "work/runs/fft_gsm8k/summary.json")
    assert plan.returncode == 0 and "Nothing to be done" in plan.stdout + plan.stderr, plan.stdout[-2000:]


@pytest.mark.slow
def test_a_killed_sharded_run_resumes_bit_identical(tmp_path, inputs):
    """Each process saves and resumes its own shards of the masters and optimizer state."""
    longer = ["--precision", "fp32", "--epochs", "6", "--checkpoint-every", "3"]  # 16 steps
    whole = train(inputs, tmp_path / "whole", "lota", 2, *longer)
    out, pointer = tmp_path / "killed", tmp_path / "killed.checkpoint" / "latest.json"
    command = train_command(inputs, out, "lota", 2, *longer)
    job = subprocess.Popen(command, env=ONE_THREAD, start_new_session=True, stderr=subprocess.DEVNULL)
    while not pointer.exists() and job.poll() is None:
        time.sleep(0.02)
    os.killpg(job.pid, signal.SIGKILL)  # torchrun, whose workers die with it
    job.wait()
    assert not out.exists()
    assert sorted(path.name for path in pointer.parent.glob("step-*/*.safetensors")) == [
        "rank-0.safetensors",
        "rank-1.safetensors",
    ]

    train(inputs, out, "lota", 2, *longer)
    summary = json.loads((out / "summary.json").read_text())
    assert 0 < summary["resumed_from_step"] < summary["steps"] and summary["processes"] == 2
    assert (out / "weights.safetensors").read_bytes() == (whole / "weights.safetensors").read_bytes()
    assert [step["loss"] for step in read_run(out)[1]] == [step["loss"] for step in read_run(whole)[1]]
