"""The stage CLIs: bad input is one line on stderr, exit status 1, and no output file."""

import subprocess
import sys

import torch
from safetensors.torch import save_file

from lota.core.io import TASK_VECTOR_FORMAT
from lota.tasks import task_names


def run_stage(module, *arguments):
    return subprocess.run([sys.executable, "-m", module, *arguments], capture_output=True, text=True, timeout=300)


def test_sparsity_out_of_range(tmp_path):
    save_file(
        {"m.layers.0.q_proj.weight": torch.randn(4, 4)},
        str(tmp_path / "tv.safetensors"),
        {"format": TASK_VECTOR_FORMAT},
    )
    done = run_stage(
        "lota.extract_mask",
        "--task-vector",
        str(tmp_path / "tv.safetensors"),
        "--out",
        str(tmp_path / "mask.safetensors"),
        "--sparsity",
        "1.0",
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "error: sparsity must be in [0.0, 1.0), got 1.0"
    assert not (tmp_path / "mask.safetensors").exists()


def test_base_model_that_cannot_be_found(tmp_path):
    done = run_stage("lota.base_model", "--source", str(tmp_path / "missing"), "--out", str(tmp_path / "base"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: base model not found:")
    assert not (tmp_path / "base").exists()


def test_unknown_task(tmp_path, tiny_model):
    done = run_stage(
        "lota.prepare_data",
        "--task",
        "nope",
        "--tokenizer",
        str(tiny_model),
        "--train-out",
        str(tmp_path / "t.jsonl"),
        "--eval-out",
        str(tmp_path / "e.jsonl"),
    )
    assert done.returncode == 1
    known = ", ".join(task_names())
    assert done.stderr.strip().splitlines()[-1] == f"error: unknown task 'nope'; known tasks: {known}"


def test_corrupt_mask_file(tmp_path, tiny_model):
    (tmp_path / "mask.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "data.jsonl").write_text('{"prompt": "a", "response": "b"}\n')
    done = run_stage(
        "lota.train",
        "--method",
        "lota",
        "--mask",
        str(tmp_path / "mask.safetensors"),
        "--model",
        str(tiny_model),
        "--data",
        str(tmp_path / "data.jsonl"),
        "--out",
        str(tmp_path / "run"),
    )
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: cannot read safetensors file {tmp_path / 'mask.safetensors'}")
    )
    assert not (tmp_path / "run").exists()
