"""Stage continual: the result of a task sequence, e.g. results/cl/lotto_mawps-arc_easy_s90.json.

Stage k's model (stage 0: the base model) is scored on every task of the sequence, so the
result holds the whole accuracy matrix, each entry with its items' verdicts by sample id (items),
which paired comparisons of methods read. Forgetting of a task is its accuracy right after the
stage that trained it minus its accuracy after the last stage (positive: forgotten). Both
accuracies come from the same test items, so its 95% interval is the paired one of Agresti and
Min (2005): a Wald interval on the items that flipped, with half an item added to each cell.
For a combined task the subtasks' differences are averaged and their variances added.

With each stage's mask (the LoTA methods), the result also counts the entries every two
stages' masks both make trainable: zero for disjoint (LoTTO) masks. With the benchmark files of
the training jobs (each stage's training, and a LoTA method's calibration runs), it records the
wall time and peak memory of each, so methods compare by compute as well as by accuracy.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import torch

from lota.core.cli import arg, run_main
from lota.core.errors import UserError
from lota.core.io import read_json, read_jsonl, write_json
from lota.core.tracking import TrackingArgs, log_result
from lota.deltas.masks import load_masks_alike
from lota.evaluation.provenance import package_versions, parse_config_json, stage_costs, training_figures
from lota.evaluation.scoring import Z95, ScoringArgs, item_verdicts, score_samples, task_accuracy
from lota.pipeline.names import SEQUENCE_METHODS

log = logging.getLogger("lota.continual")


@dataclass
class ContinualArgs(TrackingArgs, ScoringArgs):
    out: Path = arg(help="output results JSON")
    tasks: list[str] = arg(help="the tasks in training order")
    samples: list[str] = arg(
        help="STAGE:TASK=PATH of the samples of every stage's model on every task; stage 0 is the base model"
    )
    run: str = arg("", "sequence run name, e.g. lotto_mawps-arc_easy_s90")
    method: str = arg("", f"the sequence's method: {', '.join(SEQUENCE_METHODS)}")
    sparsity: float | None = arg(None, "the LoTA masks' sparsity")
    lora_rank: int | None = arg(None, "the LoRA adapters' rank")
    train_summary: list[Path] = arg([], "summary.json of each stage's training, in stage order")
    mask: list[Path] = arg([], "each stage's mask, in stage order (LoTA methods), to count their overlaps")
    benchmark: list[str] = arg(
        [], "KEY=PATH of a benchmark TSV per training job (e.g. 2:calibrate, 2:train), for wall time and memory"
    )
    base_model: str = arg("", "the base model's source")
    config_json: str = arg("{}", "the config values used, as JSON")


Samples = list[dict[str, Any]]


def parse_samples(entries: list[str], tasks: list[str]) -> dict[tuple[int, str], Path]:
    """(stage, task) -> samples path, checked to cover stages 0..len(tasks) on every task."""
    paths = {}
    for entry in entries:
        key, separator, path = entry.partition("=")
        stage, colon, task = key.partition(":")
        if not separator or not colon or not stage.isdigit():
            raise UserError(f"--samples expects STAGE:TASK=PATH, got {entry!r}")
        if task not in tasks:
            raise UserError(f"--samples {entry!r}: task {task!r} is not in the sequence {'-'.join(tasks)}")
        paths[int(stage), task] = Path(path)
    for stage in range(len(tasks) + 1):
        for task in tasks:
            if (stage, task) not in paths:
                raise UserError(f"--samples names no samples of stage {stage} on task {task}")
    if len(paths) != (len(tasks) + 1) * len(tasks):
        raise UserError(f"--samples names stages beyond the {len(tasks)} of the sequence")
    return paths


Flips = tuple[int, int, int]  # items right before and wrong after, wrong before and right after, all items


def flips(before: list[bool], after: list[bool]) -> Flips:
    lost = sum(b and not a for b, a in zip(before, after, strict=True))
    gained = sum(a and not b for b, a in zip(before, after, strict=True))
    return lost, gained, len(before)


def mean_difference(parts: list[Flips], z: float = Z95) -> dict[str, Any]:
    """Accuracy before minus after, averaged over parts (subtasks) evaluated on the same items
    twice, with the Agresti-Min 95% interval: each part's difference with half an item added
    to every cell of its 2x2 table, their variances added."""
    difference = sum((lost - gained) / n for lost, gained, n in parts) / len(parts)
    centre = sum((lost - gained) / (n + 2) for lost, gained, n in parts) / len(parts)
    variance = 0.0
    for lost, gained, n in parts:
        b, c, total = lost + 0.5, gained + 0.5, n + 2
        variance += ((b + c) - (b - c) ** 2 / total) / total**2
    half = z * math.sqrt(variance) / len(parts)
    return {
        "difference": difference,
        "lost": sum(part[0] for part in parts),
        "gained": sum(part[1] for part in parts),
        "n": sum(part[2] for part in parts),
        "ci95": [max(-1.0, centre - half), min(1.0, centre + half)],
    }


def forgetting(samples: Samples, before: list[bool], after: list[bool], subtasks: tuple[str, ...]) -> dict[str, Any]:
    """How much accuracy dropped between two evaluations of the same samples' items; for a
    combined task the mean over its subtasks, each subtask's figures beside it."""
    groups: dict[str, tuple[list[bool], list[bool]]] = {}
    for sample, right_before, right_after in zip(samples, before, after, strict=True):
        group = groups.setdefault(str(sample.get("subtask", "")) if subtasks else "", ([], []))
        group[0].append(right_before)
        group[1].append(right_after)
    parts = {name: flips(*group) for name, group in groups.items()}
    result = mean_difference(list(parts.values()))
    if subtasks:
        result["subtasks"] = {name: mean_difference([part]) for name, part in parts.items()}
    return result


