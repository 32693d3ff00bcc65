"""Which entries of the model a run trains, and the engine (lota.training.optim) that updates them.

fft trains every parameter; lora the adapters PEFT added; lota the mask's entries of the base
weights; rosa both. Parameters no method trains get requires_grad False: no gradient at all.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftModel

from lota.core import distributed
from lota.core.errors import UserError
from lota.core.modeling import open_checkpoint
from lota.deltas.masks import load_mask
from lota.pipeline.names import ADAPTER_METHODS
from lota.training.args import TrainArgs
from lota.training.optim import ParameterUpdater, Slot, make_slots

Chosen = list[tuple[str, torch.nn.Parameter, torch.Tensor | None]]


def trainable_parameters(
    model: torch.nn.Module, method: str, mask_path: Path | None, masks: dict[str, torch.Tensor] | None = None
) -> Chosen:
    """(name, parameter, trainable flat indices of its local part, or None for all); others get
    requires_grad False. A masked parameter goes by its base model's name (as in the mask); the
    masks are read from `mask_path`, unless given as `masks` (boolean, by those names)."""
    named = dict(model.named_parameters())
    if method == "fft":
        return [(name, p, None) for name, p in named.items()]
    # PEFT has frozen everything but the adapters.
    adapters = [(name, p, None) for name, p in named.items() if p.requires_grad] if method in ADAPTER_METHODS else []
    if method == "lora":
        return adapters
    if masks is None:
        shapes = {name: p.shape for name, p in base_parameters(model).items()}
        masks = {} if mask_path is None else load_mask(mask_path, shapes)
    return adapters + masked_entries(model, masks)


def base_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The base model's weights by their names in its checkpoint; under PEFT, without the wrapper's
    prefix and `base_layer`, and without the adapters."""
    if not isinstance(model, PeftModel):
        return dict(model.named_parameters())
    return {
        name.replace(".base_layer.", "."): parameter
        for name, parameter in model.get_base_model().named_parameters()
        if ".lora_" not in name
    }


def masked_entries(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> Chosen:
    """A slot choice for each base weight with a trainable entry in `masks`; those weights get
    requires_grad, the other base weights none."""
    chosen = []
    for name, parameter in base_parameters(model).items():
        trained = name in masks and bool(masks[name].any())
        parameter.requires_grad_(trained)
        if trained:
            # A process's shard of a parameter may hold no trainable entry; it still takes part.
            local_mask = distributed.shard_like(masks[name], parameter)
            chosen.append((name, parameter, local_mask.flatten().nonzero().squeeze(1)))
    return chosen


class CheckpointValues:
    """fp32 values of the base model's tensors, read from its checkpoint one tensor at a time."""

    def __init__(self, model_dir: Path):
        self.model_dir = model_dir

    def __call__(self, name: str) -> torch.Tensor:
        with open_checkpoint(self.model_dir) as reader:
            if name not in reader:
                raise UserError(f"{name} is not in the checkpoint of {self.model_dir}; train with --weights fp32")
            return reader.get(name).float()


def make_updater(
    model: torch.nn.Module, args: TrainArgs, masks: dict[str, torch.Tensor] | None = None, from_weights: bool = False
) -> ParameterUpdater:
    """The engine that trains `args.method`'s entries. `masks` stand in for args.mask's file;
    `from_weights` takes the fp32 masters from the model's own weights, for a model that has no
    checkpoint (the benchmark's random ones, whose bf16 values are exact)."""
    chosen = trainable_parameters(model, args.method, args.mask, masks)
    in_backward = updates_in_backward(args)
    return ParameterUpdater(
        slots_of(chosen, args, from_weights), args.clip, args.max_grad_norm, in_backward=in_backward
    )


def slots_of(chosen: Chosen, args: TrainArgs, from_weights: bool = False) -> list[Slot]:
    parameters = {name: parameter for name, parameter, _ in chosen}
    fp32_values = (lambda name: parameters[name].detach().float()) if from_weights else CheckpointValues(args.model)
    return make_slots(chosen, args.optimizer, args.lr, args.weight_decay, fp32_values)


def updates_in_backward(args: TrainArgs) -> bool:
    """In-backward updates need each gradient final on arrival and clipped on its own, and an
    unsharded model (FSDP2 sets sharded gradients after the backward pass)."""
    return (
        args.optimizer_in_backward and args.grad_accum == 1 and args.clip != "global" and not distributed.is_sharded()
    )
