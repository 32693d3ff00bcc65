"""Stage continual: the result of a task sequence, e.g. results/cl/lotto_mawps-arc_easy_s90.json.

Stage k's model (stage 0: the base model) is scored on every task of the sequence, so the
result holds the whole accuracy matrix, each entry with its items' verdicts by sample id (items),
which paired comparisons of methods read; and each earlier task's forgetting with its paired
interval (lota.evaluation.forgetting).

With each stage's mask (the LoTA methods), the result also counts the entries every two
stages' masks both make trainable: zero for disjoint (LoTTO) masks. With the benchmark files of
the training jobs (each stage's training, and a LoTA method's calibration runs), it records the
wall time and peak memory of each, so methods compare by compute as well as by accuracy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lota.core.cli import arg, run_main
from lota.core.errors import UserError
from lota.core.io import read_json, read_jsonl, write_json
from lota.core.tracking import TrackingArgs, log_result
from lota.evaluation.forgetting import Samples, check_same_items, forgetting, mask_overlaps
from lota.evaluation.provenance import package_versions, parse_config_json, stage_costs, training_figures
from lota.evaluation.scoring import ScoringArgs, item_verdicts, score_samples, task_accuracy
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
