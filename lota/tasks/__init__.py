"""The task registry: each task declares where its data comes from, how an example becomes a
(question, response, gold) triple, and how a completion is scored.

Adding a task is one small module that builds a `Task` and registers it here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lota.errors import UserError


@dataclass(frozen=True)
class Example:
    """One normalized example: the user's question, the target response and the gold answer."""

    question: str
    response: str
    gold: str


@dataclass(frozen=True)
class Task:
    name: str
    load: Callable[[str, Path | None], list[dict[str, Any]]]
    """Raw records of a split ('train' or 'test') from a local data folder, or the hub if None."""
    to_example: Callable[[dict[str, Any]], Example]
    score: Callable[[str, str], bool]
    """Whether a completion is correct given the gold answer."""


def _registry() -> dict[str, Task]:
    from lota.tasks import gsm8k

    return {task.name: task for task in (gsm8k.TASK,)}


def get_task(name: str) -> Task:
    tasks = _registry()
    if name not in tasks:
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join(sorted(tasks))}")
    return tasks[name]


def task_names() -> list[str]:
    return sorted(_registry())
