"""Scoring a run's samples: each item's verdict by the task's scorer (lota's or the official code's),
the accuracy with its 95% interval, and a combined task's mean over its subtasks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lota.core.cli import arg, task_definitions_arg
from lota.core.errors import UserError
from lota.tasks import Task, get_task
from lota.tasks.defined import parse_task_definitions


@dataclass(kw_only=True)
class ScoringArgs:
    """How the scoring stages read their tasks (the workflow's Plan.scoring_options)."""

    official_scoring: list[str] = arg(
        [], "tasks scored by the official LoTA code's scorer (it reads the prompt and the completion)"
    )
    task_definitions: str = task_definitions_arg()

    def get_task(self, name: str) -> Task:
        """A task by name: built in, or one the config defines (--task-definitions)."""
        return get_task(name, parse_task_definitions(self.task_definitions))


Z95 = 1.959963984540054  # the standard normal quantile of a two-sided 95% interval


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The 95% Wilson score interval of a binomial proportion."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def score_samples(task: Task, samples: list[dict[str, Any]], source: Path, official: bool = False) -> list[bool]:
    """Each sample's verdict by lota's scorer of the task, or by the official code's, which reads
    the prompt followed by the completion (it decodes the whole generated sequence)."""
    if task.score is None:
        raise UserError(f"task {task.name} has no built-in scorer: judge its samples ({source}) with AlpacaEval")
    if official and task.official_score is None:
        raise UserError(f"task {task.name} has no official scorer: score it with lota's")
    verdicts = []
    for number, sample in enumerate(samples, start=1):
        if not isinstance(sample.get("completion"), str) or "gold" not in sample:
            raise UserError(f"{source}: sample {number} needs a string 'completion' and a 'gold'")
        if official:
            if not isinstance(sample.get("prompt"), str):
                raise UserError(f"{source}: sample {number} needs a string 'prompt' for the official scorer")
            verdicts.append(task.official_score(sample["prompt"] + sample["completion"], str(sample["gold"])))
        else:
            verdicts.append(task.score(sample["completion"], str(sample["gold"])))
    return verdicts


def item_verdicts(samples: list[dict[str, Any]], verdicts: list[bool], source: Path) -> dict[str, int]:
    """Each test item's verdict (1 correct, 0 wrong) by its id: what paired comparisons of two
    runs on the same items read (lota.analysis.stats)."""
    items = {
        str(sample.get("id", number)): int(correct)
        for number, (sample, correct) in enumerate(zip(samples, verdicts, strict=True), start=1)
    }
    if len(items) < len(samples):
        raise UserError(f"{source}: sample ids repeat, so items cannot be paired across runs")
    return items


def proportion(correct: int, n: int) -> dict[str, Any]:
    low, high = wilson_interval(correct, n)
    return {"accuracy": correct / n, "correct": correct, "n": n, "ci95": [low, high]}


def subtask_scores(samples: list[dict[str, Any]], verdicts: list[bool]) -> dict[str, dict[str, Any]]:
    """Accuracy and interval per subtask (the samples' 'subtask' field), in order of appearance."""
    tallies: dict[str, list[int]] = {}
    for sample, correct in zip(samples, verdicts, strict=True):
        tally = tallies.setdefault(str(sample.get("subtask", "")), [0, 0])
        tally[0] += correct
        tally[1] += 1
    return {name: proportion(correct, n) for name, (correct, n) in tallies.items()}


def mean_of_subtasks(parts: dict[str, dict[str, Any]], z: float = Z95) -> dict[str, Any]:
    """The unweighted mean accuracy over subtasks with a 95% interval: mean +- z * sd, where the
    subtasks' variances add (independent samples). Each variance is the Agresti-Coull one,
    p~(1 - p~) / (n + z^2) with p~ = (correct + z^2 / 2) / (n + z^2), so a subtask at 0 or n
    correct still counts as uncertain. `correct` and `n` are the pooled totals."""
    mean = sum(part["accuracy"] for part in parts.values()) / len(parts)
    variance = 0.0
    for part in parts.values():
        shrunk = (part["correct"] + z * z / 2) / (part["n"] + z * z)
        variance += shrunk * (1 - shrunk) / (part["n"] + z * z)
    half = z * math.sqrt(variance) / len(parts)
    correct, n = sum(part["correct"] for part in parts.values()), sum(part["n"] for part in parts.values())
    return {"accuracy": mean, "correct": correct, "n": n, "ci95": [max(0.0, mean - half), min(1.0, mean + half)]}


def task_accuracy(
    task: Task, samples: list[dict[str, Any]], verdicts: list[bool], source: Path
) -> tuple[dict[str, Any], dict[str, dict[str, Any]] | None]:
    """(accuracy, correct, n, ci95) of scored samples, and each subtask's for a combined task,
    whose accuracy is the mean over its subtasks (all present but its optional parts)."""
    if not task.subtasks:
        return proportion(sum(verdicts), len(verdicts)), None
    subtasks = subtask_scores(samples, verdicts)
    for name in task.subtasks:
        if name not in subtasks and name not in task.optional_parts:
            raise UserError(f"{source}: no samples of subtask {name!r}, so no mean over {task.name}")
    for name in subtasks:
        if name not in task.subtasks:
            raise UserError(f"{source}: subtask {name!r} is not part of {task.name}")
    return mean_of_subtasks(subtasks), subtasks
