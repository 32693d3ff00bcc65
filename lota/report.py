"""Stage report: the results of a sweep as a Markdown report with a table and a plot per task.

Each table row is one run: method, sparsity or rank, accuracy with its 95% interval, trainable
parameters, training wall time and peak memory. Each plot shows accuracy against sparsity for
LoTA, with FFT, LoRA and the base model as horizontal lines, every value with its interval.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402

from lota.cli import arg, run_main  # noqa: E402
from lota.errors import UserError  # noqa: E402
from lota.io import atomic_path, read_json  # noqa: E402

log = logging.getLogger("lota.report")
METHOD_ORDER = {"base": 0, "fft": 1, "lora": 2, "lota": 3}
LINE_STYLES = {"fft": ("FFT", "tab:blue"), "lora": ("LoRA", "tab:orange"), "base": ("base", "tab:gray")}
REQUIRED = ("run", "task", "method", "accuracy", "ci95", "n")


@dataclass
class ReportArgs:
    results: list[Path] = arg(help="results/<run>.json files to report")
    out: Path = arg(help="output Markdown report")
    plots: Path = arg(help="folder for the plots, one <task>.png per task (linked from the report)")


def load_results(paths: list[Path]) -> dict[str, list[dict[str, Any]]]:
    """Results grouped by task, each group ordered base, FFT, LoRA, then LoTA by sparsity."""
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in paths:
        result = read_json(path, "results file")
        missing = [key for key in REQUIRED if key not in result]
        if missing:
            raise UserError(f"{path} is not a results file: it lacks {missing[0]!r}")
        by_task[result["task"]].append(result)
    for results in by_task.values():
        results.sort(key=lambda r: (METHOD_ORDER.get(r["method"], 9), r.get("sparsity") or 0, r.get("lora_rank") or 0))
    return dict(sorted(by_task.items()))


def shape(result: dict[str, Any]) -> str:
    if result.get("sparsity") is not None:
        return f"s = {100 * result['sparsity']:g}%"
    if result.get("lora_rank") is not None:
        return f"r = {result['lora_rank']}"
    return ""


def interval(result: dict[str, Any]) -> str:
    low, high = result["ci95"]
    return f"{result['accuracy']:.3f} [{low:.3f}, {high:.3f}]"


def count(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {suffix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


def training(result: dict[str, Any], key: str) -> float | None:
    return (result.get("train") or {}).get(key)


def run_table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| run | method | shape | accuracy [95% CI] | n | trainable params | train time | peak memory |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for result in results:
        seconds = training(result, "train_wall_s")
        memory = training(result, "peak_memory_mb")
        lines.append(
            f"| {result['run']} | {result['method']} | {shape(result)} | {interval(result)} | {result['n']} "
            f"| {count(result.get('trainable_params') or None)} | {f'{seconds:.0f} s' if seconds else '–'} "
            f"| {f'{memory:,.0f} MB' if memory else '–'} |"
        )
    return lines


def subtask_table(results: list[dict[str, Any]]) -> list[str]:
    """Accuracy per subtask of a combined task (e.g. each commonsense dataset), one row per run."""
    names = sorted({name for result in results for name in result.get("subtasks") or {}})
    if not names:
        return []
    lines = ["", f"| run | {' | '.join(names)} | mean |", "|---|" + "---:|" * (len(names) + 1)]
    for result in results:
        parts = result.get("subtasks") or {}
        cells = [f"{parts[name]['accuracy']:.3f}" if name in parts else "–" for name in names]
        lines.append(f"| {result['run']} | {' | '.join(cells)} | {result['accuracy']:.3f} |")
    return lines


def calibration_note(results: list[dict[str, Any]]) -> list[str]:
    """LoTA's cost beyond its own training: the dense calibration run behind its mask."""
    for result in results:
        calibrate = (result.get("stages") or {}).get("calibrate")
        if result["method"] == "lota" and calibrate:
            run = (result.get("config") or {}).get("train_calibration", {}).get("run", "the dense run")
            return ["", f"LoTA's masks come from one dense calibration run ({run}), {calibrate['wall_s']:.0f} s."]
    return []


def plot_task(task: str, results: list[dict[str, Any]], out: Path) -> None:
    """Accuracy against sparsity: LoTA as points, FFT/LoRA/base as lines with interval bands."""
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    sparse = [r for r in results if r["method"] == "lota" and r.get("sparsity") is not None]
    trainable = [100 * (1 - r["sparsity"]) for r in sparse]
    for result in results:
        # One line per baseline: LoRA at other ranks (lora_<task>_r<rank>) stays in the table only.
        if result["method"] in LINE_STYLES and not re.search(r"_r\d+$", result["run"]):
            label, colour = LINE_STYLES[result["method"]]
            axes.axhline(result["accuracy"], color=colour, label=f"{label} ({result['accuracy']:.3f})")
            axes.axhspan(*result["ci95"], color=colour, alpha=0.12, linewidth=0)
    if sparse:
        accuracies = [r["accuracy"] for r in sparse]
        errors = [[r["accuracy"] - r["ci95"][0] for r in sparse], [r["ci95"][1] - r["accuracy"] for r in sparse]]
        axes.errorbar(trainable, accuracies, yerr=errors, fmt="o-", color="tab:green", capsize=4, label="LoTA")
        axes.set_xscale("log")
        axes.set_xticks(trainable, [f"{100 - t:g}" for t in trainable])
        axes.minorticks_off()
        axes.invert_xaxis()
    axes.set_xlabel("LoTA sparsity (% of covered weights frozen)")
    axes.set_ylabel("accuracy (95% interval)")
    axes.set_title(f"{task}: accuracy vs sparsity")
    axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    with atomic_path(out) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)


def render(by_task: dict[str, list[dict[str, Any]]], plot_folder: str) -> str:
    lines = ["# LoTA sweep report", ""]
    lines.append(
        "Accuracy with its 95% Wilson interval (for a combined task: the mean over its subtasks, with a "
        "normal-approximation interval). "
        "Train time and peak memory are those of the run's training loop."
    )
    for task, results in by_task.items():
        lines += ["", f"## {task}", ""]
        lines += run_table(results) + subtask_table(results) + calibration_note(results)
        lines += ["", f"![{task}: accuracy vs sparsity]({plot_folder}/{task}.png)"]
    return "\n".join(lines) + "\n"


def run(args: ReportArgs) -> None:
    """Write the report and its plots."""
    if not args.results:
        raise UserError("--results names no results files")
    by_task = load_results(args.results)
    for task, results in by_task.items():
        plot_task(task, results, args.plots / f"{task}.png")
    relative = os.path.relpath(Path(args.plots).resolve(), Path(args.out).resolve().parent)
    with atomic_path(args.out) as tmp:
        tmp.write_text(render(by_task, Path(relative).as_posix()))
    log.info("report on %d runs of %d tasks -> %s", len(args.results), len(by_task), args.out)


if __name__ == "__main__":
    run_main(ReportArgs, run)
