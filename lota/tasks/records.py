"""A task's splits as normalized records, deterministic subsets by seed (what the prepare_data stage
writes, lota.prepare_data).

The validation records are a seeded subset of the task's own validation split, or, for a task
without one, carved from its training records before the training subset is drawn, so that no
seed's training subset holds a validation record. Evaluation and validation records depend on
the seed only (every replicate is scored on the same items); the training subset and its order on
the train seed, a replicate's own seed.

Each record is {"id", "prompt", "response", "gold", "subtask"}: `prompt` is the full text fed
to the model (the tokenizer's chat template with a generation prompt, when it has one),
`response` the target text ending with the end-of-sequence token, `gold` the answer a scorer
compares, `subtask` the dataset within a combined task (else the task's name).
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from lota.core.errors import UserError
from lota.tasks import Example, Task, get_task
from lota.tasks.formats import format_prompt, format_target

DATA_DIR_ENV = "LOTA_DATA_DIR"


def resolve_data_dir(data_dir: Path | None) -> Path | None:
    """The local data folder: the argument, else $LOTA_DATA_DIR, else None (the hub)."""
    chosen = data_dir or (Path(os.environ[DATA_DIR_ENV]) if os.environ.get(DATA_DIR_ENV) else None)
    if chosen is not None and not chosen.is_dir():
        raise UserError(f"data folder not found: {chosen}")
    return chosen


def seeded_subset(items: list[Any], size: int, seed: int) -> list[Any]:
    """`size` items chosen by a seeded shuffle (all of them, shuffled, when size is 0 or larger)."""
    if size < 0:
        raise UserError(f"subset size must be >= 0, got {size}")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [items[i] for i in order[: size or len(items)]]


@dataclass(frozen=True)
class TextFormat:
    """How examples become records: the prompt and target formats (lota.tasks.formats)."""

    prompt: str = "chat"
    target: str = "lota"
    require_chat_template: bool = False


def to_record(
    index: int, example: Example, tokenizer: PreTrainedTokenizerBase, text: TextFormat, training: bool = False
) -> dict:
    """A normalized record; `training`: a training record's prompt (the official Alpaca format
    indents its training prompts otherwise than those it scores)."""
    return {
        "id": index,
        "prompt": format_prompt(example.question, tokenizer, text.prompt, text.require_chat_template, training),
        "response": format_target(example.response, text.target) + tokenizer.eos_token,
        "gold": example.gold,
        "subtask": example.subtask,
    }


def prepare_split(
    task_name: str,
    split: str,
    data_dir: Path | None,
    tokenizer: PreTrainedTokenizerBase,
    size: int,
    seed: int,
    text: TextFormat = TextFormat(),
    subset: str = "random",
    definitions: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """A split's records; none for a split the task lacks. `size` records are a seeded random
    subset, or the first ones (`subset` first); a combined task's test split takes `size` records
    from each of its subtasks, so each subtask's accuracy rests on as many; `definitions`: the
    config's own tasks (lota.tasks.get_task)."""
    task = get_task(task_name, definitions)
    if split not in task.splits:
        return []
    examples = load_examples(task, split, data_dir)
    if split == "test" and task.subtasks:
        groups = [[item for item in examples if item[1].subtask == subtask] for subtask in task.subtasks]
    else:
        groups = [examples]
    if subset == "first":
        chosen = [item for group in groups for item in group[: size or len(group)]]
    else:
        chosen = [item for group in groups for item in seeded_subset(group, size, seed)]
    return [to_record(index, example, tokenizer, text, split == "train") for index, example in chosen]


def training_splits(
    task_name: str,
    data_dir: Path | None,
    train_size: int,
    valid_size: int,
    seed: int,
    train_seed: int,
    definitions: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[list[tuple[int, Example]], list[tuple[int, Example]]]:
    """The (index, example) pairs of the training subset and the validation records, disjoint:
    validation is a `seed` subset of the task's validation split, else of its training records,
    which are then left out of the `train_seed` training subset."""
    task = get_task(task_name, definitions)
    if "train" not in task.splits:
        return [], []
    train = load_examples(task, "train", data_dir)
    if "valid" in task.splits:
        valid = seeded_subset(load_examples(task, "valid", data_dir), valid_size, seed) if valid_size else []
    else:
        valid = seeded_subset(train, valid_size, seed) if valid_size else []
        carved = {index for index, _ in valid}
        train = [item for item in train if item[0] not in carved]
        if not train:
            raise UserError(f"task {task_name}: valid_size {valid_size} leaves no training records; make it smaller")
    return seeded_subset(train, train_size, train_seed), valid


def load_examples(task: Task, split: str, data_dir: Path | None) -> list[tuple[int, Example]]:
    return [(index, task.to_example(record)) for index, record in enumerate(task.load(split, data_dir))]
