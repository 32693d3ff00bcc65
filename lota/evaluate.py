"""Stage evaluate: score a run's samples and write results/<run>.json with its provenance.

The result holds accuracy, n and a 95% Wilson interval (for a combined task such as
commonsense: the mean of its subtasks' accuracies with a normal-approximation interval, each
subtask's own figures beside it), and what produced it: method, task, sparsity, LoRA rank, the
strategy that ranked the mask's entries (LoTA and RoSA; None for runs without a mask), trainable
parameter count, base model, the config values used, the wall time and peak memory of each stage
(from the workflow's benchmark files), and package versions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lota.core.cli import arg, run_main
from lota.core.io import read_json, read_jsonl, write_json
from lota.core.tracking import TrackingArgs, log_result
from lota.evaluation.provenance import package_versions, parse_config_json, stage_costs, training_figures
from lota.evaluation.scoring import ScoringArgs, item_verdicts, score_samples, task_accuracy
from lota.pipeline.names import RUN_METHODS

log = logging.getLogger("lota.evaluate")


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
