"""The forward pass over the response tokens, and the SFT loss on it (DPO's is in
lota.training.dpo, on the same forward pass)."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from peft import PeftModel

from lota.training.data import IGNORE_INDEX, first_target_column


def response_logits(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], trim_logits: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets): the logits of the positions that predict the labels from the first
    response column on, and those labels (a row's IGNORE_INDEX where it has no response token).

    With `trim_logits`, logits are computed only from the first position that predicts a
    response token on: the prompt costs no output-layer work or logit memory.
    """
    labels = batch["labels"]
    first = first_target_column(labels) if trim_logits else 1
    # Positions as an index tensor, not a count: indexing copies the kept hidden states into a
    # contiguous tensor, where a slice would leave them strided, and a strided input to a frozen
    # output layer makes matmul expand the weight over the batch (a copy of it per sequence).
    positions = torch.arange(first - 1, labels.shape[1], device=labels.device)
    extra = {"logits_to_keep": positions} if trim_logits else {}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **extra).logits
    return logits[:, :-1], labels[:, first:]


def response_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], trim_logits: bool) -> torch.Tensor:
    """Summed next-token cross-entropy over the response tokens (labels not IGNORE_INDEX)."""
    logits, targets = response_logits(model, batch, trim_logits)
    predictions = logits.reshape(-1, logits.shape[-1]).float()
    return F.cross_entropy(predictions, targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")


def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether the model's forward computes logits for chosen positions only (response_logits' trim)."""
    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    return "logits_to_keep" in inspect.signature(inner.forward).parameters
