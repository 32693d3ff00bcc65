"""Gradient scores of a model's weights over calibration batches, for masks: the fisher stage's
scores of the base model, and RoSA's mask built mid-run after the adapters' warm-up.

`mean_squared` accumulates each entry's squared gradient over the batches (the diagonal of the
empirical Fisher), `mean` averages the gradients themselves (a mask ranks its magnitude). Each
batch's loss is the mean cross-entropy over its response tokens, as in training, so the scores
do not depend on how long the responses are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tqdm import tqdm

from lota.core.scope import in_scope, resolve_scope
from lota.deltas.masks import select_mask
from lota.pipeline.names import FISHER_KINDS
from lota.training.args import TrainArgs
from lota.training.data import Example, collate, micro_batches, response_token_count
from lota.training.losses import response_loss
from lota.training.trainable import base_parameters


def gradient_scores(
    model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], covered: dict[str, torch.nn.Parameter], kind: str
) -> dict[str, torch.Tensor]:
    """Per covered weight (by the name it is scored under), the mean over `batches` of its gradient
    (kind mean) or squared gradient. Only the covered weights' gradients are computed, and no
    parameter's .grad is touched: a training run can score its weights mid-run."""
    requires_grad = {name: parameter.requires_grad for name, parameter in covered.items()}
    sums = {name: torch.zeros_like(parameter, dtype=torch.float32) for name, parameter in covered.items()}
    on = next(iter(covered.values())).device
    try:
        for parameter in covered.values():
            parameter.requires_grad_(True)
        for batch in tqdm(batches, desc="gradients", unit="batch"):
            batch = {key: value.to(on) for key, value in batch.items()}
            loss = response_loss(model, batch, trim_logits=False) / response_token_count(batch["labels"])
            grads = torch.autograd.grad(loss, list(covered.values()))
            for (name, _), grad in zip(covered.items(), grads, strict=True):
                sums[name] += grad.float().square() if kind == "mean_squared" else grad.float()
    finally:
        for name, parameter in covered.items():
            parameter.requires_grad_(requires_grad[name])
    return {name: (total / len(batches)).cpu() for name, total in sums.items()}


def covered_weights(named: dict[str, torch.nn.Parameter], scope: list[str]) -> dict[str, torch.nn.Parameter]:
    """The weights of `named` (by checkpoint name) in the mask scope; a UserError if none is."""
    names = resolve_scope(scope, {name: parameter.shape for name, parameter in named.items()})
    return {name: parameter for name, parameter in named.items() if in_scope(name, names)}


def calibration_batches(
    examples: list[tuple[list[int], list[int]]], count: int, batch_size: int, seed: int, pad_id: int
) -> list[dict[str, torch.Tensor]]:
    """`count` batches in the seeded training order, with as many passes over the data as they need."""
    epochs = count * batch_size / len(examples)
    chunks = [chunk for _, chunk in micro_batches(len(examples), batch_size, epochs, seed)]
    return [collate([examples[i] for i in chunk], pad_id) for chunk in chunks[:count]]


def warmup_mask(
    model: torch.nn.Module, args: TrainArgs, examples: Sequence[Example], pad_id: int, on: torch.device
) -> dict[str, torch.Tensor]:
    """RoSA's schedule: after the adapters' warm-up, the mask ranks the gradients of the model as it
    now is (base weights plus adapters) over calibration batches in the seeded training order."""
    batches = calibration_batches(list(examples), args.mask_batches, args.batch_size, args.seed, pad_id)
    covered = covered_weights(base_parameters(model), args.mask_scope)
    with torch.autocast(on.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
        scores = gradient_scores(model, batches, covered, args.mask_kind)
    return select_mask(scores, args.mask_sparsity, args.mask_granularity)


def warmup_mask_info(args: TrainArgs, masks: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The warm-up mask's metadata, as extract_mask writes a mask's: its strategy is the gradient
    strategy of its score kind."""
    strategy = next(strategy for strategy, kind in FISHER_KINDS.items() if kind == args.mask_kind)
    return {
        "strategy": strategy,
        "after_step": args.mask_warmup_steps,
        "sparsity": args.mask_sparsity,
        "granularity": args.mask_granularity,
        "scope": sorted({name.split(".")[-2] for name in masks}),  # "auto" as the projections it stood for
        "excluded": [],
    }
