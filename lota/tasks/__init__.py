"""The task registry: each task declares where its data comes from, how a record becomes a
(question, response, gold) example, how a completion is scored, and its default lengths.

Adding a task is one small module that builds a `Task` and is listed in `_registry`; a task of
one's own data needs none: the config defines it (lota.tasks.defined).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lota.core.errors import UserError


@dataclass(frozen=True)
class Example:
    """One normalized example: the user's question, the target response and the gold answer.

    `subtask` names the part of a combined task (e.g. arc_easy within commonsense) the example
    comes from; evaluation reports accuracy per subtask.
    """

    question: str
    response: str
    gold: str
    subtask: str


@dataclass(frozen=True)
class Task:
    name: str
    load: Callable[[str, Path | None], list[dict[str, Any]]]
    """Raw records of a split ('train', 'valid' or 'test') from a local data folder, or the hub if None."""
    to_example: Callable[[dict[str, Any]], Example]
    score: Callable[[str, str], bool] | None
    """Whether a completion is correct given the gold answer; None when the task has no scorer
    of its own (instruction following, judged by AlpacaEval)."""
    max_length: int
    """Default training sequence length (prompt + response tokens)."""
    max_new_tokens: int
    """Default generation budget at evaluation."""
    splits: tuple[str, ...] = ("train", "test")
    """The splits the task has; one with no 'train' split is evaluation-only; without a 'valid'
    split, validation records are carved from the training ones."""
    subtasks: tuple[str, ...] = ()
    """Parts of a combined task; evaluation samples `eval_size` records from each."""
    optional_parts: tuple[str, ...] = ()
    """Subtasks (and data folders) scored only where their data is present."""
    folders: tuple[str, ...] = ()
    """Its folders within a local data folder, when not just the task's name."""
    official_score: Callable[[str, str], bool] | None = None
    """The official LoTA code's scorer (rlaif/eval_model_all.py), given the text the official code
    scores, which is the prompt followed by the completion (it decodes the whole generated
    sequence, prompt included), and the gold answer; None where the official code has none."""

    hub_datasets: tuple[str, ...] = ()
    """The hub datasets its records come from (a model card's `datasets`); none for a local-only task."""

    def data_folders(self) -> tuple[str, ...]:
        return self.folders or (self.name,)


def _registry() -> dict[str, Task]:
    from lota.tasks import alpaca, commonsense, gsm8k, mawps, sharegpt4

    tasks = (gsm8k.TASK, mawps.TASK, alpaca.TASK, sharegpt4.TASK, *commonsense.TASKS)
    return {task.name: task for task in tasks}


def get_task(name: str, definitions: Mapping[str, Mapping[str, Any]] | None = None) -> Task:
    """A built-in task, or one the config defines (`definitions`: config key tasks.<name>.define of
    each task that has one, as the stages' --task-definitions carries them)."""
    if definitions and name in definitions:
        from lota.tasks.defined import DefinedTask

        return DefinedTask(name, definitions[name]).task()
    tasks = _registry()
    if name not in tasks:
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join(sorted(tasks))}")
    return tasks[name]


def task_names() -> list[str]:
    return sorted(_registry())


def require_fields(record: dict[str, Any], fields: tuple[str, ...], what: str) -> list[Any]:
    """The record's values of `fields`, or a UserError naming the first one missing."""
    missing = [field for field in fields if field not in record]
    if missing:
        raise UserError(f"{what} record lacks the field {missing[0]!r}")
    return [record[field] for field in fields]


def read_json_records(path: Path, what: str) -> list[dict[str, Any]]:
    """A local data file holding a JSON list of objects, or a UserError naming the file."""
    from lota.core.io import read_json

    records = read_json(path, what)
    if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
        raise UserError(f"{what} {path} must hold a JSON list of objects")
    if not records:
        raise UserError(f"{what} is empty: {path}")
    return records


def with_input(instruction: str, extra: str | None) -> str:
    """An instruction followed by its input, when the record has one (Alpaca-style records)."""
    return f"{instruction}\n\n{extra}" if extra else instruction
