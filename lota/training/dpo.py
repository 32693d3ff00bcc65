"""Direct Preference Optimization (Rafailov et al. 2023): the loss and the log-probabilities it is
built from, as pure functions the training loop (lota.training.loop) calls.

DPO trains on pairs (prompt, chosen, rejected). With pi the policy and ref the reference model,
the loss of a pair is

    -log sigmoid(beta * ((log pi(chosen) - log pi(rejected)) - (log ref(chosen) - log ref(rejected))))

where log p(response) sums the log-probabilities of the response's tokens given the prompt
(eric-mitchell/direct-preference-optimization, trainers.preference_loss). The reference is the
model training starts from, so its log-probabilities are computed before the first step, for the
micro-batches training will run (reference_logprobs), and no second model is held in memory.

Records are JSONL {"prompt", "chosen", "rejected"} (lota.preference_data writes them); prompt
and responses are tokenized as SFT's (prompt, response) are (lota.training.data).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from lota.core import distributed
from lota.core.errors import UserError
from lota.training.data import IGNORE_INDEX, Example, collate, tokenize_responses
from lota.training.losses import accepts_logits_to_keep, response_logits

Pair = tuple[Example, Example]  # (chosen, rejected)


def tokenize_preferences(
    records: Sequence[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, max_length: int, source: Path
) -> list[Pair]:
    """(chosen, rejected) examples per record; a pair either side of which keeps no response
    token within max_length is dropped, as it would compare nothing."""
    return tokenize_responses(records, ("chosen", "rejected"), tokenizer, max_length, source)


def pair_batch(pairs: Sequence[Pair], pad_id: int) -> dict[str, torch.Tensor]:
    """One right-padded batch: the chosen sequences in rows 0..n-1, the rejected in rows n..2n-1,
    so that one forward pass serves both sides of every pair."""
    return collate([chosen for chosen, _ in pairs] + [rejected for _, rejected in pairs], pad_id)


def sequence_logprobs(model: torch.nn.Module, batch: dict[str, torch.Tensor], trim_logits: bool) -> torch.Tensor:
    """Per row, the sum of the log-probabilities of its response tokens (labels not IGNORE_INDEX), fp32.

    The forward pass is SFT's (lota.training.losses.response_logits, with its `trim_logits`).
    Only the positions that predict a response token are upcast to fp32, and each token's
    log-probability is its logit less the log-sum-exp of its row: the log-softmax at that one
    token, with no second vocabulary-wide tensor.
    """
    labels = batch["labels"]
    logits, targets = response_logits(model, batch, trim_logits)
    scored = targets != IGNORE_INDEX
    predictions = logits[scored].float()  # (response tokens, vocabulary)
    chosen_logits = predictions.gather(1, targets[scored].unsqueeze(1)).squeeze(1)
    token_logprobs = chosen_logits - predictions.logsumexp(-1)
    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(targets)[scored]
    sums = torch.zeros(labels.shape[0], dtype=torch.float32, device=token_logprobs.device)
    return sums.index_add(0, rows, token_logprobs)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
    reference_free: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-pair losses, chosen rewards, rejected rewards) from summed response log-probabilities.

    beta scales the implicit reward beta * log(pi / ref): the smaller, the further the policy
    may move from the reference. reference_free compares the policy's log-ratio with 0 (an
    implicit uniform reference); the rewards still use the reference, as in the reference
    implementation. Rewards are detached: they are reported, not trained on.
    """
    if not beta > 0:
        raise UserError(f"beta must be > 0, got {beta}")
    policy_ratio = policy_chosen - policy_rejected
    reference_ratio = 0 if reference_free else reference_chosen - reference_rejected
    losses = -F.logsigmoid(beta * (policy_ratio - reference_ratio))
    chosen_rewards = beta * (policy_chosen - reference_chosen).detach()
    rejected_rewards = beta * (policy_rejected - reference_rejected).detach()
    return losses, chosen_rewards, rejected_rewards


def reference_logprobs(
    model: torch.nn.Module,
    groups: Sequence[Sequence[Pair]],
    pad_id: int,
    on: torch.device,
    precision: str,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The starting model's summed response log-probabilities of each group's pairs, (chosen,
    rejected), each fp32 of len(group) on the CPU: one forward pass per group.

    The groups are the micro-batches training will run, padded as pair_batch pads them: under
    bf16 a row's log-probabilities shift with its batch's shape (by tenths of a nat over a
    response), so only the same batches make the first step's policy equal its reference and
    its loss exactly log 2. Computed with the model in eval mode (no dropout: the reference is
    a fixed function) and no autograd; the model's training mode is restored afterwards.
    """
    if precision not in ("bf16", "fp32"):
        raise UserError(f"precision must be bf16 or fp32, got {precision!r}")
    trim_logits = accepts_logits_to_keep(model)
    was_training = model.training
    model.eval()
    logprobs = []
    try:
        with torch.no_grad():
            for group in tqdm(groups, desc="reference log-probs", unit="batch", disable=not distributed.is_main()):
                batch = {key: value.to(on) for key, value in pair_batch(group, pad_id).items()}
                with torch.autocast(on.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    chosen, rejected = sequence_logprobs(model, batch, trim_logits).cpu().chunk(2)
                logprobs.append((chosen, rejected))
    finally:
        model.train(was_training)
    return logprobs
