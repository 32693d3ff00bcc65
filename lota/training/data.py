"""Training data: records tokenized into (input ids, labels) with the prompt's labels ignored,
the seeded order of micro-batches and optimizer steps, and their right-padded collation."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from lota.core import distributed
from lota.core.errors import UserError
from lota.training.args import TrainArgs

log = logging.getLogger("lota.train")
IGNORE_INDEX = -100  # the label of a token no loss is computed on (the prompt's, padding)

Example = tuple[list[int], list[int]]  # input ids, labels
LENGTH_GROUP = 50  # micro-batches sorted by length together (transformers' LengthGroupedSampler's megabatch)


def tokenize_example(
    prompt: str, response: str, tokenizer: PreTrainedTokenizerBase, max_length: int, max_prompt_length: int = 0
) -> tuple[list[int], list[int]]:
    """(input ids, labels) with the prompt's labels ignored, truncated to max_length: at the end,
    or with `max_prompt_length` as the official code truncates (its tokenize_batch_element): a
    sequence over max_length keeps the prompt's first max_prompt_length tokens, and if it is
    still too long, the response's first max_length - max_prompt_length."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    response_ids = tokenizer(response, add_special_tokens=False).input_ids
    if max_prompt_length and len(prompt_ids) + len(response_ids) > max_length:
        prompt_ids = prompt_ids[:max_prompt_length]
        if len(prompt_ids) + len(response_ids) > max_length:
            response_ids = response_ids[: max_length - max_prompt_length]
    input_ids = (prompt_ids + response_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + response_ids)[:max_length]
    return input_ids, labels


def has_target(labels: Sequence[int]) -> bool:
    """Whether a sequence has a response token to learn (its first token is predicted by nothing)."""
    return any(label != IGNORE_INDEX for label in labels[1:])


def tokenize_responses(
    records: Sequence[dict[str, Any]],
    response_keys: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    source: Path,
    max_prompt_length: int = 0,
) -> list[tuple[Example, ...]]:
    """Per record, one example per response key (its prompt, then that response). A record any
    of whose responses keeps no token within max_length is dropped: it would teach, or compare,
    nothing."""
    keys = ["prompt", *response_keys]
    quoted = [f"'{key}'" for key in keys]
    fields = ", ".join(quoted[:-1]) + " and " + quoted[-1]
    kept = []
    for number, record in enumerate(records, start=1):
        if not all(isinstance(record.get(key), str) for key in keys):
            raise UserError(f"{source}: record {number} needs string fields {fields}")
        examples = tuple(
            tokenize_example(record["prompt"], record[key], tokenizer, max_length, max_prompt_length)
            for key in response_keys
        )
        if all(has_target(labels) for _, labels in examples):
            kept.append(examples)
    if not kept:
        of_each = "" if len(response_keys) == 1 else " of each of " + " and ".join(quoted[1:])
        raise UserError(f"{source}: no record keeps a response token{of_each} within max_length={max_length}")
    if len(kept) < len(records):
        log.warning(
            "%d of %d records dropped: a response keeps no token within max_length=%d",
            len(records) - len(kept),
            len(records),
            max_length,
        )
    return kept


def tokenize_records(
    records: Sequence[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    source: Path,
    max_prompt_length: int = 0,
) -> list[Example]:
    """SFT's (prompt, response) records as examples (truncated as tokenize_example says)."""
    chosen = tokenize_responses(records, ("response",), tokenizer, max_length, source, max_prompt_length)
    return [example for (example,) in chosen]


def collate(examples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch to its longest sequence."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, target) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(target)] = torch.tensor(target)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def micro_batches(
    n_examples: int, batch_size: int, epochs: float, seed: int, lengths: Sequence[int] | None = None
) -> Iterator[tuple[float, list[int]]]:
    """(fractional epoch, example indices) per micro-batch; each epoch is a fresh seeded shuffle.

    With the examples' `lengths`, micro-batches are grouped by length, as transformers'
    LengthGroupedSampler does: the epoch's shuffled order is cut into groups of LENGTH_GROUP
    micro-batches, each group is sorted by length before it is cut into micro-batches (so a
    micro-batch pads little), and the epoch's micro-batches are then shuffled.
    """
    total = math.ceil(epochs * n_examples)
    served, epoch = 0, 0
    while served < total:
        rng = random.Random(seed * 100_003 + epoch)
        order = list(range(n_examples))
        rng.shuffle(order)
        order = order[: total - served]
        if lengths is not None:
            span = LENGTH_GROUP * batch_size
            groups = [
                sorted(order[start : start + span], key=lambda i: -lengths[i]) for start in range(0, len(order), span)
            ]
            order = [i for group in groups for i in group]
        chunks = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        if lengths is not None:
            rng.shuffle(chunks)
        for chunk in chunks:
            served += len(chunk)
            yield served / n_examples, chunk
        epoch += 1


def optimizer_steps(lengths: Sequence[int], args: TrainArgs) -> list[list[tuple[float, list[int]]]]:
    """The micro-batches of each optimizer step over examples of `lengths` (grouped by length
    unless args say otherwise), at most max_steps of them."""
    grouping = lengths if args.group_by_length else None
    batches = list(micro_batches(len(lengths), args.batch_size, args.epochs, args.seed, grouping))
    steps = [batches[start : start + args.grad_accum] for start in range(0, len(batches), args.grad_accum)]
    return steps[: args.max_steps] if args.max_steps else steps


def process_share(examples: Sequence[Example], chunk: list[int]) -> list[Example]:
    """This process's examples of a micro-batch: every world_size-th one from its rank on.

    A process left without any (a micro-batch smaller than the process count) still runs one
    example with no target tokens, since every process takes part in each forward and backward.
    """
    share = [examples[i] for i in chunk[distributed.rank() :: distributed.world_size()]]
    if share:
        return share
    ids, _ = examples[chunk[0]]
    return [(ids, [IGNORE_INDEX] * len(ids))]


def response_token_count(labels: torch.Tensor) -> int:
    """The response tokens a batch's loss is over (a sequence's first token is predicted by nothing)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def response_sequence_count(labels: torch.Tensor) -> int:
    """The sequences of a batch that hold a response token (a stand-in example holds none)."""
    return int((labels[:, 1:] != IGNORE_INDEX).any(1).sum())


def first_target_column(labels: torch.Tensor) -> int:
    """The first column holding a response token of any row (never 0: nothing predicts it)."""
    columns = (labels[:, 1:] != IGNORE_INDEX).any(0).nonzero()
    return int(columns[0]) + 1 if columns.numel() else labels.shape[1]