def check_same_items(first: Samples, second: Samples, first_path: Path, second_path: Path) -> None:
    """Paired figures need both evaluations on the same test items in the same order."""
    golds = [(s.get("gold"), s.get("subtask")) for s in first]
    if golds != [(s.get("gold"), s.get("subtask")) for s in second]:
        raise UserError(f"{first_path} and {second_path} are not samples of the same test items")


def mask_overlaps(paths: list[Path]) -> dict[str, int]:
    """Entries made trainable by both masks, for every two stages ('1-2': count)."""
    masks = load_masks_alike(paths)
    return {
        f"{i}-{j}": sum(int(torch.logical_and(mask, second[name]).sum()) for name, mask in first.items())
        for (i, first), (j, second) in combinations(enumerate(masks, start=1), 2)
    }


def continual_result(args: ContinualArgs) -> dict[str, Any]:
    tasks = args.tasks
    if len(tasks) < 2 or len(set(tasks)) != len(tasks):
        raise UserError(f"--tasks must name two or more distinct tasks, got {tasks}")
    stages = len(tasks)
    if len(args.train_summary) not in (0, stages):
        raise UserError(f"--train-summary names {len(args.train_summary)} files for {stages} stages")
    if len(args.mask) not in (0, stages):
        raise UserError(f"--mask names {len(args.mask)} files for {stages} stages")
    config = parse_config_json(args.config_json)
    paths = parse_samples(args.samples, tasks)

    scored: dict[tuple[int, str], tuple[Samples, list[bool]]] = {}
    for (stage, task_name), path in sorted(paths.items()):
        task = args.get_task(task_name)
        samples = read_jsonl(path, "samples")
        scored[stage, task_name] = samples, score_samples(task, samples, path, task_name in args.official_scoring)
        first_path = paths[0, task_name]
        check_same_items(scored[0, task_name][0], samples, first_path, path)

    summaries = [read_json(path, "training summary") for path in args.train_summary]
    matrix = []
    for stage in range(stages + 1):
        accuracy = {}
        for task_name in tasks:
            samples, verdicts = scored[stage, task_name]
            path = paths[stage, task_name]
            overall, subtasks = task_accuracy(args.get_task(task_name), samples, verdicts, path)
            items = item_verdicts(samples, verdicts, path)
            accuracy[task_name] = overall | ({"subtasks": subtasks} if subtasks else {}) | {"items": items}
        summary = summaries[stage - 1] if summaries and stage else None
        matrix.append(
            {
                "stage": stage,
                "trained_on": tasks[stage - 1] if stage else None,
                "accuracy": accuracy,
                "trainable_params": summary["trainable_params"] if summary else 0,
                "train": training_figures(summary),
            }
        )

    forgotten = {}
    for stage, task_name in enumerate(tasks[:-1], start=1):
        own, last = scored[stage, task_name], scored[stages, task_name]
        forgotten[task_name] = forgetting(own[0], own[1], last[1], args.get_task(task_name).subtasks) | {
            "after_own_stage": matrix[stage]["accuracy"][task_name]["accuracy"],
            "after_last_stage": matrix[stages]["accuracy"][task_name]["accuracy"],
        }
    final = [matrix[stages]["accuracy"][task_name]["accuracy"] for task_name in tasks]
    result = {
        "run": args.run,
        "method": args.method,
        "tasks": tasks,
        "sparsity": args.sparsity,
        "lora_rank": args.lora_rank,
        "stages": matrix,
        "forgetting": forgotten,
        "final_mean_accuracy": sum(final) / len(final),
        "mask_overlap": mask_overlaps(args.mask) if args.mask else None,
        "training_jobs": stage_costs(args.benchmark),
        "base_model": args.base_model,
        "generation_backend": scored[stages, tasks[0]][0][0].get("backend"),
        "config": config,
        "versions": package_versions(),
    }
    write_json(args.out, result)
    log_result(args, args.out, result)
    for task_name, drop in forgotten.items():
        log.info(
            "%s: %.4f after its stage, %.4f after the last: forgetting %.4f, 95%% CI [%.4f, %.4f]",
            task_name,
            drop["after_own_stage"],
            drop["after_last_stage"],
            drop["difference"],
            *drop["ci95"],
        )
    return result


def run(args: ContinualArgs) -> None:
    """Score every stage of a task sequence on every task and write its forgetting."""
    continual_result(args)


if __name__ == "__main__":
    run_main(ContinualArgs, run)
