"""The LoRA baseline through PEFT: low-rank adapters on chosen modules of the base model.

A LoRA run's weights file holds only the adapter (PEFT's state dict, a few MB) with its rank,
alpha, dropout and target modules in the metadata; export rebuilds the same PEFT model on the
base, loads the adapter and merges it (W += alpha / rank * B @ A) with PEFT's own merge.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

from lota.core.distributed import whole
from lota.core.errors import UserError
from lota.core.io import LORA_ADAPTER_FORMAT, TensorReader, save_tensors
from lota.core.scope import TARGETS_KEY, resolve_scope


@dataclass(frozen=True)
class LoraSettings:
    rank: int
    alpha: float
    dropout: float
    targets: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise UserError(f"lora_rank must be >= 1, got {self.rank}")
        if not self.alpha > 0:
            raise UserError(f"lora_alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"lora_dropout must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise UserError("lora_targets must name at least one module")


def lora_targets(model: torch.nn.Module, targets: Iterable[str]) -> list[str]:
    """The module names adapters go on: `targets`, 'auto' standing for every projection of the model."""
    return resolve_scope(targets, {name: parameter.shape for name, parameter in model.named_parameters()}, TARGETS_KEY)


def add_lora(model: torch.nn.Module, settings: LoraSettings) -> PeftModel:
    """Wrap `model` with fresh adapters (B = 0, so the output starts as the base's); only they train."""
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=lora_targets(model, settings.targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as error:
        raise UserError(f"LoRA targets {list(settings.targets)}: {str(error).splitlines()[0]}") from None


def lora_adapter_tensors(model: PeftModel) -> dict[str, torch.Tensor]:
    """The adapter's fp32 tensors, gathered whole from every process when sharded (collective)."""
    state = get_peft_model_state_dict(model)
    return {name: whole(tensor.detach()).float().contiguous().cpu() for name, tensor in state.items()}


def save_lora_adapter(path: Path, tensors: dict[str, torch.Tensor], settings: LoraSettings) -> None:
    metadata = {"format": LORA_ADAPTER_FORMAT, "lora": json.dumps(asdict(settings))}
    save_tensors(path, tensors, metadata)


def is_lora_adapter(reader: TensorReader) -> bool:
    return reader.metadata.get("format") == LORA_ADAPTER_FORMAT


def merge_lora_adapter(model: torch.nn.Module, reader: TensorReader, source: Path) -> torch.nn.Module:
    """The base `model` with the adapter in `reader` merged into its weights."""
    try:
        fields = json.loads(reader.metadata["lora"])
        settings = LoraSettings(**{**fields, "targets": tuple(fields["targets"])})
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"LoRA adapter {source} has malformed metadata: {error}") from None
    peft_model = add_lora(model, settings)
    state = {name: reader.get(name) for name in reader.names()}
    try:
        result = set_peft_model_state_dict(peft_model, state)
    except RuntimeError as error:
        raise UserError(f"LoRA adapter {source} does not fit the model: {str(error).splitlines()[0]}") from None
    expected = set(get_peft_model_state_dict(peft_model))
    missing = sorted(expected - set(state))
    if result.unexpected_keys or missing:
        problem = f"unexpected {result.unexpected_keys[0]}" if result.unexpected_keys else f"missing {missing[0]}"
        raise UserError(f"LoRA adapter {source} does not fit the model: {problem}")
    return peft_model.merge_and_unload()
