"""Stage evaluate_merge: a merged model's results, e.g. results/merge/ties_mawps+arc_easy.json.

The merged model's samples on every task it merges are scored (accuracy with its 95% interval,
as lota.evaluate scores a run), and set beside the figures it is compared with: each task's
single-task model that went into the merge, and the base model. `retained` is the merged
model's accuracy on a task over that task's single-task model's, the usual measure of what a
merge keeps. The merge's own figures (wall time, peak memory, entries changed, sign conflicts)
come from its merge.json and the workflow's benchmark file.
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
from lota.evaluation.provenance import package_versions, parse_config_json, stage_costs
from lota.evaluation.scoring import ScoringArgs, item_verdicts, score_samples, task_accuracy
from lota.pipeline.names import MERGE_METHODS

log = logging.getLogger("lota.evaluate_merge")
MERGE_FIGURES = ("tensors", "entries", "changed_entries", "sign_conflicts", "thresholds", "wall_s", "peak_rss_mb")


@dataclass
class EvaluateMergeArgs(TrackingArgs, ScoringArgs):
    out: Path = arg(help="output results JSON")
    samples: list[str] = arg(help="TASK=PATH of the merged model's samples on every task it merges")
    merge_summary: Path = arg(help="the merge's merge.json (lota.merge writes it into the merged model's folder)")
    single_task: list[Path] = arg([], "results JSON of each task's single-task run that was merged")
    base_results: list[Path] = arg([], "results JSON of the base model on each task")
    run: str = arg("", "merge name, e.g. ties_mawps+arc_easy")
    method: str = arg("", f"the merge method: {', '.join(MERGE_METHODS)}")
    benchmark: list[str] = arg([], "STAGE=PATH of a benchmark TSV (e.g. merge=...), for wall time and memory")
    base_model: str = arg("", "the base model's source")
    config_json: str = arg("{}", "the config values used, as JSON")


def parse_task_paths(entries: list[str]) -> dict[str, Path]:
    paths = {}
    for entry in entries:
        task, separator, path = entry.partition("=")
        if not separator or not task:
            raise UserError(f"--samples expects TASK=PATH, got {entry!r}")
        if task in paths:
            raise UserError(f"--samples names task {task!r} twice")
        paths[task] = Path(path)
    if len(paths) < 2:
        raise UserError(f"--samples names {len(paths)} task(s): a merge covers two or more")
    return paths


def by_task(paths: list[Path], tasks: list[str], what: str) -> dict[str, dict[str, Any]]:
    """Results files keyed by their task, each task of the merge exactly once."""
    results = {}
    for path in paths:
        result = read_json(path, f"{what} results")
        task = result.get("task")
        if task not in tasks or task in results or "accuracy" not in result:
            raise UserError(f"{what} results {path} are not one result per merged task ({', '.join(tasks)})")
        results[task] = {key: result.get(key) for key in ("run", "accuracy", "ci95", "n")}
    if results and set(results) != set(tasks):
        raise UserError(f"{what} results lack task {sorted(set(tasks) - set(results))[0]!r}")
    return results


def evaluate_merge(args: EvaluateMergeArgs) -> dict[str, Any]:
    config = parse_config_json(args.config_json)
    paths = parse_task_paths(args.samples)
    tasks = list(paths)
    accuracy = {}
    backend = None
    for task_name, path in paths.items():
        task = args.get_task(task_name)
        samples = read_jsonl(path, "samples")
        verdicts = score_samples(task, samples, path, task_name in args.official_scoring)
        overall, subtasks = task_accuracy(task, samples, verdicts, path)
        items = item_verdicts(samples, verdicts, path)
        accuracy[task_name] = overall | ({"subtasks": subtasks} if subtasks else {}) | {"items": items}
        backend = samples[0].get("backend")
    single = by_task(args.single_task, tasks, "single-task")
    summary = read_json(args.merge_summary, "merge summary")
    result = {
        "run": args.run,
        "method": args.method,
        "tasks": tasks,
        "settings": summary.get("settings"),
        "accuracy": accuracy,
        "mean_accuracy": sum(part["accuracy"] for part in accuracy.values()) / len(accuracy),
        "single_task": single,
        "retained": {
            task: accuracy[task]["accuracy"] / single[task]["accuracy"] if single[task]["accuracy"] else None
            for task in single
        },
        "base": by_task(args.base_results, tasks, "base model"),
        "merge": {key: summary.get(key) for key in MERGE_FIGURES},
        "stages": stage_costs(args.benchmark),
        "base_model": args.base_model,
        "generation_backend": backend,
        "config": config,
        "versions": package_versions(),
    }
    write_json(args.out, result)
    log_result(args, args.out, result)
    for task_name, part in accuracy.items():
        alone = single.get(task_name)
        log.info(
            "%s: merged %.4f (%d/%d)%s",
            task_name,
            part["accuracy"],
            part["correct"],
            part["n"],
            f", single-task {alone['accuracy']:.4f}" if alone else "",
        )
    return result


def run(args: EvaluateMergeArgs) -> None:
    """Score a merged model on every task it merges and write its results JSON."""
    evaluate_merge(args)


if __name__ == "__main__":
    run_main(EvaluateMergeArgs, run)
