"""Stage evaluate: score a run's samples and write results/<run>.json with its provenance.

The result holds accuracy, n and a 95% Wilson interval (for a combined task such as
commonsense: the mean of its subtasks' accuracies with a normal-approximation interval, each
subtask's own figures beside it), and what produced it: method, task, sparsity, LoRA rank, the
strategy that ranked the mask's entries (LoTA and RoSA; None for runs without a mask), trainable
parameter count, base model, the config values used, the wall time and peak memory of each stage
(from the workflow's benchmark files), and package versions.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from lota.core.cli import arg, run_main, task_definitions_arg
from lota.core.errors import UserError
from lota.core.io import read_json, read_jsonl, write_json
from lota.core.tracking import TrackingArgs, log_result
from lota.pipeline.names import RUN_METHODS
from lota.tasks import Task, get_task
from lota.tasks.defined import parse_task_definitions

log = logging.getLogger("lota.evaluate")
VERSIONED_PACKAGES = [
    "lota",
    "torch",
    "transformers",
    "safetensors",
    "tokenizers",
    "snakemake",
    "vllm",
    "lm_eval",
    "alpaca_eval",
]


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


@dataclass
class EvaluateArgs(TrackingArgs, ScoringArgs):
    samples: Path = arg(help="samples JSONL from the generate stage")
    task: str = arg(help="task name, which picks the scorer")
    out: Path = arg(help="output results JSON")
    run: str = arg("", "run name, e.g. lota_gsm8k_s90")
    method: str = arg("", f"the run's method: {', '.join(RUN_METHODS)}")
    sparsity: float | None = arg(None, "the mask's sparsity, for lota and rosa runs")
    lora_rank: int | None = arg(None, "the LoRA adapters' rank, for lora and rosa runs")
    mask_strategy: str | None = arg(None, "the strategy that ranked the mask's entries, for lota and rosa runs")
    base_model: str = arg("", "the base model's source")
    train_summary: Path | None = arg(None, "summary.json of the training run, if any")
    benchmark: list[str] = arg([], "STAGE=PATH of a benchmark TSV per stage, for wall time and memory")
    config_json: str = arg("{}", "the config values used, as JSON")
    lr_choice: Path | None = arg(None, "the learning-rate choice the run trained at (results/lr/<run>.json), if any")


Z95 = 1.959963984540054  # the standard normal quantile of a two-sided 95% interval


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The 95% Wilson score interval of a binomial proportion."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def stage_costs(benchmarks: list[str]) -> dict[str, dict[str, float]]:
    """Wall seconds and peak RSS (MB) per stage from Snakemake benchmark TSVs; missing files skipped."""
    costs = {}
    for entry in benchmarks:
        stage, separator, path = entry.partition("=")
        if not separator:
            raise UserError(f"--benchmark expects STAGE=PATH, got {entry!r}")
        if not Path(path).is_file():
            continue
        with open(path) as table:
            rows = list(csv.DictReader(table, delimiter="\t"))
        if rows:
            row = rows[-1]
            costs[stage] = {"wall_s": float(row["s"]), "max_rss_mb": _number(row.get("max_rss"))}
    return costs


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "", "-", "NA") else None
    except ValueError:
        return None


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


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


def parse_config_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"--config-json is not valid JSON: {error}") from None


TRAINING_FIGURES = (
    "steps",
    "tokens",
    "final_loss",
    "train_wall_s",
    "tokens_per_s",
    "peak_memory_mb",
    "optimizer_state_bytes",
    "device",
)


def training_figures(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """The figures of a training summary that results report, with the rate it trained at (None for
    an untrained model)."""
    if not summary:
        return None
    return {key: summary.get(key) for key in TRAINING_FIGURES} | {"lr": summary.get("args", {}).get("lr")}


def evaluate(args: EvaluateArgs) -> dict[str, Any]:
    task = args.get_task(args.task)
    config = parse_config_json(args.config_json)
    samples = read_jsonl(args.samples, "samples")
    verdicts = score_samples(task, samples, args.samples, args.task in args.official_scoring)
    summary = read_json(args.train_summary, "training summary") if args.train_summary else None
    overall, subtasks = task_accuracy(task, samples, verdicts, args.samples)
    result = {
        "run": args.run,
        "task": args.task,
        "method": args.method,
        "sparsity": args.sparsity,
        "lora_rank": args.lora_rank,
        "mask_strategy": args.mask_strategy,
        **overall,
        "subtasks": subtasks,
        "items": item_verdicts(samples, verdicts, args.samples),
        "trainable_params": summary["trainable_params"] if summary else 0,
        "train": training_figures(summary),
        "base_model": args.base_model,
        "generation_backend": samples[0].get("backend"),
        "stages": stage_costs(args.benchmark),
        "lr_choice": read_json(args.lr_choice, "learning-rate choice") if args.lr_choice else None,
        "config": config,
        "versions": package_versions(),
    }
    write_json(args.out, result)
    log_result(args, args.out, result)
    for name, part in (subtasks or {}).items():
        log.info("%s: accuracy %.4f (%d/%d)", name, part["accuracy"], part["correct"], part["n"])
    log.info(
        "%s: accuracy %.4f (%d/%d), 95%% CI [%.4f, %.4f]",
        args.run or args.samples,
        overall["accuracy"],
        overall["correct"],
        overall["n"],
        *overall["ci95"],
    )
    return result


def run(args: EvaluateArgs) -> None:
    """Score samples and write the run's results JSON."""
    evaluate(args)


if __name__ == "__main__":
    run_main(EvaluateArgs, run)
