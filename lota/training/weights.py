"""What a run leaves behind and resumes from: the trained weights in each method's format, and
the arguments and inputs a checkpoint (lota.training.checkpoint) must match to be resumed."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from lota.core import distributed
from lota.core.io import WEIGHTS_FORMAT, save_tensors
from lota.core.modeling import open_checkpoint
from lota.core.tracking import TRACKING_FIELDS
from lota.deltas.lora import lora_adapter_tensors, save_lora_adapter
from lota.deltas.sparse import save_sparse_delta
from lota.pipeline.names import ADAPTER_METHODS, MASKED_METHODS
from lota.training.args import TrainArgs
from lota.training.optim import ParameterUpdater, Slot


def save_weights(path: Path, args: TrainArgs, model: torch.nn.Module, updater: ParameterUpdater) -> None:
    """fft: every parameter; lota: the sparse delta of the trained entries; lora: the adapter;
    rosa: the sparse delta, and the adapter beside it (adapter.safetensors).

    Every process takes part (sharded tensors are gathered one at a time); the main one writes.
    """
    main = distributed.is_main()
    if args.method in ADAPTER_METHODS:
        tensors = lora_adapter_tensors(model)
        if main:
            adapter_path = path.with_name("adapter.safetensors") if args.method == "rosa" else path
            save_lora_adapter(adapter_path, tensors, args.lora_settings())
    if args.method == "fft":
        tensors = {}
        for slot in updater.slots:
            full = distributed.gather_full(slot.master.detach(), slot.parameter)
            if main:
                tensors[slot.name] = full.contiguous().cpu()
        if main:
            save_tensors(path, tensors, {"format": WEIGHTS_FORMAT})
    if args.method in MASKED_METHODS:
        delta = {}
        with open_checkpoint(args.model) as base:
            for slot in (slot for slot in updater.slots if slot.indices is not None):
                indices, values = gather_trained_entries(slot)
                if main:
                    delta[slot.name] = (indices, values - base.get(slot.name).view(-1)[indices])
        if main:
            shapes = {slot.name: slot.parameter.shape for slot in updater.slots if slot.indices is not None}
            save_sparse_delta(path, delta, shapes)


def gather_trained_entries(slot: Slot) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat indices in the whole parameter, fp32 values) of a masked slot's trained entries."""
    if not distributed.is_sharded():
        return slot.indices.cpu(), slot.master.detach().cpu()
    trained = torch.zeros(slot.values.numel(), dtype=torch.uint8, device=slot.master.device)
    trained[slot.indices] = 1
    values = torch.zeros(slot.values.numel(), dtype=torch.float32, device=slot.master.device)
    values[slot.indices] = slot.master.detach()
    trained = distributed.gather_full(trained.view(slot.values.shape), slot.parameter).view(-1).cpu()
    values = distributed.gather_full(values.view(slot.values.shape), slot.parameter).view(-1).cpu()
    indices = trained.nonzero().squeeze(1)
    return indices, values[indices]


def resume_settings(args: TrainArgs) -> dict[str, Any]:
    """The arguments a checkpoint must have been saved under to be resumed: all but those that
    change only how the run goes (threads, process count, checkpointing, trackers), as JSON values."""
    ignored = {"threads", "processes", "checkpoint_every", "checkpoint_dir", *TRACKING_FIELDS}
    return {key: value for key, value in json_arguments(args).items() if key not in ignored}


def json_arguments(args: TrainArgs) -> dict[str, Any]:
    return {key: str(value) if isinstance(value, Path) else value for key, value in dataclasses.asdict(args).items()}


def run_inputs(args: TrainArgs) -> list[Path]:
    """Every file the run reads: the base model directory's files, the data, the mask."""
    model_files = sorted(path for path in Path(args.model).iterdir() if path.is_file())
    return [*model_files, args.data, *([args.mask] if args.mask else [])]
