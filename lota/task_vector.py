"""Stage task_vector: delta = finetuned - base, tensor by tensor.

The two models are read one tensor at a time, never whole; the deltas (one model's worth,
in float32) are collected and written as one safetensors file. The output holds a delta for
every tensor the fine-tuned weights file holds (the FFT run trains every parameter). A LoTA
run's weights are already a delta from the model it started from: its task vector is that
sparse delta written out dense, zero wherever the run's mask kept the weights frozen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from lota.core.cli import arg, existing_file, run_main
from lota.core.errors import UserError
from lota.core.io import TASK_VECTOR_FORMAT, WEIGHTS_FORMAT, TensorReader, save_tensors
from lota.core.modeling import open_checkpoint
from lota.deltas.sparse import apply_sparse_delta, is_sparse_delta, read_sparse_delta

log = logging.getLogger("lota.task_vector")


@dataclass
class TaskVectorArgs:
    base: Path = arg(help="base HF model directory")
    finetuned: Path = arg(help="fine-tuned weights: an FFT run's parameters, or a LoTA run's sparse delta from --base")
    out: Path = arg(help="output safetensors of deltas")


def task_vector(base: TensorReader, finetuned: TensorReader) -> dict[str, torch.Tensor]:
    deltas = {}
    for name in finetuned.names():
        if name not in base:
            raise UserError(f"fine-tuned tensor {name} is not in the base model")
        tuned, original = finetuned.get(name), base.get(name)
        if tuned.shape != original.shape:
            raise UserError(f"shape of {name} differs: fine-tuned {tuple(tuned.shape)}, base {tuple(original.shape)}")
        deltas[name] = tuned.float() - original.float()
    return deltas


def dense_delta(base: TensorReader, finetuned: TensorReader, source: Path) -> dict[str, torch.Tensor]:
    """A sparse delta as dense float32 tensors, checked against the base's names and shapes."""
    delta, shapes = read_sparse_delta(finetuned)
    zeros = {}
    for name in delta:
        if name not in base:
            raise UserError(f"sparse delta {source} has {name}, which the base model does not have")
        zeros[name] = torch.zeros(base.get(name).shape)
    apply_sparse_delta(zeros, delta, shapes, source)
    return zeros


def run(args: TaskVectorArgs) -> None:
    """Write finetuned - base for every fine-tuned tensor."""
    existing_file(args.finetuned, "fine-tuned weights")
    with open_checkpoint(args.base) as base, TensorReader([args.finetuned]) as finetuned:
        if is_sparse_delta(finetuned):
            deltas = dense_delta(base, finetuned, args.finetuned)
        else:
            finetuned.require_format(WEIGHTS_FORMAT, args.finetuned, "run's weights file (dense or sparse delta)")
            deltas = task_vector(base, finetuned)
    save_tensors(args.out, deltas, {"format": TASK_VECTOR_FORMAT})
    log.info("wrote %d deltas -> %s", len(deltas), args.out)


if __name__ == "__main__":
    run_main(TaskVectorArgs, run)
