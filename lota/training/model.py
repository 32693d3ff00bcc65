"""The model a run trains: the base model in the weight dtype, with activation checkpointing,
LoRA adapters, compiled and sharded decoder layers as the options ask."""

from __future__ import annotations

import torch

from lota.core import distributed
from lota.core.errors import UserError
from lota.core.modeling import load_model
from lota.deltas.lora import add_lora
from lota.pipeline.names import ADAPTER_METHODS
from lota.training.args import TrainArgs


def weight_dtype(args: TrainArgs) -> torch.dtype:
    return torch.bfloat16 if args.weights == "bf16" else torch.float32


def load_for_training(args: TrainArgs, on: torch.device) -> torch.nn.Module:
    """The base model in the weight dtype, with activation checkpointing and LoRA adapters if asked."""
    setting = f"train.{args.method}.attention"
    model = load_model(args.model, weight_dtype(args), args.trust_remote_code, on, args.attention, setting)
    return prepare_for_training(model, args, on)


def prepare_for_training(model: torch.nn.Module, args: TrainArgs, on: torch.device) -> torch.nn.Module:
    """A loaded model made ready to train: activation checkpointing, LoRA adapters, compiled and
    sharded decoder layers, as `args` ask."""
    model.config.use_cache = False
    if args.activation_checkpointing:
        # Non-reentrant: works with frozen inputs (LoRA, LoTA) and with the in-backward updates.
        # transformers 5.23 renamed gradient_checkpointing_enable; vLLM's environment has an older 5.x.
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is None:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if args.method in ADAPTER_METHODS:
        model = add_lora(model, args.lora_settings())
    if args.compile:
        for layer in decoder_layers(model, "to compile"):
            layer.compile()  # one compiled graph serves all layers of a model
    if distributed.is_sharded():
        distributed.shard_model(model, decoder_layers(model, "to shard"), on)
    model.train()
    return model


def decoder_layers(model: torch.nn.Module, purpose: str) -> list[torch.nn.Module]:
    layer_classes = set(getattr(model, "_no_split_modules", None) or [])
    layers = [module for module in model.modules() if type(module).__name__ in layer_classes]
    if not layers:
        raise UserError(f"{type(model).__name__} names no decoder layer class (_no_split_modules) {purpose}")
    return layers
